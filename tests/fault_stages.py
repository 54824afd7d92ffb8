"""Fault-injecting stage classes for the fault tests: production code never reads a test hook;
the tests hand these to `render(..., stage_classes=...)` (or, for a driver run as a separate
process, `python -m tests.fault_cli HOOKS.json ...`).

Faults: `frame_delay_seconds` (sleep per owned frame before the chunk renders, so a fault lands
mid-job), `fail_start` (the render stage's constructor raises), `fail_chunks` (chunk indices
whose render raises), `hang_chunks` (chunks that hang `hang_seconds` on their first attempt
only), `flaky_chunks` (chunks whose first attempt raises, every later one renders; needs
`state_dir` like `hang_chunks`), `hang_start_seconds` (the first stage constructed, in any
process, takes that long to start, its process named by a file `start-hung-pid-P` in
`state_dir`), `marker_dir` (a file
`chunk-I-pid-P-parent-Q` appears there when chunk I starts in worker P, a child of Q),
`affinity_dir` (a file `chunk-I` there holds the CPUs chunk I's thread may run on, e.g.
`0,1`), `cancelled_chunks` (chunks that wait, at most 120 s, until the stage is cancelled,
then render: `RenderStage.cancel` stops them before their first frame). Each stage class
counts the stages constructed from it, in any process (`FaultyRenderStage.opened`).
"""

from __future__ import annotations

import copyreg
import os
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, cast

from fusionray.actors.pools import StageClasses, start_pool
from fusionray.actors.render_stage import RenderStage
from fusionray.config import ClusterConfig, PoolConfig, RenderConfig


class _Hooked(type):
    """The class of the stage classes `faulty_stages` makes: pickled as their hooks, and made
    again from them where they are unpickled (a driver's spawned render process,
    `fusionray.jobs.stage_process`), since a class made at run time cannot be found by name.
    (Ray's actors get them by value from cloudpickle, which never asks this.)"""

    hooks: dict[str, Any]
    """The faults of the class (`FaultyRenderStage.hooks`)."""


copyreg.pickle(_Hooked, lambda cls: (faulty_stage_class, (cls.hooks,)))


class FaultyRenderStage(RenderStage, metaclass=_Hooked):
    """`RenderStage` with the faults of its class attribute `hooks`."""

    hooks: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any, *, threads: int = 1) -> None:
        if self.hooks.get("fail_start"):
            raise RuntimeError("test hook: the render stage cannot start")
        if self.hooks.get("hang_start_seconds") and first_attempt(self.hooks, "start-hung", 0):
            Path(self.hooks["state_dir"], f"start-hung-pid-{os.getpid()}").touch()
            time.sleep(float(self.hooks["hang_start_seconds"]))
        Path(self.hooks["opened_dir"], f"{os.getpid()}-{time.monotonic_ns()}").write_text(
            str(threads))
        super().__init__(config, threads=threads)

    @classmethod
    def opened(cls) -> list[int]:
        """The threads of each stage of this class constructed so far, in any process."""
        return [int(path.read_text()) for path in Path(cls.hooks["opened_dir"]).iterdir()]

    def __call__(self, info: Any, chunk: Any, source: Any, detected: Any = None,
                 shot: Any = None) -> Any:
        hooks = self.hooks
        marker_dir = hooks.get("marker_dir")
        if marker_dir:
            Path(marker_dir, f"chunk-{chunk.index}-pid-{os.getpid()}-parent-{os.getppid()}"
                 ).touch()
        if hooks.get("affinity_dir"):
            cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
            Path(hooks["affinity_dir"], f"chunk-{chunk.index}").write_text(cpus)
        if chunk.index in hooks.get("fail_chunks", ()):
            raise RuntimeError(f"test hook: chunk {chunk.index} fails")
        if chunk.index in hooks.get("flaky_chunks", ()) and first_attempt(hooks, "failed",
                                                                          chunk.index):
            raise RuntimeError(f"test hook: chunk {chunk.index} fails once")
        if chunk.index in hooks.get("hang_chunks", ()) and first_attempt(hooks, "hung",
                                                                         chunk.index):
            time.sleep(float(hooks.get("hang_seconds", 600.0)))
        if chunk.index in hooks.get("cancelled_chunks", ()):
            assert self._cancelled.wait(120), f"test hook: chunk {chunk.index} never cancelled"
        time.sleep(float(hooks.get("frame_delay_seconds", 0.0)) * chunk.owned_frames)
        return super().__call__(info, chunk, source, detected, shot)


