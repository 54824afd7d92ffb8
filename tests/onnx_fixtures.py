"""Tiny ONNX graphs with the real models' contracts and simple, known behaviour.

TEST FIXTURES ONLY. They have exactly the catalogue's names, shapes and dtypes (and, for
inswapper, a 512×512 `emap` as the graph's last initializer) so the real loading, contract
check, preprocessing, swapping and paste-back code runs on them; what they compute is chosen so
a test can predict the result. They say nothing about swap quality and are never a default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fusionray.models.store import import_model

OPSET = 17


def import_fixtures(folder: Path, **models: bytes) -> Path:
    """Import fixture graphs (catalogue name -> ONNX bytes) through the real `import` path
    into the model cache `folder/cache`, and return that cache folder. Fixtures are not the
    published files, so they are imported as a user imports a fine-tuned export."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in models.items():
        file = folder / f"{name}.fixture.onnx"
        file.write_bytes(data)
        import_model(name, file, cache_dir=folder / "cache", allow_unverified=True)
    return folder / "cache"


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto],
           name: str) -> bytes:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def fixture_emap(seed: int = 3) -> np.ndarray:
    """A 512×512 float32 emap: a scaled random rotation-like matrix (far from identity, and
    scaled ×10 so a latent that skipped L2 normalisation would saturate the colour swapper)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((512, 512)))
    return (10.0 * q).astype(np.float32)


def _swapper_io(dtype: int = TensorProto.FLOAT) -> tuple[list[onnx.ValueInfoProto],
                                                         list[onnx.ValueInfoProto]]:
    return (
        [helper.make_tensor_value_info("target", dtype, [1, 3, 128, 128]),
         helper.make_tensor_value_info("source", dtype, [1, 512])],
        [helper.make_tensor_value_info("output", dtype, [1, 3, 128, 128])],
    )


def build_identity_swapper(*, swap_inputs: bool = False) -> bytes:
    """inswapper contract; output = `target` (the aligned face, RGB in [0, 1]) unchanged.

    `swap_inputs=True` declares `source` first: a wrong file the contract check must reject.
    """
    inputs, outputs = _swapper_io()
    if swap_inputs:
        inputs = inputs[::-1]
    emap = numpy_helper.from_array(fixture_emap(), "emap")
    return _model([helper.make_node("Identity", ["target"], ["output"])], inputs, outputs,
                  [emap], "identity_swapper")


COLOUR_SCALE = 5.0
"""Colour swapper: output channel c = clip(0.5 + COLOUR_SCALE · source[c]) everywhere."""


def build_colour_swapper() -> bytes:
    """inswapper contract; every output pixel of channel c (RGB) is 0.5 + 5·source[c], clipped.

    The output colour is therefore a known function of the latent the swapper is given, which
    lets a test prove the latent is `normalise(embedding @ emap)`. The target is ignored.
    """
    inputs, outputs = _swapper_io()
    starts = numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([3], np.int64), "ends")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    shape = numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "shape")
    full = numpy_helper.from_array(np.array([1, 3, 128, 128], np.int64), "full")
    scale = numpy_helper.from_array(np.array(COLOUR_SCALE, np.float32), "scale")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    emap = numpy_helper.from_array(fixture_emap(), "emap")  # Last initializer, as in inswapper.
    nodes = [
        helper.make_node("Slice", ["source", "starts", "ends", "axes"], ["rgb"]),
        helper.make_node("Mul", ["rgb", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "half"], ["shifted"]),
        helper.make_node("Reshape", ["shifted", "shape"], ["pixel"]),
        helper.make_node("Expand", ["pixel", "full"], ["output"]),
    ]
    return _model(nodes, inputs, outputs, [starts, ends, axes, shape, full, scale, half, emap],
                  "colour_swapper")


def build_wrong_shape_swapper() -> bytes:
    """Names right, but a 256 px target: the contract check must reject it."""
    inputs = [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 256, 256]),
              helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 256, 256])]
    emap = numpy_helper.from_array(fixture_emap(), "emap")
    return _model([helper.make_node("Identity", ["target"], ["output"])], inputs, outputs,
                  [emap], "wrong_shape")


ARCFACE_POOL = 7
"""ArcFace fixture: 7×7 average pooling of the 112 px input, then a fixed linear map to 512."""


def arcface_fixture_weights(seed: int = 5) -> np.ndarray:
    """(3·16·16, 512) float32 projection of the ArcFace fixture."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3 * 16 * 16, 512)).astype(np.float32) / 28.0


