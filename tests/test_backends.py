"""TFLite backends, quantization adapters and .tflite metadata, on tiny converted models."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import META, SIZE, keras_unet, probe_model, sigmoid_onnx, small_model, tflite_bytes

from edgeseg.core.quant import TensorInfo, dequantize, quantize
from edgeseg.errors import DataError, MissingDependencyError, ModelError

TILES = np.random.default_rng(2).random((3, SIZE, SIZE, 1), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Tiny models (converted once per test session by helpers.tflite_bytes)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tflite")
    paths = {}
    for kind in ("float", "int8", "uint8", "int8_float_io", "dense", "dynamic", "batch2"):
        paths[kind] = root / f"{kind}.tflite"
        paths[kind].write_bytes(tflite_bytes(kind))
    return paths


@pytest.fixture(scope="module")
def keras_out() -> np.ndarray:
    return np.asarray(keras_unet()(TILES, training=False))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# --------------------------------------------------------------------------------------------
# quant.py
# --------------------------------------------------------------------------------------------

INT8 = TensorInfo("x", 0, (1, 4), "int8", scale=0.1, zero_point=-3)
UINT8 = TensorInfo("x", 0, (1, 4), "uint8", scale=1 / 255, zero_point=0)


@pytest.mark.parametrize("info", [INT8, UINT8])
def test_quantize_round_trip_within_half_a_step(info: TensorInfo) -> None:
    lo = (np.iinfo(info.dtype).min - info.zero_point) * info.scale
    hi = (np.iinfo(info.dtype).max - info.zero_point) * info.scale
    x = np.linspace(lo, hi, 1001, dtype=np.float32)
    q = quantize(x, info)
    assert q.dtype == np.dtype(info.dtype)
    back = dequantize(q, info)
    assert back.dtype == np.float32
    assert np.abs(back - x).max() <= info.scale / 2 + 1e-6


def test_quantize_clips_to_the_dtype_range() -> None:
    assert quantize(np.array([1e6, -1e6, np.inf, -np.inf]), INT8).tolist() == [
        127,
        -128,
        127,
        -128,
    ]
    assert quantize(np.array([2.0, -1.0]), UINT8).tolist() == [255, 0]


def test_quantize_rounds_half_away_from_zero_like_tflite() -> None:
    info = TensorInfo("x", 0, (3,), "int8", scale=0.5, zero_point=0)
    assert quantize(np.array([0.25, -0.25, 0.75]), info).tolist() == [1, -1, 2]


def test_float_tensors_are_cast_and_nan_is_refused_for_integers() -> None:
    f16 = TensorInfo("x", 0, (2,), "float16")
    assert not f16.quantized and INT8.quantized
    assert quantize(np.array([0.5, 1.0]), f16).dtype == np.float16
    assert dequantize(np.array([0.5], np.float16), f16).dtype == np.float32
    with pytest.raises(DataError):
        quantize(np.array([np.nan]), INT8)


# --------------------------------------------------------------------------------------------
# backends.py
# --------------------------------------------------------------------------------------------


def test_interpreter_class_prefers_litert() -> None:
    pytest.importorskip("ai_edge_litert")
    from edgeseg.runtime.backends import interpreter_class

    cls, name = interpreter_class()
    assert name.startswith("ai-edge-litert ") and cls.__name__ == "Interpreter"


def test_interpreter_class_falls_back_and_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeseg.runtime import backends

    real = importlib.import_module
    blocked = {"ai_edge_litert.interpreter", "tflite_runtime.interpreter"}

    def fake(name: str, *args, **kwargs):
        if name in blocked:
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    pytest.importorskip("tensorflow")
    _, name = backends.interpreter_class()
    assert name.startswith("tensorflow ")
    blocked.add("tensorflow")
    with pytest.raises(MissingDependencyError) as exc:
        backends.interpreter_class()
    assert "pip install 'edgeseg[runtime]'" in one_line(exc)


def test_float_backend_matches_keras(models: dict[str, Path], keras_out: np.ndarray) -> None:
    from edgeseg.runtime.backends import load_backend

    backend = load_backend(models["float"], threads=2)
    assert backend.runtime.startswith("ai-edge-litert")
    assert backend.input.shape == (1, SIZE, SIZE, 1)  # the dynamic batch was resized to 1
    assert backend.input.dtype == "float32" and not backend.input.quantized
    y = backend.predict(TILES)
    assert y.dtype == np.float32 and y.shape == keras_out.shape
    np.testing.assert_allclose(y, keras_out, atol=1e-5)
    assert backend.metadata() is None


@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_integer_io_backend_matches_keras_and_tflite_quantization(
    models: dict[str, Path], keras_out: np.ndarray, kind: str
) -> None:
    from edgeseg.runtime.backends import load_backend

    backend = load_backend(models[kind])
    assert backend.input.dtype == kind and backend.output.dtype == kind
    assert backend.input.quantized and backend.output.quantized
    y = backend.predict(TILES)
    assert y.dtype == np.float32 and y.shape == keras_out.shape
    # Quantized all the way through: a few output steps from the float model.
    assert np.abs(y - keras_out).max() <= 4 * backend.output.scale
    # Our quantize/dequantize at the edges equal the QUANTIZE/DEQUANTIZE ops of the same
    # int8 model converted with float I/O (same calibration, so the same parameters).
    if kind == "int8":
        reference = load_backend(models["int8_float_io"]).predict(TILES)
        np.testing.assert_array_equal(y, reference)


def test_invoke_takes_raw_tensors(models: dict[str, Path]) -> None:
    from edgeseg.runtime.backends import load_backend

    backend = load_backend(models["int8"])
    x = quantize(TILES[:1], backend.input)
    raw = backend.invoke(x)
    assert raw.dtype == np.int8 and raw.shape == backend.output.shape
    again = backend.invoke(x)
    assert raw is not again and np.array_equal(raw, again)  # copies, not views
    with pytest.raises(DataError):
        backend.invoke(TILES[:1])  # float32 into an int8 model


def test_predict_checks_tile_shapes(models: dict[str, Path]) -> None:
    from edgeseg.runtime.backends import load_backend

    backend = load_backend(models["float"])
    for bad in (np.zeros((2, 16, 16, 1)), np.zeros((2, SIZE, SIZE, 3)), np.zeros((SIZE, SIZE, 1))):
        with pytest.raises(DataError) as exc:
            backend.predict(bad)
        assert "(n, 32, 32, 1)" in one_line(exc)
    assert backend.predict(np.zeros((0, SIZE, SIZE, 1))).shape == (0, SIZE, SIZE, 1)
    with pytest.raises(ValueError):
        load_backend(models["float"], threads=0)


def test_static_batch_is_filled_and_padded(models: dict[str, Path]) -> None:
    from edgeseg.runtime.backends import load_backend

    backend = load_backend(models["batch2"])
    assert backend.batch_size == 2
    y = backend.predict(TILES)  # 3 tiles: one full batch, one padded
    assert y.shape == (3, SIZE, SIZE, 2)
    np.testing.assert_allclose(y[2:], backend.predict(TILES[2:]), atol=1e-6)
    expected = np.asarray(small_model("batch2")(np.concatenate([TILES[2:], TILES[2:]])))[:1]
    np.testing.assert_allclose(y[2:], expected, atol=1e-5)


def test_non_image_models_are_refused(models: dict[str, Path]) -> None:
    from edgeseg.runtime.backends import TFLiteBackend

    with pytest.raises(ModelError) as exc:
        TFLiteBackend(models["dense"])
    message = one_line(exc)
    assert "is not an image-to-mask model" in message and "output shape (None, 2)" in message
    with pytest.raises(ModelError) as exc:
        TFLiteBackend(models["dynamic"])
    assert "dynamic input size" in one_line(exc)


def test_tflite_backend_is_a_backend(tmp_path: Path) -> None:
    """The contract of edgeseg.core.backend, on the doctor's probe model (no TensorFlow)."""
    from edgeseg.core.backend import Backend
    from edgeseg.runtime.backends import TFLiteBackend, open_backend

    path = probe_model(tmp_path / "probe.tflite")
    backend = TFLiteBackend(path, threads=1)
    assert isinstance(backend, Backend)
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1) / 64
    np.testing.assert_array_equal(backend.predict_raw(x), backend.predict(x))
    assert backend.path == path and backend.runtime and backend.metadata() is None
    opened = open_backend(path, delegate="cpu", threads=1)
    assert isinstance(opened.backend, Backend)
    assert opened.describe().startswith("CPU (XNNPACK, 1 threads)")
    assert (opened.runtime, opened.device, opened.accelerator, opened.threads) == (
        "litert",
        "CPU",
        "XNNPACK",
        1,
    )
    assert opened.cpu and opened.chosen_by == "file" and opened.fallback is None


