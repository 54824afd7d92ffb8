"""Damaged inputs: an undecodable frame is concealed (or fails in strict mode), a truncated
Matroska file is refused like a truncated MP4 (issue 12 item 9)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from fusionray.errors import MediaError
from fusionray.media.decode import decode_frames
from fusionray.media.probe import probe_video
from tests.clips import psnr, read_frame_counter, write_clip

DAMAGED = 6
"""Presentation index of the frame whose packet is overwritten."""


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("damage")
    clean = write_clip(folder / "clean.mp4", frames=30, audio=False, gop=30, width=256,
                       height=144)
    with av.open(str(clean)) as container:
        stream = container.streams.video[0]
        packets = sorted((p.pts, p.pos, p.size) for p in container.demux(stream) if p.size)
    _, position, size = packets[DAMAGED]
    assert position is not None  # a packet read from a file has its byte offset
    data = bytearray(clean.read_bytes())
    data[position:position + size] = b"\xff" * size  # no valid NAL unit left: undecodable
    broken = folder / "broken.mp4"
    broken.write_bytes(bytes(data))
    return clean, broken


def test_strict_decoding_fails_on_the_damaged_frame(damaged) -> None:
    _, broken = damaged
    info = probe_video(broken)  # demuxing still works: the damage is in the payload
    with pytest.raises(MediaError, match=r"Cannot decode frames \[0, 30\)"):
        list(decode_frames(info, 0, 30))


def test_a_damaged_frame_is_concealed_and_reported(damaged) -> None:
    clean, broken = damaged
    info = probe_video(broken)
    concealed: list[int] = []
    frames = list(decode_frames(info, 0, 30, conceal=True, concealed=concealed))
    assert [index for index, _ in frames] == list(range(30))
    # The lost frame and every frame that may predict from it, up to the next keyframe (the
    # clip has one GOP: to the end), hold a copy of the last good frame.
    assert info.keyframe_indices == (0,)
    assert sorted(concealed) == list(range(DAMAGED, 30))
    for index in range(DAMAGED, 30):
        assert np.array_equal(frames[index][1], frames[DAMAGED - 1][1])
    assert frames[DAMAGED][1] is not frames[DAMAGED - 1][1]
    # Frames before the lost one are intact except the B-frames (up to 2) that reference it.
    reference = [frame for _, frame in decode_frames(probe_video(clean), 0, 30)]
    assert all(psnr(frames[i][1], reference[i]) == float("inf") for i in range(DAMAGED - 2))
    assert [read_frame_counter(frame) for _, frame in frames[:DAMAGED]] == list(range(DAMAGED))


def test_concealment_ends_at_the_next_keyframe(tmp_path: Path) -> None:
    clean = write_clip(tmp_path / "clean.mp4", frames=24, audio=False, gop=12, bframes=0,
                       width=256, height=144)
    with av.open(str(clean)) as container:
        packets = sorted((p.pts, p.pos, p.size) for p in container.demux(video=0) if p.size)
    _, position, size = packets[3]
    assert position is not None  # a packet read from a file has its byte offset
    data = bytearray(clean.read_bytes())
    data[position:position + size] = b"\xff" * size
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    info = probe_video(broken)
    assert info.keyframe_indices == (0, 12)
    concealed: list[int] = []
    frames = list(decode_frames(info, 0, 24, conceal=True, concealed=concealed))
    assert concealed == list(range(3, 12))
    assert [read_frame_counter(frame) for _, frame in frames] == [0, 1, 2] + [2] * 9 + list(
        range(12, 24))


@pytest.mark.parametrize(("start", "stop"), [(DAMAGED, DAMAGED + 3), (DAMAGED + 2, 20)])
def test_every_range_conceals_the_same_frames(damaged, start: int, stop: int) -> None:
    """A chunk whose range starts at or after the lost frame still decodes from the keyframe
    before it, sees the loss and conceals exactly what a whole-video decode conceals."""
    _, broken = damaged
    info = probe_video(broken)
    whole = dict(decode_frames(info, 0, 30, conceal=True))
    concealed: list[int] = []
    part = list(decode_frames(info, start, stop, conceal=True, concealed=concealed))
    assert [index for index, _ in part] == list(range(start, stop))
    assert concealed == list(range(start, stop))
    assert all(np.array_equal(frame, whole[index]) for index, frame in part)


@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_truncated_matroska_is_refused(tmp_path: Path, kept: float) -> None:
    clip = write_clip(tmp_path / "full.mkv", frames=100)
    assert probe_video(clip).frame_count == 100
    cut = tmp_path / "cut.mkv"
    data = clip.read_bytes()
    cut.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(MediaError, match=r"is truncated or damaged: its header declares "
                                         r"4\.\d+ s but the streams end at"):
        probe_video(cut)
