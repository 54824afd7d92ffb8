"""Studio inputs through the whole render on a local Ray (issue 12): the default output answers
the input in kind (codec, profile, pixel format, container), with its colour tags, time base,
pts, timecode and audio, and no level shift (these clips hold no face: every pixel is
"outside the faces")."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from fusionray.jobs.cli_args import prepare_overrides
from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.media.demo import demo_source_image_path
from fusionray.media.probe import probe_video
from tests.clips import audio_packet_payloads
from tests.studio_clips import STUDIO_CLIPS, write_studio_clip
from tests.test_media_fidelity import luma
from tests.test_render import compose_config


def mean_luma(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(np.mean([luma(frame).mean() for frame in container.decode(video=0)]))


@pytest.mark.ray
@pytest.mark.parametrize("name", ["prores-422hq-10bit-timecode", "ntsc-bframes-start-1001",
                                  "hevc-10bit-pq", "bt709-full-range"])
def test_studio_input_renders_in_kind(local_ray, tmp_path: Path, name: str) -> None:
    file_name, clip = STUDIO_CLIPS[name]
    source = write_studio_clip(tmp_path / f"shot 01 – café{Path(file_name).suffix}", clip)
    # As `python -m fusionray.jobs.render` reads its arguments (the path unquoted).
    config = compose_config(*prepare_overrides([
        f"+video={source}", f"+source={demo_source_image_path()}", "progress=false",
        "preview_frames=0", "chunk.frames=5", "encode.preset=veryfast"]))
    summary = render(config, run_dir=tmp_path / "run", config_yaml="x: 1\n")
    output = Path(summary.output)
    assert output.suffix == source.suffix  # .mov stays .mov
    before, after = probe_video(source), probe_video(output)
    assert (after.codec_name, after.profile, after.pix_fmt) == (
        before.codec_name, before.profile, before.pix_fmt)
    assert (after.color_range, after.colorspace, after.color_primaries, after.color_trc) == (
        before.color_range, before.colorspace, before.color_primaries, before.color_trc)
    assert (after.time_base, after.frame_pts, after.timecode) == (
        before.time_base, before.frame_pts, before.timecode)
    assert audio_packet_payloads(output) == audio_packet_payloads(source)
    shift = mean_luma(output) - mean_luma(source)
    run = json.loads(OutputPaths.for_video(output).run_json.read_text())
    assert run["frames"] == clip.frames
    print(f"{name}: {after.codec_name} {after.profile} {after.pix_fmt} tags "
          f"{(after.color_range, after.colorspace, after.color_primaries, after.color_trc)} "
          f"timecode {after.timecode} shift {shift:+.3f}")
    # The actor keeps the planes outside the faces (media/frame.py) and these clips hold no face,
    # so only the re-encode moves the picture (measured: |shift| <= 0.06 code, the NTSC H.264 clip).
    assert abs(shift) <= 0.1, f"mean luma shift {shift:+.3f} codes"
