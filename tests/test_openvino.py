"""The OpenVINO backend: the same contract as LiteRT's, reading the same .tflite files (int8
included) and .onnx; label maps identical to LiteRT's on an int8 model and in agreement on a
float one. Skipped where OpenVINO is not installed (CI installs it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import bright_int8_model, one_line_error, sigmoid_onnx, tflite_bytes, write_pairs
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.segmenter import Segmenter
from edgeseg.errors import MissingDependencyError

runner = CliRunner()


def _ov() -> None:
    pytest.importorskip("openvino")


def _frames(size: tuple[int, int], n: int = 3) -> list[np.ndarray]:
    from edgeseg.samples import SyntheticStream

    stream = SyntheticStream(size=size, seed=4)
    return [stream.read()[0] for _ in range(n)]


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bright_int8_model(tmp_path_factory.mktemp("ov") / "bright_int8.tflite")


@pytest.fixture(scope="module")
def unet_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ov-unet")
    made = {}
    for kind in ("float", "int8"):
        made[kind] = root / f"unet_{kind}.tflite"
        made[kind].write_bytes(tflite_bytes(kind))
    return made


def test_int8_label_maps_identical_to_litert(int8_model: Path) -> None:
    _ov()
    from edgeseg.runtime.backends import OpenVinoBackend, TFLiteBackend, open_backend

    lite = TFLiteBackend(int8_model, threads=2)
    opened = open_backend(int8_model, backend="openvino", threads=2)
    ov = opened.backend
    assert isinstance(ov, OpenVinoBackend) and isinstance(ov, Backend)
    assert opened.describe().startswith("CPU") and ov.runtime.startswith("openvino ")
    assert (opened.runtime, opened.chosen_by, opened.threads) == ("openvino", "asked", 2)
    # The integer input and output as the file declares them: fed and read like LiteRT's.
    for a, b in ((lite.input, ov.input), (lite.output, ov.output)):
        assert (a.shape, a.dtype, a.scale, a.zero_point) == (
            b.shape,
            b.dtype,
            b.scale,
            b.zero_point,
        )
    assert ov.input.quantized and ov.input.dtype == "int8"
    meta = ov.metadata()
    assert meta is not None and meta.normalization == "percentile"
    seg_lite, seg_ov = Segmenter(lite, meta), Segmenter(ov, meta)
    foreground = 0
    for frame in _frames((80, 96)):  # tiled: the int8 lookup-table path (predict_raw)
        expected = seg_lite.labels(frame)
        np.testing.assert_array_equal(seg_ov.labels(frame), expected)
        foreground += int(expected.sum())
    assert foreground > 0  # two blank maps would prove nothing


def test_float_unet_agrees_with_litert(unet_models: dict[str, Path]) -> None:
    _ov()
    from edgeseg.runtime.backends import OpenVinoBackend, TFLiteBackend
    from edgeseg.runtime.selection import MIN_DICE, agreement

    lite = TFLiteBackend(unet_models["float"], threads=2)
    ov = OpenVinoBackend(unet_models["float"], threads=2)
    assert ov.precision == "f32"  # never bf16: an artefact runs at its own precision
    tiles = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(ov.predict(tiles), lite.predict(tiles), atol=1e-4)
    np.testing.assert_array_equal(ov.predict_raw(tiles), ov.predict(tiles))
    meta = ModelMetadata(input_size=(32, 32), normalization="percentile")
    for frame in _frames((64, 80)):
        dice, _ = agreement(Segmenter(ov, meta).labels(frame), Segmenter(lite, meta).labels(frame))
        assert dice >= MIN_DICE


def test_int8_unet_keeps_integer_io(unet_models: dict[str, Path]) -> None:
    """OpenVINO feeds and reads an int8 U-Net's integer tensors as the file declares them.
    (How far its int8 arithmetic may round from LiteRT's depends on the CPU: the label maps a
    user sees are what the next test holds it to.)"""
    _ov()
    from edgeseg.core.quant import quantize
    from edgeseg.runtime.backends import OpenVinoBackend, TFLiteBackend

    lite = TFLiteBackend(unet_models["int8"])
    ov = OpenVinoBackend(unet_models["int8"])
    x = quantize(np.random.default_rng(1).random((1, 32, 32, 1), dtype=np.float32), ov.input)
    raw_lite, raw_ov = lite.invoke(x), ov.invoke(x)
    assert raw_ov.dtype == raw_lite.dtype == np.int8 and raw_ov.shape == raw_lite.shape


_OV_LABELS = """
import sys
import numpy as np
from edgeseg.core.segmenter import Segmenter
from edgeseg.runtime.backends import OpenVinoBackend
from edgeseg.samples import SyntheticStream
ov = OpenVinoBackend(sys.argv[1], threads=1)
stream = SyntheticStream(size=(96, 128), seed=4)
segmenter = Segmenter(ov, ov.metadata())
np.save(sys.argv[2], np.stack([segmenter.labels(stream.read()[0]) for _ in range(3)]))
"""


@pytest.fixture(scope="module")
def context_unet_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-int8 U-Net (depth 2, skips concatenated) with confident, context-dependent
    outputs: what a trained model gives, without training."""
    from helpers import int8_tflite, intensity_unet

    from edgeseg.core.tflite_file import embed_metadata

    data = int8_tflite(intensity_unet(32), (32, 32), samples=16)
    meta = ModelMetadata(input_size=(32, 32), normalization="percentile")
    path = tmp_path_factory.mktemp("ov-context") / "context_unet_int8.tflite"
    path.write_bytes(embed_metadata(data, meta))
    return path


