"""Steps on threads with bounded queues: order kept, errors surface, no thread left running."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fusionray.actors.stream_stage import StepClock, chain_steps, run_steps


def double(items: Iterator[int]) -> Iterator[int]:
    for item in items:
        yield item * 2


def pairs(items: Iterator[int]) -> Iterator[tuple[int, ...]]:
    batch: list[int] = []
    for item in items:
        batch.append(item)
        if len(batch) == 2:
            yield tuple(batch)
            batch = []
    if batch:
        yield tuple(batch)


def running_steps() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fusionray-")]


def test_steps_keep_order_and_can_batch() -> None:
    clock = StepClock()
    out = list(run_steps(range(7), [("double", double), ("pairs", pairs)], depth=1, clock=clock))
    assert out == [(0, 2), (4, 6), (8, 10), (12,)]
    assert set(clock.seconds) == {"source", "double", "pairs"}
    assert running_steps() == []


def test_steps_overlap_in_time() -> None:
    def slow(items: Iterator[int]) -> Iterator[int]:
        for item in items:
            time.sleep(0.05)  # releases the GIL, like ORT or PyAV
            yield item

    started = time.perf_counter()
    assert list(run_steps(range(8), [("a", slow), ("b", slow), ("c", slow)], depth=2)) == \
        list(range(8))
    # Sequential would be 3 x 8 x 0.05 = 1.2 s; pipelined about (8 + 2) x 0.05 = 0.5 s.
    assert time.perf_counter() - started < 0.9


RUNNERS = {"threads": run_steps, "chained": chain_steps}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("where", ["source", "middle", "last"])
def test_an_error_in_any_step_is_the_callers_and_closes_every_step(
    runner: str, where: str,
) -> None:
    """Threads or chained: the first error is raised in the caller's thread, every generator
    (the source's decoder included) is closed, and no thread is left running."""
    closed: list[str] = []

    def source() -> Iterator[int]:
        try:
            for item in range(1000):
                if where == "source" and item == 5:
                    raise OSError("decode failed at 5")
                yield item
        finally:
            closed.append("source")

    def failing(name: str) -> Callable[[Iterator[int]], Iterator[int]]:
        def step(items: Iterator[int]) -> Iterator[int]:
            try:
                for item in items:
                    if where == name and item == 5:
                        raise RuntimeError(f"{name} failed at 5")
                    yield item
            finally:
                closed.append(name)
        return step

    with pytest.raises((OSError, RuntimeError), match="failed at 5"):
        list(RUNNERS[runner](source(), [("middle", failing("middle")),
                                        ("last", failing("last"))]))
    assert "source" in closed, "the source generator is closed (its decoder released)"
    assert sorted(closed) == ["last", "middle", "source"]
    assert running_steps() == []


def test_a_caller_that_stops_early_leaves_no_thread() -> None:
    iterator = run_steps(iter(range(10**6)), [("double", double)], depth=2)
    assert next(iterator) == 0
    iterator.close()
    assert running_steps() == []


def test_busy_seconds_exclude_waiting_for_input() -> None:
    def slow_source() -> Iterator[int]:
        for item in range(5):
            time.sleep(0.04)
            yield item

    clock = StepClock()
    assert list(run_steps(slow_source(), [("double", double)], clock=clock)) == [0, 2, 4, 6, 8]
    assert clock.seconds["source"] >= 0.15
    assert clock.seconds["double"] < 0.05  # it waited about 0.2 s, but worked microseconds


def test_chained_steps_keep_order_batch_and_count_each_steps_own_time() -> None:
    """The one-core runner: same items as the threaded one; each step's busy seconds exclude
    the steps before it, which run inside its pulls."""
    def slow_double(items: Iterator[int]) -> Iterator[int]:
        for item in items:
            time.sleep(0.02)
            yield item * 2

    def slow_source() -> Iterator[int]:
        for item in range(5):
            time.sleep(0.04)
            yield item

    steps = [("double", slow_double), ("pairs", pairs)]
    clock = StepClock()
    threads_before = threading.active_count()
    out = list(chain_steps(slow_source(), steps, clock=clock))
    assert out == list(run_steps(slow_source(), steps)) == [(0, 2), (4, 6), (8,)]
    assert threading.active_count() == threads_before  # no thread started
    assert set(clock.seconds) == {"source", "double", "pairs"}
    assert 0.18 <= clock.seconds["source"] < 0.4
    assert 0.09 <= clock.seconds["double"] < 0.2  # 5 x 0.02 s, not the source's 0.2 s too
    assert clock.seconds["pairs"] < 0.05


def test_a_caller_that_stops_a_chain_early_closes_its_source() -> None:
    closed: list[bool] = []

    def source() -> Iterator[int]:
        try:
            yield from range(10**6)
        finally:
            closed.append(True)

    iterator = chain_steps(source(), [("double", double)])
    assert next(iterator) == 0
    iterator.close()
    assert closed == [True]
