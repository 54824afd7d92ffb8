"""A render stage in a child process of the driver: what a Ray actor gives a chunk (a process of
its own), without Ray.

The driver renders a small machine's chunks itself (`fusionray.jobs.inline`). On threads of
one process its workers share the GIL: the render stage holds it about 40 % of the wall time
with two workers (py-spy `--gil`, 60 s clip, 2-core VM), and two workers on threads rendered
11 % slower than the same work in two processes (benchmarks/RESULTS.md, eleventh session). A
process also gives what an actor gives: a hung chunk's process is killed, and a native crash
takes down that process, not the job.

`StageProcess` is the driver's handle on one child: it starts it (the stage constructed there,
kept to its cores), renders chunks in it one at a time, stops a chunk at its next frame
(`cancel`: SIGTERM, which the child turns into `RenderStage.cancel`), kills it (`kill`), and
closes it. `StageHere` has the same interface for a stage on the worker's own thread.

The children are forked by multiprocessing's fork server, which imports the render stage's
modules once (`PRELOAD`) and never runs OpenCV: a child forked straight from the driver
inherits OpenCV's thread pool in a state it cannot leave (`cv2.setNumThreads(1)` in a child
forked after the parent had run `cv2.resize` on two threads never returned, measured), and a
spawned child imports everything again (0.6-0.9 s each; the 4 s clip lost 0.9 s). The server
starts early (`start_server`, from `fusionray.jobs.inline.start_render_processes_early`).
A child ignores SIGINT (Ctrl-C reaches the whole process group; the driver stops its children
itself) and dies with the server (`PR_SET_PDEATHSIG`), which ends with the driver, so a driver
killed outright leaves no render running.

Messages on the pipe: the child sends ("ready", None) or ("error", exception) once started;
then for each chunk the driver sends (job key, info or None, source or None, chunk), the
video's facts only the first time for each job, and the child answers ("ok", ChunkResult) or
("error", exception); None closes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

from fusionray.actors.pools import keep_to_cores
from fusionray.actors.stages import ChunkResult
from fusionray.errors import FusionrayError, RenderError, first_line
from fusionray.jobs.ray_session import failure_reason
from fusionray.types import Chunk

CLOSE_SECONDS = 10.0
"""How long a child may take to stop (a cancelled chunk reaching its next frame, its step
threads joined) before it is killed."""
_PR_SET_PDEATHSIG = 1


class StageProcess:
    """A render stage (`stage_class(config, threads=threads)`) in a child process forked by
    the fork server, kept to `cores` (() unpinned): started here, open once `wait_open`
    returns."""

    def __init__(self, stage_class: type, config: Any, *, threads: int,
                 cores: tuple[int, ...] = ()) -> None:
        context = server_context()
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=serve, args=(child_end, stage_class, config, threads, cores, os.getpid()),
            name="fusionray-render-stage", daemon=True)
        self._process.start()
        child_end.close()
        self._sent: set[int] = set()
        """Keys of the jobs whose info and source the child holds."""

    def wait_open(self) -> None:
        """Wait until the child's stage is open (its models loaded).

        Raises:
            FusionrayError: the stage's constructor raised one (as it stands).
            RenderError: it raised anything else, or the child ended before the stage was open
                (its own message, one line, as from an actor).
        """
        try:
            kind, value = self._receive()
        except RenderError as error:
            raise RenderError(f"A render stage could not start: {error}") from None
        if kind == "error":
            self.close()
            if isinstance(value, FusionrayError):
                raise value
            raise _could_not_start(value)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def __call__(self, key: int, info: Any, source: Any, chunk: Chunk) -> ChunkResult:
        """Render `chunk` of the job `key` names (`info`, `source`: its video and identity,
        sent to the child the first time only).

        Raises:
            BaseException: what the stage raised there (`ChunkCancelled` after `cancel`), or
                RenderError when the child ended mid-chunk (killed, crashed).
        """
        first = key not in self._sent
        self._connection.send((key, info if first else None, source if first else None, chunk))
        self._sent.add(key)
        kind, value = self._receive()
        if kind == "error":
            raise value
        assert isinstance(value, ChunkResult), value
        return value

    def _receive(self) -> tuple[str, Any]:
        try:
            message: tuple[str, Any] = self._connection.recv()
        except (EOFError, OSError):
            self._process.join(timeout=CLOSE_SECONDS)
            raise RenderError(f"the render process ended "
                              f"({_exit_description(self._process.exitcode)})") from None
        return message

    def cancel(self) -> None:
        """Stop the chunk in progress at its next frame (`RenderStage.cancel` in the child)."""
        if self._process.is_alive() and self._process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGTERM)

    def kill(self) -> str:
        """End the child at once (a hung chunk): the call in progress raises RenderError.

        Returns:
            What became of it, for the pool's events.
        """
        with contextlib.suppress(ProcessLookupError, ValueError):
            self._process.kill()
        return "its render process killed"

    def close(self) -> None:
        """Let the child finish and end, or kill it after `CLOSE_SECONDS`."""
        with contextlib.suppress(OSError, ValueError):
            self._connection.send(None)
        self._process.join(timeout=CLOSE_SECONDS)
        if self._process.is_alive():
            self.kill()
            self._process.join()
        self._connection.close()


class StageHere:
    """A render stage on the calling worker's own thread, with `StageProcess`'s interface:
    for a driver with one worker, which shares the GIL with no other and so gains nothing
    from a process but its start (`fusionray.jobs.inline`). Opened by `wait_open`, on the
    worker's thread, which it first keeps to `cores`."""

    def __init__(self, stage_class: type, config: Any, *, threads: int,
                 cores: tuple[int, ...] = ()) -> None:
        self._open = (stage_class, config, threads, cores)
        self._stage: Any = None

    def wait_open(self) -> None:
        """Open the stage here. Raises as `StageProcess.wait_open`."""
        stage_class, config, threads, cores = self._open
        keep_to_cores(cores)
        try:
            self._stage = stage_class(config, threads=threads)
        except FusionrayError:
            raise
        except Exception as error:
            raise _could_not_start(error) from None

    def __call__(self, key: int, info: Any, source: Any, chunk: Chunk) -> ChunkResult:
        result: ChunkResult = self._stage(info, chunk, source)
        return result

    def cancel(self) -> None:
        """Stop the chunk in progress at its next frame (`RenderStage.cancel`)."""
        cancel = getattr(self._stage, "cancel", None)
        if callable(cancel):
            cancel()

    def kill(self) -> str:
        """A thread cannot be killed: stop the chunk at its next frame, should its call ever
        return, and leave the thread behind.

        Returns:
            What became of it, for the pool's events.
        """
        self.cancel()
        return "its thread left behind (its chunk cancelled)"

    def close(self) -> None:
        self._stage = None  # its models go as soon as the worker is done with them


