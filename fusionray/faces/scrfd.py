"""SCRFD face detector (insightface det_10g / det_2.5g) behind fusionray's `Detector` interface.

Contract (DESIGN.md): input [1, 3, H, W] (640 × 640 here), the frame letterboxed keeping its
aspect with padding right and bottom, RGB, (x − 127.5) / 128; 9 outputs: scores, box distances
and keypoint offsets for strides 8, 16, 32 (in that grouping), 2 anchors per cell, anchors at
the cells' top-left corners. Decoding uses insightface's own `distance2bbox` / `distance2kps`
(box = anchor ∓ distance · stride, keypoint = anchor + offset · stride); candidates scoring at
least the threshold are kept and merged by NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from insightface.model_zoo.scrfd import distance2bbox, distance2kps

from fusionray.errors import ConfigError, choices_message
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.types import Face, FloatArray, FrameBGR

SCRFD_MODELS: dict[str, str] = {"10g": "scrfd_10g", "2.5g": "scrfd_2.5g"}
"""Config name of each variant -> catalogue name."""
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
INPUT_MEAN = 127.5
INPUT_STD = 128.0


def letterbox(frame_bgr: FrameBGR, input_size: int) -> tuple[npt.NDArray[np.float32], float]:
    """Resize keeping aspect into an input_size square (pad right/bottom), normalise, NCHW RGB.

    Returns:
        (1, 3, S, S) float32 blob and the scale from frame pixels to input pixels.
    """
    height, width = frame_bgr.shape[:2]
    scale = min(input_size / height, input_size / width)
    new_width = max(1, min(input_size, round(width * scale)))
    new_height = max(1, min(input_size, round(height * scale)))
    resized = cv2.resize(frame_bgr, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((input_size, input_size, 3), np.uint8)
    canvas[:new_height, :new_width] = resized
    rgb = canvas[..., ::-1].astype(np.float32)
    blob = ((rgb - INPUT_MEAN) / INPUT_STD).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(blob), new_height / height


def anchor_centres(input_size: int, stride: int) -> FloatArray:
    """(cells² · 2, 2) anchor points (x, y) in input pixels: cell corners, anchors adjacent."""
    cells = input_size // stride
    ys, xs = np.mgrid[:cells, :cells]
    corners = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(corners, ANCHORS_PER_CELL, axis=0)


def decode_scrfd(
    outputs: Sequence[np.ndarray], *, input_size: int, score_threshold: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Candidates from SCRFD's 9 heads, in input pixels.

    Returns:
        scores (N,), boxes (N, 4) x1 y1 x2 y2, keypoints (N, 5, 2); unsorted, before NMS.
    """
    scores, boxes, keypoints = [], [], []
    groups = len(STRIDES)
    for index, stride in enumerate(STRIDES):
        score = np.asarray(outputs[index]).reshape(-1)
        distances = np.asarray(outputs[index + groups]).reshape(-1, 4) * stride
        offsets = np.asarray(outputs[index + 2 * groups]).reshape(-1, 10) * stride
        anchors = anchor_centres(input_size, stride)
        if anchors.shape[0] != score.shape[0]:
            raise ValueError(
                f"SCRFD stride {stride}: {score.shape[0]} scores for {anchors.shape[0]} anchors "
                f"at input size {input_size}"
            )
        keep = np.flatnonzero(score >= score_threshold)
        scores.append(score[keep])
        boxes.append(distance2bbox(anchors[keep], distances[keep]))
        keypoints.append(distance2kps(anchors[keep], offsets[keep]).reshape(-1, 5, 2))
    return (np.concatenate(scores).astype(np.float32),
            np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
            np.concatenate(keypoints).astype(np.float32).reshape(-1, 5, 2))


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0,
                                                                   None)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inner = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inner / np.maximum(areas[best] + areas[rest] - inner, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


class SCRFDDetector:
    """SCRFD on an ONNX Runtime session; faces in `arcface5` layout."""

    name = "scrfd"

    def __init__(
        self,
        *,
        model: str = "10g",
        input_size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        providers: Sequence[str] = ("cpu",),
        threads: int = 1,
        cache_dir: Path | None = None,
        shared_dirs: Sequence[Path] | None = None,
        offline: bool | None = None,
    ) -> None:
        """Open the model once.

        Args:
            model: `10g` or `2.5g`.
            input_size: side of the square network input, a multiple of 32 in [128, 1280].
            score_threshold: minimum face confidence in [0, 1] (contract default 0.5).
            nms_threshold: IoU above which the weaker box is dropped (contract default 0.4).
            providers, threads, cache_dir, shared_dirs, offline: see `ModelOptions`.

        Raises:
            ConfigError: bad option. ModelError: the model is missing, corrupt or wrong.
        """
        if model not in SCRFD_MODELS:
            raise ConfigError(choices_message("SCRFD model", model, list(SCRFD_MODELS)))
        if input_size % 32 or not 128 <= input_size <= 1280:
            raise ConfigError(f"Invalid SCRFD input_size={input_size!r}: must be a multiple of "
                              "32 in [128, 1280]")
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.runner = ModelRunner(SCRFD_MODELS[model], ModelOptions(
            providers=tuple(providers), threads=threads, cache_dir=cache_dir,
            shared_dirs=tuple(shared_dirs) if shared_dirs is not None else None,
            offline=offline))
        self.provider = self.runner.provider

    def detect(self, frame_bgr: np.ndarray) -> list[Face]:
        """Faces in one (H, W, 3) uint8 BGR frame, frame pixels, best first."""
        blob, scale = letterbox(np.asarray(frame_bgr), self.input_size)
        outputs = self.runner.run(blob)
        scores, boxes, keypoints = decode_scrfd(outputs, input_size=self.input_size,
                                                score_threshold=self.score_threshold)
        keep = nms(boxes, scores, self.nms_threshold)
        return [
            Face(bbox=boxes[i] / scale, keypoints=keypoints[i] / scale, score=float(scores[i]),
                 layout="arcface5")
            for i in keep
        ]

    max_batch = 1
    """Frames per model call. insightface's det_10g / det_2.5g fix the input batch at 1 and
    their outputs carry no batch axis ([anchors, k]; the catalogue contract), so declaring the
    batch symbolic cannot free it: the rows of several frames would be indistinguishable."""

    def detect_many(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """`detect` for each (H, W, 3) uint8 BGR frame, in order (one call each: `max_batch`)."""
        return [self.detect(frame) for frame in frames]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """`detect_many` (the `Detector` interface's name for it)."""
        return self.detect_many(frames)
