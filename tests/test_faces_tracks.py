"""The face-tracks export on its own (pure): rows per chunk, pose per row, and track ids that
follow a face across chunk boundaries and do not depend on the chunking.

The export of a real render is checked in `test_render_outputs.py`.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow as pa

from fusionray.faces.pose import estimate_head_pose
from fusionray.faces.tracks import (
    FACE_TRACKS_SCHEMA,
    assign_track_ids,
    build_face_tracks,
    concat_face_tracks,
)
from fusionray.types import Face, VideoInfo

FRAMES = 24
INFO = VideoInfo(
    path="clip.mp4", format_name="mp4", codec_name="h264", width=640, height=360,
    pix_fmt="yuv420p", time_base=Fraction(1, 12800), average_rate=Fraction(25),
    frame_pts=tuple(512 * i for i in range(FRAMES)), keyframe_indices=(0,),
)


def face(x: float, y: float = 100.0, size: float = 60.0) -> Face:
    """A frontal arcface5 face with its box's top-left corner at (x, y)."""
    template = np.array([[0.34, 0.46], [0.66, 0.46], [0.5, 0.64], [0.37, 0.82], [0.63, 0.82]])
    return Face(bbox=np.array([x, y, x + size, y + size], dtype=np.float32),
                keypoints=(template * size + [x, y]).astype(np.float32), score=0.9)


def two_people() -> dict[int, list[Face]]:
    """Person A walks right from x=20 in every frame; person B (at x=400) leaves after frame 7
    and a face appears at the same place from frame 16 (a gap of 8 frames)."""
    faces: dict[int, list[Face]] = {}
    for frame in range(FRAMES):
        faces[frame] = [face(20 + 4 * frame)]
        if frame < 8 or frame >= 16:
            faces[frame].append(face(400))
    return faces


def export(faces: dict[int, list[Face]], chunk_frames: int) -> pa.Table:
    tables = [
        build_face_tracks(faces, {f: faces[f][:1] for f in faces}, INFO, start=start,
                          stop=min(start + chunk_frames, FRAMES))
        for start in range(0, FRAMES, chunk_frames)
    ]
    return assign_track_ids(concat_face_tracks(tables, INFO), iou_threshold=0.3, max_gap=2,
                            max_shift=0.75)


def test_track_ids_follow_faces_across_chunks_and_restart_after_a_long_gap() -> None:
    table = export(two_people(), chunk_frames=5)
    rows = table.to_pydict()
    ids = {(frame, index): track for frame, index, track
           in zip(rows["frame"], rows["face"], rows["track_id"], strict=True)}
    assert {ids[(frame, 0)] for frame in range(FRAMES)} == {0}
    assert {ids[(frame, 1)] for frame in range(8)} == {1}
    assert {ids[(frame, 1)] for frame in range(16, FRAMES)} == {2}
    assert table.column("track_id").null_count == 0


def test_track_ids_do_not_depend_on_the_chunking() -> None:
    faces = two_people()
    whole = export(faces, chunk_frames=FRAMES)
    for chunk_frames in (1, 3, 7):
        assert export(faces, chunk_frames).equals(whole), chunk_frames


def test_rows_carry_pts_pose_and_the_swapped_flag() -> None:
    faces = two_people()
    table = export(faces, chunk_frames=FRAMES)
    assert table.schema.remove_metadata().equals(FACE_TRACKS_SCHEMA)
    assert table.schema.metadata[b"time_base"] == b"1/12800"
    rows = table.to_pylist()
    first_b = next(row for row in rows if row["face"] == 1)
    assert first_b["pts"] == INFO.frame_pts[first_b["frame"]]
    assert rows[0]["swapped"] and not first_b["swapped"]  # only face 0 was swapped
    expected = estimate_head_pose(faces[0][0].keypoints)
    pose = rows[0]["pose"]
    np.testing.assert_allclose([pose["yaw"], pose["pitch"], pose["roll"]], expected, atol=1e-4)


def test_a_face_with_a_pose_keeps_it() -> None:
    turned = Face(bbox=face(20).bbox, keypoints=face(20).keypoints, score=0.9,
                  pose=(35.0, -5.0, 2.0))
    table = build_face_tracks({0: [turned]}, {}, INFO, start=0, stop=1)
    assert table.to_pylist()[0]["pose"] == {"yaw": 35.0, "pitch": -5.0, "roll": 2.0}


def test_no_faces_is_an_empty_table_with_the_schema() -> None:
    table = assign_track_ids(concat_face_tracks([], INFO), iou_threshold=0.3, max_gap=2,
                            max_shift=0.75)
    assert table.num_rows == 0 and table.schema.remove_metadata().equals(FACE_TRACKS_SCHEMA)
