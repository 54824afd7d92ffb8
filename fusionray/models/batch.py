"""A free batch dimension for graphs exported with batch 1, checked once and cached.

inswapper_128 (and GFPGAN) are published with every input and output fixed at batch 1, although
their ops (Conv, Gemm, instance norms over H×W, Slice on channels, Resize by scales) do not care
about the batch. Declaring the first dimension of every graph input and output symbolic, and
dropping the recorded intermediate shapes (ONNX Runtime infers them again), lets one call carry
many faces. Some graphs forbid it (a Reshape to a constant `[1, ...]` shape, an Expand to a fixed
shape, an op that mixes batch rows): so the rewritten graph is run once with ONNX Runtime at
batch 2 and compared with two batch-1 runs; if it fails or differs, the original graph is used
at batch 1 and the reason is kept as a note (the swapper carries it into run.json).

The outcome is cached in the model cache under `batched/`, keyed by the source file's digest
(from its verification stamp, so no extra hashing): `NAME.DIGEST.onnx` (the rewritten graph,
only when it passed) and `NAME.DIGEST.json` (the verdict). Every later actor reads the verdict
and opens the cached file directly; the rewrite and the check run once per model file and
machine, under a file lock so concurrent actors do not race on it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from fusionray.errors import ModelError
from fusionray.models.download import sha256_file
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.models.onnx_file import OnnxFileParts, batch_dimension
from fusionray.models.providers import CPU, call_batch
from fusionray.models.stamp import stamped_digest
from fusionray.models.store import default_cache_dir, ensure_model

log = logging.getLogger(__name__)

BATCH_FOLDER = "batched"
"""Sub-folder of the model cache holding rewritten graphs and their verdicts."""
BATCH_DIM = "batch"
"""Name given to the symbolic first dimension."""
CHECK_TOLERANCE = {"float32": 1e-3, "float16": 2e-2}
"""Largest |batch-2 output − batch-1 output| accepted, by weight type. Far above the few-ULP
differences of batched kernels (float32 round-off is ~1e-7 relative), far below what a graph
that mixes or drops batch rows produces."""


@dataclass(frozen=True)
class BatchPlan:
    """Which file to open for a model and how many inputs one call may carry."""

    path: Path
    """The graph to open: the original file or the cached rewrite."""
    batchable: bool
    """True when the batch dimension is free (as exported, or after the checked rewrite)."""
    note: str | None = None
    """Why the batch stays at 1 (for run.json), or None."""


def plan_dynamic_batch(name: str, path: Path, *, cache_dir: Path, threads: int = 1) -> BatchPlan:
    """A free batch dimension for `path` where its graph allows it (see the module docstring).

    Args:
        name: the model's catalogue name (for file names and notes).
        path: the verified model file.
        cache_dir: the model cache; results go to `cache_dir/batched/`.
        threads: CPU threads for the one-time check.

    Returns:
        The plan. A file that cannot even be scanned gets `BatchPlan(path, False)`, so that
        opening it reports the real error.
    """
    try:
        parts = OnnxFileParts(path)
    except ModelError:
        return BatchPlan(path, batchable=False)
    batches = [batch_dimension(value) for value in parts.inputs + parts.outputs]
    if all(isinstance(batch, str) for batch in batches):
        return BatchPlan(path, batchable=True)  # Exported with a free batch.
    if any(batch != 1 and not isinstance(batch, str) for batch in batches):
        return BatchPlan(path, batchable=False,
                         note=f"{name}: batch stays at 1 (graph inputs/outputs have first "
                              f"dimensions {batches}, not a batch of 1 to free)")
    digest = stamped_digest(path, "sha256", sha256_file)[:16]
    folder = Path(cache_dir) / BATCH_FOLDER
    target = folder / f"{name}.{digest}.onnx"
    verdict_path = folder / f"{name}.{digest}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder / f"{name}.{digest}.lock"):
            verdict = _read_verdict(verdict_path)
            if verdict is None:
                verdict = _rewrite_and_check(name, path, target, threads=threads)
                _write_json(verdict_path, verdict)
    except OSError as error:
        # A read-only cache: check in memory each time rather than lose the batch silently.
        log.warning("Cannot cache the batched %s in %s (%s); using batch 1", name, folder, error)
        return BatchPlan(path, batchable=False,
                         note=f"{name}: batch stays at 1 (cannot write {folder}: {error})")
    if verdict.get("ok") and target.is_file():
        return BatchPlan(target, batchable=True)
    note = f"{name}: batch stays at 1 ({verdict.get('reason', 'no cached rewrite')})"
    log.warning("%s", note)
    return BatchPlan(path, batchable=False, note=note)


def free_batch_dimension(model: onnx.ModelProto, *, copy: bool = True) -> onnx.ModelProto:
    """`model` with every graph input's and output's first dimension symbolic and the recorded
    intermediate shapes dropped (they were inferred for batch 1).

    Args:
        model: the graph.
        copy: rewrite a copy (default); False rewrites `model` itself (no second copy of a
            554 MB graph in memory).
    """
    rewritten = model
    if copy:
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
    graph = rewritten.graph
    initializers = {tensor.name for tensor in graph.initializer}
    for value in list(graph.input) + list(graph.output):
        if value.name in initializers:
            continue  # Old exporters list weights as inputs too.
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]
    return rewritten


def _weights_type(model: onnx.ModelProto) -> str:
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return "float16" if half else "float32"


def _check_inputs(model: onnx.ModelProto) -> dict[str, np.ndarray] | str:
    """Two distinct samples per graph input, in the range the contracts use: images in [0, 1]
    (rank 4) and L2-normalised vectors (rank 2). A string says why none can be made."""
    rng = np.random.default_rng(0)
    initializers = {tensor.name for tensor in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else None
                 for dim in tensor.shape.dim][1:]
        if any(size is None for size in shape):
            return f"input {value.name!r} has free dimensions besides the batch"
        if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            return f"input {value.name!r} is not floating point"
        dtype = np.float16 if tensor.elem_type == onnx.TensorProto.FLOAT16 else np.float32
        sample = rng.random((2, *shape), dtype=np.float32)  # type: ignore[arg-type]
        if len(shape) == 1:
            sample = sample - 0.5
            sample /= np.linalg.norm(sample, axis=1, keepdims=True)
        feeds[value.name] = sample.astype(dtype)
    return feeds


def _rewrite_and_check(name: str, path: Path, target: Path, *, threads: int) -> dict[str, object]:
    """Rewrite, run batch 2 against two batch-1 runs, and save the rewrite when it agrees."""
    from fusionray.models.session import create_session

    log.info("Freeing the batch dimension of %s (once per model file; cached)", name)
    model = onnx.load(str(path))
    tolerance = CHECK_TOLERANCE[_weights_type(model)]
    rewritten = free_batch_dimension(model, copy=False)
    feeds = _check_inputs(rewritten)
    if isinstance(feeds, str):
        return {"ok": False, "reason": f"cannot check a batch of 2: {feeds}"}
    data = rewritten.SerializeToString()
    del rewritten, model
    try:
        session, _ = create_session(data, providers=("cpu",), threads=threads)
        batched = session.run(None, feeds)
        singles = [session.run(None, {key: value[index:index + 1]
                                      for key, value in feeds.items()}) for index in (0, 1)]
    except Exception as error:  # ORT raises bare RuntimeError/Fail subclasses.
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else repr(error)
        return {"ok": False, "reason": f"the graph fails at batch 2 in ONNX Runtime: {reason}"}
    worst = 0.0
    for position, output in enumerate(batched):
        expected = np.concatenate([single[position] for single in singles])
        if output.shape != expected.shape:
            return {"ok": False, "reason": f"batch 2 gives output {position} shape "
                                           f"{list(output.shape)}, expected "
                                           f"{list(expected.shape)}"}
        worst = max(worst, float(np.max(np.abs(output.astype(np.float64) - expected))))
    if not worst <= tolerance:
        return {"ok": False, "reason": f"batch 2 differs from two batch-1 runs by {worst:.3g} "
                                       f"(tolerance {tolerance})"}
    _write_bytes(target, data)
    log.info("%s: batch dimension freed (batch 2 matches batch 1 within %.3g)", name, worst)
    return {"ok": True, "max_difference": worst, "tolerance": tolerance}


def _read_verdict(path: Path) -> dict[str, object] | None:
    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return verdict if isinstance(verdict, dict) and "ok" in verdict else None


def _write_bytes(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".batched-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_json(path: Path, record: dict[str, object]) -> None:
    _write_bytes(path, json.dumps(record, indent=1).encode())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if needed) for the block's duration."""
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def open_batched_runner(name: str, options: ModelOptions) -> tuple[ModelRunner, Path, BatchPlan]:
    """Locate and verify `name`, free its batch dimension where the graph allows, open it.

    Returns:
        The runner (its `batchable` says whether one call may carry several inputs), the
        verified source file (e.g. to read the emap from), and the plan (its `note` says why
        the batch stays at 1, for run.json).

    Raises:
        ModelError: missing, corrupt or wrong model; the message names the source file, never
            the cached rewrite.
    """
    source = ensure_model(name, cache_dir=options.cache_dir, shared_dirs=options.shared_dirs,
                          offline=options.offline, allow_unverified=options.allow_unverified)
    plan = plan_dynamic_batch(name, source, cache_dir=options.cache_dir or default_cache_dir(),
                              threads=options.threads)
    if plan.path == source:
        return ModelRunner(name, options, path=source), source, plan
    try:
        return ModelRunner(name, options, path=plan.path), source, plan
    except ModelError as error:
        # Open the file the user gave: its own error (naming it) if it is wrong, else batch 1.
        runner = ModelRunner(name, options, path=source)
        note = f"{name}: batch stays at 1 (the rewritten graph failed to open: {error})"
        log.warning("%s", note)
        return runner, source, BatchPlan(source, batchable=runner.batchable, note=note)


