"""Which execution providers a session tries, in which order, with which options (pure).

`plan_provider_attempts` turns the configured short names (`tensorrt`, `cuda`, `cpu`, ...) and
the facts of the process (what this onnxruntime build offers, the GPU Ray assigned, the card)
into ordered attempts. Each attempt is a full ORT provider chain: TensorRT is always followed
by CUDA (the nodes TensorRT cannot take run there, not on CPU) and every chain ends on CPU.
A provider that cannot apply is skipped *with its reason*, which the session factory reports.

TensorRT engines and timing caches live in `<model cache>/tensorrt/<key>/`, one folder per
(model file digest, card model and compute capability, TensorRT and ORT versions, precision,
batch profile), so actors and cards never share a file that is being written; see
`fusionray.models.session` for how a folder is built and published.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fusionray.config import GpuConfig, RenderConfig
from fusionray.errors import ConfigError, choices_message
from fusionray.models.device import DevicePlan, memory_limit_bytes

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

TENSORRT = PROVIDER_NAMES["tensorrt"]
CUDA = PROVIDER_NAMES["cuda"]
CPU = PROVIDER_NAMES["cpu"]
NVIDIA_PROVIDERS = (TENSORRT, CUDA)
"""Providers that open a CUDA context: only for a process that was given a GPU."""

GPU_CALL_BATCH = 8
"""Rows (faces or sub-images) per swapper call on a GPU provider when `swapper.batch` is 0
(auto); TensorRT engines are tuned for `gpu.tensorrt_batch_opt`, also 8 by default."""


def call_batch(provider: str) -> int:
    """Rows per swapper call for `swapper.batch: 0` (auto) on `provider` (an ORT name).

    One on CPU: there a batch only adds activation memory traffic (the inswapper stand-in at
    batch 8 took 3.5 % longer a face than at batch 1 on the 2-core machine, and the freed graph
    at batch 1 is as fast as the published one; benchmarks/RESULTS.md). `GPU_CALL_BATCH` on any
    other provider: a GPU is fed in batches.
    """
    return 1 if provider == CPU else GPU_CALL_BATCH


ProviderChain = tuple[tuple[str, dict[str, str]], ...]
"""What `ort.InferenceSession(providers=...)` takes: (ORT name, options) in priority order."""


@dataclass(frozen=True)
class TensorrtProfile:
    """A TensorRT optimisation profile: per input, its min / opt / max shape."""

    shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]
    """(input name, min shape, opt shape, max shape) for every input with a dynamic dimension."""

    def options(self) -> dict[str, str]:
        """The `trt_profile_*_shapes` provider options ("name:1x3x128x128,...")."""
        if not self.shapes:
            return {}
        def text(which: int) -> str:
            return ",".join(f"{name}:{'x'.join(str(d) for d in entry[which])}"
                            for name, *entry in self.shapes)
        return {"trt_profile_min_shapes": text(0), "trt_profile_opt_shapes": text(1),
                "trt_profile_max_shapes": text(2)}

    @property
    def key(self) -> str:
        """A short, file-name-safe description, e.g. `b1-8-32` (`static` when none)."""
        if not self.shapes:
            return "static"
        batches = {(entry[1][0], entry[2][0], entry[3][0]) for entry in self.shapes}
        if len(batches) == 1:
            low, opt, high = batches.pop()
            return f"b{low}-{opt}-{high}"
        return "p" + "_".join(
            f"{'x'.join(map(str, low))}-{'x'.join(map(str, high))}"
            for _, low, _, high in self.shapes)


def tensorrt_profile(
    inputs: Sequence[tuple[str, Sequence[Any]]], *, batch_opt: int, batch_max: int
) -> TensorrtProfile | None:
    """The explicit profile for a graph's inputs, or None when one cannot be derived (pure).

    Only a free first (batch) dimension is profiled: min 1, opt `batch_opt`, max `batch_max`,
    which is what the batching helper makes dynamic (inswapper's `target` and `source`,
    ArcFace's input). A free dimension anywhere else (e.g. SCRFD's height and width) has no
    value fusionray can know when the session opens; TensorRT would then build engines lazily
    at the first call, per shape, which cannot be published safely to a shared cache.

    Args:
        inputs: (name, shape) per graph input; a non-int entry is a free dimension.
        batch_opt, batch_max: the batch sizes to tune for and to accept.
    """
    shapes = []
    for name, shape in inputs:
        free = [axis for axis, dim in enumerate(shape) if not _is_fixed(dim)]
        if not free:
            continue
        if free != [0]:
            return None
        rest = tuple(int(d) for d in shape[1:])
        shapes.append((name, (1, *rest), (batch_opt, *rest), (batch_max, *rest)))
    return TensorrtProfile(shapes=tuple(shapes))


def _is_fixed(dim: Any) -> bool:
    return isinstance(dim, int) and dim > 0


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialised TensorRT engine depends on (one cache folder per key)."""

    model_digest: str
    """sha256 (hex) of the model file."""
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    ort_version: str
    fp16: bool
    profile: str
    """`TensorrtProfile.key`."""

    def folder_name(self) -> str:
        """A file-name-safe, human-readable folder name for this key."""
        parts = [self.model_digest[:16], _slug(self.gpu_name),
                 "sm" + self.compute_capability.replace(".", ""),
                 "trt" + _slug(self.tensorrt_version), "ort" + _slug(self.ort_version),
                 "fp16" if self.fp16 else "fp32", self.profile]
        return "-".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "unknown"


