"""Choose which detected faces get swapped (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fusionray.config import SelectionConfig
from fusionray.errors import ConfigError
from fusionray.faces.pose import within_pose_limits
from fusionray.types import Face


def select_faces(
    faces: Sequence[Face],
    selection: SelectionConfig,
    *,
    reference: npt.ArrayLike | None = None,
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

    Raises:
        ConfigError: reference mode without a reference embedding.
    """
    limit_pose = selection.max_yaw < 90.0 or selection.max_pitch < 90.0
    kept = [
        face for face in faces
        if min(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1])
        >= selection.min_face_size
        and (not limit_pose or within_pose_limits(face, max_yaw=selection.max_yaw,
                                                  max_pitch=selection.max_pitch))
    ]
    kept.sort(key=lambda face: face.area, reverse=True)
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
