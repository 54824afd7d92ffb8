"""Landmark trajectory smoothing with a bounded window (pure).

The filter is a constant-velocity Kalman filter followed by a Rauch-Tung-Striebel smoother,
run over the samples within `radius` frames of the frame being estimated and evaluated at that
frame. It is the maximum-likelihood estimate of a trajectory whose acceleration is white noise
(the same estimate as a cubic smoothing spline), so:

- a path of constant velocity is reproduced exactly (no lag on steady pans),
- the estimate at a frame depends only on the samples within `radius` of it (its support), which
  lets a chunked render give the same answer as a single pass when `radius <= chunk.overlap`,
- missing samples (weight 0) are simply not measured; the smoother bridges them.

`strength` is the ratio of the measurement noise variance to the process (acceleration) noise
variance, in frames^4: 0 returns the samples unchanged, larger values trust the motion model
more (steadier, but lagging more on accelerating faces). The estimate depends on that ratio
only, so it works the same for faces of any size in pixels.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import numpy.typing as npt

from fusionray.faces.pose import estimate_head_pose
from fusionray.faces.track import Track, face_embedding
from fusionray.types import Face

Float64Array = npt.NDArray[np.float64]

DIFFUSE_VARIANCE = 1e8
"""Prior variance of the first position and velocity: large enough to be uninformative
(a constant-velocity path comes back exact to about 1e-6 px), small enough for float64."""

INTERPOLATED_WEIGHT = 0.25
"""Measurement weight (inverse variance, detected = 1) of a frame filled across a gap."""


def smooth_at(
    values: npt.ArrayLike,
    centre: int,
    *,
    strength: float,
    weights: npt.ArrayLike | None = None,
) -> Float64Array:
    """Smoothed value at sample `centre` of a short trajectory.

    Args:
        values: (n, D) samples, one row per consecutive frame (D coordinates filtered
            independently with the same model).
        centre: index of the sample to estimate, in [0, n).
        strength: measurement-to-process noise ratio, >= 0 (0 = return `values[centre]`).
        weights: (n,) measurement weights (inverse variance), >= 0; 0 = no measurement;
            default all 1. At least one must be positive.

    Returns:
        (D,) float64 smoothed value.
    """
    samples = np.asarray(values, dtype=np.float64)
    samples = samples.reshape(samples.shape[0], -1)
    count = samples.shape[0]
    if not 0 <= centre < count:
        raise ValueError(f"centre {centre} outside the {count} samples")
    measured = np.ones(count) if weights is None else np.asarray(weights, dtype=np.float64)
    if measured.shape != (count,) or np.any(measured < 0) or not np.any(measured > 0):
        raise ValueError(f"weights must be {count} values >= 0, one > 0; got {measured}")
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    if strength == 0.0:
        return samples[centre].copy()

    # Covariances are the same for every coordinate, so they are scalars (p11, p12, p22);
    # the state means are (D,) arrays. Written out element-wise on purpose: no BLAS, whose
    # summation order may depend on sizes and alignment, so the result is bit-stable.
    q = 1.0 / strength
    q11, q12, q22 = q / 3.0, q / 2.0, q
    position = samples[int(np.argmax(measured > 0))].copy()
    velocity = np.zeros_like(position)
    p11, p12, p22 = DIFFUSE_VARIANCE, 0.0, DIFFUSE_VARIANCE
    predicted: list[tuple[Float64Array, Float64Array, float, float, float]] = []
    filtered: list[tuple[Float64Array, Float64Array, float, float, float]] = []
    for index in range(count):
        if index:
            position = position + velocity
            p11, p12, p22 = p11 + 2.0 * p12 + p22 + q11, p12 + p22 + q12, p22 + q22
        predicted.append((position, velocity, p11, p12, p22))
        weight = float(measured[index])
        if weight > 0.0:
            innovation_variance = p11 + 1.0 / weight
            gain_position, gain_velocity = p11 / innovation_variance, p12 / innovation_variance
            innovation = samples[index] - position
            position = position + gain_position * innovation
            velocity = velocity + gain_velocity * innovation
            p11, p12, p22 = (p11 - gain_position * p11, p12 - gain_position * p12,
                             p22 - gain_velocity * p12)
        filtered.append((position, velocity, p11, p12, p22))

    smoothed_position, smoothed_velocity = filtered[-1][0], filtered[-1][1]
    for index in range(count - 2, centre - 1, -1):
        f_position, f_velocity, f11, f12, f22 = filtered[index]
        p_position, p_velocity, a11, a12, a22 = predicted[index + 1]
        # Smoother gain C = P_filtered F^T P_predicted^-1 with F = [[1, 1], [0, 1]].
        det = a11 * a22 - a12 * a12
        i11, i12, i22 = a22 / det, -a12 / det, a11 / det
        b11, b12, b21, b22 = f11 + f12, f12, f12 + f22, f22
        c11, c12 = b11 * i11 + b12 * i12, b11 * i12 + b12 * i22
        c21, c22 = b21 * i11 + b22 * i12, b21 * i12 + b22 * i22
        d_position = smoothed_position - p_position
        d_velocity = smoothed_velocity - p_velocity
        smoothed_position, smoothed_velocity = (
            f_position + c11 * d_position + c12 * d_velocity,
            f_velocity + c21 * d_position + c22 * d_velocity,
        )
    return np.asarray(smoothed_position, dtype=np.float64)


def smooth_trajectory(
    values: npt.ArrayLike,
    *,
    radius: int,
    strength: float,
    weights: npt.ArrayLike | None = None,
) -> Float64Array:
    """Smooth every sample of a trajectory from the samples within `radius` of it.

    Args:
        values: (n, D) samples of consecutive frames.
        radius: half-width of each sample's window, >= 0 (the filter's support).
        strength: see `smooth_at`.
        weights: (n,) measurement weights, see `smooth_at`; every window needs a positive one.

    Returns:
        (n, D) float64: row t depends only on rows max(0, t - radius) .. t + radius.
    """
    samples = np.asarray(values, dtype=np.float64)
    samples = samples.reshape(samples.shape[0], -1)
    measured = np.ones(samples.shape[0]) if weights is None else np.asarray(weights, np.float64)
    result = np.empty_like(samples)
    for index in range(samples.shape[0]):
        low, high = max(0, index - radius), min(samples.shape[0], index + radius + 1)
        result[index] = smooth_at(samples[low:high], index - low, strength=strength,
                                  weights=measured[low:high])
    return result


def smooth_track_face(
    track: Track,
    frame_index: int,
    *,
    radius: int,
    strength: float,
    smooth_scores: bool = True,
    smooth_embeddings: bool = True,
) -> Face:
    """The track's face in `frame_index`, with box and keypoints smoothed over `radius`.

    Uses only the track's faces within `radius` frames of `frame_index`. Frames filled across a
    gap count as weaker measurements (`INTERPOLATED_WEIGHT`).

    Args:
        track: a gap-free track (see `fusionray.faces.track.fill_gaps`) covering `frame_index`.
        frame_index: the frame to estimate.
        radius: frames on each side the smoother sees.
        strength: see `smooth_at`.
        smooth_scores: also smooth the detection confidence (clipped to [0, 1]).
        smooth_embeddings: replace the embedding (when the face has one) by the normalised
            mean of the detected faces' embeddings within the radius.

    Returns:
        A copy of the track's face in `frame_index` with smoothed fields (its pose, when it
        has one, re-estimated from the smoothed keypoints).
    """
    face = track.face_at(frame_index)
    if face is None:
        raise ValueError(f"Track {track.first}..{track.last} has no face in frame {frame_index}")
    positions = [p for p, f in enumerate(track.frames) if abs(f - frame_index) <= radius]
    if any(track.frames[b] - track.frames[a] != 1 for a, b in itertools.pairwise(positions)):
        raise ValueError("smooth_track_face needs a gap-free track (use fill_gaps first)")
    window = [track.faces[p] for p in positions]
    weights = [1.0 if track.observed[p] else INTERPOLATED_WEIGHT for p in positions]
    centre = positions.index(track.frames.index(frame_index))
    keypoint_count = face.keypoints.size
    rows = np.stack([
        np.concatenate([f.bbox.astype(np.float64), f.keypoints.astype(np.float64).reshape(-1),
                        [f.score]])
        for f in window
    ])
    smoothed = smooth_at(rows, centre, strength=strength, weights=weights)
    keypoints = smoothed[4:4 + keypoint_count].astype(np.float32).reshape(-1, 2)
    changes: dict[str, object] = {"bbox": smoothed[:4].astype(np.float32), "keypoints": keypoints}
    if smooth_scores:
        changes["score"] = float(np.clip(smoothed[-1], 0.0, 1.0))
    if face.pose is not None:
        # Re-estimated from the smoothed keypoints, so the pose the selection's yaw and pitch
        # limits see (and the face-tracks export writes) is as steady as the landmarks.
        changes["pose"] = estimate_head_pose(keypoints, face.layout)
    if smooth_embeddings and face_embedding(face) is not None:
        embeddings = [e for e in map(face_embedding, window) if e is not None]
        mean = np.stack(embeddings).astype(np.float64).sum(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm > 0:
            changes["embedding"] = (mean / norm).astype(np.float32)
    return dataclasses.replace(face, **changes)  # type: ignore[arg-type]
