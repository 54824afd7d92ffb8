"""The render driver: probe, source identity, plan, schedule chunks on Ray, assemble, report.

Everything that can fail on bad input (missing video, not a video, no face in a source image,
an unwritable output folder) is checked before Ray starts, so a bad command costs seconds and
leaves nothing behind. The output path only ever receives a complete, verified file: assembly
writes under a temporary name and renames.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from fusionray import __version__
from fusionray.actors.pools import ActorPool, PoolSizes, resolve_pool_sizes, start_pools
from fusionray.actors.stages import (
    ChunkResult,
    detector_from_config,
    embedder_from_config,
    model_options_from_config,
    passthrough_segment,
    swap_model_names,
    swapper_from_config,
    to_display,
)
from fusionray.config import RenderConfig, config_hash, resolve_for_video
from fusionray.errors import (
    ClusterError,
    ConfigError,
    FaceNotFoundError,
    FusionrayError,
    MediaError,
    OutputError,
    RenderError,
    RenderInterrupted,
)
from fusionray.faces.detect import Detector
from fusionray.faces.embed import average_identity
from fusionray.faces.tracks import assign_track_ids, concat_face_tracks
from fusionray.jobs.lock import OutputLock
from fusionray.jobs.manifest import FinishedChunk, Manifest, input_identity
from fusionray.media.assemble import (
    OUTPUT_FORMATS,
    VerificationError,
    assemble_video,
    check_output_codec,
    output_extension,
)
from fusionray.media.decode import decode_frames, read_image_bgr
from fusionray.media.demo import demo_source_image_path, ensure_demo_clip
from fusionray.media.encode import settings_for_video
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from fusionray.media.storage import (
    check_destination,
    is_remote,
    localise,
    publish,
    publish_all,
    sibling,
)
from fusionray.models.providers import driver_config
from fusionray.models.store import ensure_model
from fusionray.report.preview import build_preview, preview_indices
from fusionray.report.provenance import provenance_metadata
from fusionray.report.summary import RunSummary, write_summary
from fusionray.swap.base import SourceIdentity
from fusionray.types import Chunk, VideoInfo

log = logging.getLogger("fusionray")

@dataclass(frozen=True)
class OutputPaths:
    """Where a render writes: the video and its sidecars, all in one folder."""

    video: Path
    run_json: Path
    preview: Path
    config: Path
    faces: Path
    """Per-frame detections and selection (`fusionray.faces.tracks`)."""
    work: Path
    """Segments and manifest while the job runs (removed on success unless keep_work)."""

    @classmethod
    def for_video(cls, video: Path) -> OutputPaths:
        stem = video.stem
        return cls(
            video=video,
            run_json=video.with_name(f"{stem}.run.json"),
            preview=video.with_name(f"{stem}.preview.png"),
            config=video.with_name(f"{stem}.config.yaml"),
            faces=video.with_name(f"{stem}.faces.parquet"),
            work=video.with_name(f".{video.name}.fusionray-work"),
        )


def resolve_inputs(config: RenderConfig) -> tuple[Path, list[Path]]:
    """Local paths of the input video and source images (URIs are downloaded to this node's
    cache); `demo` maps to the built-in demo."""
    sources = [localise(s) for s in config.source_paths]
    if config.video == "demo":
        return ensure_demo_clip(), sources or [demo_source_image_path()]
    return localise(config.video), sources


def default_output(video: Path, run_dir: Path, codec: str = "") -> Path:
    """`<run dir>/<video name>.swapped<ext>`: the input's container where fusionray writes it
    (an .mkv keeps its subtitle streams), else .mp4 (.mov for ProRes/DNxHR output)."""
    return run_dir / f"{video.stem}.swapped{output_extension(video.suffix, codec)}"


def check_output(paths: OutputPaths, video: Path) -> None:
    """Fail early if the output cannot be written.

    Raises:
        OutputError: the output is the input, its folder cannot be created, or is not writable.
    """
    target = paths.video
    if target.suffix.lower() not in OUTPUT_FORMATS:
        raise OutputError(
            f"Unsupported output extension {target.suffix!r} for '{target}'. "
            f"Choose one of: {', '.join(OUTPUT_FORMATS)}"
        )
    if target.exists() and video.exists() and target.resolve() == video.resolve():
        raise OutputError(f"Output path is the input video: '{target}'")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fusionray-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(f"Output folder is not writable: '{folder}' ({reason})") from None


def build_source_identity(
    config: RenderConfig, sources: list[Path], detector: Detector
) -> tuple[SourceIdentity, list[str]]:
    """Detect the face in each source image and combine them into one identity.

    Returns:
        The identity, and notes for run.json (e.g. which face was used when several were found).

    Raises:
        FaceNotFoundError: a source image holds no face.
        MediaError: a source image is missing or unreadable.
    """
    images, faces, notes = [], [], []
    for path in sources:
        image = read_image_bgr(path)
        found = detector.detect(image)
        if not found:
            raise FaceNotFoundError(f"No face found in source image '{path}'")
        largest = max(found, key=lambda face: face.area)
        if len(found) > 1:
            notes.append(f"source image '{path}' has {len(found)} faces; used the largest")
        images.append(image)
        faces.append(largest)
    if config.swapper.name == "inswapper":
        # Only the embedding travels to the swap actors: no need to load the swapper here.
        embedder = embedder_from_config(config)
        embeddings = [embedder.embed(image, [face])[0] for image, face in zip(images, faces,
                                                                               strict=True)]
        identity = SourceIdentity(crop=None, crop_size=128, image_count=len(embeddings),
                                  embedding=average_identity(embeddings))
        return identity, notes
    return swapper_from_config(config).prepare_source(images, faces), notes


def ray_session_name() -> str | None:
    """The connected Ray's session name (a new one each time a cluster starts)."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    return getattr(node, "session_name", None)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    pq.write_table(table, partial)
    os.replace(partial, path)