def read_marker(name: str) -> tuple[int, int, int]:
    """The chunk, the process that started it and that process's parent, from a `marker_dir`
    file's name (`chunk-I-pid-P-parent-Q`)."""
    _, chunk, _, pid, _, parent = name.split("-")
    return int(chunk), int(pid), int(parent)


def first_attempt(hooks: dict[str, Any], fault: str, chunk_index: int) -> bool:
    """Whether this is the chunk's first attempt at `fault`; a file `FAULT-I` in the hooks'
    `state_dir` says so to every later attempt, in whichever process it runs."""
    try:  # O_EXCL: of two workers asking at once, one is first
        Path(hooks["state_dir"], f"{fault}-{chunk_index}").touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def faulty_stages(**hooks: Any) -> StageClasses:
    """Stage classes whose render stage injects `hooks` (a class made here, shipped to the
    actors by value, to the driver's render processes by its hooks)."""
    hooks.setdefault("opened_dir", tempfile.mkdtemp(prefix="fusionray-opened-"))
    return StageClasses(render=faulty_stage_class(hooks))


def opened_stages(stages: StageClasses) -> list[int]:
    """`FaultyRenderStage.opened` of the render class of `stages` (made by `faulty_stages`)."""
    render = stages.render
    assert issubclass(render, FaultyRenderStage)
    return render.opened()


def faulty_stage_class(hooks: dict[str, Any]) -> type[FaultyRenderStage]:
    """The render stage class with `hooks` (`faulty_stages`)."""
    # A subclass of FaultyRenderStage by construction (its only base).
    return cast("type[FaultyRenderStage]",
                _Hooked("FaultyRenderStage", (FaultyRenderStage,), {"hooks": dict(hooks)}))


class AffinityStage:
    """A stage that answers with the CPUs its actor may run on (the pools' pinning test)."""

    def __init__(self, config: RenderConfig, *, threads: int) -> None:
        self.threads = threads

    def __call__(self, *_: Any) -> frozenset[int]:
        return frozenset(os.sched_getaffinity(0))


class VisibleDevicesStage:
    """A stage that answers with the `CUDA_VISIBLE_DEVICES` its actor runs with, and the
    actor's runtime env (the pools' GPU isolation tests)."""

    def __init__(self, config: RenderConfig, *, threads: int) -> None:
        self.threads = threads

    def __call__(self, *_: Any) -> tuple[str | None, dict[str, Any]]:
        import ray

        return (os.environ.get("CUDA_VISIBLE_DEVICES"),
                dict(ray.get_runtime_context().runtime_env))


def what_a_pool_sees(num_gpus: float) -> tuple[str | None, dict[str, Any]]:
    """`VisibleDevicesStage`'s answer from the one actor of a render pool reserving `num_gpus`
    (and one CPU), started as jobs start their pools (`start_pool`; Ray must be up)."""
    import ray

    config = RenderConfig(video="demo", cluster=ClusterConfig(
        swap=PoolConfig(replicas=1, num_cpus=1, num_gpus=num_gpus)))
    pool = start_pool("render", config, VisibleDevicesStage, chunks=1)
    try:
        visible, runtime_env = ray.get(pool.members[0].actor.run.remote())
        return visible, runtime_env
    finally:
        pool.release()
