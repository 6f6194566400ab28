"""TensorFlow Lite Micro: the model as C source for a microcontroller, checked in TFLM itself.

`edgeseg convert MODEL --micro` takes the model as given, full int8 at its tile size (the
``int8`` recipe and the same calibration set; its conversion is reused when ``--int8`` is
built too), and writes into ``--out``:

- ``<stem>_micro.tflite``: the flatbuffer, with the edgeseg metadata embedded (what the other
  artefacts carry, plus the figures below under ``micro``); it is the flash figure;
- ``<stem>_model_data.cc`` / ``.h``: that file byte for byte as a 16-byte aligned C array, and
  a header with the input's and output's shape, scale and zero point, the normalization the
  firmware must apply before quantizing a frame, the threshold as an int8 value, and the
  tensor arena size;
- ``<stem>_op_resolver.h``: a ``tflite::MicroMutableOpResolver<N>`` that registers exactly
  the builtin ops the model uses (``AddConv2D()``, ``AddMaxPool2D()``…), no more: TFLM links
  only the kernels registered, and flash is what a microcontroller lacks.

The tensor arena is found by running the model in TFLM's own Python interpreter (the
``tflite-micro`` package, the reference kernels compiled for this host): in a child process,
since TFLM may crash rather than fail on an arena far too small, the smallest arena in which
it allocates every tensor and runs is searched (bisection down to :data:`ARENA_STEP` bytes,
starting from the allocator's own record of what it used), then :func:`arena_with_margin`
adds :data:`ARENA_MARGIN` plus :data:`ARENA_SLACK` bytes. The margin covers what this host
cannot show: the scratch buffers that optimized kernels (CMSIS-NN, ESP-NN) ask for and the
reference kernels do not. The host is 64-bit, so TFLM's own structures are larger here than
on a 32-bit microcontroller: that error is on the safe side.

Parity: :class:`MicroBackend` runs the model in TFLM behind the Backend contract, so the
held-out frames go through the same Segmenter as every other artefact and the parity report
gets a TFLM row (agreement with the float model, Dice against the truth, the int8 gate); and
:func:`compare_raw` compares TFLM's int8 outputs with LiteRT's on the held-out tiles, in
quantization steps. They are not always bit-identical, and :func:`layer_divergence` shows
where they part, op by op against TFLite's built-in kernels (XNNPACK off) on the tile that
differs most. Measured on edgeseg's U-Nets: every 3x3 convolution and pooling agrees exactly;
the 1x1 convolutions (the up-sampling's CONV_2D before DEPTH_TO_SPACE, the head) differ by one
step on a fraction of a percent of their values on identical inputs (the two runtimes' kernels
for them round the requantization differently); later layers carry that on, and a final
LOGISTIC magnifies it where it is steep.

With ``--device NAME`` (a microcontroller profile, see :mod:`edgeseg.devices.profiles`) the
figures are checked against the profile's flash and SRAM (and PSRAM); not fitting is a
one-line error once every file and the report are written.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.quant import TensorInfo, dequantize, quantize
from edgeseg.errors import DataError, EdgesegError, ModelError

__all__ = [
    "ARENA_MARGIN",
    "ARENA_SLACK",
    "ARENA_STEP",
    "RESOLVER_METHODS",
    "ArenaSize",
    "LayerDiff",
    "MicroBackend",
    "MicroFitError",
    "MicroResult",
    "RawComparison",
    "arena_with_margin",
    "build_micro",
    "c_array",
    "c_identifier",
    "compare_raw",
    "explain_divergence",
    "layer_divergence",
    "measure_arena",
    "model_data_header",
    "op_resolver_header",
    "resolver_ops",
    "tflm_version",
]

#: Share added to the smallest arena TFLM ran in (optimized kernels' scratch buffers).
ARENA_MARGIN = 0.10
#: Bytes added on top of the share (a small model's scratch buffers are not 10% of little).
ARENA_SLACK = 4096
#: The bisection stops when the working and the failing arena differ by this many bytes
#: (TFLM aligns its allocations to 16 bytes).
ARENA_STEP = 16
#: Seconds the arena search may take in its child process.
ARENA_TIMEOUT = 300.0
#: Held-out tiles on which TFLM's and LiteRT's raw int8 outputs are compared.
MAX_RAW_TILES = 64

#: TFLite builtin op (schema name) → the ``tflite::MicroMutableOpResolver`` method that
#: registers its TFLM kernel (tensorflow/lite/micro/micro_mutable_op_resolver.h). An op not
#: listed has no TFLM kernel edgeseg knows of.
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNPACK": "AddUnpack",
    "ZEROS_LIKE": "AddZerosLike",
}

_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


class MicroFitError(EdgesegError):
    """The model or its tensor arena does not fit the microcontroller profile (the files and
    the report have been written)."""


def tflm() -> Any:
    """The ``tflite_micro`` package, or a one-line error naming the ``micro`` extra."""
    from edgeseg.optional import require

    return require("tflite_micro")


def tflm_version() -> str:
    """The installed package as a runtime name: "tflite-micro 0.dev20261023182759-g8f6596d"."""
    return f"tflite-micro {tflm().__version__}"


# --------------------------------------------------------------------------------------------
# Ops and the op resolver


def resolver_ops(data: bytes, label: str = "the model") -> tuple[tuple[str, str, int], ...]:
    """(op, MicroMutableOpResolver method, count) of every op the model uses, by op name.

    A custom op, or a builtin without a TFLM kernel in :data:`RESOLVER_METHODS`, is a one-line
    :class:`ModelError` naming them.
    """
    from edgeseg.core.tflite_file import op_histogram

    ops = op_histogram(data)
    missing = sorted(op for op in ops if op not in RESOLVER_METHODS)
    if missing:
        raise ModelError(
            f"{label} uses op(s) TensorFlow Lite Micro has no kernel for: {', '.join(missing)}"
        )
    return tuple((op, RESOLVER_METHODS[op], ops[op]) for op in sorted(ops))


def op_resolver_header(ops: Sequence[tuple[str, str, int]], ident: str, source: str) -> str:
    """``<stem>_op_resolver.h``: a MicroMutableOpResolver sized and filled for exactly ``ops``
    (:func:`resolver_ops`); ``ident`` prefixes the names, ``source`` is named in the banner."""
    guard = f"EDGESEG_{ident.upper()}_OP_RESOLVER_H_"
    lines = [
        f"// Generated by edgeseg (`edgeseg convert --micro`) for {source}. Do not edit: convert",
        "// again. Registers exactly the builtin ops the model uses, so that only their kernels",
        "// are linked.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"constexpr unsigned int {ident}_op_count = {len(ops)};",
        f"using {ident}_op_resolver = tflite::MicroMutableOpResolver<{ident}_op_count>;",
        "",
        "// Adds every op of the model to `resolver`: kTfLiteOk, or the first failure.",
        f"inline TfLiteStatus {ident}_add_ops({ident}_op_resolver& resolver) {{",
    ]
    for op, method, count in ops:
        lines.append(
            f"  if (resolver.{method}() != kTfLiteOk) return kTfLiteError;  // {op} x{count}"
        )
    lines += ["  return kTfLiteOk;", "}", "", f"#endif  // {guard}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The C array and its header


def c_identifier(stem: str) -> str:
    """A C identifier from a file stem: "unet-v2.1" → "unet_v2_1", "3d" → "m_3d"."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", stem).strip("_") or "model"
    return f"m_{ident}" if ident[0].isdigit() else ident


