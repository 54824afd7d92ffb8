"""A cost-equivalent stand-in for ArcFace w600k_r50 (insightface's recognizer), for benchmarks.

The real model is not reachable from this project's machines, and the test suite's
ArcFace-contract fixture (`tests/onnx_fixtures.py`) is a pooling and one projection: it costs
nothing, so a benchmark using it hides what embedding a face costs. This builds the same
network shape as the published IResNet-50 (arcface_torch `iresnet50`: a 3x3 stem, four stages
of [3, 4, 14, 3] pre-activation basic blocks with 64/128/256/512 channels, each stage halving
the resolution, batch norm, then a 25088 -> 512 fully connected layer and a feature batch
norm) with random weights: the same convolutions at the same sizes, so the same cost, and an
output that is noise. Batch norms are written as per-channel Mul/Add (what ONNX Runtime makes
of them anyway).

Contract as the real file: input `input.1` [N, 3, 112, 112] float32 (N free), output
[N, 512] float32, unnormalised.

    .venv/bin/python benchmarks/arcface_standin.py -o /tmp/standin/arcface_standin.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
"""(channels, blocks) of IResNet-50's four stages; the first block of each has stride 2."""


class _Graph:
    """Nodes and random initialisers, named in order."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def _const(self, array: np.ndarray) -> str:
        name = self._name("w")
        self.weights.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x: str, in_ch: int, out_ch: int, kernel: int, stride: int) -> str:
        scale = np.sqrt(2.0 / (in_ch * kernel * kernel))
        weight = self._const(self.rng.standard_normal((out_ch, in_ch, kernel, kernel)) * scale)
        out = self._name("conv")
        pad = kernel // 2
        self.nodes.append(helper.make_node("Conv", [x, weight], [out], strides=[stride, stride],
                                           pads=[pad, pad, pad, pad]))
        return out

    def norm(self, x: str, channels: int) -> str:
        mul = self._const(1.0 + 0.05 * self.rng.standard_normal((channels, 1, 1)))
        add = self._const(0.05 * self.rng.standard_normal((channels, 1, 1)))
        scaled, out = self._name("bn_mul"), self._name("bn")
        self.nodes += [helper.make_node("Mul", [x, mul], [scaled]),
                       helper.make_node("Add", [scaled, add], [out])]
        return out

    def prelu(self, x: str, channels: int) -> str:
        slope = self._const(np.full((channels, 1, 1), 0.25))
        out = self._name("prelu")
        self.nodes.append(helper.make_node("PRelu", [x, slope], [out]))
        return out

    def add(self, a: str, b: str) -> str:
        out = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out


def build_arcface_standin(seed: int = 0) -> onnx.ModelProto:
    """The IResNet-50-shaped graph (random weights; see the module docstring)."""
    g = _Graph(seed)
    x = g.prelu(g.norm(g.conv("input.1", 3, 64, 3, 1), 64), 64)
    channels = 64
    for width, blocks in STAGES:
        for block in range(blocks):
            stride = 2 if block == 0 else 1
            out = g.norm(x, channels)
            out = g.conv(out, channels, width, 3, 1)
            out = g.prelu(g.norm(out, width), width)
            out = g.norm(g.conv(out, width, width, 3, stride), width)
            shortcut = x
            if stride != 1 or channels != width:
                shortcut = g.norm(g.conv(x, channels, width, 1, stride), width)
            x = g.add(out, shortcut)
            channels = width
    x = g.norm(x, 512)
    flat = g._name("flat")
    g.nodes.append(helper.make_node("Flatten", [x], [flat], axis=1))
    fc = g._const(g.rng.standard_normal((512 * 7 * 7, 512)) / np.sqrt(512 * 7 * 7))
    projected = g._name("fc")
    g.nodes.append(helper.make_node("MatMul", [flat, fc], [projected]))
    feature_mul = g._const(np.ones(512))
    feature_add = g._const(np.zeros(512))
    scaled = g._name("feat_mul")
    g.nodes += [helper.make_node("Mul", [projected, feature_mul], [scaled]),
                helper.make_node("Add", [scaled, feature_add], ["embedding"])]
    graph = helper.make_graph(
        g.nodes, "arcface_r50_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["None", 512])],
        g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write it")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_arcface_standin(), str(args.output))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
