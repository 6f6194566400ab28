"""PyTorch-style U-Net graphs built with ``onnx.helper`` (no torch): what
``torch.onnx.export`` writes for milesial's Pytorch-UNet (bilinear align_corners Resize),
smp's resnet stem (padded MaxPool after ReLU) and MONAI's BasicUNet (InstanceNorm,
LeakyReLU, ConvTranspose), NCHW, ending in logits. Seeded He-initialised weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, what: str) -> str:
        self.n += 1
        return f"{what}_{self.n}"

    def const(self, value: np.ndarray, what: str = "c") -> str:
        name = self.name(what)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"/{out}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, pad: int = 1) -> str:
        w = self.rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.05, cout).astype(np.float32)
        return self.node(
            "Conv", [x, self.const(w, "w"), self.const(b, "b")],
            kernel_shape=[k, k], pads=[pad] * 4,
        )  # fmt: skip

    def act(self, x: str, leaky: bool) -> str:
        return self.node("LeakyRelu", [x], alpha=0.1) if leaky else self.node("Relu", [x])

    def norm(self, x: str, c: int, instance: bool) -> str:
        if instance:
            scale = self.rng.uniform(0.8, 1.2, c).astype(np.float32)
            bias = self.rng.normal(0, 0.1, c).astype(np.float32)
            return self.node(
                "InstanceNormalization", [x, self.const(scale), self.const(bias)], epsilon=1e-5
            )
        return x


def unet_onnx(
    path: str | Path | None = None,
    *,
    channels: int = 1,
    classes: int = 1,
    size: int | None = 32,
    base: int = 4,
    depth: int = 2,
    up: str = "align_corners",  # align_corners | half_pixel | nearest | convtranspose
    instance_norm: bool = False,
    leaky: bool = False,
    stem_maxpool: bool = False,  # a padded 3x3/2 MaxPool after ReLU (ResNet stem), then up x2
    opset: int = 17,
    head: str = "logits",  # logits | sigmoid | softmax
    extra_outputs: int = 0,  # deep-supervision heads after the main output
    seed: int = 0,
) -> onnx.ModelProto:
    """A U-Net graph ``(1, C, H, W)`` → ``(1, K, H, W)``; H, W dynamic when ``size`` is None."""
    g = _Graph(seed)
    x = "input"
    skips = []
    c = channels
    widths = [base * 2**i for i in range(depth + 1)]
    if stem_maxpool:
        x = g.act(g.conv(x, c, base), leaky=False)
        x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        c = base
    for i, wd in enumerate(widths):
        x = g.act(g.norm(g.conv(x, c, wd), wd, instance_norm), leaky)
        x = g.act(g.norm(g.conv(x, wd, wd), wd, instance_norm), leaky)
        c = wd
        if i < depth:
            skips.append((x, wd))
            x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    heads = []
    for skip, wd in reversed(skips):
        x = _upsample(g, x, c, up, opset)
        x = g.node("Concat", [x, skip], axis=1)
        x = g.act(g.conv(x, c + wd, wd), leaky)
        c = wd
        heads.append((x, c))
    if stem_maxpool:
        x = _upsample(g, x, c, up if up != "convtranspose" else "nearest", opset)
    y = g.conv(x, c, classes, k=1, pad=0)
    if head == "sigmoid":
        y = g.node("Sigmoid", [y])
    elif head == "softmax":
        y = g.node("Softmax", [y], axis=1)
    outputs = [(y, classes)]
    for hx, hc in heads[:extra_outputs]:
        outputs.append((g.conv(hx, hc, classes, k=1, pad=0), classes))
    hw = [size, size] if size else ["H", "W"]
    out_names = ["logits"] + [f"aux{i}" for i in range(1, len(outputs))]
    for (name, _), new in zip(outputs, out_names, strict=False):
        for node in g.nodes:
            node.output[:] = [new if o == name else o for o in node.output]
            node.input[:] = [new if i == name else i for i in node.input]
    outs = []
    for new, (_, k) in zip(out_names, outputs, strict=False):
        shape = [1, k, *hw] if new == "logits" else [1, k, None, None]
        outs.append(helper.make_tensor_value_info(new, TensorProto.FLOAT, shape))
    in_shape = [1 if size else "N", channels, *hw]
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)
    graph = helper.make_graph(g.nodes, "unet", [image], outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _upsample(g: _Graph, x: str, c: int, up: str, opset: int) -> str:
    if up == "convtranspose":
        w = g.rng.normal(0, np.sqrt(2 / (c * 4)), (c, c, 2, 2)).astype(np.float32)
        return g.node("ConvTranspose", [x, g.const(w, "wt")], kernel_shape=[2, 2], strides=[2, 2])
    scales = g.const(np.array([1, 1, 2, 2], np.float32), "scales")
    roi = g.const(np.array([], np.float32), "roi")
    if up == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "floor"}  # fmt: skip
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode": up}
    return g.node("Resize", [x, roi, scales], **attrs)


def single_op_onnx(op: str, shape: tuple[int, ...], opset: int = 17, **attrs) -> onnx.ModelProto:
    """One node graph ``input`` → ``output`` (e.g. a Resize with align_corners)."""
    g = _Graph(0)
    inputs = ["input"]
    out_shape: list = list(shape)
    if op == "Resize":
        inputs += [g.const(np.array([], np.float32)), g.const(np.array([1, 1, 2, 2], np.float32))]
        out_shape = [shape[0], shape[1], shape[2] * 2, shape[3] * 2]
    g.nodes.append(helper.make_node(op, inputs, ["output"], name="/op", **attrs))
    graph = helper.make_graph(
        g.nodes, op,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], g.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