def c_array(data: bytes, ident: str, header: str, source: str) -> str:
    """``<stem>_model_data.cc``: ``data`` as ``alignas(16) const unsigned char
    g_<ident>_model_data[]`` (TFLM reads weights in place: the flatbuffer's own 16-byte
    alignment of its buffers holds only if the array starts on a 16-byte boundary)."""
    rows = []
    for i in range(0, len(data), 12):
        rows.append("    " + ", ".join(f"0x{b:02x}" for b in data[i : i + 12]) + ",")
    return "\n".join(
        [
            f"// Generated by edgeseg (`edgeseg convert --micro`) from {source}: the .tflite",
            "// flatbuffer byte for byte. Do not edit: convert again.",
            f'#include "{header}"',
            "",
            f"alignas(16) const unsigned char g_{ident}_model_data[] = {{",
            *rows,
            "};",
            f"const unsigned int g_{ident}_model_data_len = {len(data)};",
            "",
        ]
    )


def _c_float(x: float) -> str:
    text = str(np.float32(x))  # the shortest text that reads back as this float32
    return (text if ("." in text or "e" in text) else text + ".0") + "f"


def threshold_q(meta: ModelMetadata, info: TensorInfo) -> int | None:
    """The int8 output value above which a pixel is foreground (the dequantized probability
    exceeds the threshold exactly where ``q > threshold_q``); None for a softmax model."""
    if meta.num_classes != 1 or not info.quantized:
        return None
    lo, hi = np.iinfo(np.dtype(info.dtype)).min, np.iinfo(np.dtype(info.dtype)).max
    qs = np.arange(lo, hi + 1)
    above = qs[dequantize(qs, info) > np.float32(meta.threshold)]
    return int(above.min()) - 1 if above.size else int(hi)


