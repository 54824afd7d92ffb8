"""The ONNX Runtime session factory: provider names, fallback, contract checks."""

from __future__ import annotations

import logging

import onnx
import pytest
from onnx import TensorProto, helper

from fusionray.errors import ConfigError, ModelError
from fusionray.models.catalog import get_model_spec
from fusionray.models.session import PROVIDER_NAMES, check_contract, create_session


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
