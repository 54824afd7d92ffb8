"""preview.png layout and frame choice (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from fusionray.report.preview import PREVIEW_HEIGHT, build_preview, preview_indices


@pytest.mark.parametrize(
    ("frames", "count", "expected"),
    [(100, 4, [20, 40, 59, 79]), (3, 4, [0, 1, 2]), (0, 4, []), (10, 0, []), (1, 1, [0])],
)
def test_preview_indices(frames: int, count: int, expected: list[int]) -> None:
    assert preview_indices(frames, count) == expected


def test_build_preview_stacks_before_over_after() -> None:
    before = [np.full((90, 160, 3), 10, np.uint8), np.full((90, 160, 3), 20, np.uint8)]
    after = [np.full((90, 160, 3), 200, np.uint8), np.full((90, 160, 3), 220, np.uint8)]
    strip = build_preview([5, 9], before, after)
    assert strip.shape == (2 * PREVIEW_HEIGHT, 2 * round(160 * PREVIEW_HEIGHT / 90), 3)
    # Below the label bar, the top row shows the input and the bottom row the output.
    assert strip[100, 10, 0] == 10 and strip[PREVIEW_HEIGHT + 100, 10, 0] == 200


def test_build_preview_rejects_mismatched_lists() -> None:
    with pytest.raises(ValueError, match="equal"):
        build_preview([1], [], [])
