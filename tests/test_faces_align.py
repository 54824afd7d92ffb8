"""Alignment: templates, the least-squares similarity, and aligned crops of a real face."""

from __future__ import annotations

import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.faces.align import (
    ARCFACE_TEMPLATE_112,
    align_face,
    arcface_template,
    estimate_similarity,
    template_for,
)
from tests.faces_fixtures import astronaut_bgr, blazeface

SHIFT_128 = np.array([8.0, 0.0])
"""The 128 template is the 112 one moved 8 px right."""


def _similarity(scale: float, angle_degrees: float, tx: float, ty: float) -> np.ndarray:
    angle = np.deg2rad(angle_degrees)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.concatenate([rotation, [[tx], [ty]]], axis=1)


@pytest.mark.parametrize(
    ("scale", "angle", "tx", "ty"),
    [(1.0, 0.0, 0.0, 0.0), (2.5, 30.0, -40.0, 12.0), (0.3, -170.0, 500.0, 7.5)],
)
def test_recovers_known_similarity_exactly(
    scale: float, angle: float, tx: float, ty: float
) -> None:
    src = np.random.default_rng(0).uniform(0, 300, size=(6, 2))
    matrix = _similarity(scale, angle, tx, ty)
    dst = src @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(estimate_similarity(src, dst), matrix, atol=1e-6)


def test_blazeface6_subset_maps_onto_template() -> None:
    points, indices = template_for("blazeface6", 112)
    assert indices.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(points[3], ARCFACE_TEMPLATE_112[3:5].mean(axis=0))
    # A face whose 4 points are the template moved by a similarity is mapped back exactly.
    matrix = _similarity(1.7, 12.0, 30.0, -5.0)
    keypoints = np.concatenate([points @ matrix[:, :2].T + matrix[:, 2], np.zeros((2, 2))])
    recovered = estimate_similarity(keypoints[indices], points)
    back = keypoints[indices] @ recovered[:, :2].T + recovered[:, 2]
    np.testing.assert_allclose(back, points, atol=1e-6)


def test_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    mirrored = src * np.array([-1.0, 1.0])
    matrix = estimate_similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        estimate_similarity(np.zeros((3, 2)), np.zeros((4, 2)))


def test_templates_for_crop_sizes() -> None:
    np.testing.assert_allclose(arcface_template(112), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(arcface_template(128), ARCFACE_TEMPLATE_112 + SHIFT_128)
    np.testing.assert_allclose(arcface_template(256), (ARCFACE_TEMPLATE_112 + SHIFT_128) * 2)
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)
    with pytest.raises(ConfigError, match="Choose one of: arcface5, blazeface6"):
        template_for("dlib68", 112)  # type: ignore[arg-type]


@pytest.mark.parametrize("crop_size", [112, 128, 256])
def test_align_face_puts_eyes_on_the_template(crop_size: int) -> None:
    image = astronaut_bgr()
    # The back model (the video default) places the astronaut's eyes within 1.3 px of the 112
    # template; the front model's keypoints are coarser (2.5 px), not a fault of the fit.
    face = blazeface("back").detect(image)[0]
    crop, matrix = align_face(image, face, crop_size)
    assert crop.shape == (crop_size, crop_size, 3) and crop.dtype == np.uint8
    eyes = face.keypoints[:2] @ matrix[:, :2].T + matrix[:, 2]
    template = arcface_template(crop_size)
    # ±2 px on the 112/128 templates; the 256 crop doubles every pixel distance.
    np.testing.assert_allclose(eyes, template[:2], atol=2.0 * max(1.0, crop_size / 128))
    # The crop is the face: darker eyes than the cheek between them and the mouth.
    eye_row = crop[int(template[0, 1]), int(template[0, 0])].astype(int).sum()
    cheek = crop[int(template[2, 1]) - 4, int(template[0, 0])].astype(int).sum()
    assert eye_row < cheek
