"""ONNX (PyTorch-style) U-Nets into convert: the pure-onnx pre-passes with exact numeric checks
against onnxruntime, the refusals, and a few small onnx2tf conversions (skipped without the
onnx-import extra). No torch: graphs come from tests/onnx_unets.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx_unets import single_op_onnx, unet_onnx  # noqa: E402

from edgeseg.cli.main import app  # noqa: E402
from edgeseg.core import onnx_graph  # noqa: E402
from edgeseg.errors import DataError, ModelError  # noqa: E402

runner = CliRunner()


def _run(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _needs_onnx2tf() -> None:
    # Looked up, not imported: importing onnx2tf sets the absl logger to ERROR for the whole
    # process (edgeseg runs it in a child), which would hide later tests' log lines.
    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("the onnx-import extra (onnx2tf) is not installed")


# --------------------------------------------------------------------------------------------
# Pre-passes: pure onnx, exact against onnxruntime


def test_pad_maxpool_after_relu_is_exact() -> None:
    model = unet_onnx(stem_maxpool=True, channels=3, up="half_pixel")
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
    before = _run(model, x)
    rewritten, count = onnx_graph.pad_maxpools(
        onnx.ModelProto.FromString(model.SerializeToString())
    )
    assert count == 1
    pools = [n for n in rewritten.graph.node if n.op_type == "MaxPool"]
    assert all(not any(a.name == "pads" and any(a.ints) for a in n.attribute) for n in pools)
    assert sum(n.op_type == "Pad" for n in rewritten.graph.node) == 1
    np.testing.assert_array_equal(_run(rewritten, x), before)


def test_padded_maxpool_not_after_relu_is_left() -> None:
    model = single_op_onnx("MaxPool", (1, 1, 8, 8), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _, count = onnx_graph.pad_maxpools(model)
    assert count == 0  # the input may be negative: a zero pad would change the result


@pytest.mark.parametrize(("classes", "op"), [(1, "Sigmoid"), (3, "Softmax")])
def test_appended_activation_matches_numpy(classes: int, op: str) -> None:
    model = unet_onnx(classes=classes)
    x = np.random.default_rng(2).random((1, 1, 32, 32), dtype=np.float32)
    logits = _run(model, x)
    assert onnx_graph.detect_activation(model, "logits") == "logits"
    model, got_op = onnx_graph.append_activation(model, "logits", classes)
    assert got_op == op
    assert onnx_graph.detect_activation(model, "logits") == op.lower()
    probs = _run(model, x)
    if classes == 1:
        want = 1 / (1 + np.exp(-logits))
    else:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        want = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, want, atol=1e-6)


def test_opset18_align_corners_taken_to_opset17_exactly() -> None:
    model = unet_onnx(up="align_corners", opset=18)
    x = np.random.default_rng(3).random((1, 1, 32, 32), dtype=np.float32)
    converted, note = onnx_graph.to_opset17_for_resize(model)
    assert note and "opset 18 to 17" in note
    assert onnx_graph.opset_of(converted) == 17
    np.testing.assert_array_equal(_run(converted, x), _run(model, x))
    # half_pixel at 18 converts fine in onnx2tf: left as it is
    same, note = onnx_graph.to_opset17_for_resize(unet_onnx(up="half_pixel", opset=18))
    assert note is None and onnx_graph.opset_of(same) == 18


def test_dynamic_input_fixed_to_tile_size_and_batch_1() -> None:
    model = unet_onnx(size=None, channels=3, classes=2, up="convtranspose")
    with pytest.raises(ModelError, match="--input-size"):
        onnx_graph.fix_input(onnx.ModelProto.FromString(model.SerializeToString()), None)
    fixed = onnx_graph.fix_input(model, (48, 64))
    info = onnx_graph.describe(fixed)
    assert info.input_shape == (1, 3, 48, 64)
    assert info.output_shape == (1, 2, 48, 64)


def test_several_outputs_keep_the_chosen_one() -> None:
    model = unet_onnx(extra_outputs=1)
    assert onnx_graph.describe(model).output_name == "logits"
    assert onnx_graph.describe(model, "aux1").output_name == "aux1"
    with pytest.raises(ModelError, match="no output 'deep'"):
        onnx_graph.describe(model, "deep")
    kept = onnx_graph.keep_output(model, "logits")
    assert [o.name for o in kept.graph.output] == ["logits"]
    x = np.random.default_rng(4).random((1, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(_run(kept, x), _run(unet_onnx(), x))


def test_nhwc_wrapper_is_exact() -> None:
    model = unet_onnx(channels=3, classes=2)
    x = np.random.default_rng(5).random((1, 3, 32, 32), dtype=np.float32)
    wrapped = onnx_graph.nhwc_wrapped(model, "image", "mask")
    got = _run(wrapped, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(got, _run(model, x).transpose(0, 2, 3, 1))


def test_refusals_name_ops_and_nodes() -> None:
    monai = unet_onnx(instance_norm=True, leaky=True, up="convtranspose")
    onnx_graph.check_ops(monai)  # converts for the CPU
    with pytest.raises(ModelError) as exc:
        onnx_graph.check_ops(monai, edgetpu=True, path="m.onnx")
    msg = str(exc.value)
    assert "InstanceNormalization (node /" in msg and "LeakyRelu (node /" in msg
    assert "--onnx --int8" in msg and "\n" not in msg
    odd = single_op_onnx("Einsum", (1, 1, 4, 4), equation="bchw->bchw")
    with pytest.raises(ModelError, match=r"Einsum \(node /op\)"):
        onnx_graph.check_ops(odd)


def test_not_image_to_mask_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "vec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    with pytest.raises(ModelError, match="not an image-to-mask model: inputs x"):
        onnx_graph.describe(helper.make_model(graph))
    with pytest.raises(DataError, match="--activation"):
        onnx_graph.parse_activation("relu")


# --------------------------------------------------------------------------------------------
# The CLI refuses bad ONNX inputs in one line, before anything slow


def test_cli_refusals(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2 = pytest.importorskip("cv2")
    for i in range(3):
        cv2.imwrite(str(calib / f"f{i}.png"), np.full((40, 40), 60 * i, np.uint8))
    args = ["--out", str(tmp_path / "out"), "--calib", str(calib)]
    one_line_error(
        runner.invoke(app, ["convert", str(bad), "--fp16", *args]), "not a readable ONNX"
    )
    monai = tmp_path / "monai.onnx"
    unet_onnx(monai, instance_norm=True, leaky=True, up="convtranspose")
    one_line_error(
        runner.invoke(app, ["convert", str(monai), "--edgetpu", *args]),
        "InstanceNormalization",
        "LeakyRelu",
    )
    one_line_error(
        runner.invoke(app, ["convert", str(monai), "--fp16", "--activation", "relu", *args]),
        "--activation",
    )
    one_line_error(
        runner.invoke(app, ["convert", str(monai), "--fp16", "--output", "deep", *args]),
        "no output 'deep'",
    )
    one_output = tmp_path / "one.onnx"
    unet_onnx(one_output)
    one_line_error(
        runner.invoke(
            app, ["convert", str(one_output), "--fp16", "--activation", "softmax", *args]
        ),
        "softmax over one channel",
    )


# --------------------------------------------------------------------------------------------
# onnx2tf (the onnx-import extra): few and small


def test_align_corners_resize_opset18_matches_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnx2tf 1.x ignores align_corners at opset 18: the import takes the graph to 17 and the
    SavedModel then matches onnxruntime on the source graph to 1e-5. On TensorFlow's bundled
    Keras 2 (a clean install of the extra), which refuses PyTorch's node names (/up/Resize)
    until the import renames them."""
    _needs_onnx2tf()
    monkeypatch.setenv("EDGESEG_ONNX2TF_KERAS", "bundled")
    from edgeseg.model.importers import ImportOptions, import_onnx

    model = single_op_onnx(
        "Resize", (1, 1, 8, 8), opset=18, mode="linear",
        coordinate_transformation_mode="align_corners",
    )  # fmt: skip
    path = tmp_path / "resize.onnx"
    onnx.save(model, str(path))
    imported = import_onnx(path, ImportOptions(activation="sigmoid"))  # keep the raw Resize
    x = np.random.default_rng(6).random((3, 8, 8, 1), dtype=np.float32)
    want = np.concatenate([_run(model, t.transpose(2, 0, 1)[None]) for t in x])
    got = imported.loaded.predict(x)
    np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), atol=1e-5)
    assert any("opset 18 to 17" in n for n in imported.notes)


