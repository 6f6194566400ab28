"""Multiply-accumulates of a .tflite model, read from its ops and tensor shapes (no runtime).

What a U-Net costs is almost all convolutions, so only they are counted (one MAC per weight
per output pixel):

* CONV_2D: output elements x (kh x kw x input channels per group);
* DEPTHWISE_CONV_2D: output elements x (kh x kw);
* TRANSPOSE_CONV: input elements x (kh x kw x output channels);
* FULLY_CONNECTED: output elements x input features.

Element-wise ops (ADD, MUL, activations), pooling, resizes and concatenations are left out:
they are a few per cent of a U-Net's arithmetic. ``edgeseg bench`` divides this count by the
measured median latency to give a device's effective int8 GMAC/s, which device profiles record
(``int8_gmacs``) and ``edgeseg distill --device`` uses to predict a student's latency.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeseg.core.tflite_file import (
    Source,
    as_list,
    builtin_names,
    parse_bytes,
    read_model_bytes,
    schema,
)

__all__ = ["COUNTED_OPS", "tflite_macs"]

COUNTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")


def _shape(tensor: Any) -> list[int]:
    sig = as_list(getattr(tensor, "shapeSignature", None))
    shape = as_list(tensor.shape)
    return [int(d) for d in (shape if len(shape) else sig)]


def tflite_macs(source: Source) -> int:
    """Multiply-accumulates of one inference of the main subgraph (see the module docstring).

    Raises :class:`~edgeseg.errors.ModelError` for a file that is not a valid .tflite model.
    """
    data, label = read_model_bytes(source)
    model = parse_bytes(data, label)
    sg = model.subgraphs[0]
    tensors = sg.tensors or []
    names = builtin_names()
    custom = schema().BuiltinOperator.CUSTOM
    total = 0
    for op in sg.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == custom:
            continue
        name = names.get(builtin, "")
        if name not in COUNTED_OPS:
            continue
        ins = [int(i) for i in as_list(op.inputs)]
        outs = [int(i) for i in as_list(op.outputs) if i >= 0]
        if not outs:
            continue
        out = _shape(tensors[outs[0]])
        out_elems = int(np.prod(out)) if out else 0
        if name == "CONV_2D":
            # filter (O, kh, kw, I/groups)
            f = _shape(tensors[ins[1]])
            total += out_elems * int(np.prod(f[1:]))
        elif name == "DEPTHWISE_CONV_2D":
            f = _shape(tensors[ins[1]])  # (1, kh, kw, C*multiplier)
            total += out_elems * f[1] * f[2]
        elif name == "TRANSPOSE_CONV":
            # inputs: output shape, filter (O, kh, kw, I), input
            f = _shape(tensors[ins[1]])
            x = _shape(tensors[ins[2]])
            total += int(np.prod(x)) * f[0] * f[1] * f[2]
        else:  # FULLY_CONNECTED: weights (O, I)
            f = _shape(tensors[ins[1]])
            total += out_elems * f[-1]
    return total
