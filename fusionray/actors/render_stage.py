"""Render one chunk in one call: decode once, detect, track + smooth, swap, encode.

The chunk's read range is decoded ONCE, streaming through steps on their own threads
(`run_steps`), joined by bounded queues (an actor of one core chains them in its own thread,
`chain_steps`):

    decode ─► detect ─► track ─► prepare ─► forward ─► paste ─► encode (caller's thread)

- decode: `av.VideoFrame`s of the read range, nothing converted (GOP lead-in counted), on
  the decoder `gpu.decode` chooses for this actor (NVDEC or CPU; `decode:<label>` in the
  chunk's providers). Undecodable frames are concealed with the last good frame and listed in
  `ChunkResult.concealed_frames` (or, with `media.strict_decode`, fail the chunk naming them).
- detect: faces of every read frame from a small swscale image (`FaceFinder`, whose target
  gate re-detects each face on its full-resolution aligned crop), or the
  detections of a pre-pass (`detected`) when one ran. Frames outside the owned range are
  dropped here; only their detections go on.
- track: a sliding window. A frame's faces depend only on the detections within
  `temporal.reach <= chunk.overlap` frames of it (`faces_near`), so owned frame f is released
  as soon as frame f + reach has been detected; at most reach + 1 frames wait here.
  Frames after the owned range are kept (unswapped) as the encoder's look-ahead.
- prepare: the frame in the encoder's pixel format (`working_frame`: no copy when the formats
  match and the decoder holds no reference, one conversion otherwise), each face region read
  as BGR, and the engine's CPU preparation (alignment) of its faces.
- forward: the swap model, over the faces of several consecutive frames in one call.
- paste: composite into each region, write the changed samples back into the planes; with a
  recognizer (inswapper) each swapped face of a scored frame (`identity_every`) is embedded
  again for the identity score.
- encode: `av.VideoFrame`s in the output pixel format straight into the encoder, then the
  look-ahead frames (`encode_segment_bytes(lookahead=...)`: rate control sees past the
  chunk's end, so its last frames are not coded as the end of a stream; their packets are
  dropped).

With a `SourceSet` (`selection.mode=map`) each target gets the identity of the person its shot
track was assigned to: prepare and forward run per identity, paste composites them all.

Memory is bounded by the window, the look-ahead and the queue depths (about 3 * overlap + 1 +
6 * depth frames), not by the chunk length. Every step keeps frame order, and what reaches the model
in one call is decided by the frames' content (never by timing), so output bytes do not depend
on thread scheduling.

Engines with the phased interface (`prepare` / `forward` / `paste`, PLAN decision 3) are driven
phase by phase; an engine with only `swap()` runs whole in the forward step.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import cv2
import numpy as np

from fusionray.actors.stages import (
    ChunkResult,
    DetectResult,
    DisplayRegion,
    FaceFinder,
    choose_decoder_for,
    display_size,
    display_turns,
    encoder_settings_for,
    identity_scorer_from_config,
    open_reader,
    read_region,
    render_pix_fmt,
    swapper_from_config,
    write_region,
)
from fusionray.actors.stream_stage import StepClock, chain_steps, run_steps
from fusionray.config import RenderConfig
from fusionray.faces.embed import ArcFaceEmbedder
from fusionray.faces.identity import identity_similarities, scored_frame
from fusionray.faces.people import SourceSet
from fusionray.faces.select import select_faces
from fusionray.faces.shot import ShotSelection
from fusionray.faces.table import table_to_faces
from fusionray.faces.temporal import faces_near, neighbourhood
from fusionray.faces.tracks import build_face_tracks
from fusionray.media.encode import encode_segment_bytes
from fusionray.media.formats import INTRA_CODECS
from fusionray.media.frame import PlaneFrame, face_regions, shift_face, working_frame
from fusionray.media.hwaccel import DecodeChoice
from fusionray.media.sequence import encode_owned
from fusionray.swap.base import SourceIdentity, Swapper
from fusionray.types import Chunk, Face, VideoInfo

QUEUE_DEPTH = 2
"""Items between two steps. Two keeps every step fed without holding many full frames."""
FORWARD_FRAMES = 8
"""Most frames whose faces go through the model in one `forward` call, or the stage's thread
count where that is larger: on CPU the rows of a call run one a thread (`RowCalls`)."""


class ChunkCancelled(RuntimeError):
    """A chunk's render stopped at a frame because `RenderStage.cancel` was called."""


