"""A job's only chunk, rendered in the driver process instead of on a Ray of the job's own.

A job that would start a local Ray only to render one chunk (a clip of up to about 100 frames,
a resumed job with one chunk left) pays Ray's start and stop for nothing: on the 2-core machine
about 3 of the neural benchmark's 40 s went to the GCS, the raylet, its agents, the actor's
worker process and stopping them, and the one actor then did exactly what this process can, on
every core. Such a job
renders the chunk here, with the stage class, threads and encoder settings the actor would have
had, so its output is the same file.

What the driver gives up against an actor (why only one chunk, and only locally):

- Parallelism: none to give up with one chunk; two or more chunks keep the pool.
- A retry in a fresh process: a failed attempt here counts like an actor's, and its retry goes
  to Ray after all (a new actor), so `cluster.chunk_retries` and `on_chunk_error` mean what
  they always mean.
- The hang watchdog (`cluster.hang_factor`). The chunk renders on this process's main
  thread, so that Ctrl-C and SIGTERM unwind it like everything else: the render stage's step
  threads stop and join. (Rendered on a watched thread instead, a render abandoned at Ctrl-C
  was still inside native code when the process exited, and the exit aborted: -6, not 130.)
- Crash isolation: a segfault in a native library or the OOM killer takes the driver down
  with the chunk; an actor's crash is retried.
- GPUs: not given up; where this process sees a card, the job keeps the actor path, whose
  device planning follows Ray's assignment (`fusionray.models.device`).

A one-chunk job that must keep the watchdog or the isolation sets `cluster.inline=false`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from fusionray.actors.pools import plan_pool
from fusionray.config import RenderConfig
from fusionray.errors import FusionrayError, RenderError
from fusionray.jobs.ray_session import failure_reason
from fusionray.jobs.scheduler import RenderJob, Task, describe

log = logging.getLogger("fusionray")

INLINE_NOTE = ("rendered in the driver process: one chunk on a local machine, so no Ray was "
               "started (cluster.inline=false renders it on an actor)")


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
    cluster = config.cluster
    if (not cluster.inline or tasks != 1 or ray_running or address or pre_pass
            or cluster.elastic or sees_gpu()):
        return None
    cpus = cluster.num_cpus or os.cpu_count() or 1
    plan = plan_pool(cluster.swap, cluster, {"CPU": float(cpus)}, kind="render", chunks=1)
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
    job, chunk = task.job, task.chunk
    assert isinstance(job, RenderJob), job
    try:
        stage = stage_class(job.config, threads=threads)
    except FusionrayError:
        raise
    except Exception as error:
        raise RenderError(f"A render stage could not start: {_reason(error)}") from None
    try:
        result = stage(job.info, chunk, job.source)
    except Exception as error:
        reason = failure_reason(error)
        job.totals.failures.append(f"{describe(chunk)} attempt {task.attempt + 1}: {reason}")
        retries = job.config.cluster.chunk_retries
        if task.attempt < retries:
            log.warning("%s failed in the driver, retrying on Ray: %s", describe(chunk), reason)
            return Task(job, chunk, task.attempt + 1)
        try:
            job.give_up(chunk, error)
        except RenderError as failure:
            if not isolate_failures:
                raise
            job.failed = failure
            log.warning("%s", failure)
        return None
    finally:
        del stage  # its models go before anything else loads
    job.done(chunk, result)
    return None


def _reason(error: BaseException) -> str:
    """The exception's own first line (a constructor's message, as `actor_start_failure`
    reduces an actor's)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

