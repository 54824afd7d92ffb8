"""Colour transfer between face regions. Pure."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.types import FrameBGR

STD_RATIO_LIMITS = (0.5, 2.0)
"""Clamp of the per-channel std ratio: a flat source region must not be blown into noise."""

STATISTICS_SAMPLE = 65_536
"""Most pixels of the mask's support the statistics are taken from. A larger support (a face
over about 360 px wide) is sampled at a regular stride in raster order, which estimates each
mean and standard deviation to a small fraction of a LAB unit: the statistics of a 4K close-up
then cost what a 1080p face's do. Every support pixel is still recoloured."""


def _weighted_stats(
    lab: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weighted mean and standard deviation per channel of (N, 3) `lab` under (N,) `weights`
    (all > 0)."""
    total = float(weights.sum())
    squares = lab.astype(np.float64)
    mean = (weights @ squares) / total
    squares -= mean  # in place: these arrays are (N, 3) float64, megabytes at 1080p
    squares *= squares
    variance = (weights @ squares) / total
    return mean, np.sqrt(variance)


def to_lab(image_bgr: FrameBGR) -> npt.NDArray[np.float32]:
    """uint8 BGR -> float32 CIE LAB (L in [0, 100], a and b about [-127, 127])."""
    scaled = image_bgr.astype(np.float32)
    scaled /= 255.0
    lab = cv2.cvtColor(scaled, cv2.COLOR_BGR2LAB)
    return np.asarray(lab, dtype=np.float32)


def match_colour_lab(
    source_bgr: FrameBGR, target_bgr: FrameBGR, mask: npt.ArrayLike
) -> FrameBGR:
    """Give `source_bgr` the colour statistics of `target_bgr` (Reinhard transfer in LAB).

    Means and standard deviations of each LAB channel are computed over the mask's weighted
    pixels of each image (both images share the mask, e.g. a warped face mask over an ROI;
    at most `STATISTICS_SAMPLE` of them, at a regular stride);
    the source is then shifted and scaled per channel to the target's statistics. Float LAB is
    used, not OpenCV's 8-bit LAB, to avoid quantising the chroma channels.

    Args:
        source_bgr: (H, W, 3) uint8, the image to recolour.
        target_bgr: (H, W, 3) uint8, the colour reference.
        mask: (H, W) weights in [0, 1].

    Returns:
        (H, W, 3) uint8 BGR: the source with every pixel of the mask's support (weight > 0)
        recoloured; pixels outside it, which a composite through the same mask never shows,
        as they were. The source unchanged when the mask is empty.
    """
    if source_bgr.shape != target_bgr.shape:
        raise ValueError(f"source {source_bgr.shape} and target {target_bgr.shape} differ in shape")
    weights = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if weights.shape != source_bgr.shape[:2]:
        raise ValueError(f"mask {weights.shape} does not match the images {source_bgr.shape[:2]}")
    recoloured = np.ascontiguousarray(source_bgr)
    if recoloured is source_bgr:
        recoloured = source_bgr.copy()
    flat_weights = weights.reshape(-1)
    support = np.flatnonzero(flat_weights > 0.0)
    support_weights = flat_weights[support].astype(np.float64)
    if float(support_weights.sum()) < 1.0:
        return recoloured
    # Only the support is read and written (about half of a face region). The pixels are
    # gathered as 3-byte records (`np.take` on a void view: several times faster than fancy
    # indexing of (N, 3) rows) and converted as one row: OpenCV's colour conversions pay a
    # per-row cost, so an (N, 1, 3) column converts at a fraction of the speed.
    count = support.size
    stride = -(-count // STATISTICS_SAMPLE)
    sample = support[::stride]
    sample_weights = support_weights[::stride]
    # The target is only measured, so only its sample is converted.
    pixels = np.concatenate((_records(recoloured).take(support),
                             _records(np.ascontiguousarray(target_bgr)).take(sample)))
    lab = to_lab(pixels.view(np.uint8).reshape(1, count + sample.size, 3))[0]
    source_lab, target_lab = lab[:count], lab[count:]
    source_mean, source_std = _weighted_stats(source_lab[::stride], sample_weights)
    target_mean, target_std = _weighted_stats(target_lab, sample_weights)
    ratio = np.clip(target_std / np.maximum(source_std, 1e-6), *STD_RATIO_LIMITS)
    # (lab - mean) * ratio + target mean, in float64 and in place.
    matched = source_lab.astype(np.float64)
    matched -= source_mean
    matched *= ratio
    matched += target_mean
    np.clip(matched[:, 0], 0.0, 100.0, out=matched[:, 0])
    bgr = np.asarray(cv2.cvtColor(matched.astype(np.float32)[None], cv2.COLOR_LAB2BGR)[0])
    bgr *= 255.0
    np.rint(bgr, out=bgr)
    np.clip(bgr, 0.0, 255.0, out=bgr)
    quantised = bgr.astype(np.uint8)  # contiguous like `bgr` (one row), as `_records` needs
    np.put(_records(recoloured), support, _records(quantised))
    return recoloured


def _records(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.void]:
    """A C-contiguous (..., 3) uint8 array as a flat view of 3-byte pixel records."""
    return image.reshape(-1, 3).view("V3").reshape(-1)
