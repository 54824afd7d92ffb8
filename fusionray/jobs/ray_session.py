"""Joining Ray: the configured cluster, or a local Ray of this job's own; and the one-line
reasons Ray's errors reduce to."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from fusionray.config import RenderConfig
from fusionray.errors import ClusterError
from fusionray.lazy import imported_ray_attribute, ray  # Ray imported on first use

_CLUSTER_HINT = "(start one with `ray start --head`, or drop cluster.address to run locally)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

LOCAL_SYSTEM_CONFIG: Mapping[str, int] = MappingProxyType({
    # The raylet connects to its own object store, started a moment earlier on another thread;
    # a connection refused is retried after this many milliseconds (Ray's default: 1000, ten
    # times). The store is usually up within a few milliseconds, so about one start in two
    # waited out a whole second (ray.init 2.6 or 3.6 s on the 2-core machine). Same 10 s
    # budget, polled every 50 ms.
    "raylet_client_connect_timeout_milliseconds": 50,
    "raylet_client_num_connect_attempts": 200,
})
"""Ray system settings for a local Ray of the job's own (a joined cluster keeps its own).
Passed as a copy: `ray.init` adds its own entries to the dict it is given."""


def check_reachable(address: str, timeout_seconds: float = 10.0) -> None:
    """Fail fast when nothing accepts connections at a Ray address: an explicit `host:port`,
    or the one `auto` finds (`found_address`).

    `ray.init` retries an unreachable GCS for minutes before it gives up; a render node told
    the wrong address should hear so at once, and so should one where `auto` finds the
    address a crashed `ray start` head left behind.

    Raises:
        ClusterError: the address names a host and port that refuse or do not answer.
    """
    target = found_address(address).removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_seconds):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterError(
            f"Cannot join the Ray cluster at {address!r}: nothing answers at {host}:{port} "
            f"({reason}) {_CLUSTER_HINT}"
        ) from None


def found_address(address: str) -> str:
    """The `host:port` Ray's `auto` stands for, found as `ray.init` finds it (a running GCS by
    process scan, else the last `ray start` head recorded in Ray's temp folder, which outlives
    a head that crashed); any other address as it is, and `auto` too where Ray finds nothing
    (`ray.init` then says so at once)."""
    if address != "auto":
        return address
    find = getattr(getattr(ray._private, "services", None),
                   "get_ray_address_from_environment", None)
    if find is None:  # another Ray release: left to ray.init
        return address
    try:
        return str(find(address, None))
    except (ConnectionError, TypeError, ValueError):
        return address


def join_address(config: RenderConfig) -> str | None:
    """The cluster a job joins (`cluster.address`, else `RAY_ADDRESS`); None: a local Ray."""
    return config.cluster.address or os.environ.get("RAY_ADDRESS")


def local_cpus(config: RenderConfig) -> int:
    """The CPUs of the local Ray a job starts (`start_ray`): `cluster.num_cpus`, or this
    machine's. The driver plans its own chunks over the same count (`fusionray.jobs.inline`),
    so they get the threads the pool's actors would."""
    return config.cluster.num_cpus or os.cpu_count() or 1


