"""The Coral Edge TPU: an op-by-op preflight, the compiler and its log, and the attached TPUs.

Preflight (no compiler needed). :func:`preflight` reads an int8 .tflite and tells, op by op in
execution order, whether the Edge TPU would run it and, if not, why. The rules are those of
Coral's "Supported operations" table and model requirements
(https://coral.ai/docs/edgetpu/models-intro):

* every tensor an op touches is 8-bit (int8/uint8; int32 only for biases and constant shape
  arguments); a float tensor means "model not quantized" for that op;
* shapes are static and known at compile time;
* tensors are at most 3-D in effect: only the three innermost dimensions may exceed 1, so a
  batch-1 NHWC image is fine and the 6-D tensors of Keras 3's ``UpSampling2D`` are not; the
  batch is 1;
* the op is in the supported list and within its known limitations (RESIZE_* on 3-D tensors
  with a constant size, CONCATENATION and pooling without fused activation, SOFTMAX on 1-D
  tensors only, STRIDED_SLICE with unit strides, no reduction or padding over the batch);
  TRANSPOSE_CONV is listed but often refused (google-coral/edgetpu #509, #684, #686): it is
  flagged as a risk, as are resizes the compiler may refuse "to avoid loss in precision";
* the compiler makes one Edge TPU partition: CPU ops before it (e.g. a float input's
  QUANTIZE) stay before it, and the first CPU op after it ends it: that op *and every op
  after it* run on the CPU, even supported ones.

The summary gives the ops mapped / total, the op that ends the partition, and the parameter
bytes of the mapped part against the ~8 MiB on-chip cache (what does not fit is streamed
from the host on every inference).

Compiler. ``edgetpu_compiler`` exists for x86-64 Debian/Ubuntu only, from Coral's apt
repository. :func:`compile_model` runs it (list arguments, ``check=True``, a timeout) and
:func:`parse_compiler_log` reads what it prints with ``-s`` ("Operator Count Status" table,
"Number of operations that will run on Edge TPU", on-chip and off-chip parameter memory).
When it is absent, :data:`COMPILER_INSTALL_HINT` says how to get it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg import sizes
from edgeseg.core.tflite_file import (
    Source,
    as_list,
    as_text,
    builtin_names,
    dtype_name,
    parse_bytes,
    read_model_bytes,
    schema,
)
from edgeseg.errors import DataError, EdgesegError, MissingDependencyError

__all__ = [
    "COMPILER",
    "COMPILER_INSTALL_HINT",
    "PARAMETER_CACHE_BYTES",
    "SUPPORTED_OPS",
    "CompileResult",
    "CompilerError",
    "CompilerReport",
    "OpStatus",
    "OpVerdict",
    "Preflight",
    "check_recipe",
    "compile_model",
    "compiler_args",
    "compiler_path",
    "markdown_table",
    "parse_compiler_log",
    "preflight",
]

#: The Edge TPU's on-chip memory for caching parameters (the compiler reports the exact
#: space left after its own use, typically 6.9-7.9 MiB).
PARAMETER_CACHE_BYTES = 8 * 1024 * 1024

#: Ops the Edge TPU can run (TFLite builtin names), with their known limitations, after
#: Coral's "Supported operations" table (compiler 16).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "no fused activation",
    "CONCATENATION": "no fused activation; a constant input only as the second of two "
    "inputs and all zeros (a zero padding)",
    "CONV_2D": "same dilation in x and y",
    "DEPTHWISE_CONV_2D": "same dilation in x and y",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "default weights format; output one-dimensional",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "LSTM": "unidirectional only",
    "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation",
    "MEAN": "no reduction over the batch",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "no packing along the batch",
    "PAD": "no padding of the batch",
    "PRELU": "alpha one-dimensional",
    "QUANTIZE": "",
    "REDUCE_MAX": "no reduction over the batch",
    "REDUCE_MIN": "no reduction over the batch",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "some reshapes of large tensors are not mapped",
    "RESIZE_BILINEAR": "3-D input/output; may be refused to avoid loss of precision",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input/output; may be refused to avoid loss of precision",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "1-D input only, at most 16,000 elements",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "no splitting of the batch",
    "SQUARED_DIFFERENCE": "",
    "SQUEEZE": "",
    "STRIDED_SLICE": "all strides 1, no ellipsis or new-axis mask",
    "SUB": "",
    "SUM": "no reduction over the batch",
    "TANH": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "listed, but often not mapped",
}
# The custom op of a model the compiler has already compiled.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
SOFTMAX_MAX_ELEMENTS = 16000
_EIGHT_BIT = ("int8", "uint8")
# Ops that must not work along the batch dimension of a 4-D tensor.
_BATCH_AXIS_OPS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "PACK", "SPLIT"}
_RESIZE_OPS = ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR")

COMPILER = "edgetpu_compiler"
COMPILER_INSTALL_HINT = (
    "edgetpu_compiler is not installed (it runs on x86-64 Debian/Ubuntu only): add Coral's apt "
    "repository (https://coral.ai/docs/edgetpu/compiler) and run `sudo apt-get install "
    "edgetpu-compiler`, or use Coral's Colab compiler; then run `edgetpu_compiler -s -o OUT "
    "MODEL_int8-edgetpu.tflite`"
)
DEFAULT_COMPILER_TIMEOUT = 180.0


class CompilerError(EdgesegError):
    """edgetpu_compiler failed or timed out; the other artefacts and the report are kept."""


def check_recipe(recipe: Any) -> None:
    """DataError for an Edge TPU recipe that cannot give an Edge TPU model (float I/O).

    (A float precision with ``edgetpu = true`` is refused when the recipe is read.)
    """
    if recipe.edgetpu and recipe.precision != "int8":
        raise DataError(
            f"recipe {recipe.name} is {recipe.precision}: the Edge TPU runs full-integer int8 "
            "models only; use --edgetpu (the int8-edgetpu recipe)"
        )
    if recipe.edgetpu and recipe.io == "float32":
        raise DataError(
            f"recipe {recipe.name} is for the Edge TPU but has float32 I/O: the Edge TPU runs "
            'integer models only; set io = "uint8" (or "int8") in the recipe'
        )


# --------------------------------------------------------------------------------------------
# Preflight
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpVerdict:
    """One op, in execution order: where it would run and why.

    ``target`` is ``"edgetpu"`` or ``"cpu"``. ``reasons`` say why the op cannot run on the
    Edge TPU by itself (empty for an op that could, but follows the first CPU op; see
    ``after_partition``); ``risks`` are limitations the compiler may or may not hit.
    """

    index: int
    op: str
    target: str
    output: str
    shape: tuple[int, ...]
    reasons: tuple[str, ...] = ()
    risks: tuple[str, ...] = ()
    after_partition: bool = False  # supported, but after the op that ends the TPU partition
    parameter_bytes: int = 0

    @property
    def why(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        if self.after_partition:
            return "after the first CPU op (one Edge TPU partition)"
        return ""


@dataclass(frozen=True)
class Preflight:
    """What the Edge TPU would run of a model; see the module docstring for the rules."""

    model: str
    ops: tuple[OpVerdict, ...]
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    cache_bytes: int = PARAMETER_CACHE_BYTES
    notes: tuple[str, ...] = ()
    compiled: bool = False  # the model already holds an edgetpu-custom-op

    @property
    def total(self) -> int:
        return len(self.ops)

    @property
    def mapped(self) -> int:
        return sum(1 for v in self.ops if v.target == "edgetpu")

    @property
    def share(self) -> float:
        return self.mapped / self.total if self.total else 0.0

    @property
    def first_cpu(self) -> OpVerdict | None:
        """The CPU op that ends the Edge TPU partition (None when nothing ends it)."""
        seen_tpu = False
        for v in self.ops:
            if v.target == "edgetpu":
                seen_tpu = True
            elif seen_tpu:
                return v
        return None

    @property
    def leading_cpu(self) -> tuple[OpVerdict, ...]:
        """CPU ops before the partition (e.g. QUANTIZE of a float input)."""
        out = []
        for v in self.ops:
            if v.target == "edgetpu":
                break
            out.append(v)
        return tuple(out) if self.mapped else ()

    @property
    def parameter_bytes(self) -> int:
        """Bytes of constant tensors (weights, biases) used by the ops mapped to the TPU."""
        return sum(v.parameter_bytes for v in self.ops if v.target == "edgetpu")

    @property
    def fits_cache(self) -> bool:
        return self.parameter_bytes <= self.cache_bytes

    @property
    def risks(self) -> tuple[str, ...]:
        return tuple(f"#{v.index} {v.op}: {r}" for v in self.ops for r in v.risks)

    @property
    def verdict(self) -> str:
        """One line: the whole model, part of it, or nothing on the Edge TPU."""
        if self.total == 0:
            return "no ops"
        if self.mapped == self.total:
            head = f"all {self.total} ops on the Edge TPU"
        elif self.mapped == 0:
            head = f"nothing on the Edge TPU: all {self.total} ops on the CPU"
        else:
            head = f"{self.mapped}/{self.total} ops on the Edge TPU ({self.share:.0%})"
            first = self.first_cpu
            if first is not None:
                head += f"; the CPU from #{first.index} {first.op} on ({first.why})"
        if self.mapped:
            mib = self.parameter_bytes / 2**20
            cache = self.cache_bytes / 2**20
            fit = "fit" if self.fits_cache else "do NOT fit (the rest is streamed per inference)"
            head += f"; parameters {mib:.2f} MiB {fit} the ~{cache:.0f} MiB on-chip cache"
        if self.risks:
            head += f"; {len(self.risks)} risk(s)"
        return head

    def to_dict(self) -> dict[str, Any]:
        first = self.first_cpu
        return {
            "model": self.model,
            "verdict": self.verdict,
            "mapped": self.mapped,
            "total": self.total,
            "share": self.share,
            "first_cpu_op": (
                {"index": first.index, "op": first.op, "why": first.why} if first else None
            ),
            "leading_cpu_ops": [v.index for v in self.leading_cpu],
            "parameter_bytes": self.parameter_bytes,
            "cache_bytes": self.cache_bytes,
            "fits_cache": self.fits_cache,
            "input_types": list(self.input_types),
            "output_types": list(self.output_types),
            "compiled": self.compiled,
            "notes": list(self.notes),
            "risks": list(self.risks),
            "ops": [_op_dict(v) for v in self.ops],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self, heading: str = "##") -> str:
        lines = [
            f"{heading} Edge TPU preflight: {self.model}",
            "",
            f"**{self.verdict}**",
            "",
            f"I/O: {', '.join(self.input_types)} in, {', '.join(self.output_types)} out.",
        ]
        lines += [f"- {n}" for n in self.notes]
        if self.risks:
            lines += ["", "Risks (the compiler may refuse these):", ""]
            lines += [f"- {r}" for r in self.risks]
        return "\n".join([*lines, "", *markdown_table(self.to_dict()["ops"])]) + "\n"


def _op_dict(v: OpVerdict) -> dict[str, Any]:
    d = asdict(v)
    d.update(shape=list(v.shape), reasons=list(v.reasons), risks=list(v.risks))
    return d


def markdown_table(ops: list[dict[str, Any]]) -> list[str]:
    """The op-by-op Markdown table of a preflight (``Preflight.to_dict()["ops"]``)."""
    lines = ["| # | op | output shape | runs on | why |", "|---:|---|---|---|---|"]
    for o in ops:
        where = "Edge TPU" if o["target"] == "edgetpu" else "**CPU**"
        why = "; ".join(o["reasons"])
        if not why and o["after_partition"]:
            why = "after the first CPU op (one Edge TPU partition)"
        if not why and o["risks"]:
            why = "risk: " + "; ".join(o["risks"])
        shape = _fmt(o["shape"])
        lines.append(f"| {o['index']} | {o['op']} | {shape} | {where} | {why.replace('|', '/')} |")
    return lines


def preflight(source: Source, name: str | None = None) -> Preflight:
    """The Edge TPU preflight of a .tflite model (path or bytes); see the module docstring.

    Raises :class:`~edgeseg.errors.ModelError` for a file that is not a valid .tflite model.
    """
    data, label = read_model_bytes(source)
    model = parse_bytes(data, label)
    sg = model.subgraphs[0]
    tensors = sg.tensors or []
    buffers = model.buffers or []
    names = builtin_names()
    fb = schema()
    notes: list[str] = []
    if len(model.subgraphs) > 1:
        notes.append(
            f"{len(model.subgraphs)} subgraphs: the Edge TPU compiler maps the main one only"
        )

    def is_const(i: int) -> bool:
        b = tensors[i].buffer
        return 0 < b < len(buffers) and buffers[b].data is not None and len(buffers[b].data) > 0

    def const_value(i: int) -> np.ndarray | None:
        if not is_const(i):
            return None
        t = tensors[i]
        dtype = np.dtype(dtype_name(t.type)) if dtype_name(t.type) != "bool" else np.bool_
        raw = np.asarray(buffers[t.buffer].data, np.uint8).tobytes()
        try:
            return np.frombuffer(raw, dtype).reshape(tuple(as_list(t.shape)) or ())
        except (TypeError, ValueError):
            return None

    verdicts: list[OpVerdict] = []
    compiled = False
    for index, op in enumerate(sg.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == fb.BuiltinOperator.CUSTOM:
            opname = as_text(code.customCode) or "CUSTOM"
        else:
            opname = names.get(builtin, f"BUILTIN_{builtin}")
        ins = [i for i in as_list(op.inputs) if i >= 0]
        outs = [i for i in as_list(op.outputs) if i >= 0]
        first_out = tensors[outs[0]] if outs else None
        out_name = as_text(first_out.name) if first_out is not None else ""
        out_shape = tuple(int(d) for d in _signature(first_out)) if first_out is not None else ()
        params = sum(len(buffers[tensors[i].buffer].data) for i in set(ins) if is_const(i))
        if opname == EDGETPU_CUSTOM_OP:
            compiled = True
            verdicts.append(OpVerdict(index, opname, "edgetpu", out_name, out_shape))
            continue
        reasons: list[str] = []
        risks: list[str] = []
        if opname not in SUPPORTED_OPS:
            reasons.append(f"{opname} is not supported by the Edge TPU")
        reasons += _tensor_rules(tensors, ins, outs, is_const)
        reasons += _op_rules(opname, op, ins, outs, tensors, const_value, risks)
        verdicts.append(
            OpVerdict(
                index,
                opname,
                "cpu" if reasons else "edgetpu",
                out_name,
                out_shape,
                tuple(dict.fromkeys(reasons)),
                tuple(dict.fromkeys(risks)),
                parameter_bytes=params,
            )
        )
    verdicts = _one_partition(verdicts)
    io_types = [dtype_name(tensors[i].type) for i in as_list(sg.inputs)]
    out_types = [dtype_name(tensors[i].type) for i in as_list(sg.outputs)]
    floating = sum(1 for v in verdicts if any("(the Edge TPU runs 8-bit" in r for r in v.reasons))
    if verdicts and floating == len(verdicts):
        notes.append(
            "the model is not quantized ('Model not quantized'): the Edge TPU runs "
            "full-integer int8 models; convert with `edgeseg convert MODEL --edgetpu`"
        )
    elif floating:
        notes.append(
            f"{floating} op(s) touch float tensors (kept float or hybrid): each of them, and "
            "everything after the first, runs on the CPU"
        )
    if any(t not in _EIGHT_BIT for t in io_types + out_types) and not compiled:
        notes.append(
            "float I/O: the QUANTIZE/DEQUANTIZE at the ends run on the CPU; convert with "
            "--edgetpu for uint8 I/O"
        )
    if compiled:
        notes.append("already compiled for the Edge TPU (holds an edgetpu-custom-op)")
    if any(v.op == "TILE" and v.reasons for v in verdicts):
        notes.append(
            "TILE/RESHAPE on more than 3-D tensors is how Keras 3 converts UpSampling2D: "
            "`edgeseg convert MODEL --edgetpu` rewrites it as one RESIZE_NEAREST_NEIGHBOR"
        )
    return Preflight(
        model=name or label,
        ops=tuple(verdicts),
        input_types=tuple(io_types),
        output_types=tuple(out_types),
        notes=tuple(notes),
        compiled=compiled,
    )


def _tensor_rules(tensors: list[Any], ins: list[int], outs: list[int], is_const: Any) -> list[str]:
    """Reasons from the types and shapes of the tensors an op touches, one per kind."""
    kinds: dict[str, list[str]] = {}
    for i in dict.fromkeys((*ins, *outs)):
        t = tensors[i]
        name = _short(as_text(t.name) or f"tensor {i}")
        dtype = dtype_name(t.type)
        const = is_const(i)
        if dtype not in _EIGHT_BIT and not (const and dtype in ("int32", "int64")):
            kinds.setdefault(f"{dtype} (the Edge TPU runs 8-bit only)", []).append(name)
        if const:
            continue
        shape = [int(d) for d in _signature(t)]
        if any(d < 0 for d in shape):
            kinds.setdefault("dynamic shape", []).append(f"{name} {_fmt(shape)}")
        elif len(shape) == 4 and shape[0] != 1:
            kinds.setdefault("batch > 1 (the Edge TPU runs batch 1)", []).append(
                f"{name} {_fmt(shape)}"
            )
        elif len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            kinds.setdefault("more than 3-D (only the 3 innermost dims may exceed 1)", []).append(
                f"{name} {_fmt(shape)}"
            )
    return [f"{kind}: {', '.join(names)}" for kind, names in kinds.items()]


def _op_rules(
    opname: str,
    op: Any,
    ins: list[int],
    outs: list[int],
    tensors: list[Any],
    const_value: Any,
    risks: list[str],
) -> list[str]:
    """Reasons from the op's own limitations; appends what the compiler may refuse to risks."""
    fb = schema()
    opts = op.builtinOptions
    reasons: list[str] = []
    act = getattr(opts, "fusedActivationFunction", 0) or 0
    if opname in ("CONCATENATION", "AVERAGE_POOL_2D", "MAX_POOL_2D") and act:
        reasons.append(f"{opname} with a fused activation")
    if opname == "CONCATENATION":
        consts = [i for i in ins if const_value(i) is not None]
        if consts:
            zero = all(not np.any(const_value(i)) for i in consts)
            if len(ins) != 2 or not zero:
                reasons.append(
                    "CONCATENATION with a constant input other than one all-zero input of two"
                )
    conv = opname in ("CONV_2D", "DEPTHWISE_CONV_2D") and opts is not None
    if conv and (opts.dilationHFactor or 1) != (opts.dilationWFactor or 1):
        reasons.append(f"{opname} with different dilations in y and x")
    if opname in _RESIZE_OPS:
        size = const_value(ins[1]) if len(ins) > 1 else None
        if size is None:
            reasons.append(f"{opname} with a size computed at run time")
        else:
            in_shape = [int(d) for d in _signature(tensors[ins[0]])]
            out_hw = [int(s) for s in np.asarray(size).ravel()[:2]]
            if len(in_shape) == 4 and len(out_hw) == 2 and min(in_shape[1:3]) > 0:
                fy, fx = (out_hw[0] / in_shape[1], out_hw[1] / in_shape[2])
                if fy != fx or fy < 1 or fy != int(fy):
                    risks.append(
                        f"resize {in_shape[1]}x{in_shape[2]} -> {out_hw[0]}x{out_hw[1]} is not "
                        "one integer upscale factor: the compiler may refuse it to avoid loss "
                        "of precision"
                    )
        if opts is not None and opts.alignCorners:
            risks.append("align_corners=True: may be refused to avoid loss of precision")
        if opts is not None and opts.halfPixelCenters:
            risks.append(
                "half_pixel_centers=True (op version 3): compilers before 16 reject it "
                "('Operation version not supported')"
            )
    if opname == "SOFTMAX" and ins:
        shape = [int(d) for d in _signature(tensors[ins[0]])]
        big = [d for d in shape if d != 1]
        n = int(np.prod(shape)) if shape else 0
        if len(big) > 1 or n > SOFTMAX_MAX_ELEMENTS:
            reasons.append(
                f"SOFTMAX over {_fmt(shape)}: the Edge TPU runs a 1-D softmax of at most "
                f"{SOFTMAX_MAX_ELEMENTS} elements (a per-pixel softmax stays on the CPU)"
            )
    if opname == "TRANSPOSE_CONV":
        risks.append(
            "TRANSPOSE_CONV is listed as supported but often is not mapped "
            "(google-coral/edgetpu #509, #684, #686); UpSampling2D + Conv2D maps reliably "
            "(UNetConfig(decoder='upsample'))"
        )
    if opname == "STRIDED_SLICE" and opts is not None:
        strides = const_value(ins[3]) if len(ins) > 3 else None
        if strides is None or np.any(np.asarray(strides) != 1):
            reasons.append("STRIDED_SLICE with strides other than 1")
        if opts.ellipsisMask or opts.newAxisMask:
            reasons.append("STRIDED_SLICE with an ellipsis or new-axis mask")
    if opname in _BATCH_AXIS_OPS and ins:
        data = ins[1] if opname == "SPLIT" and len(ins) > 1 else ins[0]
        rank = len(_signature(tensors[data]))
        if opname == "PACK":
            axes = np.asarray([getattr(opts, "axis", 0) if opts is not None else 0])
            rank += 1
        else:
            axes = const_value(ins[0] if opname == "SPLIT" else ins[1]) if len(ins) > 1 else None
        batch = axes is not None and 0 in {int(a) % rank for a in np.asarray(axes).ravel()}
        if rank == 4 and batch:
            reasons.append(f"{opname} over the batch dimension")
    if opname == "PAD" and len(ins) > 1:
        pads = const_value(ins[1])
        if pads is None:
            reasons.append("PAD with paddings computed at run time")
        elif np.asarray(pads).ndim == 2 and np.any(np.asarray(pads)[0] != 0):
            reasons.append("PAD of the batch dimension")
    if opname == "FULLY_CONNECTED" and outs:
        shape = [int(d) for d in _signature(tensors[outs[0]])]
        if sum(d > 1 for d in shape) > 1:
            reasons.append(f"FULLY_CONNECTED output {_fmt(shape)} is not one-dimensional")
        if opts is not None and opts.weightsFormat != fb.FullyConnectedOptionsWeightsFormat.DEFAULT:
            reasons.append("FULLY_CONNECTED with shuffled weights")
    return reasons