class RowCalls:
    """How a swap model's rows go through it: calls of up to `max_batch` rows, in order,
    `workers` calls at once.

    Several calls at once is for CPU sessions that take one row a call: each call runs on one
    ONNX Runtime thread and the model's rows on `workers` threads, instead of every call split
    over `workers` intra-op threads. The forward pass is the same work either way, but a call
    split over threads waits at each layer for its slowest thread, so a core taken away by the
    stage's other steps (decode, paste, encode) or another process stalls both, while whole
    rows on single threads only slow the row that lost the core. Measured on the 2-core VM
    (bench_neural's render, whole processes, A B): 1.04x with the cores to itself, 1.10x beside
    a process busy half a core (benchmarks/RESULTS.md). Outputs are the same bytes: a row's
    result does not depend on the thread count.
    """

    def __init__(self, max_batch: int, workers: int = 1) -> None:
        """`max_batch` >= 1 rows a call; `workers` >= 1 calls at once."""
        if max_batch < 1 or workers < 1:
            raise ValueError(f"RowCalls needs max_batch >= 1 and workers >= 1, got "
                             f"max_batch={max_batch!r}, workers={workers!r}")
        self.max_batch = max_batch
        self.workers = workers
        # Idle worker threads end when the pool is collected with its swapper.
        self._pool = (ThreadPoolExecutor(workers, thread_name_prefix="fusionray-rows")
                      if workers > 1 else None)

    def run(self, rows: int, call: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """`call(start, stop)` for consecutive spans of at most `max_batch` of `rows` rows,
        its outputs concatenated in row order."""
        spans = [(start, min(start + self.max_batch, rows))
                 for start in range(0, rows, self.max_batch)]
        if self._pool is None or len(spans) < 2:
            return np.concatenate([call(start, stop) for start, stop in spans])
        return np.concatenate(list(self._pool.map(lambda span: call(*span), spans)))


def open_swap_runner(
    name: str, options: ModelOptions, max_batch: int | None,
) -> tuple[ModelRunner, Path, RowCalls, tuple[str, ...]]:
    """Open a swap model for calls of up to `max_batch` rows (>= 1; None: by the provider the
    session opened on, `call_batch`): the batch-freed graph where a call may carry more than
    one row, the model as given where it carries one. On CPU with one row a call and
    `options.threads` > 1, the session is opened on one thread and rows run that many at once
    (`RowCalls`).

    Returns:
        The runner, the verified source file (e.g. to read the emap from), how rows are run
        (one row a call where the graph's batch could not be freed), and notes for run.json.
    """
    if max_batch is None or max_batch > 1:
        runner, source, plan = open_batched_runner(name, options)
        notes: tuple[str, ...] = (plan.note,) if plan.note else ()
    else:
        runner, notes = ModelRunner(name, options), ()
        source = runner.path
    if max_batch is None:
        max_batch = call_batch(runner.opened.provider)
    rows_per_call = max_batch if runner.batchable else 1
    if rows_per_call > 1 or runner.opened.provider != CPU or options.threads < 2:
        return runner, source, RowCalls(rows_per_call), notes
    # The provider is known once the session is open; a CPU graph reopens from the model
    # cache's optimised copy, whose weights are mapped, not read again (`open_session`).
    single = ModelRunner(name, replace(options, threads=1), path=runner.path)
    return single, source, RowCalls(1, workers=options.threads), notes
