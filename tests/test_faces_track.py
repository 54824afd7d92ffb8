"""Tracking: IoU (and embedding) linking, gap filling, one-frame drops."""

from __future__ import annotations

import numpy as np
import pytest

from fusionray.faces.track import (
    Track,
    box_iou,
    build_tracks,
    fill_gaps,
    link_faces,
)
from fusionray.types import Face

EmbeddedFace = Face
"""Detections carry their embedding in `Face.embedding` when a recognizer is configured."""


def embed(values: list[float]) -> np.ndarray:
    """A 512-d embedding whose first entries are `values` (the rest zero, so norms carry over)."""
    vector = np.zeros(512, np.float32)
    vector[: len(values)] = values
    return vector


def face_at(x: float, y: float = 50.0, *, size: float = 40.0, score: float = 0.9,
            embedding: list[float] | None = None) -> Face:
    """A face whose box has its top-left corner at (x, y); six keypoints inside it."""
    bbox = np.array([x, y, x + size, y + size], np.float32)
    keypoints = np.array([[x + 0.3 * size, y + 0.4 * size], [x + 0.7 * size, y + 0.4 * size],
                          [x + 0.5 * size, y + 0.6 * size], [x + 0.5 * size, y + 0.8 * size],
                          [x + 0.1 * size, y + 0.5 * size], [x + 0.9 * size, y + 0.5 * size]],
                         np.float32)
    if embedding is not None:
        return Face(bbox=bbox, keypoints=keypoints, score=score, layout="blazeface6",
                    embedding=embed(embedding))
    return Face(bbox=bbox, keypoints=keypoints, score=score, layout="blazeface6")


def lefts(track: Track) -> list[float]:
    return [round(float(face.bbox[0]), 3) for face in track.faces]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 0, 10], [0, 0, 10, 10], 0.0),
    ],
)
def test_box_iou(a: list[float], b: list[float], expected: float) -> None:
    assert box_iou(np.array(a, np.float32), np.array(b, np.float32)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("detections", "expected_tracks"),
    [
        # One face moving 4 px a frame: one track.
        ({0: [0.0], 1: [4.0], 2: [8.0], 3: [12.0]}, [[0, 1, 2, 3]]),
        # Two faces far apart, listed in swapped order in frame 1: two tracks, not crossed.
        ({0: [0.0, 200.0], 1: [204.0, 4.0], 2: [8.0, 208.0]}, [[0, 1, 2], [0, 1, 2]]),
        # A jump far beyond the box (IoU 0): a new track.
        ({0: [0.0], 1: [4.0], 2: [300.0], 3: [304.0]}, [[0, 1], [2, 3]]),
        # A face that appears later starts its own track, ordered after the first.
        ({0: [0.0], 1: [4.0, 150.0], 2: [8.0, 154.0]}, [[0, 1, 2], [1, 2]]),
    ],
    ids=["one-moving-face", "two-faces-reordered", "jump-starts-new-track", "late-face"],
)
def test_iou_linking(detections: dict[int, list[float]], expected_tracks: list[list[int]]) -> None:
    faces_by_frame = {f: [face_at(x) for x in xs] for f, xs in detections.items()}
    tracks = link_faces(faces_by_frame, range(max(detections) + 1))
    assert [list(t.frames) for t in tracks] == expected_tracks
    for track in tracks:  # each track's boxes move smoothly
        assert np.all(np.abs(np.diff(lefts(track))) < 50)


def test_accelerating_face_is_linked_through_its_predicted_box() -> None:
    # A 40 px box at x = 0, 10, 30, 50: from frame 2 on it moves 20 px a frame, where the IoU
    # with the last box is 0.33 (< 0.5) but with the constant-velocity prediction 0.6 or 1.
    faces_by_frame = {f: [face_at(x)] for f, x in enumerate([0.0, 10.0, 30.0, 50.0])}
    tracks = link_faces(faces_by_frame, range(4), iou_threshold=0.5)
    assert [list(t.frames) for t in tracks] == [[0, 1, 2, 3]]


def test_a_face_too_fast_for_the_overlap_links_by_its_centre_shift() -> None:
    # A 40 px box moving 24 px a frame: IoU 0.25 with the last box, so before the track has
    # a velocity (its second frame) only the centre shift (0.6 box sizes) can link it.
    faces_by_frame = {f: [face_at(24.0 * f)] for f in range(5)}
    assert [list(t.frames) for t in link_faces(faces_by_frame, range(5))] == [[0, 1, 2, 3, 4]]
    assert len(link_faces(faces_by_frame, range(5), max_shift=0.0)) == 5
    assert len(build_tracks(faces_by_frame, range(5), max_shift=0.0)) == 0  # all one-frame
    assert len(link_faces(faces_by_frame, range(5), max_shift=0.5)) == 5  # 0.6 > 0.5
    # A box of another size (here 1.75x) does not link by its shift, however close.
    resized = {0: [face_at(0.0)], 1: [face_at(20.0, size=70.0)]}
    assert len(link_faces(resized, range(2), max_shift=2.0)) == 2


