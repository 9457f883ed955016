#!/usr/bin/env python3
"""Writes a random-weight DenseNet121 with the topology of the ONNX Model Zoo's densenet121_Opset17.

The graph matches the zoo export of torchvision's densenet121 node for node: opset 17, IR 8, one
float32 input `x` [1,3,224,224], 1000 raw class scores out. As in that export, the BatchNorm that
directly follows a convolution (norm0, and norm2 in every dense layer) is folded into the
convolution's bias, and every dense layer starts with a Concat of the features so far (a single
input for the first layer of a block), so the node counts are those of the published model.

Weights are random (seeded), so the class answers are meaningless; the model exists so that tests
and benchmarks exercise the real shapes and operators without downloading the 32 MB original.
The same seed gives a byte-identical file.

Usage: make-test-model.py [--out PATH] [--seed N]
Needs: pip install onnx numpy (onnxruntime optional, for the check run)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from pathlib import Path

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # pragma: no cover - message for a bare machine
    sys.exit(f"error: {exc}. Install: pip install onnx numpy (or run scripts/setup-tools.sh)")

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "x"
OUTPUT_NAME = "logits"
INPUT_SHAPE = [1, 3, 224, 224]
NUM_CLASSES = 1000

# torchvision densenet121
GROWTH = 32
BLOCKS = (6, 12, 24, 16)
BN_SIZE = 4
INIT_FEATURES = 64
BN_EPSILON = 1e-5

# Node counts of densenet121_Opset17.onnx in the ONNX Model Zoo.
EXPECTED_OPS = {
    "Conv": 120,
    "BatchNormalization": 62,
    "Concat": 62,
    "Relu": 121,
    "AveragePool": 3,
    "MaxPool": 1,
    "GlobalAveragePool": 1,
    "Flatten": 1,
    "Gemm": 1,
}

# Standard deviation of the logits over classes for a typical input; a few units keeps top-5 and
# softmax meaningful (neither uniform nor one-hot). Fixed rather than measured, so that the file
# does not depend on floating-point details of the machine that writes it.
LOGIT_SCALE = 1.5


class Builder:
    """Accumulates nodes and initializers; random values come from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(self, name: str, x: str, c_in: int, c_out: int, k: int, stride: int, pad: int,
             bias: bool) -> str:
        fan_in = c_in * k * k
        w = self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / fan_in)
        inputs = [x, self._const(f"{name}.weight", w)]
        if bias:
            # A folded BatchNorm leaves a small per-channel shift.
            inputs.append(self._const(f"{name}.bias", self.rng.normal(0.0, 0.05, c_out)))
        self.nodes.append(helper.make_node(
            "Conv", inputs, [name], name=name,
            dilations=[1, 1], group=1, kernel_shape=[k, k],
            pads=[pad, pad, pad, pad], strides=[stride, stride]))
        return name

    def bn(self, name: str, x: str, c: int) -> str:
        gamma = 1.0 + self.rng.normal(0.0, 0.1, c)
        beta = self.rng.normal(0.0, 0.05, c)
        mean = self.rng.normal(0.0, 0.05, c)
        var = self.rng.uniform(0.8, 1.2, c)
        inputs = [x] + [self._const(f"{name}.{p}", v) for p, v in
                        (("weight", gamma), ("bias", beta), ("running_mean", mean),
                         ("running_var", var))]
        self.nodes.append(helper.make_node(
            "BatchNormalization", inputs, [name], name=name, epsilon=BN_EPSILON, momentum=0.9))
        return name

    def op(self, op_type: str, name: str, inputs: list[str], **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def relu(self, name: str, x: str) -> str:
        return self.op("Relu", name, [x])


def build(seed: int) -> onnx.ModelProto:
    b = Builder(seed)

    x = b.conv("features.conv0", INPUT_NAME, 3, INIT_FEATURES, 7, 2, 3, bias=True)
    x = b.relu("features.relu0", x)
    x = b.op("MaxPool", "features.pool0", [x], ceil_mode=0, dilations=[1, 1],
             kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])

    channels = INIT_FEATURES
    for block_index, num_layers in enumerate(BLOCKS, start=1):
        block = f"features.denseblock{block_index}"
        features = [x]
        for layer_index in range(1, num_layers + 1):
            p = f"{block}.denselayer{layer_index}"
            c_in = channels + (layer_index - 1) * GROWTH
            h = b.op("Concat", f"{p}.cat", list(features), axis=1)
            h = b.bn(f"{p}.norm1", h, c_in)
            h = b.relu(f"{p}.relu1", h)
            h = b.conv(f"{p}.conv1", h, c_in, BN_SIZE * GROWTH, 1, 1, 0, bias=True)
            h = b.relu(f"{p}.relu2", h)
            h = b.conv(f"{p}.conv2", h, BN_SIZE * GROWTH, GROWTH, 3, 1, 1, bias=False)
            features.append(h)
        x = b.op("Concat", f"{block}.cat", features, axis=1)
        channels += num_layers * GROWTH

        if block_index != len(BLOCKS):
            t = f"features.transition{block_index}"
            x = b.bn(f"{t}.norm", x, channels)
            x = b.relu(f"{t}.relu", x)
            x = b.conv(f"{t}.conv", x, channels, channels // 2, 1, 1, 0, bias=False)
            x = b.op("AveragePool", f"{t}.pool", [x], ceil_mode=0, kernel_shape=[2, 2],
                     pads=[0, 0, 0, 0], strides=[2, 2])
            channels //= 2

    x = b.bn("features.norm5", x, channels)
    x = b.relu("relu", x)
    x = b.op("GlobalAveragePool", "pool", [x])
    x = b.op("Flatten", "flatten", [x], axis=1)

    # Zero-mean rows cancel the part of the (all non-negative) features common to every class,
    # so that the ranking depends on the input rather than on the row sums alone.
    w = b.rng.standard_normal((NUM_CLASSES, channels))
    w -= w.mean(axis=1, keepdims=True)
    w *= LOGIT_SCALE / np.sqrt(channels)
    bias = b.rng.normal(0.0, 0.1, NUM_CLASSES)
    b.nodes.append(helper.make_node(
        "Gemm",
        [x, b._const("classifier.weight", w), b._const("classifier.bias", bias)],
        [OUTPUT_NAME], name="classifier", alpha=1.0, beta=1.0, transB=1))

    graph = helper.make_graph(
        b.nodes, "densenet121",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, NUM_CLASSES])],
        initializer=b.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="densenet-api make-test-model", producer_version=str(seed),
        doc_string=f"DenseNet121 topology with random weights (seed {seed}); "
                   "predictions are meaningless.")
    model.ir_version = IR_VERSION
    return model


