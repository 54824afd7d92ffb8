"""Split a video's frames into chunks: owned ranges that tile the video, plus read margins.

With the video's keyframes given, chunk edges are placed so that every chunk's read range starts
exactly on a keyframe (owned start = keyframe + overlap): a chunk then decodes its read range and
nothing else, `decoded / written = 1 + 2 * overlap / owned`. Without keyframes a decode starts at
the keyframe at or before the read range, and with long GOPs that lead-in dominates (a 250-frame
GOP with 48-frame chunks decoded about 7 frames per frame written when each chunk was also
decoded twice).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from fusionray.config import ChunkConfig
from fusionray.errors import ConfigError
from fusionray.types import Chunk, VideoInfo


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def keyframe_edges(keyframes: Sequence[int], *, frame_count: int, overlap: int) -> list[int]:
    """Owned-range starts whose read range begins on a keyframe: `k + overlap`, ascending.

    Only edges strictly inside `(0, frame_count)` are returned, and none from keyframe 0: frame 0
    always starts a chunk, and that chunk already reads from keyframe 0.

    Raises:
        ConfigError: a keyframe index is negative, past the video, or the list is not ascending.
    """
    previous = -1
    for keyframe in keyframes:
        if isinstance(keyframe, bool) or not isinstance(keyframe, int) or not (
                0 <= keyframe < frame_count):
            raise ConfigError(f"keyframes must be frame indices in [0, {frame_count}), got "
                              f"{keyframe!r}")
        if keyframe <= previous:
            raise ConfigError(f"keyframes must be strictly ascending, got {previous} then "
                              f"{keyframe}")
        previous = keyframe
    return [k + overlap for k in keyframes if k > 0 and k + overlap < frame_count]


def _owned_starts(frame_count: int, chunk_frames: int, edges: Sequence[int]) -> list[int]:
    """An even split on allowed edges: `round(frame_count / chunk_frames)` chunks, boundary i
    the edge nearest `i * frame_count / count` (ties: the later one).

    Each boundary is at least `chunk_frames // 2` after the one before and before the video's
    end, so where the GOP is longer than `chunk_frames` a chunk spans at least a GOP, and no
    chunk (the last included) shrinks to a sliver. Aiming every boundary at its share of the
    whole video, rather than each chunk at `chunk_frames` from the last edge, keeps rounding
    to the GOP from piling up at the end: a minute at 25 fps with 94-frame chunks used to end
    on 75 + 21 frames, so one of two actors sat idle for most of a chunk.
    """
    count = max(1, int(frame_count / chunk_frames + 0.5))
    least = max(1, chunk_frames // 2)
    # Edges that leave the last chunk at least `least` frames.
    usable = edges[:bisect.bisect_right(edges, frame_count - least)]
    starts = [0]
    for boundary in range(1, count):
        target = boundary * frame_count / count
        first = bisect.bisect_left(usable, starts[-1] + least)
        if first == len(usable):
            break
        at = bisect.bisect_left(usable, target, lo=first)
        candidates = [usable[i] for i in (at - 1, at) if first <= i < len(usable)]
        starts.append(min(candidates, key=lambda edge: (abs(edge - target), -edge)))
    return starts


def plan_chunks(
    frame_count: int, *, chunk_frames: int, overlap: int,
    keyframes: Sequence[int] | None = None,
) -> list[Chunk]:
    """Tile `[0, frame_count)` with chunks of about `chunk_frames` owned frames.

    Each chunk reads `overlap` extra frames on each side, clipped to the video, so temporal
    filters with support up to `overlap` frames see the same neighbours whatever the chunking.

    Without `keyframes`, chunk i owns `[i * chunk_frames, min((i + 1) * chunk_frames,
    frame_count))`. With `keyframes`, owned ranges start only at frame 0 or at
    `keyframe + overlap`, so each read range starts on a keyframe and a decode of it wastes no
    lead-in; the video is split evenly into about `frame_count / chunk_frames` chunks, each
    edge the allowed one nearest its even share and at least `chunk_frames // 2` from the
    previous edge and the end (`_owned_starts`), so where the GOP is longer than
    `chunk_frames` a chunk spans at least a GOP. With every frame a keyframe (intra codecs)
    the chunks are the even split itself.

    Args:
        frame_count: Frames in the video (or the rendered range), >= 1.
        chunk_frames: Owned frames per chunk, >= 1 (the target; see above).
        overlap: Read margin in frames on each side, >= 0.
        keyframes: Presentation indices of the video's keyframes, ascending (`VideoInfo.
            keyframe_indices`), or None to ignore them.

    Returns:
        Chunks in order; their owned ranges are disjoint and cover every frame exactly once.

    Raises:
        ConfigError: An argument is out of range (also a `ValueError`).
    """
    _check_count("frame_count", frame_count, 1)
    _check_count("chunk_frames", chunk_frames, 1)
    _check_count("overlap", overlap, 0)
    if keyframes is None:
        starts = list(range(0, frame_count, chunk_frames))
    else:
        edges = keyframe_edges(keyframes, frame_count=frame_count, overlap=overlap)
        starts = _owned_starts(frame_count, chunk_frames, edges)
    stops = [*starts[1:], frame_count]
    return [
        Chunk(index=index, start=start, stop=stop, read_start=max(0, start - overlap),
              read_stop=min(frame_count, stop + overlap))
        for index, (start, stop) in enumerate(zip(starts, stops, strict=True))
    ]


def decoded_frames(chunks: Sequence[Chunk], keyframes: Sequence[int]) -> int:
    """Frames a one-decode-per-chunk render decodes: each read range from the keyframe at or
    before its start (the GOP lead-in) to its end. Pure; `describe` and the tests use it."""
    total = 0
    for chunk in chunks:
        at = bisect.bisect_right(keyframes, chunk.read_start) - 1
        entry = keyframes[at] if at >= 0 else 0
        total += chunk.read_stop - entry
    return total


AUTO_CHUNKS = 16
"""Chunks `chunk.frames: 0` (auto) aims for: enough to spread a shot over a node's actors and
balance them, few enough that each chunk's fixed costs stay small."""
AUTO_CHUNK_FRAMES = (48, 240)
"""Shortest and longest auto chunk, frames (2 and 10 s at 24 fps)."""


def auto_chunk_frames(frame_count: int) -> int:
    """Owned frames per chunk for `chunk.frames: 0`: `frame_count / AUTO_CHUNKS`, rounded up,
    within `AUTO_CHUNK_FRAMES`.

    Every chunk pays for its margins (2 * overlap frames decoded and detected again, `overlap`
    look-ahead frames encoded and dropped), an encoder start with an IDR frame, and a remote
    call: on the 2-core machine 48-frame chunks cost 2.0 ms of CPU a frame more than 192-frame
    ones, 96-frame chunks 0.6 ms (benchmarks/RESULTS.md). Longer chunks are coarser units of
    retry and balance, so a short shot keeps 48-frame chunks and a long one stops at 240 (a
    farm rendering one short shot on many GPUs sets `chunk.frames` itself). Depends on the
    video alone, never on the cluster: a rerun on another cluster plans the same chunks and
    resumes.
    """
    _check_count("frame_count", frame_count, 1)
    shortest, longest = AUTO_CHUNK_FRAMES
    return min(longest, max(shortest, -(-frame_count // AUTO_CHUNKS)))


def chunk_frames_for(info: VideoInfo, settings: ChunkConfig) -> int:
    """`settings.frames`, or the auto length for `info` where it is 0."""
    return settings.frames or auto_chunk_frames(info.frame_count)


def plan_video_chunks(info: VideoInfo, settings: ChunkConfig) -> list[Chunk]:
    """The chunks a render of `info` uses with the `chunk.*` settings: on its keyframes
    (`keyframe_aligned`) or exactly `chunk_frames_for` each."""
    return plan_chunks(info.frame_count, chunk_frames=chunk_frames_for(info, settings),
                       overlap=settings.overlap,
                       keyframes=info.keyframe_indices if settings.keyframe_aligned else None)
