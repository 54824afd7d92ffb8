"""One job per output path: a lease file beside the output, refreshed while the job runs.

Two jobs writing the same output would share a work folder and race on the final rename. The
lock is a file created with O_CREAT | O_EXCL (atomic on local and NFSv3+ file systems) holding
the owner's pid, host, a random token and the time it was last refreshed. The holder refreshes
that time from a background thread (every `refresh_seconds`), so the file is a *lease*:

- a lease refreshed within `stale_after_seconds` is live, and another job refuses to start;
- a lease not refreshed for longer is stale (the job died: SIGKILL, a lost node, a KubeRay
  retry in another pod) and is taken over, with a note for run.json;
- on the same host a lease whose pid no longer runs is stale at once (no need to wait).

Times are wall-clock (`time.time()`) of the hosts involved: keep `stale_after_seconds` well
above the clock skew between them and above the refresh interval (the default refreshes four
times per stale period). A holder whose lease was taken over (it stalled past the stale time)
finds a foreign token on its next refresh, stops refreshing and reports `lost`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from fusionray.config import StorageConfig
from fusionray.errors import OutputError

log = logging.getLogger("fusionray")

DEFAULT_STALE_AFTER_SECONDS = 120.0
"""A lease not refreshed for this long is stale (config `storage.lock_stale_seconds`)."""
TAKEOVER_GUARD_SECONDS = 10.0
"""A takeover guard file older than this was left by a job that died mid-takeover."""


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
    """Hold the lease of one output path for the life of a job (a context manager).

    Args:
        output: the output video path; the lease file sits beside it.
        stale_after_seconds: a lease not refreshed for this long is taken over.
        refresh_seconds: how often the holder refreshes its lease (0 = a quarter of
            `stale_after_seconds`).
        clock: wall-clock time in seconds (tests inject one).

    Raises (on enter):
        OutputError: another job holds a live lease, naming it and when it last refreshed.
    """

    def __init__(
        self,
        output: Path,
        *,
        stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS,
        refresh_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if stale_after_seconds <= 0:
            raise ValueError(f"stale_after_seconds must be > 0, got {stale_after_seconds!r}")
        if refresh_seconds < 0 or refresh_seconds >= stale_after_seconds:
            raise ValueError(f"refresh_seconds must be in [0, stale_after_seconds="
                             f"{stale_after_seconds}), got {refresh_seconds!r}")
        self.output = output
        self.path = lock_path_for(output)
        self.stale_after_seconds = float(stale_after_seconds)
        self.refresh_seconds = float(refresh_seconds) or self.stale_after_seconds / 4
        self.notes: list[str] = []
        """A stale lease that was taken over, for run.json."""
        self.lost = False
        """True once another job took the lease over from this one (it had stalled)."""
        self._clock = clock
        self._token = uuid.uuid4().hex
        self._started = 0.0
        self._held = False
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @classmethod
    def for_config(cls, output: Path, storage: StorageConfig) -> OutputLock:
        """The lock of `output` with a job's `storage.lock_*` settings."""
        return cls(output, stale_after_seconds=storage.lock_stale_seconds,
                   refresh_seconds=storage.lock_refresh_seconds)

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

    # --- taking the lease ----------------------------------------------------------------

    def acquire(self) -> None:
        """Create the lease (taking over a stale one) and start refreshing it."""
        self._started = self._clock()
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(self._record(), handle)
            self._held = True
            self._start_refreshing()
            return
        raise OutputError(f"Could not take the output lock '{self.path}' (it keeps reappearing)")

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "token": self._token,
                "started": self._started, "refreshed": self._clock(),
                "stale_after_seconds": self.stale_after_seconds}

    def _handle_existing(self) -> None:
        """Take over a stale lease, or refuse with the holder named."""
        try:
            text = self.path.read_text()
            modified = self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        try:
            holder = json.loads(text or "{}")
            if not isinstance(holder, dict):
                holder = {}
        except ValueError:
            holder = {}  # half-written or foreign: judged by the file's age alone
        pid, host = int(holder.get("pid", 0) or 0), str(holder.get("host", "?"))
        # An older lock file (pid + host only) is judged by when it was written.
        refreshed = _number(holder.get("refreshed")) or _number(holder.get("started")) or modified
        # The holder's own stale period counts when longer: it refreshes at its own pace.
        stale_after = max(self.stale_after_seconds,
                          _number(holder.get("stale_after_seconds")) or 0.0)
        age = self._clock() - refreshed
        if host == socket.gethostname() and not pid_alive(pid):
            reason = f"left by pid {pid} on {host} (not running)"
        elif age > stale_after:
            reason = (f"left by pid {pid} on host {host}, last refreshed {age:.0f} s ago "
                      f"(stale after {stale_after:.0f} s)")
        else:
            since = time.strftime(" since %Y-%m-%d %H:%M:%S",
                                  time.localtime(_number(holder.get("started")) or refreshed))
            raise OutputError(
                f"Output '{self.output}' is being rendered by another fusionray job (pid {pid} on "
                f"host {host}{since}, lease refreshed {max(age, 0.0):.0f} s ago); wait for it "
                f"to finish, choose another output, or, if that job is gone, wait "
                f"{stale_after:.0f} s from its last refresh for the lease to go stale (or "
                f"delete '{self.path}')"
            )
        if self._remove_if_unchanged(text):
            note = f"took over a stale lock '{self.path}' {reason}"
            log.warning("%s", note)
            self.notes.append(note)

    def _remove_if_unchanged(self, judged: str) -> bool:
        """Remove the lease file only if it still holds `judged` (the stale lease we read).

        Several jobs may judge the same lease stale at once. The removal is serialised by a
        second file created with O_EXCL (`<lock>.takeover`): its holder re-reads the lease and
        removes it only if unchanged, so a job that read the stale lease earlier never removes
        the fresh lease another job has created since. Then every contender races for the
        lease by O_EXCL creation again, and exactly one wins.
        """
        guard = self.path.with_name(f"{self.path.name}.takeover")
        try:
            descriptor = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                # A takeover lasts milliseconds; a guard this old was left by a crash.
                if time.time() - guard.stat().st_mtime > TAKEOVER_GUARD_SECONDS:
                    guard.unlink()
            time.sleep(0.02)
            return False
        os.close(descriptor)
        try:
            try:
                current = self.path.read_text()
            except FileNotFoundError:
                return False
            if current != judged:
                return False  # renewed or replaced since we judged it: judge again
            self.path.unlink()
            return True
        finally:
            guard.unlink(missing_ok=True)

    # --- keeping it ------------------------------------------------------------------------

    def _start_refreshing(self) -> None:
        self._stop.clear()
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                           name=f"fusionray-lease-{self.output.name}")
        self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            if not self.refresh():
                return

    def refresh(self) -> bool:
        """Renew the lease now; False (and `lost`) when another job has taken it over."""
        if not self._held or self.lost:
            return False
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            holder = {}  # deleted by hand (the message says so) or taken over: not ours now
        except (OSError, ValueError):
            return True  # unreadable or being written this instant: judge it next time
        if not isinstance(holder, dict) or holder.get("token") != self._token:
            self.lost = True
            log.error("The output lock '%s' was taken over by another job (pid %s on host %s): "
                      "this job stalled longer than %.0f s", self.path,
                      holder.get("pid", "?") if isinstance(holder, dict) else "?",
                      holder.get("host", "?") if isinstance(holder, dict) else "?",
                      self.stale_after_seconds)
            return False
        partial = self.path.with_name(f"{self.path.name}.refresh-{self._token[:12]}")
        try:
            partial.write_text(json.dumps(self._record()))
            os.replace(partial, self.path)  # atomic: a reader sees the old or the new lease
        except OSError as error:
            # A transient storage error: the next refresh tries again, well before staleness.
            log.warning("Could not refresh the output lock '%s': %s", self.path, error)
            partial.unlink(missing_ok=True)
        return True

    def check_held(self) -> None:
        """Raise if the lease was lost (call before publishing the output).

        Raises:
            OutputError: another job took the lease over while this one stalled.
        """
        if self.lost:
            raise OutputError(
                f"Output '{self.output}': this job's lock '{self.path}' was taken over by "
                f"another job after this one stopped refreshing it for over "
                f"{self.stale_after_seconds:.0f} s; not publishing over that job's output")

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=10)
            self._refresher = None
        self._held = False
        try:
            holder = json.loads(self.path.read_text())
            if isinstance(holder, dict) and holder.get("token") == self._token:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None
