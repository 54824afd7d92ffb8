"""Choose which detected faces get swapped (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from fusionray.config import SelectionConfig
from fusionray.types import Face


def select_faces(faces: Sequence[Face], selection: SelectionConfig) -> list[Face]:
    """Return the faces to swap in one frame, largest first.

    Args:
        faces: every face detected in the frame.
        selection: `one` keeps only the largest face; `many` keeps all. Faces whose box is
            smaller than `min_face_size` pixels on its shorter side are dropped first.
    """
    kept = [
        face for face in faces
        if min(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1])
        >= selection.min_face_size
    ]
    kept.sort(key=lambda face: face.area, reverse=True)
    if selection.mode == "one":
        return kept[:1]
    return kept
