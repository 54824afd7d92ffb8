"""Mask, colour transfer and blending: the pure compositing functions."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.faces.align import arcface_template
from fusionray.faces.blend import alpha_blend, laplacian_blend
from fusionray.faces.colour import STATISTICS_SAMPLE, match_colour_lab, to_lab
from fusionray.faces.mask import build_face_mask
from fusionray.types import FrameBGR
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


def _reinhard_whole_image(source: np.ndarray, target: np.ndarray,
                          weights: np.ndarray) -> np.ndarray:
    """The transfer written plainly: every pixel of the source converted and moved."""
    support = weights.reshape(-1) > 0
    w = weights.reshape(-1)[support].astype(np.float64)

    def stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = lab.reshape(-1, 3)[support].astype(np.float64)
        mean = (w @ values) / w.sum()
        return mean, np.sqrt((w @ (values - mean) ** 2) / w.sum())

    source_lab = to_lab(source)
    source_mean, source_std = stats(source_lab)
    target_mean, target_std = stats(to_lab(target))
    ratio = np.clip(target_std / np.maximum(source_std, 1e-6), 0.5, 2.0)
    matched = (source_lab - source_mean) * ratio + target_mean
    matched[..., 0] = np.clip(matched[..., 0], 0.0, 100.0)
    bgr = cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_LAB2BGR)
    return np.clip(np.rint(bgr * 255.0), 0, 255).astype(np.uint8)


def test_colour_match_recolours_the_support_exactly_and_leaves_the_rest() -> None:
    """Only the mask's support is converted (the speed of the paste step depends on it): there
    the result is the plain whole-image transfer's, bit for bit; elsewhere the source as it was.
    The inputs are views into larger frames (not contiguous), as a caller may pass them."""
    frame = astronaut_bgr()
    source = frame[40:200, 150:310]
    target = np.ascontiguousarray(frame[::-1, ::-1][40:200, 150:310])
    yy, xx = np.mgrid[:160, :160]
    weights = np.clip(1.2 - np.hypot(yy - 80, xx - 80) / 60.0, 0.0, 1.0).astype(np.float32)
    assert 0.2 < (weights > 0).mean() < 0.8
    before = source.copy()
    matched = match_colour_lab(source, target, weights)
    np.testing.assert_array_equal(source, before)  # the input is not written
    support = weights > 0
    np.testing.assert_array_equal(matched[support],
                                  _reinhard_whole_image(before, target, weights)[support])
    np.testing.assert_array_equal(matched[~support], before[~support])
    assert np.abs(matched[support].astype(int) - before[support]).max() > 10


def test_colour_match_of_a_large_face_samples_its_statistics() -> None:
    """A large support (a close-up: over twice the cap) is measured on a regular sample of
    `STATISTICS_SAMPLE` pixels: every support pixel is still recoloured, within 1 of the
    full-statistics transfer, the same on every call."""
    # A uint8 BGR image resized stays uint8 BGR.
    frame = cast(FrameBGR, cv2.resize(astronaut_bgr(), None, fx=3.0, fy=3.0,
                                      interpolation=cv2.INTER_CUBIC))
    source = np.ascontiguousarray(frame[120:600, 450:930])
    target = np.ascontiguousarray(frame[::-1, ::-1][120:600, 450:930])
    yy, xx = np.mgrid[:480, :480]
    weights = np.clip(1.2 - np.hypot(yy - 240, xx - 240) / 180.0, 0.0, 1.0).astype(np.float32)
    support = weights > 0
    assert support.sum() > 2 * STATISTICS_SAMPLE
    matched = match_colour_lab(source, target, weights)
    reference = _reinhard_whole_image(source, target, weights)
    difference = np.abs(matched[support].astype(int) - reference[support])
    assert difference.max() <= 1
    assert np.count_nonzero(difference) < 0.1 * difference.size
    np.testing.assert_array_equal(matched[~support], source[~support])
    np.testing.assert_array_equal(match_colour_lab(source, target, weights), matched)


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


def _two_pyramid_blend(foreground: np.ndarray, background: np.ndarray, weights: np.ndarray,
                      levels: int) -> np.ndarray:
    """Burt & Adelson written plainly: both images' pyramids, each band mixed (sizes that
    halve evenly, so no padding)."""
    fg: np.ndarray = foreground.astype(np.float32)
    bg: np.ndarray = background.astype(np.float32)
    alpha: np.ndarray = weights
    bands = []
    for _ in range(levels):
        fg_down, bg_down = cv2.pyrDown(fg), cv2.pyrDown(bg)
        size = (fg.shape[1], fg.shape[0])
        fg_band = fg - cv2.pyrUp(fg_down, dstsize=size)
        bg_band = bg - cv2.pyrUp(bg_down, dstsize=size)
        bands.append(fg_band * alpha[..., None] + bg_band * (1 - alpha[..., None]))
        fg, bg, alpha = fg_down, bg_down, cv2.pyrDown(alpha)
    result = fg * alpha[..., None] + bg * (1 - alpha[..., None])
    for band in reversed(bands):
        result = cv2.pyrUp(result, dstsize=(band.shape[1], band.shape[0])) + band
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


def test_laplacian_blend_matches_the_two_pyramid_blend_and_keeps_the_far_background() -> None:
    """The blend runs on the difference's pyramid alone; it must give the classic two-pyramid
    result (within the rounding of a different summation order), and a background pixel whose
    neighbourhood the foreground never touches comes back bit for bit."""
    rng = np.random.default_rng(5)
    background = rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)
    foreground = background.copy()
    foreground[32:96, 32:96] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    weights: np.ndarray = np.zeros((128, 256), np.float32)
    cv2.circle(weights, (64, 64), 28, 1.0, -1)
    weights = cv2.GaussianBlur(weights, (0, 0), 4.0)
    out = laplacian_blend(foreground, background, weights, levels=4)
    reference = _two_pyramid_blend(foreground, background, weights, levels=4)
    assert np.abs(out.astype(int) - reference).max() <= 1
    assert np.count_nonzero(out != reference) < 0.001 * out.size
    # 4 levels reach 2^4 * 2 px beyond the changed square: from x = 160 on, nothing moves.
    np.testing.assert_array_equal(out[:, 160:], background[:, 160:])
    np.testing.assert_array_equal(laplacian_blend(foreground, background, weights * 0, levels=4),
                                  background)


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
