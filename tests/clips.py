"""Tiny synthetic test videos written with PyAV.

Every frame carries its own index in the pixels (a row of black/white 8×8 blocks at the top, one
bit per block, most significant first), so a test can tell which source frame a decoded frame is
even after lossy coding. The rest of the frame is a moving gradient so the encoder has motion to
predict and B-frames to use.
"""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fusionray.types import FrameBGR

COUNTER_BITS = 12
"""Bits of the frame counter; clips may hold up to 4096 frames."""
COUNTER_BLOCK = 8
"""Side of one counter block in pixels."""
AUDIO_RATE = 48000
AUDIO_FRAME_SAMPLES = 1024
VFR_DELTAS_MS = (40, 40, 80, 20, 60, 33, 47)
"""Irregular frame durations (milliseconds) cycled through by VFR clips."""


def make_frame(index: int, *, width: int, height: int) -> FrameBGR:
    """Build frame `index` of a test clip.

    Returns:
        uint8 array of shape (height, width, 3), BGR.
    """
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = ((xs * 2 + index * 5) % 256).astype(np.uint8)
    frame[..., 1] = ((ys * 3 + index * 3) % 256).astype(np.uint8)
    frame[..., 2] = (((xs + ys) + index * 7) % 256).astype(np.uint8)
    # A white square that walks across the frame: real motion, not just a colour shift.
    x0 = (index * 4) % max(1, width - 16)
    frame[COUNTER_BLOCK * 2 : COUNTER_BLOCK * 2 + 16, x0 : x0 + 16] = 255
    draw_frame_counter(frame, index)
    return frame


def draw_frame_counter(frame: FrameBGR, index: int) -> None:
    """Write `index` into the top row of blocks of `frame` in place."""
    if frame.shape[1] < COUNTER_BLOCK * COUNTER_BITS:
        raise ValueError(f"Frame width {frame.shape[1]} too small for the frame counter")
    frame[:COUNTER_BLOCK, : COUNTER_BLOCK * COUNTER_BITS] = 0
    for bit in range(COUNTER_BITS):
        if (index >> (COUNTER_BITS - 1 - bit)) & 1:
            x = bit * COUNTER_BLOCK
            frame[:COUNTER_BLOCK, x : x + COUNTER_BLOCK] = 255


def read_frame_counter(frame: FrameBGR) -> int:
    """Read back the index written by `draw_frame_counter` (robust to lossy coding)."""
    value = 0
    for bit in range(COUNTER_BITS):
        x = bit * COUNTER_BLOCK
        # Sample the block centre: edges bleed under chroma subsampling and DCT ringing.
        centre = frame[2 : COUNTER_BLOCK - 2, x + 2 : x + COUNTER_BLOCK - 2]
        value = (value << 1) | int(centre.mean() > 127)
    return value


def frame_pts_for(frames: int, *, fps: int, vfr: bool) -> tuple[list[int], Fraction]:
    """pts of each frame and the time base they are counted in."""
    if not vfr:
        return list(range(frames)), Fraction(1, fps)
    pts, now = [], 0
    for i in range(frames):
        pts.append(now)
        now += VFR_DELTAS_MS[i % len(VFR_DELTAS_MS)]
    return pts, Fraction(1, 1000)


