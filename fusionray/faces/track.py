"""Link faces across frames into tracks, fill short gaps, drop one-frame detections (pure).

A track is one face followed through consecutive frames. Linking is greedy on a cost that
combines the box overlap with the track's predicted box (constant velocity) and, when both
faces carry an embedding, the cosine distance between them; a pair must pass both thresholds.
A face too fast for the overlap test (its box moved more than about half its width since the
prediction: a whip pan, or a track's second frame, before it has a velocity) still links when
its centre is within `max_shift` box sizes of the prediction at a similar size; such links
rank after every overlapping one.
Greedy assignment in order of cost, ties broken by track then face order, keeps the result a
deterministic function of its input, which the chunk-invariance of the render relies on.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fusionray.types import Face, FloatArray


@dataclass(frozen=True)
class Track:
    """One face through a run of frames."""

    frames: tuple[int, ...]
    """Frame indices, ascending; consecutive once gaps are filled."""
    faces: tuple[Face, ...]
    """The face in each of `frames`."""
    observed: tuple[bool, ...]
    """Per frame: detected (True) or interpolated across a gap (False)."""

    def __post_init__(self) -> None:
        if not (len(self.frames) == len(self.faces) == len(self.observed) > 0):
            raise ValueError(
                f"Track needs equal, non-zero numbers of frames, faces and observed flags, got "
                f"{len(self.frames)}, {len(self.faces)}, {len(self.observed)}"
            )
        if any(b <= a for a, b in itertools.pairwise(self.frames)):
            raise ValueError(f"Track frames must be strictly ascending, got {self.frames}")

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    @property
    def detections(self) -> int:
        """Frames where the face was actually detected."""
        return sum(self.observed)

    def face_at(self, frame_index: int) -> Face | None:
        """The face in `frame_index`, or None when the track has none there."""
        if not self.first <= frame_index <= self.last:
            return None
        position = int(np.searchsorted(self.frames, frame_index))
        return self.faces[position] if self.frames[position] == frame_index else None


def box_iou(a: FloatArray, b: FloatArray) -> float:
    """Intersection over union of two (4,) x1, y1, x2, y2 boxes (0 when either is empty)."""
    width = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    height = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    if width <= 0.0 or height <= 0.0:
        return 0.0
    inter = width * height
    union = (float(a[2]) - float(a[0])) * (float(a[3]) - float(a[1])) \
        + (float(b[2]) - float(b[0])) * (float(b[3]) - float(b[1])) - inter
    return inter / union if union > 0.0 else 0.0


MAX_SIZE_CHANGE = 1.5
"""A face linked by its centre shift (no overlap) may be at most this much larger or smaller
than the track's predicted box (ratio of the square roots of the box areas)."""


def box_size(box: FloatArray) -> float:
    """Square root of a (4,) x1, y1, x2, y2 box's area, pixels (0 when empty)."""
    width, height = float(box[2]) - float(box[0]), float(box[3]) - float(box[1])
    return float(np.sqrt(width * height)) if width > 0.0 and height > 0.0 else 0.0


def box_shift(predicted: FloatArray, box: FloatArray) -> float:
    """Distance between the two boxes' centres in sizes of `predicted` (`box_size`); inf when
    `predicted` is empty or `box` is not within `MAX_SIZE_CHANGE` of its size."""
    size, other = box_size(predicted), box_size(box)
    if size == 0.0 or not size / MAX_SIZE_CHANGE <= other <= size * MAX_SIZE_CHANGE:
        return float("inf")
    dx = (float(box[0]) + float(box[2]) - float(predicted[0]) - float(predicted[2])) / 2.0
    dy = (float(box[1]) + float(box[3]) - float(predicted[1]) - float(predicted[3])) / 2.0
    return float(np.hypot(dx, dy)) / size


def face_embedding(face: Face) -> FloatArray | None:
    """The face's embedding, or None when the detector ran without a recognizer.

    Read with `getattr` so tracking works whether or not `Face` has an `embedding` field.
    """
    embedding = getattr(face, "embedding", None)
    return None if embedding is None else np.asarray(embedding, dtype=np.float32).reshape(-1)


def embedding_distance(a: FloatArray, b: FloatArray) -> float:
    """Cosine distance 1 - cos(a, b), in [0, 2] (0 = same direction)."""
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norms == 0.0:
        return 1.0
    return 1.0 - float(np.dot(a.astype(np.float64), b.astype(np.float64))) / norms


def predict_box(frames: Sequence[int], faces: Sequence[Face], frame_index: int) -> FloatArray:
    """The track's box extrapolated to `frame_index` at its last observed velocity."""
    last = faces[-1].bbox.astype(np.float64)
    if len(frames) < 2:
        return last.astype(np.float32)
    previous = faces[-2].bbox.astype(np.float64)
    velocity = (last - previous) / (frames[-1] - frames[-2])
    return (last + velocity * (frame_index - frames[-1])).astype(np.float32)


