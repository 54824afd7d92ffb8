"""The render driver: probe, source identity, plan, schedule chunks on Ray, assemble, report.

This module is the orchestration only; each step lives in the module that owns it:
`inputs` (paths and pre-flight checks), `identity` (source and reference faces), `ray_session`
(joining Ray), `inline` (chunks the driver renders itself), `fusionray.actors.pools` (the actors),
`scheduler` (chunks in flight, retries, passthrough), `manifest` (the work folder), `outputs`
(assembly, preview, faces, publishing).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from fusionray import __version__
from fusionray.actors.pools import (
    ActorPool,
    StageClasses,
    request_from_autoscaler,
    start_pool,
)
from fusionray.actors.stages import (
    detector_from_config,
    gate_model_names,
    model_options_from_config,
    swap_model_names,
)
from fusionray.config import RenderConfig, config_hash, resolve_for_video
from fusionray.errors import FusionrayError, PublishError, RenderError, RenderInterrupted
from fusionray.faces.identity import summarize_identity
from fusionray.faces.people import SourceSet
from fusionray.faces.shot import ShotSelection, needs_shot_pass, plan_shot_selection
from fusionray.jobs.identity import attach_reference, build_source_identity, build_source_set
from fusionray.jobs.inline import (
    BESIDE_RAY_NOTE,
    INLINE_NOTE,
    DriverChunks,
    plan_driver,
    start_render_processes_early,
)
from fusionray.jobs.inputs import (
    OutputPaths,
    check_output,
    default_output,
    resolve_inputs,
    resolve_output,
    resolve_sequence_output,
)
from fusionray.jobs.lock import OutputLock
from fusionray.jobs.manifest import Manifest, input_identity
from fusionray.jobs.outputs import (
    assemble_output,
    assemble_sequence,
    publish_outputs,
    write_sidecars,
)
from fusionray.jobs.ray_session import join_address, ray_session_name, start_ray, stop_ray
from fusionray.jobs.scheduler import DetectJob, RenderJob, Task, run_tasks, segment_paths
from fusionray.lazy import ray, ray_connected  # Ray imported on first use (fusionray.lazy)
from fusionray.media.assemble import VerificationError
from fusionray.media.encode import settings_for_video
from fusionray.media.plan import plan_video_chunks
from fusionray.media.sequence import probe_input, verified_frames
from fusionray.media.storage import is_remote
from fusionray.models.device import probe_device
from fusionray.models.providers import driver_config
from fusionray.models.store import ensure_model
from fusionray.report.summary import RunSummary, write_summary
from fusionray.swap.base import SourceIdentity
from fusionray.types import Chunk, ImageSequence, VideoInfo

# Re-exported: the sweep driver and tests import these from here.
__all__ = ["OutputPaths", "build_source_identity", "default_output", "render", "start_ray"]

log = logging.getLogger("fusionray")


def ensure_swap_models(config: RenderConfig) -> None:
    """Locate (or fetch) the swap actors' model files (and the target gate's) before Ray
    starts.

    A missing model is then one clear error (ModelError) instead of every actor failing to
    start, and a download happens once here rather than in every actor at the same time.
    Nodes of a cluster without a shared model folder still fetch their own copies.
    """
    options = model_options_from_config(config, providers=config.swapper.providers)
    # The target gate's verifier runs in every actor that detects, on top of the detector.
    for name in swap_model_names(config) + gate_model_names(config):
        ensure_model(name, cache_dir=options.cache_dir, shared_dirs=options.shared_dirs,
                     offline=options.offline, allow_unverified=options.allow_unverified)


@dataclass
class Shot:
    """One video of a job, from its pre-flight checks to its run.json."""

    config: RenderConfig
    """Resolved for this video (automatic choices made)."""
    digest: str
    """`config_hash` of the config as given."""
    video: Path
    sources: list[Path]
    info: VideoInfo
    shared_info: VideoInfo
    """What actors get: a remote input keeps its URI, so other nodes fetch it themselves."""
    paths: OutputPaths
    destination: str | None
    source: SourceIdentity | SourceSet
    """The identity, or the people of `selection.mode=map`."""
    detector_provider: str
    chunks: list[Chunk]
    notes: list[str]
    stages: dict[str, float]
    started: float
    manifest: Manifest | None = None
    job: RenderJob | None = None
    lock: OutputLock | None = None
    """The output's lease while the shot renders (checked before its output is written)."""
    selection: ShotSelection | None = None
    """The shot-level selection, when the shot planned one (`needs_shot_pass`)."""
    output_frames: ImageSequence | None = None
    """The output sequence of an image-sequence input (then `paths.video` is its folder)."""
    complete_chunks: frozenset[int] = frozenset()
    """Sequence output: chunks whose every frame a finished earlier run left verified."""

    @property
    def pool_key(self) -> str:
        """Shots with equal keys can share render actors (whose stages hold the config):
        the resolved config but for the shot's own video, sources and output."""
        return repr(replace(self.config, video="demo", source=None, output=None))


