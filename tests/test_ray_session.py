"""Starting and stopping Ray: a job's own local Ray keeps the application's SIGTERM handler
(and a SIGTERM that arrives while Ray starts reaches it) and polls its object store every
50 ms; it is stopped whole (its autoscaler monitor killed at once, not waited out); a joined
cluster is only disconnected from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import FrameType, SimpleNamespace
from typing import Any

import pytest
import ray

from fusionray.config import ClusterConfig, RenderConfig
from fusionray.jobs import ray_session
from fusionray.jobs.ray_session import (
    LOCAL_SYSTEM_CONFIG,
    failure_reason,
    start_ray,
    stop_ray,
)

LOCAL = RenderConfig(video="demo", cluster=ClusterConfig(num_cpus=1))


def node_processes() -> dict[str, subprocess.Popen]:
    """The processes this driver's Ray node started, by Ray's process type."""
    # Ray's private node object (its module types it as None).
    node: Any = ray._private.worker._global_node
    return {kind: infos[0].process for kind, infos in node.all_processes.items()}


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def _unwind(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.mark.ray
@pytest.mark.parametrize("installed", [_unwind, signal.SIG_DFL], ids=["the CLI's", "none"])
def test_starting_ray_keeps_a_sigterm_handler_the_application_installed(
        restore_sigterm: None, installed: Callable[[int, FrameType | None], None] | int) -> None:
    if ray.is_initialized():
        ray.shutdown()
    signal.signal(signal.SIGTERM, installed)
    try:
        assert start_ray(LOCAL)
        handler = signal.getsignal(signal.SIGTERM)
    finally:
        stop_ray()
    if installed is _unwind:
        # ray.init's own handler (sys.exit at once) replaced this one: a SIGTERM mid-job then
        # ended the CLI with exit 1, no message and no unwinding.
        assert handler is _unwind
    else:
        assert callable(handler) and handler is not _unwind  # Ray's: exit, then its atexit


class _SwallowsWhatItsFinalizerRaises:
    """Sends SIGTERM from its finalizer, where Python prints an exception and goes on."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecode for the handler to run in, here
            pass


# The swallowed exit is reported as unraisable: that is the case under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("where", ["swallowed", "raised", "none"])
def test_a_sigterm_while_ray_starts_reaches_the_applications_handler(
        restore_sigterm: None, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Ray's own handler (`sys.exit(15)`) is live during `ray.init`; a SIGTERM then reaches
    the application's handler once `ray.init` returns, whether Ray's exit propagated or was
    swallowed where Python ignores exceptions, and no signal means no call."""
    def fake_init(**options: Any) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as Ray does
        if where == "swallowed":
            _SwallowsWhatItsFinalizerRaises()  # collected at once
        elif where == "raised":
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass

    monkeypatch.setattr(ray_session, "ray", SimpleNamespace(init=fake_init,
                                                            is_initialized=lambda: False))
    signal.signal(signal.SIGTERM, _unwind)
    if where == "none":
        ray_session._init_keeping_sigterm()
    else:
        with pytest.raises(KeyboardInterrupt):
            ray_session._init_keeping_sigterm()
    assert signal.getsignal(signal.SIGTERM) is _unwind
    assert signal.set_wakeup_fd(-1) == -1  # the call's wakeup fd is gone again


@pytest.mark.ray
def test_a_jobs_own_ray_polls_its_object_store_every_50_ms() -> None:
    if ray.is_initialized():
        ray.shutdown()
    assert start_ray(LOCAL)
    try:
        applied = ray._private.state.state.get_system_config()  # what the GCS hands its nodes
    finally:
        stop_ray()
    for key, value in LOCAL_SYSTEM_CONFIG.items():
        assert applied[key] == value, key
    # The same budget as Ray's default (10 attempts, 1000 ms apart).
    assert (LOCAL_SYSTEM_CONFIG["raylet_client_num_connect_attempts"]
            * LOCAL_SYSTEM_CONFIG["raylet_client_connect_timeout_milliseconds"]) == 10 * 1000


@pytest.mark.ray
def test_stopping_a_jobs_own_ray_stops_every_process_it_started(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if ray.is_initialized():
        ray.shutdown()
    assert start_ray(LOCAL)
    processes = node_processes()
    assert "monitor" in processes and "raylet" in processes and "gcs_server" in processes
    # Ray's private node object (its module types it as None).
    node: Any = ray._private.worker._global_node
    kills: list[tuple[str, bool]] = []
    kill = node._kill_process_impl

    def record(kind: str, **options: bool) -> None:
        kills.append((kind, options.get("allow_graceful", False)))
        kill(kind, **options)

    monkeypatch.setattr(node, "_kill_process_impl", record)
    stop_ray()
    # The monitor first and outright: Ray's own order (GCS first, then a SIGTERM and a 1 s
    # grace for the monitor, which then reports to the gone GCS) waited the whole grace.
    assert kills[0] == ("monitor", False)
    assert ("gcs_server", True) in kills
    assert not ray.is_initialized()
    for kind, process in processes.items():
        assert process.wait(timeout=10) is not None, kind
    # The monitor was killed outright (a SIGTERM would have had it wait for the gone GCS).
    assert processes["monitor"].returncode == -signal.SIGKILL


@pytest.mark.ray
def test_stopping_a_joined_cluster_leaves_it_running() -> None:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        head_node: Any = cluster.head_node  # a Node once started; the class types it as None
        head = {kind: infos[0].process for kind, infos in head_node.all_processes.items()}
        config = RenderConfig(video="demo", cluster=ClusterConfig(address=cluster.address))
        assert start_ray(config)
        assert node_processes() == {}  # a driver that joined owns no Ray process
        stop_ray()
        assert not ray.is_initialized()
        assert all(process.poll() is None for process in head.values())
    finally:
        cluster.shutdown()


def test_a_failure_ray_wraps_is_described_by_the_actors_own_exception() -> None:
    wrapped = ray.exceptions.RayTaskError("render", "Traceback (most recent call last): ...",
                                          ValueError("bad frame\nsecond line"))
    assert failure_reason(wrapped) == "ValueError: bad frame"
    assert failure_reason(RuntimeError("\x1b[31mred\x1b[0m")) == "RuntimeError: red"
    assert failure_reason(KeyError()) == "KeyError"
