"""Chunk scheduling: keep at most `max_chunks_in_flight` chunks on a pool, retry failed
chunks on other actors, restart the actor of a hung chunk, and hand each result to its job.

The loop is generic over `ChunkJob`s (what a chunk's call is and what to do with its result),
so the detection pre-pass and the render pass share it, and chunks of several shots can share
one pool. `ray.wait` always has a timeout: the loop wakes to notice hung chunks, actors that
came back, and (elastic pools) nodes that joined or left.
"""

from __future__ import annotations

import errno
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from fusionray.actors.pools import ActorPool, Member
from fusionray.actors.stages import ChunkResult, passthrough_segment
from fusionray.config import ClusterConfig, RenderConfig
from fusionray.errors import MediaError, RenderError
from fusionray.faces.people import SourceSet
from fusionray.jobs.manifest import FinishedChunk, Manifest, chunk_faces_path, write_parquet_atomic
from fusionray.jobs.ray_session import failure_reason
from fusionray.lazy import ray  # imported on first use (fusionray.lazy)
from fusionray.swap.base import SourceIdentity
from fusionray.types import Chunk, VideoInfo

log = logging.getLogger("fusionray")

POLL_SECONDS = 2.0
"""Longest the loop sleeps in `ray.wait` before it looks at hangs and pool membership."""


@dataclass
class ChunkTotals:
    """Sums over finished chunks, and what happened to them."""

    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    frames_decoded: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    providers: set[str] = field(default_factory=set)
    reused: int = 0
    rendered: int = 0
    failures: list[str] = field(default_factory=list)
    passthrough: list[dict[str, int]] = field(default_factory=list)
    timeouts: list[dict[str, Any]] = field(default_factory=list)
    """Chunks cancelled as hung: {"chunk", "attempt", "seconds", "limit_seconds", "actor"}."""
    identity_scores: list[Any] = field(default_factory=list)
    """Each rendered chunk's (N, 2) identity scores (`fusionray.faces.identity`)."""
    concealed: list[int] = field(default_factory=list)
    """Frames concealed by the decoder (`ChunkResult.concealed_frames`, passthrough chunks')."""
    notes: list[str] = field(default_factory=list)
    """The swap engines' notes, each once."""

    def add(self, result: ChunkResult) -> None:
        if result.identity_scores is not None:
            self.identity_scores.append(result.identity_scores)
        self.frames += result.frames
        self.faces += result.faces_swapped
        self.frames_with_faces += result.frames_with_faces
        self.frames_decoded += result.frames_decoded
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
        # A missing file or folder inside the work folder we made: it is being removed, or is
        # gone (a removal in progress deletes the files before the folder, so the folder may
        # still exist when the write fails).
        if error.errno == errno.ENOENT or not manifest.work.is_dir():
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


class ChunkJob(Protocol):
    """What one job (a shot's pass) does with the chunks it hands the scheduler."""

    totals: ChunkTotals

    def submit(self, member: Member, chunk: Chunk) -> ray.ObjectRef:
        """Start the chunk's call on `member`."""

    def done(self, chunk: Chunk, result: Any) -> None:
        """Keep a finished chunk's result."""

    def give_up(self, chunk: Chunk, error: BaseException) -> None:
        """The chunk failed every attempt: raise, or write it some other way."""


@dataclass
class Task:
    """A chunk waiting for (another) attempt."""

    job: ChunkJob
    chunk: Chunk
    attempt: int = 0
    avoid: str | None = None
    """The member it last failed or hung on (picked again only when it is the only one)."""


def job_failed(job: ChunkJob) -> bool:
    """Whether `job` (a shot's pass) failed for good while failures are isolated to their shot
    (`run_tasks(isolate_failures=True)`): its other chunks' results are then dropped."""
    return getattr(job, "failed", None) is not None


def hang_limit_seconds(durations: Sequence[float], cluster: ClusterConfig) -> float:
    """Seconds after which a running chunk counts as hung (pure): `hang_factor` x the median
    finished chunk time, never under `hang_floor_seconds`; with no chunk finished yet,
    `hang_factor` x `hang_floor_seconds` (the first chunks also load models and warm up)."""
    if not durations:
        return cluster.hang_factor * cluster.hang_floor_seconds
    return max(cluster.hang_floor_seconds, cluster.hang_factor * statistics.median(durations))


