"""68-point face landmarks (2DFAN4): better alignment, pose and landmark-area masks.

Contract (2DFAN4 as FaceFusion ships it): input `input` [B, 3, 256, 256] NCHW, the frame's BGR
channels / 255, a crop centred on the detection box and scaled so its longer side is 195 px;
outputs [B, 68, 3] points (x, y in 64 px heatmap units, × 4 = crop pixels) and [B, 68, 64, 64]
heatmaps, whose per-point peaks give the confidence (mean peak, mapped from [0, 0.9] to [0, 1]).
The 68 points follow the iBUG 300-W order (jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, lips
48–67).

Detectors give 5 points (SCRFD) or 4 usable ones (BlazeFace: no mouth corners); from the 68 the
five ArcFace points are exact (eye centres, nose tip, mouth corners), so a BlazeFace face gets
the same 5-point alignment an SCRFD face has.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.faces.pose import estimate_head_pose
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.types import Face, FrameBGR

LANDMARKER_MODELS = ("2dfan4",)
CROP_SIZE = 256
BOX_SIDE = 195.0
"""Pixels the detection box's longer side spans in the 256 px input (2DFAN4's training crop)."""
HEATMAP_SIZE = 64
DARK_LUMA = 30.0
"""Mean L (OpenCV LAB, 0–255) under which the crop's contrast is raised first (CLAHE, clip 2),
as FaceFusion does: the heatmaps fade on very dark faces."""

Float64Array = npt.NDArray[np.float64]


def landmarks_5_from_68(landmarks_68: npt.ArrayLike) -> Float64Array:
    """(5, 2) ArcFace points from (68, 2) iBUG points: eye centres (36–41 and 42–47, the
    image-left eye first), nose tip 30, mouth corners 48 and 54."""
    points = np.asarray(landmarks_68, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks_5_from_68 needs (68, 2) points, got {points.shape}")
    return np.stack([points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30],
                     points[48], points[54]])


def landmark_crop_matrix(face: Face) -> Float64Array:
    """(2, 3) frame -> 256 px 2DFAN4 input: box centre to the crop centre, longer box side to
    195 px, and the eye line level (2DFAN4 saw upright faces; a tilted head loses points)."""
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    scale = BOX_SIDE / max(x2 - x1, y2 - y1, 1.0)
    left_eye, right_eye = face.keypoints[0].astype(np.float64), face.keypoints[1].astype(
        np.float64)
    angle = float(np.degrees(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0])))
    centre = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array([CROP_SIZE / 2.0, CROP_SIZE / 2.0]) - np.array(centre)
    return np.asarray(matrix, np.float64)


def prepare_landmark_input(crop_bgr: FrameBGR) -> npt.NDArray[np.float32]:
    """(1, 3, 256, 256) float32 input for a (256, 256, 3) uint8 crop (dark crops get CLAHE)."""
    lab = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2LAB)
    if float(lab[..., 0].mean()) < DARK_LUMA:
        lab[..., 0] = cv2.createCLAHE(clipLimit=2.0).apply(lab[..., 0])
        crop_bgr = np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), np.uint8)
    return (crop_bgr.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]


def decode_landmarks(points: np.ndarray, heatmaps: np.ndarray,
                     to_crop: Float64Array) -> tuple[Float64Array, float]:
    """Frame-pixel (68, 2) landmarks and their confidence in [0, 1] from one face's outputs.

    Args:
        points: (68, 3) x, y (heatmap units), and a third value that is not used.
        heatmaps: (68, 64, 64).
        to_crop: the (2, 3) frame -> crop matrix the input was warped with.
    """
    crop_points = np.asarray(points, np.float64)[:, :2] * (CROP_SIZE / HEATMAP_SIZE)
    inverse = cv2.invertAffineTransform(to_crop)
    frame_points = crop_points @ inverse[:, :2].T + inverse[:, 2]
    peak = float(np.asarray(heatmaps, np.float64).reshape(68, -1).max(axis=1).mean())
    return frame_points, float(np.interp(peak, [0.0, 0.9], [0.0, 1.0]))


def refine_face(face: Face, landmarks_68: npt.ArrayLike) -> Face:
    """`face` re-expressed with the five ArcFace points taken from its 68 landmarks (layout
    `arcface5`) and the head pose estimated from them; box, score and embedding are kept."""
    keypoints = landmarks_5_from_68(landmarks_68).astype(np.float32)
    return replace(face, keypoints=keypoints, layout="arcface5",
                   pose=estimate_head_pose(keypoints, "arcface5"))


class FaceLandmarker68:
    """2DFAN4 on an ONNX Runtime session: 68 landmarks for each detected face."""

    def __init__(self, model: str = "2dfan4", *, min_score: float = 0.5,
                 options: ModelOptions | None = None) -> None:
        """Open the model once.

        Args:
            min_score: confidence under which a face keeps its detector keypoints (a blurred
                or half-hidden face gives scattered heatmaps; the detector's points are safer).

        Raises:
            ConfigError: unknown model. ModelError: model missing, corrupt or wrong.
        """
        from fusionray.errors import ConfigError, choices_message

        if model not in LANDMARKER_MODELS:
            raise ConfigError(choices_message("landmarker", model, LANDMARKER_MODELS))
        self.min_score = min_score
        self.runner = ModelRunner(model, options or ModelOptions())
        self.provider = self.runner.provider

    def detect(self, frame_bgr: FrameBGR, face: Face) -> tuple[Float64Array, float]:
        """(68, 2) frame-pixel landmarks of `face` and their confidence in [0, 1]."""
        to_crop = landmark_crop_matrix(face)
        crop = cv2.warpAffine(frame_bgr, to_crop, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        points, heatmaps = self.runner.run(prepare_landmark_input(np.asarray(crop, np.uint8)))
        return decode_landmarks(np.asarray(points)[0], np.asarray(heatmaps)[0], to_crop)

    def refine(self, frame_bgr: FrameBGR, face: Face) -> tuple[Face, Float64Array | None]:
        """The face with 68-point keypoints and pose, and its landmarks; or the face unchanged
        and None when the landmarks are not confident enough."""
        landmarks, score = self.detect(frame_bgr, face)
        if score < self.min_score:
            return face, None
        return refine_face(face, landmarks), landmarks
