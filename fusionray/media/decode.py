"""Frame-accurate decoding of frame ranges, and reading of source images.

A range is decoded by seeking to the keyframe at or before its first frame and decoding forward,
matching each decoded frame to its presentation index by integer pts (never by counting frames
or by float seconds, which drift on VFR and B-frame streams).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, cast

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

    def __init__(self, info: VideoInfo, *, conceal: bool = False, threads: int = 0,
                 open_options: Mapping[str, Any] | None = None) -> None:
        """Open `info.path` for decoding.

        Args:
            info: The probe result of the file; its `frame_pts` define the frame indices.
            conceal: Conceal undecodable frames instead of failing (`conceal_damage`);
                `concealed` lists the frame indices that were filled.
            threads: Decoder threads: the cores the decoding actor may use (0: FFmpeg's
                automatic count, every core of the machine).
            open_options: Extra keyword arguments for `av.open`, e.g. the hardware decoder
                (`fusionray.media.hwaccel.decoder_open_options`).
        """
        if threads < 0:
            raise ValueError(f"Decoder threads must be >= 0, got {threads}")
        self.info = info
        self.conceal = conceal
        self.concealed: list[int] = []
        """Frame indices filled by concealment, in the order they were yielded."""
        self._frozen: tuple[int, int] | None = None
        """[lost frame, next keyframe): frames decoded from a lost reference, to conceal."""
        self.frames_decoded = 0
        """Frames the decoder produced so far, including GOP lead-in before a range's start and
        frames retried from an earlier keyframe: the decode cost, not the frames yielded."""
        self._damage: av.error.FFmpegError | None = None
        """Strict mode: the decoder's refusal of a packet, held until the lost frame shows."""
        self._container = open_input(info.path, **(open_options or {}))
        self._stream = self._container.streams.video[info.video_stream_index]
        # Frame threading keeps the output bit-exact (H.264 decoding is fully specified) and
        # uses every core the actor was given, and no more (actors share a node's cores).
        self._stream.codec_context.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads

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
        to convert, and where (`fusionray.media.frame`). A concealed frame is a copy of its
        stand-in, never the same object twice.

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
            self._damage = None
            expected = start
            decoded_next = entry  # the index the decoder should give next, from the entry
            last_good: av.VideoFrame | None = None  # newest frame not predicted from a loss
            for packet in self._container.demux(self._stream):
                for frame in self._decode_packet(packet):
                    self.frames_decoded += 1
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:
                        continue
                    if self._damage is not None and decoded_next < len(frame_pts) and \
                            pts > frame_pts[decoded_next]:
                        # Strict: the gap names the lost frame (the refused packet does not:
                        # with frame threads the error surfaces on a later packet).
                        gap_stop = bisect.bisect_left(frame_pts, pts)
                        raise MediaError(
                            f"Cannot decode {range_text}: frames [{decoded_next}, {gap_stop}) "
                            f"are damaged ({self._damage}); media.strict_decode=false conceals "
                            "them")
                    if expected == start and pts > frame_pts[start]:
                        if allow_retry:
                            return False
                        if not self.conceal:
                            raise MediaError(f"Decoding starts after frame {start}: "
                                             f"{range_text}")
                    index = bisect.bisect_left(frame_pts, pts)
                    if index >= len(frame_pts) or frame_pts[index] != pts:
                        continue  # a pts the probe never saw
                    frozen = False
                    if not self.conceal:
                        decoded_next = max(decoded_next, index + 1)
                    else:
                        # Losses are tracked from the entry keyframe, before the range too, so
                        # every chunk that decodes this GOP conceals the same frames.
                        if index > decoded_next:
                            self._freeze(decoded_next)
                        decoded_next = max(decoded_next, index + 1)
                        frozen = self._frozen is not None and \
                            self._frozen[0] <= index < self._frozen[1]
                        if not frozen or last_good is None:
                            last_good = frame
                    if index < expected:
                        continue  # before the range
                    if index > expected:
                        stop_fill = min(index, stop)
                        yield from self.conceal_damage(expected, stop_fill, last_good, range_text)
                        expected = stop_fill
                        if expected == stop:
                            return self._undamaged()
                    if frozen and last_good is not frame:
                        # Predicted from the lost frame: garbage, whatever the decoder says.
                        yield from self.conceal_damage(index, index + 1, last_good, range_text)
                    else:
                        yield index, frame
                    expected = index + 1
                    if expected == stop:
                        return self._undamaged()
            self._undamaged()
        except av.error.FFmpegError as error:
            raise MediaError(f"Cannot decode {range_text} ({error})") from error
        yield from self.conceal_damage(expected, stop, last_good, range_text)
        return True

    def _undamaged(self) -> bool:
        """True; in strict mode, raise the decoder's refusal of a packet when the range ended
        before the lost frame showed (B-frames of the range may reference it)."""
        if self._damage is not None:
            raise self._damage
        return True

    def _decode_packet(self, packet: av.Packet) -> list[av.VideoFrame]:
        """The packet's frames; with `conceal`, a packet the decoder refuses yields none."""
        try:
            return packet.decode()
        except av.error.InvalidDataError as error:
            if not self.conceal:
                # Strict: keep decoding until the gap shows which frame was lost, then fail
                # naming it (`_frames_from`).
                self._damage = self._damage or error
                return []
            # The lost frame shows as a gap in the frames that come out (with frame threads,
            # later than this error), which `_freeze` handles.
            return []

    def _freeze(self, lost: int) -> None:
        """Conceal every frame after `lost` up to the next keyframe: they may predict from it,
        and H.264 flags none of them as corrupt (measured), so their pixels cannot be trusted."""
        following = [k for k in self.info.keyframe_indices if k > lost]
        self._frozen = (lost, following[0] if following else self.info.frame_count)

    def conceal_damage(
        self, first: int, stop: int, source: av.VideoFrame | None, range_text: str
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield frames `[first, stop)` that did not decode (or decoded from a lost reference)
        as copies of `source`, the newest trustworthy frame; recorded in `concealed`.

        Raises:
            MediaError: concealment is off (`media.strict_decode`), or there is no frame to
                conceal with.
        """
        if first >= stop:
            return
        if not self.conceal or source is None:
            raise MediaError(f"Frames [{first}, {stop}) missing while decoding {range_text}")
        for index in range(first, stop):
            self.concealed.append(index)
            yield index, copy_video_frame(source)


def copy_video_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A new frame with `frame`'s planes, pixel format and colour tags (its own buffers, so a
    caller that draws on one concealed frame never draws on another)."""
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        rows = min(source.height, target.height)
        width = min(source.line_size, target.line_size)
        source_rows = np.frombuffer(memoryview(source), np.uint8).reshape(-1, source.line_size)
        target_rows = np.frombuffer(memoryview(target), np.uint8).reshape(-1, target.line_size)
        target_rows[:rows, :width] = source_rows[:rows, :width]
    copy.pts, copy.time_base = frame.pts, frame.time_base
    copy.color_range, copy.colorspace = frame.color_range, frame.colorspace
    copy.color_primaries, copy.color_trc = frame.color_primaries, frame.color_trc
    return copy


def decode_frames(info: VideoInfo, start: int, stop: int, *, conceal: bool = False,
                  concealed: list[int] | None = None
                  ) -> Generator[tuple[int, FrameBGR], None, None]:
    """Yield `(frame_index, frame)` for every index in `[start, stop)` of `info.path`.

    Streaming: one decoded frame is alive at a time (plus the decoder's reorder buffer);
    closing the generator early releases the container.

    Args:
        info: The probe result of the video.
        start: First presentation index.
        stop: One past the last index.
        conceal: Conceal undecodable frames (see `VideoReader.conceal_damage`).
        concealed: Receives the indices of concealed frames.

    Yields:
        Presentation index and frame, uint8 (height, width, 3) BGR, in coded orientation.

    Raises:
        MediaError: The file cannot be opened or a frame of the range cannot be decoded.
    """
    if info.sequence is not None:
        from fusionray.media.sequence import SequenceReader

        with SequenceReader(info) as frames:
            yield from frames.frames(start, stop)
        return
    with VideoReader(info, conceal=conceal) as reader:
        try:
            yield from reader.frames(start, stop)
        finally:
            if concealed is not None:
                concealed.extend(reader.concealed)


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