def model_data_header(
    ident: str,
    meta: ModelMetadata,
    inp: TensorInfo,
    outs: Sequence[TensorInfo],
    arena: ArenaSize,
    size_bytes: int,
    source: str,
) -> str:
    """``<stem>_model_data.h``: the array's declaration, the tensors' shapes and quantization,
    the normalization and threshold the firmware applies, and the tensor arena size."""
    guard = f"EDGESEG_{ident.upper()}_MODEL_DATA_H_"
    _, h, w, c = inp.shape
    norm = meta.normalization
    input_max = meta.input_max if meta.input_max is not None else 0.0
    lo_p, hi_p = meta.percentiles
    if norm == "scale":
        rule = (
            [f'//   "scale": lo = 0, hi = input_max = {meta.input_max:g}.']
            if meta.input_max is not None
            else [
                '//   "scale": lo = 0, hi = the pixel type\'s largest value (input_max is 0 here):',
                "//   255 for 8-bit pixels, 65535 for 16-bit ones.",
            ]
        )
    elif norm == "percentile":
        rule = [
            f'//   "percentile": lo and hi are the frame\'s {lo_p:g}th and {hi_p:g}th percentiles',
            "//   (numpy's linear interpolation, over the frame or a regular subsample of it).",
        ]
    else:
        rule = ['//   "minmax": lo and hi are the frame\'s smallest and largest pixel.']
    lines = [
        f"// Generated by edgeseg (`edgeseg convert --micro`) from {source}. Do not edit:",
        "// convert again.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <cmath>",
        "#include <cstddef>",
        "#include <cstdint>",
        "",
        f"// The .tflite flatbuffer ({size_bytes} bytes of flash), 16-byte aligned.",
        f"extern const unsigned char g_{ident}_model_data[];",
        f"extern const unsigned int g_{ident}_model_data_len;",
        "",
        f"// Tensor arena: TFLM ({arena.version}) allocated and ran the model in",
        f"// {arena.used_bytes} bytes on the converting host (reference kernels); this adds",
        f"// {ARENA_MARGIN:.0%} + {ARENA_SLACK} bytes for optimized kernels' scratch buffers.",
        f"constexpr size_t {ident}_arena_size = {arena.arena_bytes};",
        "",
        f"// Input: {inp.dtype} (1, {h}, {w}, {c}), channels {meta.channel_order}, height first.",
        f"constexpr int {ident}_input_height = {h};",
        f"constexpr int {ident}_input_width = {w};",
        f"constexpr int {ident}_input_channels = {c};",
        f"constexpr float {ident}_input_scale = {_c_float(inp.scale)};",
        f"constexpr int {ident}_input_zero_point = {inp.zero_point};",
        "",
        "// Normalization, as `edgeseg run` applies it to each frame before quantizing:",
        "//   x = (pixel - lo) / (hi - lo), where",
        *rule,
        "//   q = clamp(round_half_away_from_zero(x / input_scale) + input_zero_point, -128, 127)",
        f'constexpr char {ident}_normalization[] = "{norm}";',
        f"constexpr float {ident}_input_max = {_c_float(input_max)};",
        f"constexpr float {ident}_percentile_low = {_c_float(lo_p)};",
        f"constexpr float {ident}_percentile_high = {_c_float(hi_p)};",
        "",
        "// One pixel through the normalization and the input quantization, in the same float",
        "// arithmetic as edgeseg (the same int8 value for every pixel).",
        f"inline int8_t {ident}_quantize_pixel(float pixel, double lo, double hi) {{",
        "  const double range = (hi - lo) > 1e-6 ? (hi - lo) : 1e-6;",
        "  const float inv = static_cast<float>(1.0 / range);",
        "  const float x = (pixel - static_cast<float>(lo)) * inv;",
        f"  const float v = x / {ident}_input_scale;",
        "  const float r = std::trunc(v + std::copysign(0.5f, v)) +",
        f"                  static_cast<float>({ident}_input_zero_point);",
        "  return static_cast<int8_t>(r < -128.0f ? -128.0f : (r > 127.0f ? 127.0f : r));",
        "}",
    ]
    for i, out in enumerate(outs):
        _, oh, ow, k = out.shape
        tag = "output" if len(outs) == 1 else f"output{i}"
        lines += [
            "",
            f"// {tag.capitalize()}: {out.dtype} (1, {oh}, {ow}, {k}); "
            "probability = output_scale * (q - output_zero_point).",
            f"constexpr int {ident}_{tag}_height = {oh};",
            f"constexpr int {ident}_{tag}_width = {ow};",
            f"constexpr int {ident}_{tag}_channels = {k};",
            f"constexpr float {ident}_{tag}_scale = {_c_float(out.scale)};",
            f"constexpr int {ident}_{tag}_zero_point = {out.zero_point};",
        ]
    tq = threshold_q(meta, outs[0]) if meta.instances is None else None
    if tq is not None:
        lines += [
            "",
            f"// Foreground where the probability exceeds {meta.threshold:g}: the int8 output "
            "exceeds this.",
            f"constexpr float {ident}_threshold = {_c_float(meta.threshold)};",
            f"constexpr int8_t {ident}_threshold_q = {tq};",
        ]
    elif meta.num_classes > 1:
        names = ", ".join(meta.class_names)
        lines += ["", f"// {meta.num_classes} classes ({names}): the label is the argmax."]
    lines += ["", f"#endif  // {guard}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The tensor arena


@dataclass(frozen=True)
class ArenaSize:
    """The tensor arena, measured in TFLM's Python interpreter.

    Attributes:
        used_bytes: the smallest arena TFLM allocated every tensor in and ran the model in
            (to :data:`ARENA_STEP` bytes).
        recorded_bytes: what TFLM's recording allocator reported using in a large arena.
        arena_bytes: ``used_bytes`` with the margin (:func:`arena_with_margin`): what the
            firmware should allocate.
        version: the tflite-micro package that measured it.
    """

    used_bytes: int
    recorded_bytes: int
    arena_bytes: int
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "used_bytes": self.used_bytes,
            "recorded_bytes": self.recorded_bytes,
            "arena_bytes": self.arena_bytes,
            "margin": ARENA_MARGIN,
            "slack_bytes": ARENA_SLACK,
            "measured_with": self.version,
        }