def chunk_faces_path(manifest: Manifest, chunk: Chunk) -> Path:
    """Where a chunk's face-tracks table waits in the work folder (kept for resume)."""
    return manifest.work / f"chunk_{chunk.index:06d}.faces.parquet"


def attach_reference(
    config: RenderConfig, identity: SourceIdentity, info: VideoInfo, detector: Detector
) -> SourceIdentity:
    """For `selection.mode=reference`, embed the reference face and attach it to the identity.

    The reference is `selection.reference_image` or frame `selection.reference_frame` of the
    input; `selection.reference_face` picks among its faces, largest first.

    Raises:
        FaceNotFoundError: the reference image/frame has no face at that index.
        MediaError: the reference image is unreadable. ConfigError: frame out of range.
    """
    selection = config.selection
    if selection.mode != "reference":
        return identity
    if selection.reference_image is not None:
        where = f"reference image '{selection.reference_image}'"
        image = read_image_bgr(Path(selection.reference_image).expanduser())
    else:
        index = int(selection.reference_frame or 0)
        if index >= info.frame_count:
            raise ConfigError(f"Invalid selection.reference_frame={index}: the video has "
                              f"{info.frame_count} frames")
        where = f"frame {index} of the input"
        image = to_display(next(iter(decode_frames(info, index, index + 1)))[1], info.rotation)
    faces = sorted(detector.detect(image), key=lambda face: face.area, reverse=True)
    if len(faces) <= selection.reference_face:
        raise FaceNotFoundError(f"No face number {selection.reference_face} in {where} "
                                f"({len(faces)} faces found)")
    embedding = embedder_from_config(config).embed(image, [faces[selection.reference_face]])[0]
    return replace(identity, reference_embedding=embedding)


_CLUSTER_HINT = "(start one with `ray start --head`, or drop cluster.address to run locally)"


def check_reachable(address: str, timeout_seconds: float = 10.0) -> None:
    """Fail fast when nothing accepts connections at an explicit `host:port` Ray address.

    `ray.init` retries an unreachable GCS for minutes before it gives up; a render node told
    the wrong address should hear so at once. `auto` (found by Ray itself) is not checked.

    Raises:
        ClusterError: the address names a host and port that refuse or do not answer.
    """
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_seconds):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterError(
            f"Cannot join the Ray cluster at {address!r}: nothing answers at {host}:{port} "
            f"({reason}) {_CLUSTER_HINT}"
        ) from None


