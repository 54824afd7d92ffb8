"""Faults during a render, with real Ray processes on this machine: a killed actor, a removed
node, an interrupted or killed driver, a chunk that always fails, two jobs on one output, the
output folder removed, the disk full. Each run is compared with a fault-free run of the same
config, losslessly encoded, so "the same output" means identical decoded frames.

Faults are made to land mid-job by the render stage of `tests.fault_stages` (handed to
`render(..., stage_classes=...)`, or to a separate driver process through `tests.fault_cli`):
it can slow frames down, fail or hang given chunks, and drop a marker file naming the worker's
pid. Production code holds no test hook.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from fusionray.errors import OutputError, RenderError
from fusionray.jobs.lock import lock_path_for
from fusionray.jobs.manifest import MANIFEST_NAME, Manifest
from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.media.demo import demo_source_image_path
from fusionray.report.summary import RunSummary
from tests.clips import write_face_clip
from tests.fault_stages import faulty_stages, read_marker
from tests.test_render import compose_config, decoded_frames

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 30
CHUNK = 5
CHUNKS = FRAMES // CHUNK
# Exactly 5 frames a chunk (not on keyframes): the faults below name chunks by their frames.
COMMON = ("chunk.frames=5", "chunk.keyframe_aligned=false", "chunk.overlap=4",
          "quality=lossless", "progress=false", "preview_frames=0", "cluster.chunk_retries=1")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def clip(workdir: Path) -> Path:
    return write_face_clip(workdir / "faces.mp4", frames=FRAMES)


@pytest.fixture(scope="module")
def hooks(workdir: Path):
    """The module's Ray (two CPUs); the name stays for the tests that share it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield workdir
    ray.shutdown()


def config_for(clip: Path, output: Path, *extra: str):
    return compose_config(f"+video={clip}", f"+source={demo_source_image_path()}",
                          f"output={output}", *COMMON, *extra)


def reference_output(workdir: Path) -> Path:
    return workdir / "reference" / "out.mp4"


@pytest.fixture(scope="module")
def reference(hooks: Path, clip: Path, workdir: Path) -> list[np.ndarray]:
    """Decoded frames of a fault-free run."""
    output = reference_output(workdir)
    summary = render(config_for(clip, output), run_dir=workdir, config_yaml="x: 1\n")
    assert summary.frames_with_faces >= FRAMES - 2 and summary.chunks == CHUNKS
    return decoded_frames(output)


