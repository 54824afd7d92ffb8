"""Smoothing: exact on constant velocity, less noise, support bounded by the radius; the chunk
glue (`stabilize_faces`), the jitter metric and the config rules that keep it chunk-invariant."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from fusionray.config import RenderConfig, TemporalConfig
from fusionray.errors import ConfigError
from fusionray.faces.smooth import smooth_at, smooth_track_face, smooth_trajectory
from fusionray.faces.temporal import stabilize_faces
from fusionray.faces.track import Track
from fusionray.report.jitter import landmark_error, landmark_jitter
from tests.test_faces_track import EmbeddedFace, embed, face_at


def constant_velocity_path(frames: int = 30) -> np.ndarray:
    t = np.arange(frames, dtype=np.float64)[:, None]
    return np.hstack([100.0 + 3.7 * t, 50.0 - 1.3 * t, 7.0 + 0.0 * t])


@pytest.mark.parametrize("radius", [1, 2, 4, 8])
@pytest.mark.parametrize("strength", [0.0, 0.5, 5.0, 1e4])
def test_constant_velocity_path_is_preserved(radius: int, strength: float) -> None:
    path = constant_velocity_path()
    assert np.abs(smooth_trajectory(path, radius=radius, strength=strength) - path).max() < 1e-4


def test_constant_velocity_is_bridged_across_missing_samples() -> None:
    path = constant_velocity_path()
    weights = np.ones(len(path))
    weights[10:13] = 0.0  # no measurement: the smoother predicts them
    weights[20] = 0.25
    smoothed = smooth_trajectory(path, radius=4, strength=5.0, weights=weights)
    assert np.abs(smoothed - path).max() < 1e-4


@pytest.mark.parametrize(("radius", "strength", "min_reduction"),
                         [(2, 5.0, 0.6), (4, 5.0, 0.7), (4, 1.0, 0.6)])
def test_noise_is_reduced(radius: int, strength: float, min_reduction: float) -> None:
    rng = np.random.default_rng(7)
    path = constant_velocity_path(200)[:, :2]
    noisy = path + rng.normal(0.0, 1.0, path.shape)
    smoothed = smooth_trajectory(noisy, radius=radius, strength=strength)
    before, after = landmark_jitter(noisy[:, None]), landmark_jitter(smoothed[:, None])
    assert after < (1.0 - min_reduction) * before
    assert landmark_error(smoothed[:, None], path[:, None]) < \
        landmark_error(noisy[:, None], path[:, None])


@pytest.mark.parametrize("radius", [0, 1, 3, 4])
def test_support_never_exceeds_the_radius(radius: int) -> None:
    rng = np.random.default_rng(3)
    path = rng.normal(0.0, 5.0, (25, 3))
    before = smooth_trajectory(path, radius=radius, strength=5.0)
    centre = 12
    for distance in range(radius + 1, 12):
        for far in (centre - distance, centre + distance):
            changed = path.copy()
            changed[far] += 1000.0
            after = smooth_trajectory(changed, radius=radius, strength=5.0)
            assert np.array_equal(after[centre], before[centre]), (distance, far)
    # Inside the radius the frames do count (the filter is not a no-op).
    if radius:
        changed = path.copy()
        changed[centre + radius] += 1000.0
        assert not np.array_equal(
            smooth_trajectory(changed, radius=radius, strength=5.0)[centre], before[centre])


def test_strength_zero_returns_the_samples() -> None:
    path = np.random.default_rng(1).normal(size=(9, 2))
    assert np.array_equal(smooth_trajectory(path, radius=3, strength=0.0), path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"centre": 5}, "centre 5 outside"),
        ({"centre": 0, "weights": [0.0, 0.0, 0.0]}, "one > 0"),
        ({"centre": 0, "weights": [1.0, -1.0, 1.0]}, "weights"),
        ({"centre": 0, "strength": -1.0}, "strength"),
    ],
)
def test_smooth_at_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"strength": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        smooth_at(np.zeros((3, 2)), **arguments)


def test_smooth_track_face_smooths_box_keypoints_score_and_embedding() -> None:
    rng = np.random.default_rng(5)
    frames = range(9)
    faces = tuple(
        EmbeddedFace(
            bbox=face_at(4.0 * f).bbox + rng.normal(0, 1, 4).astype(np.float32),
            keypoints=face_at(4.0 * f).keypoints + rng.normal(0, 1, (6, 2)).astype(np.float32),
            score=0.8 + 0.1 * (-1) ** f, layout="blazeface6",
            embedding=embed([1.0, 0.1 * (-1) ** f]),
        )
        for f in frames
    )
    track = Track(frames=tuple(frames), faces=faces, observed=(True,) * 9)
    face = smooth_track_face(track, 4, radius=4, strength=5.0)
    assert isinstance(face, EmbeddedFace) and face.layout == "blazeface6"
    truth = face_at(16.0)
    assert np.abs(face.keypoints - truth.keypoints).mean() < \
        np.abs(faces[4].keypoints - truth.keypoints).mean()
    assert abs(face.score - 0.8) < 0.05
    assert face.embedding is not None
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0)
    assert abs(face.embedding[1]) < 0.02
    kept = smooth_track_face(track, 4, radius=4, strength=5.0, smooth_scores=False,
                             smooth_embeddings=False)
    assert kept.embedding is not None and faces[4].embedding is not None
    assert kept.score == faces[4].score and np.array_equal(kept.embedding, faces[4].embedding)


# --- stabilize_faces: what the swap stage runs on a chunk ----------------------------------------

def noisy_track_detections(frames: int, *, seed: int = 0, missing: tuple[int, ...] = (),
                           flicker: tuple[int, ...] = ()) -> dict[int, list]:
    rng = np.random.default_rng(seed)
    detections: dict[int, list] = {}
    for f in range(frames):
        if f in missing:
            continue
        base = face_at(3.0 * f)
        detections[f] = [dataclasses.replace(
            base, keypoints=base.keypoints + rng.normal(0, 1.0, (6, 2)).astype(np.float32))]
        if f in flicker:
            detections[f].append(face_at(400.0, 300.0))
    return detections


def test_stabilize_fills_gaps_drops_flicker_and_smooths() -> None:
    detections = noisy_track_detections(40, missing=(10, 11), flicker=(20,))
    result = stabilize_faces(detections, owned=range(40), read=range(40), frame_count=40,
                             settings=TemporalConfig())
    assert sorted(result) == list(range(40))
    assert all(len(faces) == 1 for faces in result.values())  # flicker gone, gap filled
    raw = np.stack([detections[f][0].keypoints for f in range(40) if f not in (10, 11)])
    smooth = np.stack([result[f][0].keypoints for f in range(40) if f not in (10, 11)])
    assert landmark_jitter(smooth) < 0.4 * landmark_jitter(raw)


def test_stabilize_keeps_a_face_too_fast_for_the_box_overlap() -> None:
    """A 40 px face moving 26 px a frame (box IoU 0.21, below `iou_threshold`) is swapped in
    every frame, for every chunking; with `max_shift=0` every detection was a one-frame track
    and no frame kept its face."""
    detections = {f: [face_at(26.0 * f)] for f in range(12)}
    settings = TemporalConfig()
    whole = stabilize_faces(detections, owned=range(12), read=range(12), frame_count=12,
                            settings=settings)
    assert sorted(whole) == list(range(12))
    assert not stabilize_faces(detections, owned=range(12), read=range(12), frame_count=12,
                               settings=TemporalConfig(max_shift=0.0))
    from fusionray.media.plan import plan_chunks

    for chunk in plan_chunks(12, chunk_frames=3, overlap=settings.reach):
        read = range(chunk.read_start, chunk.read_stop)
        piece = stabilize_faces({f: detections[f] for f in read}, read=read, frame_count=12,
                                owned=range(chunk.start, chunk.stop), settings=settings)
        for frame_index, faces in piece.items():
            assert np.array_equal(faces[0].bbox, whole[frame_index][0].bbox)


def test_stabilize_disabled_passes_detections_through() -> None:
    detections = noisy_track_detections(10, flicker=(3,))
    result = stabilize_faces(detections, owned=range(2, 8), read=range(10), frame_count=10,
                             settings=TemporalConfig(enabled=False))
    assert result == {f: detections[f] for f in range(2, 8)}


@pytest.mark.parametrize("chunk_frames", [1, 2, 3, 7, 40])
def test_stabilize_is_the_same_for_every_chunking(chunk_frames: int) -> None:
    from fusionray.media.plan import plan_chunks

    settings = TemporalConfig()
    detections = noisy_track_detections(40, seed=2, missing=(5, 17, 18), flicker=(9, 30))
    whole = stabilize_faces(detections, owned=range(40), read=range(40), frame_count=40,
                            settings=settings)
    pieces: dict[int, list] = {}
    for chunk in plan_chunks(40, chunk_frames=chunk_frames, overlap=settings.reach):
        read = range(chunk.read_start, chunk.read_stop)
        visible = {f: faces for f, faces in detections.items() if f in read}
        pieces |= stabilize_faces(visible, owned=range(chunk.start, chunk.stop), read=read,
                                  frame_count=40, settings=settings)
    assert sorted(pieces) == sorted(whole)
    for frame_index, faces in whole.items():
        for a, b in zip(faces, pieces[frame_index], strict=True):
            assert np.array_equal(a.keypoints, b.keypoints) and np.array_equal(a.bbox, b.bbox)
            assert a.score == b.score


def test_stabilize_refuses_a_read_range_shorter_than_the_reach() -> None:
    detections = noisy_track_detections(20)
    with pytest.raises(ValueError, match=r"chunk\.overlap must be >= 4"):
        stabilize_faces(detections, owned=range(8, 10), read=range(6, 12), frame_count=20,
                        settings=TemporalConfig(radius=4))


# --- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("temporal", "overlap", "message"),
    [
        ({"radius": 5}, 4, "Invalid temporal.radius=5: must be <= chunk.overlap (chunk.overlap=4)"),
        ({"max_gap": 3, "radius": 2}, 2, "Invalid temporal.max_gap=3"),
        ({"min_track_frames": 4, "radius": 2, "max_gap": 1}, 2,
         "Invalid temporal.min_track_frames=4: must be <= chunk.overlap + 1"),
        ({}, 0, "temporal.radius=4"),
    ],
)
def test_reach_beyond_the_overlap_is_rejected(temporal: dict, overlap: int, message: str) -> None:
    from fusionray.config import ChunkConfig

    with pytest.raises(ConfigError) as caught:
        RenderConfig(video="demo", temporal=TemporalConfig(**temporal),
                     chunk=ChunkConfig(overlap=overlap))
    assert message in str(caught.value)
    assert "chunk.overlap" in str(caught.value)


def test_reach_within_the_overlap_or_disabled_is_accepted() -> None:
    from fusionray.config import ChunkConfig

    RenderConfig(video="demo", temporal=TemporalConfig(radius=2, max_gap=2),
                 chunk=ChunkConfig(overlap=2))
    RenderConfig(video="demo", temporal=TemporalConfig(enabled=False),
                 chunk=ChunkConfig(overlap=0))
    assert TemporalConfig(enabled=False).reach == 0
    assert TemporalConfig(radius=1, max_gap=3, min_track_frames=2).reach == 3


def test_composed_config_rejects_a_radius_beyond_the_overlap() -> None:
    from tests.test_render import compose_config

    with pytest.raises(ConfigError, match=r"temporal\.radius=6.*chunk\.overlap"):
        compose_config("+video=demo", "temporal.radius=6")
    config = compose_config("+video=demo", "temporal.radius=6", "chunk.overlap=6")
    assert config.temporal.radius == 6


@pytest.mark.parametrize(
    ("override", "message"),
    [("strength", -1.0), ("radius", -1), ("max_gap", -1), ("min_track_frames", 0),
     ("iou_threshold", 0.0), ("max_embedding_distance", 3.0)],
)
def test_temporal_values_out_of_range(override: str, message: Any) -> None:
    with pytest.raises(ConfigError, match=rf"temporal\.{override}"):
        TemporalConfig(**{override: message})


# --- metric -------------------------------------------------------------------------------------

def test_jitter_metric() -> None:
    t = np.arange(10.0)
    line = np.stack([2.0 * t, -t], axis=1)[:, None]
    assert landmark_jitter(line) == pytest.approx(0.0)
    zigzag = line + np.array([0.5, 0.0]) * ((-1) ** t)[:, None, None]
    assert landmark_jitter(zigzag) == pytest.approx(2.0)  # |+-0.5 -+ 1 +- 0.5| = 2
    assert landmark_error(zigzag, line) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 frames"):
        landmark_jitter(line[:2])
    with pytest.raises(ValueError, match="shape"):
        landmark_error(line, line[:5])


def test_a_negative_max_shift_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"Invalid temporal\.max_shift=-0\.1: must be >= 0"):
        TemporalConfig(max_shift=-0.1)
