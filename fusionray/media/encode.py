"""Encoder settings (pure) and segment encoding.

A segment is the owned frames of one chunk, encoded by a fresh encoder (so it starts with an
IDR frame and references nothing outside itself) into a small MP4 whose packets carry the
SOURCE pts in the source time base. Assembly then copies packets and pts as they are.

Why MP4 for segments (measured with FFmpeg 8 via PyAV 18):
- MP4 keeps pts exactly: its track timescale is the stream's time-base denominator, doubled
  until >= 10000, so every source tick maps to a whole number of MP4 ticks.
- Matroska rounds to 1 ms, which breaks pts equality for 1/25 or 1/30000 sources.
- NUT shifts x264 streams to make dts non-negative (first pts 0 became 5120), loses the first
  dts values and rewrites durations, so pts would have to be repaired afterwards.
MP4 needs a seekable output to write its index, which files and `io.BytesIO` both are.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import av.error
import numpy as np

from fusionray.errors import ConfigError, MediaError, choices_message
from fusionray.types import VideoInfo

CODECS = ("libx264", "libx264rgb", "ffv1")
"""Segment video encoders fusionray knows how to configure."""
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
X264_PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
# H.264 codes chroma in 2-pixel units for 4:2:0 (both axes) and 4:2:2 (horizontally); an odd
# frame size cannot be represented, so such formats switch to their 4:4:4 sibling.
_FULL_CHROMA = {
    "yuv420p": "yuv444p",
    "yuv422p": "yuv444p",
    "yuv420p10le": "yuv444p10le",
    "yuv422p10le": "yuv444p10le",
}
SEGMENT_FORMAT = "mp4"
_UNSPECIFIED = 2  # FFmpeg's AVCOL_SPC_UNSPECIFIED
DEFAULT_ENCODER_THREADS = 4
"""x264 is deterministic for a FIXED thread count (its `deterministic` option is on by default),
but the bitstream depends on the count, so it is pinned instead of `auto` (= core count).

Measured exception (x264 core 165 in PyAV 18): at some frame widths (160, 176, 192, 224 and
320 px seen; 256 and 640 px stable) the lookahead's assembly reads uninitialised memory and the
lossy bitstream varies from run to run even with one thread; `asm=0` or `mbtree=0` make it
stable, but mbtree off costs about 14 % more bytes at the same CRF on the demo, so it stays on.
Lossless output (libx264rgb qp 0, ffv1) decodes identically whatever the bitstream."""


@dataclass(frozen=True)
class EncoderSettings:
    """How segments are encoded; identical for every chunk of a job so segments concatenate."""

    codec: str
    """FFmpeg encoder name, one of `CODECS`."""
    pix_fmt: str
    """Pixel format the encoder codes (frames are converted from BGR24)."""
    options: tuple[tuple[str, str], ...] = ()
    """Encoder private options, e.g. (("crf", "18"), ("preset", "medium"))."""
    threads: int = DEFAULT_ENCODER_THREADS
    """Encoder threads; fixed so that output bytes do not depend on the machine."""
    lossless: bool = False
    """True when decoded output equals the encoder's input frames bit for bit."""
    note: str = ""
    """Why the settings differ from what was asked (empty when they do not)."""

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(choices_message("codec", self.codec, CODECS))
        if self.threads < 1:
            raise ConfigError(f"Encoder threads must be >= 1, got {self.threads}")