def check_counts(model: onnx.ModelProto) -> None:
    counts = Counter(node.op_type for node in model.graph.node)
    if dict(counts) != EXPECTED_OPS:
        raise SystemExit(f"error: node counts {dict(counts)} differ from {EXPECTED_OPS}")


def run_once(path: Path, seed: int) -> None:
    """Runs the written file on a random input and prints the spread of the scores."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipping the check run")
        return
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal(INPUT_SHAPE).astype(np.float32)
    (scores,) = session.run(None, {INPUT_NAME: x})
    if scores.shape != (1, NUM_CLASSES) or not np.isfinite(scores).all():
        raise SystemExit(f"error: bad scores: shape {scores.shape}, finite {np.isfinite(scores).all()}")
    s = scores[0].astype(np.float64)
    p = np.exp(s - s.max())
    p /= p.sum()
    top5 = np.argsort(-s, kind="stable")[:5]
    print(f"scores on a random input: min {s.min():.3f} max {s.max():.3f} std {s.std():.3f}; "
          f"top-5 {top5.tolist()} p {np.round(p[top5], 4).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/test/densenet121_test.onnx"),
                        help="where to write the model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: %(default)s)")
    args = parser.parse_args()

    model = build(args.seed)
    check_counts(model)
    onnx.checker.check_model(model, full_check=True)

    data = model.SerializeToString(deterministic=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)

    counts = ", ".join(f"{k} {v}" for k, v in EXPECTED_OPS.items())
    print(f"wrote {args.out} ({len(data)} bytes, opset {OPSET}, IR {model.ir_version})")
    print(f"nodes: {counts}")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    run_once(args.out, args.seed)


if __name__ == "__main__":
    main()
