"""Assembly: the DESIGN invariants on generated clips, end to end through the media layer.

decode (per chunk plan) -> encode segments -> assemble -> probe and decode the output.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from fusionray.errors import MediaError, OutputError
from fusionray.media.assemble import assemble_video
from fusionray.media.decode import decode_frames
from fusionray.media.encode import EncoderSettings, build_encoder_settings, encode_segment
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from fusionray.types import VideoInfo
from tests.clips import (
    add_subtitles,
    audio_packet_payloads,
    psnr,
    read_frame_counter,
    sha256_file,
    subtitle_packets,
    write_clip,
)


def settings_for(info: VideoInfo, *, lossless: bool = False, **changes) -> EncoderSettings:
    return build_encoder_settings(
        **{
            "codec": "libx264",
            "crf": 18,
            "preset": "veryfast",
            "pix_fmt": "auto",
            "lossless": lossless,
            "width": info.width,
            "height": info.height,
            **changes,
        }
    )


def render_segments(
    info: VideoInfo, folder: Path, settings: EncoderSettings, *, chunk_frames: int
) -> list[Path]:
    """Encode every chunk's owned frames, decoded from the source, as its own segment."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for chunk in plan_chunks(info.frame_count, chunk_frames=chunk_frames, overlap=2):
        path = folder / f"segment-{chunk.index:04d}.mp4"
        frames = (frame for _, frame in decode_frames(info, chunk.start, chunk.stop))
        pts = info.frame_pts[chunk.start : chunk.stop]
        encode_segment(frames, pts=pts, info=info, settings=settings, path=path)
        paths.append(path)
    return paths


def all_frames(info: VideoInfo) -> list[np.ndarray]:
    return [frame for _, frame in decode_frames(info, 0, info.frame_count)]


def seconds(info: VideoInfo) -> list[Fraction]:
    return [pts * info.time_base for pts in info.frame_pts]


CLIPS: dict[str, tuple[str, dict[str, Any]]] = {
    "audio": ("in.mp4", {}),
    "no-audio": ("in.mp4", {"audio": False}),
    "odd-size": ("in.mp4", {"width": 161, "height": 97, "pix_fmt": "yuv444p"}),
    "vfr": ("in.mp4", {"vfr": True}),
    "bframes": ("in.mp4", {"bframes": 3, "gop": 8}),
    "rotation-90": ("in.mp4", {"rotation": 90}),
    "two-audio-streams": ("in.mp4", {"audio_streams": 2}),
    "mkv-source": ("in.mkv", {}),
    "mov-source-rotated": ("in.mov", {"rotation": 270}),
}


@pytest.mark.parametrize("name", list(CLIPS))
def test_invariants_frames_pts_audio_input(tmp_path: Path, name: str) -> None:
    file_name, options = CLIPS[name]
    source = write_clip(tmp_path / file_name, frames=30, **options)
    source_hash = sha256_file(source)
    info = probe_video(source)
    segments = render_segments(info, tmp_path / "work", settings_for(info), chunk_frames=7)
    output = tmp_path / "out" / "result.mp4"
    output.parent.mkdir()

    report = assemble_video(info, segments, output, metadata={"comment": "made by a test"})

    written = probe_video(output)
    # Invariant 1: count, order and pts (compared in seconds: the time bases may differ).
    assert written.frame_count == info.frame_count == report.frame_count == 30
    assert seconds(written) == seconds(info)
    assert [read_frame_counter(frame) for frame in all_frames(written)] == list(range(30))
    assert written.rotation == info.rotation == options.get("rotation", 0)
    assert report.duration_seconds == pytest.approx(info.duration_seconds)
    # Invariant 2: every audio packet, byte for byte, every stream.
    source_audio = audio_packet_payloads(source)
    assert audio_packet_payloads(output) == source_audio
    assert len(source_audio) == (
        0 if options.get("audio") is False else options.get("audio_streams", 1)
    )
    assert report.audio_packets_copied == sum(len(stream) for stream in source_audio)
    # Invariant 4: the input is untouched; only the output appears in its folder.
    assert sha256_file(source) == source_hash
    assert [p.name for p in output.parent.iterdir()] == ["result.mp4"]
    assert report.byte_size == output.stat().st_size
    with av.open(str(output)) as container:
        assert container.metadata.get("comment") == "made by a test"


@pytest.mark.parametrize("chunk_frames", [1, 7, 30])
def test_lossless_round_trip_is_bit_identical_for_any_chunking(
    tmp_path: Path, chunk_frames: int
) -> None:
    info = probe_video(write_clip(tmp_path / "in.mp4", frames=30, bframes=3))
    segments = render_segments(
        info, tmp_path / "work", settings_for(info, lossless=True), chunk_frames=chunk_frames
    )
    output = assemble_video(info, segments, tmp_path / "out.mp4").output_path
    decoded = all_frames(probe_video(output))
    for index, (expected, got) in enumerate(zip(all_frames(info), decoded, strict=True)):
        assert np.array_equal(expected, got), f"frame {index} differs"


