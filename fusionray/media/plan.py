"""Split a video's frames into chunks: owned ranges that tile the video, plus read margins."""

from __future__ import annotations

from fusionray.errors import ConfigError
from fusionray.types import Chunk


def plan_chunks(frame_count: int, *, chunk_frames: int, overlap: int) -> list[Chunk]:
    """Tile `[0, frame_count)` with chunks of `chunk_frames` owned frames.

    Chunk i owns `[i * chunk_frames, min((i + 1) * chunk_frames, frame_count))` and reads
    `overlap` extra frames on each side, clipped to the video, so temporal filters with support
    up to `overlap` frames see the same neighbours whatever the chunking.

    Args:
        frame_count: Frames in the video (or the rendered range), >= 1.
        chunk_frames: Owned frames per chunk, >= 1; the last chunk may own fewer.
        overlap: Read margin in frames on each side, >= 0.

    Returns:
        Chunks in order; their owned ranges are disjoint and cover every frame exactly once.

    Raises:
        ConfigError: An argument is out of range (also a `ValueError`).
    """
    if isinstance(frame_count, bool) or not isinstance(frame_count, int) or frame_count < 1:
        raise ConfigError(f"frame_count must be an integer >= 1, got {frame_count!r}")
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ConfigError(f"chunk_frames must be an integer >= 1, got {chunk_frames!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ConfigError(f"overlap must be an integer >= 0, got {overlap!r}")
    chunks = []
    for index, start in enumerate(range(0, frame_count, chunk_frames)):
        stop = min(start + chunk_frames, frame_count)
        chunks.append(
            Chunk(
                index=index,
                start=start,
                stop=stop,
                read_start=max(0, start - overlap),
                read_stop=min(frame_count, stop + overlap),
            )
        )
    return chunks
