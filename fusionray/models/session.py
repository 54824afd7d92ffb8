"""ONNX Runtime sessions: the only place fusionray imports onnxruntime.

`open_session` tries the provider chains that `fusionray.models.providers` plans (TensorRT ->
CUDA -> CPU, on the GPU Ray assigned to this process, with a memory cap from its share of the
card) and returns an `OpenedSession` that says what it runs on and what did not go as asked:
a provider that failed to start, nodes that a GPU provider left to another one. Its `label`
is what run.json lists, so a GPU session that fell back to CPU is never silent.

TensorRT engines are built into a private folder under a lock and published by an atomic
rename into the keyed cache folder (`EngineCacheKey`), so no process ever reads an engine
another one is still writing.

`SessionRunner` runs a session with minimal per-call work: on a GPU, inputs live in device
buffers refreshed in place and outputs are bound once to device buffers, copied to the host
only when read; on CPU it is a plain `session.run`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import platform
import secrets
import shutil
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from fusionray.config import GpuConfig
from fusionray.errors import ConfigError, ModelError, first_line
from fusionray.models.catalog import ModelSpec
from fusionray.models.device import DevicePlan, probe_device
from fusionray.models.providers import (
    CPU,
    NVIDIA_PROVIDERS,
    PROVIDER_NAMES,
    TENSORRT,
    Attempt,
    EngineCacheKey,
    SessionFacts,
    plan_provider_attempts,
    resolve_provider_names,
)

log = logging.getLogger(__name__)

__all__ = ["CPU_PROVIDER", "PROVIDER_NAMES", "OpenedSession", "SessionRunner", "check_contract",
           "create_session", "describe_node_placement", "nvidia_device_visible", "open_session",
           "resolve_provider_names"]

CPU_PROVIDER = CPU

ENGINE_READY = "fusionray-engine.json"
"""Marker written last into a TensorRT cache folder before it is published."""

ENGINE_LOCK_TIMEOUT_SECONDS = 1800.0
"""How long a process waits for another one building the same engine before building its own
into a private folder (TensorRT builds of large graphs take minutes)."""


def nvidia_device_visible() -> bool:
    """Whether an NVIDIA driver and device are present (and not hidden by CUDA_VISIBLE_DEVICES).

    onnxruntime-gpu lists CUDA as available on any Linux x86_64 machine; trying it without a
    device prints a multi-line library error before falling back, so look first.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


@dataclass(frozen=True)
class OpenedSession:
    """A session and an honest account of where it runs."""

    session: ort.InferenceSession
    provider: str
    """ORT name of the provider the session was opened for, e.g. `CUDAExecutionProvider`."""
    device: DevicePlan
    """The GPU plan of this process (device_id None: CPU only)."""
    failed: tuple[tuple[str, str], ...] = ()
    """(provider, reason) for providers that were tried, or that the process was meant to have
    (a GPU present but none assigned), and did not run the session."""
    node_placement: str | None = None
    """e.g. `3 of 412 nodes on CPUExecutionProvider (Shape x2, Gather)`; None when every node
    is on `provider` (or the build cannot tell)."""
    engine_folder: Path | None = None
    """TensorRT: the published engine cache folder in use."""
    max_batch: int | None = None
    """TensorRT with a dynamic batch: the largest batch its engine takes (the profile max)."""

    @property
    def label(self) -> str:
        """What run.json shows: the provider, and what did not go as configured."""
        notes = [f"{name}: {reason}" for name, reason in self.failed]
        if self.node_placement:
            notes.append(self.node_placement)
        return f"{self.provider} ({'; '.join(notes)})" if notes else self.provider

    @property
    def on_gpu(self) -> bool:
        return self.provider in NVIDIA_PROVIDERS


