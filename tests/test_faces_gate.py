"""Is it a human face? The target and source gates (faces/gate.py) with the real BlazeFace on
every face photo and the non-face photos that ship in the dependencies.

Measured (BlazeFace back, detections >= 0.5; verifier = BlazeFace front on the canonical crop):
non-faces re-score 0.34 at most where the detector's own default threshold (0.7) would keep
them (chelsea the cat 0.795 -> 0.335, coffee 0.653 -> 0.338), 0.64 for a cell image the
detector scores 0.62; faces re-score 0.71 (Tom Hanks, 112 px greyscale) to 0.96 (t1.jpg), and
all but a few of LFW's 25 px faces (upscaled 4x) clear 0.5. Hence `verify_min_score` 0.5 for
targets and 0.65 for a source.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
import skimage.data

from fusionray.config import SelectionConfig
from fusionray.errors import FaceNotFoundError
from fusionray.faces.blazeface import BlazeFaceDetector
from fusionray.faces.gate import (
    FaceVerifier,
    GateLimits,
    check_source_face,
    face_geometry,
    rejection_reason,
    source_limits,
)
from fusionray.types import Face, FrameBGR
from tests.faces_fixtures import (
    INSIGHTFACE_IMAGES,
    astronaut_bgr,
    blazeface,
    read_bgr,
    tom_hanks_bgr,
)

TARGET_MIN = SelectionConfig().verify_min_score
SOURCE_MIN = SelectionConfig().source_verify_min_score

NON_FACES = ("chelsea", "coffee", "rocket", "logo", "colorwheel", "cell", "microaneurysms",
             "horse", "clock", "coins", "moon", "page", "text", "hubble_deep_field", "retina",
             "immunohistochemistry", "grass", "gravel", "brick", "checkerboard",
             "shepp_logan_phantom", "stereo_motorcycle", "mask_black", "mask_blue", "mask_green",
             "mask_white")
"""skimage's bundled photos without a person, and insightface's face-mask textures."""


def to_bgr(image: np.ndarray) -> FrameBGR:
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        image = (255 * (image - image.min()) / max(float(np.ptp(image)), 1e-9)).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR))


def non_face_photo(name: str) -> FrameBGR:
    """One of `NON_FACES` as BGR (the stereo pair's left view; insightface's masks as read)."""
    if name.startswith("mask_"):
        return read_bgr(INSIGHTFACE_IMAGES / f"{name}.jpg")
    image = getattr(skimage.data, name)()
    return to_bgr(image[0] if name == "stereo_motorcycle" else image)


def face_photos() -> dict[str, FrameBGR]:
    """Every photo of people in the dependencies (skimage, insightface)."""
    return {
        "astronaut": astronaut_bgr(),
        "camera": to_bgr(skimage.data.camera()),
        "tom_hanks": tom_hanks_bgr(),
        "t1": read_bgr(INSIGHTFACE_IMAGES / "t1.jpg"),
    }


@functools.cache
def verifier() -> FaceVerifier:
    return FaceVerifier(BlazeFaceDetector(model="front", score_threshold=0.3))


@functools.cache
def lenient(model: str) -> BlazeFaceDetector:
    """Below the video default (0.7), so the gates see the detector's near misses too."""
    return BlazeFaceDetector(model=model, score_threshold=0.5)


def lfw(index: int) -> FrameBGR:
    """LFW subset image `index` (0-99 faces, 100-199 not), 25 px scaled up to 100."""
    image = (skimage.data.lfw_subset()[index] * 255).astype(np.uint8)
    return to_bgr(cv2.resize(image, (100, 100), interpolation=cv2.INTER_CUBIC))


@pytest.mark.parametrize("model, faces", [("front", 4), ("back", 8)])
def test_every_face_photo_passes_the_target_gate(model: str, faces: int) -> None:
    limits = GateLimits(max_landmark_error=SelectionConfig().max_landmark_error)
    found = 0
    for name, image in face_photos().items():
        for face in lenient(model).detect(image):
            found += 1
            assert rejection_reason(face, limits) is None, name
            assert verifier().score(image, face) >= 0.7, (name, face.bbox)
    assert found == faces


@pytest.mark.parametrize("name", NON_FACES)
def test_non_face_photos_fail_the_target_gate(name: str) -> None:
    """Detector at its video default (0.7), then the verifier: nothing gets through. (Below
    0.7 one detection does: the cell image's 0.62 box re-scores 0.64.)"""
    image = non_face_photo(name)
    for model in ("front", "back"):
        for face in blazeface(model).detect(image):
            assert verifier().score(image, face) < TARGET_MIN, (name, model, face.score)
        for face in lenient(model).detect(image):
            if name != "cell":
                assert verifier().score(image, face) < TARGET_MIN, (name, model, face.score)


