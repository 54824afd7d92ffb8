"""The render driver: probe, source identity, plan, schedule chunks on Ray, assemble, report.

This module is the orchestration only; each step lives in the module that owns it:
`inputs` (paths and pre-flight checks), `identity` (source and reference faces), `ray_session`
(joining Ray), `fusionray.actors.pools` (the actors), `scheduler` (chunks in flight, retries,
passthrough), `manifest` (the work folder), `outputs` (assembly, preview, faces, publishing).

Everything that can fail on bad input (missing video, not a video, no face in a source image,
an unwritable output folder) is checked before Ray starts, so a bad command costs seconds and
leaves nothing behind. The output path only ever receives a complete, verified file: assembly
writes under a temporary name and renames.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import ray

from fusionray import __version__
from fusionray.actors.pools import (
    ActorPool,
    StageClasses,
    request_from_autoscaler,
    start_pool,
    wait_for_release,
)
from fusionray.actors.stages import (
    detector_from_config,
    model_options_from_config,
    swap_model_names,
)
from fusionray.config import RenderConfig, config_hash, resolve_for_video
from fusionray.errors import FusionrayError, RenderError, RenderInterrupted
from fusionray.faces.shot import needs_shot_pass, plan_shot_selection
from fusionray.jobs.identity import attach_reference, build_source_identity
from fusionray.jobs.inputs import (
    OutputPaths,
    check_output,
    default_output,
    resolve_inputs,
    resolve_output,
)
from fusionray.jobs.lock import OutputLock
from fusionray.jobs.manifest import Manifest, input_identity
from fusionray.jobs.outputs import assemble_output, publish_outputs, write_sidecars
from fusionray.jobs.ray_session import ray_session_name, start_ray
from fusionray.jobs.scheduler import (
    ChunkTotals,
    DetectJob,
    RenderJob,
    Task,
    render_progress,
    run_tasks,
    segment_paths,
)
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from fusionray.media.storage import is_remote
from fusionray.models.store import ensure_model
from fusionray.report.summary import RunSummary, write_summary
from fusionray.swap.base import SourceIdentity
from fusionray.types import Chunk, VideoInfo

# Re-exported: the sweep driver and tests import these from here.
__all__ = ["OutputPaths", "build_source_identity", "default_output", "render", "start_ray"]

log = logging.getLogger("fusionray")


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


def render(
    config: RenderConfig,
    *,
    run_dir: Path,
    config_yaml: str,
    quality: str | None = None,
    stage_classes: StageClasses | None = None,
) -> RunSummary:
    """Render one video end to end and return its summary.

    A rerun of a failed or interrupted job (same config, same inputs, same output) reuses the
    chunks its work folder holds; see `fusionray.jobs.manifest`.

    Args:
        config: the validated configuration.
        run_dir: folder for the default output (Hydra's run directory).
        config_yaml: the resolved config as YAML, saved beside the output.
        quality: name of the quality preset, for run.json.
        stage_classes: the stage classes the actors run (default `StageClasses()`; tests pass
            fault-injecting ones).

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

    local_output, destination = resolve_output(config, video, run_dir)
    paths = OutputPaths.for_video(local_output)
    check_output(paths, video)
    # Actors on other nodes fetch a remote input themselves (once per node).
    shared_info = replace(info, path=config.video) if is_remote(config.video) else info

    clock = time.perf_counter()
    detector = detector_from_config(config, threads=1)
    source, notes = build_source_identity(config, sources, detector)
    source = attach_reference(config, source, info, detector)
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
            report = _render_chunks(config, shared_info, chunks, manifest, source, stages,
                                    stage_classes or StageClasses())
            segments, totals = report.segments, report.totals
            clock = time.perf_counter()
            notes += assemble_output(info, segments, paths, digest if config.provenance else None)
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
            elif paths.work.is_dir():
                error.args = (f"{error}; {len(manifest.rows)} finished chunk(s) are kept in "
                              f"'{paths.work}': rerun the same command to resume",)
            raise

        notes += write_sidecars(config, info, manifest, chunks, paths, config_yaml, stages)
        if not config.keep_work:
            shutil.rmtree(paths.work, ignore_errors=True)

    if totals.frames_with_faces == 0:
        notes.append("no face found in any frame; the output frames are the input frames")
    if totals.passthrough:
        notes.append(f"{len(totals.passthrough)} chunk(s) failed every retry and were written "
                     "unswapped (on_chunk_error=passthrough); see passthrough_chunks")
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
        actors=report.actors,
        nodes=len(report.nodes),
        ray_address=report.address,
        quality=quality,
        notes=notes,
        chunks_reused=totals.reused,
        chunks_rendered=totals.rendered,
        chunk_failures=totals.failures,
        passthrough_chunks=totals.passthrough,
        ray_session=report.session,
        frames_decoded=totals.frames_decoded,
        frames_written=totals.frames,
        actor_threads=report.threads,
        pool_events=report.events,
        chunks_by_actor=report.chunks_by_actor,
        chunk_timeouts=totals.timeouts,
    )
    try:
        write_summary(paths.run_json, summary)
    except OSError as error:
        raise RenderError(f"The output '{paths.video}' is complete, but its run.json "
                          f"'{paths.run_json}' could not be written: {error}") from error
    if destination:
        publish_outputs(paths, destination)  # PublishError: the local file is kept
    return summary