def _session_options(threads: int, *, strict_nodes: bool = False,
                     optimized: bool = False) -> ort.SessionOptions:
    """`optimized`: the graph is one ORT already optimised (`cpu_graph_cache_path`): nothing
    is left to do at load."""
    options = ort.SessionOptions()
    # Fixed thread counts and sequential execution make CPU results reproducible run to run and
    # keep several actors on one node from oversubscribing its cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    # Converted graphs (e.g. BlazeFace) carry unused initializers; ORT warns about each one.
    # That level also hides ORT's "nodes not assigned to the preferred execution provider"
    # warning, so the placement is recorded and reported by fusionray instead.
    options.log_severity_level = 3
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    # No busy-waiting: ORT's pool threads otherwise spin after every parallel section and every
    # run, on cores the actor's other steps (decode, paste, encode) and the node's other actors
    # need. Measured on the 2-core VM, render stage with BlazeFace + verifier + classic swap:
    # 104.7 -> 49.8 ms CPU and 54.4 -> 37.6 ms wall per frame; the inswapper stand-in alone on
    # both cores is unchanged within noise (benchmarks/RESULTS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if strict_nodes:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return options


def node_assignment(session: ort.InferenceSession) -> dict[str, list[str]] | None:
    """Op types of the session's nodes per provider; None when this ORT cannot tell."""
    getter = getattr(session, "get_provider_graph_assignment_info", None)
    if getter is None:
        return None
    try:
        subgraphs = getter()
    except Exception:  # Older builds raise when recording was not switched on.
        return None
    placement: dict[str, list[str]] = {}
    for subgraph in subgraphs:
        placement.setdefault(subgraph.ep_name, []).extend(
            node.op_type for node in subgraph.get_nodes())
    return placement


def describe_node_placement(placement: Mapping[str, Sequence[str]], provider: str) -> str | None:
    """One line naming the nodes that are not on `provider`; None when all are (pure).

    ORT deliberately keeps small shape computations (Shape, Gather on shapes) on CPU, so such
    ops can appear here on a healthy GPU session; a Conv or Gemm here is a real problem.
    """
    total = sum(len(ops) for ops in placement.values())
    if total == 0:
        return None
    parts = []
    for name in sorted(placement, key=lambda n: (-len(placement[n]), n)):
        if name == provider or not placement[name]:
            continue
        counts = Counter(placement[name]).most_common()
        ops = ", ".join(f"{op} x{count}" if count > 1 else op for op, count in counts[:4])
        more = f", +{len(counts) - 4} op types" if len(counts) > 4 else ""
        parts.append(f"{len(placement[name])} of {total} nodes on {name} ({ops}{more})")
    return "; ".join(parts) or None


@functools.cache
def load_gpu_libraries() -> str | None:
    """Load the CUDA, cuDNN and TensorRT libraries from pip packages or the system, once per
    process; returns what failed to load (None when all did)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(Exception):
        ort.preload_dlls()
    failures = [line for line in printed.getvalue().splitlines() if line.startswith("Failed")]
    import ctypes

    folders = []
    with contextlib.suppress(ImportError):
        import tensorrt_libs

        folders.append(Path(tensorrt_libs.__file__).parent)
    for library in ("libnvinfer.so.10", "libnvonnxparser.so.10"):
        candidates = [str(folder / library) for folder in folders] + [library]
        for candidate in candidates:
            try:
                ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
        else:
            failures.append(f"Failed to load {library}")
    return "; ".join(failures) or None


def tensorrt_version() -> str:
    """The TensorRT library version this process would load (e.g. `10.13.3`), or `unknown`."""
    import ctypes

    load_gpu_libraries()
    try:
        library = ctypes.CDLL("libnvinfer.so.10")
        number = int(library.getInferLibVersion())
    except (OSError, AttributeError):
        return "unknown"
    # TensorRT >= 10 encodes major*10000 + minor*100 + patch.
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


@functools.cache
def cpu_fingerprint() -> str:
    """This CPU's model name and instruction-set flags (what ORT's CPU kernels and layout
    transforms depend on), e.g. for keying optimised graphs."""
    with contextlib.suppress(OSError):
        facts: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags", "Features", "CPU implementer", "CPU part"):
                facts.setdefault(key, value.strip())
        if facts:
            return json.dumps(facts, sort_keys=True)
    return f"{platform.machine()} {platform.processor()}"


CPU_GRAPH_CACHE_MIN_BYTES = 32 << 20
"""Model files smaller than this are optimised at every open: a detector of a few MB takes
milliseconds, so a cached copy would only add files to the model cache."""

CPU_GRAPH_FORMAT = 2
"""Layout of the cached graphs, part of their key. 2: the weights in a data file of their own
beside the graph, which ORT maps into memory instead of copying (1: one self-contained file)."""

CPU_GRAPH_DATA_MIN_BYTES = 1024
"""Initializers of at least this many bytes go to the cached graph's data file."""


