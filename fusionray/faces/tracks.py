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
| track_id | int64 | the same face across frames: 0, 1, ... in order of first appearance |
| bbox | fixed_size_list<float32>[4] | x1, y1, x2, y2 in pixels |
| landmarks | list<float32> | x0, y0, x1, y1, ... in pixels, order given by `landmarks_layout` |
| landmarks_layout | string | `blazeface6` or `arcface5` (see `fusionray.types.KeypointLayout`) |
| pose | struct<yaw, pitch, roll: float32> | head pose in degrees (see below) |
| score | float32 | detector confidence in [0, 1] |
| swapped | bool | whether the render replaced this face (selection mode, minimum size) |

Pose: estimated from the row's landmarks by `fusionray.faces.pose.estimate_head_pose` (a
mean-face fit: coarse, good to tell frontal from three-quarter from profile). Yaw > 0: the nose
points towards image right; pitch > 0: the face looks down; roll > 0: tilted clockwise on screen.

Track ids: faces are linked across the whole video by box continuity (`assign_track_ids`, the
same linking as the render's temporal stage, with `temporal.iou_threshold` and
`temporal.max_gap`). A face that vanishes for more than `max_gap` frames, or jumps further than
its box overlaps, comes back under a new id. The rows and their order do not depend on the
chunking, so neither do the ids.
Coordinates are in display orientation (the video's rotation applied), like every stage's.
Schema metadata: `time_base` (e.g. `1/12800`), `rotation` (degrees), `coordinates` (`display`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np
import pyarrow as pa

from fusionray.faces.pose import estimate_head_pose
from fusionray.faces.track import link_faces
from fusionray.types import KEYPOINT_COUNTS, Face, VideoInfo

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


def build_face_tracks(
    faces_by_frame: Mapping[int, Sequence[Face]],
    swapped_by_frame: Mapping[int, Sequence[Face]],
    info: VideoInfo,
    *,
    start: int,
    stop: int,
) -> pa.Table:
    """Rows for frames `[start, stop)`: every detected face and whether it was swapped.

    Args:
        faces_by_frame: every detected face per frame index.
        swapped_by_frame: the faces that were swapped per frame (the same objects as in
            `faces_by_frame`).
        info: the input's probe (pts and time base).
        start: first frame (a chunk's first owned frame).
        stop: one past the last frame.

    Returns:
        Rows with `track_id` null: ids span chunks, so `assign_track_ids` sets them once
        every chunk's rows are together.
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
            rows["track_id"].append(None)
            rows["bbox"].append(face.bbox.astype(np.float32).tolist())
            rows["landmarks"].append(face.keypoints.astype(np.float32).reshape(-1).tolist())
            rows["landmarks_layout"].append(face.layout)
            yaw, pitch, roll = face.pose if face.pose is not None else estimate_head_pose(
                face.keypoints, face.layout)
            rows["pose"].append({"yaw": yaw, "pitch": pitch, "roll": roll})
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


def assign_track_ids(table: pa.Table, *, iou_threshold: float, max_gap: int,
                     max_shift: float) -> pa.Table:
    """`table` with `track_id` set: every face linked to the same face in nearby frames.

    Args:
        table: face-tracks rows of a whole video, in frame order (`concat_face_tracks`).
        iou_threshold: minimum overlap of a face's box with the track's predicted box.
        max_shift: or at most this many box sizes between the centres (`link_faces`).
        max_gap: frames a track may go without a face before a returning face starts a new one.

    Returns:
        The same rows with `track_id` 0, 1, ... numbered by first appearance (then by the
        face's index in that frame).
    """
    if table.num_rows == 0:
        return table
    columns = table.select(["frame", "face", "bbox", "landmarks", "landmarks_layout",
                            "score"]).to_pydict()
    faces_by_frame: dict[int, list[Face]] = {}
    row_of: dict[int, int] = {}  # id(face) -> row number
    for row, (frame, bbox, landmarks, layout, score) in enumerate(zip(
            columns["frame"], columns["bbox"], columns["landmarks"],
            columns["landmarks_layout"], columns["score"], strict=True)):
        face = Face(bbox=np.asarray(bbox, dtype=np.float32),
                    keypoints=np.asarray(landmarks, dtype=np.float32).reshape(
                        KEYPOINT_COUNTS[layout], 2),
                    score=float(score), layout=layout)
        faces_by_frame.setdefault(int(frame), []).append(face)
        row_of[id(face)] = row
    tracks = link_faces(faces_by_frame, sorted(faces_by_frame), iou_threshold=iou_threshold,
                        max_gap=max_gap, max_shift=max_shift)
    track_ids = np.full(table.num_rows, -1, dtype=np.int64)
    for track_id, track in enumerate(tracks):
        for face in track.faces:
            track_ids[row_of[id(face)]] = track_id
    index = table.schema.get_field_index("track_id")
    return table.set_column(index, table.schema.field(index), pa.array(track_ids))