def start_ray(config: RenderConfig) -> bool:
    """Join the configured cluster, or start a local Ray sized to this machine.

    Returns:
        True when this call started Ray (and so the job should shut it down).
    """
    if ray.is_initialized():
        return False
    address = join_address(config)
    if address:
        check_reachable(address)
        try:
            _init_keeping_sigterm(address=address, include_dashboard=False,
                                  logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ClusterError(
                f"Cannot join the Ray cluster at {address!r}: {first_line} {_CLUSTER_HINT}"
            ) from None
    else:
        # address="local": a Ray of this job's own even where another job's Ray or a
        # `ray start` node already runs on this machine (plain ray.init() would join that one,
        # or refuse because num_cpus was given).
        _init_keeping_sigterm(address="local",
                              num_cpus=local_cpus(config),
                              num_gpus=config.cluster.num_gpus, include_dashboard=False,
                              logging_level=logging.WARNING,
                              _system_config=dict(LOCAL_SYSTEM_CONFIG))
    return True


def _init_keeping_sigterm(**options: Any) -> None:
    """`ray.init(**options)`, leaving a SIGTERM handler the application installed in place,
    and acting on a SIGTERM that arrived while Ray started.

    A driver's `ray.init` replaces the process's SIGTERM handler with one that exits at once
    (`sys.exit(15)`). The render CLI's handler unwinds like Ctrl-C instead (the output's lock
    released, the work folder kept for a rerun, exit 130); without this, `ray job stop` or a
    scheduler's SIGTERM mid-job ended the driver with exit 1 and no message. Where nothing
    but the default was installed, Ray's handler stays.

    A SIGTERM during `ray.init` (2-4 s of Ray's start) meets Ray's handler, whose `SystemExit`
    is raised wherever the main thread is; inside some callbacks (an import lock's) Python
    only prints it and goes on, and the job ran to its end. The process's wakeup fd receives
    every signal's number whatever the handler does, so one is set for the call: a SIGTERM
    that arrived, swallowed or not, is handed to the application's handler once Ray is up
    (after Ray is shut down again where this call started it). An application's own wakeup
    fd is put back afterwards; it does not see the signals of the call.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        ray.init(**options)
        return
    reader, writer = socket.socketpair()
    try:
        reader.setblocking(False)
        writer.setblocking(False)
        earlier_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            ray.init(**options)
        except SystemExit as error:  # Ray's handler ran where its exit was not swallowed
            if error.code != signal.SIGTERM:
                raise
        finally:
            signal.set_wakeup_fd(earlier_fd)
            signal.signal(signal.SIGTERM, previous)
        arrived = _drain(reader)
    finally:
        reader.close()
        writer.close()
    if signal.SIGTERM in arrived:
        if ray.is_initialized():
            stop_ray()
        previous(signal.SIGTERM, None)


def _drain(reader: socket.socket) -> bytes:
    """Everything a non-blocking socket holds now."""
    received = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := reader.recv(4096):
            received += chunk
    return received


def stop_ray() -> None:
    """`ray.shutdown()`, without waiting out the autoscaler monitor of a Ray this process started.

    Ray's shutdown terminates the GCS before the monitor; the monitor's SIGTERM handler then
    tries to report its own end to the gone GCS, outlives its 1 s grace and is killed anyway:
    1.0 of the 1.4 s a local job spent shutting Ray down (2-core machine). A local Ray has no
    autoscaler to stop gracefully, so its monitor is killed first, outright. A joined cluster's
    processes are not this process's (its node holds none): only disconnected, as before.
    """
    node = getattr(ray._private.worker, "_global_node", None)
    kill_monitor = getattr(node, "kill_monitor", None)
    if kill_monitor is not None:
        # Already gone: the shutdown below finds nothing to wait for.
        with contextlib.suppress(OSError, RuntimeError):
            kill_monitor(check_alive=False)
    ray.shutdown()


def ray_session_name() -> str | None:
    """The connected Ray's session name (a new one each time a cluster starts)."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    return getattr(node, "session_name", None)


def actor_start_failure(error: ray.exceptions.RayActorError) -> str:
    """The reason an actor's constructor raised, as one line (the exception's own message,
    without Ray's traceback and colour codes)."""
    text = _ANSI.sub("", str(error))
    reasons = [line.strip() for line in text.splitlines()
               if line.strip() and not line[:1].isspace() and ": " in line]
    reason = reasons[-1] if reasons else type(error).__name__
    # "fusionray.errors.ModelError: Model ..." -> "Model ..."
    return re.sub(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): ", "", reason)


def failure_reason(error: BaseException) -> str:
    """One line on why a remote call failed: the actor's own exception when Ray wraps one."""
    cause = getattr(error, "cause", None)
    # Only Ray wraps: where it was never imported (a chunk that failed in the driver), or is
    # still being imported, there is nothing to unwrap, and asking `ray.exceptions` would
    # import it (about 0.25 s) for nothing.
    wrapper = getattr(imported_ray_attribute("exceptions"), "RayTaskError", None)
    if wrapper is not None and isinstance(error, wrapper) and isinstance(cause, BaseException):
        error = cause
    text = _ANSI.sub("", str(error)).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
