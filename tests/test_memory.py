"""Invariant 6 at length: a 2-minute 720p clip peaks within 25 % of a 30-second one, and the Ray
object store never spills. The full 10-minute figure is `benchmarks/bench_memory.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_memory import run, verdict


@pytest.mark.ray
@pytest.mark.slow
def test_peak_memory_does_not_grow_with_video_length(tmp_path: Path) -> None:
    results = run([30.0, 120.0], [], tmp_path)
    ok, line = verdict(results)
    assert ok, f"{line}: {results}"
    assert all(r["frames_with_faces"] for r in results), "the clips must exercise the swap"
