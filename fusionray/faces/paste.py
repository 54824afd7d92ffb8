"""Paste an aligned face crop back into a frame, touching only the face's region. Pure.

Both swap engines end here: the crop (the classic engine's source face, or inswapper's output)
is warped back by the inverse of the alignment, only over the bounding box of the warped crop
clipped to the frame (warping the whole frame per face would cost O(frame) per face for a change
covering a few percent of it), optionally colour-matched to the target in LAB, and blended
through the feathered template-space mask (multi-band or alpha).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.faces.blend import alpha_blend, laplacian_blend
from fusionray.faces.colour import match_colour_lab
from fusionray.types import FloatArray, FrameBGR

MASK_SUPPORT = 1e-3
"""Mask weight below which a pixel counts as outside the face."""


def crop_region(
    to_crop: npt.NDArray[np.float64], crop_size: int, frame_shape: tuple[int, ...]
) -> tuple[int, int, int, int] | None:
    """Frame pixels (x0, y0, x1, y1) covered by a crop warped back, or None when off-frame."""
    height, width = frame_shape[:2]
    to_frame = cv2.invertAffineTransform(to_crop)
    corners = np.array([[0, 0, 1], [crop_size, 0, 1], [0, crop_size, 1],
                        [crop_size, crop_size, 1]], np.float64)
    projected = corners @ to_frame.T
    x0 = max(int(np.floor(projected[:, 0].min())), 0)
    y0 = max(int(np.floor(projected[:, 1].min())), 0)
    x1 = min(int(np.ceil(projected[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(projected[:, 1].max())) + 1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def paste_crop(
    output: FrameBGR,
    crop_bgr: FrameBGR,
    to_crop: npt.NDArray[np.float64],
    mask: FloatArray,
    *,
    colour_match: bool,
    blend: str,
    blend_levels: int,
    opacity: float = 1.0,
    interpolation: int = cv2.INTER_LINEAR,
) -> None:
    """Blend `crop_bgr` (aligned by `to_crop`) into `output` in place, within the face region.

    Args:
        output: (H, W, 3) uint8 BGR frame, modified in place.
        crop_bgr: (S, S, 3) uint8 BGR aligned face.
        to_crop: (2, 3) frame -> crop similarity used to align it.
        mask: (S, S) float32 template-space mask in [0, 1].
        colour_match: recolour the crop to the target region's LAB statistics first.
        blend: `laplacian` or `alpha`.
        blend_levels: pyramid levels for `laplacian`.
        opacity: scales the mask, in [0, 1] (e.g. a detection-confidence-weighted soft mask).
        interpolation: OpenCV resampling flag for the crop (the mask is always bilinear).
    """
    size = crop_bgr.shape[0]
    region = crop_region(to_crop, size, output.shape)
    if region is None:
        return  # The face lies outside the frame.
    x0, y0, x1, y1 = region
    to_roi = cv2.invertAffineTransform(to_crop)
    to_roi[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    background = output[y0:y1, x0:x1].copy()
    weights = np.asarray(
        cv2.warpAffine(mask, to_roi, roi_size, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0),
        dtype=np.float32,
    )
    if opacity < 1.0:
        weights = weights * np.float32(max(opacity, 0.0))
    warped = np.asarray(
        cv2.warpAffine(crop_bgr, to_roi, roi_size, flags=interpolation,
                       borderMode=cv2.BORDER_REPLICATE),
        dtype=np.uint8,
    )
    if colour_match:
        warped = match_colour_lab(warped, background, weights)
    # Outside the mask the foreground is the background itself, so the blend's coarse bands
    # cannot carry the crop's hair or backdrop past the face edge.
    foreground = np.where((weights > MASK_SUPPORT)[..., None], warped, background)
    if blend == "laplacian":
        blended = laplacian_blend(foreground, background, weights, levels=blend_levels)
    else:
        blended = alpha_blend(foreground, background, weights)
    output[y0:y1, x0:x1] = blended