def build_arcface_fixture() -> bytes:
    """ArcFace contract ([N, 3, 112, 112] -> [N, 512], batch free): pool, flatten, project.

    Unnormalised on purpose (like the real model): the embedder must L2-normalise.
    """
    weights = numpy_helper.from_array(arcface_fixture_weights(), "projection")
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"],
                         kernel_shape=[ARCFACE_POOL, ARCFACE_POOL],
                         strides=[ARCFACE_POOL, ARCFACE_POOL]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "projection"], ["embedding"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["None", 512])],
        [weights], "arcface_fixture",
    )


def arcface_fixture_reference(blob: np.ndarray) -> np.ndarray:
    """What the ArcFace fixture computes for a preprocessed (N, 3, 112, 112) blob, in numpy."""
    n = blob.shape[0]
    pooled = blob.reshape(n, 3, 16, ARCFACE_POOL, 16, ARCFACE_POOL).mean(axis=(3, 5))
    return pooled.reshape(n, -1) @ arcface_fixture_weights()


SCRFD_BOX_HALF = 2.0
"""SCRFD fixture: every candidate's box reaches 2 strides from its anchor on each side."""
SCRFD_KPS = np.array([[-0.6, -0.5], [0.6, -0.5], [0.0, 0.1], [-0.5, 0.7], [0.5, 0.7]])
"""SCRFD fixture: keypoint offsets from the anchor, in strides (eyes, nose, mouth corners)."""


def build_scrfd_fixture() -> bytes:
    """SCRFD contract: input [1, 3, H, W] free, 9 outputs (scores, boxes, kps × strides 8/16/32).

    Behaviour: at stride 32 each cell's score is sigmoid(20 · mean of the normalised input over
    the cell), so a cell that is mostly bright ((x − 127.5)/128 near +1) fires; strides 8 and 16
    never fire. Boxes and keypoints are fixed offsets from the anchor (`SCRFD_BOX_HALF`,
    `SCRFD_KPS`) in stride units, as the real heads' distances are.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array([-1, 1], np.int64), "col"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.full((1, 4), SCRFD_BOX_HALF, np.float32), "box"),
        numpy_helper.from_array(SCRFD_KPS.reshape(1, 10).astype(np.float32), "kps"),
    ]
    outputs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for stride in (8, 16, 32):
        gain, bias = (20.0, 0.0) if stride == 32 else (20.0, -100.0)
        inits += [numpy_helper.from_array(np.array(gain, np.float32), f"gain{stride}"),
                  numpy_helper.from_array(np.array(bias, np.float32), f"bias{stride}")]
        nodes += [
            helper.make_node("AveragePool", ["input.1"], [f"pool{stride}"],
                             kernel_shape=[stride, stride], strides=[stride, stride]),
            helper.make_node("ReduceMean", [f"pool{stride}"], [f"mean{stride}"], axes=[1],
                             keepdims=1),
            helper.make_node("Mul", [f"mean{stride}", f"gain{stride}"], [f"g{stride}"]),
            helper.make_node("Add", [f"g{stride}", f"bias{stride}"], [f"logit{stride}"]),
            helper.make_node("Sigmoid", [f"logit{stride}"], [f"prob{stride}"]),
            # Two anchors per cell, anchor index fastest: (1, h, w, 2) -> (h·w·2, 1).
            helper.make_node("Concat", [f"prob{stride}", f"prob{stride}"], [f"two{stride}"],
                             axis=1),
            helper.make_node("Transpose", [f"two{stride}"], [f"hw2_{stride}"],
                             perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"hw2_{stride}", "col"], [f"score{stride}"]),
            helper.make_node("Mul", [f"score{stride}", "zero"], [f"z{stride}"]),
            helper.make_node("Add", [f"z{stride}", "box"], [f"bbox{stride}"]),
            helper.make_node("Add", [f"z{stride}", "kps"], [f"kps{stride}"]),
        ]
        for kind in outputs:
            outputs[kind].append(f"{kind}{stride}")
    widths = {"score": 1, "bbox": 4, "kps": 10}
    graph_outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{name}", widths[kind]])
        for kind in ("score", "bbox", "kps") for name in outputs[kind]
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        graph_outputs, inits, "scrfd_fixture",
    )


def build_identity_enhancer() -> bytes:
    """GFPGAN contract ([1, 3, 512, 512] in [-1, 1] -> same): returns its input unchanged."""
    return _model(
        [helper.make_node("Identity", ["input"], ["output"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])],
        [], "identity_enhancer",
    )


def build_invert_enhancer() -> bytes:
    """GFPGAN contract; returns −input (the colour negative), so its effect is easy to see."""
    return _model(
        [helper.make_node("Neg", ["input"], ["output"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])],
        [], "invert_enhancer",
    )
