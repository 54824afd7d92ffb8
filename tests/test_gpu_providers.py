"""GPU decisions as pure functions: device plan, memory cap, provider chains, TensorRT profiles
and cache keys, node-placement report, the driver's providers. No GPU needed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fusionray.config import GpuConfig, RenderConfig
from fusionray.errors import ConfigError
from fusionray.models.device import (
    NO_DEVICE_HIDDEN,
    NO_DEVICE_NO_CARD,
    NO_DEVICE_NOT_ASSIGNED,
    DevicePlan,
    GpuAssignment,
    GpuCard,
    memory_limit_bytes,
    parse_nvidia_smi,
    parse_visible_devices,
    plan_device,
    probe_assignment,
)
from fusionray.models.providers import (
    CPU,
    CUDA,
    TENSORRT,
    EngineCacheKey,
    SessionFacts,
    driver_config,
    driver_providers,
    plan_provider_attempts,
    tensorrt_profile,
    wants_fp16_engines,
)
from fusionray.models.session import describe_node_placement

GIB = 2**30
H200 = GpuCard(index=0, uuid="GPU-aaaa-0000", name="NVIDIA H200", memory_bytes=141 * GIB,
               compute_capability="9.0")
H200_B = replace(H200, index=1, uuid="GPU-bbbb-1111")
CARDS = (H200, H200_B)


@pytest.mark.parametrize(("assignment", "device_id", "card", "fraction", "reason"), [
    # A Ray actor with no GPU sees every card (Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone)
    # and still must not use one.
    (GpuAssignment(in_ray_worker=True, gpu_ids=(), gpu_fraction=0.0), None, None, 1.0,
     NO_DEVICE_NOT_ASSIGNED),
    # Ray assigned card 1 and set CUDA_VISIBLE_DEVICES=1: the process sees it as device 0.
    (GpuAssignment(in_ray_worker=True, gpu_ids=("1",), gpu_fraction=0.5,
                   visible_devices=("1",)), 0, H200_B, 0.5, ""),
    # Several cards visible (the variable set before Ray): position in the list.
    (GpuAssignment(in_ray_worker=True, gpu_ids=("1",), gpu_fraction=1.0,
                   visible_devices=("0", "1")), 1, H200_B, 1.0, ""),
    # UUIDs in CUDA_VISIBLE_DEVICES.
    (GpuAssignment(in_ray_worker=True, gpu_ids=("GPU-bbbb-1111",), gpu_fraction=0.25,
                   visible_devices=("GPU-bbbb-1111",)), 0, H200_B, 0.25, ""),
    # Two whole GPUs: the first is used, and the plan says so.
    (GpuAssignment(in_ray_worker=True, gpu_ids=("0", "1"), gpu_fraction=2.0,
                   visible_devices=("0", "1")), 0, H200, 1.0,
     "2 GPUs assigned; sessions use the first"),
    # Outside Ray: the first visible card, whole.
    (GpuAssignment(in_ray_worker=False, visible_devices=None), 0, H200, 1.0, ""),
    (GpuAssignment(in_ray_worker=False, visible_devices=("1",)), 0, H200_B, 1.0, ""),
    (GpuAssignment(in_ray_worker=False, visible_devices=()), None, None, 1.0, NO_DEVICE_HIDDEN),
])
def test_plan_device(assignment: GpuAssignment, device_id: int | None, card: GpuCard | None,
                     fraction: float, reason: str) -> None:
    plan = plan_device(assignment, CARDS)
    assert (plan.device_id, plan.card, plan.fraction, plan.reason) == (
        device_id, card, fraction, reason)


def test_plan_device_without_driver_answer() -> None:
    outside = plan_device(GpuAssignment(in_ray_worker=False), ())
    assert outside.device_id is None and outside.reason == NO_DEVICE_NO_CARD
    # Ray's assignment is still honoured; only the card's memory is unknown (no cap derived).
    actor = plan_device(GpuAssignment(in_ray_worker=True, gpu_ids=("0",), gpu_fraction=0.5,
                                      visible_devices=("0",)), ())
    assert actor.device_id == 0 and actor.card is None
    assert memory_limit_bytes(actor, limit_mb=0, usable=0.8) is None
    assert memory_limit_bytes(actor, limit_mb=2048, usable=0.8) == 2048 * 2**20


@pytest.mark.parametrize(("fraction", "limit_mb", "usable", "expected_mib"), [
    (1.0, 0, 1.0, 141 * 1024),
    (0.5, 0, 0.8, int(141 * 1024 * 0.5 * 0.8)),
    (0.25, 0, 0.8, int(141 * 1024 * 0.25 * 0.8)),
    (0.25, 6000, 0.8, 6000),  # A fixed cap wins over the fraction.
])
def test_memory_limit(fraction: float, limit_mb: int, usable: float, expected_mib: int) -> None:
    plan = DevicePlan(device_id=0, card=H200, fraction=fraction)
    assert memory_limit_bytes(plan, limit_mb=limit_mb, usable=usable) == expected_mib * 2**20
    assert memory_limit_bytes(DevicePlan(device_id=None), limit_mb=limit_mb,
                              usable=usable) is None


@pytest.mark.parametrize(("value", "parsed"), [
    (None, None), ("", ()), ("-1", ()), ("NoDevFiles", ()), ("0", ("0",)),
    ("2, 3", ("2", "3")), ("GPU-ab,GPU-cd", ("GPU-ab", "GPU-cd")),
])
def test_parse_visible_devices(value: str | None, parsed: tuple[str, ...] | None) -> None:
    assert parse_visible_devices(value) == parsed


def test_parse_nvidia_smi() -> None:
    text = ("0, GPU-aaaa-0000, NVIDIA H200, 144384, 9.0\n"
            "1, GPU-bbbb-1111, NVIDIA H100 80GB HBM3, 81559, 9.0\n"
            "[Not Supported]\n")
    cards = parse_nvidia_smi(text)
    assert [(c.index, c.name, c.memory_bytes // 2**20, c.compute_capability) for c in cards] == [
        (0, "NVIDIA H200", 144384, "9.0"), (1, "NVIDIA H100 80GB HBM3", 81559, "9.0")]


def test_probe_outside_ray_reads_the_environment() -> None:
    assignment = probe_assignment({"CUDA_VISIBLE_DEVICES": "3"})
    assert assignment == GpuAssignment(in_ray_worker=False, visible_devices=("3",))


ALL = frozenset({TENSORRT, CUDA, CPU})
GPU0 = DevicePlan(device_id=0, card=H200, fraction=0.5)
KEY = EngineCacheKey(model_digest="ab" * 32, gpu_name="NVIDIA H200", compute_capability="9.0",
                     tensorrt_version="10.13.3", ort_version="1.31.1", fp16=False, profile="")
BATCHED = (("target", ("batch", 3, 128, 128)), ("source", ("batch", 512)))


def _facts(device: DevicePlan = GPU0, *, available: frozenset[str] = ALL,
           driver: bool = True, inputs: tuple = BATCHED) -> SessionFacts:
    return SessionFacts(available=available, device=device, driver_present=driver,
                        inputs=inputs, engine_key=KEY, engine_root=Path("/cache/tensorrt"))


@pytest.mark.parametrize(("providers", "facts", "attempts", "skipped"), [
    # The default on a GPU actor: CUDA, then CPU.
    (("cuda", "cpu"), _facts(), [CUDA, CPU], []),
    # TensorRT first, then CUDA, then CPU: three attempts.
    (("tensorrt", "cuda", "cpu"), _facts(), [TENSORRT, CUDA, CPU], []),
    # An actor without a GPU never gets a CUDA or TensorRT attempt.
    (("tensorrt", "cuda", "cpu"), _facts(DevicePlan(device_id=None,
                                                    reason=NO_DEVICE_NOT_ASSIGNED)),
     [CPU], [(TENSORRT, NO_DEVICE_NOT_ASSIGNED), (CUDA, NO_DEVICE_NOT_ASSIGNED)]),
    # onnxruntime-gpu lists CUDA on a machine without a driver: skipped, not tried.
    (("cuda",), _facts(driver=False), [CPU],
     [(CUDA, "no NVIDIA driver answers on this machine")]),
    (("tensorrt", "cpu"), _facts(available=frozenset({CPU})), [CPU],
     [(TENSORRT, "not available in this onnxruntime build")]),
    # Free spatial dimensions: no explicit profile, so no TensorRT (CUDA runs it).
    (("tensorrt", "cuda"), _facts(inputs=(("input.1", (1, 3, "h", "w")),)), [CUDA, CPU],
     [(TENSORRT, "the graph has free dimensions other than the batch (no explicit TensorRT "
                 "profile; CUDA runs it)")]),
])
def test_plan_provider_attempts(providers: tuple[str, ...], facts: SessionFacts,
                                attempts: list[str], skipped: list[tuple[str, str]]) -> None:
    plan = plan_provider_attempts(providers, facts, GpuConfig())
    assert [a.provider for a in plan.attempts] == attempts
    assert list(plan.skipped) == skipped
    for attempt in plan.attempts:
        assert attempt.chain[0][0] == attempt.provider and attempt.chain[-1][0] == CPU


def test_strict_list_has_no_cpu_attempt() -> None:
    plan = plan_provider_attempts(("cuda",), _facts(), GpuConfig(), fallback_to_cpu=False)
    assert [a.provider for a in plan.attempts] == [CUDA]
    with pytest.raises(ConfigError, match="Unknown execution provider 'cudaa'"):
        plan_provider_attempts(("cudaa",), _facts(), GpuConfig())


def test_cuda_options_follow_the_device_and_fraction() -> None:
    plan = plan_provider_attempts(("cuda",), _facts(), GpuConfig(memory_usable=0.8))
    name, options = plan.attempts[0].chain[0]
    assert name == CUDA
    assert options == {
        "device_id": "0", "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "gpu_mem_limit": str(int(141 * 1024 * 0.5 * 0.8) * 2**20),
    }
    device_1 = replace(GPU0, device_id=1, card=H200_B, fraction=1.0)
    settings = GpuConfig(memory_limit_mb=4096, arena_extend_strategy="next_power_of_two",
                         cudnn_conv_algo_search="heuristic")
    options = plan_provider_attempts(("cuda",), _facts(device_1), settings).attempts[0].chain[0][1]
    assert (options["device_id"], options["gpu_mem_limit"], options["arena_extend_strategy"],
            options["cudnn_conv_algo_search"]) == ("1", str(4096 * 2**20), "kNextPowerOfTwo",
                                                   "HEURISTIC")


def test_tensorrt_options_profile_fp16_and_keyed_cache() -> None:
    settings = GpuConfig(tensorrt_batch_opt=8, tensorrt_batch_max=32, tensorrt_workspace_mb=2048,
                         tensorrt_builder_level=2)
    attempt = plan_provider_attempts(("tensorrt",), _facts(), settings, fp16=True).attempts[0]
    (trt, trt_options), (cuda, _), (cpu, _) = attempt.chain
    assert (trt, cuda, cpu) == (TENSORRT, CUDA, CPU)
    folder = Path("/cache/tensorrt") / (
        "abababababababab-NVIDIA_H200-sm90-trt10.13.3-ort1.31.1-fp16-b1-8-32")
    assert attempt.engine_folder == folder
    assert trt_options == {
        "device_id": "0", "trt_fp16_enable": "1", "trt_builder_optimization_level": "2",
        "trt_max_workspace_size": str(2048 * 2**20),
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(folder),
        "trt_profile_min_shapes": "target:1x3x128x128,source:1x512",
        "trt_profile_opt_shapes": "target:8x3x128x128,source:8x512",
        "trt_profile_max_shapes": "target:32x3x128x128,source:32x512",
    }
    # Every part of the key separates folders: fp32 and another profile do not share.
    fp32 = plan_provider_attempts(("tensorrt",), _facts(), settings).attempts[0]
    other = plan_provider_attempts(("tensorrt",), _facts(), replace(settings,
                                                                     tensorrt_batch_max=64))
    assert len({attempt.engine_folder, fp32.engine_folder, other.attempts[0].engine_folder}) == 3
    off = plan_provider_attempts(("tensorrt",), _facts(), replace(settings, engine_cache=False))
    assert off.attempts[0].engine_folder is None
    assert "trt_engine_cache_enable" not in off.attempts[0].chain[0][1]


def test_engine_key_separates_cards_and_versions() -> None:
    changes: tuple[dict[str, Any], ...] = (
        {}, {"gpu_name": "NVIDIA H100 80GB HBM3"}, {"compute_capability": "8.9"},
        {"tensorrt_version": "10.14.1"}, {"ort_version": "1.32.0"}, {"model_digest": "cd" * 32},
    )
    names = {replace(KEY, **change).folder_name() for change in changes}
    assert len(names) == 6
    assert all("/" not in name and " " not in name for name in names)


@pytest.mark.parametrize(("inputs", "profile"), [
    (BATCHED, "b1-8-32"),
    ((("input", (1, 3, 112, 112)),), "static"),
    ((("input", ("N", 3, 112, 112)),), "b1-8-32"),
    ((("input", (1, 3, "?", "?")),), None),
    ((("input", ("N", 3, "h", 640)),), None),
])
def test_tensorrt_profile(inputs: tuple, profile: str | None) -> None:
    result = tensorrt_profile(inputs, batch_opt=8, batch_max=32)
    assert (result.key if result else None) == profile


def test_fp16_engines_when_asked() -> None:
    assert wants_fp16_engines("inswapper_128_fp16", GpuConfig())
    assert not wants_fp16_engines("inswapper_128", GpuConfig())
    assert wants_fp16_engines("arcface_w600k_r50", GpuConfig(tensorrt_fp16=True))


def test_describe_node_placement() -> None:
    assert describe_node_placement({CUDA: ["Conv", "Relu"]}, CUDA) is None
    assert describe_node_placement({}, CUDA) is None
    placement = {CUDA: ["Conv"] * 6, CPU: ["Shape", "Shape", "Gather", "Resize"]}
    assert describe_node_placement(placement, CUDA) == (
        "4 of 10 nodes on CPUExecutionProvider (Shape x2, Gather, Resize)")
    many = {TENSORRT: ["Conv"] * 4, CUDA: ["A", "B", "C", "D", "E", "E"]}
    assert describe_node_placement(many, TENSORRT) == (
        "6 of 10 nodes on CUDAExecutionProvider (E x2, A, B, C, +1 op types)")


def test_driver_uses_cpu_whatever_the_pools_use() -> None:
    assert driver_providers(("tensorrt", "cuda")) == ("cpu",)
    with pytest.raises(ConfigError, match="Unknown execution provider"):
        driver_providers(("cudaa",))
    config = RenderConfig(video="demo")
    assert config.detector.providers == ("cuda", "cpu")
    on_driver = driver_config(config)
    assert on_driver.detector.providers == ("cpu",) and on_driver.swapper.providers == ("cpu",)
    assert replace(on_driver, detector=config.detector, swapper=config.swapper) == config


@pytest.mark.parametrize(("change", "message"), [
    ({"memory_usable": 0.0}, r"gpu\.memory_usable=0\.0: must be in \(0, 1\]"),
    ({"tensorrt_batch_opt": 16, "tensorrt_batch_max": 8}, r"gpu\.tensorrt_batch_max=8"),
    ({"arena_extend_strategy": "greedy"}, r"Unknown gpu\.arena_extend_strategy 'greedy'"),
    ({"decode": "gpu"}, r"Unknown gpu\.decode 'gpu'\. Choose one of: auto, cpu, nvdec"),
    ({"tensorrt_builder_level": 6}, r"gpu\.tensorrt_builder_level=6"),
])
def test_gpu_config_validation(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GpuConfig(**change)