@dataclass(frozen=True)
class PassReport:
    """What running the chunks on Ray took: for run.json."""

    segments: list[Path]
    totals: ChunkTotals
    actors: dict[str, int]
    """Actors started per pool ({"detect": 0, "render": 2} without a pre-pass)."""
    threads: dict[str, int]
    """Inference/decode/encode threads per actor of each pool."""
    nodes: set[str]
    address: str
    session: str | None
    events: list[str]
    chunks_by_actor: dict[str, int]


def _render_chunks(
    config: RenderConfig, info: VideoInfo, chunks: list[Chunk], manifest: Manifest,
    source: SourceIdentity, stages: dict[str, float], stage_classes: StageClasses,
) -> PassReport:
    """Start (or join) Ray, run the chunks the manifest lacks, and stop a Ray we started.

    With shot-level selection (`needs_shot_pass`) a detection pool first runs over every
    chunk, the shot is planned from all detections, and the detection pool is released before
    the render pool starts, so each pass has the whole cluster.
    """
    clock = time.perf_counter()
    started_ray = start_ray(config)
    pools: list[ActorPool] = []
    try:
        info_ref, source_ref = ray.put(info), ray.put(source)
        address = str(ray.get_runtime_context().gcs_address)
        session = ray_session_name()
        job = RenderJob(config, info, manifest, info_ref, source_ref)
        tasks = job.tasks(chunks)
        actors = {"detect": 0, "render": 0}
        threads: dict[str, int] = {}
        if tasks and needs_shot_pass(config.selection):
            detect_pool = start_pool("detect", config, stage_classes.detect)
            pools.append(detect_pool)
            actors["detect"], threads["detect"] = len(detect_pool), detect_pool.plan.threads
            detect_job = DetectJob(config, info_ref, totals=job.totals)
            run_tasks(config, detect_pool, [Task(detect_job, c) for c in chunks])
            shot = plan_shot_selection(
                [detect_job.results[c.index].detections for c in chunks],
                frame_count=info.frame_count, config=config, source=source)
            job.detected, job.shot_ref = detect_job.refs, ray.put(shot)
            detect_pool.shutdown()
            wait_for_release(detect_pool)
        render_pool = start_pool("render", config, stage_classes.render) if tasks else None
        if render_pool is not None:
            pools.append(render_pool)
            actors["render"], threads["render"] = len(render_pool), render_pool.plan.threads
        stages["ray_start"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if render_pool is not None:
            with render_progress(config, info, job.totals.frames) as progress:
                run_tasks(config, render_pool, tasks,
                          on_progress=lambda chunk: progress.update(chunk.owned_frames))
        stages["chunks_wall"] = time.perf_counter() - clock
        nodes = {m.node_id for pool in pools for m in pool.members if m.node_id}
        events = [event for pool in pools for event in pool.events]
        by_actor = {name: n for pool in pools for name, n in pool.chunks_by_member.items()}
    finally:
        for pool in pools:
            pool.shutdown()
        if config.cluster.elastic and ray.is_initialized():
            request_from_autoscaler(config.cluster.swap, 0)
        if started_ray:
            ray.shutdown()
    return PassReport(segments=segment_paths(manifest, chunks), totals=job.totals,
                      actors=actors, threads=threads, nodes=nodes, address=address,
                      session=session, events=events, chunks_by_actor=by_actor)