def write_clip(
    path: str | os.PathLike[str],
    *,
    width: int = 160,
    height: int = 96,
    frames: int = 30,
    fps: int = 25,
    audio: bool = True,
    vfr: bool = False,
    rotation: int = 0,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int = 12,
    bframes: int = 2,
    audio_streams: int = 1,
    colorspace: int | None = None,
) -> Path:
    """Write a tiny test video and return its path.

    Args:
        path: Output file; the container follows the extension (.mp4, .mkv, .mov, .nut).
        width: Frame width in pixels (odd sizes need a 4:4:4 `pix_fmt` with H.264).
        height: Frame height in pixels.
        frames: Number of video frames.
        fps: Frame rate of a constant-rate clip; VFR clips use millisecond pts instead.
        audio: Whether to add AAC sine-wave audio covering the video's duration.
        vfr: Irregular frame durations (cycling through `VFR_DELTAS_MS`).
        rotation: Display rotation in degrees, stored as the stream's display matrix.
        codec: Video encoder name (libx264, ffv1, mpeg4, ...).
        pix_fmt: Encoder pixel format.
        gop: Keyframe interval in frames.
        bframes: Maximum consecutive B-frames (x264 only).
        audio_streams: How many audio streams when `audio` (each a different pitch).
        colorspace: FFmpeg AVColorSpace to convert with and tag (1 = BT.709); None: untagged.
    """
    path = Path(path)
    pts, time_base = frame_pts_for(frames, fps=fps, vfr=vfr)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        assert isinstance(video, av.VideoStream)  # `codec` names a video encoder
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = time_base
        video.codec_context.time_base = time_base
        video.codec_context.gop_size = gop
        options = {"g": str(gop)}
        if codec.startswith("libx264"):
            options |= {"bframes": str(bframes), "threads": "1", "preset": "veryfast"}
        video.codec_context.options = options
        if rotation:
            video.set_display_rotation(rotation)
        if colorspace is not None:
            video.codec_context.colorspace = colorspace
        audio_outputs = []
        if audio:
            for stream_number in range(audio_streams):
                stream = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
                audio_outputs.append((stream, 440.0 * (stream_number + 1)))

        for index, frame_pts in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(
                make_frame(index, width=width, height=height), format="bgr24"
            )
            if colorspace is not None:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace)
            frame.pts = frame_pts
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))

        duration_seconds = (pts[-1] + (VFR_DELTAS_MS[0] if vfr else 1)) * time_base
        total_samples = int(duration_seconds * AUDIO_RATE)
        for stream, pitch_hz in audio_outputs:
            for first in range(0, total_samples, AUDIO_FRAME_SAMPLES):
                t = (np.arange(first, first + AUDIO_FRAME_SAMPLES) / AUDIO_RATE).astype(np.float32)
                samples = (0.3 * np.sin(2 * np.pi * pitch_hz * t)).astype(np.float32)[None, :]
                audio_frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                audio_frame.sample_rate = AUDIO_RATE
                audio_frame.pts = first
                container.mux(stream.encode(audio_frame))
            container.mux(stream.encode(None))
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def add_subtitles(clip: Path, output: Path) -> Path:
    """Remux `clip` into Matroska with one SubRip subtitle stream (read from an .srt) added."""
    srt = output.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,300\nline one\n\n"
                   "2\n00:00:00,400 --> 00:00:00,700\nline two\n")
    with av.open(str(clip)) as source, av.open(str(srt)) as subtitles, \
            av.open(str(output), "w") as target:
        inputs = [*source.streams, subtitles.streams[0]]
        streams = {id(s): target.add_stream_from_template(s) for s in inputs}
        for container in (source, subtitles):
            for packet in container.demux():
                if packet.size:
                    packet.stream = streams[id(packet.stream)]
                    target.mux(packet)
    return output


def subtitle_packets(path: str | os.PathLike[str]) -> list[tuple[bytes, float, float]]:
    """(payload, start s, duration s) of every packet of the first subtitle stream."""
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        packets = []
        for p in container.demux(stream):
            if p.size:
                assert p.pts is not None  # every subtitle packet in the file carries its pts
                packets.append((bytes(p), float(p.pts * p.time_base),
                                float((p.duration or 0) * p.time_base)))
        return packets


def audio_packet_payloads(path: str | os.PathLike[str]) -> list[list[bytes]]:
    """Payload bytes of every audio packet, one list per audio stream, in stream order."""
    with av.open(str(path)) as container:
        streams = list(container.streams.audio)
        payloads: list[list[bytes]] = [[] for _ in streams]
        position = {stream.index: number for number, stream in enumerate(streams)}
        if streams:
            for packet in container.demux(*streams):
                if packet.size:
                    payloads[position[packet.stream.index]].append(bytes(packet))
    return payloads


def psnr(a: FrameBGR, b: FrameBGR) -> float:
    """Peak signal-to-noise ratio of two uint8 frames in dB (inf when equal)."""
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def write_face_clip(path: str | os.PathLike[str], *, frames: int = 30) -> Path:
    """A short clip of the demo's camera moving over a real face (640x360, 25 fps, AAC), so a
    render has faces to swap. The camera path is spread over `frames` frames."""
    from fusionray.media.demo import DEMO_FPS, render_demo_frames

    path = Path(path)
    images = render_demo_frames(frames / DEMO_FPS)[:frames]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=DEMO_FPS)
        video.width, video.height, video.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast", "g": "10", "threads": "1"}
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return path