def test_onnx_backend_is_a_backend(tmp_path: Path) -> None:
    """The same contract for onnxruntime, on a one-node ONNX model (x → sigmoid(x))."""
    pytest.importorskip("onnxruntime")
    from edgeseg.core.backend import Backend
    from edgeseg.runtime.backends import OnnxBackend, open_backend

    path = sigmoid_onnx(tmp_path / "sigmoid.onnx")
    backend = OnnxBackend(path, provider="cpu")
    assert isinstance(backend, Backend)
    x = np.linspace(-4, 4, 128, dtype=np.float32).reshape(2, 8, 8, 1)
    np.testing.assert_allclose(backend.predict(x), 1 / (1 + np.exp(-x)), atol=1e-6)
    np.testing.assert_array_equal(backend.predict_raw(x), backend.predict(x))  # float model
    assert backend.metadata() is None and backend.runtime.startswith("onnxruntime ")
    opened = open_backend(path)
    assert isinstance(opened.backend, Backend) and opened.runtime == "onnxruntime"
    assert opened.device == "CPU" and opened.backend.runtime in opened.describe()


# --------------------------------------------------------------------------------------------
# core/tflite_file.py
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_embedded_metadata_round_trip_and_identical_outputs(
    models: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    from edgeseg.core import tflite_file as tm
    from edgeseg.runtime.backends import load_backend

    original = tflite_bytes(kind)
    assert tm.read_embedded(original) is None and tm.read_metadata(models[kind]) is None
    extra = {"source_sha256": "ab" * 32, "recipe": "int8-cpu"}
    embedded = tm.embed_metadata(original, META, extra)
    assert tm.read_metadata(embedded) == META
    assert tm.read_embedded(embedded) == {"metadata": META.to_dict(), **extra}
    names = tm.tensor_summary(embedded).metadata_names
    assert names == ("min_runtime_version", "CONVERSION_METADATA", "edgeseg")
    assert tm.op_histogram(embedded) == tm.op_histogram(original)

    # Replacing keeps one entry and reuses its buffer.
    again = tm.embed_metadata(embedded, META.with_updates(threshold=0.6), {"recipe": "fp16"})
    assert tm.tensor_summary(again).metadata_names.count("edgeseg") == 1
    assert tm.read_metadata(again).threshold == 0.6
    assert tm.read_embedded(again)["recipe"] == "fp16" and "source_sha256" not in (
        tm.read_embedded(again)
    )
    assert len(tm.parse_model(again).buffers) == len(tm.parse_model(embedded).buffers)

    path = tmp_path / f"{kind}_meta.tflite"
    path.write_bytes(again)
    backend = load_backend(path)
    assert backend.metadata() == META.with_updates(threshold=0.6)
    np.testing.assert_array_equal(backend.predict(TILES), load_backend(models[kind]).predict(TILES))


def test_bad_embedded_json_is_a_one_line_error() -> None:
    from edgeseg.core import tflite_file as tm

    embedded = tm.embed_metadata(tflite_bytes("float"), META)
    start = embedded.index(b'{"metadata"')
    broken = embedded[:start] + b"#" + embedded[start + 1 :]
    with pytest.raises(ModelError) as exc:
        tm.read_metadata(broken)
    assert "not valid JSON" in one_line(exc)
    with pytest.raises(ValueError):
        tm.embed_metadata(tflite_bytes("float"), META, {"metadata": {}})


def test_op_histogram_and_summary(models: dict[str, Path]) -> None:
    from edgeseg.core.tflite_file import op_histogram, tensor_summary

    ops = op_histogram(models["float"])
    assert ops["CONV_2D"] == 11 and ops["CONCATENATION"] == 2 and ops["TRANSPOSE_CONV"] == 2
    assert list(ops) == sorted(ops, key=lambda k: (-ops[k], k))
    assert "QUANTIZE" in op_histogram(models["uint8"])
    summary = tensor_summary(models["int8"])
    assert summary.inputs[0].shape == (-1, SIZE, SIZE, 1) and summary.inputs[0].dtype == "int8"
    assert summary.inputs[0].quantized and summary.size_bytes == len(tflite_bytes("int8"))
    assert max(summary.weight_bytes, key=summary.weight_bytes.get) == "int8"
    assert tensor_summary(models["float"]).weight_bytes.get("int8") is None


def test_metadata_ops_and_backend_need_no_tensorflow(models: dict[str, Path]) -> None:
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        from edgeseg.core.tflite_file import op_histogram, read_metadata
        from edgeseg.runtime.backends import load_backend
        assert op_histogram({str(models["int8"])!r})["CONV_2D"] == 11
        assert read_metadata({str(models["int8"])!r}) is None
        b = load_backend({str(models["int8"])!r})
        assert b.predict(np.zeros((1, 32, 32, 1), np.float32)).shape == (1, 32, 32, 1)
        print([m for m in ("tensorflow", "keras") if m in sys.modules])
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------------------------
# Bad files: every failure is a one-line ModelError, and the interpreter never crashes
# --------------------------------------------------------------------------------------------


def test_missing_empty_garbage_and_foreign_files(tmp_path: Path) -> None:
    from edgeseg.runtime.backends import load_backend

    cases = {
        "missing.tflite": None,
        "empty.tflite": b"",
        "tiny.tflite": b"TFL3",
        "garbage.tflite": np.random.default_rng(0).bytes(4096),
        "text.tflite": b"not a model at all\n" * 20,
        "model.keras": b"PK\x03\x04" + bytes(200),
        "model.h5": b"\x89HDF\r\n\x1a\n" + bytes(200),
        "wrong_root.tflite": b"\xff\xff\xff\x7fTFL3" + bytes(64),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ModelError) as exc:
            load_backend(path)
        message = one_line(exc)
        assert str(path) in message, message
    (tmp_path / "folder.tflite").mkdir()
    with pytest.raises(ModelError, match="is a directory"):
        load_backend(tmp_path / "folder.tflite")
    with pytest.raises(ModelError, match="zip archive"):
        load_backend(tmp_path / "model.keras")


def _try(path: Path) -> str:
    """ok, or the class of the error loading and running the model raised."""
    from edgeseg.runtime.backends import load_backend

    try:
        backend = load_backend(path)
        backend.predict(np.zeros((1, *backend.input.shape[1:]), np.float32))
        backend.metadata()
        return "ok"
    except (ModelError, DataError) as exc:
        assert "\n" not in str(exc)
        return type(exc).__name__


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_truncated_models_are_refused(tmp_path: Path, kind: str) -> None:
    data = tflite_bytes(kind)
    rng = np.random.default_rng(3)
    cuts = sorted({*np.linspace(1, len(data) - 1, 20).astype(int), *rng.integers(1, len(data), 10)})
    outcomes = {}
    for cut in cuts:
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        outcomes[int(cut)] = _try(path)
    assert set(outcomes.values()) <= {"ok", "ModelError", "DataError"}
    assert list(outcomes.values()).count("ModelError") >= len(cuts) - 2, outcomes


# The child process: a corrupt flatbuffer that slipped past validation could crash the
# interpreter's process, which must fail this test, not the whole test run.
_FUZZ_CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from edgeseg.errors import DataError, ModelError
from edgeseg.runtime.backends import load_backend
for path in sorted(Path(sys.argv[1]).glob("*.tflite")):
    print(json.dumps({"case": path.name, "start": True}), flush=True)
    try:
        b = load_backend(path)
        b.predict(np.random.default_rng(0).random((1, *b.input.shape[1:]), dtype=np.float32))
        b.metadata()
        outcome = "ok"
    except (ModelError, DataError) as exc:
        outcome = type(exc).__name__ + ("" if "\\n" not in str(exc) else " (multi-line)")
    except BaseException as exc:
        outcome = "OTHER " + type(exc).__name__ + ": " + str(exc)[:200]
    print(json.dumps({"case": path.name, "outcome": outcome}), flush=True)
"""


def test_byte_flipped_models_load_or_fail_cleanly(tmp_path: Path) -> None:
    from edgeseg.core.tflite_file import embed_metadata

    n_cases = 0
    for kind in ("float", "int8"):
        data = embed_metadata(tflite_bytes(kind), META)  # the metadata JSON may get hit too
        rng = np.random.default_rng(4 if kind == "float" else 5)
        # Positions near the start hold the root table, vtables and the graph structure;
        # the rest is mostly weights.
        positions = [*rng.integers(0, 1024, 15), *rng.integers(0, len(data), 15)]
        for i, pos in enumerate(positions):
            mutated = bytearray(data)
            mutated[pos] ^= int(rng.integers(1, 256))
            (tmp_path / f"{kind}_{i:02d}_at{pos}.tflite").write_bytes(bytes(mutated))
            n_cases += 1
    done = subprocess.run(
        [sys.executable, "-c", _FUZZ_CHILD, str(tmp_path)], capture_output=True, text=True
    )
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    outcomes = {r["case"]: r["outcome"] for r in records if "outcome" in r}
    started = [r["case"] for r in records if "start" in r]
    assert done.returncode == 0, (
        f"the child died with code {done.returncode} on {started[-1] if started else '?'}: "
        f"{done.stderr[-1000:]}"
    )
    assert len(outcomes) == n_cases
    bad = {case: o for case, o in outcomes.items() if o not in ("ok", "ModelError", "DataError")}
    assert not bad, bad
    assert "ModelError" in outcomes.values()  # some flips really broke the model