def cpu_graph_cache_path(model: Path, root: Path) -> Path:
    """Where ORT's CPU-optimised graph of the model file `model` is kept under `root`.

    ORT_ENABLE_ALL's layout transforms take seconds on a large graph (3.6 s for inswapper_128)
    and are specific to the CPU and the ORT version, so the key covers the file (path, size,
    modification time: the model store has verified its bytes), ORT's version, this CPU's
    flags and `CPU_GRAPH_FORMAT`. The graph's weights are in a data file beside it
    (`<name>.<token>.data`, named in the graph), mapped at load: inswapper_128's session opens
    in 0.03 s instead of 0.5-1.2 s, and the processes of a node share one copy of the weights
    in the page cache. Nothing is rewritten in place: a writer saves under names of its own
    and publishes the graph by a rename (`_publish_cpu_graph`), so no process maps a data file
    another one is still writing.
    """
    stat = model.stat()
    key = hashlib.sha256(json.dumps(
        [str(model.resolve()), stat.st_size, stat.st_mtime_ns, ort.__version__,
         cpu_fingerprint(), CPU_GRAPH_FORMAT]).encode()).hexdigest()[:16]
    return root / f"{model.stem}.{key}.onnx"


def _open_cpu_cached(model: Path, threads: int, root: Path) -> ort.InferenceSession:
    """A CPU session of `model` from its cached optimised graph, optimising and saving it first
    where there is none (`cpu_graph_cache_path`)."""
    cached = cpu_graph_cache_path(model, root)
    plain = _session_options(threads)
    if model.stat().st_size < CPU_GRAPH_CACHE_MIN_BYTES:
        return ort.InferenceSession(str(model), sess_options=plain, providers=[CPU])
    if cached.is_file():
        try:
            return ort.InferenceSession(str(cached),
                                        sess_options=_session_options(threads, optimized=True),
                                        providers=[CPU])
        except Exception as error:  # a damaged entry (graph or data file): rebuilt below
            log.warning("Optimised graph %s does not load (%s); optimising again", cached,
                        _first_line(error))
            cached.unlink(missing_ok=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only or odd cache: optimise as if there were none
        log.info("No CPU graph cache at %s (%s)", root, error)
        return ort.InferenceSession(str(model), sess_options=plain, providers=[CPU])
    token = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    private = root / f".{cached.name}.{token}.tmp"
    data = root / f"{cached.stem}.{token}.data"
    plain.optimized_model_filepath = str(private)
    # The data file's name is written into the graph, relative to the graph's folder.
    plain.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", data.name)
    plain.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes",
        str(CPU_GRAPH_DATA_MIN_BYTES))
    published = False
    try:
        session = ort.InferenceSession(str(model), sess_options=plain, providers=[CPU])
        with contextlib.suppress(OSError):  # the session is good; only the cache missed
            published = _publish_cpu_graph(private, data, cached)
        return session
    finally:
        for leftover in (private,) if published else (private, data):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


def _publish_cpu_graph(private: Path, data: Path, cached: Path) -> bool:
    """Make the graph ORT saved at `private` (weights in `data`) the cache entry `cached`.

    False, and nothing published, where ORT saved no graph or another process published this
    key first (its entry is kept: a reader may be opening it). After publishing, the data and
    temporary files other writers of this key left (a damaged entry's data, a writer killed
    mid-save) are removed: the published graph names only `data`, and no process can still be
    about to map them, since a key is only published where it had no graph.
    """
    if not private.is_file() or cached.exists():
        return False
    if data.is_file() and data.stat().st_size == 0:  # no weight was large enough to move out
        data.unlink()
    os.replace(private, cached)
    for stale in (*cached.parent.glob(f"{cached.stem}.*.data"),
                  *cached.parent.glob(f".{cached.name}.*.tmp")):
        if stale != data:
            with contextlib.suppress(OSError):
                stale.unlink()
    return True


