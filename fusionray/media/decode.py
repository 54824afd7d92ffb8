"""Frame-accurate decoding of frame ranges, and reading of source images.

A range is decoded by seeking to the keyframe at or before its first frame and decoding forward,
matching each decoded frame to its presentation index by integer pts (never by counting frames
or by float seconds, which drift on VFR and B-frame streams).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import cast

import av
import av.error
import cv2
import numpy as np

from fusionray.errors import MediaError
from fusionray.media.probe import open_input
from fusionray.types import FrameBGR, VideoInfo


class VideoReader:
    """An open input video that yields frame ranges; reuse it for several ranges of one file.

    Use as a context manager (or call `close`). Not thread-safe: one reader per worker.
    """

    def __init__(self, info: VideoInfo) -> None:
        """Open `info.path` for decoding.

        Args:
            info: The probe result of the file; its `frame_pts` define the frame indices.
        """
        self.info = info
        self._container = open_input(info.path)
        self._stream = self._container.streams.video[info.video_stream_index]
        # Frame threading keeps the output bit-exact (H.264 decoding is fully specified) and
        # uses every core the actor was given.
        self._stream.codec_context.thread_type = "AUTO"
        self.frames_decoded = 0
        """Frames the decoder produced so far, including GOP lead-in before a range's start and
        frames retried from an earlier keyframe: the decode cost, not the frames yielded."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file and the decoder."""
        self._container.close()

    def frames(self, start: int, stop: int) -> Iterator[tuple[int, FrameBGR]]:
        """Yield `(frame_index, frame)` for every index in `[start, stop)`, in order, once each.

        Args:
            start: First presentation index, 0 <= start < stop.
            stop: One past the last index, <= `info.frame_count`.

        Yields:
            The presentation index and the frame: uint8, shape (height, width, 3), BGR, in coded
            orientation (the display rotation is not applied).

        Raises:
            ValueError: The range is empty or outside the video.
            MediaError: A frame of the range cannot be decoded.
        """
        for index, frame in self.video_frames(start, stop):
            # A view on the converted frame's plane, which it keeps alive: no copy.
            yield index, cast(FrameBGR, frame.to_ndarray(format="bgr24"))

    def video_frames(self, start: int, stop: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Like `frames`, yielding the decoder's own `av.VideoFrame`s (planes in the stream's
        pixel format, colour tags attached): nothing is converted, so the caller decides what
        to convert, and where (`fusionray.media.frame`).

        Raises:
            ValueError: The range is empty or outside the video.
            MediaError: A frame of the range cannot be decoded.
        """
        info = self.info
        if not (0 <= start < stop <= info.frame_count):
            raise ValueError(
                f"Frame range [{start}, {stop}) is outside [0, {info.frame_count}) of {info.path!r}"
            )
        # Candidate entry points, nearest first. If a demuxer's index lands after the keyframe
        # we asked for (it happens when the index holds dts rather than pts), the first decoded
        # frame is already past `start` and we retry from an earlier keyframe, finally from the
        # very start, which always works.
        keyframe = info.keyframe_at_or_before(start)
        candidates = [k for k in info.keyframe_indices if k <= keyframe][::-1] or [0]
        for attempt, entry in enumerate(candidates):
            last_attempt = attempt == len(candidates) - 1
            produced = yield from self._frames_from(
                entry, start, stop, allow_retry=not last_attempt
            )
            if produced:
                return

    def _frames_from(
        self, entry: int, start: int, stop: int, *, allow_retry: bool
    ) -> Generator[tuple[int, av.VideoFrame], None, bool]:
        """Decode from keyframe `entry`; return False (yielding nothing) if the seek overshot."""
        info = self.info
        frame_pts = info.frame_pts
        range_text = f"frames [{start}, {stop}) of {info.path!r}"
        try:
            self._container.seek(frame_pts[entry], stream=self._stream, backward=True)
            expected = start
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    self.frames_decoded += 1
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:
                        continue
                    if expected == start and pts > frame_pts[start]:
                        if allow_retry:
                            return False
                        raise MediaError(f"Decoding starts after frame {start}: {range_text}")
                    index = bisect.bisect_left(frame_pts, pts)
                    if index >= len(frame_pts) or frame_pts[index] != pts or index < expected:
                        continue  # before the range, or a pts the probe never saw
                    if index > expected:
                        raise MediaError(
                            f"Frames [{expected}, {index}) missing while decoding {range_text}"
                        )
                    yield index, frame
                    expected += 1
                    if expected == stop:
                        return True
        except av.error.FFmpegError as error:
            raise MediaError(f"Cannot decode {range_text} ({error})") from error
        raise MediaError(f"Frames [{expected}, {stop}) missing while decoding {range_text}")


def decode_frames(info: VideoInfo, start: int, stop: int) -> Iterator[tuple[int, FrameBGR]]:
    """Yield `(frame_index, frame)` for every index in `[start, stop)` of `info.path`.

    Streaming: one decoded frame is alive at a time (plus the decoder's reorder buffer).

    Args:
        info: The probe result of the video.
        start: First presentation index.
        stop: One past the last index.

    Yields:
        Presentation index and frame, uint8 (height, width, 3) BGR, in coded orientation.

    Raises:
        MediaError: The file cannot be opened or a frame of the range cannot be decoded.
    """
    with VideoReader(info) as reader:
        yield from reader.frames(start, stop)


def read_image_bgr(path: str | os.PathLike[str]) -> FrameBGR:
    """Read a source image (png, jpg, webp, bmp, ...) as a BGR frame.

    EXIF orientation is applied, alpha is dropped and grey images are expanded to 3 channels.

    Returns:
        uint8 array of shape (H, W, 3), BGR.

    Raises:
        MediaError: The file is missing or not a decodable image.
    """
    path_text = os.fspath(path)
    if not Path(path_text).is_file():
        raise MediaError(f"Source image not found: {path_text!r}")
    # imdecode on the bytes, not imread: imread cannot open non-ASCII paths on Windows.
    data = np.fromfile(path_text, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise MediaError(f"Not a readable image: {path_text!r}")
    return np.ascontiguousarray(image, dtype=np.uint8)
