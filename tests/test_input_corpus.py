"""The bad (and merely unusual) input corpus, end to end through the render on a local Ray.

Inputs that cannot be rendered fail before Ray starts; those cases live in
`tests/test_bad_input.py` (zero-byte file, random bytes, truncated MP4, audio only, still image,
source image without a face). Here are the inputs that must render: each keeps every frame and
its pts, every audio packet of every audio stream, and leaves the input untouched.

Choices these tests pin:
- A truncated MP4 fails with a clear error rather than rendering the readable part (see
  `fusionray.media.probe`): a silently shorter output is worse than no output.
- 10-bit input is rendered at 10 bits (`encode.pix_fmt: auto`, the input's depth).
- Subtitle streams are not copied; run.json says so. Every audio stream is copied.
- A 4K frame with one small face: `detector.tiles: 0` (auto) runs a 2-tile pass from 4K up.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.media.demo import demo_source_image_path
from fusionray.media.probe import probe_video
from tests.clips import add_subtitles, sha256_file, subtitle_packets, write_clip
from tests.faces_fixtures import astronaut_bgr, astronaut_on_canvas
from tests.test_render import audio_payloads, compose_config, decoded_frames, video_pts_seconds


def render_clip(clip: Path, tmp_path: Path, *overrides: str):
    output = tmp_path / "out" / "result.mp4"
    config = compose_config(f"+video={clip}", f"+source={demo_source_image_path()}",
                            f"output={output}", "progress=false", "preview_frames=1",
                            "chunk.frames=4", *overrides)
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    return output, summary, json.loads(OutputPaths.for_video(output).run_json.read_text())


@pytest.mark.ray
@pytest.mark.parametrize(
    ("name", "clip"),
    [
        ("one-frame", {"frames": 1}),
        ("641x361", {"width": 641, "height": 361, "pix_fmt": "yuv444p", "frames": 6}),
        ("rotation-90", {"rotation": 90}),
        ("vfr", {"vfr": True}),
        ("10-bit", {"pix_fmt": "yuv420p10le"}),
        ("yuv444p", {"pix_fmt": "yuv444p"}),
        ("two-audio-and-subtitles", {"audio_streams": 2}),
    ],
)
def test_unusual_inputs_render_completely(
    local_ray, tmp_path: Path, name: str, clip: dict
) -> None:
    settings = {"frames": 10, **clip}
    path = write_clip(tmp_path / "in.mp4", **settings)
    if name == "two-audio-and-subtitles":
        path = add_subtitles(path, tmp_path / "in.mkv")
    before = sha256_file(path)
    output, summary, run = render_clip(path, tmp_path)
    source, written = probe_video(path), probe_video(output)
    assert summary.frames == written.frame_count == settings["frames"]
    assert video_pts_seconds(output) == video_pts_seconds(path)
    assert audio_payloads(output) == audio_payloads(path)
    assert (written.width, written.height, written.rotation) == (
        source.width, source.height, source.rotation)
    assert sha256_file(path) == before
    if name == "10-bit":
        assert source.pix_fmt == written.pix_fmt == "yuv420p10le"
    if name == "two-audio-and-subtitles":  # into an .mp4, which cannot hold SubRip
        assert len(written.audio_streams) == 2
        assert any("(subrip) cannot be stored in .mp4" in note for note in run["notes"])
        with av.open(str(output)) as container:
            assert not container.streams.subtitles


@pytest.mark.ray
def test_subtitles_survive_a_render_to_mkv(local_ray, tmp_path: Path) -> None:
    clip = add_subtitles(write_clip(tmp_path / "in.mp4", frames=10, audio_streams=2),
                         tmp_path / "in.mkv")
    output = tmp_path / "out" / "result.mkv"
    config = compose_config(f"+video={clip}", f"+source={demo_source_image_path()}",
                            f"output={output}", "progress=false", "preview_frames=0")
    render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    assert subtitle_packets(output)[0][0] == b"line one"
    assert [p[0] for p in subtitle_packets(output)] == [p[0] for p in subtitle_packets(clip)]
    assert audio_payloads(output) == audio_payloads(clip)


@pytest.mark.ray
def test_video_without_faces_is_unchanged(local_ray, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mp4", frames=12)
    output, _summary, run = render_clip(clip, tmp_path, "quality=lossless")
    assert run["faces_swapped"] == 0 and run["frames_with_faces"] == 0
    assert any("no face found" in note for note in run["notes"])
    for ours, theirs in zip(decoded_frames(output), decoded_frames(clip), strict=True):
        assert np.array_equal(ours, theirs)


@pytest.mark.ray
def test_source_image_with_two_faces_uses_the_largest(local_ray, tmp_path: Path) -> None:
    big = astronaut_bgr()
    small = cv2.resize(big, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 800, 3), 90, np.uint8)
    canvas[:, :512] = big
    canvas[128:384, 530:786] = small
    source = tmp_path / "two.png"
    cv2.imwrite(str(source), canvas)
    clip = write_clip(tmp_path / "in.mp4", frames=4)
    output = tmp_path / "out.mp4"
    config = compose_config(f"+video={clip}", f"+source={source}", f"output={output}",
                            "progress=false", "preview_frames=0")
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    assert summary.notes[0] == f"source image '{source}' has 2 faces; used the largest"


@pytest.mark.ray
def test_small_face_in_a_4k_frame_is_found(local_ray, tmp_path: Path) -> None:
    frame = astronaut_on_canvas(100, width=3840, height=2160)[0]
    clip = tmp_path / "4k.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        stream.options = {"crf": "16", "preset": "ultrafast", "threads": "2"}
        for index in range(2):
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    _, auto, _ = render_clip(clip, tmp_path, "encode.preset=ultrafast", "preview_frames=0")
    assert auto.frames_with_faces == 2, "auto tiles must find the 100 px face at 4K"
    _, one_pass, _ = render_clip(clip, tmp_path, "encode.preset=ultrafast", "preview_frames=0",
                                 "detector.tiles=1")
    assert one_pass.frames_with_faces == 0, "one full-frame pass misses it (why auto tiles)"
