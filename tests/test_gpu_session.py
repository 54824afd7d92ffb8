"""The session factory's GPU behaviour: reported fallbacks, node placement, TensorRT engine
publication (lock, private folder, atomic rename), and the device-resident runner.

The CPU tests run everywhere; the `gpu`-marked ones open real CUDA and TensorRT sessions
(skipped unless FUSIONRAY_REQUIRE_GPU=1, which makes a missing GPU fail them loudly)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fusionray.models.session as session_module
from fusionray.config import GpuConfig
from fusionray.models.device import NO_DEVICE_NOT_ASSIGNED, DevicePlan, probe_device
from fusionray.models.providers import CPU, CUDA, TENSORRT, Attempt
from fusionray.models.session import (
    ENGINE_READY,
    OpenedSession,
    SessionRunner,
    node_assignment,
    open_session,
)


def _conv_model(batch: int | str = "batch") -> bytes:
    """y = relu(conv3x3(x) + b), z = mean(y) per sample: [N,3,16,16] -> [N,4,16,16], [N,4]."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"]),
         helper.make_node("ReduceMean", ["y"], ["m"], axes=[2, 3], keepdims=0)],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 16, 16]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [batch, 4])],
        initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _reference(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=[CPU])
    return list(session.run(None, {"x": x}))


def _inputs(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32)


# ----------------------------------------------------------------------------- CPU everywhere

def test_cpu_runner_is_a_plain_run() -> None:
    model = _conv_model()
    runner = SessionRunner(open_session(model, providers=("cpu",)))
    assert not runner.device_resident
    for batch, seed in ((1, 1), (3, 2), (1, 3)):
        x = _inputs(batch, seed)
        y, m = runner.run(x)
        expected = _reference(model, x)
        np.testing.assert_array_equal(y, expected[0])
        np.testing.assert_array_equal(m, expected[1])
    (m_only,) = runner.run(x, outputs=[1])
    np.testing.assert_array_equal(m_only, expected[1])


