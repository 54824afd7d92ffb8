"""Shot-level selection: which tracks get swapped, decided once over the whole video (pure).

Per-frame selection (`selection.mode=one` = the largest face of each frame) swaps a different
person whenever two faces of similar size trade places by a pixel. Here faces are linked into
tracks over the whole video first, tracks are gated (a "face" seen on scattered frames is not a
face), and the choice is made per track: `one` swaps the most prominent track (the largest
summed box area over the shot), `map` assigns tracks to the people of a `SourceSet`.

Linking reuses `fusionray.faces.track.link_faces` (the render's own linker) for tracklets, then
joins a tracklet to one that starts at most `selection.track_max_gap` frames after it ends near
where it ended, so a face that leaves the frame, or is hidden, for a few frames keeps its track
and its swap.

The result, `ShotSelection`, holds the chosen tracks' boxes per frame: small (16 bytes per
frame per chosen track), picklable, and a function of the detections only, so every chunk of
every chunking reads the same choice (DESIGN.md invariant 3). A chunk matches its own tracked,
smoothed faces to it by box overlap (`ShotSelection.match`).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from fusionray.config import RenderConfig, SelectionConfig
from fusionray.faces.gate import GateLimits, plausible_faces
from fusionray.faces.table import table_to_faces
from fusionray.faces.track import Track, box_iou, embedding_distance, fill_gaps, link_faces
from fusionray.types import Face, FloatArray

SHOT_MODES = ("one", "map")
"""Selection modes that choose per track over the shot (and so need a detection pre-pass)."""

MATCH_IOU = 0.3
"""Smallest IoU between a chunk's (smoothed) face and the shot track's box in that frame for
the face to be that track's; smoothing moves a box by a few pixels, a neighbour is far off."""


def needs_shot_pass(selection: SelectionConfig) -> bool:
    """Whether the job must detect every chunk before rendering any (shot-level selection)."""
    return selection.mode in SHOT_MODES or selection.track_gate


@dataclass(frozen=True)
class ShotTrack:
    """One chosen track: its box in every frame from `first` to `first + len(boxes) - 1`."""

    track_id: int
    """The track's number among all tracks of the shot, in order of first appearance."""
    first: int
    """First frame index."""
    boxes: FloatArray
    """(F, 4) float32 x1, y1, x2, y2 pixels per frame; frames the face was missed (a gap the
    track bridged) hold the box interpolated between the detections around it."""
    detected: npt.NDArray[np.bool_]
    """(F,) True where the face was detected (False in bridged gaps)."""
    source_index: int = 0
    """Which source identity swaps this track (0 for `one`; the person index for `map`)."""

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        detected = np.asarray(self.detected, dtype=bool).reshape(-1)
        if boxes.shape[0] == 0 or detected.shape[0] != boxes.shape[0]:
            raise ValueError(f"ShotTrack needs one box and one flag per frame, got "
                             f"{boxes.shape[0]} boxes and {detected.shape[0]} flags")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "detected", detected)

    @property
    def last(self) -> int:
        return self.first + self.boxes.shape[0] - 1

    def box_at(self, frame_index: int, *, max_fill: int | None = None) -> FloatArray | None:
        """The track's box in `frame_index`, or None outside its frames, or (with `max_fill`)
        more than `max_fill` frames from a frame where the face was detected."""
        if not self.first <= frame_index <= self.last:
            return None
        position = frame_index - self.first
        if max_fill is not None and not self.detected[
                max(0, position - max_fill):position + max_fill + 1].any():
            return None
        return self.boxes[position]


