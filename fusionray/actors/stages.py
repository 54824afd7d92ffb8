"""What the actors do, as plain classes: no Ray here, so the same code runs in the sequential
benchmark loop and in tests without a cluster.

Faces are found and swapped in display orientation (the video's display rotation applied), so
faces in phone footage stand upright for the detector, while the coded frames keep their
orientation. Only what the detector and the swapper look at is rotated: the detector's small
image and each face region (`fusionray.media.frame`), never the whole frame.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import cv2
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from fusionray.config import RenderConfig
from fusionray.errors import MediaError
from fusionray.faces.blazeface import BLAZEFACE_MODELS
from fusionray.faces.detect import Detector, build_detector, detection_side
from fusionray.faces.embed import ArcFaceEmbedder
from fusionray.faces.gate import VERIFY_CROP, FaceVerifier, canonical_crop_matrix
from fusionray.faces.identity import identity_similarities, scored_frame
from fusionray.faces.people import SourceSet
from fusionray.faces.pose import with_pose
from fusionray.faces.select import select_faces
from fusionray.faces.shot import ShotSelection
from fusionray.faces.table import faces_to_table, table_to_faces
from fusionray.faces.temporal import stabilize_faces
from fusionray.faces.tracks import build_face_tracks
from fusionray.media.decode import VideoReader, decode_frames
from fusionray.media.encode import EncoderSettings, encode_segment_bytes, settings_for_video
from fusionray.media.frame import (
    PlaneFrame,
    Rect,
    face_regions,
    pixel_layout,
    rotate_rect,
    scale_face,
    shift_face,
    small_bgr,
    working_frame,
)
from fusionray.media.hwaccel import DecodeChoice, choose_for_video, decoder_open_options
from fusionray.media.sequence import SequenceReader, encode_owned, working_pix_fmt
from fusionray.media.storage import local_video_info
from fusionray.models.options import model_options_from_config
from fusionray.swap.base import SourceIdentity
from fusionray.swap.factory import swap_model_names as swap_model_names  # Re-export (below).
from fusionray.swap.factory import swapper_from_config
from fusionray.types import Chunk, Face, FrameBGR, VideoInfo

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
        allow_unverified=options.allow_unverified,
    )


def verifier_from_config(config: RenderConfig, *, threads: int) -> FaceVerifier | None:
    """The face verifier (BlazeFace front on aligned crops), or None when
    `selection.verify_faces` is off."""
    if not config.selection.verify_faces:
        return None
    settings = config.detector
    options = model_options_from_config(config, providers=settings.providers, threads=threads)
    # A low threshold: the verifier reports the confidence, its callers compare it.
    return FaceVerifier(build_detector(
        "blazeface", model="front", score_threshold=0.3, nms_threshold=0.3,
        providers=settings.providers, threads=threads, cache_dir=options.cache_dir,
        shared_dirs=options.shared_dirs, offline=options.offline,
        allow_unverified=options.allow_unverified))


def gate_model_names(config: RenderConfig) -> tuple[str, ...]:
    """The model files the target gate loads wherever faces are detected (catalogue names):
    BlazeFace front when `selection.verify_faces`, whatever the job's own detector is."""
    return (BLAZEFACE_MODELS["front"],) if config.selection.verify_faces else ()


def embedder_from_config(config: RenderConfig, *, threads: int = 1) -> ArcFaceEmbedder:
    """The ArcFace embedder for reference selection and inswapper sources."""
    return ArcFaceEmbedder(model=config.swapper.recognizer, options=model_options_from_config(
        config, providers=config.swapper.providers, threads=threads))


def identity_scorer_from_config(config: RenderConfig, *, threads: int) -> ArcFaceEmbedder | None:
    """The recognizer that embeds swapped faces for run.json's identity score, or None: only
    the learned engine has one, and none is loaded where no frame is scored
    (`identity_every=0`)."""
    if config.swapper.name != "inswapper" or not config.identity_every:
        return None
    return embedder_from_config(config, threads=threads)


def display_turns(rotation: int) -> int:
    """Quarter turns counter-clockwise (np.rot90) from coded to display orientation."""
    return round(rotation / 90) % 4


def display_size(width: int, height: int, turns: int) -> tuple[int, int]:
    """(width, height) of a coded `width` x `height` frame in display orientation."""
    return (height, width) if turns % 2 else (width, height)


