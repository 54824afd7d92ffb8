"""Scene-linear pixels <-> the display image a detector and a swap engine see (pure functions).

Face detectors and swap models are trained on display-referred 8-bit pictures (sRGB-like
photographs and video), not on scene-linear light. So a linear frame (an OpenEXR file) is shown
to them as a display image, and the face they produce is written back into linear:

    linear (float, any range) -> NaN to 0, clip to [0, 1] -> sRGB OETF (IEC 61966-2-1) ->
    round to 16-bit codes (0..65535; the engines get these / 257, rounded, as 8-bit BGR)

and back, for the pixels a swap changed only:

    16-bit code / 65535 -> inverse OETF (the sRGB EOTF) -> linear, in the file's own float
    type (half or float).

The clip loses what lies outside [0, 1] (highlights above 1.0, negative values): that is why
the write-back (`merge_display`) keeps every pixel whose display value the swap did not change
with its original bits, including those values; only the pixels the swap changed get the
inverse transform. No tone curve or exposure is applied: a shot graded well above 1.0 shows the
detector a clipped picture (see README, OpenEXR sequences).

All arithmetic is float64 elementwise numpy (no BLAS), so the same linear value gives the same
display code in every process: the write-back recomputes the original's display image to find
what changed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DISPLAY_PEAK = 65535
"""The display image's white code (16 bits per channel)."""

# IEC 61966-2-1 piecewise sRGB curve: linear segment below the break, power 1/2.4 above.
_LINEAR_BREAK = 0.0031308
_ENCODED_BREAK = 0.04045
_SLOPE = 12.92
_GAMMA = 2.4
_OFFSET = 0.055


def srgb_oetf(linear: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Linear light in [0, 1] -> encoded sRGB value in [0, 1] (any shape, float64 out)."""
    values = np.asarray(linear, np.float64)
    curve = (1.0 + _OFFSET) * np.power(np.maximum(values, _LINEAR_BREAK), 1.0 / _GAMMA) - _OFFSET
    return np.where(values <= _LINEAR_BREAK, values * _SLOPE, curve)


def srgb_eotf(encoded: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Encoded sRGB value in [0, 1] -> linear light in [0, 1]: the inverse of `srgb_oetf`."""
    values = np.asarray(encoded, np.float64)
    curve = np.power((np.maximum(values, _ENCODED_BREAK) + _OFFSET) / (1.0 + _OFFSET), _GAMMA)
    return np.where(values <= _ENCODED_BREAK, values / _SLOPE, curve)


def to_display(linear: npt.NDArray[np.floating]) -> npt.NDArray[np.uint16]:
    """Scene-linear samples (any shape, half or float; any value, NaN and inf included) ->
    16-bit display codes of the same shape: clipped to [0, 1], sRGB-encoded, rounded."""
    values = np.nan_to_num(np.asarray(linear, np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    encoded = srgb_oetf(np.clip(values, 0.0, 1.0))
    return np.rint(encoded * DISPLAY_PEAK).astype(np.uint16)


def from_display(codes: npt.NDArray[np.unsignedinteger], dtype: npt.DTypeLike
                 ) -> npt.NDArray[np.floating]:
    """16-bit display codes (any shape) -> linear samples in `dtype` (float16 or float32),
    rounded to nearest by the cast."""
    encoded = np.asarray(codes, np.float64) / DISPLAY_PEAK
    return srgb_eotf(encoded).astype(dtype)


def changed_pixels(original: npt.NDArray[np.floating], display: npt.NDArray[np.uint16]
                   ) -> npt.NDArray[np.bool_]:
    """(h, w) mask of the pixels whose display RGB differs from `original`'s.

    Args:
        original: (h, w, 3) linear RGB as stored in the file.
        display: (h, w, 3) 16-bit display RGB after the swap.
    """
    return np.any(display != to_display(original), axis=-1)


def merge_display(original: npt.NDArray[np.floating], display: npt.NDArray[np.uint16]
                  ) -> tuple[npt.NDArray[np.floating], int]:
    """Write a swapped display image back into a linear frame, in the frame's own type.

    Args:
        original: (h, w, 3) linear RGB as stored (float16 or float32).
        display: (h, w, 3) 16-bit display RGB after the swap (`to_display` of `original`,
            with the faces changed).

    Returns:
        (the merged (h, w, 3) frame in `original`'s dtype, how many pixels changed). A pixel
        whose display value is unchanged keeps its original bits exactly (values above 1.0,
        negative, NaN included); a changed one gets `from_display` of its new value.
    """
    changed = changed_pixels(original, display)
    count = int(np.count_nonzero(changed))
    merged = original.copy()
    if count:
        merged[changed] = from_display(display[changed], original.dtype)
    return merged, count
