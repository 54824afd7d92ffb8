"""MediaPipe BlazeFace: anchors, decoding, weighted NMS and the detector class.

Both published variants (front 128 px, back 256 px) have the same two heads: a 16×16 grid with
2 anchors per cell (512 rows) then an 8×8 grid with 6 anchors per cell (384 rows); the back model
simply runs them at strides 16 and 32 instead of 8 and 16. Anchors live in normalised [0, 1]
input coordinates, so one table serves both. Each box row holds 16 numbers in input pixels:
centre offset (x, y), size (w, h), then six keypoints (x, y): the subject's right eye, left eye,
nose tip, mouth centre, right ear, left ear. For an upright face the subject's right is the
image's left, so that order is already fusionray's `blazeface6` layout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError, choices_message
from fusionray.models.catalog import get_model_spec
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.types import Face, FloatArray, FrameBGR

log = logging.getLogger(__name__)

BlazeFaceModel = Literal["front", "back"]
BLAZEFACE_MODELS: dict[str, str] = {"front": "blazeface_front", "back": "blazeface_back"}
"""Config name of each variant -> catalogue name."""

ANCHOR_LAYERS: tuple[tuple[int, int], ...] = ((16, 2), (8, 6))
"""(cells per side, anchors per cell) of each head, in output order."""
ANCHOR_COUNT = sum(cells * cells * per_cell for cells, per_cell in ANCHOR_LAYERS)

BLAZEFACE_TO_LAYOUT = np.array([0, 1, 2, 3, 4, 5])
"""Row i of a `blazeface6` face is BlazeFace keypoint BLAZEFACE_TO_LAYOUT[i].