def start_ray(config: RenderConfig) -> bool:
    """Join the configured cluster, or start a local Ray sized to this machine.

    Returns:
        True when this call started Ray (and so the job should shut it down).
    """
    if ray.is_initialized():
        return False
    address = config.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ClusterError(
                f"Cannot join the Ray cluster at {address!r}: {first_line} {_CLUSTER_HINT}"
            ) from None
    else:
        # address="local": a Ray of this job's own even where another job's Ray or a
        # `ray start` node already runs on this machine (plain ray.init() would join that one,
        # or refuse because num_cpus was given).
        ray.init(address="local", num_cpus=config.cluster.num_cpus or os.cpu_count() or 1,
                 num_gpus=config.cluster.num_gpus, include_dashboard=False,
                 logging_level=logging.WARNING)
    return True


def ensure_swap_models(config: RenderConfig) -> None:
    """Locate (or fetch) the swap actors' model files before Ray starts.

    A missing model is then one clear error (ModelError) instead of every actor failing to
    start, and a download happens once here rather than in every actor at the same time.
    Nodes of a cluster without a shared model folder still fetch their own copies.
    """
    options = model_options_from_config(config, providers=config.swapper.providers)
    for name in swap_model_names(config):
        ensure_model(name, cache_dir=options.cache_dir, shared_dirs=options.shared_dirs,
                     offline=options.offline)


def actor_start_failure(error: ray.exceptions.RayActorError) -> str:
    """The reason an actor's constructor raised, as one line (the exception's own message,
    without Ray's traceback and colour codes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    reasons = [line.strip() for line in text.splitlines()
               if line.strip() and not line[:1].isspace() and ": " in line]
    reason = reasons[-1] if reasons else type(error).__name__
    # "fusionray.errors.ModelError: Model ..." -> "Model ..."
    return re.sub(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): ", "", reason)


@dataclass
class ChunkTotals:
    """Sums over finished chunks, and what happened to them."""

    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    providers: set[str] = field(default_factory=set)
    reused: int = 0
    rendered: int = 0
    failures: list[str] = field(default_factory=list)
    passthrough: list[dict[str, int]] = field(default_factory=list)
    concealed: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, result: ChunkResult) -> None:
        self.frames += result.frames
        self.faces += result.faces_swapped
        self.frames_with_faces += result.frames_with_faces
        for stage, seconds in result.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.providers.update(result.providers)
        self.concealed.extend(result.concealed_frames)
        self.notes.extend(note for note in result.notes if note not in self.notes)
        self.rendered += 1

    def add_reused(self, row: FinishedChunk) -> None:
        self.frames += row.stop - row.start
        self.faces += row.faces_swapped
        self.frames_with_faces += row.frames_with_faces
        self.reused += 1


def describe(chunk: Chunk) -> str:
    return f"chunk {chunk.index} (frames {chunk.start}-{chunk.stop - 1})"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(error: BaseException) -> str:
    """One line on why a chunk failed: the actor's own exception when Ray wraps one."""
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        error = cause
    text = _ANSI.sub("", str(error)).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def record_segment(
    manifest: Manifest, chunk: Chunk, segment: bytes, *, faces: pa.Table | None = None,
    **counts: Any,
) -> Path:
    """Write a finished segment (and its face tracks) into the work folder; disk trouble stops
    the job (RenderError)."""
    try:
        if faces is not None:
            # Before the segment is recorded, so a resumed job that reuses the segment also
            # finds its face tracks.
            write_parquet_atomic(chunk_faces_path(manifest, chunk), faces)
        return manifest.record(chunk, segment, **counts)
    except OSError as error:
        reason = error.strerror or str(error)
        if not manifest.work.is_dir():
            reason = "the work folder disappeared (was the output folder removed?)"
        raise RenderError(
            f"Cannot write the segment of {describe(chunk)} to '{manifest.work}': {reason}"
        ) from error


def give_up_on_chunk(
    config: RenderConfig, info: VideoInfo, chunk: Chunk, error: BaseException,
    manifest: Manifest, totals: ChunkTotals,
) -> None:
    """A chunk failed every retry: stop naming it, or (passthrough) write it unswapped."""
    reason = failure_reason(error)
    attempts = config.cluster.chunk_retries + 1
    message = f"{describe(chunk).capitalize()} failed after {attempts} attempts: {reason}"
    if config.on_chunk_error != "passthrough":
        raise RenderError(message) from error
    try:
        segment = passthrough_segment(config, info, chunk, concealed=totals.concealed)
    except MediaError as media_error:
        raise RenderError(f"{message}; writing it unswapped failed too: {media_error}") from error
    record_segment(manifest, chunk, segment, faces_swapped=0, frames_with_faces=0,
                   passthrough=True)
    log.warning("%s; wrote its frames unswapped (on_chunk_error=passthrough)", message)
    totals.passthrough.append({"chunk": chunk.index, "start": chunk.start, "stop": chunk.stop})
    totals.frames += chunk.owned_frames
    totals.rendered += 1