def test_monai_style_import_with_bundled_keras_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InstanceNorm, LeakyReLU, ConvTranspose, 3 channels, 2 classes, dynamic H/W: converted
    with TensorFlow's bundled Keras 2 standing in for tf_keras (what a plain install of the
    extra gets), probabilities within 1e-4 of onnxruntime; the second import is the cache's."""
    _needs_onnx2tf()
    from edgeseg.model.importers import ImportOptions, import_onnx

    monkeypatch.setenv("EDGESEG_ONNX2TF_KERAS", "bundled")
    path = tmp_path / "monai.onnx"
    model = unet_onnx(
        path, channels=3, classes=2, size=None, instance_norm=True, leaky=True,
        up="convtranspose", opset=18,
    )  # fmt: skip
    opts = ImportOptions(input_size=(32, 32))
    imported = import_onnx(path, opts)
    assert not imported.cached and imported.activation == "logits"
    assert any("Softmax appended" in n for n in imported.notes)
    assert imported.loaded.input_shape == (1, 32, 32, 3)
    x = np.random.default_rng(7).random((2, 32, 32, 3), dtype=np.float32)
    logits = np.concatenate([_run(model, t.transpose(2, 0, 1)[None]) for t in x])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    want = (e / e.sum(axis=1, keepdims=True)).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(imported.loaded.predict(x), want, atol=1e-4)
    np.testing.assert_allclose(imported.predict(x), want, atol=1e-5)  # the reference
    again = import_onnx(path, opts)
    assert again.cached and "came from the cache" in again.notes[-1]
    np.testing.assert_array_equal(again.loaded.predict(x), imported.loaded.predict(x))