def test_gpu_present_but_not_assigned_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU node, an actor of a num_gpus: 0 pool runs on CPU and run.json says why."""
    monkeypatch.setattr(session_module, "nvidia_device_visible", lambda: True)
    opened = open_session(_conv_model(), providers=("tensorrt", "cuda", "cpu"),
                          device=DevicePlan(device_id=None, reason=NO_DEVICE_NOT_ASSIGNED))
    assert opened.provider == CPU
    assert opened.label == (f"{CPU} ({TENSORRT}: {NO_DEVICE_NOT_ASSIGNED}; "
                            f"{CUDA}: {NO_DEVICE_NOT_ASSIGNED})")


def test_machine_without_gpu_says_plainly_cpu() -> None:
    if session_module.nvidia_device_visible():
        pytest.skip("this machine has an NVIDIA GPU")
    opened = open_session(_conv_model(), providers=("tensorrt", "cuda", "cpu"))
    assert opened.label == CPU and opened.device.device_id is None


def test_gpu_provider_that_fails_is_not_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU provider whose session fails to start falls back to CPU, with the reason."""
    real = ort.InferenceSession

    def failing(source: Any, sess_options: Any = None, providers: Any = None) -> Any:
        if providers and providers[0][0] == CUDA:
            raise RuntimeError("CUDA failure 999: unknown error\nmore detail")
        return real(source, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(session_module, "nvidia_device_visible", lambda: True)
    monkeypatch.setattr(session_module, "load_gpu_libraries", lambda: None)
    monkeypatch.setattr(session_module.ort, "InferenceSession", failing)
    monkeypatch.setattr(session_module.ort, "get_available_providers", lambda: [CUDA, CPU])
    opened = open_session(_conv_model(), providers=("cuda", "cpu"),
                          device=DevicePlan(device_id=0, fraction=0.5))
    assert opened.label == f"{CPU} ({CUDA}: failed to start (CUDA failure 999: unknown error))"


def test_node_assignment_is_recorded() -> None:
    opened = open_session(_conv_model(), providers=("cpu",))
    placement = node_assignment(opened.session)
    assert placement is not None and set(placement) == {CPU}
    assert {"Conv", "ReduceMean"} <= set(placement[CPU])
    assert opened.node_placement is None  # Every node is on the provider the session is for.


class _FakeTensorrtSession:
    """Stands in for ORT's TensorRT session: 'builds' by writing an engine into the cache
    path it is given, unless one is there (then it 'deserialises')."""

    builds: ClassVar[list[Path]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, source: Any, sess_options: Any = None, providers: Any = None) -> None:
        options = dict(providers[0][1])
        folder = Path(options["trt_engine_cache_path"])
        engine = folder / "model.engine"
        if not engine.exists():
            with self.lock:
                self.builds.append(folder)
            threading.Event().wait(0.2)  # A build takes a while: others must wait, not race.
            engine.write_bytes(b"engine")
            (folder / "timing.cache").write_bytes(b"timing")
        self.folder = folder


def test_tensorrt_engine_is_built_once_and_published_atomically(tmp_path: Path) -> None:
    final = tmp_path / "tensorrt" / "key"
    attempt = Attempt(TENSORRT, (
        (TENSORRT, {"trt_engine_cache_enable": "1", "trt_engine_cache_path": str(final),
                    "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(final)}),
        (CPU, {})), engine_folder=final)
    _FakeTensorrtSession.builds = []
    results: list[tuple[Any, Path | None]] = []
    with mock.patch.object(session_module.ort, "InferenceSession", _FakeTensorrtSession):
        threads = [threading.Thread(target=lambda: results.append(
            session_module._open_attempt(b"model", attempt, 1, GpuConfig()))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        again = session_module._open_attempt(b"model", attempt, 1, GpuConfig())
    # One build, in a private folder; every session (and a later one) reads the published one.
    assert len(_FakeTensorrtSession.builds) == 1
    assert _FakeTensorrtSession.builds[0].name.startswith(".key.") \
        and _FakeTensorrtSession.builds[0].suffix == ".tmp"
    assert all(session.folder == final and folder == final
               for session, folder in [*results, again])
    assert sorted(p.name for p in final.iterdir()) == [ENGINE_READY, "model.engine",
                                                       "timing.cache"]
    assert [p.name for p in final.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_tensorrt_build_leaves_no_folder(tmp_path: Path) -> None:
    final = tmp_path / "tensorrt" / "key"
    attempt = Attempt(TENSORRT, ((TENSORRT, {"trt_engine_cache_path": str(final)}), (CPU, {})),
                      engine_folder=final)

    def failing(*_: Any, **__: Any) -> Any:
        raise RuntimeError("TensorRT EP failed to create engine from network")

    with mock.patch.object(session_module.ort, "InferenceSession", failing), \
            pytest.raises(RuntimeError, match="failed to create engine"):
        session_module._open_attempt(b"model", attempt, 1, GpuConfig())
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_model_runner_caches_engines_in_the_default_model_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """models.cache_dir null (the default) still gives TensorRT its cache folder."""
    from fusionray.models.loader import ModelOptions, ModelRunner
    from tests.onnx_fixtures import build_identity_swapper, import_fixtures

    cache = import_fixtures(tmp_path, inswapper_128_fp16=build_identity_swapper())
    monkeypatch.setenv("FUSIONRAY_CACHE", str(cache))
    seen: dict[str, Any] = {}
    real = session_module.open_session

    def spy(model: Any, **kwargs: Any) -> OpenedSession:
        seen.update(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr("fusionray.models.loader.open_session", spy)
    runner = ModelRunner("inswapper_128_fp16", ModelOptions(providers=("tensorrt", "cuda", "cpu"),
                                                            shared_dirs=(), offline=True))
    assert seen["engine_root"] == cache / "tensorrt"
    assert seen["fp16"] is True  # The fp16 export asks for fp16 engines.
    if not session_module.nvidia_device_visible():
        assert runner.provider == CPU  # No GPU here: plainly CPU, nothing to report.
    target = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    source = np.ones((1, 512), np.float32)
    assert len(runner.run(target, source, outputs=[0])) == 1


def test_label_lists_fallbacks_and_placement() -> None:
    session = open_session(_conv_model(), providers=("cpu",)).session
    opened = OpenedSession(session=session, provider=CUDA, device=DevicePlan(device_id=0),
                           failed=((TENSORRT, "failed to start (x)"),),
                           node_placement="2 of 9 nodes on CPUExecutionProvider (Shape x2)")
    assert opened.label == (f"{CUDA} ({TENSORRT}: failed to start (x); "
                            "2 of 9 nodes on CPUExecutionProvider (Shape x2))")
    assert opened.on_gpu


# --------------------------------------------------------------------------- real GPU only

@pytest.mark.gpu
def test_cuda_session_on_the_planned_device_with_a_memory_cap() -> None:
    device = probe_device()
    assert device.device_id is not None, f"no GPU: {device.reason}"
    opened = open_session(_conv_model(), providers=("cuda",), fallback_to_cpu=False,
                          gpu=GpuConfig(memory_limit_mb=1024))
    assert opened.provider == CUDA, opened.label
    options = opened.session.get_provider_options()[CUDA]
    assert options["device_id"] == str(device.device_id)
    assert options["gpu_mem_limit"] == str(1024 * 2**20)
    assert options["arena_extend_strategy"] in ("kSameAsRequested", "1")


@pytest.mark.gpu
def test_device_resident_runner_matches_cpu_across_calls_and_shapes() -> None:
    model = _conv_model()
    runner = SessionRunner(open_session(model, providers=("cuda",), fallback_to_cpu=False))
    assert runner.device_resident
    for batch, seed in ((1, 1), (4, 2), (1, 3), (4, 4), (2, 5)):
        x = _inputs(batch, seed)
        y, m = runner.run(x)  # Inputs refreshed in place: each call sees its own data.
        expected = _reference(model, x)
        np.testing.assert_allclose(y, expected[0], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(m, expected[1], rtol=1e-3, atol=1e-3)
    bound = runner._cache[((4, 3, 16, 16),)]
    assert all(value.device_name() == "cuda" for value in bound.inputs + bound.outputs)
    before = [value.data_ptr() for value in bound.outputs]
    runner.run(_inputs(4, 9))
    assert [value.data_ptr() for value in bound.outputs] == before  # Bound once.


@pytest.mark.gpu
def test_tensorrt_engine_cache_is_keyed_published_and_reused(tmp_path: Path) -> None:
    model = _conv_model()
    settings = GpuConfig(tensorrt_batch_opt=2, tensorrt_batch_max=4, tensorrt_builder_level=0)
    opened = open_session(model, providers=("tensorrt", "cuda"), fallback_to_cpu=False,
                          gpu=settings, engine_root=tmp_path, fp16=True)
    assert opened.provider == TENSORRT, opened.label
    folder = opened.engine_folder
    assert folder is not None and folder.parent == tmp_path
    assert folder.name.endswith("-fp16-b1-2-4") and (folder / ENGINE_READY).is_file()
    engines = sorted(folder.glob("*.engine"))
    assert engines and list(folder.glob("*.timing"))
    stamps = [p.stat().st_mtime_ns for p in engines]
    again = open_session(model, providers=("tensorrt", "cuda"), fallback_to_cpu=False,
                         gpu=settings, engine_root=tmp_path, fp16=True)
    assert again.engine_folder == folder
    assert [p.stat().st_mtime_ns for p in sorted(folder.glob("*.engine"))] == stamps
    assert again.max_batch == 4
    y, _ = SessionRunner(again).run(_inputs(3, 1))
    np.testing.assert_allclose(y, _reference(model, _inputs(3, 1))[0], rtol=2e-2, atol=2e-2)