def arena_with_margin(used_bytes: int) -> int:
    """``used_bytes`` plus :data:`ARENA_MARGIN` and :data:`ARENA_SLACK`, rounded up to 1 KiB."""
    return int(math.ceil((used_bytes * (1 + ARENA_MARGIN) + ARENA_SLACK) / 1024) * 1024)


def measure_arena(path: Path, timeout: float = ARENA_TIMEOUT) -> ArenaSize:
    """The tensor arena ``path`` (a .tflite) needs in TFLM, searched in a child process (see
    the module docstring); a one-line ModelError when TFLM cannot run it."""
    from edgeseg.child import run_python

    tflm()  # the missing package is a one-line error here, not in the child
    done = run_python(["-m", "edgeseg.convert.micro", "arena", str(path)], timeout=timeout)
    if done.timed_out:
        raise ModelError(f"TFLM's arena search on {path.name} took over {timeout:.0f} s")
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    try:
        found = json.loads(last)
    except json.JSONDecodeError:
        found = None
    if done.returncode != 0 or not isinstance(found, dict):
        why = done.signal_name or _last_line(done.stderr) or f"exit code {done.returncode}"
        raise ModelError(f"TensorFlow Lite Micro cannot run {path.name}: {why}")
    if "error" in found:
        raise ModelError(f"TensorFlow Lite Micro cannot run {path.name}: {found['error']}")
    used = int(found["used"])
    return ArenaSize(
        used_bytes=used,
        recorded_bytes=int(found["recorded"]),
        arena_bytes=arena_with_margin(used),
        version=f"tflite-micro {found['version']}",
    )


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _allocates(runtime: Any, data: bytes, size: int, run: bool = False) -> bool:
    """Whether TFLM allocates the model's tensors in an arena of ``size`` bytes (and, with
    ``run``, invokes it once on zeros)."""
    try:
        it = runtime.Interpreter.from_bytes(data, arena_size=size)
        if run:
            d = it.get_input_details(0)
            it.set_input(np.zeros(tuple(d["shape"]), dtype=d["dtype"]), 0)
            it.invoke()
    except RuntimeError:
        return False
    return True


