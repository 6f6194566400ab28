"""ONNX graphs of PyTorch U-Nets, made ready for onnx2tf (pure ``onnx``, no TensorFlow).

What a ``torch.onnx.export`` of a U-Net holds and onnx2tf 1.x gets wrong, each fixed or
refused here before any slow step (see issue 22 for how each was seen):

- a dynamic batch and dynamic H/W: batch 1 and the tile size are written into the input;
- several outputs (deep supervision): the one named by ``--output`` (default the first) kept;
- logits: a ``Sigmoid`` (one channel) or ``Softmax`` over channels (several) is appended;
- a padded ``MaxPool`` after ``Relu`` (a ResNet stem) becomes ``Pad(0)`` + ``MaxPool``,
  exact since every value is >= 0 (onnx2tf would pad with -FLT_MAX, which breaks int8 and
  the Edge TPU);
- ``Resize`` with ``align_corners`` at opset 18, which onnx2tf 1.x silently ignores: the
  graph is converted to opset 17, or refused when that is not possible;
- ops that a target cannot run are named, with their nodes, before anything is converted.

Layouts: ONNX images are NCHW ``(1, C, H, W)``; the masks ``(1, K, H, W)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import DataError, ModelError
from edgeseg.optional import require

__all__ = [
    "ACTIVATIONS",
    "FOLDED_WITH_SIZE",
    "SUPPORTED_OPS",
    "GraphInfo",
    "append_activation",
    "check_activation",
    "check_ops",
    "describe",
    "detect_activation",
    "fix_input",
    "keep_output",
    "load_onnx",
    "pad_maxpools",
    "simplify",
    "size_multiple",
    "to_opset17_for_resize",
]

ACTIVATIONS = ("logits", "sigmoid", "softmax")

#: Ops the U-Nets of the field export to, which onnx2tf 1.28 converts (PyTorch exports of
#: milesial, smp and MONAI U-Nets, after onnxsim). Anything else is named and refused.
SUPPORTED_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
        "Conv", "ConvTranspose", "Div", "Dropout", "Elu", "Flatten", "Gather",
        "GlobalAveragePool", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization",
        "LeakyRelu", "MaxPool", "Mul", "Pad", "PRelu", "ReduceMean", "Relu", "Reshape",
        "Resize", "Sigmoid", "Shape", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub",
        "Tanh", "Transpose", "Unsqueeze", "Upsample", "Pow", "Erf", "Neg", "Max", "Min",
    }
)  # fmt: skip

#: Shape arithmetic a dynamic-size export carries (MONAI's BasicUNet pads each skip to the
#: upsampled size: Shape, ConstantOfShape, Equal, Where...) and onnxsim folds to constants
#: once the input size is fixed: allowed in the first check, named if any survive folding.
FOLDED_WITH_SIZE = frozenset(
    {
        "ConstantOfShape", "Equal", "Where", "Expand", "Range", "Floor", "Ceil", "Less",
        "Greater", "Not", "And", "Or", "Mod", "Size", "Tile", "ReduceProd", "ScatterND",
    }
)  # fmt: skip

#: Ops with no Edge TPU mapping, or that ruin full-integer int8 (InstanceNorm: Dice 0.685).
EDGETPU_REFUSED = {
    "InstanceNormalization": "ruins full-integer int8 (per-image statistics)",
    "LeakyRelu": "is not an Edge TPU op",
}


@dataclass(frozen=True)
class GraphInfo:
    """An image-to-mask ONNX graph's interface.

    ``input_shape`` is NCHW, ``output_shape`` NKHW; a dynamic dimension is None.
    """

    input_name: str
    input_shape: tuple[int | None, ...]
    output_name: str
    output_shape: tuple[int | None, ...]
    outputs: tuple[str, ...]
    opset: int


def load_onnx(path: str | Path) -> Any:
    """The ``onnx.ModelProto`` of ``path``; a one-line ModelError when it is not ONNX."""
    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError, OSError, ...
        raise ModelError(f"{path} is not a readable ONNX model: {_one_line(exc)}") from exc
    if not model.graph.node:
        raise ModelError(f"{path} is not a readable ONNX model: its graph has no nodes")
    return model


def _dims(value_info: Any) -> tuple[int | None, ...]:
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in shape.dim)


def _graph_inputs(model: Any) -> list[Any]:
    init = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def opset_of(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def describe(model: Any, output: str | None = None, *, path: str | Path = "<model>") -> GraphInfo:
    """The graph's one image input and its mask output (``output``, default the first).

    Raises:
        ModelError: not one rank-4 input and a rank-4 output (not image-to-mask), or
            ``output`` names no output of the graph.
    """
    inputs = _graph_inputs(model)
    outs = list(model.graph.output)
    names = tuple(o.name for o in outs)
    if output is not None and output not in names:
        raise ModelError(f"{path} has no output {output!r}; its outputs: {', '.join(names)}")
    chosen = next((o for o in outs if o.name == output), outs[0] if outs else None)
    in_shapes = [_dims(i) for i in inputs]
    if len(inputs) != 1 or len(in_shapes[0]) != 4 or chosen is None or len(_dims(chosen)) != 4:
        outs_txt = ", ".join(f"{o.name}{_shape_txt(_dims(o))}" for o in outs) or "none"
        pairs = zip(inputs, in_shapes, strict=True)
        ins_txt = ", ".join(f"{i.name}{_shape_txt(s)}" for i, s in pairs) or "none"
        raise ModelError(
            f"{path} is not an image-to-mask model: inputs {ins_txt}, outputs {outs_txt}; "
            "edgeseg converts models with one (1, C, H, W) image input and a (1, K, H, W) mask "
            "output"
        )
    return GraphInfo(
        input_name=inputs[0].name,
        input_shape=in_shapes[0],
        output_name=chosen.name,
        output_shape=_dims(chosen),
        outputs=names,
        opset=opset_of(model),
    )


def _shape_txt(dims: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def check_ops(
    model: Any, *, edgetpu: bool = False, path: str | Path = "<model>", folded: bool = True
) -> None:
    """Refuse, in one line naming the ops and their nodes, what onnx2tf cannot convert, and
    with ``edgetpu`` the ops the Edge TPU cannot run (offering the int8 ONNX or int8-cpu).
    ``folded=False``: the graph's size is not fixed yet, so the shape arithmetic of
    :data:`FOLDED_WITH_SIZE` passes (check again after :func:`simplify`)."""
    unsupported: dict[str, list[str]] = {}
    tpu: dict[str, list[str]] = {}
    allowed = SUPPORTED_OPS if folded else SUPPORTED_OPS | FOLDED_WITH_SIZE
    for i, node in enumerate(model.graph.node):
        name = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx") or node.op_type not in allowed:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            unsupported.setdefault(op, []).append(name)
        if edgetpu and node.op_type in EDGETPU_REFUSED:
            tpu.setdefault(node.op_type, []).append(name)
    if unsupported:
        raise ModelError(
            f"{path} uses op(s) edgeseg's ONNX importer does not convert: {_named(unsupported)}"
        )
    if tpu:
        why = "; ".join(f"{op} {EDGETPU_REFUSED[op]}" for op in tpu)
        raise ModelError(
            f"{path} cannot go to the Edge TPU: {_named(tpu)} ({why}); drop --edgetpu and use "
            "--onnx --int8 (QDQ ONNX) or the int8-cpu recipe"
        )


def _named(found: dict[str, list[str]], limit: int = 3) -> str:
    parts = []
    for op, nodes in sorted(found.items()):
        more = f" and {len(nodes) - limit} more" if len(nodes) > limit else ""
        parts.append(f"{op} (node {', '.join(nodes[:limit])}{more})")
    return ", ".join(parts)


def keep_output(model: Any, name: str) -> Any:
    """``model`` with only the graph output ``name`` (nodes that fed only the others are
    pruned by :func:`simplify` or by onnx2tf)."""
    kept = [o for o in model.graph.output if o.name == name]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    _prune(model)
    return model


def _prune(model: Any) -> None:
    """Drop nodes and initializers no graph output depends on."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    inits = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def fix_input(
    model: Any,
    size: tuple[int, int] | None,
    *,
    path: str | Path = "<model>",
    dynamic_hw: bool = False,
) -> Any:
    """Batch 1 and, where H/W are dynamic, ``size`` (H, W) written into the image input;
    with ``dynamic_hw`` dynamic H/W are left dynamic (whole frames of any size).

    Raises:
        ModelError: the channels are dynamic, or H/W are dynamic and no size was given.
    """
    inp = _graph_inputs(model)[0]
    dims = inp.type.tensor_type.shape.dim
    if not dims[1].HasField("dim_value"):
        raise ModelError(f"{path}: the number of input channels is dynamic; export it fixed")
    for i, want in ((0, 1), (2, size[0] if size else None), (3, size[1] if size else None)):
        if dims[i].HasField("dim_value"):
            continue
        if i > 0 and dynamic_hw:
            dims[i].Clear()
            dims[i].dim_param = "H" if i == 2 else "W"
            continue
        if want is None:
            raise ModelError(
                f"{path} accepts any image size; give the tile size with --input-size HxW"
            )
        dims[i].Clear()
        dims[i].dim_value = int(want)
    if dims[0].dim_value != 1:
        raise ModelError(f"{path} has a fixed batch of {dims[0].dim_value}; export it with 1")
    # Shapes inferred for the old dynamic input are stale: drop them, infer them again.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    onnx = require("onnx")
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        raise ModelError(f"{path}: ONNX shape inference failed: {_one_line(exc)}") from exc