def test_cat_detected_confidently_is_refused() -> None:
    cat = to_bgr(skimage.data.chelsea())
    (face,) = blazeface("back").detect(cat)  # the video default, threshold 0.7
    assert face.score > 0.75  # what the issue saw: a confident "face"
    assert face_geometry(face).landmark_error < 0.2  # keypoints face-shaped all the same
    assert verifier().score(cat, face) < 0.4
    assert verifier().verified(cat, [face], TARGET_MIN) == []


def test_lfw_faces_and_non_faces() -> None:
    """LFW's subset: 100 faces and 100 non-faces, 25 px, the hardest photos available."""
    passed = total = 0
    for index in range(100):
        image = lfw(index)
        for face in lenient("back").detect(image):
            total += 1
            passed += verifier().score(image, face) >= TARGET_MIN
    assert total >= 95 and passed / total >= 0.95, (passed, total)
    for index in range(100, 200):
        image = lfw(index)
        faces = lenient("back").detect(image) + lenient("front").detect(image)
        assert verifier().verified(image, faces, TARGET_MIN) == [], index


def source_gate() -> GateLimits:
    selection = SelectionConfig()
    return source_limits(min_score=selection.source_min_score,
                         max_landmark_error=selection.source_max_landmark_error,
                         min_size=selection.source_min_face_size)


@pytest.mark.parametrize("name", ["astronaut", "camera", "tom_hanks", "t1"])
def test_face_photos_pass_the_source_gate(name: str) -> None:
    image = face_photos()[name]
    faces = blazeface("back").detect(image)
    face = check_source_face(image, faces, source_gate(), path=f"{name}.png",
                             verifier=verifier(), min_verify_score=SOURCE_MIN)
    assert face is max(faces, key=lambda f: f.area)


@pytest.mark.parametrize("name, message", [
    ("chelsea", "not confirmed as a human face on its aligned crop"),
    ("coffee", "confidence 0.65 < 0.70"),
])
def test_animal_or_object_source_is_refused(name: str, message: str) -> None:
    image = to_bgr(getattr(skimage.data, name)())
    faces = lenient("back").detect(image)
    with pytest.raises(FaceNotFoundError) as caught:
        check_source_face(image, faces, source_gate(), path=f"/photos/{name}.png",
                          verifier=verifier(), min_verify_score=SOURCE_MIN)
    text = str(caught.value)
    assert text.startswith(f"No usable human face in source image '/photos/{name}.png': ")
    assert message in text and "\n" not in text


@pytest.mark.parametrize("name", NON_FACES)
def test_every_non_face_photo_is_refused_as_a_source(name: str) -> None:
    """What a user would get from `+source=<that photo>`: one line naming the file (the driver
    exits 2 on it), whether the detector finds nothing or the gate refuses what it found."""
    image = non_face_photo(name)
    faces = lenient("back").detect(image) + lenient("front").detect(image)
    with pytest.raises(FaceNotFoundError) as caught:
        check_source_face(image, faces, source_gate(), path=f"/photos/{name}.png",
                          verifier=verifier(), min_verify_score=SOURCE_MIN)
    text = str(caught.value)
    assert text.startswith((f"No usable human face in source image '/photos/{name}.png': ",
                            f"No face found in source image '/photos/{name}.png'"))
    assert "\n" not in text


def test_small_or_missing_source_face_is_refused() -> None:
    small = cv2.resize(astronaut_bgr(), None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 400, 3), 90, np.uint8)
    canvas[100:100 + small.shape[0], 100:100 + small.shape[1]] = small
    faces = blazeface("back").detect(canvas)
    assert faces
    with pytest.raises(FaceNotFoundError, match=r"face \d+ px < 48 px"):
        check_source_face(canvas, faces, source_gate(), path="small.png", verifier=verifier(),
                          min_verify_score=SOURCE_MIN)
    with pytest.raises(FaceNotFoundError, match=r"No face found in source image 'wall\.png'"):
        check_source_face(canvas, [], source_gate(), path="wall.png")


def test_turned_face_passes_the_target_gate_but_not_the_source_gate() -> None:
    face = blazeface("back").detect(astronaut_bgr())[0]
    points = face.keypoints.copy()
    # Squeeze the eyes together towards the nose: a face turned about 70 degrees.
    points[0] = points[2] + (points[0] - points[2]) * np.array([0.3, 1.0], np.float32)
    points[1] = points[2] + (points[1] - points[2]) * np.array([0.3, 1.0], np.float32)
    turned = Face(bbox=face.bbox, keypoints=points, score=face.score, layout=face.layout)
    assert rejection_reason(turned, GateLimits()) is None
    assert "eye distance" in (rejection_reason(turned, source_gate()) or "")
