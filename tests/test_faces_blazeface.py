"""BlazeFace: anchor table, decoding, weighted NMS, letterbox/tiles, and real-image detection."""

from __future__ import annotations

import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.faces.blazeface import (
    ANCHOR_COUNT,
    decode_outputs,
    generate_anchors,
    letterbox,
    tile_regions,
    weighted_nms,
)
from fusionray.faces.detect import Detector, build_detector
from tests.faces_fixtures import astronaut_bgr, astronaut_on_canvas, blazeface, tom_hanks_bgr


@pytest.mark.parametrize(
    ("row", "centre"),
    [
        (0, (1 / 32, 1 / 32)),  # First cell of the 16×16 grid, anchor 0.
        (1, (1 / 32, 1 / 32)),  # Same cell, anchor 1.
        (2, (3 / 32, 1 / 32)),  # Next column.
        (32, (1 / 32, 3 / 32)),  # Next row of the 16×16 grid.
        (511, (31 / 32, 31 / 32)),  # Last anchor of the first head.
        (512, (1 / 16, 1 / 16)),  # First anchor of the 8×8 grid.
        (517, (1 / 16, 1 / 16)),  # Its six anchors share the cell.
        (518, (3 / 16, 1 / 16)),
        (895, (15 / 16, 15 / 16)),  # Last anchor.
    ],
)
def test_anchor_table(row: int, centre: tuple[float, float]) -> None:
    anchors = generate_anchors()
    assert anchors.shape == (ANCHOR_COUNT, 2) == (896, 2)
    np.testing.assert_allclose(anchors[row], centre, atol=1e-6)  # anchors are 1/32 apart


def test_decode_places_box_and_keypoints_relative_to_anchor() -> None:
    logits = np.full(896, -10.0, np.float32)
    regressors = np.zeros((896, 16), np.float32)
    logits[512] = 2.0
    # 8 px right, 4 px down, 32×16 px box, keypoint 0 at (+1, +2) px on a 128 px input.
    regressors[512, :6] = [8, 4, 32, 16, 1, 2]
    raw = decode_outputs(logits, regressors, input_size=128)
    assert raw.scores[512] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-5)
    cx, cy = 1 / 16 + 8 / 128, 1 / 16 + 4 / 128
    np.testing.assert_allclose(
        raw.boxes[512], [cx - 16 / 128, cy - 8 / 128, cx + 16 / 128, cy + 8 / 128], atol=1e-6
    )
    np.testing.assert_allclose(raw.keypoints[512, 0], [1 / 16 + 1 / 128, 1 / 16 + 2 / 128],
                               atol=1e-6)
    np.testing.assert_allclose(raw.keypoints[512, 1], [1 / 16, 1 / 16], atol=1e-6)
    assert raw.scores[0] < 1e-4


def test_decode_rejects_wrong_row_count() -> None:
    with pytest.raises(ValueError, match="896"):
        decode_outputs(np.zeros(512), np.zeros((512, 16)), input_size=128)


