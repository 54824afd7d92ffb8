"""Small frozen records shared by every stage, and the array aliases they use.

Frames are numpy arrays in OpenCV's convention: `uint8`, shape `(H, W, 3)`, BGR channel order.
Coordinates are float pixels in the frame, x to the right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np
import numpy.typing as npt

FrameBGR = npt.NDArray[np.uint8]
"""A decoded frame: uint8, shape (H, W, 3), BGR."""

FloatArray = npt.NDArray[np.float32]

KeypointLayout = Literal["arcface5", "blazeface6"]
"""Order of a face's keypoints.

- `arcface5`: left eye, right eye, nose, left mouth corner, right mouth corner (image left/right).
- `blazeface6`: left eye, right eye, nose tip, mouth centre, left ear, right ear (image
  left/right; BlazeFace's own order is subject-right first, which is image-left).
"""

KEYPOINT_COUNTS: dict[str, int] = {"arcface5": 5, "blazeface6": 6}


@dataclass(frozen=True)
class Face:
    """One detected face in one frame or image."""

    bbox: FloatArray
    """(4,) float32: x1, y1, x2, y2 in pixels."""
    keypoints: FloatArray
    """(N, 2) float32 pixel coordinates, N and order given by `layout`."""
    score: float
    """Detector confidence in [0, 1]."""
    layout: KeypointLayout = "arcface5"
    embedding: FloatArray | None = None
    """(512,) float32 L2-normalised identity embedding, when a recognizer ran; else None."""
    pose: tuple[float, float, float] | None = None
    """Head pose (yaw, pitch, roll) in degrees estimated from the keypoints, or None.
    Yaw > 0: the nose points towards image right; pitch > 0: it looks down; roll > 0: the head
    tilts clockwise in the image."""

    def __post_init__(self) -> None:
        bbox = np.asarray(self.bbox, dtype=np.float32).reshape(-1)
        keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.layout not in KEYPOINT_COUNTS:
            raise ValueError(
                f"Unknown keypoint layout {self.layout!r}. Choose one of: "
                + ", ".join(KEYPOINT_COUNTS)
            )
        if bbox.shape != (4,):
            raise ValueError(f"Face.bbox must have 4 values, got shape {bbox.shape}")
        expected = (KEYPOINT_COUNTS[self.layout], 2)
        if keypoints.shape != expected:
            raise ValueError(
                f"Face.keypoints for layout {self.layout} must be {expected}, got {keypoints.shape}"
            )
        object.__setattr__(self, "bbox", bbox)
        object.__setattr__(self, "keypoints", keypoints)
        if self.embedding is not None:
            embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
            if embedding.shape != (512,):
                raise ValueError(f"Face.embedding must have 512 values, got {embedding.shape}")
            object.__setattr__(self, "embedding", embedding)
        if self.pose is not None:
            object.__setattr__(self, "pose", tuple(float(v) for v in self.pose))

    @property
    def area(self) -> float:
        """Bounding-box area in square pixels."""
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class AudioStreamInfo:
    """An audio stream of the input, copied to the output packet for packet."""

    index: int
    """Stream index in the input container."""
    codec_name: str
    packet_count: int
    time_base: Fraction | None = None
    """Seconds per pts tick of the stream (sizes the MP4 movie timescale on output)."""


@dataclass(frozen=True)
class ImageSequence:
    """Numbered image files that make one video: `folder/pattern % number` for every number
    in `[first, first + count)` (`fusionray.media.sequence` finds and checks them)."""

    folder: str
    pattern: str
    """printf-style file name with one integer field, e.g. `frame_%04d.png`."""
    first: int
    """Number of the first frame (kept on output)."""
    count: int
    codec: str
    """Image codec of the files (`png`, `tiff`, `dpx`, `exr`)."""

    def name(self, index: int) -> str:
        """File name of presentation index `index` (0-based)."""
        return self.pattern % (self.first + index)

    @property
    def location(self) -> str:
        """`folder/pattern`, the form `+video=` and `output=` accept."""
        return f"{self.folder.rstrip('/')}/{self.pattern}"


@dataclass(frozen=True)
class VideoInfo:
    """What the probe learnt about the input: exact, from packets, never from `stream.frames`."""

    path: str
    format_name: str
    codec_name: str
    width: int
    """Coded frame width in pixels (before display rotation)."""
    height: int
    pix_fmt: str
    time_base: Fraction
    """Seconds per pts tick of the video stream."""
    average_rate: Fraction
    """Frames per second (average; the pts carry the exact timing)."""
    frame_pts: tuple[int, ...]
    """pts of every frame in presentation order; len == frame_count."""
    keyframe_indices: tuple[int, ...]
    """Presentation indices of keyframes, ascending; a decode may start at any of them."""
    rotation: int = 0
    """Display rotation in degrees counter-clockwise (FFmpeg display matrix), kept on output."""
    audio_streams: tuple[AudioStreamInfo, ...] = ()
    video_stream_index: int = 0
    frame_durations: tuple[int, ...] = field(default=(), repr=False)
    """Packet durations in pts ticks, presentation order (0 where the container has none)."""
    colorspace: int = 2
    """YUV matrix of the source (FFmpeg AVColorSpace: 1 BT.709, 5/6 BT.601, 9 BT.2020,
    2 unspecified). Decoding converts with it and encoding must use the same one."""
    color_primaries: int = 2
    """FFmpeg AVColorPrimaries of the source (2 unspecified); tagged on the output."""
    color_trc: int = 2
    """FFmpeg AVColorTransferCharacteristic of the source (2 unspecified); tagged on the output."""
    color_range: int = 0
    """FFmpeg AVColorRange of the source (0 unspecified, 1 limited/tv, 2 full/pc); decoding
    converts with it, encoding codes and tags the same one."""
    profile: str = ""
    """The decoder's profile name of the video stream (ProRes `HQ`, DNxHR `DNXHR HQX`, H.264
    `High`); empty when the codec has none. `encode.profile=auto` follows it."""
    timecode: str | None = None
    """Start timecode of the first frame (`HH:MM:SS:FF`, `;` before the frames = drop-frame)
    from the video stream's tag, a tmcd/data track or the container; None when absent."""
    sequence: ImageSequence | None = None
    """Set when the input is an image sequence (then `path` is `sequence.location`, pts are
    frame indices and every frame is a keyframe)."""

    @property
    def frame_count(self) -> int:
        return len(self.frame_pts)

    @property
    def duration_seconds(self) -> float:
        if not self.frame_pts:
            return 0.0
        last = self.frame_durations[-1] if self.frame_durations else 0
        ticks = self.frame_pts[-1] - self.frame_pts[0] + (last or 0)
        return float(ticks * self.time_base)

    def keyframe_at_or_before(self, frame_index: int) -> int:
        """The presentation index of the last keyframe at or before `frame_index`."""
        best = 0
        for keyframe in self.keyframe_indices:
            if keyframe > frame_index:
                break
            best = keyframe
        return best


@dataclass(frozen=True)
class Chunk:
    """A unit of work: owns frames [start, stop) and reads [read_start, read_stop)."""

    index: int
    start: int
    stop: int
    read_start: int
    read_stop: int

    def __post_init__(self) -> None:
        if not (0 <= self.read_start <= self.start < self.stop <= self.read_stop):
            raise ValueError(
                f"Chunk {self.index}: need 0 <= read_start <= start < stop <= read_stop, got "
                f"read [{self.read_start}, {self.read_stop}) owned [{self.start}, {self.stop})"
            )

    @property
    def owned_frames(self) -> int:
        return self.stop - self.start

    @property
    def read_frames(self) -> int:
        return self.read_stop - self.read_start