def simplify(model: Any) -> tuple[Any, str]:
    """(onnxsim's simplified model, a note) through its Python API; the model as it is,
    with a note saying so, when onnxsim is not installed or fails on it."""
    try:
        import onnxsim
    except ImportError:
        return model, "onnxsim is not installed: the graph was not simplified"
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:
        return model, f"onnxsim failed ({_one_line(exc)}): the graph was not simplified"
    if not ok:
        return model, "onnxsim's check failed: the graph was not simplified"
    return simplified, "simplified by onnxsim"


def _producers(model: Any) -> dict[str, Any]:
    return {o: node for node in model.graph.node for o in node.output}


def _nonnegative(node: Any | None) -> bool:
    """True when ``node``'s output is >= 0 everywhere (Relu, Sigmoid)."""
    if node is None:
        return False
    return node.op_type in ("Relu", "Sigmoid")


def pad_maxpools(model: Any) -> tuple[Any, int]:
    """(model, count): each padded ``MaxPool`` fed by a ``Relu`` becomes ``Pad`` with zeros
    and an unpadded ``MaxPool``. Exact: the inputs are >= 0 and every window keeps at least
    one real value, so a zero pad never wins where -inf would not."""
    helper, numpy_helper = require("onnx.helper"), require("onnx.numpy_helper")
    producers = _producers(model)
    nodes: list[Any] = []
    count = 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        pads = list(attrs.get("pads", []))
        if (
            node.op_type != "MaxPool"
            or not any(pads)
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or len(node.output) != 1
            or not _nonnegative(producers.get(node.input[0]))
        ):
            nodes.append(node)
            continue
        count += 1
        base = node.name or f"maxpool{count}"
        half = len(pads) // 2
        full = [0, 0, *pads[:half], 0, 0, *pads[half:]]
        pads_name = f"{base}_edgeseg_pads"
        model.graph.initializer.append(
            numpy_helper.from_array(np.array(full, dtype=np.int64), pads_name)
        )
        padded = f"{base}_edgeseg_padded"
        nodes.append(
            helper.make_node(
                "Pad", [node.input[0], pads_name], [padded], mode="constant", name=f"{base}_pad"
            )
        )
        kept = {k: v for k, v in attrs.items() if k != "pads"}
        nodes.append(helper.make_node("MaxPool", [padded], list(node.output), name=base, **kept))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, count