@dataclass(frozen=True)
class SessionFacts:
    """What the process and the model offer (probed by the session factory)."""

    available: frozenset[str]
    """`ort.get_available_providers()`."""
    device: DevicePlan
    """The GPU this process may use (`fusionray.models.device`)."""
    driver_present: bool
    """An NVIDIA driver answers on this machine (onnxruntime-gpu lists CUDA even without one)."""
    inputs: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """The graph's (input name, shape); for the TensorRT profile."""
    engine_key: EngineCacheKey | None = None
    """Set when a TensorRT engine cache folder can be keyed (None: no cache)."""
    engine_root: Path | None = None
    """`<model cache>/tensorrt`."""


@dataclass(frozen=True)
class Attempt:
    """One provider chain to try; its first entry is the provider the attempt is for."""

    provider: str
    chain: ProviderChain
    engine_folder: Path | None = None
    """TensorRT only: the keyed cache folder the engine is published to."""


@dataclass(frozen=True)
class ProviderPlan:
    """The attempts in order, and why each skipped provider was skipped."""

    attempts: tuple[Attempt, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())
    """(ORT provider name, reason), in config order."""


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


def cuda_options(device: DevicePlan, settings: GpuConfig) -> dict[str, str]:
    """CUDA provider options for the planned device (pure). ORT takes strings."""
    assert device.device_id is not None
    options = {
        "device_id": str(device.device_id),
        "arena_extend_strategy": {"same_as_requested": "kSameAsRequested",
                                  "next_power_of_two": "kNextPowerOfTwo"}[
                                      settings.arena_extend_strategy],
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search.upper(),
    }
    limit = memory_limit_bytes(device, limit_mb=settings.memory_limit_mb,
                               usable=settings.memory_usable)
    if limit is not None:
        options["gpu_mem_limit"] = str(limit)
    return options


