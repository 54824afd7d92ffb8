"""Per-frame detections as a pyarrow table: the small record that travels between actors.

Schema (one row per face): frame (int32, video frame index), face (int16, index within the
frame, largest first), score (float32), bbox (fixed list<float32>[4]: x1, y1, x2, y2 pixels),
keypoints (list<float32>: x0, y0, x1, y1, ... pixels), layout (string, see `KeypointLayout`),
embedding (list<float32>[512] or null: L2-normalised ArcFace embedding, when a recognizer ran),
pose (fixed list<float32>[3] or null: yaw, pitch, roll in degrees).
Coordinates are in display orientation (after the video's rotation is applied).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from fusionray.types import Face

DETECTIONS_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32()),
        pa.field("face", pa.int16()),
        pa.field("score", pa.float32()),
        pa.field("bbox", pa.list_(pa.float32(), 4)),
        pa.field("keypoints", pa.list_(pa.float32())),
        pa.field("layout", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), 512)),
        pa.field("pose", pa.list_(pa.float32(), 3)),
    ]
)


def faces_to_table(faces_by_frame: Mapping[int, Sequence[Face]]) -> pa.Table:
    """Flatten `{frame index: faces}` into a detections table (frames ascending)."""
    columns: dict[str, list[object]] = {name: [] for name in DETECTIONS_SCHEMA.names}
    for frame_index in sorted(faces_by_frame):
        for face_index, face in enumerate(faces_by_frame[frame_index]):
            columns["frame"].append(frame_index)
            columns["face"].append(face_index)
            columns["score"].append(float(face.score))
            columns["bbox"].append(face.bbox.astype(np.float32).tolist())
            columns["keypoints"].append(face.keypoints.astype(np.float32).reshape(-1).tolist())
            columns["layout"].append(face.layout)
            columns["embedding"].append(
                None if face.embedding is None else face.embedding.astype(np.float32).tolist())
            columns["pose"].append(None if face.pose is None else list(face.pose))
    return pa.table(columns, schema=DETECTIONS_SCHEMA)


def table_to_faces(table: pa.Table) -> dict[int, list[Face]]:
    """Inverse of `faces_to_table`; frames with no face are absent from the dict."""
    result: dict[int, list[Face]] = {}
    rows = table.to_pydict()
    for frame, score, bbox, keypoints, layout, embedding, pose in zip(
        rows["frame"], rows["score"], rows["bbox"], rows["keypoints"], rows["layout"],
        rows["embedding"], rows["pose"], strict=True,
    ):
        face = Face(
            bbox=np.asarray(bbox, dtype=np.float32),
            keypoints=np.asarray(keypoints, dtype=np.float32).reshape(-1, 2),
            score=float(score),
            layout=layout,
            embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
            pose=None if pose is None else (float(pose[0]), float(pose[1]), float(pose[2])),
        )
        result.setdefault(int(frame), []).append(face)
    return result