def file_digest(model: Path | bytes) -> str:
    """sha256 hex digest of a model file (or of its bytes)."""
    if isinstance(model, bytes):
        return hashlib.sha256(model).hexdigest()
    digest = hashlib.sha256()
    with model.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def open_session(
    model: Path | bytes,
    *,
    providers: Sequence[str] = ("cpu",),
    threads: int = 1,
    gpu: GpuConfig | None = None,
    engine_root: Path | None = None,
    fp16: bool = False,
    fallback_to_cpu: bool = True,
    device: DevicePlan | None = None,
    graph_cache: Path | None = None,
) -> OpenedSession:
    """Open an ONNX model on the first provider chain that works.

    Args:
        model: path of the .onnx file, or its bytes.
        providers: short names, tried in order (see `PROVIDER_NAMES`).
        threads: intra-op CPU threads (>= 1).
        gpu: GPU settings (default: `GpuConfig()`).
        engine_root: `<model cache>/tensorrt` (None: TensorRT engines are not cached).
        fp16: build TensorRT engines with fp16 kernels.
        fallback_to_cpu: append CPU as the last resort when the list lacks it. False: when
            none of the listed providers can run here, fail with a ConfigError that says which
            are available (the user asked for, say, only `tensorrt`).
        device: the GPU plan (default: probed from Ray and the driver, only when a GPU
            provider is listed).
        graph_cache: `<model cache>/ort-cpu`: CPU sessions of a model file load the graph ORT
            optimised for this CPU before (`cpu_graph_cache_path`); None: optimise every time.

    Raises:
        ConfigError: unknown provider name, `threads` < 1, or (without CPU fallback) no listed
            provider can run here.
        ModelError: the model cannot be loaded even on CPU.
    """
    if threads < 1:
        raise ConfigError(f"Invalid threads={threads!r}: must be >= 1")
    settings = gpu or GpuConfig()
    wanted = resolve_provider_names(providers)
    available = frozenset(ort.get_available_providers())
    wants_gpu = any(p in available for p in wanted if p in NVIDIA_PROVIDERS)
    driver = nvidia_device_visible()
    if device is None:
        device = probe_device() if wants_gpu and driver else DevicePlan(
            device_id=None, reason="no NVIDIA GPU visible on this machine")
    facts = SessionFacts(available=available, device=device, driver_present=driver)
    library_failure = None
    if wants_gpu and device.device_id is not None and driver:
        library_failure = load_gpu_libraries()
        if library_failure:
            log.info("GPU libraries: %s", library_failure)
        inputs: tuple[tuple[str, tuple[Any, ...]], ...] = ()
        key = None
        if TENSORRT in wanted and TENSORRT in available:
            # The TensorRT profile needs the graph's input shapes before the session opens.
            inputs = tuple((i.name, tuple(i.shape))
                           for i in _cpu_session(model, threads).get_inputs())
            key = _engine_key(model, device)
            if key is None and settings.engine_cache:
                log.warning("TensorRT engine cache off for %s: the card's model is unknown "
                            "(nvidia-smi did not answer)", _describe(model))
        facts = SessionFacts(available=available, device=device, driver_present=driver,
                             inputs=inputs, engine_key=key, engine_root=engine_root)
    plan = plan_provider_attempts(providers, facts, settings, fp16=fp16,
                                  fallback_to_cpu=fallback_to_cpu)
    reported: list[tuple[str, str]] = []
    for name, reason in plan.skipped:
        log.info("Skipping %s: %s", name, reason)
        # A GPU the machine has but this process was not given is worth saying in run.json;
        # a provider this build or machine simply lacks is not.
        if name in NVIDIA_PROVIDERS and driver and device.device_id is None:
            reported.append((name, reason))
    reasons = [f"{name}: {reason}" for name, reason in plan.skipped]
    source = str(model) if isinstance(model, Path) else model
    for attempt in plan.attempts:
        try:
            session, folder = _open_attempt(source, attempt, threads, settings, graph_cache)
        except Exception as error:  # ORT raises bare RuntimeError/Fail subclasses.
            if attempt.provider == CPU:
                raise ModelError(f"Cannot load model {_describe(model)}: {error}") from error
            reason = f"failed to start ({_first_line(error)})"
            log.warning("Skipping %s: it %s", attempt.provider, reason)
            reported.append((attempt.provider, reason))
            reasons.append(f"{attempt.provider}: {reason}")
            continue
        used = session.get_providers()[0]
        if used != attempt.provider:
            # ORT silently falls back when a device is missing (e.g. CUDA without a GPU).
            reason = "did not initialise (" + (
                _clip(library_failure) if library_failure else "no usable device?") + ")"
            log.warning("Skipping %s: it %s", attempt.provider, reason)
            reported.append((attempt.provider, reason))
            reasons.append(f"{attempt.provider}: {reason}")
            continue
        placement = node_assignment(session)
        placed = describe_node_placement(placement, used) if placement else None
        if placed:
            log.warning("%s: %s", used, placed)
        options = dict(attempt.chain[0][1])
        max_batch = None
        if used == TENSORRT and "trt_profile_max_shapes" in options:
            max_batch = int(options["trt_profile_max_shapes"].split(":")[1].split("x")[0])
        if used != CPU:
            log.info("Opened %s on %s (device %s, options %s)", _describe(model), used,
                     device.device_id, options)
        return OpenedSession(session=session, provider=used, device=device,
                             failed=tuple(reported), node_placement=placed,
                             engine_folder=folder, max_batch=max_batch)
    if not fallback_to_cpu:
        usable = [short for short, name in PROVIDER_NAMES.items() if name in available]
        raise ConfigError(
            f"None of the providers {list(providers)} can run {_describe(model)} here: "
            + "; ".join(reasons) + ". Pick another provider (this onnxruntime has: "
            + ", ".join(usable) + "), or add cpu to the list as a fallback"
        )
    raise ModelError(f"Cannot load model {_describe(model)}: no provider could run it")