def detect_activation(model: Any, output: str) -> str:
    """``"sigmoid"``/``"softmax"`` when ``output`` is made by such a node, else ``"logits"``."""
    node = _producers(model).get(output)
    if node is not None and node.op_type == "Sigmoid":
        return "sigmoid"
    if node is not None and node.op_type == "Softmax":
        return "softmax"
    return "logits"


def append_activation(model: Any, output: str, channels: int) -> tuple[Any, str]:
    """(model, op): a ``Sigmoid`` (one channel) or a ``Softmax`` over the channel axis
    (several) after the logits ``output``, which keeps its name."""
    helper = require("onnx.helper")
    logits = f"{output}_edgeseg_logits"
    for node in model.graph.node:
        node.output[:] = [logits if o == output else o for o in node.output]
        node.input[:] = [logits if i == output else i for i in node.input]
    if channels == 1:
        node = helper.make_node("Sigmoid", [logits], [output], name="edgeseg_sigmoid")
    else:
        node = helper.make_node("Softmax", [logits], [output], axis=1, name="edgeseg_softmax")
    model.graph.node.append(node)
    return model, node.op_type


def _aligned_resizes(model: Any) -> list[str]:
    helper = require("onnx.helper")
    found = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Resize":
            continue
        for a in node.attribute:
            if a.name == "coordinate_transformation_mode" and helper.get_attribute_value(a) in (
                b"align_corners",
                "align_corners",
            ):
                found.append(node.name or f"#{i}")
    return found


