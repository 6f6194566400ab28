"""The Edge TPU: preflight rules, the UpSampling2D rewrite, the compiler boundary, --keep-float.

`edgetpu_compiler` (x86-64 Debian/Ubuntu, Coral's apt repository) and Google's pycoral are not
installed here. The compiler is replaced, where its behaviour matters, by a small shell script
put on PATH by the test: a test double of the boundary, which prints logs in the compiler's
documented format, fails, or hangs. Everything on our side of that boundary is real.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, write_pairs
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.convert import edgetpu
from edgeseg.convert.edgetpu import (
    COMPILER_INSTALL_HINT,
    CompilerError,
    compile_model,
    compiler_args,
    parse_compiler_log,
    preflight,
)
from edgeseg.errors import MissingDependencyError, ModelError

pytest.importorskip("ai_edge_litert")
runner = CliRunner()
SYSTEM_PATH = os.environ.get("PATH", "")  # for the stand-in compiler's cp, cat, sleep

# ---- hand-built .tflite models that hit one rule each (no TensorFlow needed) ----------------


def _tflite(tensors: list[dict], ops: list[dict], inputs=(0,), outputs=None) -> bytes:
    """A .tflite flatbuffer from tensor and op descriptions.

    tensor: {"name", "shape", "dtype" ("INT8"…), "data" (constant array), "sig" (signature),
    "scale"}; op: {"op" (builtin name or "custom:NAME"), "in", "out", "opts" (options object)}.
    """
    from edgeseg.core.tflite_file import TFLITE_IDENTIFIER, aligned_builder, schema

    fb = schema()
    model = fb.ModelT()
    model.version = 3
    model.buffers = [fb.BufferT()]
    codes: list[str] = []
    sg = fb.SubGraphT()
    sg.tensors = []
    for spec in tensors:
        t = fb.TensorT()
        t.name = spec["name"]
        t.shape = list(spec["shape"])
        if "sig" in spec:
            t.shapeSignature = list(spec["sig"])
        t.type = getattr(fb.TensorType, spec.get("dtype", "INT8"))
        t.buffer = 0
        if spec.get("data") is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(spec["data"]).tobytes(), np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        if t.type in (fb.TensorType.INT8, fb.TensorType.UINT8):
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = [spec.get("scale", 0.05)], [0]
            t.quantization = q
        sg.tensors.append(t)
    sg.operators = []
    for spec in ops:
        if spec["op"] not in codes:
            codes.append(spec["op"])
        o = fb.OperatorT()
        o.opcodeIndex = codes.index(spec["op"])
        o.inputs, o.outputs = list(spec["in"]), list(spec["out"])
        if spec.get("opts") is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, type(spec["opts"]).__name__[:-1])
            o.builtinOptions = spec["opts"]
        sg.operators.append(o)
    sg.inputs = list(inputs)
    sg.outputs = list(outputs if outputs is not None else [len(tensors) - 1])
    model.subgraphs = [sg]
    model.operatorCodes = []
    for name in codes:
        c = fb.OperatorCodeT()
        if name.startswith("custom:"):
            c.builtinCode = fb.BuiltinOperator.CUSTOM
            c.customCode = name[len("custom:") :]
        else:
            c.builtinCode = getattr(fb.BuiltinOperator, name)
        c.deprecatedBuiltinCode = min(c.builtinCode, 127)
        c.version = 1
        model.operatorCodes.append(c)
    builder = aligned_builder()(1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _act(name: str, shape=(1, 8, 8, 4), dtype: str = "INT8", **kw) -> dict:
    return {"name": name, "shape": shape, "dtype": dtype, **kw}


def _const(name: str, data: np.ndarray, dtype: str) -> dict:
    return {"name": name, "shape": data.shape, "dtype": dtype, "data": data}


def _opts(kind: str, **fields):
    from edgeseg.core.tflite_file import schema

    obj = getattr(schema(), kind)()
    for k, v in fields.items():
        setattr(obj, k, v)
    return obj


def _conv(inp: int, w: int, b: int, out: int) -> dict:
    return {"op": "CONV_2D", "in": [inp, w, b], "out": [out], "opts": _opts("Conv2DOptionsT")}


def _chain(*middle: tuple[list[dict], list[dict]]) -> bytes:
    """input → CONV_2D → <middle ops> → LOGISTIC of the conv output (clean, but after)."""
    tensors = [
        _act("image", (1, 8, 8, 1)),
        _const("w", np.ones((4, 3, 3, 1), np.int8), "INT8"),
        _const("b", np.zeros(4, np.int32), "INT32"),
        _act("conv"),
    ]
    ops = [_conv(0, 1, 2, 3)]
    for extra_tensors, extra_ops in middle:
        tensors += extra_tensors
        ops += extra_ops
    tensors.append(_act("prob"))
    ops.append({"op": "LOGISTIC", "in": [3], "out": [len(tensors) - 1]})
    return _tflite(tensors, ops)


def _by_op(pre) -> dict:
    return {v.op: v for v in pre.ops}


def test_preflight_all_int8_static_chain_maps_whole() -> None:
    size = _const("size", np.array([16, 16], np.int32), "INT32")
    data = _chain(
        (
            [size, _act("up", (1, 16, 16, 4))],
            [{"op": "RESIZE_NEAREST_NEIGHBOR", "in": [3, 4], "out": [5],
              "opts": _opts("ResizeNearestNeighborOptionsT")}],
        )
    )  # fmt: skip
    pre = preflight(data, "chain")
    assert [v.op for v in pre.ops] == ["CONV_2D", "RESIZE_NEAREST_NEIGHBOR", "LOGISTIC"]
    assert pre.mapped == pre.total == 3 and pre.first_cpu is None and not pre.risks
    assert pre.parameter_bytes == 36 + 16 + 8  # weights, bias, resize size
    assert pre.fits_cache and "all 3 ops on the Edge TPU" in pre.verdict
    d = json.loads(pre.to_json())
    assert d["share"] == 1.0 and d["ops"][1]["target"] == "edgetpu"
    assert "| 1 | RESIZE_NEAREST_NEIGHBOR | (1, 16, 16, 4) | Edge TPU |" in pre.to_markdown()


@pytest.mark.parametrize(
    ("middle", "op", "needle"),
    [
        # A float tensor: "model not quantized" for that op.
        ([_act("f", dtype="FLOAT32")], {"op": "DEQUANTIZE"}, "8-bit only): f"),
        # Keras 3 UpSampling2D without the rewrite: a 6-D TILE.
        ([_const("m", np.array([1, 1, 2, 1, 2, 1], np.int32), "INT32"),
          _act("t", (1, 8, 2, 8, 2, 4))], {"op": "TILE"}, "only the 3 innermost"),
        # Dynamic shapes.
        ([_act("d", (1, 8, 8, 4), sig=(1, -1, -1, 4))], {"op": "RELU"}, "dynamic shape"),
        # Batch 2.
        ([_act("b2", (2, 8, 8, 4))], {"op": "RELU"}, "batch > 1"),
        # A per-pixel softmax.
        ([_act("s")], {"op": "SOFTMAX", "opts": ("SoftmaxOptionsT", {"beta": 1.0})},
         "1-D softmax"),
        # Resize with a size computed at run time.
        ([_act("sz", (2,), "INT32"), _act("r", (1, 16, 16, 4))],
         {"op": "RESIZE_BILINEAR", "opts": ("ResizeBilinearOptionsT", {})}, "computed at run"),
        # Concatenation with a fused ReLU, and with a non-zero constant.
        ([_act("c", (1, 8, 8, 8))],
         {"op": "CONCATENATION", "opts": ("ConcatenationOptionsT", {"axis": 3,
          "fusedActivationFunction": 1})}, "fused activation"),
        ([_const("k", np.ones((1, 8, 8, 4), np.int8), "INT8"), _act("c2", (1, 8, 8, 8))],
         {"op": "CONCATENATION", "opts": ("ConcatenationOptionsT", {"axis": 3})},
         "constant input"),
        # An op the Edge TPU does not have.
        ([_act("n")], {"op": "NEG"}, "not supported"),
    ],
    ids=["float", "6d-tile", "dynamic", "batch2", "softmax", "resize-size", "concat-act",
         "concat-const", "unsupported"],
)  # fmt: skip
def test_preflight_rule_sends_op_and_all_after_it_to_cpu(middle, op, needle) -> None:
    ins = [3] + [4 + i for i in range(len(middle) - 1)]
    if op["op"] in ("CONCATENATION",) and len(middle) == 1:
        ins = [3, 3]
    spec = {"op": op["op"], "in": ins, "out": [3 + len(middle)]}
    if "opts" in op:
        spec["opts"] = _opts(op["opts"][0], **op["opts"][1])
    pre = preflight(_chain((middle, [spec])))
    v = pre.ops[1]
    assert v.target == "cpu" and any(needle in r for r in v.reasons), v.reasons
    assert pre.first_cpu is v and pre.ops[0].target == "edgetpu"
    last = pre.ops[2]  # LOGISTIC is supported, but comes after the first CPU op
    assert last.target == "cpu" and last.after_partition and not last.reasons
    assert f"the CPU from #1 {op['op']}" in pre.verdict and "1/3 ops" in pre.verdict


def test_preflight_softmax_1d_zero_padding_concat_and_risks_stay_on_tpu() -> None:
    tensors = [
        _act("image", (1, 8, 8, 4)),
        _const("zeros", np.zeros((1, 8, 8, 4), np.int8), "INT8"),
        _act("cat", (1, 8, 8, 8)),
        _const("size", np.array([12, 12], np.int32), "INT32"),
        _act("up", (1, 12, 12, 8)),
        _const("w", np.ones((4, 2, 2, 8), np.int8), "INT8"),
        _const("osz", np.array([1, 24, 24, 4], np.int32), "INT32"),
        _act("tc", (1, 24, 24, 4)),
        _act("flat", (1, 10)),
        _act("soft", (1, 10)),
    ]
    ops = [
        {"op": "CONCATENATION", "in": [0, 1], "out": [2],
         "opts": _opts("ConcatenationOptionsT", axis=3)},
        {"op": "RESIZE_NEAREST_NEIGHBOR", "in": [2, 3], "out": [4],
         "opts": _opts("ResizeNearestNeighborOptionsT", halfPixelCenters=True)},
        {"op": "TRANSPOSE_CONV", "in": [6, 5, 4], "out": [7],
         "opts": _opts("TransposeConvOptionsT")},
        {"op": "SOFTMAX", "in": [8], "out": [9], "opts": _opts("SoftmaxOptionsT", beta=1.0)},
    ]  # fmt: skip
    pre = preflight(_tflite(tensors, ops, inputs=(0, 8)))
    assert pre.mapped == pre.total == 4
    by = _by_op(pre)
    assert any("1.5" in r or "integer upscale" in r for r in by["RESIZE_NEAREST_NEIGHBOR"].risks)
    assert any("half_pixel_centers" in r for r in by["RESIZE_NEAREST_NEIGHBOR"].risks)
    assert any("often is not mapped" in r for r in by["TRANSPOSE_CONV"].risks)
    assert "risk(s)" in pre.verdict and len(pre.risks) == 3


def test_preflight_float_io_ends_cache_and_compiled_models() -> None:
    # float in → QUANTIZE (CPU, before the partition) → CONV → DEQUANTIZE (ends it) → float out
    tensors = [
        _act("in", (1, 8, 8, 1), "FLOAT32"),
        _act("q", (1, 8, 8, 1)),
        _const("w", np.ones((4, 3, 3, 1), np.int8), "INT8"),
        _const("b", np.zeros(4, np.int32), "INT32"),
        _act("conv"),
        _act("out", dtype="FLOAT32"),
    ]
    ops = [{"op": "QUANTIZE", "in": [0], "out": [1]}, _conv(1, 2, 3, 4),
           {"op": "DEQUANTIZE", "in": [4], "out": [5]}]  # fmt: skip
    pre = preflight(_tflite(tensors, ops))
    assert [v.target for v in pre.ops] == ["cpu", "edgetpu", "cpu"]
    assert [v.index for v in pre.leading_cpu] == [0] and pre.first_cpu.op == "DEQUANTIZE"
    assert any("float I/O" in n for n in pre.notes)
    # Parameters beyond the ~8 MiB on-chip cache.
    big = np.zeros((64, 3, 3, 16 * 1024), np.int8)  # 9 MiB of weights
    bias = _const("b", np.zeros(64, np.int32), "INT32")
    tensors = [_act("image", (1, 8, 8, 16 * 1024)), _const("w", big, "INT8"), bias,
               _act("conv", (1, 8, 8, 64))]  # fmt: skip
    pre = preflight(_tflite(tensors, [_conv(0, 1, 2, 3)]))
    assert pre.parameter_bytes > pre.cache_bytes and not pre.fits_cache
    assert "do NOT fit" in pre.verdict
    # A model the compiler already compiled.
    tensors = [_act("image", (1, 8, 8, 1), "UINT8"), _act("out", (1, 8, 8, 1), "UINT8")]
    pre = preflight(_tflite(tensors, [{"op": "custom:edgetpu-custom-op", "in": [0], "out": [1]}]))
    assert pre.compiled and pre.mapped == 1 and any("already compiled" in n for n in pre.notes)


def test_static_check_refuses_dynamic_shapes() -> None:
    from edgeseg.convert.tflite import _check_static

    data = _chain(([_act("d", (1, 8, 8, 4), sig=(1, -1, -1, 4))],
                   [{"op": "RELU", "in": [3], "out": [4]}]))  # fmt: skip
    with pytest.raises(ModelError, match=r"cannot be made static.*d is \(1, -1, -1, 4\)"):
        _check_static(data, "int8-edgetpu")
    _check_static(_chain(), "int8-edgetpu")  # all static: no error


# ---- the compiler: argument building, log parsing, install hint, failure, timeout ----------

PARTLY_MAPPED = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 941 ms.

Input model: out/unet_int8-edgetpu.tflite
Input size: 1.93MiB
Output model: out/unet_int8-edgetpu_edgetpu.tflite
Output size: 2.04MiB
On-chip memory used for caching model parameters: 1.86MiB
On-chip memory remaining for caching model parameters: 5.05MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 43
Operation log: out/unet_int8-edgetpu_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage \
of the model will instead run on the CPU, which is slower. If possible, consider updating your \
model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 41
Number of operations that will run on CPU: 2

Operator                       Count      Status

CONV_2D                        19         Mapped to Edge TPU
TRANSPOSE_CONV                 4          Mapped to Edge TPU
CONCATENATION                  4          Mapped to Edge TPU
MAX_POOL_2D                    4          Mapped to Edge TPU
QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       1          More than one subgraph is not supported
SOFTMAX                        1          Operation is otherwise supported, but not mapped due to \
some unspecified limitation
Compilation child process completed within timeout period.
Compilation succeeded!
"""

