"""Chunk planning: owned ranges tile the video, read ranges add clipped margins."""

from __future__ import annotations

from fractions import Fraction

import pytest

from fusionray.config import ChunkConfig
from fusionray.errors import ConfigError
from fusionray.media.plan import (
    AUTO_CHUNK_FRAMES,
    auto_chunk_frames,
    decoded_frames,
    plan_chunks,
    plan_video_chunks,
)
from fusionray.types import VideoInfo


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


@pytest.mark.parametrize(
    ("frame_count", "chunk_frames", "overlap", "keyframes", "expected"),
    [
        # GOP 12, overlap 4: edges at 12k + 4; 120 / 48 -> 3 chunks, edges nearest 40 and 80.
        (120, 48, 4, list(range(0, 120, 12)),
         [(0, 40, 0, 44), (40, 76, 36, 80), (76, 120, 72, 120)]),
        # GOP 250 > chunk_frames: each chunk spans a whole GOP.
        (600, 48, 4, [0, 250, 500],
         [(0, 254, 0, 258), (254, 504, 250, 508), (504, 600, 500, 600)]),
        # Every frame a keyframe (intra): the even split (10 / 4 -> 3 chunks).
        (10, 4, 2, list(range(10)), [(0, 3, 0, 5), (3, 7, 1, 9), (7, 10, 5, 10)]),
        # Irregular keyframes: an edge closer than chunk_frames // 2 to the previous one or to
        # the end is never taken (90 would leave a 10-frame sliver).
        (100, 40, 0, [0, 5, 38, 90], [(0, 38, 0, 38), (38, 100, 38, 100)]),
        # No keyframe but the first: one chunk (any other edge would need a lead-in).
        (100, 10, 2, [0], [(0, 100, 0, 100)]),
        # A keyframe whose edge falls past the video is ignored.
        (20, 8, 4, [0, 8, 17], [(0, 12, 0, 16), (12, 20, 8, 20)]),
    ],
)
def test_keyframe_plan_table(frame_count: int, chunk_frames: int, overlap: int,
                             keyframes: list[int], expected: list[tuple[int, ...]]) -> None:
    chunks = plan_chunks(frame_count, chunk_frames=chunk_frames, overlap=overlap,
                         keyframes=keyframes)
    assert [(c.start, c.stop, c.read_start, c.read_stop) for c in chunks] == expected


@pytest.mark.parametrize("gop", [1, 7, 12, 30, 250])
@pytest.mark.parametrize("chunk_frames", [1, 10, 48])
def test_keyframe_plan_reads_start_on_keyframes(gop: int, chunk_frames: int) -> None:
    frame_count, overlap = 1000, 4
    keyframes = list(range(0, frame_count, gop))
    chunks = plan_chunks(frame_count, chunk_frames=chunk_frames, overlap=overlap,
                         keyframes=keyframes)
    assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(frame_count))
    assert all(c.read_start in keyframes for c in chunks)
    # Chunks at least a GOP long (and at least half the target) except the last.
    assert all(c.owned_frames >= min(gop, frame_count) or c.owned_frames >= chunk_frames // 2
               for c in chunks[:-1])
    if gop > chunk_frames:
        assert all(c.owned_frames >= gop for c in chunks[:-1])
    # No GOP lead-in: the decode is exactly the read ranges.
    assert decoded_frames(chunks, keyframes) == sum(c.read_frames for c in chunks)


def test_keyframe_plan_decodes_far_less_than_the_plain_one_at_a_long_gop() -> None:
    frame_count, overlap, keyframes = 1500, 4, list(range(0, 1500, 250))
    plain = plan_chunks(frame_count, chunk_frames=48, overlap=overlap)
    aware = plan_chunks(frame_count, chunk_frames=48, overlap=overlap, keyframes=keyframes)
    plain_ratio = decoded_frames(plain, keyframes) / frame_count
    aware_ratio = decoded_frames(aware, keyframes) / frame_count
    assert plain_ratio > 3.0  # every chunk decodes from its GOP's start
    assert aware_ratio <= 1.25 and aware_ratio == pytest.approx(1 + 2 * 4 * 5 / 1500)


