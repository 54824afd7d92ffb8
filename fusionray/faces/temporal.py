"""Temporal consistency for one chunk: track, fill, drop and smooth faces (pure).

Each frame's faces are computed from the detections within `TemporalConfig.reach` frames of
it, and from nothing else: the frames near it are tracked on their own, and the frame's faces
are read off those tracks, smoothed. A chunk reads `chunk.overlap >= reach` frames beyond the
ones it owns, so every chunking of a video gives every frame the same neighbourhood and
therefore the same faces (DESIGN.md invariant 3). Re-tracking a small window per frame costs
microseconds; detections are a few numbers per face.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fusionray.config import TemporalConfig
from fusionray.faces.smooth import smooth_track_face
from fusionray.faces.track import build_tracks
from fusionray.types import Face


def neighbourhood(frame_index: int, reach: int, frame_count: int) -> range:
    """The frames within `reach` of `frame_index`, clipped to the video `[0, frame_count)`."""
    return range(max(0, frame_index - reach), min(frame_count, frame_index + reach + 1))


def faces_near(
    faces_by_frame: Mapping[int, Sequence[Face]], frame_index: int, frames: range,
    settings: TemporalConfig,
) -> list[Face]:
    """The tracked, smoothed faces of `frame_index`, from the detections of `frames` only.

    Args:
        faces_by_frame: detected faces per frame index (frames outside `frames` are ignored).
        frame_index: the frame whose faces are wanted, inside `frames`.
        frames: the neighbourhood the result may depend on.
        settings: tracking and smoothing settings.

    Returns:
        One face per track present in `frame_index` (detected, or interpolated across a short
        gap), in track order; one-frame detections are gone.
    """
    tracks = build_tracks(
        faces_by_frame, frames,
        iou_threshold=settings.iou_threshold,
        max_gap=settings.max_gap,
        max_embedding_distance=settings.max_embedding_distance,
        min_track_frames=settings.min_track_frames,
        max_shift=settings.max_shift,
    )
    return [
        smooth_track_face(
            track, frame_index, radius=settings.radius, strength=settings.strength,
            smooth_scores=settings.smooth_scores, smooth_embeddings=settings.smooth_embeddings,
        )
        for track in tracks
        if track.first <= frame_index <= track.last
    ]


def stabilize_faces(
    faces_by_frame: Mapping[int, Sequence[Face]],
    *,
    owned: range,
    read: range,
    frame_count: int,
    settings: TemporalConfig,
) -> dict[int, list[Face]]:
    """The faces to swap in each owned frame of a chunk.

    Args:
        faces_by_frame: detections of the chunk's read range.
        owned: the chunk's owned frames.
        read: the chunk's read range (must hold every owned frame's neighbourhood).
        frame_count: frames in the video.
        settings: see `TemporalConfig`; disabled returns the detections as they are.

    Returns:
        `{frame index: faces}` for owned frames with at least one face.

    Raises:
        ValueError: the read range misses part of a frame's neighbourhood (a chunk overlap
            smaller than `settings.reach`, which `RenderConfig` rejects).
    """
    if not settings.enabled:
        return {f: list(faces_by_frame[f]) for f in owned if faces_by_frame.get(f)}
    result: dict[int, list[Face]] = {}
    for frame_index in owned:
        frames = neighbourhood(frame_index, settings.reach, frame_count)
        if frames.start < read.start or frames.stop > read.stop:
            raise ValueError(
                f"Frame {frame_index} needs frames {frames.start}..{frames.stop - 1} for "
                f"temporal.reach={settings.reach}, but its chunk read only "
                f"{read.start}..{read.stop - 1}: chunk.overlap must be >= {settings.reach}"
            )
        faces = faces_near(faces_by_frame, frame_index, frames, settings)
        if faces:
            result[frame_index] = faces
    return result