def prepare_shot(config: RenderConfig, run_dir: Path) -> Shot:
    """Everything before Ray: inputs, probe, output checks, source identity, models, plan.

    Raises:
        FusionrayError: bad input or config (nothing is written).
    """
    started = time.perf_counter()
    stages: dict[str, float] = {}
    clock = time.perf_counter()
    video, sources = resolve_inputs(config)
    info = probe_input(video, config.media.rate)
    stages["probe"] = time.perf_counter() - clock
    # The hash is of the config as given: automatic choices (e.g. detector tiles) follow from
    # it and the input, so the same command on the same input always has the same hash.
    digest = config_hash(config)
    config = resolve_for_video(config, info.width, info.height)
    chunks = plan_video_chunks(info, config.chunk)
    start_render_processes_early(config, len(chunks))

    codec = settings_for_video(config.encode, info).codec  # ConfigError before Ray starts
    output_frames: ImageSequence | None = None
    destination: str | None = None
    if info.sequence is not None:
        paths, output_frames = resolve_sequence_output(config, info, run_dir)
    else:
        local_output, destination = resolve_output(config, video, run_dir, codec=codec)
        paths = OutputPaths.for_video(local_output)
    check_output(paths, video)
    shared_info = replace(info, path=config.video) if is_remote(config.video) else info

    clock = time.perf_counter()
    # The driver's models never open a GPU: the actors own the cards (`driver_config`).
    on_cpu = driver_config(config)
    detector = detector_from_config(on_cpu, threads=1)
    source: SourceIdentity | SourceSet
    if config.selection.mode == "map":
        source, sources, notes = build_source_set(on_cpu, detector)
    else:
        source, notes = build_source_identity(on_cpu, sources, detector)
        source = attach_reference(on_cpu, source, info, detector)
    stages["source_identity"] = time.perf_counter() - clock
    clock = time.perf_counter()
    ensure_swap_models(config)
    stages["models"] = time.perf_counter() - clock

    return Shot(config=config, digest=digest, video=video, sources=sources, info=info,
                shared_info=shared_info, paths=paths, destination=destination, source=source,
                detector_provider=f"{detector.name}:{detector.provider}", chunks=chunks,
                notes=notes, stages=stages, started=started, output_frames=output_frames)


def open_work(shot: Shot) -> None:
    """Open the shot's work folder (the lock must be held): finished chunks are reused."""
    shot.manifest = Manifest.open(shot.paths.work, config_hash=shot.digest,
                                  input_identity=input_identity(shot.info, shot.sources),
                                  chunks=shot.chunks)
    shot.notes += shot.manifest.notes
    if shot.output_frames is not None and shot.paths.frames is not None:
        done = verified_frames(shot.paths.frames, shot.output_frames,
                               job_key=sequence_job_key(shot))
        shot.complete_chunks = frozenset(
            chunk.index for chunk in shot.chunks
            if chunk.index not in shot.manifest.rows
            and all(index in done for index in range(chunk.start, chunk.stop)))
        if done:
            shot.notes.append(f"resumed per frame: {len(done)} of {shot.info.frame_count} "
                              f"output frame(s) were already written and verified; "
                              f"{len(shot.complete_chunks)} chunk(s) not rendered again")