@dataclass
class DisplayRegion:
    """A face region of a `PlaneFrame`, read as BGR in display orientation for a swap engine."""

    coded_rect: Rect
    """The region in the coded frame, aligned to its chroma cells."""
    display_rect: Rect
    """The same pixels in display orientation (faces are shifted by its corner)."""
    image: FrameBGR
    """(h, w, 3) uint8 BGR, display orientation; the engine draws on it."""
    original: FrameBGR
    """The region as read, coded orientation (what `write_region` compares against)."""
    exact: npt.NDArray[np.float32] | None
    """Float BGR the region was rounded from (see `PlaneFrame.read_bgr`)."""


def read_region(frame: PlaneFrame, rect: Rect, turns: int) -> DisplayRegion:
    """Read the display-orientation rectangle `rect` (grown to whole chroma cells)."""
    width, height = display_size(frame.width, frame.height, turns)
    coded = frame.align_rect(rotate_rect(rect, -turns % 4, width, height))
    display = rotate_rect(coded, turns, frame.width, frame.height)
    original, exact = frame.read_bgr(coded)
    image = np.ascontiguousarray(np.rot90(original, turns)) if turns else original.copy()
    return DisplayRegion(coded, display, image, original, exact)


def write_region(frame: PlaneFrame, region: DisplayRegion, turns: int) -> int:
    """Write a region's swapped image back (only changed samples); returns pixels changed."""
    image = np.rot90(region.image, -turns) if turns else region.image
    return frame.write_bgr(region.coded_rect, np.ascontiguousarray(image), region.original,
                           region.exact)


def readable_frame(frame: av.VideoFrame) -> PlaneFrame:
    """A `PlaneFrame` to read face regions from a decoded frame (not written): its own planes
    where the format is one a `PlaneFrame` holds, else a BGR conversion of it."""
    try:
        pixel_layout(frame.format.name)
    except MediaError:
        frame = frame.reformat(format="bgr24")
    return PlaneFrame(frame)


class FaceFinder:
    """Detect faces in decoded frames, in display-orientation frame pixels, with head pose (and
    embeddings when the selection needs them).

    The detector gets a small BGR image made by swscale at its input size (`small_bgr`),
    rotated upright; its faces are scaled back to full-frame pixels. Embeddings are computed on
    full-resolution face regions only.
    """

    def __init__(self, config: RenderConfig, *, threads: int) -> None:
        self.detector = detector_from_config(config, threads=threads)
        self.embedder = (embedder_from_config(config, threads=threads)
                         if config.selection.needs_embeddings else None)
        self.verifier = verifier_from_config(config, threads=threads)
        self.verify_min_score = config.selection.verify_min_score
        self.side = detection_side(self.detector)

    @property
    def provider(self) -> str:
        return f"{self.detector.name}:{self.detector.provider}"

    def find(self, frame: av.VideoFrame, rotation: int) -> list[Face]:
        """Faces of one decoded frame (display orientation, frame pixels), best first."""
        turns = display_turns(rotation)
        side = self.side or max(frame.width, frame.height)
        small, scale_x, scale_y = small_bgr(frame, side)
        if turns:
            small = np.ascontiguousarray(np.rot90(small, turns))
            if turns % 2:
                scale_x, scale_y = scale_y, scale_x
        faces = [with_pose(scale_face(face, scale_x, scale_y))
                 for face in self.detector.detect(small)]
        if self.verifier is not None and faces:
            faces = self.verify(frame, faces, turns, small=(small, scale_x, scale_y))
        if self.embedder is not None and faces:
            faces = self.embed(frame, faces, turns)
        return faces

    def embed(self, frame: av.VideoFrame, faces: list[Face], turns: int) -> list[Face]:
        """`faces` with embeddings, each computed on its full-resolution region."""
        assert self.embedder is not None
        readable = readable_frame(frame)
        width, height = display_size(frame.width, frame.height, turns)
        result = list(faces)
        for rect, members in face_regions(faces, width, height):
            region = read_region(readable, rect, turns)
            x0, y0 = region.display_rect[:2]
            shifted = [shift_face(faces[i], -x0, -y0) for i in members]
            embedded = self.embedder.with_embeddings(region.image, shifted)
            for index, face in zip(members, embedded, strict=True):
                result[index] = replace_embedding(faces[index], face.embedding)
        return result


    def verify(self, frame: av.VideoFrame, faces: list[Face], turns: int, *,
               small: tuple[FrameBGR, float, float] | None = None) -> list[Face]:
        """The faces the target gate's verifier confirms (`fusionray.faces.gate`), in order;
        `small`: the detector's image and its scale factors, where it can serve
        (`verify_scores_with_small`)."""
        assert self.verifier is not None
        if small is None:
            scores = verify_scores(self.verifier, frame, faces, turns)
        else:
            scores = verify_scores_with_small(self.verifier, frame, faces, turns, *small)
        return [face for face, score in zip(faces, scores, strict=True)
                if score >= self.verify_min_score]


