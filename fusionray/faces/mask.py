"""Soft face masks in aligned-crop (template) space. Pure."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError
from fusionray.types import FloatArray

FACE_OUTLINE_112 = np.array(
    [
        [20.0, 34.0], [36.0, 27.0], [56.0, 25.0], [76.0, 27.0], [92.0, 34.0],
        [95.0, 55.0], [93.0, 75.0], [86.0, 92.0], [74.0, 104.0], [56.0, 110.0],
        [38.0, 104.0], [26.0, 92.0], [19.0, 75.0], [17.0, 55.0],
    ],
    dtype=np.float64,
)
"""Face outline on the ArcFace 112 template (pixels): brows and upper forehead, cheeks, a jaw
that narrows to the chin. Symmetric about x = 56, the template's centre line. An ellipse reaches
past the jaw of a slightly turned source and pastes its backdrop onto the target's chin; this
egg shape does not."""


def face_outline(crop_size: int) -> npt.NDArray[np.float64]:
    """`FACE_OUTLINE_112` placed on a `crop_size` crop the way `arcface_template` is, (14, 2)."""
    if crop_size % 112 == 0:
        return FACE_OUTLINE_112 * (crop_size / 112)
    return (FACE_OUTLINE_112 + np.array([8.0, 0.0])) * (crop_size / 128)


def build_face_mask(crop_size: int, *, padding: float = 0.0, blur: float = 0.3) -> FloatArray:
    """A feathered face-shaped mask for an aligned crop.

    The outline (`FACE_OUTLINE_112`, placed like the ArcFace template so it fits any crop
    size) is grown (`padding` > 0) or shrunk (< 0) about its centre by `padding` × crop size.
    The feather is a Gaussian with sigma = blur × face size / 6 (face size = the outline's
    height), so `blur` is the width of the soft band, ±3 sigma, as a fraction of the face; the
    outline is first shrunk by 1.5 sigma so the soft band stays mostly inside the face. Finally
    the mask is forced to 0 at the crop border: a warped crop must never leave a hard edge in
    the frame.

    Args:
        crop_size: S, side of the aligned crop in pixels.
        padding: fraction of the crop, in [-0.3, 0.3].
        blur: feather band as a fraction of the face size, in [0, 1].

    Returns:
        (S, S) float32 in [0, 1], 1 inside the face, mirror-symmetric left to right.

    Raises:
        ConfigError: out-of-range option.
    """
    if not -0.3 <= padding <= 0.3:
        raise ConfigError(f"Invalid mask padding={padding!r}: must be in [-0.3, 0.3]")
    if not 0.0 <= blur <= 1.0:
        raise ConfigError(f"Invalid mask blur={blur!r}: must be in [0, 1]")
    if crop_size < 16:
        raise ConfigError(f"Invalid crop_size={crop_size!r}: must be >= 16 pixels")
    outline = face_outline(crop_size)
    face_size = float(outline[:, 1].max() - outline[:, 1].min())
    sigma = blur * face_size / 6.0
    centre = outline.mean(axis=0)
    offsets = outline - centre
    radii = np.linalg.norm(offsets, axis=1, keepdims=True)
    # Move each vertex along its ray from the centre: + padding, - the feather's inner half.
    grown = np.maximum(radii + padding * crop_size - 1.5 * sigma, 1.0)
    polygon = centre + offsets * grown / radii - 0.5  # Pixel centres sit at integer + 0.5.
    shift_bits = 4  # Sub-pixel vertices, so small crops keep the outline's shape.
    vertices = np.rint(polygon * (1 << shift_bits)).astype(np.int32)
    mask = np.zeros((crop_size, crop_size), np.float32)
    cv2.fillPoly(mask, [vertices], 1.0, lineType=cv2.LINE_AA, shift=shift_bits)
    # Rasterisation rounds asymmetrically; the outline is symmetric, so make the mask exactly so.
    mask = (mask + mask[:, ::-1]) / 2.0
    if sigma > 0:
        mask = np.asarray(
            cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma,
                             borderType=cv2.BORDER_CONSTANT),
            dtype=np.float32,
        )
    # Linear ramp to 0 over the outer 4 % of the crop.
    ys, xs = np.mgrid[0:crop_size, 0:crop_size].astype(np.float32)
    ramp_width = max(2.0, 0.04 * crop_size)
    distance = np.minimum(
        np.minimum(xs, crop_size - 1 - xs), np.minimum(ys, crop_size - 1 - ys)
    )
    mask *= np.clip(distance / ramp_width, 0.0, 1.0)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)