def sequence_job_key(shot: Shot) -> str:
    """What output frames are valid for: the config hash and the input identity."""
    assert shot.manifest is not None
    return f"{shot.manifest.config_hash}:{shot.manifest.input_identity}"


def keep_work_on_failure(shot: Shot, error: BaseException) -> BaseException:
    """Clean an empty work folder, or say in the error where the finished chunks wait."""
    manifest = shot.manifest
    rows = len(manifest.rows) if manifest else 0
    if isinstance(error, KeyboardInterrupt):
        if not rows:
            shutil.rmtree(shot.paths.work, ignore_errors=True)  # nothing worth resuming
            return RenderInterrupted("Interrupted before any chunk finished")
        return RenderInterrupted(
            f"Interrupted; {rows} finished chunk(s) of {len(shot.chunks)} are kept in "
            f"'{shot.paths.work}': rerun the same command to resume")
    if not rows:
        shutil.rmtree(shot.paths.work, ignore_errors=True)  # nothing worth resuming
    elif shot.paths.work.is_dir() and not isinstance(error.__cause__, VerificationError):
        # (A failed verification would fail the same way again: no resume advice.)
        error.args = (f"{error}; {rows} finished chunk(s) are kept in "
                      f"'{shot.paths.work}': rerun the same command to resume",)
    return error


def finish_shot(
    shot: Shot, report: PassReport, *, config_yaml: str, quality: str | None,
) -> RunSummary:
    """Assemble, write the sidecars and run.json, publish (the lock must be held).

    Raises:
        RenderError: assembling failed, or run.json could not be written.
        PublishError: the upload failed; the complete local file is kept.
    """
    config, paths, stages, notes = shot.config, shot.paths, shot.stages, shot.notes
    assert shot.manifest is not None and shot.job is not None
    totals = shot.job.totals
    if shot.lock is not None:
        shot.lock.check_held()  # another job took the output over: write nothing there
    clock = time.perf_counter()
    segments = segment_paths(shot.manifest, shot.chunks)
    if shot.output_frames is not None:
        assert paths.frames is not None
        # Chunks left complete by an earlier run have no segment: their frames are in place.
        notes += assemble_sequence(
            [path for chunk, path in zip(shot.chunks, segments, strict=True)
             if chunk.index not in shot.complete_chunks], shot.output_frames,
            record=paths.frames, job_key=sequence_job_key(shot))
    else:
        notes += assemble_output(shot.info, segments, paths,
                                 shot.digest if config.provenance else None)
    stages["assemble"] = time.perf_counter() - clock
    notes += write_sidecars(config, shot.info, shot.manifest, shot.chunks, paths, config_yaml,
                            stages, shot.output_frames)
    if not config.keep_work:
        shutil.rmtree(paths.work, ignore_errors=True)

    if shot.selection is not None:
        chosen = shot.selection
        notes.append(f"shot selection ({config.selection.mode}): {chosen.track_count} face "
                     f"track(s), {len(chosen.tracks)} swapped, {chosen.rejected_tracks} dropped "
                     "by the track gate")
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
    wall = time.perf_counter() - shot.started
    summary = RunSummary(
        fusionray_version=__version__,
        config_hash=shot.digest,
        input=str(shot.video),
        sources=[str(s) for s in shot.sources],
        output=shot.destination or str(paths.video),
        frames=shot.info.frame_count,
        chunks=len(shot.chunks),
        faces_swapped=totals.faces,
        frames_with_faces=totals.frames_with_faces,
        wall_seconds=round(wall, 3),
        frames_per_second=round(shot.info.frame_count / wall, 3) if wall > 0 else 0.0,
        stage_seconds={k: round(v, 3) for k, v in stages.items()},
        providers=sorted(totals.providers | {shot.detector_provider}),
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
        identity=summarize_identity(totals.identity_scores,
                                    every=config.identity_every),
        concealed_frames=sorted(set(totals.concealed)),
    )
    try:
        write_summary(paths.run_json, summary)
    except OSError as error:
        raise RenderError(f"The output '{paths.video}' is complete, but its run.json "
                          f"'{paths.run_json}' could not be written: {error}") from error
    if shot.destination:
        publish_outputs(paths, shot.destination)  # PublishError: the local file is kept
    return summary


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
    shot = prepare_shot(config, run_dir)
    with OutputLock.for_config(shot.paths.video, shot.config.storage) as lock:
        shot.lock = lock
        shot.notes += lock.notes
        open_work(shot)
        try:
            report = run_shots([shot], stage_classes or StageClasses())
            return finish_shot(shot, report, config_yaml=config_yaml, quality=quality)
        except PublishError:
            raise  # the render is complete: nothing to resume
        except (KeyboardInterrupt, FusionrayError) as error:
            raised = keep_work_on_failure(shot, error)
            if raised is error:
                raise
            raise raised from None