def run_chunks(
    config: RenderConfig,
    info: VideoInfo,
    chunks: list[Chunk],
    detect_pool: ActorPool,
    swap_pool: ActorPool,
    manifest: Manifest,
    source: ray.ObjectRef,
) -> tuple[list[Path], ChunkTotals]:
    """Render every chunk the manifest does not already hold, with at most
    `max_chunks_in_flight` in progress; each finished segment is recorded as it lands.

    Completion order is free; the returned segment paths are in chunk order.
    """
    totals = ChunkTotals()
    pending: deque[tuple[Chunk, int]] = deque()
    for chunk in chunks:
        if chunk.index in manifest.rows:
            totals.add_reused(manifest.rows[chunk.index])
        else:
            pending.append((chunk, 0))
    in_flight: dict[ray.ObjectRef, tuple[Chunk, int, int, int]] = {}
    limit = config.cluster.max_chunks_in_flight
    with tqdm(total=info.frame_count, initial=totals.frames, unit="frame", desc="fusionray",
              disable=not config.progress, file=sys.stderr, dynamic_ncols=True,
              mininterval=0.5) as progress:
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                chunk, attempt = pending.popleft()
                detect_index, swap_index = detect_pool.pick(), swap_pool.pick()
                detected = detect_pool.actors[detect_index].detect.remote(info, chunk)
                rendered = swap_pool.actors[swap_index].render.remote(info, chunk, detected,
                                                                     source)
                detect_pool.load[detect_index] += 1
                swap_pool.load[swap_index] += 1
                in_flight[rendered] = (chunk, attempt, detect_index, swap_index)
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                chunk, attempt, detect_index, swap_index = in_flight.pop(ref)
                detect_pool.load[detect_index] -= 1
                swap_pool.load[swap_index] -= 1
                try:
                    result: ChunkResult = ray.get(ref)
                except (ray.exceptions.RayError, MediaError) as error:
                    reason = failure_reason(error)
                    totals.failures.append(f"{describe(chunk)} attempt {attempt + 1}: {reason}")
                    if attempt < config.cluster.chunk_retries:
                        log.warning("%s failed, retrying: %s", describe(chunk), reason)
                        pending.appendleft((chunk, attempt + 1))
                        continue
                    give_up_on_chunk(config, info, chunk, error, manifest, totals)
                    progress.update(chunk.owned_frames)
                    continue
                record_segment(manifest, chunk, result.segment, faces=result.face_tracks,
                               faces_swapped=result.faces_swapped,
                               frames_with_faces=result.frames_with_faces)
                totals.add(result)
                progress.update(result.frames)
    return [manifest.segment_path(chunk) for chunk in chunks], totals


def write_preview(config: RenderConfig, info: VideoInfo, output: Path, target: Path) -> None:
    """Decode a few frames of input and output and save the before/after strip."""
    indices = preview_indices(info.frame_count, config.preview_frames)
    if not indices:
        return
    output_info = probe_video(output)
    before, after = [], []
    for index in indices:
        before += [to_display(f, info.rotation) for _, f in decode_frames(info, index, index + 1)]
        after += [to_display(f, output_info.rotation)
                  for _, f in decode_frames(output_info, index, index + 1)]
    strip = build_preview(indices, before, after)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}.png")
    if not cv2.imwrite(str(partial), strip):
        raise OutputError(f"Could not write preview image: '{target}'")
    os.replace(partial, target)


