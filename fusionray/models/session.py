"""ONNX Runtime sessions: the only place fusionray imports onnxruntime.

Providers are asked for by short name, tried in order, and skipped with a logged reason when the
installed onnxruntime lacks them or they fail to start (no device); CPU is always the last resort.
The provider actually used is returned so the run summary can report it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from fusionray.errors import ConfigError, ModelError, choices_message
from fusionray.models.catalog import ModelSpec

log = logging.getLogger(__name__)

PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""Short provider names accepted in config, and the ORT provider each one means."""

CPU_PROVIDER = PROVIDER_NAMES["cpu"]

_NVIDIA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def nvidia_device_visible() -> bool:
    """Whether an NVIDIA driver and device are present (and not hidden by CUDA_VISIBLE_DEVICES).

    onnxruntime-gpu lists CUDA as available on any Linux x86_64 machine; trying it without a
    device prints a multi-line library error before falling back, so look first.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def resolve_provider_names(providers: Sequence[str]) -> list[str]:
    """Map short names to ORT provider names, in order, without duplicates.

    Raises:
        ConfigError: a name is not one of `PROVIDER_NAMES`.
    """
    resolved: list[str] = []
    for short in providers:
        if short not in PROVIDER_NAMES:
            raise ConfigError(choices_message("execution provider", short, list(PROVIDER_NAMES)))
        if PROVIDER_NAMES[short] not in resolved:
            resolved.append(PROVIDER_NAMES[short])
    return resolved


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Fixed thread counts and sequential execution make CPU results reproducible run to run and
    # keep several actors on one node from oversubscribing its cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Converted graphs (e.g. BlazeFace) carry unused initializers; ORT warns about each one.
    options.log_severity_level = 3
    return options


def _provider_options(provider: str, cache_dir: Path | None) -> dict[str, Any]:
    if provider == "TensorrtExecutionProvider" and cache_dir is not None:
        # Building a TensorRT engine takes minutes; cache it beside the models.
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)}
    return {}


def create_session(
    model: Path | bytes,
    *,
    providers: Sequence[str] = ("cpu",),
    threads: int = 1,
    engine_cache_dir: Path | None = None,
    fallback_to_cpu: bool = True,
) -> tuple[ort.InferenceSession, str]:
    """Open an ONNX model on the first provider in `providers` that works.

    Args:
        model: path of the .onnx file, or its bytes.
        providers: short names, tried in order (see `PROVIDER_NAMES`); CPU is appended if absent.
        threads: intra-op CPU threads (>= 1).
        engine_cache_dir: where TensorRT may cache built engines.
        fallback_to_cpu: append CPU as the last resort when the list lacks it. False: when
            none of the listed providers can run here, fail with a ConfigError that says which
            are available (the user asked for, say, only `tensorrt`).

    Returns:
        The session and the ORT name of the provider it runs on, e.g. `CPUExecutionProvider`.

    Raises:
        ConfigError: unknown provider name, `threads` < 1, or (without CPU fallback) no listed
            provider can run here.
        ModelError: the model cannot be loaded even on CPU.
    """
    if threads < 1:
        raise ConfigError(f"Invalid threads={threads!r}: must be >= 1")
    wanted = resolve_provider_names(providers)
    if CPU_PROVIDER not in wanted and fallback_to_cpu:
        wanted.append(CPU_PROVIDER)
    available = set(ort.get_available_providers())
    source = str(model) if isinstance(model, Path) else model
    reasons: list[str] = []
    for provider in wanted:
        if provider not in available:
            log.info("Skipping %s: not available in this onnxruntime build", provider)
            reasons.append(f"{provider}: not available in this onnxruntime build")
            continue
        if provider in _NVIDIA_PROVIDERS and not nvidia_device_visible():
            log.info("Skipping %s: no NVIDIA GPU visible on this machine", provider)
            reasons.append(f"{provider}: no NVIDIA GPU visible on this machine")
            continue
        chain: list[Any] = [(provider, _provider_options(provider, engine_cache_dir))]
        if provider != CPU_PROVIDER:
            chain.append(CPU_PROVIDER)
        try:
            session = ort.InferenceSession(
                source, sess_options=_session_options(threads), providers=chain
            )
        except Exception as error:  # ORT raises bare RuntimeError/Fail subclasses.
            if provider == CPU_PROVIDER:
                raise ModelError(f"Cannot load model {_describe(model)}: {error}") from error
            log.warning("Skipping %s: it failed to start (%s)", provider, error)
            reasons.append(f"{provider}: failed to start ({error})")
            continue
        used = session.get_providers()[0]
        if used != provider:
            # ORT silently falls back when a device is missing (e.g. CUDA without a GPU).
            log.warning("Skipping %s: it did not initialise (no usable device?)", provider)
            reasons.append(f"{provider}: did not initialise (no usable device?)")
            continue
        return session, used
    if not fallback_to_cpu:
        usable = [short for short, name in PROVIDER_NAMES.items() if name in available]
        raise ConfigError(
            f"None of the providers {list(providers)} can run {_describe(model)} here: "
            + "; ".join(reasons) + ". Pick another provider (this onnxruntime has: "
            + ", ".join(usable) + "), or add cpu to the list as a fallback"
        )
    raise ModelError(f"Cannot load model {_describe(model)}: no provider could run it")


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