def verify_scores(verifier: FaceVerifier, frame: av.VideoFrame, faces: Sequence[Face],
                  turns: int) -> list[float]:
    """The verifier's re-detection confidence of each face of a decoded frame (faces in
    display-orientation frame pixels, `turns` quarter turns from coded to display).

    Each face's canonical crop is cut from a full-resolution region read around the crop's
    footprint (clipped to the frame, which is where the verifier's edge replication starts on
    a whole frame too), so each score is the one the whole frame in BGR would give, without
    converting the whole frame.
    """
    readable = readable_frame(frame)
    width, height = display_size(frame.width, frame.height, turns)
    scores = []
    for face in faces:
        region = read_region(readable, verify_footprint(face, width, height), turns)
        x0, y0 = region.display_rect[:2]
        scores.append(verifier.score(region.image, shift_face(face, -x0, -y0)))
    return scores


def small_image_serves(face: Face, scale_x: float, scale_y: float) -> bool:
    """Whether the verifier's canonical crop of `face` (display-orientation frame pixels) can be
    cut from the detector's small image (`scale_x`, `scale_y` frame pixels per small pixel)
    without enlarging it: the crop then takes no more detail than the small image holds."""
    matrix = canonical_crop_matrix(face)
    crop_per_frame_pixel = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    return crop_per_frame_pixel * max(scale_x, scale_y) <= 1.0


def verify_scores_with_small(verifier: FaceVerifier, frame: av.VideoFrame,
                             faces: Sequence[Face], turns: int, small: FrameBGR,
                             scale_x: float, scale_y: float) -> list[float]:
    """`verify_scores`, cutting each crop from the detector's small image (display
    orientation, area-averaged by swscale) where it holds the crop's detail
    (`small_image_serves`), else from a full-resolution region as `verify_scores` does.

    Reading and converting a face's full-resolution footprint cost more than the verifier's
    model itself (a 427 x 344 region for a 170 px face at 640 x 360). The small image is
    already made for the detector; a crop that shrinks it scores within 0.012 of the
    full-resolution crop (the demo path, 250 faces; `tests/test_render_gate.py`).
    """
    served = [small_image_serves(face, scale_x, scale_y) for face in faces]
    rest = [face for face, from_small in zip(faces, served, strict=True) if not from_small]
    # The full-resolution read only where a face needs it (it converts planes).
    full = iter(verify_scores(verifier, frame, rest, turns) if rest else [])
    return [verifier.score(small, scale_face(face, 1 / scale_x, 1 / scale_y)) if from_small
            else next(full) for face, from_small in zip(faces, served, strict=True)]


def verify_footprint(face: Face, width: int, height: int) -> Rect:
    """The display-orientation pixels the verifier's canonical crop of `face` samples (with a
    2 px margin for bilinear interpolation), clipped to the `width` x `height` frame."""
    matrix = canonical_crop_matrix(face)
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [VERIFY_CROP, 0, 1], [0, VERIFY_CROP, 1],
                        [VERIFY_CROP, VERIFY_CROP, 1]], dtype=np.float64) @ inverse.T
    x0 = min(max(0, int(np.floor(corners[:, 0].min())) - 2), width - 1)
    y0 = min(max(0, int(np.floor(corners[:, 1].min())) - 2), height - 1)
    x1 = max(min(width, int(np.ceil(corners[:, 0].max())) + 3), x0 + 1)
    y1 = max(min(height, int(np.ceil(corners[:, 1].max())) + 3), y0 + 1)
    return (x0, y0, x1, y1)