def test_an_overlapping_face_wins_over_a_closer_centre_shift() -> None:
    # Frame 1 has the face that moved a little (IoU 0.6 with frame 0) and another face whose
    # centre is 0.6 box sizes away: the overlapping face continues the track.
    faces_by_frame = {0: [face_at(0.0)], 1: [face_at(24.0), face_at(10.0)],
                      2: [face_at(20.0), face_at(48.0)]}
    tracks = link_faces(faces_by_frame, range(3))
    assert [lefts(track) for track in tracks] == [[0.0, 10.0, 20.0], [24.0, 48.0]]


def test_embeddings_keep_identities_apart_when_boxes_cross() -> None:
    # Two faces swap places between frames 1 and 2 with boxes overlapping both ways; only the
    # embeddings tell who is who.
    a, b = [1.0, 0.0], [0.0, 1.0]
    faces_by_frame = {
        0: [face_at(0.0, embedding=a), face_at(20.0, embedding=b)],
        1: [face_at(8.0, embedding=a), face_at(12.0, embedding=b)],
        2: [face_at(12.0, embedding=b), face_at(8.0, embedding=a)],
    }
    tracks = link_faces(faces_by_frame, range(3), max_embedding_distance=0.5)
    assert len(tracks) == 2
    for track, expected in zip(tracks, (a, b), strict=True):
        assert all(face.embedding is not None and np.allclose(face.embedding, embed(expected))
                   for face in track.faces)


def test_embedding_too_far_breaks_the_link_even_with_full_overlap() -> None:
    faces_by_frame = {0: [face_at(0.0, embedding=[1.0, 0.0])],
                      1: [face_at(0.0, embedding=[-1.0, 0.0])]}
    assert len(link_faces(faces_by_frame, range(2), max_embedding_distance=0.6)) == 2


def test_faces_without_embeddings_link_by_iou_alone() -> None:
    faces_by_frame = {0: [face_at(0.0, embedding=[1.0, 0.0])], 1: [face_at(2.0)]}
    assert len(link_faces(faces_by_frame, range(2))) == 1


@pytest.mark.parametrize(
    ("detected_frames", "max_gap", "expected"),
    [
        ([0, 1, 3, 4], 2, [([0, 1, 2, 3, 4], [True, True, False, True, True])]),
        ([0, 1, 4, 5], 2, [([0, 1, 2, 3, 4, 5], [True, True, False, False, True, True])]),
        ([0, 1, 5, 6], 2, [([0, 1], [True, True]), ([5, 6], [True, True])]),
        ([0, 1, 3, 4], 0, [([0, 1], [True, True]), ([3, 4], [True, True])]),
    ],
    ids=["gap-1-filled", "gap-2-filled", "gap-3-split", "max-gap-0-splits"],
)
def test_gap_fill(detected_frames: list[int], max_gap: int,
                  expected: list[tuple[list[int], list[bool]]]) -> None:
    faces_by_frame = {f: [face_at(4.0 * f, score=0.5 + 0.05 * f)] for f in detected_frames}
    tracks = build_tracks(faces_by_frame, range(detected_frames[-1] + 1), max_gap=max_gap)
    assert [(list(t.frames), list(t.observed)) for t in tracks] == expected
    for track in tracks:  # filled faces are linear interpolations: the path stays 4 px/frame
        assert lefts(track) == pytest.approx([4.0 * f for f in track.frames])
        assert [f.score for f in track.faces] == pytest.approx(
            [0.5 + 0.05 * f for f in track.frames])


def test_fill_gaps_keeps_detected_faces_as_they_are() -> None:
    detected = Track(frames=(2, 5), faces=(face_at(10.0), face_at(40.0)), observed=(True, True))
    filled = fill_gaps(detected)
    assert filled.frames == (2, 3, 4, 5)
    assert filled.faces[0] is detected.faces[0] and filled.faces[-1] is detected.faces[1]
    assert lefts(filled) == pytest.approx([10.0, 20.0, 30.0, 40.0])


@pytest.mark.parametrize(
    ("detections", "min_track_frames", "expected_frames"),
    [
        # A one-frame false positive next to a steady face: dropped.
        ({0: [0.0], 1: [2.0, 300.0], 2: [4.0]}, 2, [[0, 1, 2]]),
        # The same flicker with min_track_frames=1: kept.
        ({0: [0.0], 1: [2.0, 300.0], 2: [4.0]}, 1, [[0, 1, 2], [1]]),
        # A two-frame face survives min_track_frames=2.
        ({0: [0.0], 1: [2.0, 300.0], 2: [4.0, 302.0]}, 2, [[0, 1, 2], [1, 2]]),
        # A single-frame window (a one-frame video) keeps its face.
        ({0: [0.0]}, 2, [[0]]),
    ],
    ids=["flicker-dropped", "flicker-kept-at-1", "two-frame-face-kept", "one-frame-video"],
)
def test_short_tracks_are_dropped(detections: dict[int, list[float]], min_track_frames: int,
                                  expected_frames: list[list[int]]) -> None:
    faces_by_frame = {f: [face_at(x) for x in xs] for f, xs in detections.items()}
    tracks = build_tracks(faces_by_frame, range(max(detections) + 1),
                          min_track_frames=min_track_frames)
    assert [list(t.frames) for t in tracks] == expected_frames


def test_track_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="equal"):
        Track(frames=(0, 1), faces=(face_at(0.0),), observed=(True, True))
    with pytest.raises(ValueError, match="ascending"):
        Track(frames=(1, 1), faces=(face_at(0.0), face_at(0.0)), observed=(True, True))
