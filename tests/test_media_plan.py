"""Chunk planning: owned ranges tile the video, read ranges add clipped margins."""

from __future__ import annotations

import pytest

from fusionray.errors import ConfigError
from fusionray.media.plan import plan_chunks


@pytest.mark.parametrize(
    ("frame_count", "chunk_frames", "overlap", "expected"),
    [
        # (start, stop, read_start, read_stop) per chunk
        (10, 10, 0, [(0, 10, 0, 10)]),
        (10, 100, 3, [(0, 10, 0, 10)]),
        (10, 4, 0, [(0, 4, 0, 4), (4, 8, 4, 8), (8, 10, 8, 10)]),
        (10, 4, 2, [(0, 4, 0, 6), (4, 8, 2, 10), (8, 10, 6, 10)]),
        (10, 5, 7, [(0, 5, 0, 10), (5, 10, 0, 10)]),
        (3, 1, 1, [(0, 1, 0, 2), (1, 2, 0, 3), (2, 3, 1, 3)]),
        (1, 1, 5, [(0, 1, 0, 1)]),
    ],
)
def test_plan_chunks_table(
    frame_count: int, chunk_frames: int, overlap: int, expected: list[tuple[int, ...]]
) -> None:
    chunks = plan_chunks(frame_count, chunk_frames=chunk_frames, overlap=overlap)
    assert [(c.start, c.stop, c.read_start, c.read_stop) for c in chunks] == expected
    assert [c.index for c in chunks] == list(range(len(expected)))


@pytest.mark.parametrize("frame_count", [1, 7, 100, 101])
@pytest.mark.parametrize("chunk_frames", [1, 3, 32])
def test_owned_ranges_cover_every_frame_once(frame_count: int, chunk_frames: int) -> None:
    chunks = plan_chunks(frame_count, chunk_frames=chunk_frames, overlap=2)
    owned = [i for c in chunks for i in range(c.start, c.stop)]
    assert owned == list(range(frame_count))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_count": 0, "chunk_frames": 4, "overlap": 0}, "frame_count must be .* got 0"),
        ({"frame_count": 10, "chunk_frames": 0, "overlap": 0}, "chunk_frames must be .* got 0"),
        ({"frame_count": 10, "chunk_frames": 4, "overlap": -1}, "overlap must be .* got -1"),
        ({"frame_count": 10, "chunk_frames": 2.5, "overlap": 0}, "chunk_frames .* got 2.5"),
        ({"frame_count": 10, "chunk_frames": True, "overlap": 0}, "chunk_frames .* got True"),
    ],
)
def test_plan_chunks_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    frame_count = kwargs.pop("frame_count")
    with pytest.raises(ConfigError, match=message):
        plan_chunks(frame_count, **kwargs)
    assert issubclass(ConfigError, ValueError)
