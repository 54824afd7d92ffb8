"""The render driver: probe, source identity, plan, schedule chunks on Ray, assemble, report.

Everything that can fail on bad input (missing video, not a video, no face in a source image,
an unwritable output folder) is checked before Ray starts, so a bad command costs seconds and
leaves nothing behind. The output path only ever receives a complete, verified file: assembly
writes under a temporary name and renames.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from fusionray import __version__
from fusionray.actors.pools import ActorPool, resolve_pool_sizes, start_pools
from fusionray.actors.stages import (
    ChunkResult,
    detector_from_config,
    embedder_from_config,
    swapper_from_config,
    to_display,
)
from fusionray.config import RenderConfig, config_hash
from fusionray.errors import (
    ClusterError,
    ConfigError,
    FaceNotFoundError,
    MediaError,
    OutputError,
    RenderError,
)
from fusionray.faces.detect import Detector
from fusionray.faces.embed import average_identity
from fusionray.media.assemble import assemble_video
from fusionray.media.decode import decode_frames, read_image_bgr
from fusionray.media.demo import demo_source_image_path, ensure_demo_clip
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from fusionray.report.preview import build_preview, preview_indices
from fusionray.report.summary import RunSummary, write_summary
from fusionray.swap.base import SourceIdentity
from fusionray.types import Chunk, VideoInfo

log = logging.getLogger("fusionray")

SEGMENT_SUFFIX = ".segment"


@dataclass(frozen=True)
class OutputPaths:
    """Where a render writes: the video and its sidecars, all in one folder."""

    video: Path
    run_json: Path
    preview: Path
    config: Path
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
            work=video.with_name(f".{video.name}.fusionray-work"),
        )


def resolve_inputs(config: RenderConfig) -> tuple[Path, list[Path]]:
    """The input video and source image paths; `demo` maps to the built-in demo."""
    if config.video == "demo":
        video = ensure_demo_clip()
        sources = [Path(s) for s in config.source_paths] or [demo_source_image_path()]
    else:
        video = Path(config.video).expanduser()
        sources = [Path(s).expanduser() for s in config.source_paths]
    return video, sources


def default_output(video: Path, run_dir: Path) -> Path:
    return run_dir / f"{video.stem}.swapped.mp4"


def check_output(paths: OutputPaths, video: Path) -> None:
    """Fail early if the output cannot be written.

    Raises:
        OutputError: the output is the input, its folder cannot be created, or is not writable.
    """
    target = paths.video
    if target.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise OutputError(
            f"Unsupported output extension {target.suffix!r} for '{target}'. "
            "Choose one of: .mp4, .mov, .mkv"
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


def start_ray(config: RenderConfig) -> bool:
    """Join the configured cluster, or start a local Ray sized to this machine.

    Returns:
        True when this call started Ray (and so the job should shut it down).
    """
    if ray.is_initialized():
        return False
    address = config.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ClusterError(
                f"Cannot join the Ray cluster at {address!r}: {first_line} "
                "(start one with `ray start --head`, or drop cluster.address to run locally)"
            ) from None
    else:
        ray.init(num_cpus=config.cluster.num_cpus or os.cpu_count() or 1,
                 num_gpus=config.cluster.num_gpus, include_dashboard=False,
                 logging_level=logging.WARNING)
    return True


@dataclass
class ChunkTotals:
    """Sums over finished chunks."""

    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    providers: set[str] = field(default_factory=set)

    def add(self, result: ChunkResult) -> None:
        self.frames += result.frames
        self.faces += result.faces_swapped
        self.frames_with_faces += result.frames_with_faces
        for stage, seconds in result.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.providers.update(result.providers)


def _write_manifest(path: Path, rows: list[dict[str, object]]) -> None:
    table = pa.Table.from_pylist(rows) if rows else pa.table({"chunk": pa.array([], pa.int32())})
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial)
    os.replace(partial, path)


def run_chunks(
    config: RenderConfig,
    info: VideoInfo,
    chunks: list[Chunk],
    detect_pool: ActorPool,
    swap_pool: ActorPool,
    work: Path,
    digest: str,
    source: ray.ObjectRef,
) -> tuple[list[Path], ChunkTotals]:
    """Schedule every chunk with at most `max_chunks_in_flight` in progress; write segments.

    Completion order is free; the returned segment paths are in chunk order.
    """
    totals = ChunkTotals()
    segments: dict[int, Path] = {}
    manifest: list[dict[str, object]] = []
    pending: deque[tuple[Chunk, int]] = deque((chunk, 0) for chunk in chunks)
    in_flight: dict[ray.ObjectRef, tuple[Chunk, int, int, int]] = {}
    limit = config.cluster.max_chunks_in_flight
    with tqdm(total=info.frame_count, unit="frame", desc="fusionray", disable=not config.progress,
              file=sys.stderr, dynamic_ncols=True, mininterval=0.5) as progress:
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
                    if attempt < config.cluster.chunk_retries:
                        log.warning("chunk %d (frames %d-%d) failed, retrying: %s",
                                    chunk.index, chunk.start, chunk.stop - 1, error)
                        pending.appendleft((chunk, attempt + 1))
                        continue
                    raise RenderError(
                        f"Chunk {chunk.index} (frames {chunk.start}-{chunk.stop - 1}) failed "
                        f"after {attempt + 1} attempts: {str(error).splitlines()[0]}"
                    ) from error
                path = work / f"chunk_{chunk.index:06d}{SEGMENT_SUFFIX}"
                partial = path.with_name(path.name + ".partial")
                partial.write_bytes(result.segment)
                os.replace(partial, path)
                segments[chunk.index] = path
                manifest.append({"chunk": chunk.index, "start": chunk.start, "stop": chunk.stop,
                                 "segment": path.name, "bytes": len(result.segment),
                                 "config_hash": digest})
                totals.add(result)
                progress.update(result.frames)
    _write_manifest(work / "manifest.parquet", sorted(manifest, key=lambda r: str(r["segment"])))
    return [segments[chunk.index] for chunk in chunks], totals


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

    Args:
        config: the validated configuration.
        run_dir: folder for the default output (Hydra's run directory).
        config_yaml: the resolved config as YAML, saved beside the output.
        quality: name of the quality preset, for run.json.
    """
    started = time.perf_counter()
    stages: dict[str, float] = {}
    clock = time.perf_counter()
    video, sources = resolve_inputs(config)
    info = probe_video(video)
    stages["probe"] = time.perf_counter() - clock

    paths = OutputPaths.for_video(
        Path(config.output).expanduser() if config.output else default_output(video, run_dir)
    )
    check_output(paths, video)

    clock = time.perf_counter()
    detector = detector_from_config(config, threads=1)
    source, notes = build_source_identity(config, sources, detector)
    source = attach_reference(config, source, info, detector)
    stages["source_identity"] = time.perf_counter() - clock

    chunks = plan_chunks(info.frame_count, chunk_frames=config.chunk.frames,
                         overlap=config.chunk.overlap)
    digest = config_hash(config)

    clock = time.perf_counter()
    started_ray = start_ray(config)
    try:
        sizes = resolve_pool_sizes(config.cluster, ray.cluster_resources())
        detect_pool, swap_pool = start_pools(config, sizes)
        nodes = set(ray.get([a.node_id.remote() for a in detect_pool.actors + swap_pool.actors]))
        stages["ray_start"] = time.perf_counter() - clock
        address = ray.get_runtime_context().gcs_address

        paths.work.mkdir(parents=True, exist_ok=True)
        clock = time.perf_counter()
        segments, totals = run_chunks(
            config, info, chunks, detect_pool, swap_pool, paths.work, digest, ray.put(source))
        stages["chunks_wall"] = time.perf_counter() - clock
    finally:
        if started_ray:
            ray.shutdown()

    clock = time.perf_counter()
    metadata = {"comment": f"altered by fusionray {__version__} (config {digest[:12]})",
                "encoder": f"fusionray {__version__}"}
    assemble_video(info, segments, paths.video, metadata=metadata)
    stages["assemble"] = time.perf_counter() - clock

    paths.config.write_text(config_yaml)
    clock = time.perf_counter()
    if config.preview_frames:
        write_preview(config, info, paths.video, paths.preview)
    stages["preview"] = time.perf_counter() - clock
    if not config.keep_work:
        shutil.rmtree(paths.work, ignore_errors=True)

    stages.update(totals.seconds)
    wall = time.perf_counter() - started
    summary = RunSummary(
        fusionray_version=__version__,
        config_hash=digest,
        input=str(video),
        sources=[str(s) for s in sources],
        output=str(paths.video),
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
    )
    write_summary(paths.run_json, summary)
    return summary