@pytest.mark.parametrize(
    ("keyframes", "message"),
    [([0, 5, 5], "strictly ascending"), ([0, 12], r"in \[0, 10\)"), ([-1], r"in \[0, 10\)")],
)
def test_keyframe_plan_rejects_bad_keyframes(keyframes: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_chunks(10, chunk_frames=4, overlap=1, keyframes=keyframes)


@pytest.mark.parametrize(("frame_count", "expected"), [
    (1, 48), (48, 48), (768, 48), (769, 49), (1200, 75), (1500, 94), (3840, 240),
    (90_000, 240),
])
def test_auto_chunk_length_table(frame_count: int, expected: int) -> None:
    """About 16 chunks, never shorter than 48 frames nor longer than 240."""
    assert auto_chunk_frames(frame_count) == expected
    assert AUTO_CHUNK_FRAMES[0] <= expected <= AUTO_CHUNK_FRAMES[1]


def test_auto_chunks_plan_a_minute_in_sixteen_keyframe_aligned_chunks() -> None:
    """chunk.frames=0 (the default) on 60 s at 25 fps with a 25-frame GOP: 16 chunks split
    evenly on keyframe edges (75 to 104 frames, no sliver at the end), each read starting on a
    keyframe, decoding 8 % more than it writes (48-frame chunks: 15.5 %); two actors taking
    the next chunk when free finish within one GOP of each other (the greedy plan of 100-frame
    chunks ending on 75 + 21 left them 50 frames apart); an explicit length is planned as
    given."""
    info = VideoInfo(path="clip.mp4", format_name="mp4", codec_name="h264", width=640,
                     height=360, pix_fmt="yuv420p", time_base=Fraction(1, 12800),
                     average_rate=Fraction(25), frame_pts=tuple(range(0, 1500 * 512, 512)),
                     keyframe_indices=tuple(range(0, 1500, 25)))
    assert ChunkConfig().frames == 0
    chunks = plan_video_chunks(info, ChunkConfig())
    lengths = [c.owned_frames for c in chunks]
    assert len(chunks) == 16 and sum(lengths) == 1500
    assert min(lengths) >= 75 and max(lengths) <= 104
    # Every boundary within half a GOP of its even share of the minute.
    assert all(abs(c.start - c.index * 1500 / 16) <= 12.5 for c in chunks)
    # Two actors, each taking the next chunk when it is free: they finish within one GOP.
    finish = [0, 0]
    for length in lengths:
        finish[finish.index(min(finish))] += length
    assert abs(finish[0] - finish[1]) <= 25
    assert all(c.read_start % 25 == 0 for c in chunks)
    assert decoded_frames(chunks, info.keyframe_indices) / 1500 == pytest.approx(1.08, abs=0.01)
    fixed = plan_video_chunks(info, ChunkConfig(frames=48))
    assert len(fixed) == 31
    assert decoded_frames(fixed, info.keyframe_indices) / 1500 == pytest.approx(1.155, abs=0.01)


@pytest.mark.parametrize("gop", [1, 7, 25, 250])
@pytest.mark.parametrize("frame_count", [97, 1000, 1501])
@pytest.mark.parametrize("chunk_frames", [10, 48, 94])
def test_keyframe_plan_never_ends_on_a_sliver(gop: int, frame_count: int,
                                              chunk_frames: int) -> None:
    """The last chunk is at least half the target long (once the video is), like the others."""
    chunks = plan_chunks(frame_count, chunk_frames=chunk_frames, overlap=4,
                         keyframes=list(range(0, frame_count, gop)))
    if len(chunks) > 1:
        assert chunks[-1].owned_frames >= chunk_frames // 2


def test_negative_chunk_length_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"chunk.frames=-1.*>= 1, or 0 \(auto\)"):
        ChunkConfig(frames=-1)
