"""One job per output path: a lock file beside the output, with the owner's pid and host.

Two jobs writing the same output would share a work folder and race on the final rename. The
lock is a file created with O_CREAT | O_EXCL (atomic on local and NFSv3+ file systems) holding
the owner's pid, host and start time. A lock left by a job that died without cleaning up (SIGKILL,
a crashed machine) is stale: on the same host, a lock whose pid no longer runs is taken over;
a lock from another host cannot be checked from here, so the message says how to clear it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from fusionray.errors import OutputError

log = logging.getLogger("fusionray")


def lock_path_for(output: Path) -> Path:
    return output.with_name(f".{output.name}.fusionray-lock")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


class OutputLock:
    """Hold the lock of one output path for the life of a job (a context manager).

    Raises (on enter):
        OutputError: another live job holds the lock.
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = lock_path_for(output)
        self.notes: list[str] = []
        """A stale lock that was taken over, for run.json."""
        self._held = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(owner, handle)
            self._held = True
            return
        raise OutputError(f"Could not take the output lock '{self.path}' (it keeps reappearing)")

    def _handle_existing(self) -> None:
        """Remove a stale lock, or refuse with the owner named."""
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError):
            holder = {}
        pid, host = int(holder.get("pid", 0) or 0), str(holder.get("host", "?"))
        started = holder.get("started")
        since = (time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(float(started)))
                 if isinstance(started, (int, float)) else "")
        if host == socket.gethostname() and not pid_alive(pid):
            note = f"removed a stale lock '{self.path}' left by pid {pid} on {host} (not running)"
            log.warning("%s", note)
            self.notes.append(note)
            self.path.unlink(missing_ok=True)
            return
        raise OutputError(
            f"Output '{self.output}' is being rendered by another fusionray job (pid {pid} on "
            f"host {host}{since}); wait for it to finish, choose another output, or delete "
            f"'{self.path}' if that job is gone"
        )

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            holder = json.loads(self.path.read_text())
            if holder.get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass
