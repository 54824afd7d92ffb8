"""Choose which detected faces get swapped (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fusionray.config import SelectionConfig
from fusionray.errors import ConfigError
from fusionray.faces.gate import GateLimits, plausible_faces
from fusionray.faces.pose import within_pose_limits
from fusionray.types import Face

if TYPE_CHECKING:
    from fusionray.faces.shot import ShotSelection


def select_faces(
    faces: Sequence[Face],
    selection: SelectionConfig,
    *,
    reference: npt.ArrayLike | None = None,
    shot: ShotSelection | None = None,
    frame_index: int | None = None,
) -> list[Face]:
    """Return the faces to swap in one frame.

    Args:
        faces: every face detected in the frame.
        selection: faces smaller than `min_face_size` (shorter box side, pixels) or posed
            beyond `max_yaw` / `max_pitch` degrees are dropped first. Then `one` keeps only the
            largest face; `many` keeps all (largest first); `reference` keeps the faces whose
            embedding is within `reference_distance` (cosine distance) of `reference`, nearest
            first.
        reference: (512,) L2-normalised embedding of the reference face (reference mode).
        shot: the shot-level choice (`fusionray.faces.shot`), when the job planned one: only
            faces of its chosen tracks are kept (in `one` mode that is one person for the
            whole shot, not the largest face of each frame), then the mode's own rule applies
            (`one` and `map` keep every matched face).
        frame_index: the frame `faces` are in (needed with `shot`).

    Every mode first drops detections whose keypoints do not fit a human face
    (`selection.max_landmark_error`, `fusionray.faces.gate`).

    Raises:
        ConfigError: reference mode without a reference embedding.
    """
    faces = plausible_faces(faces, GateLimits(max_landmark_error=selection.max_landmark_error))
    limit_pose = selection.max_yaw < 90.0 or selection.max_pitch < 90.0
    kept = [
        face for face in faces
        if min(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1])
        >= selection.min_face_size
        and (not limit_pose or within_pose_limits(face, max_yaw=selection.max_yaw,
                                                  max_pitch=selection.max_pitch))
    ]
    if shot is not None:
        if frame_index is None:
            raise ValueError("select_faces with a shot selection needs frame_index")
        kept = [face for face, _ in shot.match(kept, frame_index)]
    kept.sort(key=lambda face: face.area, reverse=True)
    if selection.mode == "map" or (selection.mode == "one" and shot is not None):
        return kept
    if selection.mode == "one":
        return kept[:1]
    if selection.mode == "reference":
        if reference is None:
            raise ConfigError("selection.mode=reference needs a reference face embedding "
                              "(selection.reference_image or selection.reference_frame)")
        target = np.asarray(reference, dtype=np.float32).reshape(-1)
        scored = [
            (1.0 - float(face.embedding @ target), face)
            for face in kept if face.embedding is not None
        ]
        scored.sort(key=lambda item: item[0])
        return [face for distance, face in scored if distance <= selection.reference_distance]
    return kept