def _recorded_total(it: Any) -> int:
    """What the recording allocator says it used: TFLM prints it to file descriptor 2."""
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(log.fileno(), 2)
            it.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        found = _TOTAL.search(log.read().decode("utf-8", "replace"))
    return int(found.group(1)) if found else 0


def _search_arena(path: str) -> dict[str, Any]:
    """The child's work (``python -m edgeseg.convert.micro arena PATH``): see the module
    docstring. Never called below the recording allocator's own figure, where TFLM can crash."""
    from tflite_micro import __version__, runtime

    data = Path(path).read_bytes()
    hi = max(64 * 1024, 4 * len(data))
    while not _allocates(runtime, data, hi, run=True):
        hi *= 2
        if hi > 1 << 31:
            return {"error": "it does not allocate its tensors even in a 2 GiB arena"}
    it = runtime.Interpreter.from_bytes(data, arena_size=hi)
    recorded = _recorded_total(it)
    del it
    lo = max(recorded - ARENA_STEP, ARENA_STEP)
    while lo > ARENA_STEP and _allocates(runtime, data, lo):
        lo //= 2  # the record was generous: look lower, still far above a crash
    while hi - lo > ARENA_STEP:
        mid = (lo + hi) // 2 // ARENA_STEP * ARENA_STEP
        if mid <= lo:
            break
        if _allocates(runtime, data, mid):
            hi = mid
        else:
            lo = mid
    if not _allocates(runtime, data, hi, run=True):
        return {"error": f"it allocates in {hi} bytes but does not run there"}
    return {"used": hi, "recorded": recorded, "version": __version__}


# --------------------------------------------------------------------------------------------
# The model in TFLM, behind the Backend contract


class MicroBackend:
    """A full-int8 .tflite run by TFLM's Python interpreter, as a :class:`Backend`: the
    Segmenter feeds it like any runtime (one tile per invoke, as a microcontroller does)."""

    def __init__(self, path: Path, arena_bytes: int) -> None:
        from edgeseg.core.tflite_file import read_model_bytes

        runtime = tflm().runtime
        self.path = Path(path)
        self.runtime = tflm_version()
        data, _label = read_model_bytes(self.path)
        self._data = data
        try:
            self._it = runtime.Interpreter.from_bytes(data, arena_size=int(arena_bytes))
        except RuntimeError as exc:
            raise ModelError(f"TensorFlow Lite Micro cannot open {self.path.name}: {exc}") from exc
        self.input = _tensor_info(self._it.get_input_details(0), "input")
        self.output = _tensor_info(self._it.get_output_details(0), "output")

    def invoke(self, q: np.ndarray) -> np.ndarray:
        """One (H, W, C) or (1, H, W, C) tile in the input's dtype → (1, h, w, K) raw output."""
        self._it.set_input(np.ascontiguousarray(q.reshape(self.input.shape)), 0)
        self._it.invoke()
        return np.array(self._it.get_output(0), copy=True)

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        return np.concatenate([dequantize(self.invoke(t), self.output) for t in tiles])

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        return self.predict_raw(quantize(tiles, self.input))

    def metadata(self) -> ModelMetadata | None:
        from edgeseg.core.tflite_file import read_metadata

        return read_metadata(self._data)


def _tensor_info(detail: dict[str, Any], name: str) -> TensorInfo:
    q = detail.get("quantization_parameters") or {}
    scales = list(np.asarray(q.get("scales", [])).ravel())
    zeros = list(np.asarray(q.get("zero_points", [])).ravel())
    return TensorInfo(
        name=name,
        index=0,
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scales[0]) if len(scales) == 1 else 0.0,
        zero_point=int(zeros[0]) if len(zeros) == 1 else 0,
    )