def _one_partition(verdicts: list[OpVerdict]) -> list[OpVerdict]:
    """Everything after the first CPU op that follows a TPU op runs on the CPU."""
    out: list[OpVerdict] = []
    started = ended = False
    for v in verdicts:
        if ended and v.target == "edgetpu":
            v = OpVerdict(**{**v.__dict__, "target": "cpu", "after_partition": True})
        elif v.target == "edgetpu":
            started = True
        elif started:
            ended = True
        out.append(v)
    return out


def _signature(tensor: Any) -> list[int]:
    sig = tensor.shapeSignature
    if sig is not None and len(sig):
        return [int(d) for d in as_list(sig)]
    return [int(d) for d in as_list(tensor.shape)]


def _fmt(shape: list[int] | tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _short(name: str, limit: int = 48) -> str:
    """A tensor name short enough for one table cell: the end of its last ';'-part."""
    part = "/".join(name.split(";")[-1].split("/")[-3:])
    return part if len(part) <= limit else "…" + part[-(limit - 1) :]


# --------------------------------------------------------------------------------------------
# The compiler
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpStatus:
    """One row of the compiler's "Operator Count Status" table."""

    op: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status.startswith("Mapped to Edge TPU")


@dataclass(frozen=True)
class CompilerReport:
    """What ``edgetpu_compiler -s`` said about one model (byte sizes parsed from KiB/MiB)."""

    version: str | None
    ops_edgetpu: int
    ops_cpu: int
    total_ops: int | None
    subgraphs: int | None
    on_chip_bytes: int | None
    on_chip_remaining_bytes: int | None
    off_chip_bytes: int | None
    operators: tuple[OpStatus, ...] = ()
    output_model: str | None = None
    log_file: str | None = None
    compile_ms: float | None = None

    @property
    def share(self) -> float:
        total = self.ops_edgetpu + self.ops_cpu
        return self.ops_edgetpu / total if total else 0.0

    @property
    def summary(self) -> str:
        mib = (self.on_chip_bytes or 0) / 2**20
        off = (self.off_chip_bytes or 0) / 2**20
        line = (
            f"{self.ops_edgetpu}/{self.ops_edgetpu + self.ops_cpu} ops on the Edge TPU "
            f"({self.share:.0%}), {self.subgraphs or 0} Edge TPU subgraph(s); parameters "
            f"{mib:.2f} MiB cached on chip, {off:.2f} MiB streamed per inference"
        )
        not_mapped = [f"{o.op} x{o.count}: {o.status}" for o in self.operators if not o.mapped]
        return line + ("; not mapped: " + "; ".join(not_mapped) if not_mapped else "")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["operators"] = [asdict(o) for o in self.operators]
        d["share"] = self.share
        return d


_ROW = re.compile(r"^([A-Z][A-Z0-9_]*|[a-z][a-z0-9-]*)\s+(\d+)\s+(\S.*?)\s*$")


def _bytes(text: str | None) -> int | None:
    """A size the compiler printed ("4.21MiB", "0.00B": powers of 1024), or None."""
    if text is None:
        return None
    try:
        return sizes.parse_bytes(text, minimum=0)
    except DataError:
        return None


def parse_compiler_log(text: str) -> CompilerReport:
    """Parse the compiler's output (stdout with ``-s``, or its ``*_edgetpu.log``).

    Understands the documented lines "Edge TPU Compiler version …", "Model compiled
    successfully in N ms.", "On-chip memory used for caching model parameters: 4.21MiB",
    "…remaining…", "Off-chip memory used for streaming uncached model parameters: 0.00B",
    "Number of Edge TPU subgraphs: 1", "Total number of operations: 267", "Number of
    operations that will run on Edge TPU / on CPU: N" and the "Operator Count Status" table.
    When the counts are not printed (every op mapped) they come from the table or the total.
    """

    def field_(label: str) -> str | None:
        m = re.search(rf"^\s*{re.escape(label)}:\s*(.+?)\s*$", text, re.MULTILINE)
        return m.group(1) if m else None

    def int_(label: str) -> int | None:
        v = field_(label)
        m = re.match(r"\d+", v or "")
        return int(m.group(0)) if m else None

    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    ms = re.search(r"compiled successfully in\s+([\d.]+)\s*ms", text)
    operators: list[OpStatus] = []
    table = re.search(r"^\s*Operator\s+Count\s+Status\s*$", text, re.MULTILINE)
    if table:
        for line in text[table.end() :].splitlines():
            row = _ROW.match(line.strip())
            if row:
                operators.append(OpStatus(row.group(1), int(row.group(2)), row.group(3)))
            elif line.strip() and operators:
                break  # the table has ended
    total = int_("Total number of operations")
    on_tpu = int_("Number of operations that will run on Edge TPU")
    on_cpu = int_("Number of operations that will run on CPU")
    if on_tpu is None and operators:
        on_tpu = sum(o.count for o in operators if o.mapped)
        on_cpu = sum(o.count for o in operators if not o.mapped)
    elif on_tpu is None and total is not None and "Compilation succeeded" in text:
        on_tpu, on_cpu = total, 0
    return CompilerReport(
        version=version.group(1) if version else None,
        ops_edgetpu=on_tpu or 0,
        ops_cpu=on_cpu or 0,
        total_ops=total,
        subgraphs=int_("Number of Edge TPU subgraphs"),
        on_chip_bytes=_bytes(field_("On-chip memory used for caching model parameters")),
        on_chip_remaining_bytes=_bytes(
            field_("On-chip memory remaining for caching model parameters")
        ),
        off_chip_bytes=_bytes(
            field_("Off-chip memory used for streaming uncached model parameters")
        ),
        operators=tuple(operators),
        output_model=field_("Output model"),
        log_file=field_("Operation log"),
        compile_ms=float(ms.group(1)) if ms else None,
    )


def compiler_path() -> str | None:
    """The ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which(COMPILER)


def compiler_args(
    model: Path, out_dir: Path, *, compiler: str = COMPILER, timeout: float | None = None
) -> list[str]:
    """The compiler's command line: ``-s`` prints the operator table, ``-o`` the output folder,
    ``-t`` its own compilation timer (seconds)."""
    args = [compiler, "-s", "-o", str(out_dir)]
    if timeout is not None:
        args += ["-t", str(max(1, int(timeout)))]
    return [*args, str(model)]


@dataclass(frozen=True)
class CompileResult:
    compiled: Path
    report: CompilerReport
    command: tuple[str, ...]


def compiled_name(model: Path) -> Path:
    """The compiler's output name for ``model``: ``<stem>_edgetpu.tflite``."""
    return model.with_name(f"{model.stem}_edgetpu.tflite")


def compile_model(
    model: Path,
    out_dir: Path,
    *,
    timeout: float = DEFAULT_COMPILER_TIMEOUT,
    compiler: str | None = None,
) -> CompileResult:
    """Compile ``model`` into ``out_dir/<stem>_edgetpu.tflite`` and parse the compiler's log.

    ``timeout`` (seconds) goes to the compiler's own timer (``-t``) and bounds our wait.

    Raises:
        MissingDependencyError: the compiler is not on PATH (the message says how to get it).
        CompilerError: it failed, timed out, or wrote no model (one line, with its last words).
    """
    exe = compiler or compiler_path()
    if exe is None:
        raise MissingDependencyError(COMPILER_INSTALL_HINT)
    args = compiler_args(model, out_dir, compiler=exe, timeout=timeout)
    # Its own session, so that a timeout ends the compiler and the compilation child process
    # it starts (a child left holding the pipes would keep us waiting).
    try:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise CompilerError(f"cannot run {exe}: {exc.strerror or exc}") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_session(proc)
        proc.communicate()
        raise CompilerError(
            f"edgetpu_compiler did not finish {model.name} within {timeout:g} s "
            "(raise --compiler-timeout)"
        ) from exc
    if proc.returncode != 0:
        raise CompilerError(
            f"edgetpu_compiler failed on {model.name} (exit {proc.returncode}): "
            f"{_last_words(stdout, stderr)}"
        )
    text = stdout + ("\n" + stderr if stderr else "")
    if "Operator" not in text:
        log = out_dir / f"{model.stem}_edgetpu.log"
        if log.is_file():
            text += "\n" + log.read_text(errors="replace")
    report = parse_compiler_log(text)
    compiled = out_dir / compiled_name(model).name
    if not compiled.is_file():
        raise CompilerError(
            f"edgetpu_compiler exited without writing {compiled.name}: "
            f"{_last_words(stdout, stderr)}"
        )
    return CompileResult(compiled, report, tuple(args))


def _kill_session(proc: subprocess.Popen) -> None:
    """Kill the compiler and whatever it started: the whole session it leads."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - the compiler exists for Linux only
            proc.kill()
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _last_words(stdout: str | None, stderr: str | None) -> str:
    """The most telling line of a failed compiler run."""
    lines = [ln.strip() for ln in f"{stdout or ''}\n{stderr or ''}".splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.search(r"error|abort|fail|not supported|didn't|invalid|unsupported", ln, re.I):
            return ln[:240]
    return lines[-1][:240] if lines else "no output"
