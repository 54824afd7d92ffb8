"""Frames kept in their planes: exact conversions, exact write-back, regions that cover a swap.

DESIGN.md invariant 7 at the unit level: reading a face region as BGR and writing back what a
swap changed leaves every other sample of every plane bit-identical, at 8 and 10 bits, 4:2:0 /
4:2:2 / 4:4:4; a swap done region by region equals the swap of the whole frame.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from fusionray.actors.stages import display_size, read_region, write_region
from fusionray.faces.blazeface import BlazeFaceDetector
from fusionray.media.decode import read_image_bgr
from fusionray.media.demo import demo_source_image_path
from fusionray.media.frame import (
    SWS_ACCURATE,
    PlaneFrame,
    YuvMatrix,
    face_regions,
    pixel_layout,
    rotate_rect,
    scale_face,
    shift_face,
    small_bgr,
)
from fusionray.swap.classic import ClassicSwapper
from fusionray.types import Face
from tests.faces_fixtures import astronaut_bgr, astronaut_on_canvas

BT601, BT709, BT2020 = 6, 1, 9


def random_frame(pix_fmt: str, *, colorspace: int, color_range: int, seed: int = 0,
                 width: int = 64, height: int = 48) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, pix_fmt)
    frame.colorspace, frame.color_range = colorspace, color_range
    planes = PlaneFrame(frame)
    rng = np.random.default_rng(seed)
    peak = 2 ** pixel_layout(pix_fmt).bits - 1
    for plane in planes.planes:
        plane[...] = rng.integers(peak // 4, 3 * peak // 4, plane.shape)
    return frame


@pytest.mark.parametrize(
    ("matrix", "codes", "bgr"),
    [
        # Limited range 8-bit: 16 black, 235 white; full range: 0 and 255.
        (YuvMatrix(0.2126, 0.0722, False, 8), (16, 128, 128), (0, 0, 0)),
        (YuvMatrix(0.2126, 0.0722, False, 8), (235, 128, 128), (255, 255, 255)),
        (YuvMatrix(0.2126, 0.0722, True, 8), (255, 128, 128), (255, 255, 255)),
        # 10-bit limited: 64 .. 940.
        (YuvMatrix(0.2627, 0.0593, False, 10), (940, 512, 512), (255, 255, 255)),
        (YuvMatrix(0.2627, 0.0593, False, 10), (64, 512, 512), (0, 0, 0)),
        # Pure red, limited 8-bit: Y = 16 + 219 Kr, Cb = 128 - 224 Kr / (2 (1 - Kb)), Cr = 240.
        (YuvMatrix(0.2126, 0.0722, False, 8), (62.5594, 102.3357, 240.0), (0, 0, 255)),
        (YuvMatrix(0.299, 0.114, False, 8), (81.481, 90.2031, 240.0), (0, 0, 255)),
    ],
)
def test_matrix_reference_points(matrix: YuvMatrix, codes: tuple[float, ...],
                                 bgr: tuple[int, ...]) -> None:
    converted = matrix.to_bgr(*(np.array([c], np.float64) for c in codes))[0]
    np.testing.assert_allclose(converted, bgr, atol=0.01)
    back = np.array([c[0] for c in matrix.to_yuv(np.array([bgr], np.float64))])
    np.testing.assert_allclose(back, codes, atol=0.001)


@pytest.mark.parametrize("colorspace", [BT601, BT709, BT2020])
@pytest.mark.parametrize("color_range", [1, 2])
def test_region_bgr_agrees_with_swscale_accurate_rounding(colorspace: int,
                                                          color_range: int) -> None:
    frame = random_frame("yuv444p", colorspace=colorspace, color_range=color_range)
    reference = frame.reformat(format="bgr24", interpolation=SWS_ACCURATE,
                               src_color_range=color_range, dst_color_range=2).to_ndarray()
    ours, _ = PlaneFrame(frame).read_bgr((0, 0, 64, 48))
    difference = ours.astype(int) - reference.astype(int)
    assert np.abs(difference).max() <= 1
    assert abs(difference.mean()) < 0.02  # no systematic shift (the old path: about -0.5)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p", "yuv444p", "yuv420p10le",
                                     "yuv444p12le", "bgr24", "bgr0"])
def test_write_back_changes_only_the_changed_pixels_and_their_chroma_cells(pix_fmt: str) -> None:
    frame = random_frame(pix_fmt, colorspace=BT709, color_range=1)
    planes = PlaneFrame(frame)
    before = [plane.copy() for plane in planes.planes]
    rect = planes.align_rect((3, 5, 41, 37))
    assert rect == {"yuv420p": (2, 4, 42, 38), "yuv422p": (2, 5, 42, 37),
                    "yuv420p10le": (2, 4, 42, 38)}.get(pix_fmt, (3, 5, 41, 37))
    original, exact = planes.read_bgr(rect)
    assert planes.write_bgr(rect, original.copy(), original, exact) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, planes.planes, strict=True))

    swapped = original.copy()
    swapped[10:20, 11:21] = 200  # region pixels (12..21, 14..23) of the frame... relative
    changed = planes.write_bgr(rect, swapped, original, exact)
    assert changed == int(np.any(swapped != original, axis=-1).sum())
    x0, y0 = rect[:2]
    luma_changed = np.zeros((48, 64), bool)
    luma_changed[y0 + 10:y0 + 20, x0 + 11:x0 + 21] = True
    if planes.layout.kind == "yuv":
        sx, sy = planes.layout.chroma_shift
        assert np.array_equal(before[0] != planes.planes[0],
                              luma_changed & (before[0] != planes.planes[0]))
        assert np.all(planes.planes[0][~luma_changed] == before[0][~luma_changed])
        cells = luma_changed.reshape(48 >> sy, 1 << sy, 64 >> sx, 1 << sx).any(axis=(1, 3))
        for index in (1, 2):
            assert np.all(planes.planes[index][~cells] == before[index][~cells])
        # The new face reads back as what the engine drew (4:4:4 exactly, to rounding).
        back, _ = planes.read_bgr(rect)
        if (sx, sy) == (0, 0):
            assert np.abs(back[10:20, 11:21].astype(int) - 200).max() <= 1
        else:
            assert abs(back[12:18, 13:19].astype(float).mean() - 200) < 1.0
    else:
        view = planes.planes[0][..., :3]
        assert np.all(view[luma_changed] == 200)
        assert np.array_equal(view[~luma_changed], before[0][..., :3][~luma_changed])


def test_high_bit_depth_keeps_full_precision_outside_what_the_swap_changed() -> None:
    """A 10-bit gradient (one code per column, finer than 8-bit steps), swapped over its right
    half: the left half keeps all its codes; the right half is the engine's uint8 result,
    converted at 10 bits (within half a code)."""
    frame = av.VideoFrame(64, 16, "yuv444p10le")
    frame.colorspace, frame.color_range = BT2020, 1
    planes = PlaneFrame(frame)
    planes.planes[0][...] = 300 + np.arange(64)[None, :]
    planes.planes[1][...], planes.planes[2][...] = 500, 530
    before = planes.planes[0].copy()
    rect = (0, 0, 64, 16)
    original, exact = planes.read_bgr(rect)
    assert len(np.unique(original[0, :, 1])) <= 64 // 3  # 8 bits: about 3.4 columns a level
    swapped = original.copy()
    swapped[:, 32:] = np.clip(np.rint(original[:, 32:] * 0.5 + 50), 0, 255).astype(np.uint8)
    planes.write_bgr(rect, swapped, original, exact)
    assert np.array_equal(planes.planes[0][:, :32], before[:, :32])
    assert len(np.unique(planes.planes[0][0, :32])) == 32
    assert planes.matrix is not None
    drawn = planes.matrix.to_yuv(swapped[:, 32:].astype(np.float64))[0]
    assert np.abs(planes.planes[0][:, 32:] - drawn).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_rotate_rect_matches_numpy_rot90(turns: int) -> None:
    image = np.arange(7 * 11).reshape(7, 11)
    rect = (2, 1, 9, 5)
    rotated = np.rot90(image, turns)
    x0, y0, x1, y1 = rotate_rect(rect, turns, 11, 7)
    assert sorted(rotated[y0:y1, x0:x1].ravel()) == sorted(image[1:5, 2:9].ravel())
    assert rotate_rect((x0, y0, x1, y1), -turns % 4, *rotated.shape[::-1]) == rect


def test_small_image_faces_scale_back_to_frame_pixels() -> None:
    image, _ = astronaut_on_canvas(60)
    height, width = image.shape[:2]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    small, scale_x, scale_y = small_bgr(frame.reformat(format="yuv444p"), 256)
    assert small.shape[:2] == (144, 256)  # 1280 x 720 shrunk to 256 on its longer side
    assert (small.shape[1] * scale_x, small.shape[0] * scale_y) == pytest.approx((width, height))
    detector = BlazeFaceDetector(model="back")
    full = detector.detect(image)[0]
    found = scale_face(detector.detect(small)[0], scale_x, scale_y)
    eye_distance = float(np.linalg.norm(full.keypoints[0] - full.keypoints[1]))
    assert np.abs(found.keypoints - full.keypoints).max() < 0.1 * eye_distance


@pytest.mark.parametrize("turns", [0, 1, 3])
def test_swapping_region_by_region_equals_swapping_the_whole_frame(turns: int) -> None:
    """Classic engine on a frame with two faces: the region path (read, rotate, swap, write)
    gives exactly the whole-frame swap, so the regions cover everything a swap touches."""
    face_image = read_image_bgr(demo_source_image_path())
    detector = BlazeFaceDetector(model="back")
    swapper = ClassicSwapper(crop_size=128)
    source = swapper.prepare_source([face_image], detector.detect(face_image)[:1])
    display = np.full((400, 720, 3), 90, np.uint8)
    small = cv2.resize(astronaut_bgr(), (256, 256), interpolation=cv2.INTER_AREA)
    display[10:266, 10:266] = small
    display[130:386, 440:696] = small[:, ::-1]
    faces = detector.detect(display)
    assert len(faces) == 2
    expected = swapper.swap(display, faces, source)

    coded = np.ascontiguousarray(np.rot90(display, -turns))
    planes = PlaneFrame(av.VideoFrame.from_ndarray(coded, format="bgr24"))
    width, height = display_size(planes.width, planes.height, turns)
    regions = face_regions(faces, width, height)
    assert len(regions) == 2  # far apart: two small regions, not one big one
    for rect, members in regions:
        region = read_region(planes, rect, turns)
        x0, y0 = region.display_rect[:2]
        region.image = swapper.swap(region.image, [shift_face(faces[i], -x0, -y0)
                                                   for i in members], source)
        write_region(planes, region, turns)
    actual = np.rot90(planes.planes[0], turns)
    assert np.array_equal(actual, expected)


def test_overlapping_faces_share_one_region() -> None:
    def face(x: float) -> Face:
        points = np.array([[x, 50], [x + 20, 50], [x + 10, 62], [x + 3, 72], [x + 17, 72]])
        return Face(bbox=np.array([x - 8, 35, x + 28, 85]), keypoints=points, score=0.9)

    regions = face_regions([face(50), face(70), face(300)], 400, 200)
    assert [members for _, members in regions] == [[0, 1], [2]]
    assert all(0 <= r[0] < r[2] <= 400 and 0 <= r[1] < r[3] <= 200 for r, _ in regions)