def assert_same_frames(output: Path, reference: list[np.ndarray]) -> None:
    frames = decoded_frames(output)
    assert len(frames) == len(reference)
    for index, (a, b) in enumerate(zip(frames, reference, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs"


def wait_for(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def manifest_rows(work: Path) -> int:
    """Chunks recorded in the work folder of a job that may be running right now."""
    return Manifest.count_recorded(work)


@pytest.mark.ray
def test_killed_actor_is_restarted_and_its_chunk_retried(
    hooks: Path, clip: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    stages = faulty_stages(frame_delay_seconds=0.05, marker_dir=str(markers))
    killed: list[int] = []

    def kill_first_swap_worker() -> None:
        # Chunk 1 (not 0): the job is well under way when its worker dies.
        wait_for(lambda: any(m.name.startswith("chunk-1-") for m in markers.iterdir()),
                 what="chunk 1 to start")
        marker = next(m for m in markers.iterdir() if m.name.startswith("chunk-1-"))
        _, pid, _ = read_marker(marker.name)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_first_swap_worker, daemon=True)
    killer.start()
    output = tmp_path / "out.mp4"
    summary = render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n",
                     stage_classes=stages)
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    assert any(f.startswith("chunk 1 (frames 5-9) attempt 1") for f in summary.chunk_failures)
    assert summary.chunks_rendered == CHUNKS
    assert_same_frames(output, reference)


def kill_when_chunk_starts(markers: Path, index: int, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs the worker process that starts chunk `index`."""
    def kill() -> None:
        prefix = f"chunk-{index}-"
        wait_for(lambda: any(m.name.startswith(prefix) for m in markers.iterdir()),
                 what=f"chunk {index} to start")
        marker = next(m for m in markers.iterdir() if m.name.startswith(prefix))
        _, pid, _ = read_marker(marker.name)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.ray
def test_an_actor_gone_for_good_leaves_the_pool_and_its_chunks_finish_elsewhere(
    hooks: Path, clip: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    """Two render actors without restarts; one is killed mid-job. Its chunks move to the
    live actor (or its replacement) and never return to the dead one."""
    markers = tmp_path / "markers"
    markers.mkdir()
    stages = faulty_stages(frame_delay_seconds=0.05, marker_dir=str(markers))
    killed: list[int] = []
    killer = kill_when_chunk_starts(markers, 1, killed)
    output = tmp_path / "out.mp4"
    summary = render(config_for(clip, output, "cluster.swap.replicas=2",
                                "cluster.swap.max_restarts=0"),
                     run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    gone = [event for event in summary.pool_events if "gone for good" in event]
    assert len(gone) == 1, summary.pool_events
    assert any(f.startswith("chunk 1 (frames 5-9) attempt 1") for f in summary.chunk_failures)
    # Every failure is a first attempt: no retry was sent to the dead actor again.
    assert summary.chunk_failures and all("attempt 1:" in f for f in summary.chunk_failures)
    assert sum(summary.chunks_by_actor.values()) == CHUNKS == summary.chunks_rendered
    assert_same_frames(output, reference)


@pytest.mark.ray
def test_a_hung_chunk_is_cancelled_its_actor_restarted_and_the_chunk_retried(
    hooks: Path, clip: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    stages = faulty_stages(hang_chunks=[2], hang_seconds=600, state_dir=str(tmp_path))
    output = tmp_path / "out.mp4"
    started = time.monotonic()
    summary = render(config_for(clip, output, "cluster.hang_floor_seconds=5",
                                "cluster.hang_factor=4"),
                     run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
    assert time.monotonic() - started < 300, "the hang was not cut short"
    hung = [t for t in summary.chunk_timeouts if t["chunk"] == 2]
    assert len(hung) == 1 and hung[0]["attempt"] == 1, summary.chunk_timeouts
    assert hung[0]["seconds"] >= hung[0]["limit_seconds"] >= 5
    assert any("restarted" in event and "chunk 2" in event for event in summary.pool_events)
    run = json.loads(OutputPaths.for_video(output).run_json.read_text())
    assert run["chunk_timeouts"] == summary.chunk_timeouts
    assert summary.chunks_rendered == CHUNKS
    assert_same_frames(output, reference)


@pytest.mark.ray
def test_chunk_failing_every_retry_stops_naming_it_and_a_rerun_resumes(
    hooks: Path, clip: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    output = tmp_path / "out.mp4"
    paths = OutputPaths.for_video(output)
    stages = faulty_stages(fail_chunks=[3])
    with pytest.raises(RenderError, match=r"Chunk 3 \(frames 15-19\) failed after 2 "
                                          r"attempts: .*test hook: chunk 3 fails"):
        render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n",
            stage_classes=stages)
    # Invariant 4: nothing at the output path, no leftovers but the kept work folder.
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths.work.name]
    finished = manifest_rows(paths.work)
    assert 1 <= finished < CHUNKS

    # A finished segment that no longer matches its checksum is not trusted.
    segments = sorted(paths.work.glob("*.segment"))
    segments[0].write_bytes(segments[0].read_bytes()[:-10] + b"0123456789")

    summary = render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n")
    assert summary.chunks_reused == finished - 1
    assert summary.chunks_rendered == CHUNKS - finished + 1
    assert any("failed verification" in note for note in summary.notes)
    assert not paths.work.exists()
    assert_same_frames(output, reference)


@pytest.mark.ray
def test_an_actor_that_cannot_start_is_one_line(hooks: Path, clip: Path, tmp_path: Path) -> None:
    """A swap actor whose constructor raises (a GPU provider that fails on one node, a model
    missing from a node's cache): the job stops with the constructor's own message."""
    output = tmp_path / "out.mp4"
    stages = faulty_stages(fail_start=True)
    with pytest.raises(RenderError) as caught:
        render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n",
            stage_classes=stages)
    message = str(caught.value)
    assert message == ("A render actor could not start: test hook: the render stage cannot "
                       "start"), message
    assert list(tmp_path.iterdir()) == []  # no output, no work folder, no lock


@pytest.mark.ray
def test_passthrough_writes_the_failed_chunk_unswapped(
    hooks: Path, clip: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    output = tmp_path / "out.mp4"
    stages = faulty_stages(fail_chunks=[2])
    summary = render(config_for(clip, output, "on_chunk_error=passthrough"),
                     run_dir=tmp_path, config_yaml="x: 1\n",
                         stage_classes=stages)
    assert summary.passthrough_chunks == [{"chunk": 2, "start": 10, "stop": 15}]
    assert len(summary.chunk_failures) == 2  # both attempts are on record
    run = json.loads(OutputPaths.for_video(output).run_json.read_text())
    assert run["passthrough_chunks"] == summary.passthrough_chunks
    assert any("unswapped" in note for note in run["notes"])
    frames, original = decoded_frames(output), decoded_frames(clip)
    for index in range(FRAMES):
        expected = original[index] if 10 <= index < 15 else reference[index]
        assert np.array_equal(frames[index], expected), f"frame {index}"


@pytest.mark.ray
def test_a_changed_config_never_reuses_stale_segments(
    hooks: Path, clip: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.mp4"
    work = OutputPaths.for_video(output).work
    stages = faulty_stages(fail_chunks=[4])
    with pytest.raises(RenderError):
        render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n",
            stage_classes=stages)
    assert manifest_rows(work) >= 1
    # The failed job gave the shared Ray back whole: the next job sizes its pool from it all.
    assert ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"]
    summary = render(config_for(clip, output, "swapper.mask_blur=0.2"), run_dir=tmp_path,
                     config_yaml="x: 1\n")
    assert summary.chunks_reused == 0 and summary.chunks_rendered == CHUNKS
    assert any("different config" in note and "started clean" in note for note in summary.notes)


@pytest.mark.ray
def test_second_job_on_the_same_output_refuses_and_stale_locks_are_taken_over(
    hooks: Path, clip: Path, tmp_path: Path
) -> None:
    import socket

    output = tmp_path / "out.mp4"
    lock = lock_path_for(output)
    # A live job (this test process) holds the output.
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": time.time()}))
    with pytest.raises(OutputError, match=rf"being rendered by another fusionray job \(pid "
                                          rf"{os.getpid()} on host"):
        render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n")
    assert not output.exists() and lock.exists()
    # The same lock left by a process that is gone is stale.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    summary = render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n")
    assert any("stale lock" in note and str(gone.pid) in note for note in summary.notes)
    assert output.exists() and not lock.exists()


@pytest.mark.ray
def test_output_folder_removed_mid_job_is_a_clear_error(
    hooks: Path, clip: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "renders"
    output = folder / "out.mp4"
    work = OutputPaths.for_video(output).work
    # 1 s a chunk: four chunks are still to come when the first is recorded, so the folder
    # goes mid-job even on a loaded machine (at 0.25 s a chunk, a CI run once saw every chunk
    # written first and the error come from assembly instead).
    stages = faulty_stages(frame_delay_seconds=0.2)
    def remove_after_a_chunk() -> None:
        wait_for(lambda: manifest_rows(work) >= 1, what="a first finished chunk")
        shutil.rmtree(folder)

    remover = threading.Thread(daemon=True, target=remove_after_a_chunk)
    remover.start()
    with pytest.raises(RenderError, match=r"Cannot write the segment of chunk \d+ \(frames "
                                          r"\d+-\d+\) to .*the work folder disappeared"):
        render(config_for(clip, output), run_dir=tmp_path, config_yaml="x: 1\n",
            stage_classes=stages)
    remover.join(timeout=5)
    assert not output.exists()


# --- the driver as a user runs it: a separate process -----------------------------------------

def cli_command(clip: Path, output: Path, hydra_dir: Path, hooks: Path | None = None,
                *extra: str) -> list[str]:
    """The render CLI on two CPUs (every chunk in the driver, unless `extra` says
    `cluster.inline=false`); with `hooks`, through `tests.fault_cli` (faults from that JSON
    file)."""
    entry = ["tests.fault_cli", str(hooks)] if hooks else ["fusionray.jobs.render"]
    return [sys.executable, "-m", *entry, f"+video={clip}",
            f"+source={demo_source_image_path()}", f"output={output}", *COMMON,
            "cluster.num_cpus=2", f"hydra.run.dir={hydra_dir}", *extra]


def kill_group(process: subprocess.Popen[str]) -> None:
    """Remove whatever the test's own driver left behind (its session's processes)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["sigint", "sigterm", "sigkill"])
@pytest.mark.parametrize("where", [(), ("cluster.inline=false",)], ids=["driver", "actors"])
def test_interrupted_driver_resumes_from_the_manifest(
    hooks: Path, clip: Path, reference: list[np.ndarray], workdir: Path, tmp_path: Path,
    sig: signal.Signals, where: tuple[str, ...],
) -> None:
    """The job's chunks rendered by the driver's own workers (a 2-CPU machine), or by Ray's
    actors; the rerun renders its chunks in the driver either way."""
    output = tmp_path / "out.mp4"
    work = OutputPaths.for_video(output).work
    slow_hooks = tmp_path / "slow.json"
    # 0.3 s a frame keeps the job running for tens of seconds after the second chunk lands, so
    # the signal arrives mid-job even when this process is starved of CPU by the Ray workers
    # (with 0.1 s, a CI run once saw the job finish before the signal).
    slow_hooks.write_text(json.dumps({"frame_delay_seconds": 0.3}))
    command = cli_command(clip, output, tmp_path / "hydra", slow_hooks, *where)
    driver = subprocess.Popen(command, cwd=ROOT, text=True, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: manifest_rows(work) >= 2 or driver.poll() is not None,
                 what="two finished chunks")
        assert driver.poll() is None, driver.communicate()[1][-2000:]
        os.kill(driver.pid, sig)
        _, stderr = driver.communicate(timeout=120)
    finally:
        kill_group(driver)
    finished = manifest_rows(work)
    assert 2 <= finished < CHUNKS, (
        f"the job must stop part-way: {finished} of {CHUNKS} chunks recorded, exit "
        f"{driver.returncode}, stderr: {stderr[-1500:]}")
    assert not output.exists()
    if sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM: `ray job stop`, a scheduler
        assert driver.returncode == 130, stderr[-2000:]
        assert f"finished chunk(s) of {CHUNKS} are kept in '{work}'" in stderr
        assert not lock_path_for(output).exists()
    else:
        assert lock_path_for(output).exists()  # left behind by the killed driver

    rerun = subprocess.run(cli_command(clip, output, tmp_path / "hydra"), cwd=ROOT, text=True,
                           capture_output=True, timeout=300, start_new_session=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    run = json.loads(OutputPaths.for_video(output).run_json.read_text())
    assert run["chunks_reused"] == finished
    assert run["chunks_rendered"] == CHUNKS - finished
    if sig == signal.SIGKILL:
        assert any("stale lock" in note for note in run["notes"])
    assert not work.exists() and not lock_path_for(output).exists()
    assert_same_frames(output, reference)
    # The reused chunks' face tracks survive the resume: every chunk contributes rows.
    reference_faces = OutputPaths.for_video(reference_output(workdir)).faces
    assert sorted(set(pq.read_table(OutputPaths.for_video(output).faces)["frame"].to_pylist())) \
        == sorted(set(pq.read_table(reference_faces)["frame"].to_pylist()))


@pytest.mark.ray
@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_keeps_the_work_folder(
    clip: Path, tmp_path: Path
) -> None:
    """A real full disk: a small tmpfs in a private mount namespace (needs `unshare`)."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"],
            capture_output=True).returncode != 0:
        pytest.skip("needs unshare with user and mount namespaces to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    output = disk / "out.mp4"
    work = OutputPaths.for_video(output).work
    command = " ".join(f"'{part}'" for part in cli_command(clip, output, tmp_path / "hydra"))
    # Room for the segments (about 2.4 MB in all) but not for a second copy in the output.
    script = (f"mount -t tmpfs -o size=3m tmpfs '{disk}' && {command}; echo rc=$?; "
              f"ls -a '{disk}'; ls '{work}'")
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                             script], cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert "rc=1" in result.stdout, result.stdout + result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("fusionray: error")]
    assert len(error) == 1 and "No space left on device" in error[0], result.stderr[-3000:]
    assert "rerun the same command to resume" in error[0]
    listing = result.stdout.split("rc=1", 1)[1].split()
    assert "out.mp4" not in listing and not any(".partial" in name for name in listing)
    assert work.name in listing and MANIFEST_NAME in listing


@pytest.mark.ray
@pytest.mark.slow
def test_node_removed_mid_job_finishes_on_the_remaining_nodes(
    hooks: Path, clip: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    import psutil
    from ray.cluster_utils import Cluster

    ray.shutdown()  # this test needs its own cluster; the module's Ray comes back after
    markers = tmp_path / "markers"
    markers.mkdir()
    stages = faulty_stages(frame_delay_seconds=0.1, marker_dir=str(markers))
    # Head 1 CPU, two workers of 2: the two render actors still fit after losing one worker
    # node, so Ray can restart its actors elsewhere.
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2), cluster.add_node(num_cpus=2)]
    removed: list[str] = []

    def remove_a_busy_worker_node() -> None:
        raylets = {node.all_processes["raylet"][0].process.pid: node for node in workers}
        deadline = time.monotonic() + 120
        while not removed and time.monotonic() < deadline:
            for marker in list(markers.iterdir()):
                chunk, pid, parent = read_marker(marker.name)
                if parent in raylets and chunk >= 1 and psutil.pid_exists(pid):
                    cluster.remove_node(raylets[parent])
                    removed.append(marker.name)
                    return
            time.sleep(0.05)

    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        remover = threading.Thread(target=remove_a_busy_worker_node, daemon=True)
        remover.start()
        output = tmp_path / "out.mp4"
        summary = render(config_for(clip, output, "cluster.swap.replicas=2"),
                         run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
        remover.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.WARNING)
    assert removed, "no chunk ran on a worker node"
    assert summary.chunk_failures, "the removed node's chunks must have been retried"
    assert_same_frames(output, reference)


@pytest.mark.ray
@pytest.mark.slow
def test_an_elastic_pool_grows_onto_a_node_that_joins_mid_job(
    hooks: Path, clip: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    from ray.cluster_utils import Cluster

    ray.shutdown()  # this test needs its own cluster; the module's Ray comes back after
    markers = tmp_path / "markers"
    markers.mkdir()
    stages = faulty_stages(frame_delay_seconds=0.3, marker_dir=str(markers))
    # One render actor fits the head; the pool's target (3 chunks in flight) waits for more.
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    joined: list[str] = []
    outcome: dict[str, object] = {}

    def run_the_job() -> None:  # in a thread: Ray adds nodes from the main thread only
        try:
            outcome["summary"] = render(
                config_for(clip, tmp_path / "out.mp4", "cluster.elastic=true",
                           "cluster.max_chunks_in_flight=3", "cluster.resource_wait_seconds=60"),
                run_dir=tmp_path, config_yaml="x: 1\n", stage_classes=stages)
        except BaseException as error:  # re-raised below, in the test's own thread
            outcome["error"] = error

    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        job = threading.Thread(target=run_the_job, daemon=True)
        job.start()
        wait_for(lambda: any(markers.iterdir()) or not job.is_alive(),
                 what="a first chunk to start")
        joined.append(cluster.add_node(num_cpus=2).node_id)
        job.join(timeout=300)
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.WARNING)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    summary = outcome["summary"]
    assert isinstance(summary, RunSummary)
    output = tmp_path / "out.mp4"
    assert joined, "no node joined"
    on_new_node = [event.split()[0] for event in summary.pool_events
                   if event.endswith(f"started on node {joined[0]}")]
    assert on_new_node, summary.pool_events
    assert sum(summary.chunks_by_actor.get(name, 0) for name in on_new_node) >= 1
    assert summary.nodes == 2
    assert_same_frames(output, reference)


@pytest.mark.ray
def test_shot_selection_runs_a_detection_pre_pass_and_the_render_does_not_detect_again(
    hooks: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`selection.mode=one` needs the shot's detections first: a detection pool runs over every
    chunk and each render call gets its chunk's detections. The output equals a render whose
    actors detect for themselves (same detector, same read ranges)."""
    import fusionray.jobs.pipeline as pipeline

    output = tmp_path / "prepass.mp4"
    summary = render(config_for(clip, output, "selection.mode=one"), run_dir=tmp_path,
                     config_yaml="x: 1\n")
    assert summary.actors["detect"] >= 1 and summary.actors["render"] >= 1
    assert summary.stage_seconds["prepass_detect"] > 0
    # The render's detect step only looks the pre-pass's faces up (no detector is opened):
    # a tiny fraction of the pre-pass's detection time.
    assert summary.stage_seconds.get("detect", 0.0) < 0.1 * summary.stage_seconds["prepass_detect"]
    # The pre-pass and the render each decode every chunk's read range once, from the keyframe
    # at or before it (the plan is not keyframe-aligned here).
    from fusionray.media.plan import decoded_frames as frames_a_plan_decodes
    from fusionray.media.plan import plan_chunks
    from fusionray.media.probe import probe_video

    keyframes = probe_video(clip).keyframe_indices
    chunks = plan_chunks(FRAMES, chunk_frames=CHUNK, overlap=4)
    assert summary.frames_decoded == 2 * frames_a_plan_decodes(chunks, keyframes)

    monkeypatch.setattr(pipeline, "needs_shot_pass", lambda selection: False)
    direct = tmp_path / "direct.mp4"
    without = render(config_for(clip, direct, "selection.mode=one"), run_dir=tmp_path,
                     config_yaml="x: 1\n")
    assert without.actors["detect"] == 0
    assert_same_frames(output, decoded_frames(direct))