def test_weighted_nms_merges_duplicates_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    points = np.array([[[2, 2]], [[4, 2]], [[55, 55]]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    merged_boxes, merged_points, merged_scores = weighted_nms(
        boxes, points, scores, iou_threshold=0.3
    )
    assert merged_scores.tolist() == pytest.approx([0.9, 0.8])
    # Score-weighted mean of the first two: (0.9·0 + 0.3·1) / 1.2 = 0.25.
    # float32 weighted means of values near 10 (1 ulp = 1e-6); a wrong weighting is >= 0.08 off.
    np.testing.assert_allclose(merged_boxes[0], [0.25, 0, 10.25, 10], atol=1e-4)
    np.testing.assert_allclose(merged_points[0, 0], [2.5, 2], atol=1e-4)
    np.testing.assert_allclose(merged_boxes[1], boxes[2])


def test_weighted_nms_of_nothing() -> None:
    boxes, points, scores = weighted_nms(
        np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0), iou_threshold=0.3
    )
    assert boxes.shape == (0, 4) and points.shape == (0, 6, 2) and scores.shape == (0,)


def test_letterbox_maps_back_to_frame_pixels() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    tensor, fit = letterbox(frame, 128)
    assert tensor.shape == (1, 128, 128, 3) and tensor.dtype == np.float32
    assert fit.scale == pytest.approx(0.64) and fit.pad_x == 0 and fit.pad_y == 32
    np.testing.assert_allclose(fit.to_frame(np.array([[0.0, 0.25], [1.0, 0.75]])),
                               [[0, 0], [200, 100]], atol=1e-2)  # pixels
    # The image area is black (−1 after normalisation); the padding is 0.
    assert tensor[0, 64, 64, 0] == -1.0 and tensor[0, 0, 0, 0] == 0.0


def test_tile_regions_cover_the_frame_with_overlap() -> None:
    assert tile_regions(720, 1280, 1) == [(0, 0, 1280, 720)]
    regions = tile_regions(720, 1280, 2)
    covered = np.zeros((720, 1280), bool)
    for x0, y0, x1, y1 in regions:
        covered[y0:y1, x0:x1] = True
        assert x1 - x0 == y1 - y0 or y1 == 720  # Square unless clipped by the frame.
    assert covered.all()
    assert len(regions) == 2  # 1280×720 at tiles=2: two 732 px squares, clipped to 720 high.
    assert len(tile_regions(720, 1280, 3)) == 6


def test_factory_rejects_unknown_detector() -> None:
    with pytest.raises(ConfigError, match=r"Unknown detector 'scrd'\. Choose one of: blazeface"):
        build_detector("scrd")


def test_unknown_model_variant() -> None:
    with pytest.raises(ConfigError, match="Choose one of: front, back"):
        build_detector("blazeface", model="side")


@pytest.mark.parametrize("model", ["front", "back"])
def test_finds_the_astronaut(model: str) -> None:
    detector = blazeface(model)
    assert isinstance(detector, Detector)
    assert detector.provider == "CPUExecutionProvider"
    faces = detector.detect(astronaut_bgr())
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.75
    assert face.layout == "blazeface6"
    x1, y1, x2, y2 = face.bbox
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 200
    points = face.keypoints
    assert np.all((points[:, 0] >= x1 - 2) & (points[:, 0] <= x2 + 2))
    assert np.all((points[:, 1] >= y1) & (points[:, 1] <= y2))
    # Eyes in the upper half of the box, mouth below the nose, image-left eye first.
    assert np.all(points[:2, 1] < (y1 + y2) / 2)
    assert points[0, 0] < points[1, 0] and points[4, 0] < points[5, 0]
    assert points[3, 1] > points[2, 1] > points[0, 1]


def test_finds_tom_hanks() -> None:
    faces = blazeface("front").detect(tom_hanks_bgr())
    assert len(faces) == 1 and faces[0].score > 0.75
    assert faces[0].keypoints[0, 0] < faces[0].keypoints[1, 0]


def test_back_model_finds_a_small_face_in_hd_frame() -> None:
    canvas, (x0, y0, scale) = astronaut_on_canvas(100)
    faces = blazeface("back").detect(canvas)
    assert len(faces) == 1 and faces[0].score > 0.75
    # The astronaut's face box (front model on the full image) scaled onto the canvas.
    cx, cy = x0 + 225 * scale, y0 + 128 * scale
    box = faces[0].bbox
    assert box[0] < cx < box[2] and box[1] < cy < box[3]
    assert 70 < box[2] - box[0] < 130


def test_minimum_face_size_and_tiling() -> None:
    # Measured (face width = the front model's box, 1280×720, widths 8-102 px in 2 px steps):
    # the back model finds every face from 40 px at tiles=1, 26 px at tiles=2, 18 px at
    # tiles=3, but not monotonically below those limits (tiles=1 found 26 and 30 px and
    # missed 28 px), so a face just under a limit may or may not be found. Finds are asserted
    # with a margin above each limit; misses only far below anything ever found.
    assert blazeface("back").detect(astronaut_on_canvas(48)[0])
    assert blazeface("back", tiles=2).detect(astronaut_on_canvas(34)[0])
    assert blazeface("back", tiles=3).detect(astronaut_on_canvas(24)[0])
    assert not blazeface("back").detect(astronaut_on_canvas(12)[0])  # Under half of 26 px.
    # The front model (128 px input) found no face up to 102 px at tiles=1, and every face from
    # 88 px at tiles=2: a 100 px face in HD needs tiles.
    assert not blazeface("front").detect(astronaut_on_canvas(60)[0])
    assert blazeface("front", tiles=2).detect(astronaut_on_canvas(100)[0])


def test_blank_frame_has_no_faces() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    assert blazeface("back").detect(frame) == []
    assert blazeface("back", tiles=2).detect(frame) == []


def test_detect_batch_matches_detect() -> None:
    detector = blazeface("back")
    frames = [astronaut_bgr(), np.zeros((64, 64, 3), np.uint8)]
    batch = detector.detect_batch(frames)
    assert len(batch) == 2 and batch[1] == []
    single = detector.detect(frames[0])
    np.testing.assert_array_equal(batch[0][0].keypoints, single[0].keypoints)


def test_rejects_non_bgr_frames() -> None:
    with pytest.raises(ValueError, match="uint8"):
        blazeface("back").detect(np.zeros((10, 10), np.uint8))