def run_tasks(
    config: RenderConfig, pool: ActorPool, tasks: Sequence[Task], *,
    on_progress: Callable[[Chunk], None] = lambda chunk: None,
    isolate_failures: bool = False,
    each_turn: Callable[[], None] = lambda: None,
) -> None:
    """Run `tasks` on `pool` with at most `max_chunks_in_flight` in progress.

    `each_turn` is called on this thread once per turn of the loop (at least every
    `POLL_SECONDS`): the caller's own work beside the pool's (the driver's chunks recorded as
    they finish, `fusionray.jobs.inline.DriverChunks`).

    A failed call is retried (up to `chunk_retries`) on another member where one is ready; a
    call that dies with its actor makes the pool count a restart (or drop the actor for good).
    A call running past `hang_limit_seconds` is cancelled by restarting its actor; the other
    calls queued on that actor go back to the queue without losing an attempt.

    With `isolate_failures`, a job whose `give_up` raises (a shot of several) stops alone: the
    error goes to its `failed` attribute, its other chunks are dropped, the rest run on.

    Raises:
        RenderError: a job's `give_up` raised (unless isolated), or no member was ready for
            `cluster.resource_wait_seconds` (every actor gone and no room for a new one).
    """
    cluster = config.cluster
    pending: deque[Task] = deque(tasks)
    in_flight: dict[ray.ObjectRef, tuple[Task, Member]] = {}
    durations: list[float] = []
    limit = cluster.max_chunks_in_flight
    idle_since: float | None = None

    def give_up(task: Task, error: BaseException) -> None:
        try:
            task.job.give_up(task.chunk, error)
        except RenderError as failure:
            if not isolate_failures:
                raise
            task.job.failed = failure  # type: ignore[attr-defined]
            log.warning("%s", failure)
            for other in [t for t in pending if t.job is task.job]:
                pending.remove(other)

    while pending or in_flight:
        each_turn()
        pool.maintain()
        ready = pool.ready()
        per_member = max(1, -(-limit // max(1, len(ready))))
        while pending and len(in_flight) < limit:
            task = pending[0]
            member = pool.pick(avoid=task.avoid, per_member=per_member)
            if member is None:
                break
            pending.popleft()
            ref = task.job.submit(member, task.chunk)
            if not member.queue:
                member.head_since = time.monotonic()
            member.queue.append(ref)
            in_flight[ref] = (task, member)
        now = time.monotonic()
        if not in_flight and not ready:
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since > cluster.resource_wait_seconds:
                raise RenderError(
                    f"No {pool.kind} actor is left and none could start for "
                    f"{cluster.resource_wait_seconds:g} s (cluster.resource_wait_seconds); "
                    f"{len(pending)} chunk(s) not rendered; pool events: "
                    f"{'; '.join(pool.events[-3:]) or 'none'}")
        else:
            idle_since = None
        hang = hang_limit_seconds(durations, cluster)
        heads = [m for m in pool.members if m.queue]
        wake = min([m.head_since + hang - now for m in heads] + [POLL_SECONDS])
        waiting = list(in_flight) + list(pool.pings)
        if not waiting:
            time.sleep(max(0.05, min(wake, 1.0)))
            continue
        done, _ = ray.wait(waiting, num_returns=1, timeout=max(0.0, wake))
        for ref in done:
            if ref in pool.pings:
                pool.handle_ping(ref)
                continue
            task, member = in_flight.pop(ref)
            finished_at = time.monotonic()
            if ref in member.queue:
                started = member.head_since if member.queue[0] == ref else finished_at
                member.queue.remove(ref)
                member.head_since = finished_at
            else:
                started = finished_at
            if job_failed(task.job):
                continue  # another chunk of its shot failed for good
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayError, MediaError) as error:
                if isinstance(error, ray.exceptions.RayActorError):
                    pool.actor_died(member)
                reason = failure_reason(error)
                task.job.totals.failures.append(
                    f"{describe(task.chunk)} attempt {task.attempt + 1}: {reason}")
                if task.attempt < cluster.chunk_retries:
                    log.warning("%s failed, retrying: %s", describe(task.chunk), reason)
                    pending.appendleft(Task(task.job, task.chunk, task.attempt + 1,
                                            avoid=member.name))
                    continue
                give_up(task, error)
                on_progress(task.chunk)
                continue
            durations.append(finished_at - started)
            pool.finished(member)
            task.job.done(task.chunk, result)
            on_progress(task.chunk)
        now = time.monotonic()
        for member in [m for m in pool.members if m.queue and now - m.head_since > hang]:
            _cancel_hung(member, pool, in_flight, pending, hang, now, cluster.chunk_retries,
                         give_up)


def _cancel_hung(
    member: Member, pool: ActorPool, in_flight: dict[ray.ObjectRef, tuple[Task, Member]],
    pending: deque[Task], hang: float, now: float, retries: int,
    give_up: Callable[[Task, BaseException], None],
) -> None:
    """Restart the member whose head call hung; requeue the hung chunk as a failed attempt
    (elsewhere) and the calls queued behind it as they were."""
    refs, member.queue = member.queue, []
    hung, *behind = [in_flight.pop(ref)[0] for ref in refs if ref in in_flight]
    reason = record_hang(hung, now - member.head_since, hang, member.name)
    for ref in refs:
        ray.cancel(ref)
    pool.restart(member, reason)
    for task in reversed(behind):
        pending.appendleft(Task(task.job, task.chunk, task.attempt, avoid=member.name))
    if hung.attempt < retries:
        pending.appendleft(Task(hung.job, hung.chunk, hung.attempt + 1, avoid=member.name))
    else:
        give_up(hung, RenderError(reason))


def record_hang(task: Task, seconds: float, limit: float, where: str) -> str:
    """Count `task`'s attempt as hung in its job's totals (run.json's `chunk_timeouts` and
    `chunk_failures`): it ran `seconds` against the hang limit of `limit` seconds
    (`hang_limit_seconds`) on `where` (an actor, or a driver thread).

    Returns:
        Why, one line (for the pool's events and a give-up's error).
    """
    task.job.totals.timeouts.append({
        "chunk": task.chunk.index, "attempt": task.attempt + 1, "seconds": round(seconds, 3),
        "limit_seconds": round(limit, 3), "actor": where})
    task.job.totals.failures.append(f"{describe(task.chunk)} attempt {task.attempt + 1}: "
                                    f"hung ({seconds:.1f} s > {limit:.1f} s)")
    return f"{describe(task.chunk)} ran {seconds:.1f} s, past the hang limit of {limit:.1f} s"


@dataclass
class RenderJob:
    """The render pass of one shot: chunks go to render actors; each finished segment is
    recorded in the shot's manifest as it lands."""

    config: RenderConfig
    info: VideoInfo
    manifest: Manifest
    source: SourceIdentity | SourceSet
    """The identity to swap in, or the people of `selection.mode=map`."""
    info_ref: ray.ObjectRef | None = None
    """`info` and `source` in the object store (`share`), put once for every chunk's call."""
    source_ref: ray.ObjectRef | None = None
    detected: dict[int, ray.ObjectRef] = field(default_factory=dict)
    """Pre-pass detections by chunk index (empty: the render actor detects)."""
    shot_ref: ray.ObjectRef | None = None
    complete: frozenset[int] = frozenset()
    """Chunks whose frames an earlier run already wrote to the output (image sequences:
    every owned frame verified on disk); not rendered, counted as reused."""
    totals: ChunkTotals = field(default_factory=ChunkTotals)
    failed: RenderError | None = None
    """Set when a chunk failed for good and the job ran among other shots."""

    def share(self) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        """`info` and `source` in the object store (Ray must be up), put on first use."""
        if self.info_ref is None or self.source_ref is None:
            self.info_ref, self.source_ref = ray.put(self.info), ray.put(self.source)
        return self.info_ref, self.source_ref

    def submit(self, member: Member, chunk: Chunk) -> ray.ObjectRef:
        info_ref, source_ref = self.share()
        return member.actor.run.remote(info_ref, chunk, source_ref,
                                       self.detected.get(chunk.index), self.shot_ref)

    def done(self, chunk: Chunk, result: ChunkResult) -> None:
        record_segment(self.manifest, chunk, result.segment, faces=result.face_tracks,
                       faces_swapped=result.faces_swapped,
                       frames_with_faces=result.frames_with_faces)
        self.totals.add(result)

    def give_up(self, chunk: Chunk, error: BaseException) -> None:
        give_up_on_chunk(self.config, self.info, chunk, error, self.manifest, self.totals)

    def tasks(self, chunks: Sequence[Chunk]) -> list[Task]:
        """Tasks for the chunks the manifest does not already hold (those count as reused)."""
        tasks = []
        for chunk in chunks:
            if chunk.index in self.complete:
                self.totals.frames += chunk.owned_frames
                self.totals.reused += 1
            elif chunk.index in self.manifest.rows:
                self.totals.add_reused(self.manifest.rows[chunk.index])
            else:
                tasks.append(Task(self, chunk))
        return tasks


@dataclass
class DetectJob:
    """The detection pre-pass of one shot: every chunk's detections, kept as object refs for
    the render pass and fetched (small tables) for the shot-level plan."""

    config: RenderConfig
    info_ref: ray.ObjectRef
    totals: ChunkTotals = field(default_factory=ChunkTotals)
    refs: dict[int, ray.ObjectRef] = field(default_factory=dict)
    results: dict[int, Any] = field(default_factory=dict)
    _submitted: dict[int, ray.ObjectRef] = field(default_factory=dict)

    def submit(self, member: Member, chunk: Chunk) -> ray.ObjectRef:
        ref: ray.ObjectRef = member.actor.run.remote(self.info_ref, chunk)
        self._submitted[chunk.index] = ref
        return ref

    def done(self, chunk: Chunk, result: Any) -> None:
        self.refs[chunk.index] = self._submitted[chunk.index]
        self.results[chunk.index] = result
        self.totals.frames_decoded += result.frames_decoded  # GOP lead-in included
        self.totals.seconds["prepass_decode"] = (self.totals.seconds.get("prepass_decode", 0.0)
                                                 + result.decode_seconds)
        self.totals.seconds["prepass_detect"] = (self.totals.seconds.get("prepass_detect", 0.0)
                                                 + result.detect_seconds)

    def give_up(self, chunk: Chunk, error: BaseException) -> None:
        raise RenderError(f"Detecting faces in {describe(chunk)} failed after "
                          f"{self.config.cluster.chunk_retries + 1} attempts: "
                          f"{failure_reason(error)}") from error


def segment_paths(manifest: Manifest, chunks: Sequence[Chunk]) -> list[Path]:
    """Every chunk's segment, in chunk order (assembly order)."""
    return [manifest.segment_path(chunk) for chunk in chunks]