@dataclass(frozen=True)
class PassReport:
    """What running the chunks on Ray took: for run.json."""

    actors: dict[str, int]
    """Actors started per pool ({"detect": 0, "render": 2} without a pre-pass)."""
    threads: dict[str, int]
    """Inference/decode/encode threads per actor of each pool."""
    nodes: set[str]
    address: str
    session: str | None
    events: list[str]
    chunks_by_actor: dict[str, int]

    @classmethod
    def without_ray(cls, *, threads: dict[str, int], chunks_by_actor: dict[str, int],
                    events: Sequence[str] = ()) -> PassReport:
        """A pass that started no Ray: nothing to render, or its chunks rendered here
        (`events`: the driver's, `DriverChunks.events`)."""
        return cls(actors={"detect": 0, "render": 0}, threads=threads, nodes=set(), address="",
                   session=None, events=list(events), chunks_by_actor=chunks_by_actor)


def run_shots(
    shots: list[Shot], stage_classes: StageClasses, *, isolate_failures: bool = False,
) -> PassReport:
    """Start (or join) Ray, render the chunks every shot's manifest lacks on pools shared by
    all the shots, and stop a Ray we started.

    Where the manifests lack nothing, nothing starts. Where the job would start a Ray of its
    own on a machine without a GPU, this process renders its chunks itself instead (one chunk,
    or a small machine's), or its first chunks while Ray starts (`fusionray.jobs.inline`).

    Shots whose render settings are equal share one render pool, their chunks interleaved so
    every actor stays busy; shots with other settings get their own pool, one after another.
    With shot-level selection (`needs_shot_pass`) a detection pool first runs over every chunk,
    each shot is planned from all its detections, and the detection pool is released before
    the render pool starts, so each pass has the whole cluster.

    Args:
        isolate_failures: a shot whose chunk fails every retry stops only that shot (its job's
            `failed` holds the error); otherwise the error is raised at once.
    """
    first = shots[0]
    config = first.config
    for shot in shots:
        assert shot.manifest is not None
        shot.job = RenderJob(shot.config, shot.shared_info, shot.manifest, shot.source,
                             complete=shot.complete_chunks)
    tasks = {id(shot): shot.job.tasks(shot.chunks) for shot in shots if shot.job}
    pending = [task for shot_tasks in tasks.values() for task in shot_tasks]
    if not pending:
        # A resumed job whose work folder holds every chunk: nothing needs Ray.
        return PassReport.without_ray(threads={}, chunks_by_actor={})
    ray_running = ray_connected()
    pre_pass = any(needs_shot_pass(shot.config.selection) for shot in shots)

    def sees_gpu() -> bool:
        return probe_device().device_id is not None

    plan = plan_driver(
        config, tasks=len(pending),
        pools=len({shot.pool_key for shot in shots if tasks[id(shot)]}),
        ray_running=ray_running, address=join_address(config), sees_gpu=sees_gpu,
        pre_pass=pre_pass,
        affinity=tuple(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else ())
    beside: DriverChunks | None = None
    if plan is not None:
        # The one pool's chunks, in the order it would run them.
        driver = DriverChunks(interleave(list(tasks.values())), stage_classes.render, plan)
        if not plan.beside_ray:
            _render_here([shot for shot in shots if tasks[id(shot)]], driver,
                         isolate_failures=isolate_failures)
            return PassReport.without_ray(threads={"render": plan.threads},
                                          chunks_by_actor={"driver": driver.rendered},
                                          events=driver.events)
        # The driver takes them from the front until the pool is ready (`hand_over`).
        beside = driver
        for shot in shots:
            if tasks[id(shot)]:
                shot.notes.append(BESIDE_RAY_NOTE)
    clock = time.perf_counter()
    pools: list[ActorPool] = []
    actors = {"detect": 0, "render": 0}
    threads: dict[str, int] = {}
    started_ray, driver_chunks, driver_events = False, 0, []
    try:
        started_ray = start_ray(config)
        address = str(ray.get_runtime_context().gcs_address)
        session = ray_session_name()
        groups: dict[str, list[Shot]] = {}
        for shot in shots:
            groups.setdefault(shot.pool_key, []).append(shot)
        for position, group in enumerate(groups.values()):
            group_tasks = [tasks[id(shot)] for shot in group]
            needs_pass = [s for s in group if tasks[id(s)] and needs_shot_pass(s.config.selection)]
            if needs_pass:
                _detection_pre_pass(needs_pass, stage_classes, pools, actors, threads)
            if not any(group_tasks):
                continue
            group_config = group[0].config
            # With chunks in the driver, the pool is planned for all but its first, as the
            # driver's threads were (`plan_driver`): the same threads, the same bytes.
            planned = sum(len(shot_tasks) for shot_tasks in group_tasks) - (beside is not None)
            render_pool = start_pool("render", group_config, stage_classes.render,
                                     chunks=planned, own_node=started_ray)
            pools.append(render_pool)
            actors["render"] = max(actors["render"], len(render_pool))
            threads["render"] = render_pool.plan.threads
            first.stages["ray_start"] = time.perf_counter() - clock
            clock = time.perf_counter()
            with progress_bar(group) as progress:
                def advance(chunk: Chunk) -> None:
                    progress.update(chunk.owned_frames)

                if beside is None:
                    run_tasks(group_config, render_pool, interleave(group_tasks),
                              on_progress=advance, isolate_failures=isolate_failures)
                else:  # the driver's chunks are this group's: the job has one pool
                    _run_beside_driver(group_config, render_pool, beside, on_progress=advance,
                                       isolate_failures=isolate_failures)
                    driver_chunks, driver_events = beside.rendered, beside.events
                    beside = None
            for shot in group:
                shot.stages["chunks_wall"] = time.perf_counter() - clock
            if position < len(groups) - 1:
                render_pool.release()  # the next group's pool is sized from the whole cluster
        nodes = {m.node_id for pool in pools for m in pool.all_members if m.node_id}
        events = driver_events + [event for pool in pools for event in pool.events]
        by_actor = {name: n for pool in pools for name, n in pool.chunks_by_member.items()}
        if driver_chunks:
            by_actor["driver"] = driver_chunks
    finally:
        if beside is not None:  # the job failed or was interrupted before its chunks settled
            beside.stop()
        for pool in pools:
            # A Ray that outlives this job (joined, or a sweep's) gets its resources back
            # before the next job sizes its pools; a Ray of our own is stopped below.
            if started_ray:
                pool.shutdown()
            else:
                pool.release()
        if config.cluster.elastic and ray.is_initialized():
            request_from_autoscaler(config.cluster.swap, 0)
        if started_ray:
            stop_ray()
    return PassReport(actors=actors, threads=threads, nodes=nodes, address=address,
                      session=session, events=events, chunks_by_actor=by_actor)


def _run_beside_driver(
    config: RenderConfig, pool: ActorPool, driver: DriverChunks, *,
    on_progress: Callable[[Chunk], None], isolate_failures: bool,
) -> None:
    """Run on `pool` every chunk the driver has not started (`DriverChunks.hand_over`),
    recording the driver's as they finish; then its last one, and the retries of any that
    failed there, on the pool."""
    retries: list[Task] = []

    def record_driver_chunks() -> None:
        retries.extend(driver.settle_finished(isolate_failures=isolate_failures,
                                              on_progress=on_progress))

    run_tasks(config, pool, driver.hand_over(), on_progress=on_progress,
              isolate_failures=isolate_failures, each_turn=record_driver_chunks)
    retries += driver.settle(isolate_failures=isolate_failures, on_progress=on_progress)
    run_tasks(config, pool, retries, on_progress=on_progress, isolate_failures=isolate_failures)


def _render_here(shots: list[Shot], driver: DriverChunks, *, isolate_failures: bool) -> None:
    """Render every chunk `shots` lack in this process (`fusionray.jobs.inline`, no Ray)."""
    clock = time.perf_counter()
    try:
        with progress_bar(shots) as progress:
            driver.run(isolate_failures=isolate_failures,
                       on_progress=lambda chunk: progress.update(chunk.owned_frames))
    except BaseException:
        driver.stop()  # the chunks finished by then are recorded for a rerun
        raise
    for shot in shots:
        shot.stages["chunks_wall"] = time.perf_counter() - clock
        shot.notes.append(INLINE_NOTE)


def progress_bar(shots: list[Shot]) -> tqdm:
    """The render's progress in frames, over `shots` together, starting at the frames of the
    chunks their work folders already hold (on stderr; off with `progress=false`)."""
    return tqdm(total=sum(shot.info.frame_count for shot in shots),
                initial=sum(shot.job.totals.frames for shot in shots if shot.job),
                unit="frame", desc="fusionray", disable=not shots[0].config.progress,
                file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def interleave(task_lists: list[list[Task]]) -> list[Task]:
    """Round-robin over the shots' task lists, so no shot waits for another to finish."""
    merged: list[Task] = []
    for position in range(max((len(tasks) for tasks in task_lists), default=0)):
        merged += [tasks[position] for tasks in task_lists if position < len(tasks)]
    return merged


def _detection_pre_pass(
    shots: list[Shot], stage_classes: StageClasses, pools: list[ActorPool],
    actors: dict[str, int], threads: dict[str, int],
) -> None:
    """Detect every chunk of `shots` on one detection pool, plan each shot's selection, and
    release the pool (its resources go back before the render pool is sized)."""
    config = shots[0].config
    detect_pool = start_pool("detect", config, stage_classes.detect,
                             chunks=sum(len(shot.chunks) for shot in shots))
    pools.append(detect_pool)
    actors["detect"] = max(actors["detect"], len(detect_pool))
    threads["detect"] = detect_pool.plan.threads
    jobs = []
    for shot in shots:
        assert shot.job is not None
        info_ref, _ = shot.job.share()
        jobs.append(DetectJob(shot.config, info_ref, totals=shot.job.totals))
    run_tasks(config, detect_pool, interleave(
        [[Task(job, chunk) for chunk in shot.chunks] for job, shot in zip(jobs, shots,
                                                                          strict=True)]))
    for job, shot in zip(jobs, shots, strict=True):
        assert shot.job is not None
        selection = plan_shot_selection(
            [job.results[c.index].detections for c in shot.chunks],
            frame_count=shot.info.frame_count, config=shot.config, source=shot.source)
        shot.selection = selection
        shot.job.detected, shot.job.shot_ref = job.refs, ray.put(selection)
    detect_pool.release()