@dataclass(frozen=True)
class RawComparison:
    """TFLM's int8 outputs against LiteRT's on the same int8 tiles.

    Attributes:
        tiles: how many tiles were compared.
        max_steps: the largest difference, in output quantization steps (0: identical).
        equal_share: the share of output values that are identical.
        differing_tiles: how many tiles have any value that differs.
        litert: the LiteRT that ran the other side, as it describes itself.
    """

    tiles: int
    max_steps: int
    equal_share: float
    differing_tiles: int
    litert: str
    worst_tile: int = 0  # the index of the tile with the largest difference

    @property
    def identical(self) -> bool:
        return self.max_steps == 0

    def summary(self) -> str:
        if self.identical:
            return f"TFLM's int8 outputs equal {self.litert}'s on all {self.tiles} tiles"
        return (
            f"TFLM's int8 outputs differ from {self.litert}'s by at most {self.max_steps} "
            f"quantization step(s) ({self.equal_share:.2%} of values equal; "
            f"{self.differing_tiles} of {self.tiles} tiles differ anywhere)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tiles": self.tiles,
            "max_steps": self.max_steps,
            "equal_share": self.equal_share,
            "differing_tiles": self.differing_tiles,
            "litert": self.litert,
            "identical": self.identical,
        }


@dataclass(frozen=True)
class LayerDiff:
    """One op's output in TFLM against TFLite's built-in kernels, on one tile.

    ``kernel``: "3x3" for a convolution's window, "" for other ops; ``max_steps`` in the
    output tensor's quantization steps; ``equal_share``: the share of identical values.
    """

    index: int
    op: str
    layer: str
    kernel: str
    max_steps: int
    equal_share: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.op,
            "layer": self.layer,
            "kernel": self.kernel,
            "max_steps": self.max_steps,
            "equal_share": self.equal_share,
        }


def layer_divergence(data: bytes, tile: np.ndarray) -> tuple[LayerDiff, ...]:
    """Every op's output on one int8 ``tile`` (H, W, C), in TFLM and in LiteRT's built-in
    kernels (XNNPACK off, every tensor kept): where the two runtimes part, op by op."""
    import inspect
    import warnings

    from edgeseg.convert.parity import layer_label
    from edgeseg.runtime.backends import interpreter_class

    cls, _ = interpreter_class()
    kinds = getattr(inspect.getmodule(cls), "OpResolverType", None)
    if kinds is None:
        return ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        li = cls(
            model_content=data,
            experimental_op_resolver_type=kinds.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )
    li.allocate_tensors()
    runtime = tflm().runtime
    it = runtime.Interpreter.from_bytes(
        data,
        arena_size=measure_bytes_hint(data),
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors,
    )
    x = np.ascontiguousarray(tile[None])
    li.set_tensor(li.get_input_details()[0]["index"], x)
    li.invoke()
    it.set_input(x, 0)
    it.invoke()
    details = {d["index"]: d for d in li.get_tensor_details()}
    out = []
    for op in li._get_ops_details():  # the only way LiteRT's Python API lists its ops
        index = int(op["outputs"][0])
        b = np.asarray(li.get_tensor(index))
        a = it.GetTensor(index, 0)
        a = np.asarray(a.get("tensor_data") if isinstance(a, dict) else a)
        if a.size != b.size or b.dtype.kind not in "iu":
            continue
        d = np.abs(a.reshape(b.shape).astype(np.int32) - b.astype(np.int32))
        kernel = ""
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
            shape = details[int(op["inputs"][1])]["shape"]
            kernel = f"{shape[1]}x{shape[2]}"
        out.append(
            LayerDiff(
                index=int(op["index"]),
                op=op["op_name"],
                layer=layer_label(details[index]["name"]),
                kernel=kernel,
                max_steps=int(d.max()) if d.size else 0,
                equal_share=float((d == 0).mean()) if d.size else 1.0,
            )
        )
    return tuple(out)


def explain_divergence(layers: Sequence[LayerDiff]) -> str:
    """One sentence from :func:`layer_divergence`: where TFLM and TFLite part, and why."""
    first = next((d for d in layers if d.max_steps > 0), None)
    if first is None:
        return "op by op on the tile that differs most, TFLM equals TFLite's built-in kernels"
    kernel = f" {first.kernel}" if first.kernel else ""
    same = sum(1 for d in layers if d.index < first.index)
    text = (
        f"op by op against TFLite's built-in kernels on the tile that differs most, the first "
        f"{same} ops are identical; the first to differ, on identical inputs, is #{first.index} "
        f"{first.op}{kernel} ({first.layer}), by {first.max_steps} step(s) on "
        f"{1 - first.equal_share:.2%} of its values: the two runtimes' kernels for it round "
        "the requantization differently, and later ops carry the difference on"
    )
    last, before = layers[-1], layers[-2] if len(layers) > 1 else None
    if last.op in ("LOGISTIC", "SOFTMAX") and before and last.max_steps > before.max_steps:
        text += (
            f"; the final {last.op} turns {before.max_steps} step(s) of its input into "
            f"{last.max_steps} of its output, where it is steep"
        )
    return text