PRELOAD = ("__main__", "fusionray.jobs.stage_process", "fusionray.actors.render_stage")
"""What the fork server imports once, so that each render process it forks starts with it."""


def server_context() -> ForkServerContext:
    """The "forkserver" context, its server preloading `PRELOAD`."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def start_server() -> None:
    """Start the fork server now rather than at the first render process: its imports (about
    0.6 s of one core) then run beside the driver's own start (the probe, the source
    identity), on a core that would idle."""
    server_context()
    from multiprocessing import forkserver

    forkserver.ensure_running()


def serve(connection: Connection, stage_class: type, config: Any, threads: int,
          cores: tuple[int, ...], parent: int) -> None:
    """The child's life: open the stage, then render what the driver sends until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Killed when its parent, the fork server, ends; the server ends with the driver.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        return  # the driver ended before the line above took effect
    keep_to_cores(cores)
    try:
        stage = stage_class(config, threads=threads)
    except BaseException as error:
        _send(connection, "error", error)
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: stage.cancel())
    _send(connection, "ready", None)
    jobs: dict[int, tuple[Any, Any]] = {}
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        key, info, source, chunk = message
        if info is not None:
            jobs[key] = (info, source)
        info, source = jobs[key]
        try:
            result = stage(info, chunk, source)
        except BaseException as error:
            _send(connection, "error", error)
            continue
        _send(connection, "ok", result)


def _send(connection: Connection, kind: str, value: Any) -> None:
    """Send one answer; an exception that does not survive pickling goes as a RenderError
    naming it (its type and first line, as Ray reports an actor's)."""
    if kind == "error":
        try:
            pickle.loads(pickle.dumps(value))
        except Exception:
            value = RenderError(failure_reason(value))
    connection.send((kind, value))


def _could_not_start(error: BaseException) -> RenderError:
    """A stage constructor's error that is not fusionray's own, as one line (its message, as
    `actor_start_failure` reduces an actor's)."""
    return RenderError(f"A render stage could not start: {first_line(error)}")


def _exit_description(code: int | None) -> str:
    """'exit code 3', 'killed by SIGKILL', or 'still running'."""
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
