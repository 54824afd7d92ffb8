"""Chunks the driver process renders itself, on threads of its own: every chunk of a job that
would start a local Ray of its own only to run a small pool, or a longer job's first chunks
while that Ray and its render pool start.

**Every chunk, no Ray** (`plan_driver`, `beside_ray=False`). A local job on a machine without
a GPU pays for Ray's start and stop before and after its frames: the GCS, the raylet, its
agents and one worker process per actor, 3.1-3.3 s of CPU-bound work on the 2-core machine,
where a 12 s clip (300 frames) renders in about 3.4 s. Where it would start one actor (a
one-chunk job, on any machine), or the machine has at most `cluster.inline_max_cpus` CPUs,
the driver renders every chunk itself instead: one thread per actor the pool would have
started, each with that actor's threads and (`cluster.pin_cpus`) its cores, so each segment
is the one that actor would have encoded and the output is the same file. Threads of one
process share the GIL: in the render stage about 14 % of a one-core worker's time holds it
(py-spy `--gil`, 640x360, benchmarks/RESULTS.md), so 2 workers ask a quarter of one core's
worth of it and 4 about half; above that, separate processes (Ray's actors) scale where
threads would queue for it (an estimate: only 2 cores were measured), and Ray's start is a
smaller share of what a larger machine renders.
On the 2-core machine (benchmarks/RESULTS.md) the 60 s clip took 14.3 s so, against 16.7 s
with Ray (its start, then the pool) and 23.2 s in the single-process loop; unpinned, the
workers' chunks took 1-2 s longer.

**The first chunks beside Ray's start** (`beside_ray=True`). A larger machine's job of several
chunks waits for its local Ray and the pool's actors (2.7 s on the 2-core machine, with
about 1.9 of its 5.4 core-seconds idle; more cores keep more of them idle). Such a job renders
its chunks on one thread of the driver meanwhile, from the first, one after another, with the
threads each actor of the pool gets (planned for all chunks but the first). When the pool is
ready it takes every chunk not started here (`DriverChunks.hand_over`); the driver finishes
the one it is on, and the pool takes the retries of any that failed here. Ray keeps the main
thread: it ties the lives of the processes it starts to the thread that started them, and
installs its signal handling only there.

Either way the main thread records each chunk as it finishes (a job stopped later keeps it for
its rerun), and a failed attempt counts like an actor's (`cluster.chunk_retries`,
`on_chunk_error`); without Ray its retry runs here, on a fresh stage, as on a restarted actor.

What the driver gives up against an actor (why only on a local machine without a GPU):

- The hang watchdog (`cluster.hang_factor`). Ctrl-C and SIGTERM unwind like everywhere else
  (SIGTERM within `ray.init` excepted: Ray's own handler holds it there, see
  `fusionray.jobs.ray_session`): the main thread stops each driver chunk at its next frame
  (`RenderStage.cancel`; chunks already finished are recorded) and joins the threads, whose
  render stages join their step threads in turn (a render abandoned at Ctrl-C was once still
  inside native code when the process exited, and the exit aborted: -6, not 130).
- Crash isolation: a segfault in a native library or the OOM killer takes the driver down
  with its chunks; an actor's crash is retried. A rerun resumes from the chunks recorded.
- GPUs: not given up; where this process sees a card, the job keeps the actor path, whose
  device planning follows Ray's assignment (`fusionray.models.device`).

A job that must keep the watchdog or the isolation for every chunk sets `cluster.inline=false`;
`cluster.inline_max_cpus=0` keeps the pool for every job of several chunks.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fusionray.actors.pools import core_sets, plan_pool
from fusionray.actors.render_stage import ChunkCancelled
from fusionray.actors.stages import ChunkResult
from fusionray.config import RenderConfig
from fusionray.errors import FusionrayError, RenderError
from fusionray.jobs.ray_session import failure_reason, local_cpus
from fusionray.jobs.scheduler import POLL_SECONDS, ChunkJob, RenderJob, Task, describe, job_failed
from fusionray.types import Chunk

log = logging.getLogger("fusionray")

INLINE_NOTE = ("rendered in the driver process: a local job without a GPU, on the threads its "
               "render actors would have had, so no Ray was started (cluster.inline=false "
               "renders on actors)")
BESIDE_RAY_NOTE = ("the first chunk(s) were rendered in the driver process while Ray started "
                   "(cluster.inline=false renders every chunk on an actor)")


@dataclass(frozen=True)
class DriverPlan:
    """How the driver renders chunks itself (`plan_driver`)."""

    workers: int
    """Threads rendering a chunk each at once: the render actors the pool would start."""
    threads: int
    """Each worker's inference, decode and encode threads: an actor's (`plan_pool`)."""
    cores: tuple[tuple[int, ...], ...] = ()
    """Each worker's CPUs, as the pool's actors would keep to (`core_sets`); () unpinned."""
    beside_ray: bool = False
    """True: only the first chunks, one worker, while the job's Ray and pool start. False:
    every chunk, and no Ray starts."""


def _renders_here(
    config: RenderConfig, *, ray_running: bool, address: str | None,
    sees_gpu: Callable[[], bool], pre_pass: bool,
) -> bool:
    """Whether the driver may render chunks itself (pure): `cluster.inline` is on and the job
    would start a local Ray of its own on a machine without a GPU, for its render pass alone
    (see `plan_driver` for the arguments)."""
    cluster = config.cluster
    # The GPU question last: on a GPU node it runs nvidia-smi.
    return bool(cluster.inline and not ray_running and not address and not pre_pass
                and not cluster.elastic and not sees_gpu())


def plan_driver(
    config: RenderConfig, *, tasks: int, pools: int, ray_running: bool, address: str | None,
    sees_gpu: Callable[[], bool], pre_pass: bool, affinity: Sequence[int] = (),
) -> DriverPlan | None:
    """Which chunks the driver renders itself, on how many worker threads, each with how many
    threads of its own; None when every chunk goes to Ray (pure).

    Args:
        config: the job's config (its `cluster` decides).
        tasks: chunks the job has left to render, every shot together.
        pools: render pools those chunks need (shots with other render settings each get one);
            the driver takes a single pool's work only.
        ray_running: this process is already connected to a Ray (a sweep's, a test's): use it.
        address: the cluster to join (`cluster.address` or `RAY_ADDRESS`), if any.
        sees_gpu: whether this process may open a GPU (`fusionray.models.device.probe_device`;
            asked last, since on a GPU node it runs nvidia-smi).
        pre_pass: a shot needs the detection pre-pass (shot-level selection).
        affinity: the CPUs this process may run on (`os.sched_getaffinity(0)`), for pinning.

    Returns:
        Every chunk here, no Ray: a one-chunk job, or any job on a machine of at most
        `cluster.inline_max_cpus` CPUs; the workers, threads and cores of the actors
        `start_pool` would plan for those chunks on this machine's CPUs (the same bytes).
        Else the first chunks beside Ray's start: one worker with the threads each actor gets
        when the pool is planned for all chunks but the first, as `run_shots` then plans it.

    Raises:
        ConfigError: the render pool could not start here either (e.g. it reserves GPUs this
            machine lacks): the same message the pool would give.
    """
    if tasks < 1 or pools != 1 or not _renders_here(
            config, ray_running=ray_running, address=address, sees_gpu=sees_gpu,
            pre_pass=pre_pass):
        return None
    cluster, cpus = config.cluster, float(local_cpus(config))
    if tasks == 1 or cpus <= cluster.inline_max_cpus:
        plan = plan_pool(cluster.swap, cluster, {"CPU": cpus}, kind="render", node_cpus=cpus,
                         chunks=tasks)
        cores = core_sets(affinity, plan.actors, plan.threads) if cluster.pin_cpus else ()
        return DriverPlan(workers=plan.actors, threads=plan.threads, cores=cores)
    plan = plan_pool(cluster.swap, cluster, {"CPU": cpus}, kind="render", node_cpus=cpus,
                     chunks=tasks - 1)
    return DriverPlan(workers=1, threads=plan.threads, beside_ray=True)


def render_with(stage: Any, task: Task) -> ChunkResult | BaseException:
    """`task`'s chunk rendered by `stage`: its result, or the error its attempt failed with
    (anything the stage raised, so the main thread sees it: a worker thread's own exception
    would otherwise end only that thread)."""
    job = task.job
    assert isinstance(job, RenderJob), job
    try:
        result: ChunkResult = stage(job.info, task.chunk, job.source)
    except BaseException as error:
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


def settle_attempt(task: Task, outcome: ChunkResult | Exception, *, isolate_failures: bool,
                   retried: str) -> Task | None:
    """Record a chunk the driver rendered, or count its failed attempt as an actor's would
    count (`retried`: where its retry runs, for the warning).

    Returns:
        None when the chunk is settled (recorded, or given up on: passthrough, or a failure
        isolated to its shot); else the next attempt.

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
        log.warning("%s failed in the driver, retrying %s: %s", describe(chunk), retried, reason)
        return Task(job, chunk, task.attempt + 1)
    try:
        job.give_up(chunk, outcome)
    except RenderError as failure:
        if not isolate_failures:
            raise
        job.failed = failure
        log.warning("%s", failure)
    return None


