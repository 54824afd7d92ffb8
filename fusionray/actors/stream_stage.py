"""Run the steps of a stage on threads joined by bounded queues, or chained in one thread
(no Ray here).

Decoding (PyAV), inference (ONNX Runtime), OpenCV and encoding release the GIL, so a chunk's
steps can overlap inside one actor: while frame n is pasted and encoded, frame n + 1 is in the
swap model and frame n + 2 is being decoded. Each step is a generator function from an iterator
of items to an iterator of items (so a step may hold a window, or batch several items), run on
its own thread; queues of `depth` items bound the memory in flight. Items keep their order.

An exception in any step stops every step and is re-raised in the caller's thread, as the
chunk's error; no thread outlives the iteration (they are joined before `run_steps` returns or
raises, also when the caller stops early, or closes the iteration: a caller that may raise
between items closes it in a `finally`, so no thread outlives the call).

An actor with one core gains nothing from threads: they only take turns on that core (and at
the GIL), handing every frame across queues. `chain_steps` runs the same steps as generators
in the caller's thread, with the same order, errors and busy-seconds clock: about 0.6 ms of
CPU a frame less than `run_steps` on the classic path pinned to one core (31.6 -> 30.9 ms).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Step = Callable[[Iterator[Any]], Iterable[Any]]
"""A step: items in, items out, in order."""

_END = object()
_POLL_SECONDS = 0.05


class _Stopped(Exception):
    """Raised inside a step's input when another step failed or the caller left."""


@dataclass
class StepClock:
    """Busy seconds per step (time spent producing items, not waiting for them)."""

    seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def run_steps(
    source: Iterable[Any], steps: Sequence[tuple[str, Step]], *, depth: int = 2,
    clock: StepClock | None = None,
) -> Generator[Any, None, None]:
    """Iterate the output of `steps` applied in turn to `source`, each on its own thread.

    Args:
        source: the first items (iterated on a thread of its own, named `source`).
        steps: (name, step) in order; names label the threads and `clock`'s entries.
        depth: queue length between consecutive steps, >= 1.
        clock: collects each step's busy seconds (its own time between items), if given.

    Yields:
        The last step's items, in order, in the caller's thread.

    Raises:
        The first exception any step (or `source`) raised.
    """
    if depth < 1:
        raise ValueError(f"Queue depth must be >= 1, got {depth}")
    stop = threading.Event()
    errors: list[BaseException] = []
    queues = [queue.Queue[Any](maxsize=depth) for _ in range(len(steps) + 1)]

    def put(target: queue.Queue[Any], item: Any) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                target.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def drain(origin: queue.Queue[Any], waited: list[float] | None = None) -> Iterator[Any]:
        """Items of `origin` until its end marker; time spent waiting for them is added to
        `waited[0]` (so a step's busy time excludes waiting for its input)."""
        while True:
            if stop.is_set():
                raise _Stopped
            started = time.perf_counter()
            try:
                item = origin.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            finally:
                if waited is not None:
                    waited[0] += time.perf_counter() - started
            if item is _END:
                return
            yield item

    def run(name: str, make_items: Callable[[list[float]], Iterable[Any]],
            target: queue.Queue[Any]) -> None:
        iterator: Iterator[Any] = iter(())
        waited = [0.0]
        try:
            iterator = iter(make_items(waited))
            while True:
                started, waited[0] = time.perf_counter(), 0.0
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                finally:
                    if clock is not None:
                        clock.add(name, time.perf_counter() - started - waited[0])
                put(target, item)
            put(target, _END)
        except _Stopped:
            pass
        except BaseException as error:
            errors.append(error)
            stop.set()
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # A generator step releases what it holds (files, decoders) here.

    threads = [threading.Thread(target=run, args=("source", lambda _: source, queues[0]),
                                name="fusionray-source", daemon=True)]
    for index, (name, step) in enumerate(steps):
        # The step is started on its own thread, which then drains its input queue.
        threads.append(threading.Thread(
            target=run,
            args=(name, lambda waited, s=step, i=index: s(drain(queues[i], waited)),
                  queues[index + 1]),
            name=f"fusionray-{name}", daemon=True))
    for thread in threads:
        thread.start()
    try:
        with contextlib.suppress(_Stopped):
            yield from drain(queues[-1])
        if errors:
            raise errors[0]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def chain_steps(
    source: Iterable[Any], steps: Sequence[tuple[str, Step]], *, clock: StepClock | None = None,
) -> Generator[Any, None, None]:
    """`run_steps` without threads: each step pulls from the one before, in the caller's
    thread.

    Args:
        source: the first items (timed as `source`).
        steps: (name, step) in order.
        clock: collects each step's busy seconds: the time spent in its own code, not in the
            steps before it (which run inside its pulls).

    Yields:
        The last step's items, in order.

    Raises:
        The first exception any step (or `source`) raised; every step is closed either way
        (a generator step releases its files and decoders), also when the caller stops early.
    """
    names = ["source", *(name for name, _ in steps)]
    inclusive = dict.fromkeys(names, 0.0)

    def timed(name: str, items: Iterable[Any]) -> Iterator[Any]:
        """`items`, adding the time each one took to arrive (its step and every step before
        it) to `inclusive[name]`."""
        iterator = iter(items)
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                inclusive[name] += time.perf_counter() - started
            yield item

    first = iter(source)  # a generator source is its own iterator: closed below with the rest
    layers: list[Iterator[Any]] = [first, timed("source", first)]
    for name, step in steps:
        made = iter(step(layers[-1]))
        layers += [made, timed(name, made)]
    try:
        yield from layers[-1]
    finally:
        for layer in reversed(layers):  # the last step first, like the threads' shutdown
            close = getattr(layer, "close", None)
            if close is not None:
                close()
        if clock is not None:
            for before, name in itertools.pairwise(names):
                clock.add(name, max(0.0, inclusive[name] - inclusive[before]))
            clock.add("source", inclusive["source"])