@dataclass(frozen=True)
class ShotSelection:
    """The tracks to swap over the whole video, and what the planner saw."""

    tracks: tuple[ShotTrack, ...]
    """Chosen tracks, by `track_id`."""
    track_count: int
    """Tracks found over the shot (after joining)."""
    rejected_tracks: int
    """Tracks the track gate dropped as not faces (scattered or too few detections)."""
    max_fill: int = 0
    """A chosen track claims faces only within this many frames of one of its detections
    (`temporal.max_gap`: the render fills no longer gaps), so while the person is away no one
    passing through where they were is taken for them."""

    def match(self, faces: Sequence[Face], frame_index: int) -> list[tuple[Face, int]]:
        """Pair a frame's faces with the chosen tracks present there.

        Args:
            faces: the faces of one frame (tracked and smoothed by the chunk).
            frame_index: the frame.

        Returns:
            (face, source index) for each chosen track with a face overlapping its box by
            at least `MATCH_IOU`; a face goes to the track it overlaps most, each face and
            track at most once, in track order.
        """
        candidates: list[tuple[float, int, int]] = []
        for track_number, track in enumerate(self.tracks):
            box = track.box_at(frame_index, max_fill=self.max_fill)
            if box is None:
                continue
            for face_number, face in enumerate(faces):
                overlap = box_iou(box, face.bbox)
                if overlap >= MATCH_IOU:
                    candidates.append((-overlap, track_number, face_number))
        candidates.sort()
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        pairs: list[tuple[int, int]] = []
        for _, track_number, face_number in candidates:
            if track_number in used_tracks or face_number in used_faces:
                continue
            used_tracks.add(track_number)
            used_faces.add(face_number)
            pairs.append((track_number, face_number))
        pairs.sort()
        return [(faces[face_number], self.tracks[track_number].source_index)
                for track_number, face_number in pairs]


def merge_detections(detections: Sequence[pa.Table]) -> dict[int, list[Face]]:
    """One `{frame: faces}` from chunk tables whose read ranges overlap.

    A frame read by two chunks was decoded and detected twice with the same result; the first
    table holding it wins, so the merge does not depend on how the video was cut.
    """
    merged: dict[int, list[Face]] = {}
    for table in detections:
        for frame_index, faces in table_to_faces(table).items():
            merged.setdefault(frame_index, faces)
    return merged


def join_tracklets(
    tracklets: Sequence[Track], *, max_gap: int, max_embedding_distance: float
) -> list[list[Track]]:
    """Chain tracklets across gaps of up to `max_gap` frames: the same face coming back.

    A tracklet B may follow A when it starts 1..`max_gap` + 1 frames after A ends, in the same
    keypoint layout, with its first box's centre within one box side (the larger of the two
    faces' mean sides) of A's last box centre, sizes within a factor of 2, and, when both carry
    embeddings, embeddings within `max_embedding_distance`. Pairs are taken greedily by
    normalised centre distance (+ embedding distance), ties by tracklet order: deterministic.

    Returns:
        Chains (each a list of tracklets in time order), ordered by their first tracklet.
    """
    order = sorted(range(len(tracklets)), key=lambda n: (tracklets[n].first, n))
    firsts = [tracklets[n].first for n in order]
    candidates: list[tuple[float, int, int]] = []
    for a_number, a in enumerate(tracklets):
        a_face = a.faces[-1]
        a_side = _mean_side(a_face)
        # Tracklets starting in the frames right after this one ends (gap 0..max_gap).
        low = bisect.bisect_right(firsts, a.last)
        high = bisect.bisect_right(firsts, a.last + max_gap + 1)
        for b_number in order[low:high]:
            b = tracklets[b_number]
            b_face = b.faces[0]
            if b_face.layout != a_face.layout:
                continue
            b_side = _mean_side(b_face)
            if not 0.5 <= b_side / max(a_side, 1e-6) <= 2.0:
                continue
            distance = float(np.linalg.norm(_centre(a_face) - _centre(b_face)))
            cost = distance / max(a_side, b_side)
            if cost > 1.0:
                continue
            if a_face.embedding is not None and b_face.embedding is not None:
                identity = embedding_distance(a_face.embedding, b_face.embedding)
                if identity > max_embedding_distance:
                    continue
                cost += identity
            candidates.append((cost, a_number, b_number))
    candidates.sort()
    successor: dict[int, int] = {}
    predecessor: dict[int, int] = {}
    for _, a_number, b_number in candidates:
        if a_number in successor or b_number in predecessor:
            continue
        successor[a_number] = b_number
        predecessor[b_number] = a_number
    chains: list[list[Track]] = []
    for number in range(len(tracklets)):
        if number in predecessor:
            continue
        chain = [number]
        while chain[-1] in successor:
            chain.append(successor[chain[-1]])
        chains.append([tracklets[n] for n in chain])
    return chains


def _centre(face: Face) -> npt.NDArray[np.float64]:
    box = face.bbox.astype(np.float64)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _mean_side(face: Face) -> float:
    return (float(face.bbox[2] - face.bbox[0]) + float(face.bbox[3] - face.bbox[1])) / 2


