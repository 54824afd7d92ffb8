"""The face-detector interface and its factory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from fusionray.errors import ConfigError, choices_message
from fusionray.types import Face

DETECTOR_NAMES = ("blazeface", "scrfd")
"""Detectors `build_detector` knows."""


@runtime_checkable
class Detector(Protocol):
    """Finds faces in BGR frames. Implementations set up their model once, in `__init__`."""

    name: str
    """Engine name, e.g. `blazeface`."""
    provider: str
    """ONNX Runtime provider actually used, e.g. `CPUExecutionProvider`."""

    def detect(self, frame_bgr: np.ndarray) -> list[Face]:
        """Faces in one (H, W, 3) uint8 BGR frame, frame pixels, best first."""
        ...

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """`detect` for each frame, in order."""
        ...


def build_detector(
    name: str,
    *,
    model: str = "back",
    score_threshold: float = 0.7,
    nms_threshold: float = 0.3,
    providers: Sequence[str] = ("cpu",),
    threads: int = 1,
    cache_dir: Path | None = None,
    tiles: int = 1,
    input_size: int = 640,
    shared_dirs: Sequence[Path] | None = None,
    offline: bool | None = None,
    allow_unverified: bool = False,
) -> Detector:
    """Create a detector by name.

    Args:
        name: engine; one of `DETECTOR_NAMES`.
        model: engine variant (BlazeFace: `front` or `back`; SCRFD: `10g` or `2.5g`).
        score_threshold: minimum confidence in [0, 1].
        nms_threshold: IoU above which detections merge.
        providers: ONNX Runtime providers by short name, tried in order.
        threads: CPU inference threads.
        cache_dir: model cache folder (default: the user cache).
        tiles: extra tiled passes for small faces (1 = off; BlazeFace).
        input_size: SCRFD network input side in pixels.
        shared_dirs, offline, allow_unverified: model folders, download policy and unverified
            model files (see `ModelOptions`).

    Raises:
        ConfigError: unknown name or bad option.
        ModelError: the model cannot be fetched or loaded.
    """
    if name == "blazeface":
        from fusionray.faces.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(
            model=model,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            providers=providers,
            threads=threads,
            cache_dir=cache_dir,
            tiles=tiles,
            shared_dirs=shared_dirs,
            offline=offline,
            allow_unverified=allow_unverified,
        )
    if name == "scrfd":
        from fusionray.faces.scrfd import SCRFDDetector

        return SCRFDDetector(
            model=model,
            input_size=input_size,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            providers=providers,
            threads=threads,
            cache_dir=cache_dir,
            shared_dirs=shared_dirs,
            offline=offline,
        )
    raise ConfigError(choices_message("detector", name, DETECTOR_NAMES))


def detection_side(detector: Detector) -> int | None:
    """The longest image side, in pixels, worth giving `detector`, or None when unknown.

    A detector resamples every frame to its network input (SCRFD letterboxes to `input_size`,
    BlazeFace to 128/256 px, per tile when tiled), so a frame converted at that size loses
    nothing the detector would have seen, and costs a fraction of a full-size conversion.
    Tiled BlazeFace looks at `tiles` tiles along the longer side: each keeps its input size.
    """
    size = getattr(detector, "input_size", None)
    if not isinstance(size, int) or size < 1:
        return None
    tiles = getattr(detector, "tiles", 1)
    return size * max(1, int(tiles) if isinstance(tiles, int) else 1)