def tensorrt_options(
    device: DevicePlan, settings: GpuConfig, *, fp16: bool, profile: TensorrtProfile,
    engine_folder: Path | None,
) -> dict[str, str]:
    """TensorRT provider options (pure).

    Args:
        device: the planned device.
        settings: the `gpu:` config.
        fp16: build fp16 kernels.
        profile: the explicit shape profile (empty for a static graph).
        engine_folder: where this key's engine and timing cache live (None: no cache).
    """
    assert device.device_id is not None
    options = {"device_id": str(device.device_id),
               "trt_fp16_enable": "1" if fp16 else "0",
               "trt_builder_optimization_level": str(settings.tensorrt_builder_level)}
    if settings.tensorrt_workspace_mb:
        options["trt_max_workspace_size"] = str(settings.tensorrt_workspace_mb * 2**20)
    if engine_folder is not None:
        options |= {"trt_engine_cache_enable": "1", "trt_engine_cache_path": str(engine_folder),
                    "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(engine_folder)}
    return options | profile.options()


def plan_provider_attempts(
    providers: Sequence[str], facts: SessionFacts, settings: GpuConfig, *,
    fp16: bool = False, fallback_to_cpu: bool = True,
) -> ProviderPlan:
    """The provider chains to try for one session, in order (pure; table-tested).

    Args:
        providers: configured short names, in order.
        facts: what the process and model offer.
        settings: the `gpu:` config.
        fp16: TensorRT engines in fp16 (the swapper's fp16 export, or `gpu.tensorrt_fp16`).
        fallback_to_cpu: end with a CPU attempt even when the list lacks `cpu`.

    Raises:
        ConfigError: an unknown provider name.
    """
    wanted = resolve_provider_names(providers)
    if CPU not in wanted and fallback_to_cpu:
        wanted.append(CPU)
    device = facts.device
    attempts: list[Attempt] = []
    skipped: list[tuple[str, str]] = []
    for provider in wanted:
        if provider not in facts.available:
            skipped.append((provider, "not available in this onnxruntime build"))
            continue
        if provider in NVIDIA_PROVIDERS:
            if device.device_id is None:
                skipped.append((provider, device.reason or "no GPU for this process"))
                continue
            if not facts.driver_present:
                skipped.append((provider, "no NVIDIA driver answers on this machine"))
                continue
        if provider == TENSORRT:
            profile = tensorrt_profile(facts.inputs, batch_opt=settings.tensorrt_batch_opt,
                                       batch_max=settings.tensorrt_batch_max)
            if profile is None:
                skipped.append((provider, "the graph has free dimensions other than the batch "
                                          "(no explicit TensorRT profile; CUDA runs it)"))
                continue
            folder = None
            if settings.engine_cache and facts.engine_key is not None and facts.engine_root:
                key = replace(facts.engine_key, fp16=fp16, profile=profile.key)
                folder = facts.engine_root / key.folder_name()
            chain: ProviderChain = (
                (TENSORRT, tensorrt_options(device, settings, fp16=fp16, profile=profile,
                                            engine_folder=folder)),
            )
            if CUDA in facts.available:
                chain += ((CUDA, cuda_options(device, settings)),)
            attempts.append(Attempt(TENSORRT, (*chain, (CPU, {})), engine_folder=folder))
        elif provider == CUDA:
            attempts.append(Attempt(CUDA, ((CUDA, cuda_options(device, settings)), (CPU, {}))))
        elif provider == CPU:
            attempts.append(Attempt(CPU, ((CPU, {}),)))
        else:
            attempts.append(Attempt(provider, ((provider, {}), (CPU, {}))))
    return ProviderPlan(attempts=tuple(attempts), skipped=tuple(skipped))


def wants_fp16_engines(model_name: str, settings: GpuConfig) -> bool:
    """TensorRT fp16 for a model: asked for everywhere (`gpu.tensorrt_fp16`), or the model is a
    float16 export (catalogue names ending `_fp16`, which `swapper.fp16` selects; their graph
    inputs stay float32, so the name is the signal)."""
    return settings.tensorrt_fp16 or model_name.endswith("_fp16")


def driver_providers(providers: Sequence[str]) -> tuple[str, ...]:
    """Providers for the driver's own models (source identity, reference face): CPU only.

    The driver embeds a handful of images. On a GPU provider it would hold a CUDA context on
    GPU 0 for the whole render, outside Ray's accounting and beside the actors that Ray put
    there, so it never uses one, whatever the pools use.
    """
    resolve_provider_names(providers)  # Still reject a typo early.
    return ("cpu",)


def driver_config(config: RenderConfig) -> RenderConfig:
    """`config` with the detector and recognizer on `driver_providers`: what the driver opens
    its own detector and embedder with (the actors keep the configured providers)."""
    return replace(
        config,
        detector=replace(config.detector, providers=driver_providers(config.detector.providers)),
        swapper=replace(config.swapper, providers=driver_providers(config.swapper.providers)),
    )
