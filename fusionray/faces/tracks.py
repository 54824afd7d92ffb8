"""The face-tracks export: every face a render saw, and whether it was swapped, as Parquet.

Written beside the output as `<output stem>.faces.parquet` (`export_faces: true`, the default).
One row per detected face per owned frame, frames ascending. Read it with
`pyarrow.parquet.read_table(path)` or `pandas.read_parquet(path)`.

| column | type | meaning |
|---|---|---|
| frame | int32 | video frame index (presentation order, 0-based) |
| pts | int64 | the frame's pts in the input's time base (schema metadata `time_base`) |
| time_seconds | float64 | pts × time_base |
| face | int16 | index of the face within its frame, in detector order |
| track_id | int64, null | identity of the face across frames; null until tracking exists |
| bbox | fixed_size_list<float32>[4] | x1, y1, x2, y2 in pixels |
| landmarks | list<float32> | x0, y0, x1, y1, ... in pixels, order given by `landmarks_layout` |
| landmarks_layout | string | `blazeface6` or `arcface5` (see `fusionray.types.KeypointLayout`) |
| pose | struct<yaw, pitch, roll: float32> | head pose in degrees where known (see below) |
| score | float32 | detector confidence in [0, 1] |
| swapped | bool | whether the render replaced this face (selection mode, minimum size) |

Pose: `roll` (in-plane, from the eye line, positive = clockwise on screen) is always set; `yaw`
and `pitch` are null because no detector here estimates them.
Coordinates are in display orientation (the video's rotation applied), like every stage's.
Schema metadata: `time_base` (e.g. `1/12800`), `rotation` (degrees), `coordinates` (`display`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np
import pyarrow as pa

from fusionray.types import Face, VideoInfo

POSE_TYPE = pa.struct(
    [pa.field("yaw", pa.float32()), pa.field("pitch", pa.float32()),
     pa.field("roll", pa.float32())]
)
FACE_TRACKS_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("pts", pa.int64(), nullable=False),
        pa.field("time_seconds", pa.float64(), nullable=False),
        pa.field("face", pa.int16(), nullable=False),
        pa.field("track_id", pa.int64()),
        pa.field("bbox", pa.list_(pa.float32(), 4), nullable=False),
        pa.field("landmarks", pa.list_(pa.float32()), nullable=False),
        pa.field("landmarks_layout", pa.string(), nullable=False),
        pa.field("pose", POSE_TYPE),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("swapped", pa.bool_(), nullable=False),
    ]
)


def roll_degrees(face: Face) -> float:
    """In-plane head rotation from the eye line (keypoints 0 and 1 are the image-left and
    image-right eye in every layout), degrees, positive = clockwise on screen."""
    (left_x, left_y), (right_x, right_y) = face.keypoints[0], face.keypoints[1]
    return math.degrees(math.atan2(float(right_y - left_y), float(right_x - left_x)))


def build_face_tracks(
    faces_by_frame: Mapping[int, Sequence[Face]],
    swapped_by_frame: Mapping[int, Sequence[Face]],
    info: VideoInfo,
    *,
    start: int,
    stop: int,
    track_ids: Mapping[tuple[int, int], int] | None = None,
) -> pa.Table:
    """Rows for frames `[start, stop)`: every detected face and whether it was swapped.

    Args:
        faces_by_frame: every detected face per frame index.
        swapped_by_frame: the faces that were swapped per frame (the same objects as in
            `faces_by_frame`).
        info: the input's probe (pts and time base).
        start: first frame (a chunk's first owned frame).
        stop: one past the last frame.
        track_ids: `(frame, face index) -> track id` once tracking exists; absent = null.
    """
    rows: dict[str, list[object]] = {name: [] for name in FACE_TRACKS_SCHEMA.names}
    for frame_index in range(start, stop):
        faces = faces_by_frame.get(frame_index, ())
        swapped_ids = {id(face) for face in swapped_by_frame.get(frame_index, ())}
        pts = info.frame_pts[frame_index]
        for face_index, face in enumerate(faces):
            rows["frame"].append(frame_index)
            rows["pts"].append(pts)
            rows["time_seconds"].append(float(pts * info.time_base))
            rows["face"].append(face_index)
            rows["track_id"].append((track_ids or {}).get((frame_index, face_index)))
            rows["bbox"].append(face.bbox.astype(np.float32).tolist())
            rows["landmarks"].append(face.keypoints.astype(np.float32).reshape(-1).tolist())
            rows["landmarks_layout"].append(face.layout)
            rows["pose"].append({"yaw": None, "pitch": None, "roll": roll_degrees(face)})
            rows["score"].append(float(face.score))
            rows["swapped"].append(id(face) in swapped_ids)
    return pa.table(rows, schema=face_tracks_schema(info))


def face_tracks_schema(info: VideoInfo) -> pa.Schema:
    """`FACE_TRACKS_SCHEMA` with the input's time base and rotation as schema metadata."""
    time_base = Fraction(info.time_base)
    return FACE_TRACKS_SCHEMA.with_metadata({
        "time_base": f"{time_base.numerator}/{time_base.denominator}",
        "rotation": str(info.rotation),
        "coordinates": "display",
    })


def concat_face_tracks(tables: Sequence[pa.Table], info: VideoInfo) -> pa.Table:
    """Chunk tables in frame order as one table (an empty one when no chunk had rows)."""
    schema = face_tracks_schema(info)
    if not tables:
        return schema.empty_table()
    merged = pa.concat_tables([t.cast(schema) for t in tables])
    return merged.sort_by([("frame", "ascending"), ("face", "ascending")]).replace_schema_metadata(
        schema.metadata)