def replace_embedding(face: Face, embedding: npt.NDArray[np.float32] | None) -> Face:
    """`face` with `embedding` (a new record; faces are frozen)."""
    return Face(bbox=face.bbox, keypoints=face.keypoints, score=face.score, layout=face.layout,
                embedding=embedding, pose=face.pose)


def encoder_settings_for(config: RenderConfig, info: VideoInfo, *,
                         threads: int | None = None) -> EncoderSettings:
    """The job's segment encoder settings for this video; `threads`: the encoding actor's
    cores (None: the fixed `DEFAULT_ENCODER_THREADS`, for callers outside an actor)."""
    return settings_for_video(config.encode, info, threads=threads)


def render_pix_fmt(settings: EncoderSettings, info: VideoInfo) -> str:
    """The pixel format frames are rendered in: the encoder's, or for an image sequence its
    packed RGB working format (`fusionray.media.sequence.working_pix_fmt`)."""
    return working_pix_fmt(info.pix_fmt) if info.sequence is not None else settings.pix_fmt


def conceals(config: RenderConfig) -> bool:
    """Whether actor decodes conceal undecodable frames (`media.strict_decode` off)."""
    return not config.media.strict_decode


def choose_decoder_for(config: RenderConfig, info: VideoInfo) -> DecodeChoice:
    """Where this process decodes `info` (`gpu.decode`, the GPU Ray assigned this actor, what
    PyAV's build offers); NVDEC is verified on the video's first frame."""
    if info.sequence is not None:
        return DecodeChoice("cpu", reason=f"{info.codec_name} image sequence")
    return choose_for_video(local_video_info(info).path, info.codec_name, config.gpu.decode)


def open_reader(config: RenderConfig, info: VideoInfo,
                choice: DecodeChoice | None = None, *,
                threads: int = 0) -> VideoReader | SequenceReader:
    """A reader of `info` for an actor: concealing unless `media.strict_decode`, on the
    decoder `choice` (CPU when None), with `threads` decoder threads (0: FFmpeg's own count);
    an image sequence reads its files."""
    if info.sequence is not None:
        return SequenceReader(info, conceal=conceals(config))
    return VideoReader(local_video_info(info), conceal=conceals(config), threads=threads,
                       open_options=decoder_open_options(choice) if choice else None)


def passthrough_segment(config: RenderConfig, info: VideoInfo, chunk: Chunk, *,
                        concealed: list[int] | None = None) -> bytes:
    """A chunk's owned frames re-encoded unswapped, with the job's settings (on_chunk_error=
    passthrough). The frames take the render path's planes, converted only where the output
    format differs (`working_frame`), so they equal an unswapped render's. Frames concealed
    while decoding are appended to `concealed`. Raises `MediaError` when the frames themselves
    cannot be decoded (or, with `media.strict_decode`, one is damaged)."""
    if info.sequence is not None:
        with SequenceReader(info) as frames:
            return encode_owned((frame for _, frame in frames.video_frames(chunk.start,
                                                                           chunk.stop)),
                                info, chunk.start)
    settings = encoder_settings_for(config, info)
    with VideoReader(local_video_info(info), conceal=conceals(config)) as reader:
        try:
            return encode_segment_bytes(
                (working_frame(frame, settings.pix_fmt, writable=False)
                 for _, frame in reader.video_frames(chunk.start, chunk.stop)),
                pts=info.frame_pts[chunk.start:chunk.stop], info=info, settings=settings,
            )
        finally:
            if concealed is not None:
                concealed.extend(reader.concealed)


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
    frames_decoded: int = 0
    """Frames the decoder produced for this pass, GOP lead-in included."""
    concealed_frames: tuple[int, ...] = ()
    """Frames of the read range that could not be decoded and were concealed (ascending)."""


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
    frames_decoded: int = 0
    """Frames decoded to make this chunk, GOP lead-in included, over every pass (a detection
    pre-pass counts too); `frames` of them were written."""
    identity_scores: np.ndarray | None = None
    """(N, 2) float32 per swapped face: cosine similarity of the swapped face to the source
    identity, and to the original target face (`fusionray.faces.identity`); None without a
    recognizer."""
    concealed_frames: tuple[int, ...] = ()
    """Owned frames that could not be decoded (or predict from one that could not) and were
    written as a copy of the last good frame (ascending; `media.strict_decode` off)."""
    notes: tuple[str, ...] = ()
    """The swap engine's notes for run.json (e.g. why its batch stays at 1)."""


