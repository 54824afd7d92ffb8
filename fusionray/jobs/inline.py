"""Chunks the driver renders itself, without Ray, on workers of its own (threads, or render
processes: `fusionray.jobs.stage_process`): every chunk of a job that would start a local Ray
of its own only to run a small pool, or a longer job's first chunks while that Ray and its
render pool start.

**Every chunk, no Ray** (`plan_driver`, `beside_ray=False`). A local job on a machine without
a GPU pays for Ray's start and stop before and after its frames: the GCS, the raylet, its
agents and one worker process per actor, 3.1-3.3 s of CPU-bound work on the 2-core machine,
where a 12 s clip (300 frames) renders in about 3.4 s. Where it would start one actor (a
one-chunk job, on any machine), or the machine has at most `cluster.inline_max_cpus` CPUs,
the driver renders every chunk itself instead: one worker per actor the pool would have
started, each with that actor's threads and (`cluster.pin_cpus`) its cores, so each segment
is the one that actor would have encoded and the output is the same file. With at least
`cluster.inline_process_chunks` chunks a worker, each worker renders in a process of its own:
threads share the GIL, which the render stage holds about 40 % of the wall time with two of
them (py-spy `--gil`), and two worker threads rendered the 60 s clip 11 % slower than the
same work in two processes; a process costs about 0.4 s to start, more than the GIL costs a
short job (eleventh session, benchmarks/RESULTS.md). Above `inline_max_cpus`, Ray's start is
a smaller share of what a larger machine renders.

**The first chunks beside Ray's start** (`beside_ray=True`). A larger machine's job of several
chunks waits for its local Ray and the pool's actors (2.7 s on the 2-core machine, with
about 1.9 of its 5.4 core-seconds idle; more cores keep more of them idle). Such a job renders
its chunks on one worker of the driver meanwhile, from the first, one after another, with the
threads each actor of the pool gets (planned for all chunks but the first). When the pool is
ready it takes every chunk not started here (`DriverChunks.hand_over`); the driver finishes
the one it is on, and the pool takes the retries of any that failed here. Ray keeps the main
thread: it ties the lives of the processes it starts to the thread that started them, and
installs its signal handling only there.

Each worker is a thread of the driver that renders its chunks on its own stage, or hands them
to its render process and waits. The main thread records each chunk as it finishes (a job
stopped later keeps it for its rerun), and a failed attempt counts like an actor's
(`cluster.chunk_retries`, `on_chunk_error`); without Ray its retry runs here, on a fresh
stage, as on a restarted actor. A chunk running past the hang limit (`cluster.hang_factor`,
over the chunks rendered here) counts as a hung attempt (run.json's `chunk_timeouts`) and is
retried, here on a fresh worker started in its place, or beside Ray on the pool; its process
is killed, or, on a thread (which cannot be killed), its chunk is cancelled and the thread
left behind. In a process, a native crash or the OOM killer ends that process, not the job,
and its chunk is retried; on threads it takes the driver down (a rerun resumes from the
chunks recorded). Ctrl-C and SIGTERM reach the driver (render processes ignore Ctrl-C; a
SIGTERM within `ray.init` reaches it once Ray is up, see `fusionray.jobs.ray_session`): the
main thread stops each chunk at its next frame
(`RenderStage.cancel`; chunks already finished are recorded) and waits for the workers,
killing a process that does not stop. A driver killed outright takes its render processes
with it.

GPUs stay with Ray: where this process sees a card, or the job declares its local Ray's GPUs
(`cluster.num_gpus`, logical ones too), the job keeps the actor path, whose device planning
follows Ray's assignment (`fusionray.models.device`). `cluster.inline=false` keeps every
chunk on an actor; `cluster.inline_max_cpus=0` keeps the pool for every job of several
chunks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fusionray.actors.pools import core_sets, plan_pool
from fusionray.actors.render_stage import ChunkCancelled
from fusionray.actors.stages import ChunkResult
from fusionray.config import RenderConfig
from fusionray.errors import ConfigError, FusionrayError, RenderError
from fusionray.jobs.ray_session import failure_reason, join_address, local_cpus
from fusionray.jobs.scheduler import (
    POLL_SECONDS,
    ChunkJob,
    RenderJob,
    Task,
    describe,
    hang_limit_seconds,
    job_failed,
    record_hang,
)
from fusionray.jobs.stage_process import CLOSE_SECONDS, StageHere, StageProcess, start_server
from fusionray.lazy import ray_connected
from fusionray.types import Chunk

log = logging.getLogger("fusionray")

INLINE_NOTE = ("rendered by the driver's own workers: a local job without a GPU, with the "
               "threads and cores its render actors would have had, so no Ray was started "
               "(cluster.inline=false renders on actors)")
BESIDE_RAY_NOTE = ("the first chunk(s) were rendered by the driver while Ray started "
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
    processes: bool = False
    """Each worker renders in a process of its own (`cluster.inline_process_chunks`); else
    on its thread of the driver."""


def _renders_here(
    config: RenderConfig, *, ray_running: bool, address: str | None,
    sees_gpu: Callable[[], bool], pre_pass: bool,
) -> bool:
    """Whether the driver may render chunks itself (pure): `cluster.inline` is on and the job
    would start a local Ray of its own on a machine without a GPU, for its render pass alone
    (see `plan_driver` for the arguments). A job that declares its local Ray's GPUs
    (`cluster.num_gpus`) gets them, logical or not: Ray hands them out."""
    cluster = config.cluster
    # The GPU question last: on a GPU node it runs nvidia-smi.
    return bool(cluster.inline and not ray_running and not address and not pre_pass
                and not cluster.elastic and not cluster.num_gpus and not sees_gpu())


def start_render_processes_early(config: RenderConfig, chunks: int) -> None:
    """Where a shot of `chunks` chunks would render on the driver's render processes
    (`plan_driver`'s `processes`, asked with what is known this early: one pool, no
    pre-pass, no GPU probe), start their fork server now (`fusionray.jobs.stage_process`):
    its imports (about 0.6 s of one core) run beside the driver's source identity, where they
    would otherwise delay the first chunks. A job that goes to Ray after all (a GPU seen, a
    pre-pass, a second pool) or has fewer chunks left (resumed) leaves it idle."""
    try:
        plan = plan_driver(config, tasks=chunks, pools=1, ray_running=ray_connected(),
                           address=join_address(config), sees_gpu=lambda: False,
                           pre_pass=False)
    except ConfigError:
        return  # the job's own planning reports it, where it applies
    if plan is not None and plan.processes:
        start_server()


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
        processes = plan.actors > 1 and tasks >= cluster.inline_process_chunks * plan.actors
        return DriverPlan(workers=plan.actors, threads=plan.threads, cores=cores,
                          processes=processes)
    plan = plan_pool(cluster.swap, cluster, {"CPU": cpus}, kind="render", node_cpus=cpus,
                     chunks=tasks - 1)
    return DriverPlan(workers=1, threads=plan.threads, beside_ray=True)


def render_with(stage: StageProcess | StageHere, task: Task) -> ChunkResult | BaseException:
    """`task`'s chunk rendered by `stage` (in its process, or on this thread): its result, or
    the error its attempt failed with (anything the stage raised, or its process's end, so
    the main thread sees it: a worker thread's own exception would otherwise end only that
    thread)."""
    job = task.job
    assert isinstance(job, RenderJob), job
    try:
        result: ChunkResult = stage(id(job), job.info, job.source, task.chunk)
    except BaseException as error:
        return error
    return result


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
    return retry_or_give_up(task, outcome, reason, isolate_failures=isolate_failures,
                            retried=retried)


def retry_or_give_up(task: Task, error: Exception, reason: str, *, isolate_failures: bool,
                     retried: str) -> Task | None:
    """After a failed (or hung) attempt, counted already: the chunk's next attempt while
    `cluster.chunk_retries` allows, else give up on it (`RenderJob.give_up`: passthrough, or
    the job's error).

    Raises:
        RenderError: the chunk failed its last attempt (unless isolated).
    """
    job, chunk = task.job, task.chunk
    assert isinstance(job, RenderJob), job
    if task.attempt < job.config.cluster.chunk_retries:
        log.warning("%s failed in the driver, retrying %s: %s", describe(chunk), retried, reason)
        return Task(job, chunk, task.attempt + 1)
    try:
        job.give_up(chunk, error)
    except RenderError as failure:
        if not isolate_failures:
            raise
        job.failed = failure
        log.warning("%s", failure)
    return None


_Finished = tuple[Task, "ChunkResult | BaseException"]


@dataclass(frozen=True)
class _Hung:
    """An attempt a driver worker ran past the hang limit (`DriverChunks._stop_hung`)."""

    task: Task
    seconds: float
    limit_seconds: float
    worker: str
    """The worker replaced (its thread's name)."""


class DriverChunks:
    """Chunks rendered by the driver's own workers (see the module docstring): each of the
    plan's workers (a thread) takes the next chunk in order and renders it on a stage of its
    own (on the thread, or in a render process), kept to its cores. The main thread records
    them as they finish:
    `run` (every chunk here, no Ray), or `settle_finished` between the pool's turns and
    `settle` at the end (beside Ray's start, until `hand_over`); either way it watches for
    hung chunks. `stop` stops them when the job fails or is interrupted first."""

    def __init__(self, tasks: Sequence[Task], stage_class: type, plan: DriverPlan) -> None:
        """Start rendering `tasks` (in this order, every one a `RenderJob`'s of one render
        pool) as `plan` (`plan_driver`) says."""
        self._plan, self._stage_class = plan, stage_class
        self._stage_type = StageProcess if plan.processes else StageHere
        self._waiting = deque(tasks)
        self._unsettled = len(tasks)
        """Chunks neither recorded nor given up on (`run`)."""
        self._ready = threading.Condition()
        """Guards the waiting and running chunks, the workers, their stages and the counts;
        wakes idle workers."""
        self._closed = plan.beside_ray
        """No more chunks will come: beside Ray, retries go to the pool; else set by `run`."""
        self._cancelled = threading.Event()
        self._stages: dict[threading.Thread, StageProcess | StageHere] = {}
        """Each worker's open render stage."""
        self._running: dict[threading.Thread, tuple[Task, float]] = {}
        """Each worker's chunk in progress, and when it took it (`time.monotonic`)."""
        self._durations: list[float] = []
        """Seconds of each chunk rendered here, from taking it to its result (the hang
        limit's median, as the scheduler's)."""
        self._workers: list[threading.Thread] = []
        self._cores: dict[threading.Thread, tuple[int, ...]] = {}
        self._replaced: list[threading.Thread] = []
        """Workers whose chunk hung (their process killed, or their thread left behind),
        another worker in their place."""
        self._start_error: FusionrayError | None = None
        self._failures = self._failures_settled = 0
        """Failed attempts put in `_finished`, and those `run` has given its verdict on."""
        self.rendered = 0
        """Chunks rendered here so far (failed attempts not counted, as for an actor)."""
        self.events: list[str] = []
        """Workers replaced (run.json's `pool_events`, as an actor pool's)."""
        self._finished: queue.SimpleQueue[_Finished | None] = queue.SimpleQueue()
        """What the workers finished and the main thread has not recorded yet, in order; None
        wakes `run` for a stage that could not start."""
        with self._ready:
            for own in plan.cores or ((),) * plan.workers:
                self._start_worker(own)

    def _start_worker(self, cores: tuple[int, ...]) -> threading.Thread:
        """A worker (a thread, whose render process keeps to `cores`; () unpinned), started;
        the caller holds `_ready`."""
        worker = threading.Thread(target=self._work, args=(cores,), daemon=True,
                                  name=f"fusionray-driver-chunk-{len(self._workers)}")
        self._workers.append(worker)
        self._cores[worker] = cores
        worker.start()
        return worker

    def _live(self) -> list[threading.Thread]:
        """The workers not replaced after a hung chunk."""
        with self._ready:
            return [worker for worker in self._workers if worker not in self._replaced]

    # --- the workers' side ---

    def _next(self) -> Task | None:
        """The next chunk to render here, marked as this worker's; None once there is none to
        come (the pool took the rest, every chunk is settled, or the job stopped). Waits while
        a retry may come."""
        with self._ready:
            while not self._waiting and not self._closed and not self._cancelled.is_set():
                self._ready.wait()
            if self._cancelled.is_set() or not self._waiting:
                return None
            task = self._waiting.popleft()
            self._running[threading.current_thread()] = (task, time.monotonic())
            return task

    def _work(self, cores: tuple[int, ...]) -> None:
        me = threading.current_thread()
        stage: StageProcess | StageHere | None = None
        try:
            while (task := self._next()) is not None:
                assert isinstance(task.job, RenderJob), task.job
                if stage is None:
                    # Registered while it opens, so the watchdog can kill a stage that never
                    # finishes opening, and `stop` one the job no longer needs.
                    stage = self._stage_type(self._stage_class, task.job.config,
                                             threads=self._plan.threads, cores=cores)
                    with self._ready:
                        self._stages[me] = stage
                    try:
                        stage.wait_open()
                    except FusionrayError as error:
                        with self._ready:
                            # None: hung while it opened, killed, and settled without it.
                            hung = self._running.pop(me, None) is None
                            if not hung:
                                self._start_error = self._start_error or error
                        if not hung:
                            self._finished.put(None)
                        return
                    with self._ready:
                        if me not in self._running:
                            return  # hung while it opened (on this thread), settled without it
                outcome = (ChunkCancelled(f"{describe(task.chunk)} cancelled")
                           if self._cancelled.is_set()  # stopped while the stage opened
                           else render_with(stage, task))
                with self._ready:
                    taken = self._running.pop(me, None)
                    if taken is None:
                        # Hung: the main thread killed its process and settled this attempt
                        # without it; a fresh worker renders in its place.
                        return
                    if not isinstance(outcome, BaseException):
                        self._durations.append(time.monotonic() - taken[1])
                        self.rendered += 1
                if not isinstance(outcome, BaseException):
                    self._finished.put((task, outcome))
                    continue
                if self._plan.beside_ray:
                    self._finished.put((task, outcome))
                    return  # the pool takes the rest, and the retry: a stage that fails here
                    # once would likely fail again
                with self._ready:
                    self._stages.pop(me, None)
                stage.close()
                stage = None  # the next attempt on a fresh stage, as a restarted actor's
                self._failed_here(task, outcome)
        finally:
            with self._ready:
                if stage is not None and self._stages.get(me) is stage:
                    self._stages.pop(me, None)
            if stage is not None:
                stage.close()  # its models go with its process

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

    def _stop_hung(self) -> list[_Hung]:
        """The hang watchdog (`cluster.hang_factor`, `hang_limit_seconds` over the chunks
        rendered here), as the scheduler's for an actor: a chunk running past the limit is
        taken from its worker, whose render process is killed (its thread then ends). Every
        chunk here: a fresh worker on the same cores takes its place. The caller settles each
        attempt (`_hang_verdict`)."""
        now, hung = time.monotonic(), []
        with self._ready:
            for worker, (task, started) in list(self._running.items()):
                limit = self._hang_limit(task)
                if now - started <= limit:
                    continue
                del self._running[worker]
                self._replaced.append(worker)
                stage = self._stages.pop(worker, None)
                # A process's call ends at once (a stage still opening dies opening); a
                # thread's is left behind.
                fate = stage.kill() if stage is not None else "its stage never opened"
                event = (f"{worker.name} stopped, {fate}: {describe(task.chunk)} ran "
                         f"{now - started:.1f} s, past the hang limit of {limit:.1f} s")
                if not self._plan.beside_ray and not self._cancelled.is_set():
                    event += f"; {self._start_worker(self._cores[worker]).name} started"
                self.events.append(event)
                log.warning("%s", event)
                hung.append(_Hung(task, now - started, limit, worker.name))
        return hung

    def _watch_in(self) -> float:
        """Seconds until the first chunk in progress reaches the hang limit (at most
        `POLL_SECONDS`, at least 10 ms): when to look again."""
        now, wake = time.monotonic(), POLL_SECONDS
        with self._ready:
            for task, started in self._running.values():
                wake = min(wake, started + self._hang_limit(task) - now)
        return max(0.01, wake)

    def _hang_limit(self, task: Task) -> float:
        """Seconds after which `task`'s chunk counts as hung (`hang_limit_seconds` over the
        chunks rendered here); the caller holds `_ready`."""
        assert isinstance(task.job, RenderJob), task.job
        return hang_limit_seconds(self._durations, task.job.config.cluster)

    def run(self, *, isolate_failures: bool, on_progress: Callable[[Chunk], None]) -> None:
        """Every chunk here, no Ray: record each as it finishes, and render the retries of
        failed or hung attempts here too, until every chunk is settled; then the workers end
        (those replaced after a hung chunk end with their killed process).

        Raises:
            FusionrayError: a stage could not start (`StageProcess.wait_open`), or a chunk
                failed its last attempt (unless isolated).
            RenderError: every worker ended with chunks left (a defect, reported, not a hang).
            KeyboardInterrupt: a stage raised it (and Ctrl-C, as anywhere): the caller `stop`s.
        """
        assert not self._plan.beside_ray, "beside Ray the pool settles the rest"
        while self._unsettled:
            for hung in self._stop_hung():
                self._settled(hung.task, _hang_verdict(
                    hung, isolate_failures=isolate_failures, on_progress=on_progress,
                    retried="in the driver"))
            try:
                item = self._finished.get(timeout=self._watch_in())
            except queue.Empty:
                if not any(worker.is_alive() for worker in self._live()):
                    raise RenderError(f"The driver's render threads ended with "
                                      f"{self._unsettled} chunk(s) not rendered") from None
                continue
            if item is None:
                assert self._start_error is not None
                raise self._start_error
            task, outcome = item
            try:
                self._settled(task, _verdict(task, outcome, isolate_failures=isolate_failures,
                                             on_progress=on_progress, retried="in the driver"))
            finally:
                if isinstance(outcome, Exception):  # its worker waits for the verdict
                    with self._ready:
                        self._failures_settled += 1
                        self._ready.notify_all()
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for worker in self._live():
            worker.join()

    def _settled(self, task: Task, retry: Task | None) -> None:
        """`run`'s verdict on one attempt: its retry goes ahead of the waiting chunks (as the
        scheduler puts it); a shot that failed for good (isolated) drops its waiting ones."""
        with self._ready:
            if retry is not None:
                self._waiting.appendleft(retry)
                self._ready.notify_all()
                return
            self._unsettled -= 1
        if job_failed(task.job):
            self._drop(task.job)

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
        pool's; `settle_attempt` for each), so a job stopped later keeps them for its rerun,
        and take a hung one from its worker (`_stop_hung`).

        Returns:
            The next attempts of the chunks that failed or hung here, for the pool.

        Raises:
            FusionrayError: a chunk failed its last attempt (unless isolated).
        """
        retries = [retry for hung in self._stop_hung()
                   if (retry := _hang_verdict(hung, isolate_failures=isolate_failures,
                                              on_progress=on_progress, retried="on Ray"))]
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
        """Beside Ray: wait for the worker, recording its chunks as they finish
        (`settle_finished`, which also watches for a hang: the pool may have been left no
        chunk, and this worker several).

        Raises:
            FusionrayError: the stage could not start, or a chunk failed its last attempt
                (unless isolated).
        """
        retries: list[Task] = []
        while live := [worker for worker in self._live() if worker.is_alive()]:
            live[0].join(timeout=self._watch_in())
            retries += self.settle_finished(isolate_failures=isolate_failures,
                                            on_progress=on_progress)
        if self._start_error is not None:
            raise self._start_error
        return retries + self.settle_finished(isolate_failures=isolate_failures,
                                              on_progress=on_progress)

    def stop(self) -> None:
        """The job failed or was interrupted before its chunks settled: stop every chunk in
        progress at its next frame (a stage still opening: at once), and wait for the workers;
        a process that has not stopped within `CLOSE_SECONDS` (stuck in native code) is
        killed. Chunks finished by then are recorded all the same, so a rerun reuses them."""
        with self._ready:
            self._cancelled.set()
            stages = list(self._stages.values())
            self._ready.notify_all()
        for stage in stages:
            stage.cancel()
        deadline = time.monotonic() + CLOSE_SECONDS
        for worker in self._live():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._ready:
            stuck = list(self._stages.values())
        for stage in stuck:
            stage.kill()
        for worker in self._live():
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


def _hang_verdict(hung: _Hung, *, isolate_failures: bool, on_progress: Callable[[Chunk], None],
                  retried: str) -> Task | None:
    """The main thread's verdict on an attempt stopped as hung (`_stop_hung`), counted
    as the scheduler counts an actor's (`record_hang`): its next attempt, or None.

    Raises:
        RenderError: the chunk hung on its last attempt (unless isolated).
    """
    task = hung.task
    if job_failed(task.job):
        return None  # another chunk of its shot failed for good (isolated)
    reason = record_hang(task, hung.seconds, hung.limit_seconds, hung.worker)
    retry = retry_or_give_up(task, RenderError(reason), f"hung on {hung.worker}",
                             isolate_failures=isolate_failures, retried=retried)
    if retry is None:
        on_progress(task.chunk)
    return retry


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
