"""Tiny ONNX graphs with the contracts of the mask, landmark and batch-free swapper models.

TEST FIXTURES ONLY, like `tests/onnx_fixtures.py`: the catalogue's names, ranks and dtypes, and
behaviour simple enough that a test can predict each output.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_fixtures import _model, fixture_emap

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
