"""Probe a video: exact frame count, per-frame pts and keyframes, read from demuxed packets.

`stream.frames` comes from the container header and is 0 in Matroska and wrong in some MP4s, so
the probe demuxes every video packet once (no decoding beyond the first frame). For a 1-hour
1080p file this reads the whole file but only parses packet headers: seconds, not minutes.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from fusionray.errors import MediaError
from fusionray.media.timecode import read_start_timecode
from fusionray.types import AudioStreamInfo, VideoInfo

# Demuxers FFmpeg picks for single pictures: a still image is not a video, even though FFmpeg
# will happily present it as a one-frame stream.
_STILL_IMAGE_FORMATS = ("image2", "image2pipe")
_STILL_IMAGE_FORMAT_SUFFIX = "_pipe"
# Containers whose header counts every video sample, so a shortfall means a truncated file.
_INDEXED_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2",)


def open_input(path: str | os.PathLike[str], **options: Any) -> av.container.InputContainer:
    """Open `path` for demuxing, turning FFmpeg's errors into one-line `MediaError`s.
    `options` go to `av.open` (e.g. `hwaccel`)."""
    path_text = os.fspath(path)
    if not Path(path_text).is_file():
        raise MediaError(f"Input video not found: {path_text!r}")
    try:
        return av.open(path_text, mode="r", **options)
    except av.error.FFmpegError as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise MediaError(f"Not a readable video file: {path_text!r} ({reason})") from error


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read everything the render needs to know about a video, exactly.

    Args:
        path: A local video file (mp4, mov, mkv, webm, nut, ...).

    Returns:
        A `VideoInfo` whose `frame_pts` holds one pts per frame in presentation order, in units of
        `time_base` seconds, and whose `keyframe_indices` are presentation indices.

    Raises:
        MediaError: The file is missing, unreadable, a still image, has no video stream, or
            holds no decodable frame.
    """
    path_text = os.fspath(path)
    with open_input(path_text) as container:
        format_name = container.format.name
        if not container.streams.video:
            raise MediaError(f"No video stream in {path_text!r}")
        video = container.streams.video[0]
        codec_name = video.codec_context.name
        profile = video.codec_context.profile or ""
        timecode = read_start_timecode(container)
        if format_name in _STILL_IMAGE_FORMATS or format_name.endswith(_STILL_IMAGE_FORMAT_SUFFIX):
            raise MediaError(
                f"{path_text!r} is a still image ({codec_name}), not a video; "
                "pass it as a source image instead"
            )
        if video.time_base is None:
            raise MediaError(f"Video stream of {path_text!r} has no time base")
        time_base = Fraction(video.time_base)

        audio_streams = list(container.streams.audio)
        audio_packet_counts = {stream.index: 0 for stream in audio_streams}
        audio_codec_names = {stream.index: stream.codec_context.name for stream in audio_streams}
        audio_time_bases = {stream.index: Fraction(stream.time_base) if stream.time_base
                            else None for stream in audio_streams}
        # (pts, duration, is_keyframe) of every video packet, in decode order.
        video_packets: list[tuple[int, int, bool]] = []
        read_end = Fraction(0)  # end of the last packet read, seconds, any stream
        try:
            # Subtitle packets count towards the end read (a Matroska header's duration
            # covers the last cue), nothing else.
            subtitles = list(container.streams.subtitles)
            for packet in container.demux(video, *audio_streams, *subtitles):
                if packet.size == 0:  # demuxer flush packets carry no data and no pts
                    continue
                read_end = max(read_end, _packet_end_seconds(packet))
                if packet.stream.type == "subtitle":
                    continue
                if packet.stream.index != video.index:
                    audio_packet_counts[packet.stream.index] += 1
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    raise MediaError(
                        f"Video packet without timestamps in {path_text!r}: frame-accurate "
                        "access needs a container with pts (remux it to mp4 or mkv)"
                    )
                video_packets.append((pts, packet.duration or 0, bool(packet.is_keyframe)))
        except av.error.FFmpegError as error:
            raise MediaError(f"Not a readable video file: {path_text!r} ({error})") from error

        if not video_packets:
            raise MediaError(f"No decodable video frames in {path_text!r}")
        indexed = video.frames if format_name in _INDEXED_FORMATS else 0
        if indexed and len(video_packets) < indexed:
            # An MP4/MOV index (moov at the front) outlives a cut-off download or copy; the
            # demuxer then just stops early. Rendering the readable part would publish a video
            # silently shorter than its source, so this is an error, not a warning.
            raise MediaError(
                f"{path_text!r} is truncated or damaged: its index lists {indexed} video frames "
                f"but only {len(video_packets)} can be read"
            )
        _check_declared_duration(container, read_end, time_base, video_packets, path_text)
        video_packets.sort(key=lambda entry: entry[0])
        frame_pts = tuple(entry[0] for entry in video_packets)
        for previous, current in itertools.pairwise(frame_pts):
            if current == previous:
                raise MediaError(
                    f"Two video frames share pts {current} in {path_text!r}; frames cannot be "
                    "addressed exactly"
                )
        keyframe_indices = tuple(i for i, entry in enumerate(video_packets) if entry[2])
        if not keyframe_indices or keyframe_indices[0] != 0:
            # Decoding from the very start always works (the decoder skips what it cannot
            # reconstruct), so index 0 is a valid entry point even without a keyframe flag.
            keyframe_indices = (0, *keyframe_indices)

        # Read while `container` is open: PyAV stream objects are invalid after close.
        # A fresh open rather than a seek back to 0: seeking before the first index entry fails in
        # some demuxers, and this costs one header parse.
        with open_input(path_text) as first_frame_container:
            rotation, colorspace, color_primaries, color_trc, color_range = _first_frame_facts(
                first_frame_container, first_frame_container.streams.video[0], path_text
            )

        return VideoInfo(
            path=path_text,
            format_name=format_name,
            codec_name=codec_name,
            width=video.codec_context.width,
            height=video.codec_context.height,
            pix_fmt=video.codec_context.pix_fmt or "",
            time_base=time_base,
            average_rate=_average_rate(video, frame_pts, time_base),
            frame_pts=frame_pts,
            keyframe_indices=keyframe_indices,
            rotation=rotation,
            audio_streams=tuple(
                AudioStreamInfo(
                    index=index, codec_name=audio_codec_names[index], packet_count=count,
                    time_base=audio_time_bases[index],
                )
                for index, count in audio_packet_counts.items()
            ),
            video_stream_index=video.index,
            frame_durations=tuple(entry[1] for entry in video_packets),
            colorspace=colorspace,
            color_primaries=color_primaries,
            color_trc=color_trc,
            color_range=color_range,
            profile=str(profile),
            timecode=timecode,
        )