_Finished = tuple[Task, "ChunkResult | BaseException"]


class DriverChunks:
    """Chunks rendered on threads of the driver (see the module docstring): each of the plan's
    workers takes the next chunk in order and renders it on a render stage of its own, kept
    to its cores. The main thread records them as they finish: `run` (every chunk here, no
    Ray), or `settle_finished` between the pool's turns and `settle` at the end (beside Ray's
    start, until `hand_over`). `stop` stops them when the job fails or is interrupted first."""

    def __init__(self, tasks: Sequence[Task], stage_class: type, plan: DriverPlan) -> None:
        """Start rendering `tasks` (in this order, every one a `RenderJob`'s of one render
        pool) as `plan` (`plan_driver`) says."""
        self._plan, self._stage_class = plan, stage_class
        self._waiting = deque(tasks)
        self._unsettled = len(tasks)
        """Chunks neither recorded nor given up on (`run`)."""
        self._ready = threading.Condition()
        """Guards the waiting chunks, the open stages and the counts; wakes idle workers."""
        self._closed = plan.beside_ray
        """No more chunks will come: beside Ray, retries go to the pool; else set by `run`."""
        self._cancelled = threading.Event()
        self._stages: set[Any] = set()
        self._start_error: FusionrayError | None = None
        self._failures = self._failures_settled = 0
        """Failed attempts put in `_finished`, and those `run` has given its verdict on."""
        self.rendered = 0
        """Chunks rendered here so far (failed attempts not counted, as for an actor)."""
        self._finished: queue.SimpleQueue[_Finished | None] = queue.SimpleQueue()
        """What the workers finished and the main thread has not recorded yet, in order; None
        wakes `run` for a stage that could not start."""
        cores = plan.cores or ((),) * plan.workers
        self._workers = [
            threading.Thread(target=self._work, args=(own,), daemon=True,
                             name=f"fusionray-driver-chunk-{number}")
            for number, own in enumerate(cores)]
        for worker in self._workers:
            worker.start()

    # --- the workers' side ---

    def _next(self) -> Task | None:
        """The next chunk to render here; None once there is none to come (the pool took the
        rest, every chunk is settled, or the job stopped). Waits while a retry may come."""
        with self._ready:
            while not self._waiting and not self._closed and not self._cancelled.is_set():
                self._ready.wait()
            if self._cancelled.is_set() or not self._waiting:
                return None
            return self._waiting.popleft()

    def _work(self, cores: tuple[int, ...]) -> None:
        if cores and hasattr(os, "sched_setaffinity"):
            # This thread only (0: the caller); the stage's decoder, encoder and inference
            # threads start from it and inherit its cores.
            os.sched_setaffinity(0, cores)
        stage: Any = None
        try:
            while (task := self._next()) is not None:
                assert isinstance(task.job, RenderJob), task.job
                if stage is None:
                    try:
                        stage = open_stage(self._stage_class, task.job.config,
                                           self._plan.threads)
                    except FusionrayError as error:
                        with self._ready:
                            self._start_error = self._start_error or error
                        self._finished.put(None)
                        return
                    with self._ready:
                        self._stages.add(stage)
                outcome = (ChunkCancelled(f"{describe(task.chunk)} cancelled")
                           if self._cancelled.is_set()  # stopped while the stage opened
                           else render_with(stage, task))
                if not isinstance(outcome, BaseException):
                    with self._ready:
                        self.rendered += 1
                    self._finished.put((task, outcome))
                    continue
                if self._plan.beside_ray:
                    self._finished.put((task, outcome))
                    return  # the pool takes the rest, and the retry: a stage that fails here
                    # once would likely fail again
                with self._ready:
                    self._stages.discard(stage)
                self._failed_here(task, outcome)
                stage = None  # the next attempt on a fresh stage, as a restarted actor's
        finally:
            with self._ready:
                self._stages.discard(stage)
            del stage  # its models go as soon as this worker is done with them

    def _failed_here(self, task: Task, error: BaseException) -> None:
        """Hand a failed attempt to `run` and wait for its verdict, so a retry goes ahead of
        the chunks still waiting (as the scheduler puts it) and a shot that failed for good
        has its waiting chunks dropped before this worker takes another."""
        with self._ready:
            self._failures += 1
            ticket = self._failures
            self._finished.put((task, error))
            self._ready.wait_for(lambda: self._failures_settled >= ticket
                                 or self._cancelled.is_set())

    # --- the main thread's side ---

    def run(self, *, isolate_failures: bool, on_progress: Callable[[Chunk], None]) -> None:
        """Every chunk here, no Ray: record each as it finishes, and render the retries of
        failed attempts here too, until every chunk is settled; then the workers end.

        Raises:
            FusionrayError: a stage could not start (`open_stage`), or a chunk failed its last
                attempt (unless isolated).
            RenderError: every worker ended with chunks left (a defect, reported, not a hang).
            KeyboardInterrupt: a stage raised it (and Ctrl-C, as anywhere): the caller `stop`s.
        """
        assert not self._plan.beside_ray, "beside Ray the pool settles the rest"
        while self._unsettled:
            try:
                item = self._finished.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not any(worker.is_alive() for worker in self._workers):
                    raise RenderError(f"The driver's render threads ended with "
                                      f"{self._unsettled} chunk(s) not rendered") from None
                continue
            if item is None:
                assert self._start_error is not None
                raise self._start_error
            task, outcome = item
            self._unsettled -= 1
            try:
                retry = _verdict(task, outcome, isolate_failures=isolate_failures,
                                 on_progress=on_progress, retried="in the driver")
                if retry is not None:  # ahead of the waiting chunks, as the scheduler puts it
                    with self._ready:
                        self._waiting.appendleft(retry)
                        self._unsettled += 1
                        self._ready.notify_all()
                elif job_failed(task.job):
                    self._drop(task.job)
            finally:
                if isinstance(outcome, Exception):  # its worker waits for the verdict
                    with self._ready:
                        self._failures_settled += 1
                        self._ready.notify_all()
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for worker in self._workers:
            worker.join()

    def _drop(self, job: ChunkJob) -> None:
        """A shot failed for good (isolated): its chunks not started are not rendered."""
        with self._ready:
            dropped = [task for task in self._waiting if task.job is job]
            for task in dropped:
                self._waiting.remove(task)
            self._unsettled -= len(dropped)

    def hand_over(self) -> list[Task]:
        """The pool is ready: the chunks not started here are its (in order); the worker
        finishes the one it is on and takes no other."""
        with self._ready:
            self._closed = True
            rest = list(self._waiting)
            self._waiting.clear()
            self._ready.notify_all()
        return rest

    def settle_finished(self, *, isolate_failures: bool,
                        on_progress: Callable[[Chunk], None]) -> list[Task]:
        """Beside Ray: record the chunks finished here so far (on the main thread, between the
        pool's; `settle_attempt` for each), so a job stopped later keeps them for its rerun.

        Returns:
            The next attempts of the chunks that failed here, for the pool.

        Raises:
            FusionrayError: a chunk failed its last attempt (unless isolated).
        """
        retries: list[Task] = []
        while True:
            try:
                item = self._finished.get_nowait()
            except queue.Empty:
                return retries
            if item is None:
                continue  # the stage could not start: `settle` raises its error
            retry = _verdict(*item, isolate_failures=isolate_failures, on_progress=on_progress,
                             retried="on Ray")
            if retry is not None:
                retries.append(retry)

    def settle(self, *, isolate_failures: bool,
               on_progress: Callable[[Chunk], None]) -> list[Task]:
        """Beside Ray: wait for the worker, then record the rest as `settle_finished` does.

        Raises:
            FusionrayError: the stage could not start (`open_stage`), or a chunk failed its
                last attempt (unless isolated).
        """
        for worker in self._workers:
            worker.join()
        if self._start_error is not None:
            raise self._start_error
        return self.settle_finished(isolate_failures=isolate_failures, on_progress=on_progress)

    def stop(self) -> None:
        """The job failed or was interrupted before its chunks settled: stop every chunk in
        progress at its next frame (a stage still opening: before its first) and wait for the
        workers. Chunks finished by then are recorded all the same, so a rerun reuses them."""
        with self._ready:
            self._cancelled.set()
            stages = list(self._stages)
            self._ready.notify_all()
        for stage in stages:
            cancel = getattr(stage, "cancel", None)
            if callable(cancel):
                cancel()
        for worker in self._workers:
            worker.join()
        while True:
            try:
                item = self._finished.get_nowait()
            except queue.Empty:
                return
            if item is None or not isinstance(item[1], ChunkResult):
                continue
            task, result = item
            try:
                task.job.done(task.chunk, result)
            except Exception as error:  # the job's own error is the one to report
                log.warning("%s was rendered but could not be recorded: %s",
                            describe(task.chunk), failure_reason(error))


def _verdict(task: Task, outcome: ChunkResult | BaseException, *, isolate_failures: bool,
             on_progress: Callable[[Chunk], None], retried: str) -> Task | None:
    """The main thread's verdict on one attempt a driver worker finished (`settle_attempt`,
    and the progress of a chunk settled): its next attempt, or None.

    Raises:
        KeyboardInterrupt, SystemExit: what the stage raised (the job stops).
        FusionrayError: the chunk failed its last attempt (unless isolated).
    """
    if not isinstance(outcome, ChunkResult | Exception):
        raise outcome
    if job_failed(task.job):
        return None  # another chunk of its shot failed for good (isolated)
    retry = settle_attempt(task, outcome, isolate_failures=isolate_failures, retried=retried)
    if retry is None:
        on_progress(task.chunk)
    return retry


def _reason(error: BaseException) -> str:
    """The exception's own first line (a constructor's message, as `actor_start_failure`
    reduces an actor's)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
