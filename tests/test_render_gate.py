"""The target gate's verifier where the render detects: each face's canonical crop is cut from a
full-resolution region of the decoded frame (`fusionray.actors.stages.verify_scores`), and
scores exactly what the whole frame in BGR scores, in display orientation, also where the
crop's footprint runs off the frame."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import skimage.data

from fusionray.actors.stages import (
    small_image_serves,
    verify_footprint,
    verify_scores,
    verify_scores_with_small,
)
from fusionray.config import SelectionConfig
from fusionray.faces.gate import FaceVerifier
from fusionray.media.frame import shift_face, small_bgr
from fusionray.types import Face
from tests.faces_fixtures import astronaut_bgr, blazeface

WIDTH, HEIGHT = 900, 480


def display_image() -> tuple[np.ndarray, list[Face]]:
    """The astronaut's face against the top-left corner (her crop runs off the frame) and
    skimage's cat at the bottom right (a detection the verifier rejects), with their
    detections (each found on its own picture: the detector's small input would miss the cat
    on the whole canvas)."""
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    astronaut = np.ascontiguousarray(astronaut_bgr()[40:370, 140:500])
    canvas[:330, :360] = astronaut
    cat = cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR)
    left, top = WIDTH - cat.shape[1], HEIGHT - cat.shape[0]
    canvas[top:, left:] = cat
    faces = blazeface("back").detect(astronaut) + [
        shift_face(face, left, top) for face in blazeface("back").detect(cat)]
    return canvas, faces


@pytest.mark.parametrize("turns", [0, 1, 3])
def test_region_scores_equal_whole_frame_scores(turns: int) -> None:
    display, faces = display_image()
    assert len(faces) == 2, "the fixture must hold the astronaut's and the cat's detections"
    height, width = display.shape[:2]
    footprints = [verify_footprint(face, width, height) for face in faces]
    # At least one crop is clipped by the frame (the edge case the footprint must get right),
    # and no footprint is the whole frame (otherwise the comparison shows nothing).
    assert any(x0 == 0 or y0 == 0 for x0, y0, _, _ in footprints)
    assert all((x1 - x0) * (y1 - y0) < width * height for x0, y0, x1, y1 in footprints)
    coded = np.ascontiguousarray(np.rot90(display, -turns))
    frame = av.VideoFrame.from_ndarray(coded, format="bgr24")
    verifier = FaceVerifier(blazeface("front"))
    whole = [verifier.score(display, face) for face in faces]
    # Both verdicts occur: the astronaut is confirmed, the cat is not.
    assert max(whole) > 0.7 and min(whole) < SelectionConfig().verify_min_score
    assert verify_scores(verifier, frame, faces, turns) == whole


@pytest.mark.parametrize("turns", [0, 1])
@pytest.mark.parametrize("side", [256, 900])
def test_scores_from_the_detector_image_keep_the_verdicts(turns: int, side: int) -> None:
    """Where the detector's small image holds a crop's detail the crop is cut from it (cheap),
    else from the full-resolution region: the verdicts are the whole frame's either way, and
    the scores within 0.05 of it."""
    display, faces = display_image()
    coded = np.ascontiguousarray(np.rot90(display, -turns))
    frame = av.VideoFrame.from_ndarray(coded, format="bgr24")
    small, scale_x, scale_y = small_bgr(frame, side)
    if turns:  # as FaceFinder.find does: the detector's image upright, its factors swapped
        small = np.ascontiguousarray(np.rot90(small, turns))
        scale_x, scale_y = scale_y, scale_x
    served = [small_image_serves(face, scale_x, scale_y) for face in faces]
    # The full-size image serves every face; the 256 px one is too coarse for the astronaut.
    assert all(served) if side == 900 else not all(served)
    verifier = FaceVerifier(blazeface("front"))
    whole = [verifier.score(display, face) for face in faces]
    scores = verify_scores_with_small(verifier, frame, faces, turns, small, scale_x, scale_y)
    threshold = SelectionConfig().verify_min_score
    assert [s >= threshold for s in scores] == [w >= threshold for w in whole]
    np.testing.assert_allclose(scores, whole, atol=0.05)
