"""What the actors do, as plain classes: no Ray here, so the same code runs in the sequential
benchmark loop and in tests without a cluster.

Frames are handled in display orientation: a frame is rotated by the video's display rotation
before detection and swapping (np.rot90, lossless) and rotated back before encoding, so faces in
phone footage stand upright for the detector and the coded frames keep their orientation.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from fusionray.config import RenderConfig
from fusionray.faces.detect import Detector, build_detector
from fusionray.faces.embed import ArcFaceEmbedder
from fusionray.faces.pose import with_pose
from fusionray.faces.select import select_faces
from fusionray.faces.table import faces_to_table, table_to_faces
from fusionray.faces.temporal import stabilize_faces
from fusionray.faces.tracks import build_face_tracks
from fusionray.media.decode import decode_frames
from fusionray.media.encode import EncoderSettings, build_encoder_settings, encode_segment_bytes
from fusionray.media.storage import local_video_info
from fusionray.models.options import model_options_from_config
from fusionray.swap.base import SourceIdentity
from fusionray.swap.factory import swap_model_names as swap_model_names  # Re-export (below).
from fusionray.swap.factory import swapper_from_config
from fusionray.types import Chunk, Face, VideoInfo

# Engine construction from config lives in `fusionray.swap.factory` (and `model_options_from_
# config` in `fusionray.models.options`); the driver and benchmarks still import them from here.


def to_display(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a coded frame (H, W, 3) counter-clockwise by `rotation` degrees for display."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


def from_display(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Inverse of `to_display`."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frame, -turns)) if turns else frame


def detector_from_config(config: RenderConfig, *, threads: int) -> Detector:
    """The detector the config asks for, with `threads` CPU inference threads."""
    settings = config.detector
    options = model_options_from_config(config, providers=settings.providers, threads=threads)
    return build_detector(
        settings.name,
        model=settings.variant,
        score_threshold=settings.score_threshold,
        nms_threshold=settings.nms_threshold,
        providers=settings.providers,
        threads=threads,
        cache_dir=options.cache_dir,
        # tiles 0 (auto) is fixed per video by the job (`resolve_for_video`); where no video is
        # known (a lone source image) one pass is the auto choice.
        tiles=settings.tiles or 1,
        input_size=settings.input_size,
        shared_dirs=options.shared_dirs,
        offline=options.offline,
    )


def embedder_from_config(config: RenderConfig, *, threads: int = 1) -> ArcFaceEmbedder:
    """The ArcFace embedder for reference selection and inswapper sources."""
    return ArcFaceEmbedder(model=config.swapper.recognizer, options=model_options_from_config(
        config, providers=config.swapper.providers, threads=threads))


TEST_HOOKS_ENV = "FUSIONRAY_TEST_HOOKS"
"""Test hook, for the fault-injection tests only: the path of a JSON file read at the start of
every swap call and when a swap stage starts. Keys: `frame_delay_seconds` (sleep per frame, so
a fault lands mid-job), `fail_swap_start` (the swap stage's constructor raises),
`fail_chunks` (chunk indices whose swap raises), `marker_dir` (a file `chunk-I-pid-P` is created
there when chunk I starts in worker process P). Unset in production: then it costs one getenv."""


def read_test_hooks() -> dict[str, object]:
    """The fault-injection settings named by `FUSIONRAY_TEST_HOOKS` (empty when unset)."""
    path = os.environ.get(TEST_HOOKS_ENV)
    if not path:
        return {}
    try:
        hooks = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return hooks if isinstance(hooks, dict) else {}


def encoder_settings_for(config: RenderConfig, info: VideoInfo) -> EncoderSettings:
    """The job's segment encoder settings for this video."""
    return build_encoder_settings(
        codec=config.encode.codec,
        crf=config.encode.crf,
        preset=config.encode.preset,
        pix_fmt=config.encode.pix_fmt,
        lossless=config.encode.lossless,
        width=info.width,
        height=info.height,
    )


def passthrough_segment(config: RenderConfig, info: VideoInfo, chunk: Chunk) -> bytes:
    """A chunk's owned frames re-encoded unswapped, with the job's settings (on_chunk_error=
    passthrough). Raises `MediaError` when the frames themselves cannot be decoded."""
    return encode_segment_bytes(
        (frame for _, frame in decode_frames(local_video_info(info), chunk.start, chunk.stop)),
        pts=info.frame_pts[chunk.start:chunk.stop], info=info,
        settings=encoder_settings_for(config, info),
    )


def thread_count(num_cpus: float) -> int:
    """Inference/OpenCV threads for an actor that reserved `num_cpus` CPUs."""
    return max(1, math.ceil(num_cpus))


@dataclass(frozen=True)
class DetectResult:
    """Detections of a chunk's read range and what they cost."""

    chunk_index: int
    detections: pa.Table
    """See `fusionray.faces.table.DETECTIONS_SCHEMA`; frames of the read range."""
    frames: int
    decode_seconds: float
    detect_seconds: float
    provider: str


@dataclass(frozen=True)
class ChunkResult:
    """An encoded segment of a chunk's owned frames and what it cost."""

    chunk_index: int
    segment: bytes
    """A self-contained encoded segment (see `fusionray.media.encode`)."""
    frames: int
    faces_swapped: int
    frames_with_faces: int
    seconds: dict[str, float]
    """Actor seconds per stage: detect_decode, detect, swap_decode, swap, encode."""
    providers: tuple[str, ...]
    """`engine:provider` of the detector and swapper that made this chunk."""
    face_tracks: pa.Table | None = None
    """Owned frames' faces and whether each was swapped (`fusionray.faces.tracks`)."""


class DetectStage:
    """Decode a chunk's read range and detect every face in it (with pose, and embeddings
    when the selection needs them)."""

    def __init__(self, config: RenderConfig, *, threads: int = 1) -> None:
        cv2.setNumThreads(threads)
        self.detector = detector_from_config(config, threads=threads)
        self.embedder = (embedder_from_config(config, threads=threads)
                         if config.selection.needs_embeddings else None)

    def describe(self, frame: np.ndarray, faces: list[Face]) -> list[Face]:
        """Add head pose to every face, and embeddings when an embedder is configured."""
        faces = [with_pose(face) for face in faces]
        if self.embedder is not None and faces:
            faces = self.embedder.with_embeddings(frame, faces)
        return faces

    def __call__(self, info: VideoInfo, chunk: Chunk) -> DetectResult:
        faces_by_frame: dict[int, list[Face]] = {}
        decode_seconds = detect_seconds = 0.0
        frames = decode_frames(local_video_info(info), chunk.read_start, chunk.read_stop)
        clock = time.perf_counter()
        for frame_index, frame in frames:
            now = time.perf_counter()
            decode_seconds += now - clock
            upright = to_display(frame, info.rotation)
            faces = self.describe(upright, self.detector.detect(upright))
            if faces:
                faces_by_frame[frame_index] = faces
            clock = time.perf_counter()
            detect_seconds += clock - now
        return DetectResult(
            chunk_index=chunk.index,
            detections=faces_to_table(faces_by_frame),
            frames=chunk.read_frames,
            decode_seconds=decode_seconds,
            detect_seconds=detect_seconds,
            provider=f"{self.detector.name}:{self.detector.provider}",
        )


class SwapStage:
    """Select faces, swap them into a chunk's owned frames and encode the segment."""

    def __init__(self, config: RenderConfig, *, threads: int = 1) -> None:
        cv2.setNumThreads(threads)
        self.config = config
        if read_test_hooks().get("fail_swap_start"):
            raise RuntimeError("test hook: the swap stage cannot start")
        self.swapper = swapper_from_config(config, threads=threads)

    def __call__(
        self, info: VideoInfo, chunk: Chunk, detected: DetectResult, source: SourceIdentity
    ) -> ChunkResult:
        # Tracked and smoothed over the read range; each owned frame's faces depend only on
        # the frames within temporal.reach <= chunk.overlap of it, so chunking cannot show.
        faces_by_frame = stabilize_faces(
            table_to_faces(detected.detections),
            owned=range(chunk.start, chunk.stop),
            read=range(chunk.read_start, chunk.read_stop),
            frame_count=info.frame_count,
            settings=self.config.temporal,
        )
        selected_by_frame: dict[int, list[Face]] = {}
        timings = {"decode": 0.0, "swap": 0.0, "encode": 0.0}
        swapped = frames_with_faces = 0
        hooks = read_test_hooks()
        if hooks:
            frame_delay = float(hooks.get("frame_delay_seconds", 0.0))  # type: ignore[arg-type]
            marker_dir = hooks.get("marker_dir")
            if marker_dir:
                Path(str(marker_dir), f"chunk-{chunk.index}-pid-{os.getpid()}").touch()
            if chunk.index in (hooks.get("fail_chunks") or []):  # type: ignore[operator]
                raise RuntimeError(f"test hook: chunk {chunk.index} fails")
        else:
            frame_delay = 0.0

        def swapped_frames() -> Iterator[np.ndarray]:
            nonlocal swapped, frames_with_faces
            clock = time.perf_counter()
            for frame_index, frame in decode_frames(local_video_info(info), chunk.start,
                                                    chunk.stop):
                now = time.perf_counter()
                timings["decode"] += now - clock
                targets = select_faces(faces_by_frame.get(frame_index, []), self.config.selection,
                                       reference=source.reference_embedding)
                selected_by_frame[frame_index] = targets
                if targets:
                    upright = to_display(frame, info.rotation)
                    frame = from_display(self.swapper.swap(upright, targets, source),
                                         info.rotation)
                    swapped += len(targets)
                    frames_with_faces += 1
                if frame_delay:
                    time.sleep(frame_delay)
                clock = time.perf_counter()
                timings["swap"] += clock - now
                yield frame

        settings = encoder_settings_for(self.config, info)
        started = time.perf_counter()
        segment = encode_segment_bytes(
            swapped_frames(), pts=info.frame_pts[chunk.start:chunk.stop], info=info,
            settings=settings,
        )
        # Encoding is interleaved with decode and swap (frames stream through the encoder), so
        # its share is the total minus the time spent producing frames.
        total = time.perf_counter() - started
        timings["encode"] = max(0.0, total - timings["decode"] - timings["swap"])
        return ChunkResult(
            chunk_index=chunk.index,
            segment=segment,
            frames=chunk.owned_frames,
            faces_swapped=swapped,
            frames_with_faces=frames_with_faces,
            seconds={
                "detect_decode": detected.decode_seconds,
                "detect": detected.detect_seconds,
                "swap_decode": timings["decode"],
                "swap": timings["swap"],
                "encode": timings["encode"],
            },
            providers=(
                detected.provider,
                f"{self.swapper.name}:{getattr(self.swapper, 'provider', 'none')}",
            ),
            face_tracks=build_face_tracks(faces_by_frame, selected_by_frame, info,
                                          start=chunk.start, stop=chunk.stop)
            if self.config.export_faces else None,
        )
