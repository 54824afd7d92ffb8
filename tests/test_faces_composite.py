"""Mask, colour transfer and blending: the pure compositing functions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.faces.align import arcface_template
from fusionray.faces.blend import alpha_blend, laplacian_blend
from fusionray.faces.colour import match_colour_lab, to_lab
from fusionray.faces.mask import build_face_mask
from tests.faces_fixtures import astronaut_bgr


@pytest.mark.parametrize("crop_size", [112, 128, 256])
def test_mask_range_shape_symmetry(crop_size: int) -> None:
    mask = build_face_mask(crop_size, padding=0.0, blur=0.3)
    assert mask.shape == (crop_size, crop_size) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    # The blur sums ~100-tap float32 kernels in a different order on the mirrored side:
    # symmetric within that round-off (1e-4 ≫ 100 · 2⁻²⁴), far below a real asymmetry.
    np.testing.assert_allclose(mask, mask[:, ::-1], atol=1e-4)
    template = arcface_template(crop_size)
    values = [mask[round(y), round(x)] for x, y in template]
    assert min(values[:3]) > 0.99  # Eyes and nose fully inside.
    assert min(values[3:]) > 0.8  # Mouth corners inside, near the feather of the jaw.
    mouth = template[3:5].mean(axis=0)
    assert mask[round(mouth[1]), round(mouth[0])] > 0.97
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert border.max() == 0.0


def test_mask_padding_and_blur() -> None:
    base = build_face_mask(256, padding=0.0, blur=0.3)
    grown = build_face_mask(256, padding=0.1, blur=0.3)
    shrunk = build_face_mask(256, padding=-0.1, blur=0.3)
    assert shrunk.sum() < base.sum() < grown.sum()
    hard = build_face_mask(256, padding=0.0, blur=0.0)
    soft_band = ((base > 0.05) & (base < 0.95)).sum()
    hard_band = ((hard > 0.05) & (hard < 0.95)).sum()
    assert soft_band > 5 * hard_band
    with pytest.raises(ConfigError, match="padding"):
        build_face_mask(256, padding=0.5, blur=0.3)
    with pytest.raises(ConfigError, match="blur"):
        build_face_mask(256, padding=0.0, blur=-1.0)


def test_colour_match_moves_lab_means_to_target() -> None:
    image = astronaut_bgr()[60:200, 160:300]
    # A warmer, darker version of the same region as the target.
    target = np.clip(image.astype(np.int16) * [0.7, 0.8, 1.0] + [0, 0, 30], 0, 255).astype(np.uint8)
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.ellipse(mask, (70, 70), (50, 60), 0, 0, 360, 1.0, -1)
    matched = match_colour_lab(image, target, mask)
    weights = mask.reshape(-1, 1)

    def mean(lab: np.ndarray) -> np.ndarray:
        return (lab.reshape(-1, 3) * weights).sum(axis=0) / weights.sum()

    before = np.abs(mean(to_lab(image)) - mean(to_lab(target)))
    after = np.abs(mean(to_lab(matched)) - mean(to_lab(target)))
    assert before.max() > 5.0
    assert after.max() < 1.0
    assert matched.dtype == np.uint8 and matched.shape == image.shape


def test_colour_match_with_empty_mask_is_identity() -> None:
    image = astronaut_bgr()[:32, :32]
    out = match_colour_lab(image, 255 - image, np.zeros((32, 32)))
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(("height", "width"), [(64, 64), (97, 131), (33, 50), (5, 7)])
def test_laplacian_blend_extremes(height: int, width: int) -> None:
    rng = np.random.default_rng(1)
    foreground = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ones = np.ones((height, width), np.float32)
    for levels in (1, 5):
        out_fg = laplacian_blend(foreground, background, ones, levels=levels)
        out_bg = laplacian_blend(foreground, background, ones * 0, levels=levels)
        assert out_fg.shape == foreground.shape
        assert np.abs(out_fg.astype(int) - foreground).max() <= 1
        assert np.abs(out_bg.astype(int) - background).max() <= 1


def test_laplacian_blend_half_mask_transitions_smoothly() -> None:
    foreground = np.full((64, 128, 3), 200, np.uint8)
    background = np.full((64, 128, 3), 50, np.uint8)
    mask = np.zeros((64, 128), np.float32)
    mask[:, :64] = 1.0
    out = laplacian_blend(foreground, background, mask, levels=4)
    row = out[32, :, 0].astype(int)
    assert row[0] == 200 and row[-1] == 50
    assert np.all(np.diff(row) <= 0)  # Monotone: no ringing at the seam.
    assert np.count_nonzero((row > 55) & (row < 195)) > 2  # A soft transition.


def test_alpha_blend() -> None:
    foreground = np.full((4, 4, 3), 200, np.uint8)
    background = np.full((4, 4, 3), 100, np.uint8)
    out = alpha_blend(foreground, background, np.full((4, 4), 0.25))
    assert np.all(out == 125)
    with pytest.raises(ValueError, match="mask"):
        alpha_blend(foreground, background, np.ones((3, 3)))