@dataclass
class _Frame:
    """One frame on its way through the steps."""

    index: int
    decoded: av.VideoFrame | None
    """The decoded frame; None once it is known not to be written (outside the owned range)."""
    faces: list[Face] = field(default_factory=list)
    """Detections, then (after track) the tracked, smoothed faces of the frame."""
    targets: list[Face] = field(default_factory=list)
    """The faces selected for swapping (a subset of `faces`, same objects)."""
    people: list[int] = field(default_factory=list)
    """Per target, the index of the identity it gets (`SourceSet` person; 0 for one source)."""
    plane: PlaneFrame | None = None
    """The frame being swapped into (frames with targets)."""
    output: av.VideoFrame | None = None
    """What the encoder gets: the plane's frame, or the untouched frame in its format."""
    regions: list[_Region] = field(default_factory=list)
    """The frame's face regions, in `face_regions` order."""


@dataclass
class _Region:
    """One face region of a frame and its faces, grouped by the identity they get."""

    region: DisplayRegion
    groups: list[tuple[int, list[Face], Any]]
    """(identity index, its faces shifted into the region, the engine's jobs for them), in
    identity order."""
    before: np.ndarray | None = None
    """The region as read (display orientation), kept where the frame's identity is scored."""


class _Phases:
    """The engine's phases, or `swap()` as one phase where the engine has no others."""

    def __init__(self, swapper: Swapper) -> None:
        self.swapper = swapper
        self.phased = all(callable(getattr(swapper, name, None))
                          for name in ("prepare", "forward", "paste"))

    def prepare(self, image: np.ndarray, faces: list[Face], source: SourceIdentity) -> Any:
        if self.phased:
            return list(self.swapper.prepare(image, faces, source))
        return None

    def forward(self, frames: Sequence[_Frame], identities: Sequence[SourceIdentity]) -> None:
        """Run the model for every region of `frames`: one call per identity when phased
        (`identities[i]` is identity index i; one call in all for a single source)."""
        if not self.phased:
            for frame in frames:
                for item in frame.regions:
                    for person, faces, _ in item.groups:
                        item.region.image = self.swapper.swap(item.region.image, faces,
                                                              identities[person])
            return
        for person, identity in enumerate(identities):
            jobs = [job for frame in frames for item in frame.regions
                    for group_person, _, group_jobs in item.groups if group_person == person
                    for job in group_jobs]
            if not jobs:
                continue
            done = iter(self.swapper.forward(jobs, identity))
            for frame in frames:
                for item in frame.regions:
                    item.groups = [
                        (group_person, faces,
                         [next(done) for _ in group_jobs] if group_person == person
                         else group_jobs)
                        for group_person, faces, group_jobs in item.groups]

    def paste(self, item: _Region) -> None:
        """Composite every face of the region (each group's jobs carry their output)."""
        if self.phased:
            jobs = [job for _, _, group_jobs in item.groups for job in group_jobs]
            item.region.image = self.swapper.paste(item.region.image, jobs)