def render(
    config: RenderConfig,
    *,
    run_dir: Path,
    config_yaml: str,
    quality: str | None = None,
) -> RunSummary:
    """Render one video end to end and return its summary.

    A rerun of a failed or interrupted job (same config, same inputs, same output) reuses the
    chunks its work folder holds; see `fusionray.jobs.manifest`.

    Args:
        config: the validated configuration.
        run_dir: folder for the default output (Hydra's run directory).
        config_yaml: the resolved config as YAML, saved beside the output.
        quality: name of the quality preset, for run.json.

    Raises:
        RenderInterrupted: SIGINT (or SIGTERM, via the CLI) during the job; the work folder is
            kept for a rerun.
        RenderError: a chunk failed every retry, or writing the result failed.
    """
    started = time.perf_counter()
    stages: dict[str, float] = {}
    clock = time.perf_counter()
    video, sources = resolve_inputs(config)
    info = probe_video(video)
    stages["probe"] = time.perf_counter() - clock
    # The hash is of the config as given: automatic choices (e.g. detector tiles) follow from
    # it and the input, so the same command on the same input always has the same hash.
    digest = config_hash(config)
    config = resolve_for_video(config, info.width, info.height)

    destination = config.output if config.output and is_remote(config.output) else None
    codec = settings_for_video(config.encode, info).codec  # ConfigError before Ray starts
    if destination:
        check_destination(destination)
        local_output = run_dir / PurePosixPath(urlsplit(destination).path).name
    else:
        local_output = (localise(config.output) if config.output
                        else default_output(video, run_dir, codec))
    check_output_codec(local_output, codec)
    paths = OutputPaths.for_video(local_output)
    check_output(paths, video)
    # Actors on other nodes fetch a remote input themselves (once per node).
    shared_info = replace(info, path=config.video) if is_remote(config.video) else info

    clock = time.perf_counter()
    detector = detector_from_config(driver_config(config), threads=1)  # Never a GPU here.
    source, notes = build_source_identity(driver_config(config), sources, detector)
    source = attach_reference(driver_config(config), source, info, detector)
    stages["source_identity"] = time.perf_counter() - clock
    clock = time.perf_counter()
    ensure_swap_models(config)
    stages["models"] = time.perf_counter() - clock

    chunks = plan_chunks(info.frame_count, chunk_frames=config.chunk.frames,
                         overlap=config.chunk.overlap)

    with OutputLock(paths.video) as lock:
        notes += lock.notes
        manifest = Manifest.open(paths.work, config_hash=digest,
                                 input_identity=input_identity(info, sources), chunks=chunks)
        notes += manifest.notes
        try:
            segments, totals, sizes, nodes, address, session = _render_chunks(
                config, shared_info, chunks, manifest, source, stages)
            clock = time.perf_counter()
            notes += _assemble(info, segments, paths, digest if config.provenance else None)
            stages["assemble"] = time.perf_counter() - clock
        except KeyboardInterrupt:
            if not manifest.rows:
                shutil.rmtree(paths.work, ignore_errors=True)  # nothing worth resuming
                raise RenderInterrupted("Interrupted before any chunk finished") from None
            raise RenderInterrupted(
                f"Interrupted; {len(manifest.rows)} finished chunk(s) of {len(chunks)} are kept "
                f"in '{paths.work}': rerun the same command to resume"
            ) from None
        except FusionrayError as error:
            if not manifest.rows:
                shutil.rmtree(paths.work, ignore_errors=True)  # nothing worth resuming
            elif paths.work.is_dir() and not isinstance(error.__cause__, VerificationError):
                error.args = (f"{error}; {len(manifest.rows)} finished chunk(s) are kept in "
                              f"'{paths.work}': rerun the same command to resume",)
            raise

        paths.config.write_text(config_yaml)
        if config.export_faces:
            tables = [pq.read_table(p) for p in (chunk_faces_path(manifest, c) for c in chunks)
                      if p.exists()]
            tracks = assign_track_ids(concat_face_tracks(tables, info),
                                      iou_threshold=config.temporal.iou_threshold,
                                      max_gap=config.temporal.max_gap)
            write_parquet_atomic(paths.faces, tracks)
        clock = time.perf_counter()
        if config.preview_frames:
            write_preview(config, info, paths.video, paths.preview)
        stages["preview"] = time.perf_counter() - clock
        if not config.keep_work:
            shutil.rmtree(paths.work, ignore_errors=True)

    if totals.frames_with_faces == 0:
        notes.append("no face found in any frame; the output frames are the input frames")
    if totals.passthrough:
        notes.append(f"{len(totals.passthrough)} chunk(s) failed every retry and were written "
                     "unswapped (on_chunk_error=passthrough); see passthrough_chunks")
    if totals.concealed:
        notes.append(f"{len(set(totals.concealed))} damaged frame(s) were concealed with the "
                     "last good frame; see concealed_frames (media.strict_decode=true fails)")
    notes.extend(note for note in totals.notes if note not in notes)
    stages.update(totals.seconds)
    wall = time.perf_counter() - started
    summary = RunSummary(
        fusionray_version=__version__,
        config_hash=digest,
        input=str(video),
        sources=[str(s) for s in sources],
        output=destination or str(paths.video),
        frames=info.frame_count,
        chunks=len(chunks),
        faces_swapped=totals.faces,
        frames_with_faces=totals.frames_with_faces,
        wall_seconds=round(wall, 3),
        frames_per_second=round(info.frame_count / wall, 3) if wall > 0 else 0.0,
        stage_seconds={k: round(v, 3) for k, v in stages.items()},
        providers=sorted(totals.providers | {f"{detector.name}:{detector.provider}"}),
        actors={"detect": sizes.detect, "swap": sizes.swap},
        nodes=len(nodes),
        ray_address=str(address),
        quality=quality,
        notes=notes,
        chunks_reused=totals.reused,
        chunks_rendered=totals.rendered,
        chunk_failures=totals.failures,
        passthrough_chunks=totals.passthrough,
        ray_session=session,
        concealed_frames=sorted(set(totals.concealed)),
    )
    write_summary(paths.run_json, summary)
    if destination:
        publish_outputs(paths, destination)
    return summary