def link_faces(
    faces_by_frame: Mapping[int, Sequence[Face]],
    frames: Iterable[int],
    *,
    iou_threshold: float = 0.3,
    max_gap: int = 2,
    max_embedding_distance: float = 0.6,
    max_shift: float = 0.75,
) -> list[Track]:
    """Link the detections of `frames` into tracks of detected faces (gaps not yet filled).

    Args:
        faces_by_frame: faces per frame index; missing frames have no face.
        frames: the frame indices to consider, ascending.
        iou_threshold: minimum IoU between a face's box and the track's predicted box.
        max_gap: a track stays open for this many frames without a detection.
        max_shift: a face that fails `iou_threshold` still links when its box centre is
            within this many box sizes of the predicted box's (`box_shift`); 0: overlap only.
        max_embedding_distance: when both faces carry embeddings, their largest cosine
            distance for a link.

    Returns:
        Tracks ordered by first frame, then by the face's position in that frame.
    """
    # Each growing track: (creation number, frames, faces); creation order is the output order.
    open_tracks: list[tuple[int, list[int], list[Face]]] = []
    closed: list[tuple[int, list[int], list[Face]]] = []
    created = 0
    for frame_index in frames:
        still_open: list[tuple[int, list[int], list[Face]]] = []
        for track in open_tracks:
            (still_open if frame_index - track[1][-1] - 1 <= max_gap else closed).append(track)
        open_tracks = still_open
        faces = list(faces_by_frame.get(frame_index, ()))
        candidates: list[tuple[float, int, int]] = []
        for track_number, (_, track_frames, track_faces) in enumerate(open_tracks):
            predicted = predict_box(track_frames, track_faces, frame_index)
            track_embedding = face_embedding(track_faces[-1])
            for face_number, face in enumerate(faces):
                if face.layout != track_faces[-1].layout:
                    continue
                overlap = box_iou(predicted, face.bbox)
                if overlap >= iou_threshold:
                    cost = 1.0 - overlap
                else:
                    shift = box_shift(predicted, face.bbox)
                    if shift > max_shift:
                        continue
                    cost = 1.0 + shift  # after every overlapping pair
                embedding = face_embedding(face)
                if track_embedding is not None and embedding is not None:
                    distance = embedding_distance(track_embedding, embedding)
                    if distance > max_embedding_distance:
                        continue
                    cost += distance
                candidates.append((cost, track_number, face_number))
        candidates.sort()
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        for _, track_number, face_number in candidates:
            if track_number in used_tracks or face_number in used_faces:
                continue
            used_tracks.add(track_number)
            used_faces.add(face_number)
            open_tracks[track_number][1].append(frame_index)
            open_tracks[track_number][2].append(faces[face_number])
        for face_number, face in enumerate(faces):
            if face_number not in used_faces:
                open_tracks.append((created, [frame_index], [face]))
                created += 1
    return [
        Track(frames=tuple(track_frames), faces=tuple(track_faces),
              observed=(True,) * len(track_frames))
        for _, track_frames, track_faces in sorted(closed + open_tracks, key=lambda t: t[0])
    ]


def interpolate_face(before: Face, after: Face, fraction: float) -> Face:
    """The face a `fraction` (0..1) of the way from `before` to `after`, linearly.

    Box, keypoints and score are interpolated; other fields (layout, embedding, ...) come
    from `before`.
    """
    def mix(a: np.ndarray, b: np.ndarray) -> FloatArray:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        return (a64 + (b64 - a64) * fraction).astype(np.float32)

    return dataclasses.replace(
        before,
        bbox=mix(before.bbox, after.bbox),
        keypoints=mix(before.keypoints, after.keypoints),
        score=before.score + (after.score - before.score) * fraction,
    )


def fill_gaps(track: Track) -> Track:
    """Interpolate the track's face in every frame between its detections.

    The gaps are those `link_faces` left (each at most its `max_gap` long); the filled frames
    are marked unobserved so a smoother can treat them as missing measurements.
    """
    frames: list[int] = []
    faces: list[Face] = []
    observed: list[bool] = []
    for position, (frame_index, face) in enumerate(zip(track.frames, track.faces, strict=True)):
        if position:
            previous_index, previous = track.frames[position - 1], track.faces[position - 1]
            span = frame_index - previous_index
            for missing in range(previous_index + 1, frame_index):
                frames.append(missing)
                faces.append(interpolate_face(previous, face, (missing - previous_index) / span))
                observed.append(False)
        frames.append(frame_index)
        faces.append(face)
        observed.append(track.observed[position])
    return Track(frames=tuple(frames), faces=tuple(faces), observed=tuple(observed))


def drop_short_tracks(tracks: Iterable[Track], min_detections: int) -> list[Track]:
    """Tracks with at least `min_detections` detected frames (2 drops one-frame flukes)."""
    return [track for track in tracks if track.detections >= min_detections]


def build_tracks(
    faces_by_frame: Mapping[int, Sequence[Face]],
    frames: Sequence[int],
    *,
    iou_threshold: float = 0.3,
    max_gap: int = 2,
    max_embedding_distance: float = 0.6,
    min_track_frames: int = 2,
    max_shift: float = 0.75,
) -> list[Track]:
    """Link, drop short tracks, then fill gaps: gap-free tracks over `frames`.

    A track needs `min_track_frames` detections, or as many as `frames` holds when that is
    fewer (a one-frame video keeps its faces).
    """
    tracks = link_faces(
        faces_by_frame, frames, iou_threshold=iou_threshold, max_gap=max_gap,
        max_embedding_distance=max_embedding_distance, max_shift=max_shift,
    )
    needed = min(min_track_frames, len(frames))
    return [fill_gaps(track) for track in drop_short_tracks(tracks, needed)]
