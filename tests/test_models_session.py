"""The ONNX Runtime session factory: provider names, fallback, contract checks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fusionray.errors import ConfigError, ModelError
from fusionray.models.catalog import get_model_spec
from fusionray.models.session import (
    PROVIDER_NAMES,
    check_contract,
    cpu_graph_cache_path,
    create_session,
    open_session,
)


def _identity_model() -> bytes:
    """A one-node graph: y = x, float32 [1, 4]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_unknown_provider_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"Unknown execution provider 'cudaa'\. Choose one of: "
                                          "tensorrt, cuda, rocm"):
        create_session(_identity_model(), providers=("cudaa", "cpu"))


def test_unavailable_provider_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fusionray.models.session"):
        session, provider = create_session(_identity_model(), providers=("rocm",))
    assert provider == "CPUExecutionProvider"
    assert any("ROCMExecutionProvider" in record.message for record in caplog.records)
    assert session.get_inputs()[0].name == "x"


def test_cpu_session_settings() -> None:
    session, provider = create_session(_identity_model(), providers=("cpu",), threads=2)
    assert provider == "CPUExecutionProvider"
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    # Idle pool threads sleep instead of spinning on the cores the actor's other steps use.
    config = options.get_session_config_entry
    assert config("session.intra_op.allow_spinning") == "0"
    assert config("session.inter_op.allow_spinning") == "0"
    with pytest.raises(ConfigError, match="threads"):
        create_session(_identity_model(), threads=0)
    assert set(PROVIDER_NAMES) == {
        "tensorrt", "cuda", "rocm", "openvino", "coreml", "directml", "cpu",
    }


def test_garbage_model_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="Cannot load model"):
        create_session(b"not an onnx file")


def test_contract_mismatch_is_reported() -> None:
    session, _ = create_session(_identity_model())
    expected = r"is not blazeface_front: its inputs are \[x \[1, 4\] float32\], expected"
    with pytest.raises(ModelError, match=expected):
        check_contract(session, get_model_spec("blazeface_front"))


def _conv_model(channels: int = 4) -> bytes:
    """Conv + Relu on [1, 3, 16, 16] -> [1, `channels`, 16, 16]: a graph ORT's CPU optimiser
    rewrites (layout, fusion)."""
    count = channels * 3 * 3 * 3
    weights = helper.make_tensor("w", TensorProto.FLOAT, [channels, 3, 3, 3],
                                 [((i * 7) % 11 - 5) / 10 for i in range(count)])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 16, 16])],
        initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _external_data_files(graph: Path) -> set[str]:
    """The data files a saved graph names for its initializers."""
    model = onnx.load(str(graph), load_external_data=False)
    return {entry.value for tensor in model.graph.initializer
            for entry in tensor.external_data if entry.key == "location"}