def build_encoder_settings(
    *,
    codec: str,
    crf: int,
    preset: str,
    pix_fmt: str,
    lossless: bool,
    width: int,
    height: int,
    threads: int = DEFAULT_ENCODER_THREADS,
) -> EncoderSettings:
    """Choose segment encoder settings for a job (pure).

    Args:
        codec: Requested encoder, one of `CODECS`.
        crf: x264 constant rate factor, 0..51 (lower is better; 18 is visually lossless).
        preset: x264 speed preset, one of `X264_PRESETS`.
        pix_fmt: Requested pixel format for libx264, one of `X264_PIX_FMTS`.
        lossless: Decoded output must equal the rendered frames exactly: libx264rgb at qp 0
            (RGB, no chroma subsampling, no colour conversion), or FFV1 when `codec` is ffv1.
        width: Frame width in pixels.
        height: Frame height in pixels.
        threads: Encoder threads (fixed, for determinism).

    Raises:
        ConfigError: A value is unknown or out of range; the message lists the allowed ones.
    """
    if codec not in CODECS:
        raise ConfigError(choices_message("codec", codec, CODECS))
    if preset not in X264_PRESETS:
        raise ConfigError(choices_message("x264 preset", preset, X264_PRESETS))
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ConfigError(f"crf must be an integer in 0..51, got {crf!r}")
    if width < 1 or height < 1:
        raise ConfigError(f"Frame size must be positive, got {width}x{height}")
    notes = []

    if codec == "ffv1":
        if not lossless:
            notes.append("ffv1 is always lossless; crf and preset do not apply")
        # FFV1 level 3 codes slices independently (threads) with CRCs; the output is still
        # a pure function of the input. bgr0 is BGR24 with a padding byte: no colour conversion.
        options = (("level", "3"), ("slicecrc", "1"))
        return EncoderSettings(
            codec="ffv1",
            pix_fmt="bgr0",
            options=options,
            threads=threads,
            lossless=True,
            note="; ".join(notes),
        )

    if lossless or codec == "libx264rgb":
        if codec == "libx264" and lossless:
            notes.append("lossless: libx264rgb at qp 0 (yuv would lose precision converting)")
        rate = (("qp", "0"),) if lossless else (("crf", str(crf)),)
        return EncoderSettings(
            codec="libx264rgb",
            pix_fmt="bgr24",
            options=(*rate, ("preset", preset)),
            threads=threads,
            lossless=lossless,
            note="; ".join(notes),
        )

    if pix_fmt not in X264_PIX_FMTS:
        raise ConfigError(choices_message("pix_fmt for libx264", pix_fmt, X264_PIX_FMTS))
    chosen_pix_fmt = pix_fmt
    if (width % 2 or height % 2) and pix_fmt in _FULL_CHROMA:
        chosen_pix_fmt = _FULL_CHROMA[pix_fmt]
        notes.append(
            f"{width}x{height} is odd and H.264 {pix_fmt} needs even sizes: using {chosen_pix_fmt}"
        )
    return EncoderSettings(
        codec="libx264",
        pix_fmt=chosen_pix_fmt,
        options=(("crf", str(crf)), ("preset", preset)),
        threads=threads,
        lossless=False,
        note="; ".join(notes),
    )


@dataclass(frozen=True)
class SegmentInfo:
    """What `encode_segment` wrote."""

    frame_count: int
    byte_size: int
    sha256: str
    """Hex digest of the segment file."""
    first_pts: int
    """Source pts of the first frame, in the source time base."""
    last_pts: int


