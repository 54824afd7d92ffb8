"""SMPTE timecode: parse, format, frame arithmetic (pure), and where containers keep it.

A timecode labels frames `HH:MM:SS:FF` at a nominal integer rate (24, 25, 30, 50, 60: the
NTSC rates 23.976, 29.97 and 59.94 count as 24, 30 and 60). Drop-frame timecode (`;` before the
frames, only at 29.97 and 59.94) skips the labels :00 and :01 (:00-:03 at 59.94) at the start
of every minute except every tenth, so the label stays within a frame of the wall clock.

Where the start timecode lives: QuickTime/MP4 keep it in a tmcd track that FFmpeg shows as the
`timecode` tag of the video stream (and of the tmcd data stream); MXF in the container's tags;
Matroska as a `TIMECODE` stream tag. `read_start_timecode` looks in that order, and the muxers
write it back from the output video stream's `timecode` tag (a tmcd track in .mov/.mp4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import av

from fusionray.errors import MediaError

_PATTERN = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2,3})$")
_DROP_SEPARATORS = frozenset(";,")


@dataclass(frozen=True)
class Timecode:
    """A timecode label at a nominal integer frame rate."""

    hours: int
    minutes: int
    seconds: int
    frames: int
    drop_frame: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.hours < 24 and 0 <= self.minutes < 60 and 0 <= self.seconds < 60
                and self.frames >= 0):
            raise MediaError(f"Invalid timecode {self.text!r}: fields out of range")

    @property
    def text(self) -> str:
        """`HH:MM:SS:FF`, or `HH:MM:SS;FF` for drop-frame (FFmpeg's and the muxers' form)."""
        separator = ";" if self.drop_frame else ":"
        return (f"{self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}{separator}"
                f"{self.frames:02d}")


def parse_timecode(text: str) -> Timecode:
    """Parse `HH:MM:SS:FF` (`;` or `,` before the frames: drop-frame; `.` is read as `:`).

    Raises:
        MediaError: The text is not a timecode.
    """
    match = _PATTERN.match(text.strip())
    if match is None:
        raise MediaError(f"Invalid timecode {text!r}: expected HH:MM:SS:FF or HH:MM:SS;FF")
    hours, minutes, seconds, separator, frames = match.groups()
    return Timecode(int(hours), int(minutes), int(seconds), int(frames),
                    drop_frame=separator in _DROP_SEPARATORS)


def nominal_rate(rate: Fraction) -> int:
    """The integer rate timecode counts at: 30000/1001 -> 30, 25 -> 25, 24000/1001 -> 24.

    Raises:
        MediaError: The rate is not positive.
    """
    if rate <= 0:
        raise MediaError(f"Timecode needs a positive frame rate, got {rate}")
    return max(1, round(rate))


def _dropped_per_minute(rate: Fraction, drop_frame: bool) -> int:
    """Labels skipped at each minute without a tens digit of 0 (2 at 29.97, 4 at 59.94)."""
    if not drop_frame:
        return 0
    nominal = nominal_rate(rate)
    if nominal % 30 or rate == nominal:
        raise MediaError(f"Drop-frame timecode exists only at 29.97 and 59.94 fps, not at "
                         f"{float(rate):.3f}")
    return nominal // 15


def timecode_to_frames(timecode: Timecode, rate: Fraction) -> int:
    """Frames from 00:00:00:00 to `timecode` at `rate` (drop-frame labels skipped).

    Raises:
        MediaError: The frame field is not below the nominal rate, drop-frame at a rate that has
            none, or a label that drop-frame skips.
    """
    nominal = nominal_rate(rate)
    drop = _dropped_per_minute(rate, timecode.drop_frame)
    if timecode.frames >= nominal:
        raise MediaError(f"Invalid timecode {timecode.text!r} at {nominal} fps: frames must be "
                         f"below {nominal}")
    if drop and timecode.seconds == 0 and timecode.minutes % 10 and timecode.frames < drop:
        raise MediaError(f"Invalid drop-frame timecode {timecode.text!r}: labels :00 to "
                         f":{drop - 1:02d} are skipped at this minute")
    total_minutes = timecode.hours * 60 + timecode.minutes
    frames = ((total_minutes * 60 + timecode.seconds) * nominal + timecode.frames)
    return frames - drop * (total_minutes - total_minutes // 10)


def frames_to_timecode(frames: int, rate: Fraction, *, drop_frame: bool = False) -> Timecode:
    """The label of frame number `frames` counted from 00:00:00:00 (wraps at 24 hours).

    Raises:
        MediaError: `frames` is negative, or drop-frame at a rate that has none.
    """
    if frames < 0:
        raise MediaError(f"Frame number must be >= 0 for a timecode, got {frames}")
    nominal = nominal_rate(rate)
    drop = _dropped_per_minute(rate, drop_frame)
    if drop:
        per_ten_minutes = nominal * 600 - drop * 9
        per_minute = nominal * 60 - drop
        tens, rest = divmod(frames, per_ten_minutes)
        # The first minute of ten keeps all its labels; each later one starts `drop` labels on.
        skipped = drop * 9 * tens
        if rest >= drop:
            skipped += drop * ((rest - drop) // per_minute)
        frames += skipped
    frames %= nominal * 86400
    seconds_total, frame = divmod(frames, nominal)
    minutes_total, second = divmod(seconds_total, 60)
    hour, minute = divmod(minutes_total, 60)
    return Timecode(hour, minute, second, frame, drop_frame=drop_frame)


def offset_timecode(timecode: Timecode, frames: int, rate: Fraction) -> Timecode:
    """The label `frames` frames after `timecode` (e.g. of a rendered range's first frame)."""
    start = timecode_to_frames(timecode, rate)
    return frames_to_timecode(start + frames, rate, drop_frame=timecode.drop_frame)


def read_start_timecode(container: av.container.InputContainer) -> str | None:
    """The start timecode text of an open input, or None: the first video stream's tag, then a
    data (tmcd) stream's, then the container's (MXF)."""
    candidates: list[Mapping[str, str]] = []
    if container.streams.video:
        candidates.append(container.streams.video[0].metadata)
    candidates += [stream.metadata for stream in container.streams.data]
    candidates.append(container.metadata)
    for tags in candidates:
        for key, value in tags.items():
            if key.lower() == "timecode" and value:
                return str(value)
    return None
