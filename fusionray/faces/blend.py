"""Compositing a foreground onto a background through a soft mask. Pure."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.types import FrameBGR


def _check(
    foreground: FrameBGR, background: FrameBGR, mask: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    if foreground.shape != background.shape:
        raise ValueError(
            f"foreground {foreground.shape} and background {background.shape} differ in shape"
        )
    weights = np.asarray(mask, dtype=np.float32)
    if weights.shape != foreground.shape[:2]:
        raise ValueError(f"mask {weights.shape} does not match the images {foreground.shape[:2]}")
    return np.clip(weights, 0.0, 1.0)


def alpha_blend(foreground: FrameBGR, background: FrameBGR, mask: npt.ArrayLike) -> FrameBGR:
    """Per-pixel mix `mask·fg + (1 − mask)·bg`.

    Args:
        foreground, background: (H, W, 3) uint8.
        mask: (H, W) weights of the foreground in [0, 1].

    Returns:
        (H, W, 3) uint8.
    """
    weights = _check(foreground, background, mask)[..., None]
    mixed = foreground.astype(np.float32) * weights + background.astype(np.float32) * (1 - weights)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def laplacian_blend(
    foreground: FrameBGR, background: FrameBGR, mask: npt.ArrayLike, *, levels: int = 5
) -> FrameBGR:
    """Multi-band blend (Burt & Adelson): each Laplacian band mixed with a blurred mask.

    Coarse bands mix over wide transitions and fine bands over narrow ones, which hides seams
    in both low-frequency colour and high-frequency texture. Images whose size is not a
    multiple of 2^levels are reflect-padded first and cropped after; `levels` is reduced when
    the image is too small for that many halvings.

    Args:
        foreground, background: (H, W, 3) uint8.
        mask: (H, W) weights of the foreground in [0, 1].
        levels: number of band-pass levels (>= 1); 0 or a 1-pixel image falls back to alpha.

    Returns:
        (H, W, 3) uint8. All-ones mask gives the foreground, all-zeros the background (±1).
    """
    weights = _check(foreground, background, mask)
    height, width = foreground.shape[:2]
    levels = min(levels, int(np.floor(np.log2(max(1, min(height, width))))))
    if levels < 1:
        return alpha_blend(foreground, background, weights)
    step = 1 << levels
    pad_y = (-height) % step
    pad_x = (-width) % step

    def pad(image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if not (pad_x or pad_y):
            return image
        padded = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REFLECT_101)
        return np.asarray(padded, dtype=np.float32)

    fg = pad(foreground.astype(np.float32))
    bg = pad(background.astype(np.float32))
    alpha = pad(weights)

    blended_bands: list[npt.NDArray[np.float32]] = []
    for _ in range(levels):
        fg_down = np.asarray(cv2.pyrDown(fg), dtype=np.float32)
        bg_down = np.asarray(cv2.pyrDown(bg), dtype=np.float32)
        size = (fg.shape[1], fg.shape[0])
        fg_band = fg - cv2.pyrUp(fg_down, dstsize=size)
        bg_band = bg - cv2.pyrUp(bg_down, dstsize=size)
        a = alpha[..., None]
        blended_bands.append(fg_band * a + bg_band * (1 - a))
        fg, bg = fg_down, bg_down
        alpha = np.asarray(cv2.pyrDown(alpha), dtype=np.float32)
    a = alpha[..., None]
    result = fg * a + bg * (1 - a)
    for band in reversed(blended_bands):
        result = cv2.pyrUp(result, dstsize=(band.shape[1], band.shape[0])) + band
    result = result[:height, :width]
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)
