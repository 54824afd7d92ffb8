"""Chunks the driver process renders itself: a job's only chunk, instead of on a Ray of the
job's own; and a longer job's first chunks, while that Ray and its render pool start.

**The only chunk.** A job that would start a local Ray only to render one chunk (a clip of up
to about 100 frames, a resumed job with one chunk left) pays Ray's start and stop for nothing:
on the 2-core machine about 3 of the neural benchmark's 40 s went to the GCS, the raylet, its
agents, the actor's worker process and stopping them, and the one actor then did exactly what
this process can, on every core. Such a job renders the chunk here (`render_in_driver`), on
the main thread, with the stage class, threads and encoder settings the actor would have had,
so its output is the same file.

**The first chunks beside Ray's start.** A job of several chunks that starts a local Ray of
its own waits for it and for the pool's actors: 2.7 s on the 2-core machine, with about 1.9 of
its 5.4 core-seconds idle (the GCS, the raylet and its agents wait on one another, and the
driver waits on them all; there, the driver's render slows that start by nearly as much as it
renders, benchmarks/RESULTS.md, so the gain is 0.2-0.7 s a job; machines with more cores
keep more of them idle). Such a job renders its chunks on a thread of the driver meanwhile
(`ChunksBesideRay`), from the first, one after another, with the threads each actor of the
pool gets (`beside_ray_threads`), so each segment is the one an actor would have encoded.
When the pool is ready it takes every chunk not started here (`hand_over`); the driver
finishes the one it is on. How many the driver renders depends on how long Ray took; which
process rendered a chunk never changes its bytes. The main thread records the driver's chunks
as they finish, between the pool's (a job stopped later keeps them), and gives the retries of
any that failed here to the pool. Ray keeps the main thread: it
ties the lives of the processes it starts to the thread that started them, and installs its
signal handling only there.

What the driver gives up against an actor (why only these chunks, and only locally):

- Parallelism: none. The only chunk gets the actor's threads; the first chunks run while the
  pool's actors are not running yet (the last of them a moment beside them).
- A retry in a fresh process: a failed attempt here counts like an actor's, and its retry goes
  to Ray after all (an actor), so `cluster.chunk_retries` and `on_chunk_error` mean what they
  always mean.
- The hang watchdog (`cluster.hang_factor`). Ctrl-C and SIGTERM unwind a driver's chunk like
  everything else (SIGTERM within `ray.init` excepted: Ray's own handler holds it there, see
  `fusionray.jobs.ray_session`): on the main thread they stop the only chunk where it is;
  beside Ray's start, the main thread stops the driver's chunk at its next frame
  (`RenderStage.cancel`; chunks already finished are recorded) and joins its thread before
  Ray stops. Either way the render stage's step threads stop and join: a render abandoned at
  Ctrl-C was once still inside native code when the process exited, and the exit aborted
  (-6, not 130).
- Crash isolation: a segfault in a native library or the OOM killer takes the driver down
  with the chunk; an actor's crash is retried.
- GPUs: not given up; where this process sees a card, the job keeps the actor path, whose
  device planning follows Ray's assignment (`fusionray.models.device`).

A job that must keep the watchdog or the isolation for every chunk sets `cluster.inline=false`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from fusionray.actors.pools import plan_pool
from fusionray.actors.render_stage import ChunkCancelled
from fusionray.actors.stages import ChunkResult
from fusionray.config import RenderConfig
from fusionray.errors import FusionrayError, RenderError
from fusionray.jobs.ray_session import failure_reason
from fusionray.jobs.scheduler import RenderJob, Task, describe, job_failed
from fusionray.types import Chunk

log = logging.getLogger("fusionray")

INLINE_NOTE = ("rendered in the driver process: one chunk on a local machine, so no Ray was "
               "started (cluster.inline=false renders it on an actor)")
BESIDE_RAY_NOTE = ("the first chunk(s) were rendered in the driver process while Ray started "
                   "(cluster.inline=false renders every chunk on an actor)")


def _renders_here(
    config: RenderConfig, *, ray_running: bool, address: str | None,
    sees_gpu: Callable[[], bool], pre_pass: bool,
) -> bool:
    """Whether the driver may render chunks itself (pure): `cluster.inline` is on and the job
    would start a local Ray of its own on a machine without a GPU, for its render pass alone
    (see `inline_threads` for the arguments)."""
    cluster = config.cluster
    # The GPU question last: on a GPU node it runs nvidia-smi.
    return bool(cluster.inline and not ray_running and not address and not pre_pass
                and not cluster.elastic and not sees_gpu())


def _machine_cpus(config: RenderConfig) -> int:
    """The CPUs of the local Ray the job would start (`start_ray`)."""
    return config.cluster.num_cpus or os.cpu_count() or 1


def inline_threads(
    config: RenderConfig, *, tasks: int, ray_running: bool, address: str | None,
    sees_gpu: Callable[[], bool], pre_pass: bool,
) -> int | None:
    """The threads to render the job's chunk with in the driver, or None when the job goes to
    Ray (pure).

    Args:
        config: the job's config (its `cluster` decides).
        tasks: chunks the job has left to render, every shot together.
        ray_running: this process is already connected to a Ray (a sweep's, a test's): use it.
        address: the cluster to join (`cluster.address` or `RAY_ADDRESS`), if any.
        sees_gpu: whether this process may open a GPU (`fusionray.models.device.probe_device`;
            asked last, since on a GPU node it runs nvidia-smi).
        pre_pass: a shot needs the detection pre-pass (shot-level selection).

    Returns:
        The actor's threads (`plan_pool` for one chunk on this machine's CPUs), or None.

    Raises:
        ConfigError: the render pool could not start here either (e.g. it reserves GPUs this
            machine lacks): the same message the pool would give.
    """
    if tasks != 1 or not _renders_here(config, ray_running=ray_running, address=address,
                                       sees_gpu=sees_gpu, pre_pass=pre_pass):
        return None
    cluster = config.cluster
    plan = plan_pool(cluster.swap, cluster, {"CPU": float(_machine_cpus(config))},
                     kind="render", chunks=1)
    return plan.threads


def beside_ray_threads(
    config: RenderConfig, *, tasks: int, pools: int, ray_running: bool, address: str | None,
    sees_gpu: Callable[[], bool], pre_pass: bool,
) -> int | None:
    """The threads to render the job's first chunks with in the driver while its local Ray and
    render pool start (`ChunksBesideRay`), or None (pure).

    Args:
        pools: render pools the job's chunks need (shots with other render settings each get
            one, one after another); the driver's chunk joins a single pool's work only.
        Others: as `inline_threads`.

    Returns:
        The threads of each actor of the pool, planned for all chunks but the first
        (`plan_pool` over this machine's CPUs, as `start_pool` plans it on the fresh Ray), so
        the driver's segments are the ones such an actor would have encoded.

    Raises:
        ConfigError: the render pool could not start here (the pool's own message).
    """
    if tasks < 2 or pools != 1 or not _renders_here(
            config, ray_running=ray_running, address=address, sees_gpu=sees_gpu,
            pre_pass=pre_pass):
        return None
    cluster, cpus = config.cluster, float(_machine_cpus(config))
    plan = plan_pool(cluster.swap, cluster, {"CPU": cpus}, kind="render", node_cpus=cpus,
                     chunks=tasks - 1)
    return plan.threads


def render_in_driver(
    task: Task, stage_class: type, threads: int, *, isolate_failures: bool = False,
) -> Task | None:
    """Render `task`'s chunk in this process, the way a render actor would.

    Returns:
        None when the chunk is settled (recorded, or given up on: passthrough, or a failure
        isolated to its shot); else the next attempt, for Ray.

    Raises:
        RenderError: the stage could not start (the constructor's own message, one line, as
            from an actor), or the chunk failed its last attempt (unless isolated).
        FusionrayError: a config or model error of the stage's constructor, as it stands.
        KeyboardInterrupt: Ctrl-C (or SIGTERM via the CLI): the caller keeps the work folder.
    """
    assert isinstance(task.job, RenderJob), task.job
    stage = open_stage(stage_class, task.job.config, threads)
    try:
        outcome = render_with(stage, task)
    finally:
        del stage  # its models go before anything else loads
    return settle(task, outcome, isolate_failures=isolate_failures)


def render_with(stage: Any, task: Task) -> ChunkResult | Exception:
    """`task`'s chunk rendered by `stage`: its result, or the error its attempt failed with."""
    job = task.job
    assert isinstance(job, RenderJob), job
    try:
        result: ChunkResult = stage(job.info, task.chunk, job.source)
    except Exception as error:
        return error
    return result


def open_stage(stage_class: type, config: RenderConfig, threads: int) -> Any:
    """The render stage, as an actor would construct it.

    Raises:
        FusionrayError: a config or model error of the constructor, as it stands.
        RenderError: any other error of the constructor (its own message, one line, as from
            an actor).
    """
    try:
        return stage_class(config, threads=threads)
    except FusionrayError:
        raise
    except Exception as error:
        raise RenderError(f"A render stage could not start: {_reason(error)}") from None


def settle(task: Task, outcome: ChunkResult | Exception, *, isolate_failures: bool
           ) -> Task | None:
    """Record a chunk the driver rendered, or count its failed attempt as an actor's would
    count.

    Returns:
        None when the chunk is settled (recorded, or given up on: passthrough, or a failure
        isolated to its shot); else the next attempt, for Ray.

    Raises:
        RenderError: the chunk failed its last attempt (unless isolated).
    """
    job, chunk = task.job, task.chunk
    assert isinstance(job, RenderJob), job
    if not isinstance(outcome, Exception):
        job.done(chunk, outcome)
        return None
    reason = failure_reason(outcome)
    job.totals.failures.append(f"{describe(chunk)} attempt {task.attempt + 1}: {reason}")
    if task.attempt < job.config.cluster.chunk_retries:
        log.warning("%s failed in the driver, retrying on Ray: %s", describe(chunk), reason)
        return Task(job, chunk, task.attempt + 1)
    try:
        job.give_up(chunk, outcome)
    except RenderError as failure:
        if not isolate_failures:
            raise
        job.failed = failure
        log.warning("%s", failure)
    return None


class ChunksBesideRay:
    """Chunks rendered on a thread of the driver while the main thread starts Ray and the
    render pool (see the module docstring): the job's first chunks, one after another, until
    the pool is ready and takes the rest (`hand_over`). The main thread records them as they
    finish (`settle_finished`, between the pool's) and at the end (`settle`); `stop` stops
    them when the job fails or is interrupted first."""

    def __init__(self, tasks: Sequence[Task], stage_class: type, threads: int) -> None:
        """Start rendering `tasks` (in this order, every one a `RenderJob`'s of one render
        pool) with `threads` threads (`beside_ray_threads`)."""
        self._waiting = deque(tasks)
        self._lock = threading.Lock()
        self._handed_over = False
        self._stage_class, self._threads = stage_class, threads
        self._stage: Any = None
        self._cancelled = threading.Event()
        self._start_error: FusionrayError | None = None
        self.rendered = 0
        """Chunks rendered (or failed) here so far."""
        self._outcomes: deque[tuple[Task, ChunkResult | Exception]] = deque()
        """What the thread finished and the main thread has not recorded yet, in order."""
        self._thread = threading.Thread(target=self._run, name="fusionray-driver-chunk",
                                        daemon=True)
        self._thread.start()

    def _next(self) -> Task | None:
        """The next chunk to render here, or None once the pool has taken the rest."""
        with self._lock:
            if self._handed_over or self._cancelled.is_set() or not self._waiting:
                return None
            return self._waiting.popleft()

    def _run(self) -> None:
        task = self._next()
        if task is None:
            return
        assert isinstance(task.job, RenderJob), task.job
        try:
            stage = open_stage(self._stage_class, task.job.config, self._threads)
        except FusionrayError as error:
            self._start_error = error
            return
        self._stage = stage
        try:
            while task is not None:
                outcome = (ChunkCancelled(f"{describe(task.chunk)} cancelled")
                           if self._cancelled.is_set()  # cancelled while the stage opened
                           else render_with(stage, task))
                self._outcomes.append((task, outcome))
                self.rendered += 1
                # After a failure the pool takes the rest (and the retry): a stage that fails
                # here once would likely fail again.
                task = None if isinstance(outcome, Exception) else self._next()
        finally:
            self._stage = None
            del stage  # its models go as soon as the driver is done with them

    def hand_over(self) -> list[Task]:
        """The pool is ready: the chunks not started here are its (in order); the thread
        finishes the one it is on and takes no other."""
        with self._lock:
            self._handed_over = True
            rest = list(self._waiting)
            self._waiting.clear()
        return rest

    def settle_finished(self, *, isolate_failures: bool,
                        on_progress: Callable[[Chunk], None]) -> list[Task]:
        """Record the chunks finished here so far (on the main thread, between the pool's;
        `settle` for each), so a job stopped later keeps them for its rerun.

        Returns:
            The next attempts of the chunks that failed here, for the pool.

        Raises:
            FusionrayError: a chunk failed its last attempt (unless isolated).
        """
        retries = []
        while self._outcomes:
            task, outcome = self._outcomes.popleft()
            if job_failed(task.job):
                continue  # another chunk of its shot failed for good (isolated)
            retry = settle(task, outcome, isolate_failures=isolate_failures)
            if retry is None:
                on_progress(task.chunk)
            else:
                retries.append(retry)
        return retries

    def settle(self, *, isolate_failures: bool,
               on_progress: Callable[[Chunk], None]) -> list[Task]:
        """Wait for the thread, then record the rest as `settle_finished` does.

        Raises:
            FusionrayError: the stage could not start (`open_stage`), or a chunk failed its
                last attempt (unless isolated).
        """
        self._thread.join()
        if self._start_error is not None:
            raise self._start_error
        return self.settle_finished(isolate_failures=isolate_failures, on_progress=on_progress)

    def stop(self) -> None:
        """The job failed or was interrupted before `settle`: stop the chunk in progress at its
        next frame (a stage still opening: before its first) and wait for the thread. Chunks
        finished by then are recorded all the same, so a rerun reuses them."""
        self._cancelled.set()
        cancel = getattr(self._stage, "cancel", None)
        if callable(cancel):
            cancel()
        self._thread.join()
        for task, outcome in self._outcomes:
            if isinstance(outcome, ChunkResult):
                try:
                    task.job.done(task.chunk, outcome)
                except Exception as error:  # the job's own error is the one to report
                    log.warning("%s was rendered but could not be recorded: %s",
                                describe(task.chunk), failure_reason(error))


def _reason(error: BaseException) -> str:
    """The exception's own first line (a constructor's message, as `actor_start_failure`
    reduces an actor's)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
