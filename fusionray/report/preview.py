"""preview.png: a before/after strip a person can look at (pure image building)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

PREVIEW_HEIGHT = 240
"""Height of each tile in pixels."""


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), thickness=-1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def _fit(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    new_width = max(1, round(width * PREVIEW_HEIGHT / height))
    return cv2.resize(frame, (new_width, PREVIEW_HEIGHT), interpolation=cv2.INTER_AREA)


def build_preview(
    frame_indices: Sequence[int],
    before: Sequence[np.ndarray],
    after: Sequence[np.ndarray],
) -> np.ndarray:
    """Two rows of labelled tiles: input frames on top, output frames below.

    Args:
        frame_indices: the video frame index of each column.
        before: input frames, BGR uint8 (H, W, 3), display orientation.
        after: output frames at the same indices.

    Returns:
        BGR uint8 image of shape (2 * 240, sum of tile widths, 3).
    """
    if not (len(frame_indices) == len(before) == len(after)) or not before:
        raise ValueError(
            f"build_preview needs equal, non-empty lists; got {len(frame_indices)} indices, "
            f"{len(before)} before, {len(after)} after"
        )
    top = [_label(_fit(f), f"frame {i}: input") for i, f in zip(frame_indices, before, strict=True)]
    bottom = [_label(_fit(f), f"frame {i}: fusionray")
              for i, f in zip(frame_indices, after, strict=True)]
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)


def preview_indices(frame_count: int, count: int) -> list[int]:
    """`count` frame indices spread evenly inside the video, avoiding the very ends."""
    if frame_count <= 0 or count <= 0:
        return []
    if count >= frame_count:
        return list(range(frame_count))
    positions = np.linspace(0, frame_count - 1, count + 2)[1:-1]
    return sorted({int(np.rint(p)) for p in positions})
