"""Timecode maths (table) and start timecodes read from the places containers keep them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from fusionray.errors import MediaError
from fusionray.media.probe import probe_video
from fusionray.media.timecode import (
    Timecode,
    frames_to_timecode,
    nominal_rate,
    offset_timecode,
    parse_timecode,
    timecode_to_frames,
)
from tests.studio_clips import NTSC, StudioClip, write_studio_clip

NTSC60 = Fraction(60000, 1001)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("01:00:00:00", Timecode(1, 0, 0, 0)),
        ("00:59:59;29", Timecode(0, 59, 59, 29, drop_frame=True)),
        ("10:11:12,13", Timecode(10, 11, 12, 13, drop_frame=True)),
        ("1:02:03.04", Timecode(1, 2, 3, 4)),
        (" 23:59:59:24 ", Timecode(23, 59, 59, 24)),
    ],
)
def test_parse_timecode_table(text: str, expected: Timecode) -> None:
    assert parse_timecode(text) == expected


@pytest.mark.parametrize("text", ["", "01:00:00", "1h", "01:60:00:00", "24:00:00:00",
                                  "01:00:00-00"])
def test_parse_timecode_rejects(text: str) -> None:
    with pytest.raises(MediaError, match="Invalid timecode"):
        parse_timecode(text)


@pytest.mark.parametrize(
    ("text", "rate", "frames"),
    [
        ("00:00:00:00", Fraction(25), 0),
        ("01:00:00:00", Fraction(25), 90000),
        ("01:00:00:00", Fraction(24000, 1001), 86400),
        ("01:00:00:00", NTSC, 108000),  # non-drop at 29.97: labels run slow of the clock
        ("00:00:59;29", NTSC, 1799),
        ("00:01:00;02", NTSC, 1800),  # ;00 and ;01 do not exist at minute 1
        ("00:10:00;00", NTSC, 17982),  # every tenth minute keeps them
        ("01:00:00;00", NTSC, 107892),  # one hour of 29.97 fps wall clock
        ("00:01:00;04", NTSC60, 3600),
        ("01:00:00;00", NTSC60, 215784),
        ("23:59:59:49", Fraction(50), 50 * 86400 - 1),
    ],
)
def test_timecode_frames_round_trip_table(text: str, rate: Fraction, frames: int) -> None:
    timecode = parse_timecode(text)
    assert timecode_to_frames(timecode, rate) == frames
    assert frames_to_timecode(frames, rate, drop_frame=timecode.drop_frame) == timecode


def test_drop_frame_labels_every_frame_once_over_an_hour() -> None:
    labels = [frames_to_timecode(n, NTSC, drop_frame=True) for n in range(107892 + 1)]
    assert len(set(labels)) == len(labels)
    assert labels[-1] == parse_timecode("01:00:00;00")
    for n in range(0, len(labels), 997):
        assert timecode_to_frames(labels[n], NTSC) == n


@pytest.mark.parametrize(
    ("timecode", "rate", "message"),
    [
        ("00:00:00:25", Fraction(25), "frames must be below 25"),
        ("00:01:00;01", NTSC, "labels :00 to :01 are skipped"),
        ("00:01:00;03", NTSC60, "labels :00 to :03 are skipped"),
        ("00:00:00;00", Fraction(25), "only at 29.97 and 59.94"),
        ("00:00:00;00", Fraction(30), "only at 29.97 and 59.94"),
    ],
)
def test_timecode_to_frames_rejects(timecode: str, rate: Fraction, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        timecode_to_frames(parse_timecode(timecode), rate)


def test_offset_and_nominal_rate() -> None:
    assert offset_timecode(parse_timecode("00:00:59;29"), 1, NTSC).text == "00:01:00;02"
    assert offset_timecode(parse_timecode("23:59:59:24"), 1, Fraction(25)).text == "00:00:00:00"
    assert [nominal_rate(r) for r in (NTSC, Fraction(24000, 1001), Fraction(25), NTSC60)] == [
        30, 24, 25, 60]
    with pytest.raises(MediaError, match="positive"):
        nominal_rate(Fraction(0))


def test_probe_reads_the_timecode_wherever_the_container_keeps_it(tmp_path: Path) -> None:
    clip = StudioClip(frames=3, rate=NTSC, time_base=Fraction(1, 30000), ticks_per_frame=1001,
                      options={"preset": "veryfast"}, timecode="00:59:59;28")
    # QuickTime: a tmcd track, shown as the video stream's tag.
    assert probe_video(write_studio_clip(tmp_path / "a.mov", clip)).timecode == "00:59:59;28"
    # Matroska: a TIMECODE stream tag.
    mkv = write_studio_clip(tmp_path / "a.mkv", StudioClip(**{**clip.__dict__,
                                                              "time_base": Fraction(1, 1000),
                                                              "ticks_per_frame": 33}))
    assert probe_video(mkv).timecode == "00:59:59;28"
    # MXF-style: the container's tag only.
    plain = write_studio_clip(tmp_path / "b.mkv", StudioClip(frames=2, timecode=None,
                                                             time_base=Fraction(1, 1000),
                                                             ticks_per_frame=40))
    tagged = tmp_path / "c.mkv"
    with av.open(str(plain)) as source, av.open(str(tagged), "w") as target:
        target.metadata["timecode"] = "10:00:00:00"
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream = stream
                target.mux(packet)
    assert probe_video(tagged).timecode == "10:00:00:00"
    assert probe_video(plain).timecode is None