def measure_bytes_hint(data: bytes) -> int:
    """A generous arena for a diagnostic interpreter that keeps every tensor (no reuse)."""
    from edgeseg.core.tflite_file import parse_bytes

    model = parse_bytes(data)
    total = 0
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            total += int(np.prod(t.shape)) * 4 if t.shape is not None else 0
    return max(1 << 20, 2 * total + len(data))


def held_out_tiles(
    frames: Sequence[np.ndarray], meta: ModelMetadata, info: TensorInfo, limit: int
) -> np.ndarray:
    """Up to ``limit`` (T, H, W, C) tiles of ``frames`` in the input's dtype, cut as the
    Segmenter cuts them (spread over the frames when there are more)."""
    from edgeseg.core.preprocess import prepare, prepare_quantized
    from edgeseg.core.segmenter import frame_tiles

    tiles = []
    for frame in frames:
        q = prepare_quantized(frame, meta, info)
        if q is None:
            q = quantize(prepare(frame, meta), info)
        tiles.append(frame_tiles(q, meta))
    every = np.concatenate(tiles)
    if len(every) <= limit:
        return every
    return every[np.linspace(0, len(every) - 1, limit).round().astype(int)]


def compare_raw(micro: MicroBackend, litert: Any, tiles: np.ndarray) -> RawComparison:
    """Each tile through TFLM and through ``litert`` (a LiteRT backend of the same file)."""
    steps_max, equal, total, differing, worst = 0, 0, 0, 0, 0
    scale = np.float32(micro.output.scale) if micro.output.quantized else None
    for i, tile in enumerate(tiles):
        a = micro.invoke(tile).astype(np.int32)
        b = litert.predict_raw(tile[None])
        if scale is not None:  # LiteRT's backend gives dequantized values: back to steps
            b = np.rint(b / scale).astype(np.int32) + micro.output.zero_point
        d = np.abs(a - b.reshape(a.shape))
        if int(d.max()) > steps_max:
            steps_max, worst = int(d.max()), i
        equal += int((d == 0).sum())
        total += d.size
        differing += int(d.any())
    return RawComparison(
        tiles=len(tiles),
        max_steps=steps_max,
        equal_share=equal / max(total, 1),
        differing_tiles=differing,
        litert=getattr(litert, "runtime", "LiteRT"),
        worst_tile=worst,
    )


def check_target(data: bytes, label: str) -> None:
    """A model TFLM can take: int8 (or int16) input and output, every op with a kernel."""
    from edgeseg.core.tflite_file import tensor_summary

    summary = tensor_summary(data)
    for role, tensors in (("input", summary.inputs), ("output", summary.outputs)):
        for t in tensors:
            if t.dtype not in ("int8", "int16"):
                raise DataError(
                    f"{label} has a {t.dtype} {role}: the microcontroller target needs full "
                    "int8 (the int8 recipe)"
                )
    resolver_ops(data, label)


# --------------------------------------------------------------------------------------------
# The target: files, figures, parity


@dataclass(frozen=True)
class MicroResult:
    """What :func:`build_micro` wrote and found.

    Attributes:
        report: the TFLM row of the parity report (its ``micro`` entry holds the figures).
        paths: the files written: .tflite, .cc, .h, op resolver header.
        arena: the tensor arena.
        flash_bytes: the model's size in flash (the .tflite, the C array).
        raw: TFLM's int8 outputs against LiteRT's on held-out tiles.
        fit: the profile's verdict, when one was given.
    """

    report: Any
    paths: tuple[Path, ...]
    arena: ArenaSize
    flash_bytes: int
    raw: RawComparison
    fit: Any = None


