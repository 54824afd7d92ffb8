"""Pixel boost: run a fixed-resolution swapper on a face aligned at a multiple of its size. Pure.

A model that sees faces at M×M pixels (inswapper: M = 128) is given a face aligned at N×N,
N = k·M. The N crop is split by space-to-depth into k² interleaved M×M sub-images: sub-image
(i, j) holds every k-th pixel starting at row i, column j, so each one is a complete, slightly
shifted, M-pixel view of the whole face. Each is swapped with the same identity, and the k²
results are interleaved back into one N crop. The face keeps N-pixel detail from the target
where the swapper keeps the target's structure; FaceFusion calls the same thing pixel boost.

Sub-image order is row-major over (i, j): index = i·k + j.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError

PIXEL_BOOST_SIZES = (128, 256, 384, 512, 768, 1024)
"""`swapper.pixel_boost` choices for a 128 px swapper (128 = off)."""


def boost_factor(boost_size: int, model_size: int) -> int:
    """k = boost_size / model_size, the sub-images per side.

    Raises:
        ConfigError: boost_size is not a positive multiple of model_size.
    """
    if model_size <= 0 or boost_size < model_size or boost_size % model_size:
        raise ConfigError(f"Invalid pixel_boost={boost_size!r}: must be a multiple of the "
                          f"model's {model_size} px input (>= {model_size})")
    return boost_size // model_size


def implode_pixel_boost(crop: npt.NDArray[np.generic], factor: int) -> npt.NDArray[np.generic]:
    """Split an (N, N, C) crop into (k², N/k, N/k, C) interleaved sub-images (space-to-depth).

    `result[i * k + j] == crop[i::k, j::k]`. A copy, C-contiguous, same dtype.

    Raises:
        ValueError: the crop is not square or its side is not divisible by `factor`.
    """
    height, width = crop.shape[:2]
    if height != width or factor < 1 or height % factor:
        raise ValueError(f"implode_pixel_boost needs a square crop whose side divides by "
                         f"{factor}, got {crop.shape}")
    size = height // factor
    channels = crop.shape[2:]
    tiles = crop.reshape(size, factor, size, factor, *channels)
    # Axes (row, i, col, j, C) -> (i, j, row, col, C).
    tiles = tiles.transpose(1, 3, 0, 2, *range(4, 4 + len(channels)))
    return np.ascontiguousarray(tiles.reshape(factor * factor, size, size, *channels))


def explode_pixel_boost(tiles: npt.NDArray[np.generic], factor: int) -> npt.NDArray[np.generic]:
    """Interleave (k², M, M, C) sub-images back into one (k·M, k·M, C) crop; inverse of implode.

    Raises:
        ValueError: the number of sub-images is not `factor`².
    """
    if factor < 1 or tiles.shape[0] != factor * factor or tiles.shape[1] != tiles.shape[2]:
        raise ValueError(f"explode_pixel_boost needs {factor}² square sub-images, got "
                         f"{tiles.shape}")
    size = tiles.shape[1]
    channels = tiles.shape[3:]
    grid = tiles.reshape(factor, factor, size, size, *channels)
    # Axes (i, j, row, col, C) -> (row, i, col, j, C).
    grid = grid.transpose(2, 0, 3, 1, *range(4, 4 + len(channels)))
    return np.ascontiguousarray(grid.reshape(size * factor, size * factor, *channels))
