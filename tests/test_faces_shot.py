"""Shot-level selection (faces/shot.py), map-mode people (faces/people.py) and the identity
score (faces/identity.py): pure, on synthetic face tracks."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import numpy as np
import pytest

from fusionray.config import RenderConfig, SelectionConfig
from fusionray.errors import ConfigError
from fusionray.faces.identity import identity_similarities, scored_frame, summarize_identity
from fusionray.faces.people import Person, SourceSet, assign_people
from fusionray.faces.pose import MEAN_FACE_ARCFACE5
from fusionray.faces.select import select_faces
from fusionray.faces.shot import (
    ShotSelection,
    needs_shot_pass,
    plan_shot_selection,
    shot_tracks,
)
from fusionray.faces.table import faces_to_table
from fusionray.swap.base import SourceIdentity
from fusionray.types import Face

FRAMES = 60


def face_at(x: float, y: float, size: float, *, embedding: np.ndarray | None = None) -> Face:
    """A frontal face whose box is `size` px square at (x, y) (top-left)."""
    keypoints = (MEAN_FACE_ARCFACE5[:, :2] - MEAN_FACE_ARCFACE5[:, :2].mean(axis=0)) \
        * size / 112 + (x + size / 2, y + size / 2)
    return Face(bbox=np.array([x, y, x + size, y + size]), keypoints=keypoints, score=0.9,
                embedding=embedding)


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


def group_shot(frames: int = FRAMES, *, hidden: range = range(0), main_size: float = 100
               ) -> dict[int, list[Face]]:
    """Four people of similar size whose sizes breathe out of phase (so the largest face of a
    frame changes every few frames), drifting right by 1 px a frame. Person 2 is the biggest
    on average (`main_size` px against 96); `hidden` frames miss person 2 (out of frame)."""
    faces: dict[int, list[Face]] = {}
    for frame in range(frames):
        row = []
        for person, (base, phase) in enumerate([(96, 0.0), (96, 1.6), (main_size, 3.1),
                                                 (96, 4.7)]):
            if person == 2 and frame in hidden:
                continue
            size = base + 8 * np.sin(2 * np.pi * frame / 9 + phase)
            row.append(face_at(40 + 150 * person + frame, 120, size))
        faces[frame] = row
    return faces


def config_for(**selection: Any) -> RenderConfig:
    return RenderConfig(video="clip.mp4", source="face.png", selection=SelectionConfig(**selection))


def chunk_tables(faces: dict[int, list[Face]], *, chunk_frames: int, overlap: int,
                 frames: int = FRAMES) -> list:
    """Detections split as chunks of `chunk_frames` reading `overlap` frames on each side."""
    tables = []
    for start in range(0, frames, chunk_frames):
        read = range(max(0, start - overlap), min(frames, start + chunk_frames + overlap))
        tables.append(faces_to_table({f: faces[f] for f in read if f in faces}))
    return tables


def swapped_person(selection: ShotSelection, faces: dict[int, list[Face]],
                   config: RenderConfig) -> dict[int, list[int]]:
    """Per frame, which people (by x order) `select_faces` keeps."""
    result = {}
    for frame, row in faces.items():
        kept = select_faces(row, config.selection, shot=selection, frame_index=frame)
        result[frame] = sorted(round((float(face.bbox[0]) - 40 - frame) / 150) for face in kept)
    return result


def test_per_frame_largest_changes_person_but_shot_selection_does_not() -> None:
    faces = group_shot()
    per_frame = {frame: int(np.argmax([f.area for f in row])) for frame, row in faces.items()}
    changes = sum(per_frame[f] != per_frame[f - 1] for f in range(1, FRAMES))
    assert changes >= 10, "the fixture must make per-frame 'largest' flip"
    config = config_for(mode="one")
    shot = plan_shot_selection(chunk_tables(faces, chunk_frames=FRAMES, overlap=0),
                               frame_count=FRAMES, config=config)
    assert (shot.track_count, len(shot.tracks), shot.rejected_tracks) == (4, 1, 0)
    assert set(map(tuple, swapped_person(shot, faces, config).values())) == {(2,)}


@pytest.mark.parametrize("chunk_frames, overlap", [(1, 0), (7, 4), (16, 2), (59, 4)])
def test_plan_is_chunk_invariant(chunk_frames: int, overlap: int) -> None:
    faces = group_shot(hidden=range(20, 26), main_size=110)
    config = config_for(mode="one")
    whole = plan_shot_selection(chunk_tables(faces, chunk_frames=FRAMES, overlap=0),
                                frame_count=FRAMES, config=config)
    chunked = plan_shot_selection(chunk_tables(faces, chunk_frames=chunk_frames, overlap=overlap),
                                  frame_count=FRAMES, config=config)
    assert pickle.dumps(whole) == pickle.dumps(chunked)
    # Chunk tables in any order give the same plan.
    reversed_plan = plan_shot_selection(
        chunk_tables(faces, chunk_frames=chunk_frames, overlap=overlap)[::-1],
        frame_count=FRAMES, config=config)
    assert pickle.dumps(whole) == pickle.dumps(reversed_plan)


def test_face_that_leaves_for_a_few_frames_keeps_its_track_and_swap() -> None:
    hidden = range(20, 28)  # 8 frames out of sight
    faces = group_shot(hidden=hidden, main_size=110)
    config = config_for(mode="one")
    shot = plan_shot_selection([faces_to_table(faces)], frame_count=FRAMES, config=config)
    (track,) = shot.tracks
    assert (track.first, track.last) == (0, FRAMES - 1)
    assert not track.detected[20:28].any() and track.detected[:20].all()
    kept = swapped_person(shot, faces, config)
    assert all(kept[f] == [2] for f in range(FRAMES) if f not in hidden)
    assert all(kept[f] == [] for f in hidden)
    # Someone else passing through the empty place mid-gap is not taken for person 2.
    passer = track.box_at(24)
    assert passer is not None and shot.match([face_at(float(passer[0]), 120, 110)], 24) == []
    filled = track.box_at(21)
    assert filled is not None
    assert shot.match([face_at(float(filled[0]), 120, 110)], 21) != []  # fill range
    # A gap longer than track_max_gap splits person 2 into two shorter tracks: neither
    # outweighs a person seen throughout, so the swap goes to someone else (still one person).
    short = config_for(mode="one", track_max_gap=4)
    split = plan_shot_selection([faces_to_table(faces)], frame_count=FRAMES, config=short)
    assert split.track_count == 5
    (person,) = set(map(tuple, swapped_person(split, faces, short).values()))
    assert person != (2,) and len(person) == 1


def test_track_gate_drops_scattered_detections() -> None:
    faces = group_shot()
    # A "face" (an animal's head, say) detected on every third frame, at one place.
    for frame in range(0, FRAMES, 3):
        faces[frame] = [*faces[frame], face_at(300, 300, 200)]
    config = config_for(mode="many", track_gate=True)
    assert needs_shot_pass(config.selection) and not needs_shot_pass(SelectionConfig())
    shot = plan_shot_selection([faces_to_table(faces)], frame_count=FRAMES, config=config)
    assert (shot.track_count, shot.rejected_tracks, len(shot.tracks)) == (5, 1, 4)
    # In mode one the scattered "face", the biggest box of all, would otherwise win.
    one = plan_shot_selection([faces_to_table(faces)], frame_count=FRAMES,
                              config=config_for(mode="one"))
    box = one.tracks[0].box_at(0)
    assert box is not None and float(box[1]) == 120
    lenient = config_for(mode="one", min_track_presence=0.2)
    one = plan_shot_selection([faces_to_table(faces)], frame_count=FRAMES, config=lenient)
    box = one.tracks[0].box_at(0)
    assert box is not None
    assert float(box[1]) == 300


def test_implausible_keypoints_are_not_tracked() -> None:
    faces = group_shot(frames=10)
    squashed = face_at(700, 300, 90)
    # Mouth corners above the eyes, nose between: no face has that layout (landmark error
    # 0.59 against at most 0.39 for a real face, even in profile).
    broken = np.array([[710, 370], [780, 370], [745, 350], [720, 310], [770, 310]], np.float32)
    faces = {f: [*row, dataclasses.replace(squashed, keypoints=broken)]
             for f, row in faces.items()}
    tracks = shot_tracks(faces, frame_count=10, config=config_for(mode="many"))
    assert len(tracks) == 4
    assert all(len(select_faces(row, SelectionConfig())) == 4 for row in faces.values())


def test_shot_selection_is_small() -> None:
    faces = group_shot()
    shot = plan_shot_selection([faces_to_table(faces)], frame_count=FRAMES,
                               config=config_for(mode="many", track_gate=True))
    # 4 tracks x 60 frames x (16 bytes of box + 1 flag), plus framing.
    assert len(pickle.dumps(shot)) < 4 * FRAMES * 17 + 2048


def identity(seed: int) -> SourceIdentity:
    return SourceIdentity(crop=None, crop_size=128, image_count=1, embedding=unit(seed))


def test_map_assigns_tracks_by_anchor_and_by_embedding() -> None:
    people_embeddings = [unit(10 + p) for p in range(4)]
    faces = {frame: [dataclasses.replace(face, embedding=people_embeddings[p])
                     for p, face in enumerate(row)]
             for frame, row in group_shot().items()}
    # By anchor: frame 0's largest face, person 1 (sizes 96, 104, 100, 88 px in frame 0).
    assert int(np.argmax([face.area for face in faces[0]])) == 1
    anchor = Person(identity=identity(1), name="a", anchors=((0, 0),))
    # Person 1 by two reference embeddings, one of them close to person 3's.
    noisy = people_embeddings[3] + 0.3 * unit(99)
    by_image = Person(identity=identity(2), name="b",
                      reference_embeddings=(unit(50), noisy / np.linalg.norm(noisy)))
    config = config_for(mode="map", map=(
        {"source": "a.png", "reference_frame": 0},
        {"source": "b.png", "reference_image": "b_ref.png"}))
    people = SourceSet(people=(anchor, by_image))
    shot = plan_shot_selection([faces_to_table(faces)], frame_count=FRAMES, config=config,
                               source=people)
    owners = {int(track.boxes[0][0] - 40) // 150: track.source_index for track in shot.tracks}
    assert owners == {1: 0, 3: 1}
    # Unmatched tracks are left alone.
    for frame in (0, 30):
        pairs = shot.match(faces[frame], frame)
        assert sorted(index for _, index in pairs) == [0, 1]


def test_map_anchor_errors() -> None:
    faces = group_shot(frames=10)
    tracks = shot_tracks(faces, frame_count=10, config=config_for(mode="many"))
    people = SourceSet(people=(Person(identity=identity(1), name="a", anchors=((3, 7),)),))
    with pytest.raises(ConfigError, match="frame 3 has 4 face track"):
        assign_people(tracks, people, max_distance=0.6)
    largest = [int(np.argmax([face.area for face in faces[f]])) for f in range(10)]
    same = next(f for f in range(1, 10) if largest[f] == largest[0])
    twice = SourceSet(people=(Person(identity=identity(1), name="a", anchors=((0, 0),)),
                              Person(identity=identity(2), name="b", anchors=((same, 0),))))
    with pytest.raises(ConfigError, match="anchor the same face track"):
        assign_people(tracks, twice, max_distance=0.6)


def test_map_config_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"selection\.map"):
        SelectionConfig(mode="map")
    with pytest.raises(ConfigError, match="at least one of them set"):
        SelectionConfig(mode="map", map=({"source": "a.png"},))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Unknown config key 'selection\.map\.sorce'"):
        SelectionConfig(mode="map", map=({"sorce": "a.png"},))  # type: ignore[arg-type]
    entry = SelectionConfig(mode="map", map=({"source": ["a.png", "b.png"],  # type: ignore
                                              "reference_image": "r.png"},)).map[0]
    assert entry.source_paths == ("a.png", "b.png") and entry.reference_images == ("r.png",)
    # A map job needs no +source of its own.
    assert RenderConfig(video="v.mp4", selection=SelectionConfig(
        mode="map", map=({"source": "a.png", "reference_frame": 0},))).source is None  # type: ignore


def test_identity_similarities_and_summary() -> None:
    source, target = unit(1), unit(2)
    # Swapped faces partway between target and source.
    swapped = np.stack([w * source + (1 - w) * target for w in np.linspace(0.5, 1.0, 20)])
    scores = identity_similarities(np.stack([target] * 20), swapped, source)
    assert scores.shape == (20, 2)
    cosine = float(source @ target)
    expected_source = [(w + (1 - w) * cosine) / np.linalg.norm(w * source + (1 - w) * target)
                       for w in np.linspace(0.5, 1.0, 20)]
    np.testing.assert_allclose(scores[:, 0], expected_source, atol=1e-5)
    assert scores[-1, 0] == pytest.approx(1.0, abs=1e-5)
    summary = summarize_identity([scores[:10], scores[10:]], every=1)
    assert summary is not None and summary["faces"] == 20 and summary["every"] == 1
    assert summary["source_mean"] == pytest.approx(float(np.mean(expected_source)), abs=1e-4)
    assert summary["source_p05"] == pytest.approx(
        float(np.percentile(expected_source, 5)), abs=1e-4)
    assert summary["source_p05"] < summary["source_mean"]
    assert summary["target_p95"] > summary["target_mean"]
    assert summarize_identity([], every=5) is None
    with pytest.raises(ValueError, match="one swapped embedding per original"):
        identity_similarities(np.stack([target] * 2), swapped, source)


def test_scored_frames_are_every_nth_of_the_video_whatever_the_chunk() -> None:
    assert [i for i in range(12) if scored_frame(i, 5)] == [0, 5, 10]
    assert [i for i in range(4) if scored_frame(i, 1)] == [0, 1, 2, 3]
    assert not any(scored_frame(i, 0) for i in range(12))
    # By the frame's index in the video: a chunk starting at frame 7 scores 10, 15, ...
    assert [i for i in range(7, 17) if scored_frame(i, 5)] == [10, 15]
