"""Chunks the driver renders itself (`fusionray.jobs.inline`).

The decision, as a pure function: every chunk here without Ray (a one-chunk job; any job on a
small machine, one worker per actor the pool would start, pinned as those actors), the first
chunks beside Ray's start on a larger machine, or every chunk to Ray.

Every chunk here: the same file as on actors, no Ray started, a failed attempt retried here on
a fresh stage, passthrough and start failures as on an actor, each chunk recorded as it
finishes, Ctrl-C and signals as anywhere, a hung chunk's thread left behind and the chunk
retried (here, or beside Ray on the pool) without the job or the process waiting for it.

Beside Ray's start: the threads (which must be the pool's), the same file as on actors, the
pool taking the rest when ready, a failed attempt retried on the pool, the chunk stopped when
the job fails or is interrupted first."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

import fusionray.jobs.pipeline as pipeline
from fusionray.actors.pools import largest_node_cpus, plan_pool
from fusionray.actors.render_stage import ChunkCancelled, RenderStage
from fusionray.actors.stages import detector_from_config
from fusionray.config import ClusterConfig, PoolConfig, RenderConfig
from fusionray.errors import ConfigError, RenderError, RenderInterrupted
from fusionray.jobs import inline
from fusionray.jobs.identity import build_source_identity
from fusionray.jobs.inline import BESIDE_RAY_NOTE, INLINE_NOTE, DriverPlan, plan_driver
from fusionray.jobs.manifest import Manifest
from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.jobs.ray_session import start_ray, stop_ray
from fusionray.jobs.shots import render_shots, shot_specs
from fusionray.media.demo import demo_source_image_path
from fusionray.media.plan import plan_video_chunks
from fusionray.media.probe import probe_video
from tests.clips import write_face_clip
from tests.fault_stages import faulty_stages, opened_stages, read_marker
from tests.test_render import compose_config, decoded_frames
from tests.test_shots import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 24
"""One automatic chunk (chunks are at least 48 frames)."""
THREE_CHUNKS = ("chunk.frames=8", "chunk.keyframe_aligned=false")
"""The 24-frame clip in three chunks."""
BESIDE = ("cluster.num_cpus=2", "cluster.inline_max_cpus=0")
"""Two cores, treated as a larger machine: the driver renders only beside Ray's start."""
SMALL = ("cluster.num_cpus=2",)
"""Two cores: every chunk in the driver, on two workers (threads, below 4 chunks a worker)."""
PROCESSES = (*SMALL, "cluster.inline_process_chunks=0")
"""Two cores, every chunk in the driver on two workers, each in a render process."""


def decide(config: RenderConfig, **facts: Any) -> DriverPlan | None:
    """`plan_driver` for a one-chunk job on a local machine without a GPU, no Ray running, no
    pre-pass and no CPUs to pin to, except where `facts` say otherwise."""
    facts = {"tasks": 1, "pools": 1, "ray_running": False, "address": None, "sees_gpu": False,
             "pre_pass": False, **facts}
    gpu = facts.pop("sees_gpu")
    return plan_driver(config, sees_gpu=lambda: gpu, **facts)


def cluster_config(**cluster: Any) -> RenderConfig:
    return RenderConfig(video="demo", cluster=ClusterConfig(**cluster))


def beside(threads: int) -> DriverPlan:
    return DriverPlan(workers=1, threads=threads, beside_ray=True)


def test_a_local_one_chunk_job_renders_here_on_every_core() -> None:
    assert decide(cluster_config(num_cpus=6)) == DriverPlan(workers=1, threads=6)
    # The threads one actor of the pool would get: its reservation, or all the free cores.
    assert decide(cluster_config(num_cpus=6, swap=PoolConfig(replicas=3, num_cpus=1))
                  ) == DriverPlan(workers=1, threads=6)
    assert decide(cluster_config(num_cpus=16, swap=PoolConfig(replicas=0, num_cpus=2))
                  ) == DriverPlan(workers=1, threads=16)  # above inline_max_cpus too


def test_a_small_machine_renders_every_chunk_here_one_pinned_worker_per_actor() -> None:
    cpus = (4, 5)
    # Two cores: the pool's two actors of one thread, each on its own core (and, with 8
    # chunks a worker, in a process of its own).
    assert decide(cluster_config(num_cpus=2), tasks=16, affinity=cpus) == DriverPlan(
        workers=2, threads=1, cores=((4,), (5,)), processes=True)
    assert decide(cluster_config(num_cpus=2, pin_cpus=False), tasks=16, affinity=cpus
                  ) == DriverPlan(workers=2, threads=1, processes=True)
    # Workers that do not fill the CPUs this process has are not pinned, as actors are not.
    assert decide(cluster_config(num_cpus=2), tasks=16, affinity=(0, 1, 2)
                  ) == DriverPlan(workers=2, threads=1, processes=True)
    # Never more workers than chunks, or than max_chunks_in_flight (as actors).
    assert decide(cluster_config(num_cpus=4), tasks=3) == DriverPlan(workers=3, threads=1)
    assert decide(cluster_config(num_cpus=4, max_chunks_in_flight=2), tasks=9
                  ) == DriverPlan(workers=2, threads=2, processes=True)
    assert decide(cluster_config(num_cpus=4, swap=PoolConfig(replicas=0, num_cpus=2)),
                  tasks=9) == DriverPlan(workers=2, threads=2, processes=True)