def build_micro(
    tflite: bytes,
    meta: ModelMetadata,
    extra: dict[str, Any],
    out: Path,
    stem: str,
    *,
    frames: Sequence[np.ndarray],
    truths: Sequence[np.ndarray] | None,
    instances: Sequence[np.ndarray] | None,
    float_labels: Sequence[np.ndarray],
    fp32_size: int,
    gate: float | None,
    gate_on: str,
    profile: Any = None,
    threads: int | None = None,
    say: Any = lambda _msg: None,
) -> MicroResult:
    """Write the microcontroller target of a full-int8 conversion ``tflite`` into ``out`` (see
    the module docstring), measure its arena, score it in TFLM on the held-out ``frames``
    against the float model's ``float_labels`` (and ``truths``) and compare its raw outputs
    with LiteRT's; with ``profile`` (a microcontroller DeviceProfile) judge the fit.

    Raises ModelError (one line) for a model TFLM cannot take; nothing is raised for a model
    that does not fit: ``fit`` says so and the caller decides when to fail.
    """
    from edgeseg.convert.parity import ArtefactReport, instance_scores, label_maps, overlap
    from edgeseg.core.tflite_file import embed_metadata, op_histogram, tensor_summary
    from edgeseg.devices.profiles import micro_fit
    from edgeseg.paths import atomic_write
    from edgeseg.runtime.backends import load_backend

    name = f"{stem}_micro.tflite"
    check_target(tflite, name)
    ops = resolver_ops(tflite, name)
    path = atomic_write(out / name, embed_metadata(tflite, meta, extra=extra))
    say(f"searching the tensor arena {name} needs in TensorFlow Lite Micro")
    arena = measure_arena(path)
    figures: dict[str, Any] = {
        "target": "tflite-micro",
        "arena": arena.to_dict(),
        "ops": [{"op": op, "method": method, "count": n} for op, method, n in ops],
    }
    # The figures travel with the model (`edgeseg inspect`); the arena does not depend on the
    # metadata buffer, the flash figure is the final file's size.
    data = embed_metadata(tflite, meta, extra={**extra, "micro": figures})
    path = atomic_write(out / name, data)
    flash = len(data)
    summary = tensor_summary(data)
    ident = c_identifier(stem)
    header = f"{stem}_model_data.h"
    cc = atomic_write(out / f"{stem}_model_data.cc", c_array(data, ident, header, name))
    micro = MicroBackend(path, arena.arena_bytes)
    outs = [micro.output, *summary.outputs[1:]]
    h = atomic_write(
        out / header, model_data_header(ident, meta, micro.input, outs, arena, flash, name)
    )
    resolver = atomic_write(out / f"{stem}_op_resolver.h", op_resolver_header(ops, ident, name))
    say(f"checking {name} in TensorFlow Lite Micro on the held-out frames")
    labels = label_maps(frames, micro, meta)
    litert = load_backend(path, threads=threads)
    tiles = held_out_tiles(frames, meta, micro.input, MAX_RAW_TILES)
    raw = compare_raw(micro, litert, tiles)
    say(raw.summary())
    layers = layer_divergence(data, tiles[raw.worst_tile]) if not raw.identical else ()
    litert_labels = label_maps(frames, litert, meta)
    same = overlap(labels, litert_labels, meta)
    identical = sum(bool(np.array_equal(a, b)) for a, b in zip(labels, litert_labels, strict=True))
    fit = micro_fit(profile, flash, arena.arena_bytes) if profile is not None else None
    figures.update(
        flash_bytes=flash,
        raw_vs_litert=raw.to_dict(),
        layers_vs_builtin=[d.to_dict() for d in layers],
        labels_vs_litert={
            "dice": same.dice,
            "iou": same.iou,
            "identical_frames": identical,
            "frames": len(labels),
        },
        runtime=micro.runtime,
        files=[p.name for p in (path, cc, h, resolver)],
        fit=fit.to_dict() if fit is not None else None,
    )
    notes = [
        f"run in TensorFlow Lite Micro's Python interpreter ({micro.runtime}), one tile per "
        "invoke, as the microcontroller runs it",
        raw.summary() + ("" if raw.identical else f"; {explain_divergence(layers)}"),
    ]
    instance = meta.instances is not None
    report = ArtefactReport(
        recipe="micro (TFLM)",
        path=str(path),
        size_bytes=flash,
        size_ratio=flash / fp32_size,
        ops=op_histogram(data),
        agreement=overlap(labels, float_labels, meta),
        truth=overlap(labels, truths, meta) if truths else None,
        gate=gate,
        input_type=micro.input.dtype,
        notes=tuple(notes),
        instances=instance_scores(labels, float_labels) if instance else None,
        instances_truth=(
            instance_scores(labels, instances) if instance and instances is not None else None
        ),
        gate_on=gate_on,
        micro=figures,
    )
    return MicroResult(report, (path, cc, h, resolver), arena, flash, raw, fit)


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "arena":
        print("usage: python -m edgeseg.convert.micro arena MODEL.tflite", file=sys.stderr)
        return 2
    print(json.dumps(_search_arena(argv[1])), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