ALL_MAPPED_LOG = """\
Edge TPU Compiler version 16.0.384591198
Input: unet_int8-edgetpu.tflite
Output: unet_int8-edgetpu_edgetpu.tflite

Operator                       Count      Status

CONV_2D                        23         Mapped to Edge TPU
RESIZE_NEAREST_NEIGHBOR        4          Mapped to Edge TPU
CONCATENATION                  4          Mapped to Edge TPU
MAX_POOL_2D                    4          Mapped to Edge TPU
LOGISTIC                       1          Mapped to Edge TPU
QUANTIZE                       2          Mapped to Edge TPU
"""

STREAMED = """\
Edge TPU Compiler version 15.0.340273435

Model compiled successfully in 5123 ms.

Input model: big.tflite
Input size: 31.27MiB
Output model: big_edgetpu.tflite
Output size: 31.40MiB
On-chip memory used for caching model parameters: 6.91MiB
On-chip memory remaining for caching model parameters: 4.25KiB
Off-chip memory used for streaming uncached model parameters: 24.25MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 38
Operation log: big_edgetpu.log
See the operation log file for individual operation details.
Compilation child process completed within timeout period.
Compilation succeeded!
"""


def test_parse_compiler_logs() -> None:
    r = parse_compiler_log(PARTLY_MAPPED)
    assert r.version == "16.0.384591198" and r.compile_ms == 941
    assert (r.ops_edgetpu, r.ops_cpu, r.total_ops, r.subgraphs) == (41, 2, 43, 1)
    assert r.share == pytest.approx(41 / 43)
    assert r.on_chip_bytes == round(1.86 * 2**20) and r.off_chip_bytes == 0
    assert r.on_chip_remaining_bytes == round(5.05 * 2**20)
    assert [(o.op, o.count, o.mapped) for o in r.operators][-2:] == [
        ("QUANTIZE", 1, False),
        ("SOFTMAX", 1, False),
    ]
    assert r.output_model == "out/unet_int8-edgetpu_edgetpu.tflite"
    assert "41/43 ops on the Edge TPU (95%)" in r.summary and "SOFTMAX x1" in r.summary
    # The per-model .log: the table only; counts come from it.
    r = parse_compiler_log(ALL_MAPPED_LOG)
    assert (r.ops_edgetpu, r.ops_cpu, r.share) == (38, 0, 1.0) and len(r.operators) == 6
    # Every op mapped (no count lines, no table), parameters streamed beyond the cache.
    r = parse_compiler_log(STREAMED)
    assert (r.ops_edgetpu, r.ops_cpu) == (38, 0)
    assert r.off_chip_bytes == round(24.25 * 2**20) and r.on_chip_remaining_bytes == 4352
    assert json.loads(json.dumps(r.to_dict()))["share"] == 1.0