class DetectStage:
    """Decode a chunk's read range and detect every face in it (with pose, and embeddings
    when the selection needs them): the detection pre-pass."""

    def __init__(self, config: RenderConfig, *, threads: int = 1) -> None:
        cv2.setNumThreads(threads)
        self.config = config
        self.finder = FaceFinder(config, threads=threads)
        self.detector = self.finder.detector

    def __call__(self, info: VideoInfo, chunk: Chunk) -> DetectResult:
        faces_by_frame: dict[int, list[Face]] = {}
        decode_seconds = detect_seconds = 0.0
        with open_reader(self.config, info) as reader:
            frames = reader.video_frames(chunk.read_start, chunk.read_stop)
            clock = time.perf_counter()
            for frame_index, frame in frames:
                now = time.perf_counter()
                decode_seconds += now - clock
                faces = self.finder.find(frame, info.rotation)
                if faces:
                    faces_by_frame[frame_index] = faces
                clock = time.perf_counter()
                detect_seconds += clock - now
            decoded = reader.frames_decoded
            concealed = tuple(sorted(set(reader.concealed)))
        return DetectResult(
            chunk_index=chunk.index,
            detections=faces_to_table(faces_by_frame),
            frames=chunk.read_frames,
            decode_seconds=decode_seconds,
            detect_seconds=detect_seconds,
            provider=self.finder.provider,
            frames_decoded=decoded,
            concealed_frames=concealed,
        )


class SwapStage:
    """Select faces, swap them into a chunk's owned frames and encode the segment."""

    def __init__(self, config: RenderConfig, *, threads: int = 1) -> None:
        cv2.setNumThreads(threads)
        self.config = config
        self.swapper = swapper_from_config(config, threads=threads)
        self.scorer = identity_scorer_from_config(config, threads=threads)

    def __call__(
        self, info: VideoInfo, chunk: Chunk, detected: DetectResult,
        source: SourceIdentity | SourceSet, shot: ShotSelection | None = None,
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
        scores: list[np.ndarray] = []

        concealed: list[int] = []

        def swapped_frames() -> Iterator[np.ndarray]:
            nonlocal swapped, frames_with_faces
            clock = time.perf_counter()
            for frame_index, frame in decode_frames(local_video_info(info), chunk.start,
                                                    chunk.stop, conceal=conceals(self.config),
                                                    concealed=concealed):
                now = time.perf_counter()
                timings["decode"] += now - clock
                targets = select_faces(
                    faces_by_frame.get(frame_index, []), self.config.selection,
                    reference=getattr(source, "reference_embedding", None), shot=shot,
                    frame_index=frame_index)
                selected_by_frame[frame_index] = targets
                if targets:
                    upright = to_display(frame, info.rotation)
                    swapped_frame = upright
                    # Map mode: each face with its own person's identity, one pass per person.
                    for identity, faces in self._by_identity(targets, source, shot,
                                                             frame_index):
                        swapped_frame = self.swapper.swap(swapped_frame, faces, identity)
                        if (self.scorer is not None and identity.embedding is not None
                                and scored_frame(frame_index, self.config.identity_every)):
                            scores.append(identity_similarities(
                                self.scorer.embed(upright, faces),
                                self.scorer.embed(swapped_frame, faces), identity.embedding))
                    frame = from_display(swapped_frame, info.rotation)
                    swapped += len(targets)
                    frames_with_faces += 1
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
            frames_decoded=chunk.owned_frames,
            identity_scores=np.concatenate(scores) if scores else None,
            concealed_frames=tuple(sorted(set(concealed))),
            notes=tuple(getattr(self.swapper, "notes", ())),
        )

    @staticmethod
    def _by_identity(
        targets: list[Face], source: SourceIdentity | SourceSet, shot: ShotSelection | None,
        frame_index: int,
    ) -> list[tuple[SourceIdentity, list[Face]]]:
        """The frame's targets grouped by the identity they get, in person order."""
        if not isinstance(source, SourceSet):
            return [(source, targets)]
        if shot is None:
            raise ValueError("A SourceSet (selection.mode=map) needs a shot selection")
        groups: dict[int, list[Face]] = {}
        for face, index in shot.match(targets, frame_index):
            groups.setdefault(index, []).append(face)
        return [(source.identity(index), groups[index]) for index in sorted(groups)]
