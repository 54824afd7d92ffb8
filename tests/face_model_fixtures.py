"""Tiny ONNX graphs with the contracts of the mask, landmark and batch-free swapper models.

TEST FIXTURES ONLY, like `tests/onnx_fixtures.py`: the catalogue's names, ranks and dtypes, and
behaviour simple enough that a test can predict each output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_fixtures import _model, fixture_emap

if TYPE_CHECKING:
    from fusionray.swap.learned import SwapperContract

XSEG_DARK = 0.15
"""XSeg fixture: a pixel is face (1) where its mean channel value / 255 exceeds this, else 0
(so a black 'hand' over the face is an occluder)."""


def build_batch_identity_swapper() -> bytes:
    """inswapper names and ranks with a free batch dimension; output = target (identity)."""
    inputs = [helper.make_tensor_value_info("target", TensorProto.FLOAT, ["batch", 3, 128, 128]),
              helper.make_tensor_value_info("source", TensorProto.FLOAT, ["batch", 512])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                             ["batch", 3, 128, 128])]
    emap = numpy_helper.from_array(fixture_emap(), "emap")
    return _model([helper.make_node("Identity", ["target"], ["output"])], inputs, outputs,
                  [emap], "batch_identity_swapper")


def build_xseg_fixture() -> bytes:
    """XSeg contract ([B, 256, 256, 3] / 255 -> [B, 256, 256, 1]): a hard brightness test,
    1 where the channel mean > `XSEG_DARK`."""
    inits = [numpy_helper.from_array(np.array(XSEG_DARK, np.float32), "dark"),
             numpy_helper.from_array(np.array(1000.0, np.float32), "gain")]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[3], keepdims=1),
        helper.make_node("Sub", ["mean", "dark"], ["above"]),
        helper.make_node("Mul", ["above", "gain"], ["steep"]),
        helper.make_node("Sigmoid", ["steep"], ["output"]),
    ]
    return _model(nodes,
                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 256, 256, 3])],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                 [1, 256, 256, 1])],
                  inits, "xseg_fixture")


SKIN, HAIR = 1, 17


def build_bisenet_fixture() -> bytes:
    """BiSeNet contract ([B, 3, 512, 512] ImageNet-normalised RGB -> [B, 19, 512, 512]): a
    1×1 convolution whose skin logit is +R and hair logit is −R (normalised red), every other
    class −10: reddish pixels parse as skin, the rest as hair."""
    weights = np.zeros((19, 3, 1, 1), np.float32)
    weights[SKIN, 0] = 1.0
    weights[HAIR, 0] = -1.0
    bias = np.full(19, -10.0, np.float32)
    bias[SKIN] = bias[HAIR] = 0.0
    inits = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")]
    return _model([helper.make_node("Conv", ["input", "w", "b"], ["logits"])],
                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                 [1, 19, 512, 512])],
                  inits, "bisenet_fixture")


def build_landmark_fixture(points_64: np.ndarray, peak: float = 0.9) -> bytes:
    """2DFAN4 contract ([B, 3, 256, 256] -> [B, 68, 3], [B, 68, 64, 64]) with constant outputs:
    `points_64` (68, 3) in heatmap units, and heatmaps peaking at `peak` (the input only fixes
    the batch: it is multiplied by 0)."""
    heatmap = np.zeros((1, 68, 64, 64), np.float32)
    heatmap[:, :, 10, 10] = peak
    inits = [numpy_helper.from_array(points_64.reshape(1, 68, 3).astype(np.float32), "points"),
             numpy_helper.from_array(heatmap, "heat"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["scalar"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["scalar", "zero"], ["nothing"]),
        helper.make_node("Add", ["points", "nothing"], ["landmarks"]),
        helper.make_node("Add", ["heat", "nothing"], ["heatmaps"]),
    ]
    return _model(nodes,
                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 256])],
                  [helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, [1, 68, 3]),
                   helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT,
                                                 [1, 68, 64, 64])],
                  inits, "landmark_fixture")


def synthetic_landmarks_68(template_5: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG-ordered points of a plausible frontal face built around five ArcFace
    points: eyes centred on the template's eyes, nose tip on its nose, mouth corners on its
    mouth corners, so `landmarks_5_from_68` gives `template_5` back exactly."""
    left_eye, right_eye, nose, mouth_left, mouth_right = np.asarray(template_5, np.float64)
    eye_distance = float(right_eye[0] - left_eye[0])
    centre_x = (left_eye[0] + right_eye[0]) / 2
    unit = eye_distance
    angles = np.linspace(np.pi, 0.0, 17)
    jaw_centre = np.array([centre_x, left_eye[1]])
    jaw = jaw_centre + np.stack([0.95 * unit * np.cos(angles), 1.15 * unit * np.sin(angles)],
                                axis=1)
    brow_x = np.linspace(-0.35, 0.35, 5) * unit
    brows = np.concatenate([
        np.stack([left_eye[0] + brow_x, np.full(5, left_eye[1] - 0.35 * unit)], axis=1),
        np.stack([right_eye[0] + brow_x, np.full(5, right_eye[1] - 0.35 * unit)], axis=1)])
    bridge = np.stack([np.full(4, nose[0]), np.linspace(left_eye[1], nose[1] - 0.1 * unit, 4)],
                      axis=1)
    nostrils = np.stack([nose[0] + np.array([-0.25, -0.12, 0.0, 0.12, 0.25]) * unit,
                         np.full(5, nose[1] + 0.05 * unit)], axis=1)
    ring = np.array([[-1, 0], [-0.5, -0.35], [0.5, -0.35], [1, 0], [0.5, 0.35], [-0.5, 0.35]])
    eyes = np.concatenate([left_eye + 0.2 * unit * ring, right_eye + 0.2 * unit * ring])
    mouth_centre = (mouth_left + mouth_right) / 2
    half = (mouth_right[0] - mouth_left[0]) / 2
    outer_angles = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    outer = mouth_centre + np.stack([half * np.cos(outer_angles),
                                     -0.4 * half * np.sin(outer_angles)], axis=1)
    inner_angles = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    inner = mouth_centre + np.stack([0.7 * half * np.cos(inner_angles),
                                     -0.15 * half * np.sin(inner_angles)], axis=1)
    points = np.concatenate([jaw, brows, bridge, nostrils, eyes, outer, inner])
    points[30] = nose
    points[48], points[54] = mouth_left, mouth_right
    assert points.shape == (68, 2)
    return points