def test_convert_onnx_unet_end_to_end(isbi: Path, tmp_path: Path) -> None:
    """`convert unet.onnx --int8 --onnx`: a milesial-style graph (align_corners at opset 18,
    logits) gives a gated int8 artefact and an ONNX artefact that agree with onnxruntime's
    float masks, and the report says what the import did."""
    _needs_onnx2tf()
    path = tmp_path / "milesial.onnx"
    unet_onnx(path, size=64, base=8, depth=3, opset=18)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["convert", str(path), "--int8", "--onnx", "--calib", str(isbi / "images"),
         "--n", "30", "--frame-size", "80x90", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "milesial_parity.json").read_text())
    by = {a["recipe"]: a for a in report["artefacts"]}
    assert by["onnx"]["agreement"]["dice"] > 0.999
    assert by["int8"]["passed"]
    assert by["onnx-int8"]["passed"] and "QuantizeLinear" in by["onnx-int8"]["ops"]
    assert (out / "milesial_int8.onnx").is_file()
    notes = "\n".join(report["import_notes"])
    assert "Sigmoid appended" in notes and "opset 18 to 17" in notes
    assert "Not applied to an imported model" in notes
    assert any("80x90: the ONNX model was exported at 64x64 only" in n
               for n in report["frame_notes"])  # fmt: skip
    from edgeseg.runtime.backends import OnnxBackend

    backend = OnnxBackend(out / "milesial.onnx", provider="cpu")
    assert backend.input.shape == (1, 64, 64, 1)