def test_cpu_sessions_load_the_graph_optimised_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The first CPU session of a file optimises its graph and keeps it in the cache, its
    weights in a data file the graph names; later ones load that graph as it is, with the same
    results; a changed file gets a new key, and a damaged graph or data file is rebuilt
    without leaving the old data behind."""
    import fusionray.models.session as session_module

    # The fixture is small; the rule for real sizes is the next test's.
    monkeypatch.setattr(session_module, "CPU_GRAPH_CACHE_MIN_BYTES", 0)
    model = tmp_path / "conv.onnx"
    model.write_bytes(_conv_model(channels=32))
    cache = tmp_path / "ort-cpu"
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    first = open_session(model, providers=("cpu",), graph_cache=cache).session
    expected = first.run(None, {"x": x})[0]
    cached = cpu_graph_cache_path(model, cache)

    def entry() -> Path:
        """The cache's one data file, checked to be the only other file and the one named."""
        (data,) = _external_data_files(cached)
        assert sorted(p.name for p in cache.iterdir()) == sorted([cached.name, data])
        return cache / data

    data = entry()
    assert data.stat().st_size > cached.stat().st_size  # the weights left the graph file
    second = open_session(model, providers=("cpu",), graph_cache=cache).session
    assert second._model_path == str(cached)  # loaded from the cache, not optimised again
    assert second.get_session_options().graph_optimization_level == (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_array_equal(expected, second.run(None, {"x": x})[0])
    # Without a cache folder nothing is written and the file itself is optimised.
    plain = open_session(model, providers=("cpu",)).session
    assert plain._model_path == str(model)
    # A truncated data file (ORT checks its length) and a damaged graph are each replaced by
    # a fresh optimisation; the old data file goes with its graph.
    with caplog.at_level(logging.WARNING, logger="fusionray.models.session"):
        with data.open("r+b") as handle:
            handle.truncate(data.stat().st_size // 2)
        third = open_session(model, providers=("cpu",), graph_cache=cache).session
        np.testing.assert_array_equal(expected, third.run(None, {"x": x})[0])
        assert not data.exists()
        data = entry()
        cached.write_bytes(b"not onnx")
        fourth = open_session(model, providers=("cpu",), graph_cache=cache).session
        np.testing.assert_array_equal(expected, fourth.run(None, {"x": x})[0])
        assert cached.read_bytes() != b"not onnx" and not data.exists()
        entry()
    assert sum("does not load" in record.message for record in caplog.records) == 2
    # Another file at the same path (size or time changed) is another key.
    model.write_bytes(_conv_model(channels=32) + b"")
    os.utime(model, ns=(1, 1))
    assert cpu_graph_cache_path(model, cache) != cached


def test_cpu_graph_publishing_keeps_the_first_entry_and_clears_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes optimising one key: the first to publish keeps its entry and the other
    discards its files; a writer killed mid-save leaves files the next publish removes."""
    import fusionray.models.session as session_module

    monkeypatch.setattr(session_module, "CPU_GRAPH_CACHE_MIN_BYTES", 0)
    model = tmp_path / "conv.onnx"
    model.write_bytes(_conv_model(channels=32))
    cache = tmp_path / "ort-cpu"
    cached = cpu_graph_cache_path(model, cache)
    cache.mkdir()
    # What a writer killed mid-save leaves: its private graph and a partial data file.
    killed = [cache / f".{cached.name}.host-1-0000.tmp", cache / f"{cached.stem}.host-1-0000.data"]
    for path in killed:
        path.write_bytes(b"partial")
    open_session(model, providers=("cpu",), graph_cache=cache)
    assert cached.is_file() and not any(path.exists() for path in killed)
    (data,) = _external_data_files(cached)
    # The other writer of the same key, finishing second: nothing of its is published.
    private, late = cache / f".{cached.name}.host-2-1111.tmp", cache / f"{cached.stem}.x.data"
    private.write_bytes(b"graph")
    late.write_bytes(b"weights")
    published = cached.read_bytes()
    assert not session_module._publish_cpu_graph(private, late, cached)
    assert cached.read_bytes() == published and (cache / data).is_file()


def test_small_models_and_unwritable_caches_open_without_the_graph_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model below `CPU_GRAPH_CACHE_MIN_BYTES` (a detector) writes nothing to the cache; a
    cache folder that cannot be made does not stop the session."""
    import fusionray.models.session as session_module

    model = tmp_path / "conv.onnx"
    model.write_bytes(_conv_model())
    assert model.stat().st_size < session_module.CPU_GRAPH_CACHE_MIN_BYTES
    cache = tmp_path / "cache" / "ort-cpu"
    session = open_session(model, providers=("cpu",), graph_cache=cache).session
    assert session._model_path == str(model) and not cache.parent.exists()
    monkeypatch.setattr(session_module, "CPU_GRAPH_CACHE_MIN_BYTES", 0)
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")
    session = open_session(model, providers=("cpu",), graph_cache=blocked / "ort-cpu").session
    assert session._model_path == str(model)
