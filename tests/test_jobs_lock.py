"""The output lock as a lease: live leases refuse, stale ones (any host) are taken over.

The end-to-end cases (a second render refused, a SIGKILLed driver's lock taken over by the
rerun) are in `test_faults.py`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fusionray.errors import OutputError
from fusionray.jobs.lock import OutputLock, lock_path_for

OTHER_HOST = "render-pod-7f9c"  # a driver restarted in another pod has another host name


def write_lease(output: Path, *, host: str, refreshed: float, pid: int = 4242,
                stale_after: float | None = None) -> Path:
    lock = lock_path_for(output)
    record: dict[str, object] = {"pid": pid, "host": host, "token": "theirs",
                                 "started": refreshed - 60, "refreshed": refreshed}
    if stale_after is not None:
        record["stale_after_seconds"] = stale_after
    lock.write_text(json.dumps(record))
    return lock


def holder(lock: Path) -> dict[str, object]:
    return json.loads(lock.read_text())


def test_a_stale_lease_from_another_host_is_taken_over_with_a_note(tmp_path: Path) -> None:
    output = tmp_path / "shot.mp4"
    lock = write_lease(output, host=OTHER_HOST, refreshed=time.time() - 300)
    with OutputLock(output, stale_after_seconds=120) as ours:
        assert holder(lock)["host"] == socket.gethostname()
        assert holder(lock)["pid"] == os.getpid()
        [note] = ours.notes
        assert "stale lock" in note and OTHER_HOST in note and "pid 4242" in note
        assert "last refreshed 300 s ago (stale after 120 s)" in note
    assert not lock.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing moved aside is left


def test_a_live_lease_from_another_host_refuses(tmp_path: Path) -> None:
    output = tmp_path / "shot.mp4"
    lock = write_lease(output, host=OTHER_HOST, refreshed=time.time() - 30)
    before = lock.read_text()
    with pytest.raises(OutputError, match=rf"being rendered by another fusionray job \(pid 4242 "
                                          rf"on host {OTHER_HOST} since .*lease refreshed 30 s "
                                          rf"ago\).*wait 120 s"):
        OutputLock(output, stale_after_seconds=120).acquire()
    assert lock.read_text() == before  # untouched


def test_the_holders_longer_stale_period_is_respected(tmp_path: Path) -> None:
    # The holder refreshes at the pace of its own (longer) stale period: 300 s without a
    # refresh is normal for it, even though this job would call that stale.
    output = tmp_path / "shot.mp4"
    write_lease(output, host=OTHER_HOST, refreshed=time.time() - 300, stale_after=600)
    with pytest.raises(OutputError, match="wait 600 s"):
        OutputLock(output, stale_after_seconds=120).acquire()


def test_an_old_pid_and_host_lock_is_judged_by_its_file_time(tmp_path: Path) -> None:
    output = tmp_path / "shot.mp4"
    lock = lock_path_for(output)
    lock.write_text(json.dumps({"pid": 4242, "host": OTHER_HOST}))  # the previous format
    with pytest.raises(OutputError, match="being rendered"):
        OutputLock(output, stale_after_seconds=120).acquire()
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    with OutputLock(output, stale_after_seconds=120) as ours:
        assert any("stale lock" in note for note in ours.notes)


def test_a_dead_pid_on_this_host_is_stale_at_once(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    output = tmp_path / "shot.mp4"
    write_lease(output, host=socket.gethostname(), refreshed=time.time(), pid=gone.pid)
    with OutputLock(output) as ours:
        assert any(f"pid {gone.pid}" in note and "not running" in note for note in ours.notes)


def test_refreshing_keeps_the_lease_live_past_the_stale_time(tmp_path: Path) -> None:
    output = tmp_path / "shot.mp4"
    lock = lock_path_for(output)
    # Refreshing 30 times per stale period leaves room for a starved refresher thread.
    with OutputLock(output, stale_after_seconds=1.5, refresh_seconds=0.05) as ours:
        first = float(holder(lock)["refreshed"])  # type: ignore[arg-type]
        time.sleep(3.0)  # two stale periods
        assert float(holder(lock)["refreshed"]) > first + 1.5  # type: ignore[arg-type]
        # Seen from "another host" (the same file, another job): still live.
        record = holder(lock)
        staged = tmp_path / "staged"
        staged.write_text(json.dumps({**record, "host": OTHER_HOST}))
        os.replace(staged, lock)
        time.sleep(0.1)
        with pytest.raises(OutputError, match="being rendered"):
            OutputLock(output, stale_after_seconds=1.5).acquire()
        assert not ours.lost
        ours.check_held()
    assert not lock.exists()


def test_without_refreshes_the_same_lease_goes_stale(tmp_path: Path) -> None:
    # The control for the test above: a holder that stops refreshing (a hung driver) loses
    # the output to the next job, finds out on its next refresh, and leaves the new lease.
    output = tmp_path / "shot.mp4"
    lock = lock_path_for(output)
    stalled = OutputLock(output, stale_after_seconds=0.4, refresh_seconds=0.05)
    stalled.acquire()
    stalled._stop.set()  # the refresher stops as if the process hung
    time.sleep(0.8)
    with OutputLock(output, stale_after_seconds=0.4) as successor:
        assert any("stale lock" in note for note in successor.notes)
        assert stalled.refresh() is False and stalled.lost
        with pytest.raises(OutputError, match="was taken over by another job"):
            stalled.check_held()
        stalled.release()
        assert lock.exists()  # the successor's lease is not the stalled job's to delete
    assert not lock.exists()


def test_jobs_racing_for_one_stale_lease_end_with_one_holder(tmp_path: Path) -> None:
    output = tmp_path / "shot.mp4"
    write_lease(output, host=OTHER_HOST, refreshed=time.time() - 300)
    start = threading.Barrier(12)
    winners: list[OutputLock] = []
    refusals: list[OutputError] = []

    def contend() -> None:
        lock = OutputLock(output, stale_after_seconds=120)
        start.wait()
        try:
            lock.acquire()
            winners.append(lock)
        except OutputError as error:
            refusals.append(error)

    threads = [threading.Thread(target=contend) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(winners) == 1 and len(refusals) == 11
        assert holder(lock_path_for(output))["token"] == winners[0]._token
    finally:
        for lock in winners:
            lock.release()


def test_bad_lease_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match="stale_after_seconds must be > 0, got 0"):
        OutputLock(Path("x.mp4"), stale_after_seconds=0)
    with pytest.raises(ValueError, match=r"refresh_seconds must be in \[0, stale_after_seconds"):
        OutputLock(Path("x.mp4"), stale_after_seconds=10, refresh_seconds=10)


def test_lease_settings_come_from_the_storage_config(tmp_path: Path) -> None:
    from fusionray.config import StorageConfig
    from fusionray.errors import ConfigError

    lock = OutputLock.for_config(tmp_path / "shot.mp4", StorageConfig(lock_stale_seconds=60))
    assert (lock.stale_after_seconds, lock.refresh_seconds) == (60.0, 15.0)
    with pytest.raises(ConfigError, match=r"storage\.lock_refresh_seconds"):
        StorageConfig(lock_stale_seconds=60, lock_refresh_seconds=60)