def create_session(
    model: Path | bytes,
    *,
    providers: Sequence[str] = ("cpu",),
    threads: int = 1,
    engine_cache_dir: Path | None = None,
    fallback_to_cpu: bool = True,
) -> tuple[ort.InferenceSession, str]:
    """`open_session` with default GPU settings, for callers that need only the session and
    the ORT name of its provider (e.g. `CPUExecutionProvider`). See `open_session`."""
    opened = open_session(model, providers=providers, threads=threads,
                          engine_root=engine_cache_dir, fallback_to_cpu=fallback_to_cpu)
    return opened.session, opened.provider


def _cpu_session(model: Path | bytes, threads: int) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model
    options = _session_options(threads)
    # Only the input metadata is read; skip the graph optimisations.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(source, sess_options=options, providers=[CPU])
    except Exception as error:
        raise ModelError(f"Cannot load model {_describe(model)}: {error}") from error


def _engine_key(model: Path | bytes, device: DevicePlan) -> EngineCacheKey | None:
    if device.card is None:
        return None  # Without the card's model and compute capability a key could collide.
    return EngineCacheKey(
        model_digest=file_digest(model), gpu_name=device.card.name,
        compute_capability=device.card.compute_capability,
        tensorrt_version=tensorrt_version(), ort_version=ort.__version__,
        fp16=False, profile="")


