"""Image sequences in and out (`fusionray.media.sequence`): finding, probing, exact round trips,
and renders of PNG / TIFF / DPX sequences that keep names, numbering, bit depth and every
pixel outside the faces; per-frame resume; the CLI with +video=<folder>."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fusionray.errors import ConfigError, MediaError
from fusionray.jobs.inputs import OutputPaths
from fusionray.jobs.pipeline import render
from fusionray.media.demo import demo_source_image_path, render_demo_frames
from fusionray.media.frame import PlaneFrame
from fusionray.media.sequence import (
    SequenceReader,
    encode_frame,
    find_sequence,
    probe_sequence,
    read_frame,
)
from tests.test_bad_input import run_render
from tests.test_render import compose_config

# (codec, file extension, pixel format written): 8- and 16-bit PNG, 8- and 16-bit TIFF,
# 10-bit DPX (FFmpeg's DPX encoder writes planar 10-bit).
FORMATS = [("png", "png", "rgb24"), ("png", "png", "rgb48be"), ("tiff", "tif", "rgb24"),
           ("tiff", "tif", "rgb48le"), ("dpx", "dpx", "gbrp10le")]


def to_file_frame(bgr: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    """A uint8 BGR picture as a frame of `pix_fmt`; deeper formats get distinct low bits (a
    deterministic ramp), so bit-exactness is tested below the 8-bit codes too."""
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    if pix_fmt == "rgb24":
        return av.VideoFrame.from_ndarray(rgb, format="rgb24")
    deep = rgb.astype(np.uint16) * 257
    deep ^= (np.arange(deep.size, dtype=np.uint16).reshape(deep.shape) & 0x3F)
    frame = av.VideoFrame.from_ndarray(deep, format="rgb48le")
    return frame.reformat(format=pix_fmt) if pix_fmt != "rgb48be" else frame


def write_sequence(folder: Path, frames: list[np.ndarray], *, codec: str = "png",
                   extension: str = "png", pix_fmt: str = "rgb24", first: int = 1001,
                   name: str = "frame_%04d") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, bgr in enumerate(frames):
        data = encode_frame(to_file_frame(bgr, pix_fmt), codec, pix_fmt)
        (folder / f"{name % (first + index)}.{extension}").write_bytes(data)
    return folder


def planes(path: Path, codec: str) -> list[bytes]:
    frame = read_frame(path, codec)
    return [bytes(plane) for plane in frame.planes]


@pytest.fixture(scope="module")
def demo_frames() -> list[np.ndarray]:
    return render_demo_frames(0.32)  # 8 frames, 640x360, the astronaut's face in each


# ---- finding and probing ------------------------------------------------------------------


def test_a_folder_and_a_pattern_name_the_same_sequence(tmp_path: Path) -> None:
    pictures = [np.full((16, 24, 3), i * 20, np.uint8) for i in range(5)]
    folder = write_sequence(tmp_path / "shot", pictures, first=7)
    by_folder = find_sequence(folder)
    by_pattern = find_sequence(f"{folder}/frame_%04d.png")
    assert by_folder == by_pattern
    assert by_folder is not None
    assert (by_folder.pattern, by_folder.first, by_folder.count) == ("frame_%04d.png", 7, 5)
    assert find_sequence(tmp_path / "missing.mp4") is None  # a file path: not a sequence


def test_probe_uses_the_frame_rate_and_keeps_every_frame_a_keyframe(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s", [np.zeros((16, 24, 3), np.uint8)] * 4)
    sequence = find_sequence(folder)
    assert sequence is not None
    info = probe_sequence(sequence, Fraction(24000, 1001))
    assert info.frame_count == 4 and info.keyframe_indices == (0, 1, 2, 3)
    assert info.average_rate == Fraction(24000, 1001)
    assert info.time_base == Fraction(1001, 24000)
    assert (info.width, info.height, info.pix_fmt) == (24, 16, "rgb24")


def test_a_gap_names_the_missing_frame(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s", [np.zeros((8, 8, 3), np.uint8)] * 5)
    (folder / "frame_1003.png").unlink()
    with pytest.raises(MediaError, match=r"Frame 1003 .*missing.*frame_1003\.png"):
        find_sequence(folder)


def test_several_series_and_a_damaged_exr_are_refused_by_name(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s", [np.zeros((8, 8, 3), np.uint8)] * 2)
    write_sequence(folder, [np.zeros((8, 8, 3), np.uint8)] * 2, name="other_%02d")
    with pytest.raises(MediaError, match="several image series"):
        find_sequence(folder)
    # OpenEXR is a sequence type now (tests/test_media_exr.py); a file that is not one is
    # refused when probed, naming the file and the format.
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "f_0001.exr").write_bytes(b"")
    sequence = find_sequence(tmp_path / "e")
    assert sequence is not None and sequence.codec == "exr"
    with pytest.raises(MediaError, match=r"f_0001\.exr.*OpenEXR"):
        probe_sequence(sequence, Fraction(25))


@pytest.mark.parametrize("value", ["0", "-25", "abc", "1/0", "5000"])
def test_frame_rate_is_validated(value: str) -> None:
    with pytest.raises(ConfigError, match=r"media\.frame_rate"):
        compose_config("+video=demo", f"media.frame_rate={value}")
    assert compose_config("+video=demo", "media.frame_rate=25").media.rate == 25


# ---- pixels -------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "extension", "pix_fmt"), FORMATS)
def test_decode_and_encode_back_is_bit_exact(tmp_path: Path, codec: str, extension: str,
                                             pix_fmt: str, demo_frames) -> None:
    folder = write_sequence(tmp_path / "s", demo_frames[:2], codec=codec,
                            extension=extension, pix_fmt=pix_fmt)
    sequence = find_sequence(folder)
    assert sequence is not None
    info = probe_sequence(sequence, Fraction(25))
    assert info.pix_fmt == pix_fmt
    with SequenceReader(info) as reader:
        for index, frame in reader.video_frames(0, 2):
            path = folder / sequence.name(index)
            again = tmp_path / f"again.{extension}"
            again.write_bytes(encode_frame(frame, codec, info.pix_fmt))
            assert planes(again, codec) == planes(path, codec)


def test_sixteen_bit_plane_frame_keeps_unchanged_pixels_exactly() -> None:
    deep = np.arange(4 * 6 * 3, dtype=np.uint16).reshape(4, 6, 3) * 1000 + 7
    frame = av.VideoFrame.from_ndarray(deep, format="rgb48le")
    plane = PlaneFrame(frame)
    original, exact = plane.read_bgr((0, 0, 6, 4))
    assert exact is not None
    swapped = original.copy()
    swapped[1, 2] = (10, 20, 30)  # BGR
    assert plane.write_bgr((0, 0, 6, 4), swapped, original, exact) == 1
    after = plane.planes[0]
    assert tuple(after[1, 2]) == (30 * 257, 20 * 257, 10 * 257)  # RGB, 8-bit value exactly
    mask = np.ones((4, 6), bool)
    mask[1, 2] = False
    assert np.array_equal(after[mask], deep[mask])


# ---- renders ------------------------------------------------------------------------------


def render_sequence(video: str, tmp_path: Path, *overrides: str):
    config = compose_config(f"+video={video}", f"+source={demo_source_image_path()}",
                            "progress=false", "chunk.frames=3", "chunk.keyframe_aligned=false",
                            "preview_frames=1", *overrides)
    return render(config, run_dir=tmp_path / "run", config_yaml="x: 1\n")


def corner_and_face_change(input_path: Path, output_path: Path, codec: str) -> tuple[int, float]:
    """(samples that differ in the 60x60 top-left corner, far from the face, at full depth;
    mean absolute 8-bit change over the face's box)."""
    before, after = read_frame(input_path, codec), read_frame(output_path, codec)
    a = before.to_ndarray(format="rgb48le").astype(np.int64)
    b = after.to_ndarray(format="rgb48le").astype(np.int64)
    corner = np.count_nonzero(a[:60, :60] != b[:60, :60])
    face = np.abs(a[90:230, 250:390] - b[90:230, 250:390]).mean() / 257
    return int(corner), float(face)


@pytest.mark.ray
@pytest.mark.parametrize(("codec", "extension", "pix_fmt"), FORMATS)
def test_render_writes_the_same_sequence_with_the_faces_swapped(
        local_ray, tmp_path: Path, codec: str, extension: str, pix_fmt: str,
        demo_frames) -> None:
    folder = write_sequence(tmp_path / "shot", demo_frames, codec=codec, extension=extension,
                            pix_fmt=pix_fmt, first=1001)
    summary = render_sequence(str(folder), tmp_path)
    output = tmp_path / "run" / "shot.swapped"
    assert summary.output == str(output) and summary.frames == len(demo_frames)
    assert summary.frames_with_faces >= len(demo_frames) - 1
    names = sorted(p.name for p in output.iterdir())
    assert names == sorted(p.name for p in folder.iterdir())  # same names, same numbering
    assert names[0] == f"frame_1001.{extension}"
    for name in names:
        assert read_frame(output / name, codec).format.name == pix_fmt  # same bit depth
        corner, face = corner_and_face_change(folder / name, output / name, codec)
        assert corner == 0  # bit-exact outside the face
        assert face > 4.0
    paths = OutputPaths.for_sequence(output)
    assert paths.run_json.exists() and paths.preview.exists() and paths.frames is not None
    assert not paths.work.exists()


@pytest.mark.ray
def test_pattern_output_and_frame_rate(local_ray, tmp_path: Path, demo_frames) -> None:
    folder = write_sequence(tmp_path / "shot", demo_frames[:4], first=1)
    summary = render_sequence(f"{folder}/frame_%04d.png", tmp_path, "media.frame_rate=30",
                              f"output={tmp_path}/out/swapped.%03d.png")
    assert summary.frames == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "swapped.001.png", "swapped.002.png", "swapped.003.png", "swapped.004.png"]
    # The sidecars sit beside the output folder, named after it.
    assert OutputPaths.for_sequence(tmp_path / "out").run_json.exists()