def test_compiler_args_and_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m_int8-edgetpu.tflite"
    assert compiler_args(model, tmp_path / "o", timeout=90) == [
        "edgetpu_compiler", "-s", "-o", str(tmp_path / "o"), "-t", "90", str(model)
    ]  # fmt: skip
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert edgetpu.compiler_path() is None
    with pytest.raises(MissingDependencyError) as exc:
        compile_model(model, tmp_path)
    text = str(exc.value)
    assert text == COMPILER_INSTALL_HINT and "\n" not in text
    assert "x86-64" in text and "apt-get install edgetpu-compiler" in text


def _fake_compiler(bin_dir: Path, body: str) -> str:
    """A stand-in `edgetpu_compiler` (a test double of the missing binary); the PATH with it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}{os.pathsep}{SYSTEM_PATH}"


# Writes <stem>_edgetpu.tflite into the -o folder (a copy of the input) and prints the log.
_COMPILES = (
    """\
out="$3"; model="$6"; stem=$(basename "$model" .tflite)
cp "$model" "$out/${stem}_edgetpu.tflite"
cat <<'LOG'
"""
    + PARTLY_MAPPED
    + "LOG\n"
)


@pytest.mark.parametrize(
    ("body", "timeout", "needle"),
    [
        ('echo "Edge TPU Compiler version 16.0"; echo "Internal compiler error. Aborting!"\n'
         "exit 1\n", 30, "failed on m.tflite (exit 1): Internal compiler error. Aborting!"),
        ("exec sleep 30\n", 1, "did not finish m.tflite within 1 s"),
        ('echo "Compilation succeeded!"\n', 30, "exited without writing m_edgetpu.tflite"),
    ],
    ids=["fails", "times-out", "writes-nothing"],
)  # fmt: skip
def test_compiler_failures_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, timeout: float, needle: str
) -> None:
    monkeypatch.setenv("PATH", _fake_compiler(tmp_path / "bin", body))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    with pytest.raises(CompilerError) as exc:
        compile_model(model, tmp_path, timeout=timeout)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_compiler_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _fake_compiler(tmp_path / "bin", _COMPILES))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model")
    result = compile_model(model, tmp_path, timeout=20)
    assert result.compiled == tmp_path / "m_edgetpu.tflite" and result.compiled.is_file()
    assert result.command[1:] == ("-s", "-o", str(tmp_path), "-t", "20", str(model))
    assert result.report.ops_edgetpu == 41


# ---- real conversions of small U-Nets ---------------------------------------------------------


@pytest.fixture(scope="module")
def unets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """int8-edgetpu conversions of an upsampling U-Net (RGB, 3-class softmax, no batch norm)
    and a transposed-conv U-Net (gray, sigmoid, batch norm), 32 px, 4 filters."""
    pytest.importorskip("keras")
    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.metadata import infer_metadata
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig, build_unet

    root = tmp_path_factory.mktemp("unets")
    configs = {
        "upsample": UNetConfig((32, 32), channels=3, num_classes=3, base_filters=4, depth=2,
                               decoder="upsample", batch_norm=False),
        "transpose": UNetConfig((32, 32), base_filters=4, depth=2, decoder="transpose"),
    }  # fmt: skip
    out = {}
    for name, cfg in configs.items():
        path = root / f"{name}.keras"
        build_unet(cfg).save(path)
        loaded = load_model(path)
        meta = infer_metadata(loaded.input_shape, loaded.output_shape)
        tiles = np.random.default_rng(0).random((4, 32, 32, cfg.channels), dtype=np.float32)
        twin = name == "upsample"  # the float twin is needed for the layer errors only
        conv = convert(loaded, meta, load_recipe("int8-edgetpu"), tiles, float_twin=twin)
        out[name] = {"loaded": loaded, "meta": meta, "tiles": tiles, "conv": conv, "root": root}
    return out


def test_upsampling_rewritten_to_one_resize_with_identical_float_outputs(unets: dict) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.core.tflite_file import op_histogram

    u = unets["upsample"]
    conv = u["conv"]
    assert conv.rewritten == ("dec1_up", "dec0_up")
    ops = op_histogram(conv.tflite)
    assert ops["RESIZE_NEAREST_NEIGHBOR"] == 2
    assert not {"TILE", "RESHAPE", "EXPAND_DIMS", "SHAPE", "STRIDED_SLICE"} & set(ops)
    # The rewritten float graph gives the Keras model's outputs.
    interp = Interpreter(model_content=conv.float_twin)
    interp.allocate_tensors()
    x = u["tiles"][:1]
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(u["loaded"].predict(x)), atol=1e-5)
    # Verdict: everything on the Edge TPU but the per-pixel softmax (and the output's
    # requantization after it).
    pre = preflight(conv.tflite)
    assert pre.input_types == ("uint8",) and pre.output_types == ("uint8",)
    assert [v.op for v in pre.ops if v.target == "cpu"] == ["SOFTMAX", "QUANTIZE"]
    assert pre.first_cpu.op == "SOFTMAX" and not pre.risks


def test_transpose_decoder_with_batch_norm_maps_with_risks(unets: dict) -> None:
    pre = preflight(unets["transpose"]["conv"].tflite)
    assert pre.mapped == pre.total and pre.first_cpu is None
    assert sum("TRANSPOSE_CONV" in r for r in pre.risks) == 2
    assert unets["transpose"]["conv"].rewritten == ()


def test_plain_int8_keeps_the_upsampling_trap(unets: dict) -> None:
    """Without the rewrite, Keras 3's UpSampling2D ends the Edge TPU partition at once."""
    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert

    u = unets["upsample"]
    conv = convert(u["loaded"], u["meta"], load_recipe("int8"), u["tiles"])
    pre = preflight(conv.tflite)
    assert pre.first_cpu.op in ("RESHAPE", "TILE", "EXPAND_DIMS")
    assert any("3 innermost" in r for r in pre.first_cpu.reasons)
    assert any("rewrites it as one RESIZE_NEAREST_NEIGHBOR" in n for n in pre.notes)


