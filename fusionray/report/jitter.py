"""How steady landmarks are: jitter and error against a known path (pure).

Points are arrays of shape (T, N, 2): N landmarks in each of T consecutive frames, pixels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _points(points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 2:
        raise ValueError(f"points must have shape (T, N, 2), got {array.shape}")
    return array


def landmark_jitter(points: npt.ArrayLike) -> float:
    """Mean length of the second difference p[t+1] - 2 p[t] + p[t-1], pixels per frame².

    Zero for a path of constant velocity; frame-to-frame detection noise of standard deviation
    s per axis adds about 3.07 s (white noise: sqrt(6 pi / 2) s). Needs T >= 3.
    """
    array = _points(points)
    if array.shape[0] < 3:
        raise ValueError(f"jitter needs at least 3 frames, got {array.shape[0]}")
    second = array[2:] - 2.0 * array[1:-1] + array[:-2]
    return float(np.linalg.norm(second, axis=2).mean())


def landmark_error(points: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """Mean distance between `points` and `reference` (same shape), pixels."""
    array, truth = _points(points), _points(reference)
    if array.shape != truth.shape:
        raise ValueError(f"points {array.shape} and reference {truth.shape} differ in shape")
    return float(np.linalg.norm(array - truth, axis=2).mean())
