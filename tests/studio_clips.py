"""Studio-style test inputs written with PyAV: mezzanine codecs, high bit depth, colour tags,
NTSC time bases with a non-zero start, start timecodes.

Frames are `tests.clips.make_frame` pictures (frame counter, moving square, gradients) lifted to
16 bits with a fine ramp in the low bits, so a 10-bit input really holds more than 8 bits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.clips import AUDIO_FRAME_SAMPLES, AUDIO_RATE, make_frame

NTSC = Fraction(30000, 1001)


@dataclass(frozen=True)
class StudioClip:
    """What to write; every field has FFmpeg's meaning."""

    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    width: int = 256
    height: int = 144
    frames: int = 12
    rate: Fraction = Fraction(25)
    time_base: Fraction = Fraction(1, 25)
    start_pts: int = 0
    """pts of the first frame; frame i is at start_pts + i * ticks_per_frame."""
    ticks_per_frame: int = 1
    options: dict[str, str] = field(default_factory=dict)
    color_range: int = 0
    colorspace: int = 2
    color_primaries: int = 2
    color_trc: int = 2
    timecode: str | None = None
    """Written as the video stream's `timecode` tag: a tmcd track in .mov/.mp4."""
    audio: bool = False
    audio_codec: str = "aac"
    """`aac` for MP4/MOV, `libopus` for WebM/Matroska."""


def lift_to_16_bits(image: np.ndarray) -> np.ndarray:
    """uint8 BGR (H, W, 3) as uint16 BGR (0..65535): times 257 plus a ramp of 0..255 across
    the width, below one 8-bit step, so a 10-bit coding of it holds more than 8 bits."""
    width = image.shape[1]
    base = image.astype(np.uint32) * 257
    ramp = (np.arange(width, dtype=np.uint32) * 255 // max(1, width - 1))
    return np.minimum(base + ramp[None, :, None], 65535).astype(np.uint16)


def studio_frame(index: int, *, width: int, height: int) -> np.ndarray:
    """Frame `index` as uint16 BGR (0..65535): the 8-bit test picture lifted to 16 bits."""
    return lift_to_16_bits(make_frame(index, width=width, height=height))


def write_studio_clip(path: str | os.PathLike[str], clip: StudioClip, *,
                      picture: Callable[[int], np.ndarray] | None = None) -> Path:
    """Write `clip` to `path` (the container follows the extension) and return the path.

    Args:
        picture: frame index -> uint16 BGR (height, width, 3); default `studio_frame`.
    """
    path = Path(path)
    muxer_options = ({"movie_timescale": str(clip.time_base.denominator)}
                     if path.suffix.lower() in (".mp4", ".mov") else {})
    with av.open(str(path), "w", options=muxer_options) as container:
        video = container.add_stream(clip.codec, rate=clip.rate)
        assert isinstance(video, av.VideoStream)  # `clip.codec` names a video encoder
        video.width, video.height, video.pix_fmt = clip.width, clip.height, clip.pix_fmt
        video.time_base = clip.time_base
        context = video.codec_context
        context.time_base = clip.time_base
        context.options = dict(clip.options)
        context.color_range = clip.color_range
        context.colorspace = clip.colorspace
        context.color_primaries = clip.color_primaries
        context.color_trc = clip.color_trc
        if clip.timecode:
            video.metadata["timecode"] = clip.timecode
        audio = (container.add_stream(clip.audio_codec, rate=AUDIO_RATE, layout="mono")
                 if clip.audio else None)
        assert audio is None or isinstance(audio, av.AudioStream)  # an audio encoder
        matrix = clip.colorspace if clip.colorspace != 2 else None
        for index in range(clip.frames):
            image = (picture(index) if picture is not None
                     else studio_frame(index, width=clip.width, height=clip.height))
            frame = av.VideoFrame.from_ndarray(image, format="bgr48le")
            frame = frame.reformat(format=clip.pix_fmt, dst_colorspace=matrix,
                                   dst_color_range=clip.color_range or None)
            # Encoders such as prores_ks code the frame's own tags, not the context's.
            frame.color_range = clip.color_range
            frame.colorspace = clip.colorspace
            frame.color_primaries = clip.color_primaries
            frame.color_trc = clip.color_trc
            frame.pts = clip.start_pts + index * clip.ticks_per_frame
            frame.time_base = clip.time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            seconds = (clip.start_pts + clip.frames * clip.ticks_per_frame) * clip.time_base
            for first in range(0, int(seconds * AUDIO_RATE), AUDIO_FRAME_SAMPLES):
                t = np.arange(first, first + AUDIO_FRAME_SAMPLES) / AUDIO_RATE
                samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
                audio_frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                audio_frame.sample_rate = AUDIO_RATE
                audio_frame.pts = first
                container.mux(audio.encode(audio_frame))
            container.mux(audio.encode(None))
    return path


STUDIO_CLIPS: dict[str, tuple[str, StudioClip]] = {
    "prores-422hq-10bit-timecode": ("in.mov", StudioClip(
        codec="prores_ks", pix_fmt="yuv422p10le", options={"profile": "hq"},
        colorspace=1, color_primaries=1, color_trc=1, color_range=1,
        timecode="01:00:00:00", audio=True)),
    "prores-4444-alpha": ("in.mov", StudioClip(
        codec="prores_ks", pix_fmt="yuva444p10le", options={"profile": "4444"},
        colorspace=1, color_primaries=1, color_trc=1, color_range=1)),
    "dnxhr-hqx": ("in.mov", StudioClip(
        codec="dnxhd", pix_fmt="yuv422p10le", options={"profile": "dnxhr_hqx"},
        colorspace=1, color_primaries=1, color_trc=1, color_range=1)),
    "hevc-10bit-pq": ("in.mp4", StudioClip(
        codec="libx265", pix_fmt="yuv420p10le",
        options={"preset": "ultrafast", "x265-params": "log-level=error"},
        colorspace=9, color_primaries=9, color_trc=16, color_range=1)),
    "bt709-full-range": ("in.mp4", StudioClip(
        pix_fmt="yuv420p", options={"preset": "veryfast"},
        colorspace=1, color_primaries=1, color_trc=1, color_range=2)),
    # H.264 does not signal "limited" alone (it is its default); Matroska stores it.
    "tv-range-only": ("in.mkv", StudioClip(pix_fmt="yuv420p", color_range=1,
                                           time_base=Fraction(1, 1000), ticks_per_frame=40,
                                           options={"preset": "veryfast"})),
    "ntsc-bframes-start-1001": ("in.mp4", StudioClip(
        pix_fmt="yuv420p", rate=NTSC, time_base=Fraction(1, 30000), start_pts=1001,
        ticks_per_frame=1001, frames=20,
        options={"preset": "veryfast", "bframes": "3", "g": "8"}, audio=True,
        timecode="00:59:59;28")),
}
"""Name -> (file name, clip): the inputs of issue 12's table."""