_MATROSKA_FORMATS = ("matroska,webm",)
_TRUNCATION_SLACK_SECONDS = Fraction(1, 20)


def _packet_end_seconds(packet: av.Packet) -> Fraction:
    timestamp = packet.pts if packet.pts is not None else packet.dts
    if timestamp is None or packet.time_base is None:
        return Fraction(0)
    return (timestamp + (packet.duration or 0)) * Fraction(packet.time_base)


def _check_declared_duration(
    container: av.container.InputContainer, read_end: Fraction, time_base: Fraction,
    video_packets: list[tuple[int, int, bool]], path_text: str,
) -> None:
    """Matroska has no sample index, but its header declares the duration (the muxer writes
    it last, seeking back): a cut-off copy keeps the full duration and loses the end. The
    packets read must reach the declared end, within two frames or 50 ms (the header's duration
    is in milliseconds and may round or omit the last frame's length).

    Raises:
        MediaError: the readable streams end well before the declared duration.
    """
    if container.format.name not in _MATROSKA_FORMATS or not container.duration:
        return
    start = Fraction(container.start_time or 0, av.time_base)
    declared_end = start + Fraction(container.duration, av.time_base)
    durations = [duration for _, duration, _ in video_packets if duration]
    frame_seconds = (max(durations) * time_base) if durations else Fraction(0)
    slack = max(_TRUNCATION_SLACK_SECONDS, 2 * frame_seconds)
    if declared_end - read_end > slack:
        raise MediaError(
            f"{path_text!r} is truncated or damaged: its header declares "
            f"{float(declared_end - start):.3f} s but the streams end at "
            f"{float(read_end - start):.3f} s"
        )


def _first_frame_facts(
    container: av.container.InputContainer, video: av.VideoStream, path_text: str
) -> tuple[int, int, int, int, int]:
    """Decode the first frame: proves the stream decodes, and reads what only frames carry.

    Returns:
        (rotation in degrees 0..359, colorspace, color_primaries, color_trc, color_range).
        A `yuvj*` pixel format (MJPEG) counts as full range whatever the frame says.
    """
    try:
        for frame in container.decode(video):
            # FFmpeg reports counter-clockwise degrees in (-180, 180]; store 0..359 so equal
            # rotations compare equal.
            rotation = round(getattr(frame, "rotation", 0) or 0) % 360
            return (
                rotation,
                int(frame.colorspace),
                int(frame.color_primaries),
                int(frame.color_trc),
                2 if frame.format.name.startswith("yuvj") else int(frame.color_range),
            )
    except av.error.FFmpegError as error:
        raise MediaError(f"Cannot decode video of {path_text!r} ({error})") from error
    raise MediaError(f"No decodable video frames in {path_text!r}")


def _average_rate(
    video: av.VideoStream, frame_pts: tuple[int, ...], time_base: Fraction
) -> Fraction:
    """Frames per second: the container's average, else FFmpeg's guess, else from the pts."""
    for rate in (video.average_rate, video.guessed_rate):
        if rate:
            return Fraction(rate)
    if len(frame_pts) > 1 and frame_pts[-1] > frame_pts[0]:
        return (len(frame_pts) - 1) / ((frame_pts[-1] - frame_pts[0]) * time_base)
    return Fraction(25)  # a single frame has no rate; 25 fps is only used to pace an encoder