class RenderStage:
    """Render a chunk's owned frames into an encoded segment, decoding its read range once."""

    def __init__(self, config: RenderConfig, *, threads: int = 1,
                 queue_depth: int = QUEUE_DEPTH) -> None:
        cv2.setNumThreads(threads)
        self.config = config
        self.threads = threads
        self.forward_frames = max(FORWARD_FRAMES, threads)
        self._finder: FaceFinder | None = None
        self.swapper = swapper_from_config(config, threads=threads)
        self.phases = _Phases(self.swapper)
        self.scorer = identity_scorer_from_config(config, threads=threads)
        self.queue_depth = queue_depth
        self._decoders: dict[tuple[str, str], DecodeChoice] = {}
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Make a call running on another thread stop at its next frame, and any later call at
        its first, raising `ChunkCancelled` (its step threads joined, nothing encoded kept).

        For a chunk the driver renders on a thread of its own while Ray starts
        (`fusionray.jobs.inline`), when the job fails or is interrupted meanwhile.
        """
        self._cancelled.set()

    def decoder_for(self, info: VideoInfo) -> DecodeChoice:
        """Where this actor decodes `info`, chosen once per video (NVDEC is verified by
        decoding a frame, and the GPU assignment does not change within an actor)."""
        key = (info.path, info.codec_name)
        if key not in self._decoders:
            self._decoders[key] = choose_decoder_for(self.config, info)
        return self._decoders[key]

    @property
    def finder(self) -> FaceFinder:
        """The detector (and embedder), opened on first use: an actor that only renders chunks
        a pre-pass detected never loads them."""
        if self._finder is None:
            self._finder = FaceFinder(self.config, threads=self.threads)
        return self._finder

    def __call__(
        self, info: VideoInfo, chunk: Chunk, source: SourceIdentity | SourceSet,
        detected: DetectResult | None = None, shot: ShotSelection | None = None,
    ) -> ChunkResult:
        """Render `chunk`.

        Args:
            info: the video (its `frame_pts`, rotation and colour tags are used).
            chunk: which frames to read and which to write.
            source: the identity to swap in, or (`selection.mode=map`) the people, each face
                getting the identity of the person its shot track was assigned to.
            detected: the chunk's detections from a pre-pass; then nothing is detected again.
            shot: the shot-level selection (`fusionray.faces.shot.ShotSelection`) when the
                job made one; passed to `select_faces`. Required with a `SourceSet`.

        Raises:
            ValueError: a `SourceSet` without a shot selection.
            MediaError: a frame cannot be decoded or the segment cannot be encoded; any error
                of any step.
            ChunkCancelled: `cancel` was called.
        """
        if isinstance(source, SourceSet):
            if shot is None:
                raise ValueError("A SourceSet (selection.mode=map) needs a shot selection")
            identities = [source.identity(i) for i in range(len(source.people))]
        else:
            identities = [source]
        scorer, every = self.scorer, self.config.identity_every
        scores: list[np.ndarray] = []
        # The encoder's threads follow the actor's cores like every other step (lossy
        # bitstreams then differ between actors of other sizes; decoded lossless output
        # does not).
        settings = encoder_settings_for(self.config, info, threads=self.threads)
        turns = display_turns(info.rotation)
        clock = StepClock()
        counts = {"decoded": 0, "swapped": 0, "frames_with_faces": 0}
        faces_by_frame: dict[int, list[Face]] = {}
        selected_by_frame: dict[int, list[Face]] = {}
        given = table_to_faces(detected.detections) if detected is not None else None
        finder = self.finder if detected is None else None
        owned = range(chunk.start, chunk.stop)
        decoder = self.decoder_for(info)
        concealed: list[int] = []
        # The read range after the owned frames goes to the encoder as look-ahead, as decoded:
        # unswapped pixels are fine there, rate control only needs their motion and detail,
        # and their packets are dropped. Intra-only codecs ignore look-ahead: not kept.
        lookahead_pts = (info.frame_pts[chunk.stop:chunk.read_stop]
                         if settings.codec not in INTRA_CODECS and info.sequence is None
                         else ())
        pix_fmt = render_pix_fmt(settings, info)
        lookahead: deque[av.VideoFrame] = deque()

        def decode() -> Iterator[_Frame]:
            with open_reader(self.config, info, decoder, threads=self.threads) as reader:
                try:
                    for index, frame in reader.video_frames(chunk.read_start, chunk.read_stop):
                        yield _Frame(index, frame)
                finally:
                    counts["decoded"] = reader.frames_decoded
                    concealed.extend(reader.concealed)

        def detect(frames: Iterator[_Frame]) -> Iterator[_Frame]:
            for frame in frames:
                assert frame.decoded is not None
                if given is not None:
                    frame.faces = list(given.get(frame.index, []))
                else:
                    assert finder is not None
                    frame.faces = finder.find(frame.decoded, info.rotation)
                if frame.index not in owned:
                    if frame.index >= chunk.stop and lookahead_pts:
                        lookahead.append(frame.decoded)
                    frame.decoded = None  # Read for its detections (and the look-ahead) only.
                yield frame

        def track(frames: Iterator[_Frame]) -> Iterator[_Frame]:
            yield from self._track(frames, chunk, info, source, shot, faces_by_frame,
                                   selected_by_frame)

        def prepare(frames: Iterator[_Frame]) -> Iterator[_Frame]:
            for frame in frames:
                assert frame.decoded is not None
                if not frame.targets:
                    # Untouched: the decoded frame itself where the encoder takes its format.
                    frame.output = working_frame(frame.decoded, pix_fmt, writable=False)
                    frame.decoded = None
                    yield frame
                    continue
                plane = PlaneFrame(working_frame(frame.decoded, pix_fmt))
                frame.output = plane.frame
                frame.plane, frame.decoded = plane, None
                width, height = display_size(plane.width, plane.height, turns)
                scored = scorer is not None and scored_frame(frame.index, every)
                for rect, members in face_regions(frame.targets, width, height):
                    region = read_region(plane, rect, turns)
                    x0, y0 = region.display_rect[:2]
                    groups = []
                    for person in sorted({frame.people[i] for i in members}):
                        faces = [shift_face(frame.targets[i], -x0, -y0) for i in members
                                 if frame.people[i] == person]
                        groups.append((person, faces, self.phases.prepare(
                            region.image, faces, identities[person])))
                    # Engines composite into a copy, so the region as read stays as it was.
                    frame.regions.append(_Region(region, groups, region.image if scored else None))
                yield frame

        def forward(frames: Iterator[_Frame]) -> Iterator[_Frame]:
            batch: list[_Frame] = []
            for frame in frames:
                batch.append(frame)
                if len(batch) == self.forward_frames:
                    self.phases.forward(batch, identities)
                    yield from batch
                    batch = []
            if batch:
                self.phases.forward(batch, identities)
                yield from batch

        def paste(frames: Iterator[_Frame]) -> Iterator[av.VideoFrame]:
            for frame in frames:
                assert frame.output is not None
                if frame.plane is not None:
                    for item in frame.regions:
                        self.phases.paste(item)
                        write_region(frame.plane, item.region, turns)
                        if scorer is not None and item.before is not None:
                            scores.extend(self._identity_scores(scorer, item, identities))
                    counts["swapped"] += len(frame.targets)
                    counts["frames_with_faces"] += 1
                yield frame.output

        steps = [("detect", detect), ("track", track), ("prepare", prepare),
                 ("forward", forward), ("paste", paste)]
        waited = [0.0]

        def timed(items: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
            """The frames, counting how long the encoder waited for each; stops at `cancel`."""
            while True:
                if self._cancelled.is_set():
                    raise ChunkCancelled(f"Chunk {chunk.index} cancelled")
                now = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    waited[0] += time.perf_counter() - now
                yield item

        def look_ahead() -> Iterator[av.VideoFrame]:
            """The frames after the owned range; the encoder takes them only after the last
            owned frame, when every step (detect included) has finished. Each is let go as it
            is encoded."""
            while lookahead:
                yield lookahead.popleft()

        started = time.perf_counter()
        # One core: the steps take turns in this thread (threads would only contend for it).
        stream = (run_steps(decode(), steps, depth=self.queue_depth, clock=clock)
                  if self.threads > 1 else chain_steps(decode(), steps, clock=clock))
        try:
            rendered = timed(stream)
            if info.sequence is not None:
                # Each owned frame becomes its own file, in the input's format.
                segment = encode_owned(rendered, info, chunk.start)
            else:
                segment = encode_segment_bytes(
                    rendered, pts=info.frame_pts[chunk.start:chunk.stop], info=info,
                    settings=settings, lookahead=look_ahead(), lookahead_pts=lookahead_pts,
                )
        finally:
            # Stop and join the step threads before anything leaves this call: an error or
            # Ctrl-C raised here in the encoder would otherwise leave the stream suspended (its
            # traceback keeps it alive), the threads running on, and a process that exits
            # then aborts ("terminate called without an active exception") when a thread
            # coming back from ONNX Runtime or the codec meets the finalising interpreter.
            stream.close()
        wall = time.perf_counter() - started
        seconds = {("decode" if name == "source" else name): value
                   for name, value in clock.seconds.items()}
        # The encoder runs in this thread, between the frames it waits for.
        seconds["encode"] = max(0.0, wall - waited[0])
        seconds["render_wall"] = wall
        # A pre-pass's own seconds are the scheduler's to count, once, as prepass_*.
        return ChunkResult(
            chunk_index=chunk.index,
            segment=segment,
            frames=chunk.owned_frames,
            faces_swapped=counts["swapped"],
            frames_with_faces=counts["frames_with_faces"],
            seconds=seconds,
            providers=(
                detected.provider if detected is not None else self.finder.provider,
                f"{self.swapper.name}:{getattr(self.swapper, 'provider', 'none')}",
                f"decode:{decoder.label}",
            ),
            face_tracks=build_face_tracks(faces_by_frame, selected_by_frame, info,
                                          start=chunk.start, stop=chunk.stop)
            if self.config.export_faces else None,
            # A pre-pass's decodes are counted once, by the scheduler, when it finishes.
            frames_decoded=counts["decoded"],
            identity_scores=np.concatenate(scores) if scores else None,
            concealed_frames=tuple(sorted({index for index in concealed if index in owned})),
            notes=tuple(getattr(self.swapper, "notes", ())),
        )

    @staticmethod
    def _identity_scores(
        scorer: ArcFaceEmbedder, item: _Region, identities: Sequence[SourceIdentity]
    ) -> list[np.ndarray]:
        """(N, 2) identity scores of a swapped region's faces, one array per identity group
        (`fusionray.faces.identity`): each face embedded before and after, same landmarks."""
        assert item.before is not None
        scores = []
        for person, faces, _ in item.groups:
            embedding = identities[person].embedding
            if embedding is None:
                continue
            before, after = scorer.embed_many([(item.before, faces),
                                               (item.region.image, faces)])
            scores.append(identity_similarities(before, after, embedding))
        return scores

    def _track(
        self, frames: Iterator[_Frame], chunk: Chunk, info: VideoInfo,
        source: SourceIdentity | SourceSet, shot: ShotSelection | None,
        faces_by_frame: dict[int, list[Face]],
        selected_by_frame: dict[int, list[Face]],
    ) -> Iterator[_Frame]:
        """Release each owned frame with its tracked, smoothed and selected faces as soon as
        every frame of its neighbourhood has been detected (a window of reach + 1 frames)."""
        settings = self.config.temporal
        reach = settings.reach if settings.enabled else 0
        detections: dict[int, list[Face]] = {}
        waiting: deque[_Frame] = deque()
        last = chunk.read_start - 1

        def release(frame: _Frame) -> _Frame:
            if settings.enabled:
                near = neighbourhood(frame.index, reach, info.frame_count)
                if near.start < chunk.read_start or near.stop > chunk.read_stop:
                    raise ValueError(
                        f"Frame {frame.index} needs frames {near.start}..{near.stop - 1} for "
                        f"temporal.reach={reach}, but its chunk read only {chunk.read_start}.."
                        f"{chunk.read_stop - 1}: chunk.overlap must be >= {reach}")
                faces = faces_near(detections, frame.index, near, settings)
            else:
                faces = list(detections.get(frame.index, []))
            targets = select_faces(faces, self.config.selection,
                                   reference=getattr(source, "reference_embedding", None),
                                   shot=shot, frame_index=frame.index)
            if isinstance(source, SourceSet):
                assert shot is not None  # Checked by the caller.
                pairs = shot.match(targets, frame.index)
                targets, people = [face for face, _ in pairs], [person for _, person in pairs]
            else:
                people = [0] * len(targets)
            frame.faces, frame.targets, frame.people = faces, targets, people
            if faces:
                faces_by_frame[frame.index] = faces
            selected_by_frame[frame.index] = targets
            # Detections older than any later frame's neighbourhood are no longer needed.
            for old in [i for i in detections if i < frame.index + 1 - reach]:
                del detections[old]
            return frame

        for frame in frames:
            if frame.faces:
                detections[frame.index] = frame.faces
            last = frame.index
            if frame.decoded is not None:
                waiting.append(frame)
            while waiting and waiting[0].index + reach <= last:
                yield release(waiting.popleft())
        while waiting:
            yield release(waiting.popleft())

