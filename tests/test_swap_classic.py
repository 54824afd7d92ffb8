"""The classic engine on real faces: it swaps, stays in its ROI, and round-trips a face."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from fusionray.errors import ConfigError, FaceNotFoundError
from fusionray.faces.align import face_to_template_matrix
from fusionray.swap.base import SourceIdentity, Swapper
from fusionray.swap.classic import ClassicSwapper, build_swapper
from fusionray.types import Face
from tests.faces_fixtures import astronaut_bgr, blazeface, psnr, tom_hanks_bgr

OPTIONS: dict[str, Any] = {
    "crop_size": 256, "mask_padding": 0.0, "mask_blur": 0.3, "colour_match": True,
    "blend": "laplacian", "blend_levels": 5,
}


@pytest.fixture(scope="module")
def target() -> tuple[np.ndarray, Face]:
    image = astronaut_bgr()
    return image, blazeface("back").detect(image)[0]


@pytest.fixture(scope="module")
def tom_hanks_source() -> SourceIdentity:
    image = tom_hanks_bgr()
    face = blazeface("front").detect(image)[0]
    return build_swapper("classic", **OPTIONS).prepare_source([image], [face])


def _roi(face: Face, crop_size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    to_frame = cv2.invertAffineTransform(face_to_template_matrix(face, crop_size))
    corners = np.array([[0, 0, 1], [crop_size, 0, 1], [0, crop_size, 1], [crop_size] * 2 + [1]])
    projected = corners @ to_frame.T
    x0, y0 = np.floor(projected.min(axis=0)).astype(int)
    x1, y1 = np.ceil(projected.max(axis=0)).astype(int) + 1
    return max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])


@pytest.mark.parametrize("blend", ["laplacian", "alpha"])
def test_swap_changes_face_only_inside_roi(
    target: tuple[np.ndarray, Face], tom_hanks_source: SourceIdentity, blend: str
) -> None:
    image, face = target
    before = image.copy()
    swapper = build_swapper("classic", **{**OPTIONS, "blend": blend})
    assert isinstance(swapper, Swapper)
    out = swapper.swap(image, [face], tom_hanks_source)
    np.testing.assert_array_equal(image, before)  # Input untouched.
    assert out.shape == image.shape and out.dtype == np.uint8
    x1, y1, x2, y2 = face.bbox.astype(int)
    difference = np.abs(out[y1:y2, x1:x2].astype(int) - image[y1:y2, x1:x2]).mean()
    assert difference > 10.0
    rx0, ry0, rx1, ry1 = _roi(face, 256, image.shape)
    outside = np.ones(image.shape[:2], bool)
    outside[ry0:ry1, rx0:rx1] = False
    np.testing.assert_array_equal(out[outside], image[outside])
    assert outside.mean() > 0.7  # The ROI is a small part of the frame.


def test_same_face_round_trip_keeps_the_face(target: tuple[np.ndarray, Face]) -> None:
    image, face = target
    swapper = ClassicSwapper(**OPTIONS)
    source = swapper.prepare_source([image], [face])
    out = swapper.swap(image, [face], source)
    x1, y1, x2, y2 = face.bbox.astype(int)
    assert psnr(out[y1:y2, x1:x2], image[y1:y2, x1:x2]) > 25.0


def test_deterministic(target: tuple[np.ndarray, Face], tom_hanks_source: SourceIdentity) -> None:
    image, face = target
    first = ClassicSwapper(**OPTIONS).swap(image, [face], tom_hanks_source)
    second = ClassicSwapper(**OPTIONS).swap(image, [face], tom_hanks_source)
    np.testing.assert_array_equal(first, second)


def test_no_faces_returns_an_equal_copy(tom_hanks_source: SourceIdentity) -> None:
    image = astronaut_bgr()
    out = ClassicSwapper(**OPTIONS).swap(image, [], tom_hanks_source)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_face_at_the_frame_edge(tom_hanks_source: SourceIdentity) -> None:
    image = astronaut_bgr()[60:, 200:]  # The face is cut by the left and top edges.
    faces = blazeface("back").detect(image)
    face = faces[0] if faces else Face(
        bbox=np.array([0, 0, 70, 110]), keypoints=np.array(
            [[5, 40], [48, 46], [22, 64], [19, 85], [-20, 50], [71, 64]]), score=0.9,
        layout="blazeface6",
    )
    out = ClassicSwapper(**OPTIONS).swap(image, [face], tom_hanks_source)
    assert out.shape == image.shape


def test_several_source_images_are_averaged(target: tuple[np.ndarray, Face]) -> None:
    image, face = target
    swapper = ClassicSwapper(**OPTIONS)
    brighter = np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8)
    single = swapper.prepare_source([image], [face])
    combined = swapper.prepare_source([image, brighter], [face, face])
    assert combined.image_count == 2 and combined.crop is not None and single.crop is not None
    shift = combined.crop.astype(int) - single.crop.astype(int)
    assert 8 < shift.mean() < 11  # The mean of +0 and +20 (less where it clips).
    assert not combined.crop.flags.writeable


def test_errors() -> None:
    with pytest.raises(ConfigError, match=r"Unknown swapper 'deepfake'\. Choose one of: classic"):
        build_swapper("deepfake")
    with pytest.raises(ConfigError, match="Choose one of: laplacian, alpha"):
        build_swapper("classic", blend="poisson")
    with pytest.raises(ConfigError, match="crop_size"):
        ClassicSwapper(crop_size=32)
    with pytest.raises(ConfigError, match="Bad option"):
        build_swapper("classic", colour=True)
    with pytest.raises(FaceNotFoundError):
        ClassicSwapper().prepare_source([], [])
    crop = np.zeros((128, 128, 3), np.uint8)
    with pytest.raises(ConfigError, match="crop size 128"):
        ClassicSwapper(crop_size=256).swap(
            astronaut_bgr(), [], SourceIdentity(crop=crop, crop_size=128, image_count=1)
        )


def test_source_identity_validation() -> None:
    with pytest.raises(ValueError, match="crop, an embedding"):
        SourceIdentity(crop=None, crop_size=256, image_count=1)
    with pytest.raises(ValueError, match="L2-normalised"):
        # A float64 array, as a caller might hand it: the check is on its norm.
        SourceIdentity(crop=None, crop_size=256, image_count=1,
                       embedding=np.ones(512))  # type: ignore[arg-type]
    embedding = np.ones(512, np.float32) / np.sqrt(512)
    identity = SourceIdentity(crop=None, crop_size=128, image_count=2, embedding=embedding)
    assert identity.embedding is not None and identity.embedding.shape == (512,)
