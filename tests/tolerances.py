"""Tolerances sized from the error scale of the computation, never at float32 round-off.

A float32 sum of `terms` products carries an error of up to about `terms · u · Σ|aᵢ·bᵢ|`
(Higham's bound for recursive summation, u = 2⁻²⁴); blocked BLAS kernels (OpenBLAS picks
Haswell, SkylakeX or Zen kernels by CPU) change the summation order, so results differ between
machines by that much, not by one ulp. Comparing float32 vectors with `rtol=1e-5` on each
component fails on small components of a unit vector; these helpers give an absolute tolerance
relative to the size of the whole vector instead.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FLOAT32_UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2
"""u = 2⁻²⁴ ≈ 6e-8: the relative error of one float32 operation."""
SAFETY = 4.0
"""Headroom over the worst-case bound (a tolerance at the bound itself would be flaky)."""


def float32_atol(expected: npt.ArrayLike, *, terms: int) -> float:
    """Absolute tolerance for float32 results that are `terms`-term sums, scaled by the norm
    of `expected` (for a unit vector of 512 components from 512-term products: 1.2e-4, while
    a wrong formula moves components by about 1/√512 ≈ 0.04).

    Args:
        expected: the reference vector (any shape); its L2 norm sets the scale.
        terms: the length of the longest reduction (dot product, pool) behind each component.
    """
    scale = float(np.linalg.norm(np.asarray(expected, dtype=np.float64)))
    return SAFETY * terms * FLOAT32_UNIT_ROUNDOFF * scale


def assert_float32_close(actual: npt.ArrayLike, expected: npt.ArrayLike, *, terms: int) -> None:
    """`actual` equals `expected` within `float32_atol(expected, terms=terms)` everywhere."""
    # As arrays (what assert_allclose makes of them anyway): its signature takes only numeric
    # array-likes, while `ArrayLike` also admits strings and bytes.
    np.testing.assert_allclose(np.asanyarray(actual), np.asanyarray(expected), rtol=0,
                               atol=float32_atol(expected, terms=terms))