def _open_attempt(
    source: str | bytes, attempt: Attempt, threads: int, settings: GpuConfig,
    graph_cache: Path | None = None,
) -> tuple[ort.InferenceSession, Path | None]:
    strict = settings.require_all_nodes and attempt.provider != CPU
    if attempt.provider == CPU and graph_cache is not None and isinstance(source, str):
        return _open_cpu_cached(Path(source), threads, graph_cache), None

    def build(chain: Sequence[tuple[str, dict[str, str]]]) -> ort.InferenceSession:
        return ort.InferenceSession(source, sess_options=_session_options(threads,
                                                                          strict_nodes=strict),
                                    providers=[(name, dict(opts)) for name, opts in chain])

    folder = attempt.engine_folder
    if attempt.provider != TENSORRT or folder is None:
        return build(attempt.chain), None
    if (folder / ENGINE_READY).is_file():
        return build(attempt.chain), folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(folder.parent / f".{folder.name}.lock") as locked:
        if locked and (folder / ENGINE_READY).is_file():
            return build(attempt.chain), folder  # Built by another process while we waited.
        private = folder.parent / f".{folder.name}.{socket.gethostname()}.{os.getpid()}.tmp"
        shutil.rmtree(private, ignore_errors=True)
        private.mkdir()
        try:
            # With explicit profiles (or a static graph) TensorRT builds while the session
            # opens, so the engine and timing cache are complete when it returns.
            started = time.perf_counter()
            session = build(_with_cache_folder(attempt.chain, private))
            (private / ENGINE_READY).write_text(json.dumps({
                "built_seconds": round(time.perf_counter() - started, 1),
                "host": socket.gethostname(), "pid": os.getpid(),
                "options": attempt.chain[0][1]}, indent=1))
            if not locked:
                log.warning("TensorRT engine for %s built privately (another process held the "
                            "cache lock too long); not published", folder.name)
                return session, None
            try:
                os.rename(private, folder)  # Atomic: readers see all of it or nothing.
            except OSError:
                # Another node (no shared lock over NFS) published the same key first.
                shutil.rmtree(private, ignore_errors=True)
            del session
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
    # Reopen from the published folder (a deserialise, seconds): the live session then never
    # refers to a folder that was renamed away.
    return build(attempt.chain), folder