def test_workers_are_processes_from_inline_process_chunks_chunks_a_worker() -> None:
    """Below `cluster.inline_process_chunks` chunks a worker, a process's start costs more
    than the GIL it frees; one worker shares the GIL with none."""
    two = {tasks: decide(cluster_config(num_cpus=2), tasks=tasks) for tasks in (2, 7, 8, 40)}
    assert {tasks: (plan.workers, plan.processes) for tasks, plan in two.items()
            if plan is not None} == {2: (2, False), 7: (2, False), 8: (2, True), 40: (2, True)}
    always = cluster_config(num_cpus=2, inline_process_chunks=0)
    assert decide(always, tasks=2) == DriverPlan(workers=2, threads=1, processes=True)
    assert decide(always, tasks=1) == DriverPlan(workers=1, threads=2)  # one: its thread
    assert decide(cluster_config(num_cpus=4, inline_process_chunks=2), tasks=7
                  ) == DriverPlan(workers=4, threads=1)  # 7 < 2 x 4
    with pytest.raises(ConfigError, match=r"cluster\.inline_process_chunks.*-1.*>= 0"):
        cluster_config(inline_process_chunks=-1)


def test_the_fork_server_starts_early_only_where_the_plan_has_render_processes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`start_render_processes_early` asks `plan_driver` (with what is known before the job's
    own planning), so the server starts exactly where workers would be processes."""
    started: list[int] = []
    monkeypatch.setattr(inline, "start_server", lambda: started.append(1))
    monkeypatch.setattr(inline, "ray_connected", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cases = [(cluster_config(num_cpus=2), 8, True), (cluster_config(num_cpus=2), 7, False),
             (cluster_config(num_cpus=4, inline_process_chunks=2), 7, False),  # 7 < 2 x 4
             (cluster_config(num_cpus=4, inline_process_chunks=2), 8, True),
             (cluster_config(num_cpus=8), 40, False),  # beside Ray: one worker, a thread
             (cluster_config(num_cpus=2, inline=False), 40, False),
             # A pool this machine cannot start: the job's own planning reports it.
             (cluster_config(num_cpus=2, swap=PoolConfig(num_gpus=1)), 40, False)]
    for config, chunks, expected in cases:
        started.clear()
        inline.start_render_processes_early(config, chunks)
        assert started == ([1] if expected else []), (config.cluster, chunks)


def test_a_larger_machine_renders_its_first_chunks_beside_rays_start() -> None:
    # 15 chunks left for the pool: max_chunks_in_flight=4 actors of two on 8 cores.
    assert decide(cluster_config(num_cpus=8), tasks=16) == beside(threads=2)
    assert decide(cluster_config(num_cpus=8, inline_max_cpus=8), tasks=16) == DriverPlan(
        workers=4, threads=2, processes=True)
    # inline_max_cpus=0: beside Ray's start even on two cores.
    assert decide(cluster_config(num_cpus=2, inline_max_cpus=0), tasks=16) == beside(threads=1)
    # Two chunks: the pool gets one, so one actor on every core; the driver's chunk too.
    assert decide(cluster_config(num_cpus=2, inline_max_cpus=0), tasks=2) == beside(threads=2)
    assert decide(cluster_config(num_cpus=8, swap=PoolConfig(replicas=0, num_cpus=2)),
                  tasks=16) == beside(threads=2)


NOT_HERE = [(cluster_config(inline=False), {}), (cluster_config(), {"ray_running": True}),
            (cluster_config(), {"address": "auto"}), (cluster_config(), {"sees_gpu": True}),
            (cluster_config(), {"pre_pass": True}), (cluster_config(elastic=True), {}),
            (cluster_config(num_gpus=1, swap=PoolConfig(replicas=2, num_gpus=0.5)), {})]
"""Jobs whose driver renders no chunk, whatever their chunk count (`_renders_here`)."""
NOT_HERE_IDS = ["off", "ray-running", "joins-a-cluster", "gpu", "shot-pre-pass", "elastic",
                "declares-gpus"]


@pytest.mark.parametrize("tasks", [1, 2, 16])
@pytest.mark.parametrize("cpus", [2, 8])
@pytest.mark.parametrize(("config", "facts"), NOT_HERE, ids=NOT_HERE_IDS)
def test_everything_else_goes_to_ray(config: RenderConfig, facts: dict[str, Any], cpus: int,
                                     tasks: int) -> None:
    config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster,
                                                                    num_cpus=cpus))
    assert decide(config, tasks=tasks, **facts) is None


@pytest.mark.parametrize("facts", [{"tasks": 0}, {"tasks": 4, "pools": 2}],
                         ids=["nothing-left", "two-pools"])
def test_no_chunk_left_or_two_pools_go_to_ray(facts: dict[str, Any]) -> None:
    assert decide(cluster_config(num_cpus=2), **facts) is None


def test_the_gpu_is_asked_about_only_when_nothing_else_decides() -> None:
    """On a GPU node the question runs nvidia-smi: a job joining a cluster never asks it."""
    def no_probe() -> bool:
        raise AssertionError("the GPU probe ran although the job goes to Ray anyway")

    for address, pools in (("auto", 1), (None, 2)):
        assert plan_driver(cluster_config(), tasks=3, pools=pools, ray_running=False,
                           address=address, sees_gpu=no_probe, pre_pass=False) is None


def test_a_pool_that_could_not_start_here_is_the_pools_error() -> None:
    config = cluster_config(num_cpus=2, swap=PoolConfig(replicas=1, num_gpus=0.5))
    with pytest.raises(ConfigError, match=r"set cluster\.swap\.num_gpus=0 on a machine"):
        decide(config)


def test_inline_max_cpus_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.inline_max_cpus.*-1.*>= 0"):
        cluster_config(inline_max_cpus=-1)


# --- whole jobs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_face_clip(tmp_path_factory.mktemp("inline") / "faces.mp4", frames=FRAMES)


@pytest.fixture
def no_ray() -> None:
    """A process without Ray, as a user's render starts (another module's Ray is shut down)."""
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_forbidden(no_ray: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(config: RenderConfig) -> bool:
        raise AssertionError("a one-chunk local job must not start Ray")

    monkeypatch.setattr(pipeline, "start_ray", refuse)


def config_for(clip: Path, output: Path, *extra: str) -> RenderConfig:
    return compose_config(f"+video={clip}", f"+source={demo_source_image_path()}",
                          f"output={output}", "progress=false", "preview_frames=0", *extra)


def run_json(output: Path) -> dict[str, Any]:
    return json.loads(OutputPaths.for_video(output).run_json.read_text())


@pytest.mark.ray
def test_the_driver_writes_the_file_an_actor_writes(
    clip: Path, tmp_path: Path, ray_forbidden: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = tmp_path / "here.mp4"
    summary = render(config_for(clip, here), run_dir=tmp_path, config_yaml="x: 1\n")
    assert summary.chunks == 1 and summary.faces_swapped >= FRAMES - 2
    assert summary.actors == {"detect": 0, "render": 0} and summary.nodes == 0
    assert summary.chunks_by_actor == {"driver": 1} and summary.ray_session is None
    assert INLINE_NOTE in summary.notes and "ray_start" not in summary.stage_seconds
    assert not ray.is_initialized()

    monkeypatch.undo()  # Ray allowed again
    on_actor = tmp_path / "actor.mp4"
    summary = render(config_for(clip, on_actor, "cluster.inline=false"), run_dir=tmp_path,
                     config_yaml="x: 1\n")
    assert summary.actors == {"detect": 0, "render": 1} and INLINE_NOTE not in summary.notes
    assert not ray.is_initialized()  # the job stopped the Ray it started
    # Same stage, threads and encoder settings: the same bytes, not only the same pictures.
    assert here.read_bytes() == on_actor.read_bytes()
    assert run_json(here)["actor_threads"] == run_json(on_actor)["actor_threads"]


@pytest.mark.parametrize("chunking", [(), THREE_CHUNKS], ids=["one-chunk", "three-chunks"])
def test_a_failed_attempt_in_the_driver_is_retried_there_on_a_fresh_stage(
    clip: Path, tmp_path: Path, ray_forbidden: None, chunking: tuple[str, ...],
) -> None:
    reference = tmp_path / "reference.mp4"
    render(config_for(clip, reference, "quality=lossless", *chunking), run_dir=tmp_path,
           config_yaml="x: 1\n")
    output = tmp_path / "out.mp4"
    stages = faulty_stages(flaky_chunks=[0], state_dir=str(tmp_path))
    opened = len(opened_stages(stages))
    summary = render(config_for(clip, output, "quality=lossless", *chunking), run_dir=tmp_path,
                     config_yaml="x: 1\n", stage_classes=stages)
    last = "23" if not chunking else "7"
    assert summary.chunk_failures == [
        f"chunk 0 (frames 0-{last}) attempt 1: RuntimeError: test hook: chunk 0 fails once"]
    assert summary.actors == {"detect": 0, "render": 0} and INLINE_NOTE in summary.notes
    # The failed stage was dropped: the retry opened another, as a restarted actor would.
    workers = 1 if not chunking else 2
    assert len(opened_stages(stages)) - opened == workers + 1
    frames, expected = decoded_frames(output), decoded_frames(reference)
    assert len(frames) == len(expected) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))


def test_a_chunk_that_fails_its_only_attempt_passes_through_without_ray(
    clip: Path, tmp_path: Path, ray_forbidden: None,
) -> None:
    output = tmp_path / "out.mp4"
    config = config_for(clip, output, "quality=lossless", "cluster.chunk_retries=0",
                        "on_chunk_error=passthrough")
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n",
                     stage_classes=faulty_stages(fail_chunks=[0]))
    assert summary.passthrough_chunks == [{"chunk": 0, "start": 0, "stop": FRAMES}]
    assert summary.faces_swapped == 0 and len(summary.chunk_failures) == 1
    frames, source = decoded_frames(output), decoded_frames(clip)
    assert all(np.array_equal(a, b) for a, b in zip(frames, source, strict=True))


def test_a_chunk_that_fails_its_last_attempt_stops_the_job(
    clip: Path, tmp_path: Path, ray_forbidden: None,
) -> None:
    output = tmp_path / "out.mp4"
    with pytest.raises(RenderError, match=r"^Chunk 0 \(frames 0-23\) failed after 1 attempts: "
                                          r"RuntimeError: test hook: chunk 0 fails$"):
        render(config_for(clip, output, "cluster.chunk_retries=0"), run_dir=tmp_path,
               config_yaml="x: 1\n", stage_classes=faulty_stages(fail_chunks=[0]))
    assert not output.exists()
    assert not OutputPaths.for_video(output).work.exists()  # nothing finished to resume


def test_a_stage_that_cannot_start_is_one_line(
    clip: Path, tmp_path: Path, ray_forbidden: None,
) -> None:
    output = tmp_path / "out.mp4"
    with pytest.raises(RenderError) as caught:
        render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n",
               stage_classes=faulty_stages(fail_start=True))
    assert str(caught.value) == ("A render stage could not start: test hook: the render stage "
                                 "cannot start")
    assert sorted(tmp_path.iterdir()) == []  # no output, no work folder, no lock


class InterruptedStage:
    """Ctrl-C arriving while the driver renders the chunk."""

    def __init__(self, config: RenderConfig, *, threads: int) -> None:
        self.threads = threads

    def __call__(self, *_: object) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_in_the_driver_interrupts_the_job(
    clip: Path, tmp_path: Path, ray_forbidden: None,
) -> None:
    output = tmp_path / "out.mp4"
    with pytest.raises(RenderInterrupted, match="before any chunk finished"):
        render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n",
               stage_classes=pipeline.StageClasses(render=InterruptedStage))
    assert sorted(tmp_path.iterdir()) == []


def test_a_resumed_job_renders_its_last_chunk_here_and_a_finished_one_needs_no_ray(
    clip: Path, tmp_path: Path, no_ray: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = tmp_path / "out.mp4"
    two_chunks = ("chunk.frames=12", "chunk.keyframe_aligned=false", "cluster.chunk_retries=0")
    # One chunk in flight: chunk 0 is recorded before chunk 1 fails and stops the job.
    with pytest.raises(RenderError, match="chunk 1 fails"):
        render(config_for(clip, output, *two_chunks, "cluster.max_chunks_in_flight=1"),
               run_dir=tmp_path, config_yaml="x: 1\n",
               stage_classes=faulty_stages(fail_chunks=[1]))
    assert not ray.is_initialized() and not output.exists()

    def refuse(config: RenderConfig) -> bool:
        raise AssertionError("this job must not start Ray")

    monkeypatch.setattr(pipeline, "start_ray", refuse)
    # Assembly fails once: every chunk is then recorded, and the work folder kept.
    finish = pipeline.finish_shot

    def fail_to_finish(*args: Any, **kwargs: Any) -> Any:
        raise RenderError("test: assembly failed")

    monkeypatch.setattr(pipeline, "finish_shot", fail_to_finish)
    with pytest.raises(RenderError, match="assembly failed"):
        render(config_for(clip, output, *two_chunks), run_dir=tmp_path, config_yaml="x: 1\n")
    assert OutputPaths.for_video(output).work.is_dir()  # chunk 1 rendered here, recorded
    monkeypatch.setattr(pipeline, "finish_shot", finish)
    summary = render(config_for(clip, output, *two_chunks), run_dir=tmp_path,
                     config_yaml="x: 1\n")
    assert summary.chunks_reused == 2 and summary.chunks_rendered == 0
    assert summary.frames_with_faces >= FRAMES - 2 and output.exists()


LONG_FRAMES = 150
"""Long enough (one chunk of it, several seconds) for a signal to land mid-render."""


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_face_clip(tmp_path_factory.mktemp("inline-long") / "faces.mp4",
                           frames=LONG_FRAMES)


def driver_of(parent: int) -> int | None:
    """The driver whose render process has `parent` (a marker's): the fork server's own
    parent (`fusionray.jobs.stage_process`); None when that process is gone."""
    import psutil

    try:
        return psutil.Process(parent).ppid()
    except psutil.NoSuchProcess:
        return None


def interrupt_mid_chunk(clip: Path, tmp_path: Path, sig: signal.Signals, *,
                        settle_seconds: float, extra: tuple[str, ...]) -> str:
    """Run the render CLI (`tests.fault_cli`, marking each chunk's start) on `clip`, send `sig`
    `settle_seconds` after the first chunk started, and check the job ends as an interrupt:
    exit 130, no abort from native code still running at exit, nothing at the output.

    Returns:
        The first chunk's marker, `chunk-I-pid-P-parent-Q` (P rendered it, a child of Q).
    """
    markers = tmp_path / "markers"
    markers.mkdir()
    hooks = tmp_path / "hooks.json"
    hooks.write_text(json.dumps({"marker_dir": str(markers)}))
    output = tmp_path / "out" / "out.mp4"
    output.parent.mkdir()
    command = [sys.executable, "-m", "tests.fault_cli", str(hooks), f"+video={clip}",
               f"+source={demo_source_image_path()}", f"output={output}", *extra,
               "progress=false", f"hydra.run.dir={tmp_path / 'h'}"]
    driver = subprocess.Popen(command, cwd=ROOT, text=True, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(markers.iterdir()) and driver.poll() is None:
            assert time.monotonic() < deadline, "the chunk never started"
            time.sleep(0.05)
        first = sorted(path.name for path in markers.iterdir())[0]
        _, pid, parent = read_marker(first)
        rendered_by = pid if pid == driver.pid else driver_of(parent)
        time.sleep(settle_seconds)  # into the render: decoding, detecting, swapping, encoding
        assert driver.poll() is None, driver.communicate()[1][-2000:]
        os.kill(driver.pid, sig)
        _, stderr = driver.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, stderr[-2000:]
    assert "Interrupted before any chunk finished" in stderr
    assert "terminate called" not in stderr
    assert sorted(path.name for path in output.parent.iterdir()) == []
    assert rendered_by == driver.pid, first  # on the driver's thread, or its render process
    return first


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("chunking", [(f"chunk.frames={LONG_FRAMES}",), (
    "chunk.frames=50", "chunk.keyframe_aligned=false", *SMALL)], ids=["one-chunk", "two-workers"])
def test_a_signal_mid_render_in_the_driver_exits_130_and_leaves_nothing(
    long_clip: Path, tmp_path: Path, sig: signal.Signals, chunking: tuple[str, ...],
) -> None:
    """The render CLI as users run it, every chunk in the driver (one, or three on two
    workers): the main thread stops each chunk at its next frame and joins the workers, whose
    stages join their step threads, and the process exits 130 (not an abort from native code
    still running at exit)."""
    interrupt_mid_chunk(long_clip, tmp_path, sig, settle_seconds=0.5, extra=chunking)


def test_a_job_rendered_here_never_imports_ray(tmp_path: Path) -> None:
    """The render CLI as users run it, on a one-chunk clip: Ray is not even imported (about
    0.25 s of a short clip's start; `fusionray.lazy`), and the output is written."""
    clip = write_face_clip(tmp_path / "faces.mp4", frames=FRAMES)
    output = tmp_path / "out.mp4"
    script = ("import atexit, runpy, sys\n"
              "atexit.register(lambda: print('ray imported:', 'ray' in sys.modules, "
              "file=sys.stderr))\n"
              "sys.argv = ['render', *sys.argv[1:]]\n"
              "runpy.run_module('fusionray.jobs.render', run_name='__main__')\n")
    result = subprocess.run(
        [sys.executable, "-c", script, f"+video={clip}", f"+source={demo_source_image_path()}",
         f"output={output}", "progress=false", "preview_frames=0",
         f"hydra.run.dir={tmp_path / 'h'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ray imported: False" in result.stderr
    assert INLINE_NOTE in json.loads(OutputPaths.for_video(output).run_json.read_text())["notes"]


# --- every chunk here, on a small machine -------------------------------------------------------


@pytest.fixture
def two_cpus() -> Iterator[tuple[int, int]]:
    """This process kept to two of its CPUs (as on the 2-core machine, where the driver's
    workers fill it and are pinned); skipped on a machine with fewer."""
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    os.sched_setaffinity(0, cpus[:2])
    try:
        yield cpus[0], cpus[1]
    finally:
        os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize("workers", [SMALL, PROCESSES], ids=["threads", "processes"])
@pytest.mark.ray
def test_a_small_machine_renders_every_chunk_here_on_pinned_workers_into_the_same_file(
    clip: Path, tmp_path: Path, ray_forbidden: None, two_cpus: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch, workers: tuple[str, ...],
) -> None:
    here = tmp_path / "here.mp4"
    cpus = tmp_path / "cpus"
    cpus.mkdir()
    summary = render(config_for(clip, here, *THREE_CHUNKS, *workers), run_dir=tmp_path,
                     config_yaml="x: 1\n", stage_classes=faulty_stages(affinity_dir=str(cpus)))
    assert summary.chunks == 3 and summary.chunks_rendered == 3
    assert summary.chunks_by_actor == {"driver": 3} and summary.ray_session is None
    assert summary.actors == {"detect": 0, "render": 0} and INLINE_NOTE in summary.notes
    # Two workers (the pool's two actors of one thread), each kept to a core of its own.
    seen = {path.read_text() for path in cpus.iterdir()}
    assert seen == {str(two_cpus[0]), str(two_cpus[1])}
    assert os.sched_getaffinity(0) == set(two_cpus)  # the driver's main thread is not pinned
    assert not [t for t in threading.enumerate() if t.name.startswith("fusionray-driver")]

    monkeypatch.undo()  # Ray allowed again
    on_actors = tmp_path / "actors.mp4"
    summary = render(config_for(clip, on_actors, *THREE_CHUNKS, *SMALL, "cluster.inline=false"),
                     run_dir=tmp_path, config_yaml="x: 1\n")
    assert summary.actors["render"] == 2 and "driver" not in summary.chunks_by_actor
    assert run_json(here)["actor_threads"] == run_json(on_actors)["actor_threads"]
    assert here.read_bytes() == on_actors.read_bytes()


@pytest.mark.parametrize("mode", [SMALL, BESIDE], ids=["every-chunk-here", "beside-ray"])
@pytest.mark.ray
def test_the_drivers_chunks_are_recorded_as_they_finish(
    clip: Path, tmp_path: Path, no_ray: None, mode: tuple[str, ...],
) -> None:
    """A driver's chunk finished early is in the work folder long before the job ends (while
    the other worker or the pool still renders), so a job killed later keeps it for the
    rerun."""
    output = tmp_path / "out.mp4"
    work = OutputPaths.for_video(output).work
    # Chunks 1 and 2 take 6 s more on their first attempt (in whichever process); chunk 0,
    # the driver's first, does not.
    stages = faulty_stages(hang_chunks=[1, 2], hang_seconds=6.0, state_dir=str(tmp_path))
    first_row: list[float] = []
    ended = threading.Event()

    def watch() -> None:
        while not ended.is_set() and not first_row:
            if Manifest.count_recorded(work) >= 1:
                first_row.append(time.monotonic())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = render(config_for(clip, output, *THREE_CHUNKS, *mode),
                         run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    finally:
        end = time.monotonic()
        ended.set()
        watcher.join()
    assert summary.chunks_by_actor["driver"] >= 1 and summary.chunks_rendered == 3
    assert first_row, "no chunk was recorded while the job ran"
    assert end - first_row[0] > 3.0  # recorded while the other chunks still slept


@pytest.mark.parametrize("mode", [SMALL, BESIDE], ids=["every-chunk-here", "beside-ray"])
@pytest.mark.ray
def test_a_job_failing_elsewhere_stops_the_drivers_chunk_and_records_nothing_of_it(
    clip: Path, tmp_path: Path, no_ray: None, mode: tuple[str, ...],
) -> None:
    output = tmp_path / "out.mp4"
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"after 1 attempts: RuntimeError: test hook: chunk"):
        # The driver's chunk (0) runs until it is cancelled; the others (on the second worker,
        # or on the pool) fail.
        render(config_for(clip, output, *THREE_CHUNKS, *mode, "cluster.chunk_retries=0"),
               run_dir=tmp_path, config_yaml="x: 1\n",
               stage_classes=faulty_stages(cancelled_chunks=[0], fail_chunks=[1, 2]))
    assert time.monotonic() - started < 60  # not the hook's 120 s wait: the stop cancelled it
    assert not [t for t in threading.enumerate() if t.name.startswith("fusionray-driver")]
    assert not ray.is_initialized() and not output.exists()
    assert not OutputPaths.for_video(output).work.exists()  # nothing finished to resume


def test_a_shot_failing_for_good_in_the_driver_stops_alone(
    tmp_path: Path, ray_forbidden: None,
) -> None:
    """A shot list rendered by the driver: the shot whose chunk fails every attempt is failed,
    its chunks not started are dropped, and the other shot renders to the end. (One worker,
    so which chunks had started is certain.)"""
    long_shot = write_face_clip(tmp_path / "long.mp4", frames=20)  # chunks 0-4
    short_shot = write_face_clip(tmp_path / "short.mp4", frames=8)  # chunks 0-1
    shots = tmp_path / "shots.csv"
    out = tmp_path / "renders"
    shots.write_text(f"video,output\n{long_shot},{out / 'long.mp4'}\n"
                     f"{short_shot},{out / 'short.mp4'}\n")
    cfg = compose_cfg(f"+shots={shots}", f"+source={demo_source_image_path()}",
                      "progress=false", "preview_frames=0", "chunk.frames=4",
                      "chunk.keyframe_aligned=false", "cluster.chunk_retries=1",
                      "cluster.max_chunks_in_flight=1", *SMALL)
    specs = shot_specs(cfg)
    assert specs is not None
    # Chunk 2 exists in the long shot only: both its attempts fail.
    report = render_shots(cfg, specs, run_dir=tmp_path / "run",
                          stage_classes=faulty_stages(fail_chunks=[2]))
    assert [row.status for row in report.rows] == ["failed", "ok"]
    assert "Chunk 2 (frames 8-11) failed after 2 attempts" in report.rows[0].error
    assert not (out / "long.mp4").exists()
    run = json.loads(OutputPaths.for_video(out / "short.mp4").run_json.read_text())
    assert run["frames_written"] == 8 and run["chunks_rendered"] == 2
    # Interleaved: long 0, short 0, long 1, short 1, long 2 twice; long 3 and 4 dropped.
    assert INLINE_NOTE in run["notes"] and run["chunks_by_actor"] == {"driver": 2 + 2}


HANG = ("cluster.hang_floor_seconds=5", "cluster.hang_factor=2")
"""A chunk counts as hung after 10 s before any chunk finished here, then after 5 s (twice a
chunk's second or so, but never under 5)."""


def render_processes(markers: Path, chunk: int) -> list[int]:
    """The render processes of this process's driver that started rendering `chunk`
    (`marker_dir`)."""
    return [pid for index, pid, parent in map(read_marker, os.listdir(markers))
            if index == chunk and driver_of(parent) == os.getpid()]


def gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(("mode", "hung"), [(PROCESSES, 1), (SMALL, 1), (BESIDE, 0)],
                         ids=["every-chunk-here-processes", "every-chunk-here-threads",
                              "beside-ray"])
@pytest.mark.ray
def test_a_hung_chunk_in_the_driver_is_stopped_and_retried(
    clip: Path, tmp_path: Path, no_ray: None, mode: tuple[str, ...], hung: int,
) -> None:
    """The hang watchdog in the driver, as for an actor: every chunk here, a fresh worker
    started in its place takes the retry, and the hung one's render process is killed (or,
    on a thread, the thread is left behind and its chunk cancelled); beside Ray (one worker,
    on its thread) the pool takes the retry."""
    reference = tmp_path / "reference.mp4"
    render(config_for(clip, reference, *THREE_CHUNKS, *SMALL, "quality=lossless"),
           run_dir=tmp_path, config_yaml="x: 1\n")
    output = tmp_path / "out" / "out.mp4"
    markers = tmp_path / "markers"
    markers.mkdir()
    # Beside Ray the thread left behind sleeps on; 20 s, so it ends soon after the test.
    stages = faulty_stages(hang_chunks=[hung], hang_seconds=600 if mode == PROCESSES else 20,
                           state_dir=str(tmp_path), marker_dir=str(markers))
    started = time.monotonic()
    summary = render(config_for(clip, output, *THREE_CHUNKS, *mode, *HANG, "quality=lossless"),
                     run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    assert time.monotonic() - started < 60, "the job waited for the hung chunk"
    [timeout] = summary.chunk_timeouts
    assert timeout["chunk"] == hung and timeout["attempt"] == 1, timeout
    assert timeout["seconds"] >= timeout["limit_seconds"] >= 5
    worker = timeout["actor"]
    assert worker.startswith("fusionray-driver-chunk-"), worker
    last = 8 * hung + 7
    assert summary.chunk_failures == [
        f"chunk {hung} (frames {8 * hung}-{last}) attempt 1: hung "
        f"({timeout['seconds']:.1f} s > {timeout['limit_seconds']:.1f} s)"]
    fate = "its render process killed" if mode == PROCESSES else (
        "its thread left behind (its chunk cancelled)")
    [event] = [e for e in summary.pool_events if " stopped, " in e]
    assert event.startswith(f"{worker} stopped, {fate}: chunk {hung} "
                            f"(frames {8 * hung}-{last}) ran "), event
    if mode == BESIDE:  # the pool took the retry with the rest
        assert "started" not in event and "driver" not in summary.chunks_by_actor
    else:  # a fresh worker took its place, and rendered the retry
        assert event.endswith(" started") and summary.chunks_by_actor == {"driver": 3}
    if mode == PROCESSES:  # both attempts' processes are gone, the hung one killed
        processes = render_processes(markers, hung)
        assert len(processes) == 2 and all(gone(pid) for pid in processes)
    assert summary.chunks_rendered == 3 and not ray.is_initialized()
    frames, expected = decoded_frames(output), decoded_frames(reference)
    assert len(frames) == len(expected) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))
    listing = sorted(path.name for path in output.parent.iterdir())
    assert not any(".partial" in name for name in listing), listing


def test_a_stage_hung_while_opening_in_the_driver_is_killed_too(
    clip: Path, tmp_path: Path, ray_forbidden: None,
) -> None:
    """The chunk's clock runs from when its worker takes it, so a stage that never finishes
    opening (its models) counts as a hung chunk as well."""
    stages = faulty_stages(hang_start_seconds=600, state_dir=str(tmp_path))
    started = time.monotonic()
    summary = render(config_for(clip, tmp_path / "out.mp4", *THREE_CHUNKS, *PROCESSES, *HANG),
                     run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    assert time.monotonic() - started < 60, "the job waited for the stage"
    [timeout] = summary.chunk_timeouts
    assert timeout["attempt"] == 1 and timeout["chunk"] in (0, 1), timeout
    assert summary.chunks_rendered == 3 and summary.chunks_by_actor == {"driver": 3}
    # The one that hung opening was killed (the retry took an open stage, or a fresh one).
    [hung] = [int(path.name.rsplit("-", 1)[1]) for path in tmp_path.glob("start-hung-pid-*")]
    assert gone(hung) and len(opened_stages(stages)) in (1, 2)


def test_a_chunk_hung_on_its_last_attempt_in_the_driver_stops_the_job(
    clip: Path, tmp_path: Path, ray_forbidden: None,
) -> None:
    output = tmp_path / "out.mp4"
    stages = faulty_stages(hang_chunks=[1], hang_seconds=600, state_dir=str(tmp_path))
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"^Chunk 1 \(frames 8-15\) failed after 1 attempts: "
                                          r"RenderError: chunk 1 \(frames 8-15\) ran \d+\.\d s, "
                                          r"past the hang limit of \d+\.\d s; 2 finished "
                                          r"chunk\(s\) are kept in .*: rerun the same command"):
        render(config_for(clip, output, *THREE_CHUNKS, *PROCESSES, *HANG,
                          "cluster.chunk_retries=0"),
               run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    assert time.monotonic() - started < 60, "the job waited for the hung chunk"
    assert not output.exists()
    # The rerun renders the hung chunk (its hook hangs the first attempt only), reusing the rest.
    summary = render(config_for(clip, output, *THREE_CHUNKS, *PROCESSES, *HANG), run_dir=tmp_path,
                     config_yaml="x: 1\n", stage_classes=stages)
    assert summary.chunks_rendered == 1 and summary.chunks_reused == 2


def test_the_render_cli_kills_a_hung_chunks_process_and_exits_at_once(
    clip: Path, tmp_path: Path,
) -> None:
    """The render CLI as users run it: a chunk hangs (10 minutes) on its first attempt; its
    process is killed, its retry renders, and the CLI exits 0 long before the hang would end."""
    markers = tmp_path / "markers"
    markers.mkdir()
    hooks = tmp_path / "hooks.json"
    hooks.write_text(json.dumps({"hang_chunks": [1], "hang_seconds": 600,
                                 "state_dir": str(tmp_path), "marker_dir": str(markers)}))
    output = tmp_path / "out" / "out.mp4"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tests.fault_cli", str(hooks), f"+video={clip}",
         f"+source={demo_source_image_path()}", f"output={output}", *THREE_CHUNKS, *PROCESSES,
         *HANG, "progress=false", "preview_frames=0", f"hydra.run.dir={tmp_path / 'h'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.monotonic() - started < 60
    run = run_json(output)
    assert run["chunks_rendered"] == 3 and [t["chunk"] for t in run["chunk_timeouts"]] == [1]
    assert len(decoded_frames(output)) == FRAMES
    processes = [pid for chunk, pid, _ in map(read_marker, os.listdir(markers)) if chunk == 1]
    assert len(processes) == 2 and all(gone(pid) for pid in processes)

# --- the first chunks beside Ray's start --------------------------------------------------------


def test_the_driver_plans_the_workers_and_threads_the_pool_plans_on_its_fresh_ray(
    no_ray: None,
) -> None:
    """`start_pool` plans from Ray's free resources; the driver's chunks, planned without Ray,
    must get the same threads (and, rendering every chunk, as many workers as actors), or its
    segments are not the ones actors encode."""
    for cpus in (2, 3):
        config = cluster_config(num_cpus=cpus)
        start_ray(config)
        try:
            plans = {chunks: plan_pool(config.cluster.swap, config.cluster,
                                       ray.available_resources(), kind="render",
                                       node_cpus=largest_node_cpus(), chunks=chunks)
                     for chunks in (1, 2, 3, 4, 5, 15, 16)}
        finally:
            stop_ray()
        for tasks in (2, 3, 5, 16):
            here = decide(config, tasks=tasks)
            assert here is not None
            assert (here.workers, here.threads) == (plans[tasks].actors, plans[tasks].threads
                                                    ), (cpus, tasks)
            first = decide(cluster_config(num_cpus=cpus, inline_max_cpus=0), tasks=tasks)
            assert first == beside(threads=plans[tasks - 1].threads), (cpus, tasks)


@pytest.mark.ray
def test_the_first_chunk_renders_beside_rays_start_into_the_same_file(
    clip: Path, tmp_path: Path, no_ray: None,
) -> None:
    here = tmp_path / "beside.mp4"
    summary = render(config_for(clip, here, *THREE_CHUNKS, *BESIDE),
                     run_dir=tmp_path, config_yaml="x: 1\n")
    assert summary.chunks == 3 and summary.chunks_rendered == 3
    # The driver renders from the first chunk until the pool is ready (on a clip this short,
    # often every chunk): each chunk once, somewhere.
    assert summary.chunks_by_actor["driver"] >= 1
    assert sum(summary.chunks_by_actor.values()) == 3
    assert BESIDE_RAY_NOTE in summary.notes and summary.actors["render"] == 2
    assert not ray.is_initialized()
    assert not [t for t in threading.enumerate() if t.name == "fusionray-driver-chunk"]

    on_actors = tmp_path / "actors.mp4"
    summary = render(config_for(clip, on_actors, *THREE_CHUNKS, *BESIDE,
                                "cluster.inline=false"), run_dir=tmp_path, config_yaml="x: 1\n")
    assert "driver" not in summary.chunks_by_actor and BESIDE_RAY_NOTE not in summary.notes
    assert run_json(here)["actor_threads"] == run_json(on_actors)["actor_threads"]
    assert here.read_bytes() == on_actors.read_bytes()


@pytest.mark.ray
def test_the_pool_takes_every_chunk_the_driver_has_not_started_when_it_is_ready(
    clip: Path, tmp_path: Path, no_ray: None,
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    # Chunk 0 takes the driver 6 s: Ray and the pool are ready long before, and take 1 and 2.
    stages = faulty_stages(hang_chunks=[0], hang_seconds=6.0, state_dir=str(tmp_path),
                           marker_dir=str(markers))
    summary = render(config_for(clip, tmp_path / "out.mp4", *THREE_CHUNKS, *BESIDE),
                     run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    assert summary.chunks_by_actor["driver"] == 1 and summary.chunks_rendered == 3
    pids = {chunk: pid for chunk, pid, _ in map(read_marker, os.listdir(markers))}
    assert sorted(pids) == [0, 1, 2] and pids[0] == os.getpid()  # the driver's one worker
    assert os.getpid() not in (pids[1], pids[2])  # on the pool's actors
    assert not ray.is_initialized()


@pytest.mark.ray
def test_a_failed_first_attempt_beside_ray_is_retried_on_the_pool(
    clip: Path, tmp_path: Path, no_ray: None,
) -> None:
    reference = tmp_path / "reference.mp4"
    render(config_for(clip, reference, *THREE_CHUNKS, "quality=lossless", "cluster.inline=false"),
           run_dir=tmp_path, config_yaml="x: 1\n")
    output = tmp_path / "out.mp4"
    stages = faulty_stages(flaky_chunks=[0], state_dir=str(tmp_path))
    summary = render(config_for(clip, output, *THREE_CHUNKS, *BESIDE, "quality=lossless"),
                     run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    assert summary.chunk_failures == [
        "chunk 0 (frames 0-7) attempt 1: RuntimeError: test hook: chunk 0 fails once"]
    assert summary.chunks_rendered == 3 and not ray.is_initialized()
    frames, expected = decoded_frames(output), decoded_frames(reference)
    assert len(frames) == len(expected) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupt_while_ray_starts_beside_the_drivers_chunk_exits_130_and_leaves_nothing(
    long_clip: Path, tmp_path: Path, sig: signal.Signals,
) -> None:
    """The render CLI as users run it: Ctrl-C or SIGTERM lands while the main thread starts
    Ray and the driver's thread renders chunk 0. The chunk stops at its next frame and its
    thread is joined, so the process exits 130 (no abort from native code still running at
    exit). A SIGTERM meets Ray's own handler inside `ray.init` and reaches the CLI's once Ray
    is up (`fusionray.jobs.ray_session._init_keeping_sigterm`)."""
    marker = interrupt_mid_chunk(
        long_clip, tmp_path, sig, settle_seconds=0.5,
        extra=("chunk.frames=50", "chunk.keyframe_aligned=false", *BESIDE))
    assert marker.startswith("chunk-0-pid-")  # the driver's: the process the signal went to


def test_a_cancelled_stage_stops_before_its_first_frame_and_joins_its_steps(
    clip: Path, tmp_path: Path,
) -> None:
    config = config_for(clip, tmp_path / "out.mp4", "cluster.num_cpus=2")
    info = probe_video(clip)
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    [chunk] = plan_video_chunks(info, config.chunk)
    for threads in (1, 2):  # steps chained in this thread, or on threads of their own
        stage = RenderStage(config, threads=threads)
        before = threading.active_count()
        stage.cancel()
        with pytest.raises(ChunkCancelled, match="Chunk 0 cancelled"):
            stage(info, chunk, source)
        assert threading.active_count() == before