def test_ffv1_round_trip_to_mkv_is_bit_identical(tmp_path: Path) -> None:
    info = probe_video(write_clip(tmp_path / "in.mkv", frames=20, vfr=True))
    settings = settings_for(info, lossless=True, codec="ffv1")
    segments = render_segments(info, tmp_path / "work", settings, chunk_frames=6)
    written = probe_video(assemble_video(info, segments, tmp_path / "out.mkv").output_path)
    assert written.codec_name == "ffv1"
    for expected, got in zip(all_frames(info), all_frames(written), strict=True):
        assert np.array_equal(expected, got)


def test_lossy_round_trip_quality(tmp_path: Path) -> None:
    info = probe_video(write_clip(tmp_path / "in.mp4", frames=30))
    segments = render_segments(info, tmp_path / "work", settings_for(info), chunk_frames=10)
    written = probe_video(assemble_video(info, segments, tmp_path / "out.mp4").output_path)
    scores = [psnr(a, b) for a, b in zip(all_frames(info), all_frames(written), strict=True)]
    assert min(scores) > 35, scores


def test_bt709_source_keeps_its_colours(tmp_path: Path) -> None:
    # Decoding converts with the source's BT.709 matrix. The output must be coded with the same
    # matrix AND tagged with it: untagged HD is shown as BT.709 by some players and BT.601 by
    # others. (A BGR round-trip alone cannot see a wrong tag: both ends would agree on 601.)
    info = probe_video(write_clip(tmp_path / "in.mp4", frames=10, colorspace=1))
    assert info.colorspace == 1
    segments = render_segments(info, tmp_path / "work", settings_for(info), chunk_frames=5)
    written = probe_video(assemble_video(info, segments, tmp_path / "out.mp4").output_path)
    assert (written.colorspace, written.color_primaries) == (1, info.color_primaries)
    scores = [psnr(a, b) for a, b in zip(all_frames(info), all_frames(written), strict=True)]
    assert float(np.mean(scores)) > 35, scores


def test_vfr_segment_joins_keep_dts_increasing(tmp_path: Path) -> None:
    # x264 starts each segment's dts below its first pts by the reorder delay measured on the
    # FOLLOWING frames; where frames widen after a join, that dts falls at or below the previous
    # segment's last dts, which the MP4 muxer rejects. Chunks of 3 hit such joins on this clip.
    info = probe_video(write_clip(tmp_path / "in.mp4", frames=40, vfr=True, audio=True))
    settings = settings_for(info, preset="medium")  # 3 B-frames with pyramid
    segments = render_segments(info, tmp_path / "work", settings, chunk_frames=3)
    report = assemble_video(info, segments, tmp_path / "out.mp4")
    assert report.dts_adjusted_packets > 0
    with av.open(report.output_path) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        dts: list[int] = []
        pts: list[int] = []
        for p in packets:
            assert p.dts is not None and p.pts is not None  # a packet read from a file is timed
            dts.append(p.dts)
            pts.append(p.pts)
        assert all(b > a for a, b in itertools.pairwise(dts))
        assert all(d <= p for d, p in zip(dts, pts, strict=True))
    assert seconds(probe_video(tmp_path / "out.mp4")) == seconds(info)


@pytest.mark.parametrize("extension", [".mkv", ".mov"])
def test_other_output_containers(tmp_path: Path, extension: str) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=20, vfr=True, rotation=90)
    info = probe_video(source)
    segments = render_segments(info, tmp_path / "work", settings_for(info), chunk_frames=6)
    report = assemble_video(info, segments, tmp_path / f"out{extension}")
    written = probe_video(report.output_path)
    assert written.frame_count == 20
    assert written.rotation == 90
    assert audio_packet_payloads(report.output_path) == audio_packet_payloads(source)
    # Matroska counts milliseconds and cannot start below 0, so an MP4 source whose AAC
    # priming starts at -21.3 ms comes out shifted by that much, all streams alike.
    shift = Fraction(report.start_shift_seconds) if extension == ".mkv" else Fraction(0)
    for expected, got in zip(seconds(info), seconds(written), strict=True):
        assert abs(expected + shift - got) <= Fraction(1, 2000)