def to_opset17_for_resize(model: Any, *, path: str | Path = "<model>") -> tuple[Any, str | None]:
    """(model, note): a graph at opset 18+ with an ``align_corners`` ``Resize`` converted to
    opset 17, where onnx2tf 1.x honours align_corners (at 18 it ignores it and the model is
    silently wrong). Refused in one line when the ONNX version converter cannot do it."""
    aligned = _aligned_resizes(model)
    if opset_of(model) < 18 or not aligned:
        return model, None
    onnx = require("onnx")
    try:
        converted = onnx.version_converter.convert_version(model, 17)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise ModelError(
            f"{path}: Resize node(s) {', '.join(aligned[:3])} use align_corners at opset "
            f"{opset_of(model)}, which onnx2tf 1.x converts wrongly, and the graph could not "
            f"be taken to opset 17 ({_one_line(exc)}); export it again with opset_version=17"
        ) from exc
    return converted, f"converted from opset {opset_of(model)} to 17 (align_corners Resize)"


#: Ops that divide H and W by their stride (what makes a U-Net need a multiple of 2**depth).
_DOWNSAMPLING = ("MaxPool", "AveragePool", "Conv", "LpPool")


def size_multiple(model: Any) -> int | None:
    """The multiple a dynamic-size model's H and W must be: the product of the strides of the
    downsampling ops (MaxPool, AveragePool, strided Conv) on the deepest path from the image
    input (2**depth for a U-Net), or None when the graph downsamples nowhere that way.

    Each tensor's factor is the largest factor of the tensors its node reads, times the node's
    stride; the nodes of an ONNX graph are in topological order, so one pass finds them."""
    helper = require("onnx.helper")
    factor: dict[str, int] = {i.name: 1 for i in _graph_inputs(model)}
    best = 1
    for node in model.graph.node:
        seen = [factor[i] for i in node.input if i in factor]
        if not seen:
            continue
        f = max(seen)
        if node.op_type in _DOWNSAMPLING and node.domain in ("", "ai.onnx"):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            strides = [int(s) for s in attrs.get("strides", [])]
            f *= max(strides, default=1)
        best = max(best, f)
        for out in node.output:
            factor[out] = f
    return best if best > 1 else None


def check_activation(
    activation: str | None, channels: int | None, *, path: Any = "<model>"
) -> None:
    """Refuse, in one line, an ``--activation`` that cannot be what the output holds: a
    softmax over a single channel (it is 1 everywhere)."""
    if activation == "softmax" and channels == 1:
        raise DataError(
            f"--activation softmax: {path} has a 1-channel output, and a softmax over one "
            "channel is 1 everywhere; use sigmoid (probabilities) or logits"
        )


def parse_activation(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v not in ACTIVATIONS:
        raise DataError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {value!r}")
    return v


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ops_used(model: Any) -> Iterable[str]:
    return sorted({n.op_type for n in model.graph.node})


def nhwc_wrapped(model: Any, input_name: str, output_name: str) -> Any:
    """``model`` (NCHW, batch 1) with an NHWC ``input_name`` and an NHWC ``output_name``
    around it (two Transpose nodes; exact), as every edgeseg ONNX artefact takes and gives.

    The graph's own input and output are renamed inside it."""
    onnx, helper = require("onnx"), require("onnx.helper")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inp = _graph_inputs(model)[0]
    out = graph.output[0]
    n, c, h, w = _dims(inp)
    _, k, oh, ow = _dims(out)
    inner_in, inner_out = f"{inp.name}_nchw", f"{out.name}_nchw"
    for node in graph.node:
        node.input[:] = [inner_in if i == inp.name else i for i in node.input]
        node.output[:] = [inner_out if o == out.name else o for o in node.output]
    graph.node.insert(
        0,
        helper.make_node("Transpose", [input_name], [inner_in], perm=[0, 3, 1, 2], name="to_nchw"),
    )
    graph.node.append(
        helper.make_node("Transpose", [inner_out], [output_name], perm=[0, 2, 3, 1], name="to_nhwc")
    )
    elem = inp.type.tensor_type.elem_type
    # Dynamic H/W (whole frames of any size) stay dynamic, named as the output's are.
    h, w = ("H" if h is None else h), ("W" if w is None else w)
    oh, ow = (h if oh is None else oh), (w if ow is None else ow)
    new_in = helper.make_tensor_value_info(input_name, elem, [n, h, w, c])
    new_out = helper.make_tensor_value_info(output_name, elem, [1, oh, ow, k])
    kept_inputs = [i for i in graph.input if i.name != inp.name]
    del graph.input[:]
    graph.input.extend([new_in, *kept_inputs])
    del graph.output[:]
    graph.output.append(new_out)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


def safe_node_names(model: Any) -> Any:
    """Every node named ``n<index>_<name with [A-Za-z0-9_.] only>``: PyTorch names nodes
    ``/up1/Resize``, which TensorFlow refuses as a layer name (its pattern wants a letter or
    digit first) under the Keras 2 bundled with TensorFlow."""
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}_{_UNSAFE.sub('_', node.name).strip('_')}"[:120]
    return model