Checked on `skimage.data.astronaut()`: BlazeFace keypoint 0 (the subject's right eye) is the
image-left eye, so the model's order already is the layout's and the map is the identity. It is
kept explicit so the check is one table to change if a model variant ever differs.
"""

TILE_OVERLAP = 0.25
"""Fraction of a tile shared with its neighbour, so a face cut by one tile is whole in another."""


def generate_anchors() -> npt.NDArray[np.float32]:
    """Anchor centres of both heads, in output row order.

    Returns:
        (896, 2) float32 (x, y) in normalised input coordinates [0, 1]; cell-major, anchors of
        one cell adjacent, rows before columns within a grid.
    """
    centres: list[npt.NDArray[np.float32]] = []
    for cells, per_cell in ANCHOR_LAYERS:
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)
        centres.append(np.repeat(cell_centres, per_cell, axis=0))
    return np.concatenate(centres, axis=0).astype(np.float32)


@dataclass(frozen=True)
class RawDetections:
    """Decoded rows of one BlazeFace run, before thresholding and NMS (normalised input coords)."""

    scores: FloatArray
    """(N,) sigmoid confidence."""
    boxes: FloatArray
    """(N, 4) x1, y1, x2, y2 in [0, 1] of the network input."""
    keypoints: FloatArray
    """(N, 6, 2) in [0, 1] of the network input, BlazeFace order."""


def decode_outputs(
    score_logits: npt.ArrayLike,
    regressors: npt.ArrayLike,
    *,
    input_size: int,
    anchors: npt.NDArray[np.float32] | None = None,
) -> RawDetections:
    """Turn the raw heads into boxes, keypoints and scores (DESIGN.md's formula).

    Args:
        score_logits: (896,) or (896, 1) logits: the two score heads concatenated.
        regressors: (896, 16) box rows: the two box heads concatenated, in input pixels.
        input_size: S, the side of the square network input in pixels (128 or 256).
        anchors: (896, 2) from `generate_anchors()`; computed when omitted.

    Returns:
        All 896 rows decoded in normalised input coordinates.
    """
    anchor_xy = generate_anchors() if anchors is None else anchors
    logits = np.asarray(score_logits, dtype=np.float32).reshape(-1)
    rows = np.asarray(regressors, dtype=np.float32).reshape(-1, 16)
    if logits.shape[0] != anchor_xy.shape[0] or rows.shape[0] != anchor_xy.shape[0]:
        raise ValueError(
            f"BlazeFace heads have {logits.shape[0]} scores and {rows.shape[0]} boxes; "
            f"expected {anchor_xy.shape[0]} of each"
        )
    # Clip before exp so extreme logits do not overflow float32.
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
    centre = anchor_xy + rows[:, 0:2] / input_size
    extent = rows[:, 2:4] / input_size
    boxes = np.concatenate([centre - extent / 2, centre + extent / 2], axis=1)
    keypoints = anchor_xy[:, None, :] + rows[:, 4:16].reshape(-1, 6, 2) / input_size
    return RawDetections(
        scores=scores.astype(np.float32),
        boxes=boxes.astype(np.float32),
        keypoints=keypoints.astype(np.float32),
    )


def box_iou(box: npt.NDArray[np.floating], boxes: npt.NDArray[np.floating]) -> FloatArray:
    """IoU of one (4,) x1y1x2y2 box with each of (N, 4) boxes; (N,) float32."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inner = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inner
    return np.where(union > 0, inner / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def weighted_nms(
    boxes: npt.ArrayLike,
    keypoints: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    iou_threshold: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MediaPipe's weighted non-maximum suppression.

    The best remaining detection absorbs every other one whose IoU with it exceeds the
    threshold; the merged box and keypoints are the score-weighted mean of the group and the
    merged score is the group's best. Averaging (rather than dropping) steadies the landmarks,
    which the swap aligns on.

    Args:
        boxes: (N, 4) x1, y1, x2, y2.
        keypoints: (N, K, 2).
        scores: (N,).
        iou_threshold: IoU above which two detections are the same face, in (0, 1].

    Returns:
        boxes (M, 4), keypoints (M, K, 2), scores (M,), float32, best first.
    """
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    point_array = np.asarray(keypoints, dtype=np.float64)
    score_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if point_array.ndim != 3 or point_array.shape[0] != box_array.shape[0]:
        raise ValueError(f"keypoints must be (N, K, 2) with N = {box_array.shape[0]}, "
                         f"got {point_array.shape}")
    # Stable sort so equal scores keep input order: the result is deterministic.
    remaining = np.argsort(-score_array, kind="stable")
    merged_boxes, merged_points, merged_scores = [], [], []
    while remaining.size:
        best = remaining[0]
        overlap = box_iou(box_array[best], box_array[remaining]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = score_array[group] / max(float(score_array[group].sum()), 1e-12)
        merged_boxes.append(weights @ box_array[group])
        merged_points.append(np.tensordot(weights, point_array[group], axes=1))
        merged_scores.append(score_array[best])
        remaining = remaining[~overlap]
    keypoint_count = point_array.shape[1]
    if not merged_scores:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros((0, keypoint_count, 2), np.float32),
            np.zeros((0,), np.float32),
        )
    return (
        np.asarray(merged_boxes, np.float32),
        np.asarray(merged_points, np.float32),
        np.asarray(merged_scores, np.float32),
    )


@dataclass(frozen=True)
class Letterbox:
    """How a frame region was scaled and padded into the square network input."""

    scale: float
    """Input pixels per frame pixel."""
    pad_x: float
    """Input pixels of padding left of the image."""
    pad_y: float
    """Input pixels of padding above the image."""
    size: int
    """Side S of the square input."""

    def to_frame(self, points: npt.NDArray[np.floating]) -> FloatArray:
        """Map (..., 2) normalised input coordinates to frame pixels (of the letterboxed region)."""
        pixels = np.asarray(points, dtype=np.float32) * self.size
        offset = np.array([self.pad_x, self.pad_y], dtype=np.float32)
        return ((pixels - offset) / self.scale).astype(np.float32)


def letterbox(image_bgr: FrameBGR, size: int) -> tuple[FloatArray, Letterbox]:
    """Fit an image into an S×S input keeping its aspect, centred, padded with zeros.

    Centred padding (as MediaPipe does) keeps faces near an edge away from the input border.

    Returns:
        The input tensor (1, S, S, 3) float32 RGB in [-1, 1] (padding is 0 = mid grey), and the
        mapping back to image pixels.
    """
    height, width = image_bgr.shape[:2]
    scale = size / max(height, width)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
    pad_x = (size - new_w) // 2
    pad_y = (size - new_h) // 2
    tensor = np.zeros((1, size, size, 3), dtype=np.float32)
    rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float32)
    tensor[0, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = rgb / 127.5 - 1.0
    # The exact per-axis scale, so the rounding of the resized size does not shift keypoints.
    return tensor, Letterbox(scale=new_w / width, pad_x=pad_x, pad_y=pad_y, size=size)


def tile_regions(
    height: int, width: int, tiles: int, *, overlap: float = TILE_OVERLAP
) -> list[tuple[int, int, int, int]]:
    """Square, overlapping tiles covering a frame, for finding faces too small at full view.

    Args:
        height, width: frame size in pixels.
        tiles: tiles along the frame's longer side (1 = no tiling).
        overlap: fraction of a tile shared with its neighbour.

    Returns:
        (x0, y0, x1, y1) pixel regions, row-major. Always non-empty.
    """
    if tiles <= 1:
        return [(0, 0, width, height)]
    longer = max(height, width)
    side = int(np.ceil(longer / (tiles - (tiles - 1) * overlap)))

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = int(np.ceil((length - side) / (side * (1 - overlap)))) + 1
        return [round(v) for v in np.linspace(0, length - side, count)]

    return [
        (x0, y0, min(x0 + side, width), min(y0 + side, height))
        for y0 in starts(height)
        for x0 in starts(width)
    ]


class BlazeFaceDetector:
    """BlazeFace on ONNX Runtime; the session is created once, here.

    Minimum face size, measured on the astronaut pasted into a 1280×720 grey frame (score
    threshold 0.7; `tests/test_faces_blazeface.py` pins it): the back model at tiles=1 finds
    faces 40 px wide (about 3 % of the longer side, 8 px in its 256 px input) and misses 36 px;
    tiles=2 (3 passes) reaches 28 px, tiles=3 (7 passes) 20 px. The front model misses a 100 px
    face in the same frame at tiles=1 (tiles=2 finds it), so `back` is the video default.
    """

    name = "blazeface"

    def __init__(
        self,
        *,
        model: str = "back",
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        providers: Sequence[str] = ("cpu",),
        threads: int = 1,
        cache_dir: Path | None = None,
        tiles: int = 1,
        shared_dirs: Sequence[Path] | None = None,
        offline: bool | None = None,
        allow_unverified: bool = False,
    ) -> None:
        """Fetch (if needed), verify and open the model, through the same loader as every other
        model (`ModelRunner`): shared folders, offline mode, the published-file check and the
        provider fallback apply to the default detector too.

        Args:
            model: `front` (128 px input, close-ups) or `back` (256 px, smaller faces).
            score_threshold: minimum confidence in [0, 1].
            nms_threshold: IoU above which detections merge, in (0, 1].
            providers: ONNX Runtime providers by short name, tried in order.
            threads: CPU threads for inference.
            cache_dir: model cache folder; default `fusionray.models.store.default_cache_dir()`.
            tiles: also run on tiles×tiles-ish overlapping tiles (along the longer side) and merge,
                for faces too small for one full-frame pass; 1 disables tiling.
            shared_dirs, offline, allow_unverified: model folders, download policy and
                unverified files; see `ModelOptions`.

        Raises:
            ConfigError: unknown model or out-of-range option.
            ModelError: the model cannot be fetched, verified or loaded.
        """
        if model not in BLAZEFACE_MODELS:
            raise ConfigError(choices_message("blazeface model", model, list(BLAZEFACE_MODELS)))
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"Invalid score_threshold={score_threshold!r}: must be in [0, 1]")
        if not 0.0 < nms_threshold <= 1.0:
            raise ConfigError(f"Invalid nms_threshold={nms_threshold!r}: must be in (0, 1]")
        if tiles < 1:
            raise ConfigError(f"Invalid tiles={tiles!r}: must be >= 1")
        spec = get_model_spec(BLAZEFACE_MODELS[model])
        self.runner = ModelRunner(spec.name, ModelOptions(
            providers=tuple(providers), threads=threads, cache_dir=cache_dir,
            shared_dirs=tuple(shared_dirs) if shared_dirs is not None else None,
            offline=offline, allow_unverified=allow_unverified,
        ))
        self.session, self.provider = self.runner.session, self.runner.provider
        self.model = model
        self.input_size = spec.input_size
        self.input_name = spec.inputs[0].name
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.tiles = tiles
        self.anchors = generate_anchors()

    def forward(self, tensor: FloatArray) -> RawDetections:
        """Run the network on one (1, S, S, 3) input; decoded rows in input coordinates."""
        scores_a, scores_b, boxes_a, boxes_b = self.runner.run(tensor)
        return decode_outputs(
            np.concatenate([scores_a.reshape(-1), scores_b.reshape(-1)]),
            np.concatenate([boxes_a.reshape(-1, 16), boxes_b.reshape(-1, 16)]),
            input_size=self.input_size,
            anchors=self.anchors,
        )

    def _detect_region(
        self, frame_bgr: FrameBGR, region: tuple[int, int, int, int], *, drop_cut: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        x0, y0, x1, y1 = region
        tensor, fit = letterbox(frame_bgr[y0:y1, x0:x1], self.input_size)
        raw = self.forward(tensor)
        keep = raw.scores >= self.score_threshold
        offset = np.array([x0, y0], dtype=np.float32)
        boxes = fit.to_frame(raw.boxes[keep].reshape(-1, 2, 2)).reshape(-1, 4) + np.tile(offset, 2)
        points = fit.to_frame(raw.keypoints[keep]) + offset
        scores = raw.scores[keep]
        if drop_cut and boxes.shape[0]:
            # A face cut by a tile's inner edge is a truncated, badly placed detection; the
            # neighbouring tile or the full-frame pass sees it whole.
            height, width = frame_bgr.shape[:2]
            margin = 2.0
            cut = (
                ((boxes[:, 0] < x0 + margin) & (x0 > 0))
                | ((boxes[:, 1] < y0 + margin) & (y0 > 0))
                | ((boxes[:, 2] > x1 - margin) & (x1 < width))
                | ((boxes[:, 3] > y1 - margin) & (y1 < height))
            )
            boxes, points, scores = boxes[~cut], points[~cut], scores[~cut]
        return boxes, points, scores

    def detect(self, frame_bgr: FrameBGR) -> list[Face]:
        """Find faces in one frame.

        Args:
            frame_bgr: (H, W, 3) uint8 BGR.

        Returns:
            Faces in frame pixels, `blazeface6` keypoints, highest score first.
        """
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"Expected a uint8 (H, W, 3) BGR frame, got {frame_bgr.dtype} {frame_bgr.shape}"
            )
        height, width = frame_bgr.shape[:2]
        parts = [self._detect_region(frame_bgr, (0, 0, width, height), drop_cut=False)]
        if self.tiles > 1:
            parts += [
                self._detect_region(frame_bgr, region, drop_cut=True)
                for region in tile_regions(height, width, self.tiles)
            ]
        boxes = np.concatenate([part[0] for part in parts])
        points = np.concatenate([part[1] for part in parts])
        scores = np.concatenate([part[2] for part in parts])
        boxes, points, scores = weighted_nms(
            boxes, points, scores, iou_threshold=self.nms_threshold
        )
        faces = []
        for box, keypoints, score in zip(boxes, points, scores, strict=True):
            clipped = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
            if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
                continue
            faces.append(
                Face(
                    bbox=clipped,
                    keypoints=keypoints[BLAZEFACE_TO_LAYOUT],
                    score=float(score),
                    layout="blazeface6",
                )
            )
        return faces

    def detect_batch(self, frames: Sequence[FrameBGR]) -> list[list[Face]]:
        """`detect` on each frame (the published graphs have a fixed batch of 1)."""
        return [self.detect(frame) for frame in frames]