@pytest.mark.parametrize("isa", [None, "AVX2", "AVX512_CORE"])
def test_int8_unet_label_maps_agree_with_litert_on_every_cpu(
    context_unet_int8: Path, isa: str | None, tmp_path: Path
) -> None:
    """OpenVINO's int8 results differ from LiteRT's by a few quantization steps on CPUs without
    AMX or VNNI (bit-identical on AMX): the label maps must still agree as `--backend auto`
    demands (every class's Dice >= MIN_DICE). Each CPU family is emulated here by capping
    oneDNN's instruction set in a child process (``ONEDNN_MAX_CPU_ISA``; on a CPU below the
    cap it runs what it has), so every machine checks the AVX2-only arithmetic."""
    _ov()
    import os
    import subprocess

    from edgeseg.runtime.backends import TFLiteBackend
    from edgeseg.runtime.selection import MIN_DICE, agreement
    from edgeseg.samples import SyntheticStream

    lite = TFLiteBackend(context_unet_int8, threads=1)
    stream = SyntheticStream(size=(96, 128), seed=4)
    segmenter = Segmenter(lite, lite.metadata())
    expected = [segmenter.labels(stream.read()[0]) for _ in range(3)]
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa is not None:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    out = tmp_path / "ov_labels.npy"
    done = subprocess.run(
        [sys.executable, "-c", _OV_LABELS, str(context_unet_int8), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(out)
    for labels, ref in zip(got, expected, strict=True):
        dice, _ = agreement(labels, ref)
        assert dice >= MIN_DICE, (isa, dice)
    assert sum(int((ref > 0).sum()) for ref in expected) > 0  # blank maps would prove nothing


def test_reopen_gives_the_same_kind_with_other_threads(int8_model: Path) -> None:
    _ov()
    from edgeseg.runtime.backends import OpenVinoBackend, TFLiteBackend, open_backend, reopen

    ov = open_backend(int8_model, backend="openvino", threads=2)
    again = reopen(ov, 1)
    assert isinstance(again, OpenVinoBackend) and again.threads == 1
    lite = open_backend(int8_model, backend="litert")
    assert isinstance(reopen(lite, 1), TFLiteBackend)


def test_onnx_model_on_openvino(tmp_path: Path) -> None:
    _ov()
    from edgeseg.runtime.backends import OpenVinoBackend

    path = sigmoid_onnx(tmp_path / "sigmoid.onnx")
    backend = OpenVinoBackend(path)
    x = np.linspace(-4, 4, 128, dtype=np.float32).reshape(2, 8, 8, 1)
    np.testing.assert_allclose(backend.predict(x), 1 / (1 + np.exp(-x)), atol=1e-6)
    assert backend.metadata() is None


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    _ov()
    from edgeseg.errors import ModelError
    from edgeseg.runtime.backends import OpenVinoBackend

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\0" * 64)
    with pytest.raises(ModelError) as info:
        OpenVinoBackend(bad)
    assert "bad.tflite" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="not found"):
        OpenVinoBackend(tmp_path / "none.onnx")


def test_without_openvino_the_error_names_the_extra(
    int8_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeseg.runtime.backends import OpenVinoBackend

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino → ImportError
    with pytest.raises(MissingDependencyError, match=r"edgeseg\[openvino\]"):
        OpenVinoBackend(int8_model)


def test_run_and_eval_on_openvino(int8_model: Path, tmp_path: Path) -> None:
    _ov()
    pytest.importorskip("cv2")
    data = write_pairs(tmp_path / "data", n=2, size=(40, 48))
    scores = {}
    for kind in ("litert", "openvino"):
        result = runner.invoke(
            app, ["eval", str(int8_model), "--data", str(data), "--backend", kind,
                  "--json", str(tmp_path / f"{kind}.json")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        scores[kind] = (tmp_path / f"{kind}.json").read_text().split('"seconds"')[0]
    assert scores["litert"] == scores["openvino"]
    masks = tmp_path / "masks"
    result = runner.invoke(
        app, ["run", str(int8_model), "--source", str(data / "images"), "--headless",
              "--backend", "openvino", "--save-masks", str(masks)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "openvino" in result.output
    assert len(list(masks.glob("*.png"))) == 2


def test_openvino_with_a_litert_delegate_is_one_line_error(int8_model: Path) -> None:
    result = runner.invoke(
        app, ["run", str(int8_model), "--backend", "openvino", "--delegate", "edgetpu",
              "--headless", "--source", "synthetic://?frames=1"],
    )  # fmt: skip
    one_line_error(result, "openvino", "edgetpu")
    edgetpu = int8_model.with_name("m_edgetpu.tflite")
    edgetpu.write_bytes(int8_model.read_bytes())
    result = runner.invoke(
        app, ["run", str(edgetpu), "--backend", "openvino", "--headless", "--source",
              "synthetic://?frames=1"],
    )  # fmt: skip
    one_line_error(result, "openvino", "m_edgetpu.tflite")
