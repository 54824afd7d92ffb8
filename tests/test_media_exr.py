"""OpenEXR image sequences (`fusionray.media.exr`, `fusionray.media.display`): the linear ->
display transform and its inverse, the write-back that keeps every unchanged sample's bits,
refusals by name, and renders of half and float sequences of the demo astronaut."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenEXR
import pyarrow.parquet as pq
import pytest

from fusionray.errors import MediaError
from fusionray.media.demo import render_demo_frames
from fusionray.media.display import (
    from_display,
    merge_display,
    srgb_eotf,
    srgb_oetf,
    to_display,
)
from fusionray.media.exr import encode_display_frame, read_exr
from fusionray.media.frame import face_regions
from fusionray.media.sequence import (
    SequenceReader,
    find_sequence,
    probe_sequence,
    read_frame,
)
from fusionray.types import Face
from tests.test_media_sequence import render_sequence

HOT = 4.0
"""A background highlight above display white (linear)."""
HOT_ROWS = ((slice(300, 310), slice(10, 200)), (slice(315, 320), slice(10, 200)),
            (slice(325, 330), slice(10, 200)))
"""Where the background gets values above 1.0 and below 0 (bottom left, never near the face
in the demo's camera path)."""


def linearise(bgr: np.ndarray, dtype: type) -> np.ndarray:
    """(h, w, 3) uint8 BGR -> (h, w, 3) linear RGB of `dtype`, with highlights above 1.0 and
    negative values in the background (`HOT_ROWS`)."""
    rgb = bgr[:, :, ::-1].astype(np.float64) / 255.0
    linear = srgb_eotf(rgb)
    linear[HOT_ROWS[0]] = HOT
    linear[HOT_ROWS[1]] = -0.25
    linear[HOT_ROWS[2]] = np.linspace(1.0, 70000.0 if dtype == np.float32 else 60000.0,
                                      190)[None, :, None]
    return linear.astype(dtype)


def write_exr_sequence(folder: Path, frames: list[np.ndarray], dtype: type, *,
                       first: int = 1001, compression=OpenEXR.PIZ_COMPRESSION,
                       alpha: bool = False) -> list[np.ndarray]:
    """Write `frames` (uint8 BGR) as `frame_%04d.exr`; returns the linear RGB written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, bgr in enumerate(frames):
        linear = linearise(bgr, dtype)
        channels = {name: np.ascontiguousarray(linear[..., i]) for i, name in enumerate("RGB")}
        if alpha:
            channels["A"] = np.full(linear.shape[:2], 0.5, dtype)
        header = {"compression": compression, "type": OpenEXR.scanlineimage,
                  "owner": "fusionray tests"}
        OpenEXR.File(header, channels).write(str(folder / f"frame_{first + index:04d}.exr"))
        written.append(linear)
    return written


@pytest.fixture(scope="module")
def demo_frames() -> list[np.ndarray]:
    return render_demo_frames(0.32)  # 8 frames, 640x360, the astronaut's face in each


# ---- the transform ------------------------------------------------------------------------


def test_srgb_curve_is_the_iec_piecewise_one_and_inverts() -> None:
    values = np.linspace(0.0, 1.0, 10001)
    assert np.allclose(srgb_eotf(srgb_oetf(values)), values, atol=1e-12)
    assert srgb_oetf(np.array([0.0031308]))[0] == pytest.approx(0.0031308 * 12.92)
    assert srgb_oetf(np.array([0.18]))[0] == pytest.approx(0.4613561, abs=1e-6)  # mid grey
    assert srgb_oetf(np.array([1.0]))[0] == pytest.approx(1.0)


def test_display_clips_and_maps_nan_to_black() -> None:
    linear = np.array([-1.0, 0.0, 0.18, 1.0, 4.0, np.inf, np.nan], np.float16)
    # 0.18 as a half is 0.18005; its sRGB code is 0.46143 * 65535.
    assert to_display(linear).tolist() == [0, 0, 30239, 65535, 65535, 65535, 0]


def test_writing_back_an_unchanged_display_keeps_every_half_bit() -> None:
    # Every finite and non-finite half value, as a (h, w, 3) picture.
    every = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(256, 256, 1)
    original = np.repeat(every, 3, axis=2)
    merged, changed = merge_display(original, to_display(original))
    assert changed == 0
    assert merged.view(np.uint16).tobytes() == original.view(np.uint16).tobytes()
    # The skip matters: display -> linear alone does not return every half (clipped values,
    # and halves closer together than a 16-bit display step near black).
    again = from_display(to_display(original), np.float16)
    assert not np.array_equal(again.view(np.uint16), original.view(np.uint16))
    # ... but it does return a changed value's own display code (the write-back is stable).
    assert np.array_equal(to_display(again), to_display(original))


def test_only_changed_pixels_get_the_inverse_curve() -> None:
    original = np.full((4, 5, 3), 0.5, np.float32)
    original[0, 0] = (HOT, -0.5, 0.25)
    display = to_display(original)
    display[2, 3] = (65535, 0, 32768)
    merged, changed = merge_display(original, display)
    assert changed == 1
    assert np.array_equal(merged[0, 0], original[0, 0])
    assert merged.dtype == np.float32
    assert merged[2, 3].tolist() == pytest.approx([1.0, 0.0, float(srgb_eotf(
        np.array(32768 / 65535)))], abs=1e-7)
    untouched = np.ones((4, 5), bool)
    untouched[2, 3] = False
    assert np.array_equal(merged[untouched], original[untouched])


# ---- files --------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "pix_fmt", "alpha"), [
    (np.float16, "rgbf16le", False), (np.float32, "rgbf32le", False),
    (np.float16, "rgbaf16le", True)])
def test_probe_and_read_show_the_display_image(tmp_path: Path, demo_frames, dtype,
                                               pix_fmt: str, alpha: bool) -> None:
    written = write_exr_sequence(tmp_path / "s", demo_frames[:2], dtype, alpha=alpha)
    sequence = find_sequence(tmp_path / "s")
    assert sequence is not None and sequence.codec == "exr" and sequence.first == 1001
    info = probe_sequence(sequence, Fraction(24))
    assert (info.width, info.height, info.pix_fmt, info.color_trc) == (640, 360, pix_fmt, 8)
    with SequenceReader(info) as reader:
        (_, frame), = reader.video_frames(0, 1)
    assert frame.format.name == "rgb48le"
    assert np.array_equal(frame.to_ndarray(format="rgb48le"), to_display(written[0]))
    # The display image of the untouched astronaut is her 8-bit picture again.
    bgr = read_frame(tmp_path / "s" / "frame_1001.exr", "exr").to_ndarray(format="bgr24")
    top = HOT_ROWS[0][0].start  # above the highlights
    assert np.abs(bgr[:top].astype(int) - demo_frames[0][:top]).max() <= 1


def test_an_unchanged_frame_is_the_original_file(tmp_path: Path, demo_frames) -> None:
    write_exr_sequence(tmp_path / "s", demo_frames[:1], np.float16)
    path = tmp_path / "s" / "frame_1001.exr"
    frame = read_frame(path, "exr")
    assert encode_display_frame(frame, path) == path.read_bytes()


def test_a_changed_frame_keeps_header_types_alpha_and_compression(tmp_path: Path,
                                                                   demo_frames) -> None:
    write_exr_sequence(tmp_path / "s", demo_frames[:1], np.float16, alpha=True,
                       compression=OpenEXR.ZIP_COMPRESSION)
    path = tmp_path / "s" / "frame_1001.exr"
    frame = read_frame(path, "exr")
    pixels = frame.to_ndarray(format="rgb48le")
    pixels[100:110, 300:310] = 1234
    import av

    out = tmp_path / "out.exr"
    out.write_bytes(encode_display_frame(av.VideoFrame.from_ndarray(pixels, format="rgb48le"),
                                         path))
    before, after = read_exr(path), read_exr(out)
    assert after.header["compression"] == OpenEXR.ZIP_COMPRESSION
    assert after.header["owner"] == "fusionray tests"
    assert after.rgb.dtype == np.float16 and after.alpha is not None
    assert before.alpha is not None
    assert np.array_equal(after.alpha, before.alpha)
    mask = np.ones(before.rgb.shape[:2], bool)
    mask[100:110, 300:310] = False
    assert after.rgb[mask].tobytes() == before.rgb[mask].tobytes()
    assert np.all(to_display(after.rgb[100:110, 300:310]) == 1234)


def test_lossy_compression_is_written_back_losslessly(tmp_path: Path, demo_frames) -> None:
    write_exr_sequence(tmp_path / "s", demo_frames[:1], np.float16,
                       compression=OpenEXR.DWAA_COMPRESSION)
    path = tmp_path / "s" / "frame_1001.exr"
    pixels = read_frame(path, "exr").to_ndarray(format="rgb48le")
    pixels[0, 0] = 0
    import av

    out = tmp_path / "out.exr"
    out.write_bytes(encode_display_frame(av.VideoFrame.from_ndarray(pixels, format="rgb48le"),
                                         path))
    after, before = read_exr(out), read_exr(path)
    assert after.header["compression"] == OpenEXR.ZIP_COMPRESSION
    assert after.rgb[1:].tobytes() == before.rgb[1:].tobytes()


def test_unsupported_channels_and_types_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    plane = np.zeros((8, 8), np.float16)
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"Y": plane}).write(str(tmp_path / "a" / "f_0001.exr"))
    sequence = find_sequence(tmp_path / "a")
    assert sequence is not None
    with pytest.raises(MediaError, match=r"channels \['Y'\].*R, G, B"):
        probe_sequence(sequence, Fraction(25))
    (tmp_path / "b").mkdir()
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"R": plane, "G": plane.astype(np.float32), "B": plane}
                 ).write(str(tmp_path / "b" / "f_0001.exr"))
    sequence = find_sequence(tmp_path / "b")
    assert sequence is not None
    with pytest.raises(MediaError, match=r"G=FLOAT.*all HALF or all FLOAT"):
        probe_sequence(sequence, Fraction(25))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "f_0001.exr").write_bytes(b"not an exr")
    sequence = find_sequence(tmp_path / "c")
    assert sequence is not None
    with pytest.raises(MediaError, match=r"f_0001\.exr.*OpenEXR"):
        probe_sequence(sequence, Fraction(25))


# ---- renders ------------------------------------------------------------------------------

def swap_regions(faces_parquet: Path, width: int, height: int) -> dict[int, np.ndarray]:
    """Frame index -> (height, width) mask of the regions a swap may touch: the engine's own
    `face_regions` of the faces the render recorded."""
    table = pq.read_table(faces_parquet).to_pylist()
    masks: dict[int, np.ndarray] = {}
    for row in table:
        face = Face(bbox=np.array(row["bbox"], np.float32),
                    keypoints=np.array(row["landmarks"], np.float32).reshape(-1, 2),
                    score=row["score"], layout=row["landmarks_layout"])
        mask = masks.setdefault(row["frame"], np.zeros((height, width), bool))
        for (x0, y0, x1, y1), _ in face_regions([face], width, height):
            mask[y0:y1, x0:x1] = True
    return masks


@pytest.mark.ray
@pytest.mark.parametrize(("dtype", "pix_fmt"), [(np.float16, "rgbf16le"),
                                                (np.float32, "rgbf32le")])
def test_render_writes_the_exr_sequence_back_in_its_own_space(
        local_ray, tmp_path: Path, demo_frames, dtype, pix_fmt: str) -> None:
    written = write_exr_sequence(tmp_path / "shot", demo_frames, dtype)
    summary = render_sequence(str(tmp_path / "shot"), tmp_path)
    output = tmp_path / "run" / "shot.swapped"
    assert summary.frames == len(demo_frames)
    assert summary.frames_with_faces >= len(demo_frames) - 1
    names = sorted(p.name for p in output.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "shot").iterdir())
    assert names[0] == "frame_1001.exr"
    regions = swap_regions(tmp_path / "run" / "shot.swapped.faces.parquet", 640, 360)
    changed_frames = 0
    for index, (name, before) in enumerate(zip(names, written, strict=True)):
        after = read_exr(output / name)
        assert after.rgb.dtype == np.dtype(dtype) and after.alpha is None  # pixel type kept
        assert after.header["compression"] == OpenEXR.PIZ_COMPRESSION
        assert [c.name for c in after.header["channels"]] == ["B", "G", "R"]
        inside = regions.get(index, np.zeros(before.shape[:2], bool))
        # Bit-exact outside the swap regions, the > 1.0 and negative background included.
        assert after.rgb[~inside].tobytes() == before[~inside].tobytes()
        for rows in HOT_ROWS:
            assert after.rgb[rows].tobytes() == before[rows].tobytes()
        if inside.any():
            face = np.abs(to_display(after.rgb[inside]).astype(np.int64)
                          - to_display(before[inside])).mean() / 257
            changed_frames += face > 2.0
    assert changed_frames >= len(demo_frames) - 1
    assert probe_sequence(find_sequence(output), Fraction(25)).pix_fmt == pix_fmt  # type: ignore