def test_layer_errors_and_keep_float_changes_the_ops(unets: dict) -> None:
    from edgeseg.convert.parity import layer_errors
    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.tflite_file import op_histogram
    from edgeseg.errors import DataError

    u = unets["upsample"]
    errors = layer_errors(u["conv"].tflite, u["conv"].float_twin, u["tiles"])
    assert len(errors) > 10 and errors[0].relative >= errors[-1].relative
    assert any(e.layer == "enc0_conv1+enc0_relu1" for e in errors)
    assert any(e.layer == "dec0_up" and e.op == "RESIZE_NEAREST_NEIGHBOR" for e in errors)
    assert all(np.isfinite(e.rmse) and e.steps >= 0 for e in errors)
    recipe = load_recipe("int8-edgetpu")
    kept = convert(u["loaded"], u["meta"], recipe, u["tiles"], keep_float=["dec0_conv2"])
    before, after = op_histogram(u["conv"].tflite), op_histogram(kept.tflite)
    assert "DEQUANTIZE" not in before and after.get("DEQUANTIZE") == 1
    assert after["QUANTIZE"] == before["QUANTIZE"] + 1
    assert len(kept.kept_float) == 1 and "dec0_conv2" in kept.kept_float[0]
    pre = preflight(kept.tflite)
    assert pre.first_cpu.op == "DEQUANTIZE"
    with pytest.raises(DataError, match="--keep-float nope: no layer"):
        convert(u["loaded"], u["meta"], recipe, u["tiles"], keep_float=["nope"])