@pytest.mark.parametrize(("extension", "copied"), [(".mkv", True), (".mp4", False)])
def test_subtitles_are_copied_where_the_container_holds_them(
    tmp_path: Path, extension: str, copied: bool
) -> None:
    source = add_subtitles(write_clip(tmp_path / "clip.mp4", frames=20), tmp_path / "in.mkv")
    info = probe_video(source)
    segments = render_segments(info, tmp_path / "work", settings_for(info), chunk_frames=6)
    report = assemble_video(info, segments, tmp_path / f"out{extension}")
    assert audio_packet_payloads(report.output_path) == audio_packet_payloads(source)
    if copied:
        assert (report.subtitle_streams_copied, report.subtitle_streams_dropped) == (1, ())
        expected = subtitle_packets(source)
        assert [p[0] for p in expected] == [b"line one", b"line two"]
        shift = report.start_shift_seconds
        for (payload, start, duration), (want, want_start, want_duration) in zip(
                subtitle_packets(report.output_path), expected, strict=True):
            assert payload == want
            assert abs(start - shift - want_start) < 1e-3
            assert abs(duration - want_duration) < 1e-3
    else:  # MP4 stores only mov_text: SubRip is reported, not silently lost
        assert (report.subtitle_streams_copied, report.subtitle_streams_dropped) == (
            0, ("subrip",))
        with av.open(report.output_path) as container:
            assert not container.streams.subtitles


# --- failures leave nothing at the output path (invariant 4) ---------------------------------


@pytest.fixture
def rendered(tmp_path: Path):
    info = probe_video(write_clip(tmp_path / "in.mp4", frames=20))
    segments = render_segments(info, tmp_path / "work", settings_for(info), chunk_frames=5)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    return info, segments, out_folder


def assert_nothing_written(folder: Path) -> None:
    assert list(folder.iterdir()) == [], "no output and no partial file may remain"


def test_mismatched_segment_is_refused(rendered) -> None:
    info, segments, out_folder = rendered
    # Re-encode one chunk with other settings (4:4:4): its SPS differs from the others'.
    frames = (frame for _, frame in decode_frames(info, 5, 10))
    encode_segment(
        frames,
        pts=info.frame_pts[5:10],
        info=info,
        path=segments[1],
        settings=settings_for(info, pix_fmt="yuv444p"),
    )
    with pytest.raises(MediaError, match=r"Segment '.*segment-0001\.mp4' was encoded differently"):
        assemble_video(info, segments, out_folder / "out.mp4")
    assert_nothing_written(out_folder)


def test_corrupt_segment_is_refused(rendered) -> None:
    info, segments, out_folder = rendered
    segments[2].write_bytes(os.urandom(2000))
    with pytest.raises(MediaError, match=r"Not a readable segment: '.*segment-0002\.mp4'"):
        assemble_video(info, segments, out_folder / "out.mp4")
    assert_nothing_written(out_folder)


def test_missing_frames_are_refused(rendered) -> None:
    info, segments, out_folder = rendered
    with pytest.raises(MediaError, match=r"Segments hold 15 frames but '.*in\.mp4' has 20"):
        assemble_video(info, segments[:-1], out_folder / "out.mp4")
    assert_nothing_written(out_folder)


def test_failed_assembly_keeps_an_existing_output(rendered) -> None:
    info, segments, out_folder = rendered
    (out_folder / "out.mp4").write_bytes(b"previous result")
    with pytest.raises(MediaError):
        assemble_video(info, segments[:-1], out_folder / "out.mp4")
    assert (out_folder / "out.mp4").read_bytes() == b"previous result"
    assert [p.name for p in out_folder.iterdir()] == ["out.mp4"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_output_folder(rendered) -> None:
    info, segments, out_folder = rendered
    out_folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"Cannot write output file '.*out"):
            assemble_video(info, segments, out_folder / "out.mp4")
        assert_nothing_written(out_folder)
    finally:
        out_folder.chmod(0o755)


def test_bad_output_paths(rendered) -> None:
    info, segments, out_folder = rendered
    with pytest.raises(OutputError, match=r"Unknown output extension '\.avi'. Choose one of: "):
        assemble_video(info, segments, out_folder / "out.avi")
    with pytest.raises(OutputError, match="Output path is the input video"):
        assemble_video(info, segments, info.path)
    with pytest.raises(OutputError, match="Output folder does not exist"):
        assemble_video(info, segments, out_folder / "missing" / "out.mp4")
    assert_nothing_written(out_folder)


def test_unwritable_output_even_as_root(rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    info, segments, out_folder = rendered
    real_open = av.open

    def refuse_writes(file, mode="r", **options):
        if mode == "w":
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, **options)

    monkeypatch.setattr("fusionray.media.assemble.av.open", refuse_writes)
    with pytest.raises(OutputError, match=r"Cannot write output file '.*out\.partial-\d+\.mp4'"):
        assemble_video(info, segments, out_folder / "out.mp4")
    assert_nothing_written(out_folder)


def test_failed_verification_deletes_the_written_file(
    rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, segments, out_folder = rendered
    real_probe = probe_video

    def probe_losing_a_frame(path):
        written = real_probe(path)
        return VideoInfo(**{**written.__dict__, "frame_pts": written.frame_pts[:-1]})

    monkeypatch.setattr("fusionray.media.assemble.probe_video", probe_losing_a_frame)
    with pytest.raises(MediaError, match=r"Verification of assembled '.*out\.mp4' failed: 19"):
        assemble_video(info, segments, out_folder / "out.mp4")
    assert_nothing_written(out_folder)