def _with_cache_folder(
    chain: Sequence[tuple[str, dict[str, str]]], folder: Path
) -> list[tuple[str, dict[str, str]]]:
    out = []
    for name, options in chain:
        if name == TENSORRT:
            options = {**options, "trt_engine_cache_path": str(folder),
                       "trt_timing_cache_path": str(folder)}
        out.append((name, options))
    return out


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout: float = ENGINE_LOCK_TIMEOUT_SECONDS) -> Iterator[bool]:
    """Hold an exclusive advisory lock on `path`; yields False when it timed out (or this OS
    has no flock), True when held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rename alone keeps readers safe.
        yield False
        return
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                 "tensor(double)": np.float64, "tensor(int64)": np.int64,
                 "tensor(uint8)": np.uint8, "tensor(int32)": np.int32}


@dataclass
class _Bound:
    """Device buffers and a binding for one set of input shapes."""

    binding: Any
    inputs: list[ort.OrtValue]
    outputs: list[ort.OrtValue]


@dataclass
class SessionRunner:
    """Run one session call after call with as little per-call work as the provider allows.

    On CUDA/TensorRT the inputs are device `OrtValue`s refreshed in place (`update_inplace`,
    one host-to-device copy, no allocation) and the outputs are bound once to device buffers;
    a call copies to the host only the outputs asked for. Buffers are kept per input shape
    for the few most recent shapes (a batched model sees the full batch and a remainder). On
    any other provider a call is a plain `session.run`. Output shapes must follow from the
    input shapes (true of every catalogued model: no data-dependent outputs such as NMS).
    """

    opened: OpenedSession
    shapes_kept: int = 4
    """Distinct input-shape sets whose device buffers are kept (least recently used dropped)."""
    _cache: OrderedDict[tuple[tuple[int, ...], ...], _Bound] = field(
        default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        session = self.opened.session
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        self.input_names = [node.name for node in inputs]
        self.input_dtypes = [_NUMPY_DTYPES.get(node.type, np.float32) for node in inputs]
        self.output_names = [node.name for node in outputs]
        self.output_dtypes = [_NUMPY_DTYPES.get(node.type, np.float32) for node in outputs]
        self.device_resident = self.opened.on_gpu
        self._device_id = self.opened.device.device_id or 0

    def run(self, *inputs: np.ndarray, outputs: Sequence[int] | None = None) -> list[np.ndarray]:
        """Run on positional inputs (graph input order).

        Args:
            inputs: one array per graph input, cast to its dtype.
            outputs: indices of the outputs to return (default all), in graph order.
        """
        arrays = [np.ascontiguousarray(array, dtype=dtype)
                  for array, dtype in zip(inputs, self.input_dtypes, strict=True)]
        wanted = range(len(self.output_names)) if outputs is None else outputs
        session = self.opened.session
        if not self.device_resident:
            names = [self.output_names[i] for i in wanted]
            return list(session.run(names, dict(zip(self.input_names, arrays, strict=True))))
        key = tuple(array.shape for array in arrays)
        bound = self._cache.get(key)
        if bound is None:
            return self._first_run(key, arrays, wanted)
        self._cache.move_to_end(key)
        for value, array in zip(bound.inputs, arrays, strict=True):
            value.update_inplace(array)
        session.run_with_iobinding(bound.binding)
        return [bound.outputs[i].numpy() for i in wanted]

    def _first_run(self, key: tuple[tuple[int, ...], ...], arrays: Sequence[np.ndarray],
                   wanted: Sequence[int]) -> list[np.ndarray]:
        """Allocate device inputs for a new shape set, run once letting ORT allocate the
        outputs on the device, then bind those output buffers for every later call."""
        session = self.opened.session
        device = self._device_id
        values = [ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype, "cuda",
                                                            device) for a in arrays]
        binding = session.io_binding()
        for name, value, array in zip(self.input_names, values, arrays, strict=True):
            value.update_inplace(array)
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", device)
        session.run_with_iobinding(binding)
        produced = list(binding.get_outputs())
        binding.clear_binding_outputs()
        for name, value in zip(self.output_names, produced, strict=True):
            binding.bind_ortvalue_output(name, value)
        self._cache[key] = _Bound(binding=binding, inputs=values, outputs=produced)
        while len(self._cache) > self.shapes_kept:
            self._cache.popitem(last=False)
        return [produced[i].numpy() for i in wanted]


def _first_line(error: BaseException) -> str:
    return _clip(first_line(error))


def _clip(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[:limit - 3] + "..."


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(uint8)": "uint8"}


def check_contract(
    session: ort.InferenceSession, spec: ModelSpec, *, path: Path | str | None = None
) -> None:
    """Fail clearly when a loaded graph does not have the inputs and outputs `spec` promises.

    Names are compared where the catalogue fixes them; counts, ranks, fixed dimensions and
    element types always.

    Raises:
        ModelError: naming the file, what was expected and what was found.
    """
    where = f" ({path})" if path is not None else ""
    for kind, declared, actual in (
        ("input", spec.inputs, session.get_inputs()),
        ("output", spec.outputs, session.get_outputs()),
    ):
        got = [(node.name, tuple(node.shape), _ORT_DTYPES.get(node.type, node.type))
               for node in actual]
        want = [(tensor.name or "*", tensor.shape, tensor.dtype) for tensor in declared]
        if len(got) != len(want) or any(
            (w_name != "*" and g_name != w_name)
            or len(g_shape) != len(w_shape)
            or any(isinstance(a, int) and isinstance(b, int) and a != b
                   for a, b in zip(g_shape, w_shape, strict=True))
            or (g_type != w_type and {g_type, w_type} != {"float32", "float16"})
            for (g_name, g_shape, g_type), (w_name, w_shape, w_type) in zip(got, want,
                                                                            strict=True)
        ):
            raise ModelError(
                f"Model file{where} is not {spec.name}: its {kind}s are "
                f"{_format_tensors(got)}, expected {_format_tensors(want)}. "
                f"Pull it again (`fusionray models pull {spec.name}`) or import the right file."
            )


def _format_tensors(tensors: Sequence[tuple[str, tuple[Any, ...], str]]) -> str:
    return "[" + ", ".join(
        f"{name} {list(shape)} {dtype}" for name, shape, dtype in tensors
    ) + "]"


def _describe(model: Path | bytes) -> str:
    return str(model) if isinstance(model, Path) else f"<{len(model)} bytes>"