@pytest.mark.ray
def test_rerun_renders_only_the_deleted_frames(local_ray, tmp_path: Path, demo_frames) -> None:
    folder = write_sequence(tmp_path / "shot", demo_frames[:6], first=1)
    render_sequence(str(folder), tmp_path)
    output = tmp_path / "run" / "shot.swapped"
    first_bytes = {p.name: p.read_bytes() for p in output.iterdir()}
    stamps = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    # Chunks own frames [0, 3) and [3, 6): delete two frames of the second.
    for name in ("frame_0005.png", "frame_0006.png"):
        (output / name).unlink()
    summary = render_sequence(str(folder), tmp_path)
    assert (summary.chunks_rendered, summary.chunks_reused) == (1, 1)
    assert any("resumed per frame: 4 of 6" in note for note in summary.notes)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == first_bytes
    for name in ("frame_0001.png", "frame_0002.png", "frame_0003.png"):
        assert (output / name).stat().st_mtime_ns == stamps[name]  # never rewritten
    record = json.loads(OutputPaths.for_sequence(output).frames.read_text())  # type: ignore
    assert len(record["frames"]) == 6


def test_cli_gap_is_one_line_and_exit_2(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "shot", [np.zeros((16, 16, 3), np.uint8)] * 4)
    (folder / "frame_1002.png").unlink()
    result = run_render(tmp_path, f"+video={folder}", f"+source={demo_source_image_path()}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusionray: error:")]
    assert len(lines) == 1 and "frame_1002.png" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_renders_a_folder(tmp_path: Path, demo_frames) -> None:
    folder = write_sequence(tmp_path / "shot", demo_frames[:4], first=1)
    result = run_render(tmp_path, f"+video={folder}", f"+source={demo_source_image_path()}",
                        "chunk.frames=2", "preview_frames=0")
    assert result.returncode == 0, result.stderr[-3000:]
    output = tmp_path / "hydra" / "shot.swapped"
    assert sorted(p.name for p in output.iterdir()) == [f"frame_{i:04d}.png" for i in (1, 2, 3, 4)]
    assert os.path.exists(tmp_path / "hydra" / "shot.swapped.run.json")
    assert cv2.imread(str(output / "frame_0001.png")) is not None