REAL_EXPORT = Path(__file__).parent / "data" / "torch" / "milesial_tiny.onnx"


def test_real_torch_export_tiles_and_whole_frames(isbi: Path, tmp_path: Path) -> None:
    """A real `torch.onnx.export` of a trained milesial-style U-Net (committed with the
    script and torch version that made it: dynamic H/W, logits, align_corners at opset 18)
    through `convert --int8 --onnx --input-size 64 --frame-size 80x90`: tiles at 64, and the
    frame imported again at 80x96 (a multiple of the graph's downsampling, 8); then `run` on
    the whole-frame artefact saves the label maps of onnxruntime's float masks of the source
    graph, padded and cropped the same way (what the parity report promised)."""
    _needs_onnx2tf()
    from edgeseg.convert.parity import label_maps
    from edgeseg.core.backend import CallableBackend
    from edgeseg.imageio import read_image, write_image
    from edgeseg.runtime.backends import open_model

    made = json.loads(REAL_EXPORT.with_suffix(".json").read_text())
    assert made["torch"] and made["family"] == "milesial"  # the provenance travels with it
    model = onnx.load(str(REAL_EXPORT))
    assert model.graph.input[0].type.tensor_type.shape.dim[2].dim_param  # dynamic H
    assert onnx_graph.size_multiple(model) == 2 ** made["depth"]
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["convert", str(REAL_EXPORT), "--int8", "--onnx", "--input-size", "64",
         "--activation", "logits", "--foreground-value", "0", "--calib", str(isbi / "images"),
         "--n", "30", "--frame-size", "80x90", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "milesial_tiny_parity.json").read_text())
    by = {(a["recipe"], tuple(a.get("frame_size") or ())): a for a in report["artefacts"]}
    assert by[("int8", ())]["agreement"]["dice"] >= 0.97
    whole = by[("int8", (80, 90))]
    assert whole["passed"] and whole["agreement"]["dice"] >= 0.97, whole
    assert by[("onnx", (80, 90))]["agreement"]["dice"] > 0.999
    assert any("imported again" in n for n in report["import_notes"])
    artefact = out / "milesial_tiny_int8_80x90.tflite"
    opened = open_model(artefact, backend="litert")
    assert opened.backend.input.shape == (1, 80, 96, 1)
    assert opened.meta.frame_size == (80, 90)

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    frames = [read_image(p)[100:180, 200:290] for p in sorted((isbi / "images").iterdir())[:3]]
    for i, frame in enumerate(frames):
        write_image(frames_dir / f"{i}.png", frame)
    masks = tmp_path / "masks"
    result = runner.invoke(
        app, ["run", str(artefact), "--source", str(frames_dir), "--headless",
              "--save-masks", str(masks)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    got = [read_image(p) != 0 for p in sorted(masks.iterdir())]
    sess = ort.InferenceSession(str(REAL_EXPORT), providers=["CPUExecutionProvider"])

    def reference(tiles: np.ndarray) -> np.ndarray:
        outs = [sess.run(None, {"input": t.transpose(2, 0, 1)[None]})[0] for t in tiles]
        return 1 / (1 + np.exp(-np.concatenate(outs).transpose(0, 2, 3, 1)))

    want = [w != 0 for w in label_maps(frames, CallableBackend(reference, opened.meta),
                                       opened.meta)]  # fmt: skip
    assert [g.shape for g in got] == [(80, 90)] * 3
    inter = sum(int((g & w).sum()) for g, w in zip(got, want, strict=True))
    total = sum(int(g.sum() + w.sum()) for g, w in zip(got, want, strict=True))
    assert 2 * inter / total >= 0.97


# --------------------------------------------------------------------------------------------
# --normalization imagenet | mean=…,std=… (PyTorch models)


def test_normalization_meanstd_flags_and_preprocessing() -> None:
    from edgeseg.core.metadata import (
        IMAGENET_MEAN,
        ModelMetadata,
        apply_flags,
        parse_normalization,
    )
    from edgeseg.core.preprocess import prepare

    meta = apply_flags(None, (1, 8, 8, 3), (1, 8, 8, 2), normalization="imagenet")
    assert meta.normalization == "meanstd" and meta.mean == IMAGENET_MEAN
    frame = np.random.default_rng(8).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    want = (frame / np.float32(255) - np.array(IMAGENET_MEAN, np.float32)) / np.array(
        (0.229, 0.224, 0.225), np.float32
    )
    np.testing.assert_allclose(prepare(frame, meta), want, rtol=1e-5, atol=1e-5)
    again = ModelMetadata.from_json(meta.to_json())
    assert again == meta
    gray = apply_flags(None, (1, 8, 8, 1), (1, 8, 8, 1), normalization="mean=0.5,std=0.25")
    assert (gray.mean, gray.std) == ((0.5,), (0.25,))
    x = prepare(np.full((8, 8), 255, np.uint8), gray)
    np.testing.assert_allclose(x, 2.0)
    # older readers refuse unknown keys: unset mean/std stay out of the JSON
    assert "mean" not in ModelMetadata(input_size=(8, 8)).to_dict()
    for bad in ("mean=0.5", "mean=a,std=1", "zscore"):
        with pytest.raises(DataError, match="--normalization"):
            parse_normalization(bad)
    with pytest.raises(ModelError, match="one per channel"):
        apply_flags(None, (1, 8, 8, 1), (1, 8, 8, 1), normalization="imagenet")


def test_sidecar_gives_an_onnx_model_its_metadata(tmp_path: Path) -> None:
    """``<model>.edgeseg.json`` beside the ONNX (the format `train` writes) is read."""
    from edgeseg.core.metadata import ModelMetadata, read_sidecar, write_sidecar

    path = tmp_path / "unet.onnx"
    unet_onnx(path, channels=3)
    meta = ModelMetadata(
        input_size=(32, 32), channels=3, channel_order="RGB", normalization="meanstd",
        mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
    )  # fmt: skip
    write_sidecar(meta, path)
    assert (tmp_path / "unet.edgeseg.json").is_file()
    assert read_sidecar(path) == meta


def test_pytorch_file_without_torch_says_how_to_export(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed: the file would be exported")
    model = tmp_path / "unet.pt2"
    model.write_bytes(b"PK\x03\x04 not really a program")
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(calib / "a.png"), np.zeros((40, 40), np.uint8))
    cv2.imwrite(str(calib / "b.png"), np.zeros((40, 40), np.uint8))
    result = runner.invoke(
        app, ["convert", str(model), "--fp16", "--calib", str(calib), "--out", str(tmp_path / "o")]
    )
    one_line_error(result, "torch is not installed", "torch.onnx.export", "opset_version=17")


# --------------------------------------------------------------------------------------------
# run / eval / bench take the source ONNX itself (NCHW, logits, dynamic H/W)


def test_source_onnx_runs_on_onnxruntime_and_openvino(isbi: Path, tmp_path: Path) -> None:
    """A PyTorch-style ONNX (NCHW, logits, dynamic H/W) with a sidecar giving the tile size is
    opened by both ONNX runtimes as its NHWC-probabilities copy: the label maps equal those of
    onnxruntime on the source graph with the sigmoid applied by numpy."""
    from edgeseg.convert.parity import label_maps
    from edgeseg.core.backend import CallableBackend
    from edgeseg.core.metadata import ModelMetadata, write_sidecar
    from edgeseg.imageio import read_image
    from edgeseg.runtime.backends import open_model

    path = tmp_path / "src.onnx"
    model = unet_onnx(path, size=None, base=4, depth=2, up="align_corners")
    meta = ModelMetadata(input_size=(64, 64), normalization="percentile", foreground_value=0)
    write_sidecar(meta, path)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def reference(tiles: np.ndarray) -> np.ndarray:
        out = [sess.run(None, {"input": t.transpose(2, 0, 1)[None]})[0] for t in tiles]
        return 1 / (1 + np.exp(-np.concatenate(out).transpose(0, 2, 3, 1)))

    frames = [read_image(p)[:150, :170] for p in sorted((isbi / "images").iterdir())[:2]]
    want = label_maps(frames, CallableBackend(reference, meta), meta)
    runtimes = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        runtimes.append("openvino")
    except ImportError:
        pass
    for runtime in runtimes:
        opened = open_model(path, backend=runtime)
        assert opened.meta == meta
        got = label_maps(frames, opened.backend, opened.meta)
        agree = np.mean([np.mean(a == b) for a, b in zip(got, want, strict=True)])
        assert agree > 0.999, (runtime, agree)
    # bench describes (and measures) what open_backend runs, under the source's name
    from edgeseg.bench.latency import model_info

    info = model_info(path)
    assert info.name == "src" and info.input_shape == (1, 64, 64, 1) and info.has_metadata
    # no sidecar: a dynamic model has no tile size, said in one line
    bare = tmp_path / "bare.onnx"
    unet_onnx(bare, size=None)
    result = runner.invoke(
        app, ["eval", str(bare), "--data", str(isbi), "--backend", "onnxruntime"]
    )
    one_line_error(result, "takes any image size", "bare.edgeseg.json")


def test_calibration_set_of_other_mean_std_is_refused(tmp_path: Path) -> None:
    from edgeseg.convert.calibration import build_calibration
    from edgeseg.core.metadata import apply_flags

    cv2 = pytest.importorskip("cv2")
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(9)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    meta = apply_flags(None, (1, 32, 32, 3), (1, 32, 32, 1), normalization="imagenet")
    calib, _ = build_calibration(folder, meta, 4)
    calib.check_fits(meta)
    other = meta.with_updates(std=(0.5, 0.5, 0.5))
    with pytest.raises((DataError, ModelError), match="std"):
        calib.check_fits(other)


def test_shape_arithmetic_of_a_dynamic_export_folds_once_the_size_is_fixed() -> None:
    """MONAI's BasicUNet exported with dynamic H/W pads each skip to the upsampled size
    through Shape -> ConstantOfShape -> ...: allowed before the size is fixed, gone after
    fix_input + onnxsim (a real export failed on this before), and still named when it
    does not fold."""
    pytest.importorskip("onnxsim")
    h = onnx.helper
    nodes = [
        h.make_node("Shape", ["input"], ["shape"]),
        h.make_node("ConstantOfShape", ["shape"], ["zeros"],
                    value=onnx.numpy_helper.from_array(np.zeros(1, np.float32))),
        h.make_node("Add", ["input", "zeros"], ["sum"]),
        h.make_node("Conv", ["sum", "w"], ["logits"], pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    graph = h.make_graph(
        nodes, "g",
        [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, "H", "W"])],
        [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 1, "H", "W"])],
        [onnx.numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")],
    )  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(ModelError, match=r"ConstantOfShape \(node"):
        onnx_graph.check_ops(model)  # a size-less graph checked as if folded: named
    onnx_graph.check_ops(model, folded=False)
    fixed = onnx_graph.fix_input(model, (32, 32))
    simplified, note = onnx_graph.simplify(fixed)
    assert note == "simplified by onnxsim"
    assert "ConstantOfShape" not in {n.op_type for n in simplified.graph.node}
    onnx_graph.check_ops(simplified)
    x = np.random.default_rng(3).normal(size=(1, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_run(simplified, x), _run(model, x), atol=1e-6)