def chain_track(chain: Sequence[Track]) -> Track:
    """One gap-free track from a chain of tracklets (gaps interpolated, marked unobserved)."""
    frames = tuple(f for t in chain for f in t.frames)
    faces = tuple(face for t in chain for face in t.faces)
    observed = tuple(o for t in chain for o in t.observed)
    return fill_gaps(Track(frames=frames, faces=faces, observed=observed))


def passes_track_gate(track: Track, selection: SelectionConfig) -> bool:
    """Whether `track` is a face by its presence: enough detections, on enough of its frames.

    `track` is gap-free (`chain_track`), so its length is its span in frames.
    """
    detections = track.detections
    return (detections >= selection.min_track_detections
            and detections / len(track.frames) >= selection.min_track_presence)


def shot_tracks(
    faces_by_frame: Mapping[int, Sequence[Face]], *, frame_count: int, config: RenderConfig
) -> list[Track]:
    """Every face track of the video: plausible detections linked, joined across gaps."""
    selection, temporal = config.selection, config.temporal
    limits = target_limits(selection)
    gated = {frame: plausible_faces(faces, limits) for frame, faces in faces_by_frame.items()}
    tracklets = link_faces(
        gated, range(frame_count), iou_threshold=temporal.iou_threshold,
        max_gap=temporal.max_gap, max_embedding_distance=temporal.max_embedding_distance,
        max_shift=temporal.max_shift)
    chains = join_tracklets(tracklets, max_gap=selection.track_max_gap,
                            max_embedding_distance=temporal.max_embedding_distance)
    return [chain_track(chain) for chain in chains]


def target_limits(selection: SelectionConfig) -> GateLimits:
    """The per-detection plausibility gate for target faces, from the config."""
    return GateLimits(max_landmark_error=selection.max_landmark_error)


def track_prominence(track: Track) -> float:
    """Summed box area over the track's detected frames (square pixels × frames)."""
    return sum(face.area for face, seen in zip(track.faces, track.observed, strict=True) if seen)


def to_shot_track(track: Track, track_id: int, source_index: int) -> ShotTrack:
    return ShotTrack(
        track_id=track_id, first=track.first,
        boxes=np.stack([face.bbox for face in track.faces]),
        detected=np.asarray(track.observed, dtype=bool), source_index=source_index)


def plan_shot_selection(
    detections: Sequence[pa.Table],
    *,
    frame_count: int,
    config: RenderConfig,
    source: object = None,
) -> ShotSelection:
    """Choose the tracks to swap over the whole video.

    Args:
        detections: every chunk's detections (`fusionray.faces.table`), read ranges may
            overlap; order does not matter.
        frame_count: frames in the video.
        config: `selection` (mode, gates, `track_max_gap`) and `temporal` (linking).
        source: the job's `SourceIdentity`, or for `map` its `fusionray.faces.people.SourceSet`
            (whose people say which tracks are theirs).

    Returns:
        `one`: the most prominent gated track; `many`/`reference` (with the track gate): every
        gated track (per-frame selection then picks among them); `map`: each track matched to
        a person, with that person's source index.
    """
    selection = config.selection
    tracks = shot_tracks(merge_detections(detections), frame_count=frame_count, config=config)
    kept = [(track_id, track) for track_id, track in enumerate(tracks)
            if passes_track_gate(track, selection)]
    rejected = len(tracks) - len(kept)
    chosen: list[ShotTrack] = []
    if selection.mode == "one":
        if kept:
            best = max(kept, key=lambda item: (track_prominence(item[1]), -item[0]))
            chosen = [to_shot_track(best[1], best[0], 0)]
    elif selection.mode == "map":
        from fusionray.faces.people import SourceSet, assign_people

        if not isinstance(source, SourceSet):
            raise TypeError(f"selection.mode=map needs a SourceSet, got {type(source).__name__}")
        owners = assign_people([track for _, track in kept], source,
                               max_distance=selection.reference_distance)
        chosen = [to_shot_track(track, track_id, owner)
                  for (track_id, track), owner in zip(kept, owners, strict=True)
                  if owner is not None]
    else:
        chosen = [to_shot_track(track, track_id, 0) for track_id, track in kept]
    return ShotSelection(tracks=tuple(chosen), track_count=len(tracks), rejected_tracks=rejected,
                         max_fill=config.temporal.max_gap)
