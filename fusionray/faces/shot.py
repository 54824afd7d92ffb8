"""Shot-level selection: which faces to swap, decided once over the whole shot.

Placeholder on the scheduler branch (the selection helper's module replaces it at merge): it
fixes the interface the scheduler builds its detection pre-pass against (PLAN decision 4) and
keeps per-frame selection unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from fusionray.config import RenderConfig, SelectionConfig


def needs_shot_pass(selection: SelectionConfig) -> bool:
    """Whether selection needs every chunk's detections before any chunk renders."""
    return selection.mode == "one"


@dataclass(frozen=True)
class ShotSelection:
    """What the pre-pass decided for the shot (picklable, small, chunk-invariant)."""

    frame_count: int
    """Frames of the shot."""
    frames_with_faces: int
    """Frames in which the pre-pass detected at least one face."""


def plan_shot_selection(
    detections: Sequence[pa.Table], *, frame_count: int, config: RenderConfig,
    source: object = None,
) -> ShotSelection:
    """Plan the shot's selection from every chunk's detections (read ranges may overlap)."""
    frames: set[int] = set()
    for table in detections:
        frames.update(table["frame"].to_pylist())
    return ShotSelection(frame_count=frame_count,
                         frames_with_faces=sum(1 for f in frames if 0 <= f < frame_count))