def test_edgetpu_step_compiles_or_says_how_to_install(
    unets: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeseg.convert.pipeline import ConvertRequest, _edgetpu_step
    from edgeseg.core.tflite_file import embed_metadata, read_embedded, read_metadata
    from edgeseg.runtime.backends import cpu_sibling

    u = unets["upsample"]
    path = tmp_path / "m_int8-edgetpu.tflite"
    meta = u["meta"].with_updates(provenance={"cpu_sibling": path.name})
    data = embed_metadata(u["conv"].tflite, meta, extra={"recipe": {"name": "int8-edgetpu"}})
    path.write_bytes(data)
    req = ConvertRequest(model=tmp_path / "m.keras", recipes=(), out=tmp_path)
    said: list[str] = []
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    info, compiled, failure = _edgetpu_step(path, data, True, meta, {}, req, said.append)
    assert compiled is None and failure is None
    assert info["compiler"] == {"status": "missing", "hint": COMPILER_INSTALL_HINT}
    assert info["preflight"]["first_cpu_op"]["op"] == "SOFTMAX"
    assert COMPILER_INSTALL_HINT in said
    # With a (stand-in) compiler on PATH: the compiled model, with the same metadata.
    monkeypatch.setenv("PATH", _fake_compiler(tmp_path / "bin", _COMPILES))
    info, compiled, failure = _edgetpu_step(path, data, True, meta, {"x": 1}, req, said.append)
    assert failure is None and compiled == tmp_path / "m_int8-edgetpu_edgetpu.tflite"
    assert info["compiler"]["status"] == "compiled" and info["compiler"]["ops_edgetpu"] == 41
    assert read_embedded(compiled)["x"] == 1
    assert cpu_sibling(compiled, read_metadata(compiled)) == path
    # A rejected artefact is not compiled.
    info, compiled, _ = _edgetpu_step(path, data, False, meta, {}, req, said.append)
    assert compiled is None and info["compiler"]["status"] == "skipped"


# ---- the CLI: --edgetpu end to end, inspect --edgetpu, bad input ---------------------------


def test_convert_edgetpu_cli_compiler_fails_keeps_everything(
    tiny_unet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeseg.core.tflite_file import read_metadata
    from edgeseg.runtime.backends import cpu_sibling

    data = write_pairs(tmp_path / "d", n=4, size=(32, 32))
    fails = 'echo "Internal compiler error. Aborting!"; exit 1\n'
    monkeypatch.setenv("PATH", _fake_compiler(tmp_path / "bin", fails))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["convert", str(tiny_unet), "--edgetpu", "--calib", str(data / "images"), "--n", "8",
         "--val", str(data), "--min-dice-agreement", "0", "--compiler-timeout", "30",
         "--out", str(out)],
    )  # fmt: skip
    line = one_line_error(result, "edgetpu_compiler failed", "Internal compiler error")
    assert "kept the other artefacts and the report" in line
    artefact = out / "tiny_int8-edgetpu.tflite"
    meta = read_metadata(artefact)
    assert meta.provenance["cpu_sibling"] == artefact.name
    assert cpu_sibling(out / "tiny_int8-edgetpu_edgetpu.tflite", meta) == artefact
    report = json.loads((out / "tiny_parity.json").read_text())
    art = report["artefacts"][0]
    assert art["input_type"] == "uint8" and art["layer_errors"]
    assert art["edgetpu"]["compiler"]["status"] == "failed"
    assert art["edgetpu"]["preflight"]["total"] > 10
    md = (out / "tiny_parity.md").read_text()
    assert "## Edge TPU: int8-edgetpu" in md and "## Per-layer quantization error" in md
    # inspect --edgetpu on the artefact
    result = runner.invoke(app, ["inspect", str(artefact), "--edgetpu"])
    assert result.exit_code == 0, result.output
    assert "Edge TPU preflight" in result.output and "TRANSPOSE_CONV" in result.output
    result = runner.invoke(app, ["inspect", str(artefact), "--edgetpu", "--json"])
    assert json.loads(result.output)["edgetpu_preflight"]["mapped"] > 10


def test_edgetpu_bad_input(tiny_unet: Path, tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    out = tmp_path / "out"
    calib = ["--calib", str(tmp_path)]
    # An Edge TPU recipe that is float, or has float I/O.
    fp16 = tmp_path / "fp16-tpu.toml"
    fp16.write_text('name = "fp16-tpu"\nprecision = "fp16"\nedgetpu = true\n')
    one_line_error(
        runner.invoke(app, ["convert", str(tiny_unet), "--recipe", str(fp16), "--out", str(out)]),
        "Edge TPU runs full-integer int8",
    )
    floatio = tmp_path / "float-tpu.toml"
    floatio.write_text('name = "float-tpu"\nprecision = "int8"\nio = "float32"\nedgetpu = true\n')
    one_line_error(
        runner.invoke(
            app, ["convert", str(tiny_unet), "--recipe", str(floatio), *calib, "--out", str(out)]
        ),
        "float32 I/O",
    )
    # --keep-float without an int8 recipe.
    one_line_error(
        runner.invoke(
            app,
            [
                "convert",
                str(tiny_unet),
                "--fp16",
                "--keep-float",
                "head",
                *calib,
                "--out",
                str(out),
            ],
        ),
        "--keep-float applies to int8",
    )
    # A model that takes any image size: shapes are made static only with --input-size.
    inp = keras.Input((None, None, 1))
    any_size = tmp_path / "anysize.keras"
    keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)).save(
        any_size
    )
    write_pairs(tmp_path / "d", n=2, size=(32, 32))
    args = ["convert", str(any_size), "--edgetpu", "--calib", str(tmp_path / "d" / "images")]
    one_line_error(runner.invoke(app, [*args, "--out", str(out)]), "--input-size")