def encode_segment(
    frames: Iterable[np.ndarray],
    *,
    pts: Sequence[int],
    info: VideoInfo,
    settings: EncoderSettings,
    path: str | os.PathLike[str],
) -> SegmentInfo:
    """Encode the owned frames of one chunk into a self-contained MP4 segment file.

    The file appears at `path` only when complete (written under a temporary name, then
    renamed), so a crashed worker never leaves a truncated segment that looks finished.

    Args:
        frames: Frames in presentation order, each uint8 (info.height, info.width, 3) BGR;
            consumed one at a time.
        pts: Source pts of each frame, strictly increasing, in `info.time_base` units.
        info: Probe result of the source (size and time base).
        settings: From `build_encoder_settings`; the same for every segment of a job.
        path: Where to write the segment.

    Raises:
        ValueError: A frame has the wrong shape or dtype, or frames and pts differ in count.
        MediaError: The encoder or muxer failed.
    """
    final_path = Path(path)
    temporary_path = final_path.with_name(f".{final_path.name}.partial-{os.getpid()}")
    try:
        with open(temporary_path, "wb") as file:
            _encode_into(file, frames, pts=pts, info=info, settings=settings)
        digest = hashlib.sha256()
        with open(temporary_path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        os.replace(temporary_path, final_path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    return SegmentInfo(
        frame_count=len(pts),
        byte_size=final_path.stat().st_size,
        sha256=digest.hexdigest(),
        first_pts=int(pts[0]),
        last_pts=int(pts[-1]),
    )


def encode_segment_bytes(
    frames: Iterable[np.ndarray | av.VideoFrame],
    *,
    pts: Sequence[int],
    info: VideoInfo,
    settings: EncoderSettings,
) -> bytes:
    """Like `encode_segment`, returning the segment file's bytes (for Ray to ship)."""
    buffer = io.BytesIO()
    _encode_into(buffer, frames, pts=pts, info=info, settings=settings)
    return buffer.getvalue()


def _encode_into(
    target: IO[bytes],
    frames: Iterable[np.ndarray | av.VideoFrame],
    *,
    pts: Sequence[int],
    info: VideoInfo,
    settings: EncoderSettings,
) -> None:
    if not pts:
        raise ValueError("A segment needs at least one frame; pts is empty")
    for previous, current in itertools.pairwise(pts):
        if current <= previous:
            raise ValueError(f"Segment pts must increase strictly, got {previous} then {current}")
    time_base = Fraction(info.time_base)
    expected_shape = (info.height, info.width, 3)
    target_name = getattr(target, "name", "<memory>")
    try:
        with av.open(target, mode="w", format=SEGMENT_FORMAT) as container:
            stream = container.add_stream(settings.codec, rate=info.average_rate or Fraction(25))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height = info.width, info.height
            stream.pix_fmt = settings.pix_fmt
            # The source time base end to end: frame pts go in unchanged and MP4 stores them
            # exactly (see the module docstring).
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            stream.codec_context.thread_count = settings.threads
            stream.codec_context.options = dict(settings.options)
            # Tag the source's colour description, and convert BGR to YUV with the source's
            # matrix: decoding used it (PyAV honours the frame's tag), so the round trip is
            # neutral and players interpret the output like the input.
            stream.codec_context.color_primaries = info.color_primaries
            stream.codec_context.color_trc = info.color_trc
            yuv = settings.pix_fmt.startswith("yuv")
            if yuv:
                stream.codec_context.colorspace = info.colorspace
            matrix = info.colorspace if yuv and info.colorspace != _UNSPECIFIED else None
            count = 0
            for frame_array in frames:
                if count == len(pts):
                    raise ValueError(f"More frames than pts ({len(pts)}) for this segment")
                if isinstance(frame_array, av.VideoFrame):
                    frame = _checked_video_frame(frame_array, count, settings, info)
                    if count == 0 and frame.color_range:
                        # The frames carry the input's range (fusionray.media.frame keeps it);
                        # the encoder tags what it is told, so tell it before it opens.
                        stream.codec_context.color_range = frame.color_range
                else:
                    if frame_array.shape != expected_shape or frame_array.dtype != np.uint8:
                        raise ValueError(
                            f"Frame {count} of the segment is {frame_array.dtype} "
                            f"{frame_array.shape}, expected uint8 {expected_shape}"
                        )
                    frame = av.VideoFrame.from_ndarray(frame_array, format="bgr24")
                    if matrix is not None:
                        frame = frame.reformat(format=settings.pix_fmt, dst_colorspace=matrix)
                frame.pts = int(pts[count])
                frame.time_base = time_base
                container.mux(stream.encode(frame))
                count += 1
            if count != len(pts):
                raise ValueError(f"Got {count} frames for {len(pts)} pts in this segment")
            container.mux(stream.encode(None))
    except av.error.FFmpegError as error:
        raise MediaError(f"Cannot encode segment {target_name!r} ({error})") from error


def _checked_video_frame(frame: av.VideoFrame, count: int, settings: EncoderSettings,
                         info: VideoInfo) -> av.VideoFrame:
    """An `av.VideoFrame` handed to the encoder as it is: it must already be in the segment's
    pixel format and size (the render path converts only where it must, see
    `fusionray.media.frame`)."""
    if frame.format.name != settings.pix_fmt or (frame.width, frame.height) != (info.width,
                                                                                info.height):
        raise ValueError(
            f"Frame {count} of the segment is {frame.format.name} {frame.width}x{frame.height}, "
            f"expected {settings.pix_fmt} {info.width}x{info.height}"
        )
    return frame
