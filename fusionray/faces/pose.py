"""Head pose (yaw, pitch, roll) from 2-D face keypoints. Pure.

A rigid mean-face model of the keypoints (the ArcFace template's layout with typical depths)
is fitted to the detected points under weak perspective (scaled orthographic projection, right
for faces that are small against their distance to the camera): a least-squares affine fit, its
two rows orthonormalised into a rotation. Five points are too few for fine angles, but enough
to tell a frontal face from a three-quarter view and from a profile, which is what the swap
limit needs: inswapper only ever saw aligned, roughly frontal faces.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fusionray.faces.align import ARCFACE_TEMPLATE_112
from fusionray.types import Face

_EYE_DISTANCE = float(ARCFACE_TEMPLATE_112[1, 0] - ARCFACE_TEMPLATE_112[0, 0])
_MEAN_FACE_DEPTH = np.array([0.0, 0.0, -0.55, -0.15, -0.15]) * _EYE_DISTANCE
"""Depth of each ArcFace point, template pixels, negative towards the camera: the nose tip
stands about 0.55 eye distances in front of the eyes, the mouth corners slightly."""

MEAN_FACE_ARCFACE5 = np.concatenate([ARCFACE_TEMPLATE_112, _MEAN_FACE_DEPTH[:, None]], axis=1)
"""(5, 3) model points: x right, y down, z into the scene (right-handed)."""
MEAN_FACE_BLAZEFACE4 = np.concatenate([
    MEAN_FACE_ARCFACE5[:3],
    MEAN_FACE_ARCFACE5[3:5].mean(axis=0, keepdims=True),  # Mouth centre.
])
"""(4, 3) model points of `blazeface6`'s eyes, nose tip and mouth centre (ears are unused:
BlazeFace guesses the far ear's position)."""


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> npt.NDArray[np.float64]:
    """(3, 3) rotation for angles in degrees, with `estimate_head_pose`'s conventions."""
    y, p, r = np.radians([-yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def estimate_head_pose(
    keypoints: npt.ArrayLike, layout: str = "arcface5"
) -> tuple[float, float, float]:
    """Head pose from keypoints.

    Args:
        keypoints: (N, 2) pixels in `layout` order (arcface5, or blazeface6 whose first four
            points are used).
        layout: `arcface5` or `blazeface6`.

    Returns:
        (yaw, pitch, roll) in degrees. 0, 0, 0 is a frontal, upright face. Yaw > 0: the nose
        points towards image right; pitch > 0: the face looks down; roll > 0: the head is
        tilted clockwise in the image. |yaw| near 90 is a profile.
    """
    points = np.asarray(keypoints, dtype=np.float64)
    model = MEAN_FACE_ARCFACE5 if layout == "arcface5" else MEAN_FACE_BLAZEFACE4
    points = points[: model.shape[0]]
    model_centred = model - model.mean(axis=0)
    image_centred = points - points.mean(axis=0)
    # image ≈ model @ A.T: A (2, 3) = scale · the first two rows of the rotation.
    solution, *_ = np.linalg.lstsq(model_centred, image_centred, rcond=None)
    rows = solution.T
    first = rows[0] / max(np.linalg.norm(rows[0]), 1e-9)
    second = rows[1] - first * float(first @ rows[1])
    second /= max(np.linalg.norm(second), 1e-9)
    rotation = np.stack([first, second, np.cross(first, second)])
    pitch = np.degrees(np.arcsin(np.clip(rotation[2, 1], -1.0, 1.0)))
    yaw = -np.degrees(np.arctan2(-rotation[2, 0], rotation[2, 2]))
    roll = np.degrees(np.arctan2(-rotation[0, 1], rotation[1, 1]))
    return float(yaw), float(pitch), float(roll)


def with_pose(face: Face) -> Face:
    """`face` with its `pose` filled in from its keypoints."""
    from dataclasses import replace

    return replace(face, pose=estimate_head_pose(face.keypoints, face.layout))


def within_pose_limits(face: Face, *, max_yaw: float, max_pitch: float) -> bool:
    """Whether a face is frontal enough to swap (limits in degrees; 90 or more = no limit)."""
    yaw, pitch, _ = face.pose if face.pose is not None else estimate_head_pose(
        face.keypoints, face.layout)
    return abs(yaw) <= max_yaw and abs(pitch) <= max_pitch