def publish_outputs(paths: OutputPaths, destination: str) -> None:
    """Upload the video and its sidecars beside `destination`, the video last."""
    sidecars = [paths.run_json, paths.preview, paths.config, paths.faces]
    publish_all([(p, sibling(destination, p.name)) for p in sidecars if p.exists()])
    publish(paths.video, destination)


def _render_chunks(
    config: RenderConfig, info: VideoInfo, chunks: list[Chunk], manifest: Manifest,
    source: SourceIdentity, stages: dict[str, float],
) -> tuple[list[Path], ChunkTotals, PoolSizes, set[str], str, str | None]:
    """Start (or join) Ray, run the chunks the manifest lacks, and stop a Ray we started.

    Returns:
        Segment paths in chunk order, totals, pool sizes, node ids used, the Ray address and
        the Ray session name.
    """
    clock = time.perf_counter()
    started_ray = start_ray(config)
    try:
        sizes = resolve_pool_sizes(config.cluster, ray.cluster_resources())
        detect_pool, swap_pool = start_pools(config, sizes)
        try:
            nodes = set(ray.get([a.node_id.remote()
                                 for a in detect_pool.actors + swap_pool.actors]))
        except ray.exceptions.RayActorError as error:
            raise RenderError(f"A render actor could not start: {actor_start_failure(error)}"
                              ) from None
        stages["ray_start"] = time.perf_counter() - clock
        address = str(ray.get_runtime_context().gcs_address)
        session = ray_session_name()
        clock = time.perf_counter()
        segments, totals = run_chunks(
            config, info, chunks, detect_pool, swap_pool, manifest, ray.put(source))
        stages["chunks_wall"] = time.perf_counter() - clock
    finally:
        if started_ray:
            ray.shutdown()
    return segments, totals, sizes, nodes, address, session


def _assemble(
    info: VideoInfo, segments: list[Path], paths: OutputPaths, digest: str | None
) -> list[str]:
    """Publish the output; a failure here (disk full, folder gone) is a render failure.

    `digest` None leaves out the provenance tags (`provenance=false`).

    Returns:
        Notes for run.json (subtitle streams the output container cannot hold).
    """
    metadata = provenance_metadata(__version__, digest) if digest else {}
    try:
        report = assemble_video(info, segments, paths.video, metadata=metadata)
    except (MediaError, OutputError) as error:
        raise RenderError(f"Writing the output '{paths.video}' failed: {error}") from error
    if not report.subtitle_streams_dropped:
        return []
    return [f"{len(report.subtitle_streams_dropped)} subtitle stream(s) "
            f"({', '.join(report.subtitle_streams_dropped)}) cannot be stored in "
            f"{paths.video.suffix} and were not copied; an .mkv output keeps them"]
