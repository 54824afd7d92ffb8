"""Image sequences: numbered PNG, TIFF, DPX or OpenEXR frames read and written as one video.

A sequence is named by its folder (holding one numbered series) or by a printf pattern
(`shots/frame_%04d.png`). Its frames are contiguous: a gap is an error naming the missing
file, because a render would otherwise silently renumber every frame after it. The first
frame number is kept, and the output is written with the same names.

Timing: files carry none, so the probe gives frame i the pts i in a time base of
1 / `media.frame_rate`. Every frame is a keyframe (each file stands alone).

Pixels: frames are decoded with FFmpeg's image decoders into a
packed RGB working format, 8 bits where the file has 8 bits and 16 bits otherwise
(`working_pix_fmt`), which a `PlaneFrame` renders into; each frame is then encoded back in
the file's own pixel format. Both conversions are exact for every format of
`SEQUENCE_PIX_FMTS`, so pixels outside the faces come back bit for bit.

OpenEXR frames are scene-linear half or float: they are read with OpenEXR's library and
rendered as their 16-bit sRGB display image (`fusionray.media.display`: clip to [0, 1], sRGB
OETF), and written back by `fusionray.media.exr`: only the pixels the swap changed go through
the inverse curve into the file's own type; every other sample keeps its bits.

Output frames are written under a temporary name and renamed (`write_frame_atomic`): a frame
file is either absent or complete. A frame already present with the same bytes is not
rewritten, which is what makes a rerun resume per frame.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import cast

import av
import av.error
from av.video.codeccontext import VideoCodecContext

from fusionray.errors import MediaError, OutputError
from fusionray.media.exr import display_frame, encode_display_frame, read_exr
from fusionray.media.formats import SEQUENCE_CODECS, SEQUENCE_PIX_FMTS
from fusionray.media.storage import write_atomic
from fusionray.types import FrameBGR, ImageSequence, VideoInfo

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<suffix>\.[A-Za-z0-9]+)$")
_FIELD = re.compile(r"%(0?)(\d*)d")
RGB_COLORSPACE = 0
"""FFmpeg AVColorSpace of RGB pictures (no Y'CbCr matrix)."""
BT709_PRIMARIES, LINEAR_TRC = 1, 8
"""FFmpeg AVColorPrimaries / AVColorTransferCharacteristic of an OpenEXR frame: Rec. 709
primaries (the format's default chromaticities), linear light."""


def is_pattern(location: str) -> bool:
    """Whether `location` names a sequence by a printf field (`%04d`, `%d`)."""
    return len(_FIELD.findall(Path(location).name)) == 1


def _codec_of(name: str, location: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SEQUENCE_CODECS:
        raise MediaError(f"Unsupported image-sequence file type {suffix!r} in {location!r}. "
                         f"Choose one of: {', '.join(SEQUENCE_CODECS)}")
    return SEQUENCE_CODECS[suffix]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching the file names of printf `pattern`, capturing the number."""
    field = _FIELD.search(pattern)
    assert field is not None
    zero, width = field.group(1), field.group(2)
    digits = rf"\d{{{width}}}" if zero and width else r"\d+"
    return re.compile(re.escape(pattern[:field.start()]) + f"({digits})"
                      + re.escape(pattern[field.end():]) + "$")


def find_sequence(location: str | os.PathLike[str]) -> ImageSequence | None:
    """The image sequence `location` names, or None when it names something else (a file).

    Args:
        location: a folder holding one numbered series of image files, or a printf pattern
            such as `shots/frame_%04d.png`.

    Raises:
        MediaError: the folder holds no numbered images, several series, an unsupported file
            type, or the series has a gap (naming the first missing file).
    """
    text = os.fspath(location)
    path = Path(text).expanduser()
    if path.is_dir():
        folder = path
        names = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in SEQUENCE_CODECS)
        series: dict[tuple[str, str], list[str]] = {}
        for name in names:
            match = _NUMBERED.match(name)
            if match:
                series.setdefault((match["prefix"], match["suffix"]), []).append(match["digits"])
        if not series:
            raise MediaError(f"No numbered image files ({', '.join(SEQUENCE_CODECS)}) in the "
                             f"folder {text!r}")
        if len(series) > 1:
            found = ", ".join(f"{prefix}#{suffix}" for prefix, suffix in sorted(series))
            raise MediaError(f"The folder {text!r} holds several image series ({found}); name "
                             "one with a pattern, e.g. +video='folder/frame_%04d.png'")
        (prefix, suffix), digits = next(iter(series.items()))
        widths = {len(d) for d in digits}
        padded = len(widths) == 1 and any(d.startswith("0") for d in digits)
        width = widths.pop() if padded or len(widths) == 1 else 0
        field = f"%0{width}d" if width > 1 else "%d"
        pattern = f"{prefix.replace('%', '%%')}{field}{suffix.replace('%', '%%')}"
        numbers = sorted(int(d) for d in digits)
    elif is_pattern(text):
        folder, pattern = path.parent, path.name
        if not folder.is_dir():
            raise MediaError(f"Input video not found: the folder of the sequence {text!r} "
                             "does not exist")
        regex = _pattern_regex(pattern)
        numbers = sorted(int(m.group(1)) for m in (regex.match(p.name) for p in folder.iterdir())
                         if m)
        if not numbers:
            raise MediaError(f"No file of the image sequence {text!r} exists")
    else:
        return None
    codec = _codec_of(pattern, text)
    sequence = ImageSequence(folder=str(folder), pattern=pattern, first=numbers[0],
                             count=numbers[-1] - numbers[0] + 1, codec=codec)
    if len(numbers) != sequence.count:
        present = set(numbers)
        missing = next(n for n in range(numbers[0], numbers[-1]) if n not in present)
        raise MediaError(
            f"Frame {missing} of the image sequence {sequence.location!r} is missing: "
            f"{str(folder / (pattern % missing))!r} (found {len(numbers)} files numbered "
            f"{numbers[0]}..{numbers[-1]})")
    return sequence


def working_pix_fmt(pix_fmt: str) -> str:
    """The packed RGB format a sequence frame of `pix_fmt` is rendered in: `rgb24` for 8-bit
    files, `rgb48le` for anything deeper (10/12/16-bit integer; OpenEXR's display image)."""
    return "rgb24" if pix_fmt == "rgb24" else "rgb48le"


def probe_sequence(sequence: ImageSequence, frame_rate: Fraction) -> VideoInfo:
    """The `VideoInfo` of a sequence at `frame_rate` frames per second (first frame decoded).

    Raises:
        MediaError: the first frame cannot be decoded, or its pixel format is not one a
            sequence keeps exactly (`SEQUENCE_PIX_FMTS`).
    """
    path = frame_path(sequence, 0)
    if sequence.codec == "exr":
        exr = read_exr(path)
        height, width = exr.rgb.shape[:2]
        pix_fmt, primaries, trc = exr.pix_fmt, BT709_PRIMARIES, LINEAR_TRC
    else:
        first = read_frame(path, sequence.codec)
        width, height, pix_fmt = first.width, first.height, first.format.name
        primaries, trc = int(first.color_primaries), int(first.color_trc)
    allowed = SEQUENCE_PIX_FMTS[sequence.codec]
    if pix_fmt not in allowed:
        raise MediaError(
            f"Unsupported pixel format {pix_fmt!r} in {sequence.location!r} "
            f"({sequence.codec}); image sequences support: {', '.join(allowed)}")
    count = sequence.count
    return VideoInfo(
        path=sequence.location, format_name="image2", codec_name=sequence.codec,
        width=width, height=height, pix_fmt=pix_fmt,
        time_base=1 / frame_rate, average_rate=frame_rate, frame_pts=tuple(range(count)),
        keyframe_indices=tuple(range(count)), frame_durations=(1,) * count,
        colorspace=RGB_COLORSPACE, color_primaries=primaries,
        color_trc=trc, color_range=2, sequence=sequence,
    )


def frame_path(sequence: ImageSequence, index: int) -> Path:
    """The file of presentation index `index`."""
    return Path(sequence.folder) / sequence.name(index)


def read_frame(path: Path, codec: str) -> av.VideoFrame:
    """Decode one image file into an `av.VideoFrame` in its own pixel format; an OpenEXR
    file (linear float, which FFmpeg frames do not carry here) as its 16-bit display image
    (`fusionray.media.exr.display_frame`).

    Raises:
        MediaError: the file is missing or does not decode as `codec`.
    """
    if codec == "exr":
        return display_frame(read_exr(path))
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MediaError(f"Cannot read frame {str(path)!r}: {error.strerror or error}") from None
    try:
        decoder = cast(VideoCodecContext, av.CodecContext.create(codec, "r"))
        frames = [*decoder.decode(av.Packet(data)), *decoder.decode(None)]
    except av.error.FFmpegError as error:
        raise MediaError(f"Cannot decode frame {str(path)!r} as {codec} ({error})") from None
    if not frames:
        raise MediaError(f"Cannot decode frame {str(path)!r} as {codec} (no picture)")
    return frames[0]


def encode_frame(frame: av.VideoFrame, codec: str, pix_fmt: str) -> bytes:
    """One image file's bytes: `frame` (any RGB working format) in `pix_fmt`, coded as
    `codec`. Same-depth RGB conversions are exact, so unchanged pixels keep their codes.

    Raises:
        MediaError: the encoder refuses the frame.
    """
    try:
        if frame.format.name != pix_fmt:
            frame = frame.reformat(format=pix_fmt)
        encoder = cast(VideoCodecContext, av.CodecContext.create(codec, "w"))
        encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, pix_fmt
        encoder.time_base = Fraction(1, 25)  # required by the API; images have no timing
        frame.pts = 0
        packets = [*encoder.encode(frame), *encoder.encode(None)]
    except av.error.FFmpegError as error:
        raise MediaError(f"Cannot encode a {pix_fmt} frame as {codec} ({error})") from None
    return b"".join(bytes(p) for p in packets)


class SequenceReader:
    """The `VideoReader` interface over an image sequence: each frame is its own file, so a
    range is read exactly (no seeking, no lead-in). Missing or undecodable frames raise."""

    def __init__(self, info: VideoInfo, *, conceal: bool = False) -> None:
        if info.sequence is None:
            raise ValueError(f"{info.path!r} is not an image sequence")
        self.info = info
        self.sequence = info.sequence
        self.conceal = conceal
        self.concealed: list[int] = []
        """Always empty: a damaged file of a sequence is an error, there is no earlier
        picture it was predicted from."""
        self.frames_decoded = 0

    def __enter__(self) -> SequenceReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between frames."""

    def video_frames(self, start: int, stop: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield `(index, frame)` for `[start, stop)`: the frame in the working format
        (`working_pix_fmt`), tagged full-range RGB, pts = index.

        Raises:
            ValueError: the range is empty or outside the sequence.
            MediaError: a frame file is missing or does not decode.
        """
        if not (0 <= start < stop <= self.info.frame_count):
            raise ValueError(f"Frame range [{start}, {stop}) is outside "
                             f"[0, {self.info.frame_count}) of {self.info.path!r}")
        target = working_pix_fmt(self.info.pix_fmt)
        for index in range(start, stop):
            frame = read_frame(frame_path(self.sequence, index), self.sequence.codec)
            if frame.format.name != target:
                frame = frame.reformat(format=target)
            frame.pts, frame.time_base = index, self.info.time_base
            frame.color_range = 2
            self.frames_decoded += 1
            yield index, frame

    def frames(self, start: int, stop: int) -> Iterator[tuple[int, FrameBGR]]:
        """Like `video_frames`, as uint8 (height, width, 3) BGR."""
        for index, frame in self.video_frames(start, stop):
            yield index, cast(FrameBGR, frame.to_ndarray(format="bgr24"))


# Segments: a chunk's frames, encoded, in one uncompressed tar (member name = frame index).
# The driver places them into the output folder (`place_frames`); a segment stays a single
# file so the work folder's manifest (sha256, atomic record) covers sequences unchanged.


def pack_frames(frames: Iterable[tuple[int, bytes]]) -> bytes:
    """A segment holding `(frame index, file bytes)` pairs, in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for index, data in frames:
            member = tarfile.TarInfo(str(index))
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def unpack_frames(segment: Path) -> Iterator[tuple[int, bytes]]:
    """The `(frame index, file bytes)` pairs of a segment written by `pack_frames`."""
    with tarfile.open(segment, mode="r:") as archive:
        for member in archive:
            handle = archive.extractfile(member)
            if handle is None:
                continue
            yield int(member.name), handle.read()


@dataclass(frozen=True)
class FrameRecord:
    """What was written for one output frame (for per-frame resume)."""

    name: str
    size: int
    sha256: str


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_frame_atomic(path: Path, data: bytes) -> bool:
    """Write one frame file through a temporary name and a rename; a file already holding
    exactly `data` is left alone. Returns whether the file was written.

    Raises:
        OutputError: the file cannot be written.
    """
    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
        write_atomic(path, lambda partial: partial.write_bytes(data), durable=True)
    except OSError as error:
        raise OutputError(f"Cannot write frame '{path}': {error.strerror or error}") from None
    return True


def output_sequence(info: VideoInfo, location: Path) -> ImageSequence:
    """The output sequence of input `info` at `location`: a folder (the input's file names
    inside it) or a printf pattern in a folder (its own names, the input's numbers).

    Raises:
        OutputError: the pattern's file type is not the input's (frames are written in the
            input's own format).
    """
    source = info.sequence
    assert source is not None
    text = str(location)
    if is_pattern(text):
        folder, pattern = location.parent, location.name
        codec = SEQUENCE_CODECS.get(Path(pattern).suffix.lower())
        if codec != source.codec:
            raise OutputError(
                f"The output pattern {text!r} must keep the input's file type "
                f"({Path(source.pattern).suffix}): sequences are written in their own format")
    else:
        folder, pattern = location, source.pattern
    return ImageSequence(folder=str(folder), pattern=pattern, first=source.first,
                         count=source.count, codec=source.codec)


def place_frames(segments: Iterable[Path], target: ImageSequence) -> tuple[int, int]:
    """Write every frame of `segments` into `target`'s folder, each atomically; frames whose
    file already holds the same bytes are kept. Returns (written, kept).

    Raises:
        OutputError: a frame cannot be written.
    """
    folder = Path(target.folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = kept = 0
    for segment in segments:
        for index, data in unpack_frames(segment):
            if write_frame_atomic(folder / target.name(index), data):
                written += 1
            else:
                kept += 1
    return written, kept


def check_complete(target: ImageSequence) -> None:
    """Every frame of `target` exists.

    Raises:
        MediaError: naming the first missing frame file.
    """
    for index in range(target.count):
        path = frame_path(target, index)
        if not path.is_file():
            raise MediaError(f"Output frame {target.first + index} is missing: '{path}'")


def probe_input(location: str | os.PathLike[str], frame_rate: Fraction) -> VideoInfo:
    """Probe a render input: an image sequence (folder or pattern) at `frame_rate`, or a
    video file (`fusionray.media.probe.probe_video`, which keeps its own timing)."""
    from fusionray.media.probe import probe_video

    sequence = find_sequence(location)
    if sequence is None:
        return probe_video(location)
    return probe_sequence(sequence, frame_rate)


def encode_owned(frames: Iterable[av.VideoFrame], info: VideoInfo, start: int) -> bytes:
    """A chunk's segment: its owned frames (from index `start`, in order, any RGB working
    format) encoded in the input's own codec and pixel format, packed (`pack_frames`)."""
    sequence = info.sequence
    assert sequence is not None
    if sequence.codec == "exr":
        # Written back into the original file's own linear values (only changed pixels).
        return pack_frames((index, encode_display_frame(frame, frame_path(sequence, index)))
                           for index, frame in enumerate(frames, start))
    return pack_frames((index, encode_frame(frame, sequence.codec, info.pix_fmt))
                       for index, frame in enumerate(frames, start))


# Per-frame resume. After a sequence is complete, `<folder>.frames.json` records each frame's
# size and sha256 under the job key (config hash + input identity). A rerun under the same key
# trusts a frame only when its file still has that size and digest; chunks whose owned frames
# all pass are not rendered again (`verified_frames`).

FRAMES_RECORD_VERSION = 1


def frame_records(target: ImageSequence) -> dict[str, FrameRecord]:
    """Size and sha256 of every frame file of `target` (all must exist)."""
    records = {}
    for index in range(target.count):
        data = frame_path(target, index).read_bytes()
        name = target.name(index)
        records[name] = FrameRecord(name=name, size=len(data), sha256=sha256_of(data))
    return records


def write_frame_records(path: Path, target: ImageSequence, *, job_key: str) -> None:
    """Record `target`'s frames for a rerun under `job_key`, atomically."""
    records = frame_records(target)
    body = {"version": FRAMES_RECORD_VERSION, "job_key": job_key, "pattern": target.pattern,
            "first": target.first,
            "frames": {name: [r.size, r.sha256] for name, r in records.items()}}
    write_atomic(path, lambda partial: partial.write_text(json.dumps(body, indent=1)))


def verified_frames(path: Path, target: ImageSequence, *, job_key: str) -> frozenset[int]:
    """Indices of `target`'s frames that a finished run under `job_key` wrote and that are
    still on disk unchanged (size, then sha256); empty when the record is missing, unreadable
    or from another job key."""
    try:
        body = json.loads(path.read_text())
        if body.get("version") != FRAMES_RECORD_VERSION or body.get("job_key") != job_key:
            return frozenset()
        recorded = {str(k): (int(v[0]), str(v[1])) for k, v in body["frames"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return frozenset()
    good = set()
    for index in range(target.count):
        name = target.name(index)
        file = frame_path(target, index)
        if name not in recorded:
            continue
        size, digest = recorded[name]
        try:
            if file.stat().st_size == size and sha256_of(file.read_bytes()) == digest:
                good.add(index)
        except OSError:
            continue
    return frozenset(good)