LEARNED_COLOUR_SCALE = 5.0
"""Learned colour fixtures: output RGB c = 0.5 + 5 · source[c] (embedding sources) or the mean
of source channel c (image sources), everywhere, in [0, 1] terms."""


def _source_shape(contract: SwapperContract) -> list[int]:
    kind = contract.source
    if kind == "frame":
        assert contract.source_size is not None  # SwapperContract requires it for frame sources
        side = int(contract.source_size)
        return [1, 3, side, side]
    return [1, 512]


def _learned_io(contract: SwapperContract) -> tuple[list, list]:
    size = int(contract.size)
    return (
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, size, size]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, _source_shape(contract))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])],
    )


def build_learned_identity(contract: SwapperContract) -> bytes:
    """A table swapper's contract; gives the target face back: output = target in the model's
    output space (normalised for `output_normalised` models, else target · std + mean), plus
    0 · mean(source) so the source input is consumed."""
    inputs, outputs = _learned_io(contract)
    mean = np.array(contract.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(contract.std, np.float32).reshape(1, 3, 1, 1)
    if contract.output_normalised:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    inits = [numpy_helper.from_array(std, "scale"), numpy_helper.from_array(mean, "shift"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("ReduceMean", ["source"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["nothing"]),
        helper.make_node("Mul", ["target", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["shifted"]),
        helper.make_node("Add", ["shifted", "nothing"], ["output"]),
    ]
    return _model(nodes, inputs, outputs, inits, f"identity_{contract.name}")


def build_learned_colour(contract: SwapperContract) -> bytes:
    """A table swapper's contract; a flat face whose colour is a known function of `source`
    (`LEARNED_COLOUR_SCALE`), written in the model's output space. The target is ignored."""
    inputs, outputs = _learned_io(contract)
    size = int(contract.size)
    mean = np.array(contract.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(contract.std, np.float32).reshape(1, 3, 1, 1)
    if not contract.output_normalised:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    inits = [numpy_helper.from_array(np.array([1, 3, size, size], np.int64), "full"),
             numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "pixel_shape"),
             numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(std, "std")]
    if contract.source == "frame":
        nodes = [helper.make_node("ReduceMean", ["source"], ["rgb"], axes=[2, 3], keepdims=1)]
    else:
        inits += [numpy_helper.from_array(np.array([0], np.int64), "starts"),
                  numpy_helper.from_array(np.array([3], np.int64), "ends"),
                  numpy_helper.from_array(np.array([1], np.int64), "axes"),
                  numpy_helper.from_array(np.array(LEARNED_COLOUR_SCALE, np.float32), "gain"),
                  numpy_helper.from_array(np.array(0.5, np.float32), "half")]
        nodes = [
            helper.make_node("Slice", ["source", "starts", "ends", "axes"], ["first"]),
            helper.make_node("Mul", ["first", "gain"], ["scaled"]),
            helper.make_node("Add", ["scaled", "half"], ["flat"]),
            helper.make_node("Reshape", ["flat", "pixel_shape"], ["rgb"]),
        ]
    nodes += [
        helper.make_node("Sub", ["rgb", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["in_space"]),
        helper.make_node("Expand", ["in_space", "full"], ["output"]),
    ]
    return _model(nodes, inputs, outputs, inits, f"colour_{contract.name}")


def converter_matrix() -> np.ndarray:
    """(512, 512) converter fixture map: twice the reversal permutation."""
    return (2.0 * np.eye(512)[::-1]).astype(np.float32)


def build_converter_fixture() -> bytes:
    """Embedding-converter contract ([1, 512] -> [1, 512]): x @ `converter_matrix()`."""
    weights = numpy_helper.from_array(converter_matrix(), "w")
    return _model([helper.make_node("MatMul", ["input", "w"], ["output"])],
                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512])],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 512])],
                  [weights], "converter_fixture")


def build_enhancer_fixture(size: int, *, fidelity_input: bool, invert: bool = False) -> bytes:
    """Enhancer contract ([1, 3, S, S] in [-1, 1] -> same; CodeFormer also `weight` [1] double).

    Without a fidelity input: identity (or the negative with `invert`). With one: a flat face at
    2 · weight − 1 everywhere (so the grey level shows the weight the engine fed), + 0 · input.
    """
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])]
    if not fidelity_input:
        op = "Neg" if invert else "Identity"
        return _model([helper.make_node(op, ["input"], ["output"])], inputs, outputs, [],
                      f"enhancer_{size}")
    inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("Cast", ["weight"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["w", "two"], ["w2"]),
        helper.make_node("Sub", ["w2", "one"], ["level"]),
        helper.make_node("Mul", ["input", "zero"], ["blank"]),
        helper.make_node("Add", ["blank", "level"], ["output"]),
    ]
    return _model(nodes, inputs, outputs, inits, "fidelity_enhancer")
