"""`edgeseg convert`: fp32/fp16/int8 artefacts, the skip-range trap, parity reports, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, write_pairs
from typer.testing import CliRunner

from edgeseg.cli.main import app

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")
runner = CliRunner()


def _make_skips_tiny(model, factor: float = 0.02) -> None:
    """Shrink every encoder skip of an edgeseg U-Net by ``factor`` without changing its output.

    This is the situation of a U-Net trained without batch norm whose skip activations are far
    smaller than the decoder's: the float model is the same, int8 quantization is not.
    """
    depth = sum(1 for layer in model.layers if layer.name.endswith("_concat"))
    for level in range(depth):
        producer = model.get_layer(f"enc{level}_conv2")
        kernel, bias = producer.get_weights()
        producer.set_weights([kernel * factor, bias * factor])
        n = kernel.shape[-1]
        nxt = f"enc{level + 1}_conv1" if level + 1 < depth else "bottleneck_conv1"
        for consumer in (nxt, f"dec{level}_conv1"):  # skips come first in each concatenation
            layer = model.get_layer(consumer)
            w = layer.get_weights()
            w[0][:, :, :n, :] /= factor
            layer.set_weights(w)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeseg.samples import SynthConfig, write_dataset

    return write_dataset(
        tmp_path_factory.mktemp("synth") / "data", 24, SynthConfig(size=(96, 96)), seed=3
    )


@pytest.fixture(scope="session")
def trap_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small no-batch-norm U-Net trained on synthetic nuclei, with tiny skip activations."""
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig
    from edgeseg.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("trap")
    cfg = TrainConfig(
        out=root / "trained.keras",
        unet=UNetConfig(input_size=(64, 64), base_filters=8, depth=3, batch_norm=False),
        epochs=3,
        steps_per_epoch=25,
        synthetic_images=48,
        seed=1,
    )
    result = train(cfg)
    assert result.val_dice > 0.7, "the fixture model did not learn"
    model = load_model(result.model_path).keras_model
    before = np.asarray(model(np.zeros((1, 64, 64, 1), np.float32)))
    _make_skips_tiny(model)
    after = np.asarray(model(np.zeros((1, 64, 64, 1), np.float32)))
    assert np.allclose(before, after, atol=1e-4)
    path = root / "trap.keras"
    model.save(path)
    (root / "trap.edgeseg.json").write_text((root / "trained.edgeseg.json").read_text())
    return path


def test_equalize_balances_skips_and_keeps_the_float_model(trap_model: Path) -> None:
    from edgeseg.convert.equalize import equalize
    from edgeseg.model.loading import load_model

    model = load_model(trap_model).keras_model
    tiles = np.random.default_rng(0).random((8, 64, 64, 1), dtype=np.float32)
    result = equalize(model, tiles)
    assert {s.layer for s in result.scalings} == {"enc0_conv2", "enc1_conv2", "enc2_conv2"}
    assert all(s.factor > 10 for s in result.scalings)
    assert result.max_abs_diff <= 1e-4
    # The original model is untouched.
    assert np.abs(model.get_layer("enc0_conv2").get_weights()[0]).max() < 0.1


def test_convert_fp32_fp16_int8_with_parity(trap_model: Path, synth_data: Path, tmp_path: Path):
    from edgeseg.core.metadata import read_sidecar
    from edgeseg.core.tflite_file import read_embedded, read_metadata

    out = tmp_path / "build"
    result = runner.invoke(
        app,
        ["convert", str(trap_model), "--recipe", "fp32", "--fp16", "--int8", "--onnx",
         "--calib", str(synth_data / "images"), "--val", str(synth_data), "--n", "40",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for recipe in ("fp32", "fp16", "int8"):
        path = out / f"trap_{recipe}.tflite"
        assert path.is_file()
        assert read_metadata(path) == read_sidecar(trap_model)
        extra = read_embedded(path)
        assert extra["recipe"]["name"] == recipe and len(extra["source_sha256"]) == 64
    report = json.loads((out / "trap_parity.json").read_text())
    assert (out / "trap_parity.md").read_text().startswith("# Parity report")
    by = {a["recipe"]: a for a in report["artefacts"]}
    assert by["fp32"]["agreement"]["dice"] > 0.999
    assert by["fp16"]["agreement"]["dice"] > 0.99
    assert 0.4 < by["fp16"]["size_ratio"] < 0.6
    assert by["int8"]["size_ratio"] < 0.35
    assert by["int8"]["input_type"] == "int8"
    # The skip-range trap: equalized int8 keeps the float model's masks and its Dice.
    assert by["int8"]["equalization"]["scalings"]
    assert by["int8"]["agreement"]["dice"] >= 0.95
    assert abs(by["int8"]["truth_dice_change"]) <= 0.02
    assert report["float_truth"]["dice"] > 0.7
    # ONNX for the Jetson path: same report, matches the float model, metadata inside.
    from edgeseg.runtime.backends import OnnxBackend

    assert by["onnx"]["agreement"]["dice"] > 0.999 and "Conv" in by["onnx"]["ops"]
    assert OnnxBackend(out / "trap.onnx").metadata() == read_sidecar(trap_model)
    # --onnx --int8: static int8 QDQ ONNX beside it, equalized first like the int8 TFLite.
    assert (
        by["onnx-int8"]["agreement"]["dice"] >= 0.95 and "QuantizeLinear" in by["onnx-int8"]["ops"]
    )
    assert OnnxBackend(out / "trap_int8.onnx").metadata() == read_sidecar(trap_model)
    # The artefact is evaluated like any model, from its embedded metadata alone; on the
    # runtime the parity report measured (auto may pick another whose label maps agree to
    # Dice 0.999, not to the 1e-6 compared here).
    scores = tmp_path / "int8_scores.json"
    args = ["eval", str(out / "trap_int8.tflite"), "--data", str(synth_data)]
    result = runner.invoke(app, [*args, "--json", str(scores), "--backend", "litert"])
    assert result.exit_code == 0, result.output
    pooled = json.loads(scores.read_text())["classes"]["foreground"]["pooled"]
    assert pooled["dice"] == pytest.approx(by["int8"]["truth"]["dice"], abs=1e-6)


def test_int8_without_equalization_fails_the_gate_and_keeps_the_report(
    trap_model: Path, synth_data: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "noeq.toml"
    recipe.write_text('name = "noeq"\nprecision = "int8"\nio = "int8"\nmin_dice_agreement = 0.95\n')
    out = tmp_path / "build"
    result = runner.invoke(
        app,
        ["convert", str(trap_model), "--recipe", str(recipe), "--calib",
         str(synth_data / "images"), "--n", "20", "--out", str(out)],
    )  # fmt: skip
    line = one_line_error(result, "noeq", "below the gate", "calibration")
    assert "int8-legacy" in line
    assert (out / "trap_noeq.rejected.tflite").is_file()
    assert not (out / "trap_noeq.tflite").exists()
    report = json.loads((out / "trap_parity.json").read_text())
    art = report["artefacts"][0]
    assert art["passed"] is False and art["agreement"]["dice"] < 0.5
    assert report["heldout"]["with_truth"] is False  # held out of --calib, no masks


@pytest.mark.parametrize(
    "config",
    [
        {"input_size": (128, 128), "decoder": "transpose", "batch_norm": True},
        {"input_size": (160, 160), "decoder": "upsample", "dropout": 0.3, "channels": 3,
         "num_classes": 3},
        {"input_size": (44, 44), "depth": 1, "padding": "valid"},
        {"input_size": (512, 512), "depth": 4, "base_filters": 2},
    ],
    ids=["transpose-bn-128", "upsample-dropout-rgb-softmax-160", "valid-44", "512"],
)  # fmt: skip
def test_unet_shapes_convert(config: dict, tmp_path: Path) -> None:
    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.metadata import infer_metadata
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig, build_unet
    from edgeseg.runtime.backends import load_backend

    cfg = UNetConfig(**{"base_filters": 4, "depth": 2, **config})
    path = tmp_path / "m.keras"
    build_unet(cfg).save(path)
    loaded = load_model(path)
    meta = infer_metadata(loaded.input_shape, loaded.output_shape)
    assert meta.output_border == cfg.output_border
    rng = np.random.default_rng(0)
    tiles = rng.random((4, *cfg.input_size, cfg.channels), dtype=np.float32)
    expected = loaded.predict(tiles[:1])
    for name in ("fp32", "int8"):
        conv = convert(loaded, meta, load_recipe(name), tiles)
        tfl = tmp_path / f"m_{name}.tflite"
        tfl.write_bytes(conv.tflite)
        backend = load_backend(tfl)
        assert backend.input.shape == (1, *cfg.input_size, cfg.channels)
        got = backend.predict(tiles[:1])
        assert got.shape == expected.shape
        if name == "fp32":
            np.testing.assert_allclose(got, expected, atol=1e-4)


def test_savedmodel_converts(tmp_path: Path, synth_data: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from edgeseg.model.unet import UNetConfig, build_unet

    model = build_unet(UNetConfig(input_size=(32, 32), base_filters=4, depth=2))
    model.export(str(tmp_path / "saved"), verbose=False)
    del tf
    out = tmp_path / "build"
    result = runner.invoke(
        app,
        ["convert", str(tmp_path / "saved"), "--int8", "--calib", str(synth_data / "images"),
         "--n", "8", "--min-dice-agreement", "0", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "saved_parity.json").read_text())
    assert "SavedModel" in report["artefacts"][0]["equalization"]["skipped"][0]
    assert (out / "saved_int8.tflite").is_file()


# ---- bad input --------------------------------------------------------------------------------


def _convert(model: Path, out: Path, *args: str):
    return runner.invoke(app, ["convert", str(model), "--out", str(out), *args])


def test_bad_calibration_sources(tiny_unet: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    one_line_error(_convert(tiny_unet, out, "--int8", "--calib", str(tmp_path / "empty")))
    one_line_error(
        _convert(tiny_unet, out, "--int8", "--calib", str(tmp_path / "nope")), "not found"
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0.png").write_bytes(b"garbage")
    (bad / "1.png").write_bytes(b"garbage")
    one_line_error(_convert(tiny_unet, out, "--int8", "--calib", str(bad)), "cannot read", ".png")
    one_line_error(_convert(tiny_unet, out, "--int8"), "--calib")
    one_line_error(_convert(tiny_unet, out, "--calib", str(bad)), "--fp16")


def test_two_channel_calibration_for_rgb_model(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    from edgeseg.model.unet import UNetConfig, build_unet

    model = tmp_path / "rgb.keras"
    build_unet(UNetConfig(input_size=(32, 32), channels=3, base_filters=4, depth=2)).save(model)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        tifffile.imwrite(
            calib / f"{i}.tif", np.zeros((32, 32, 2), np.uint16), planarconfig="contig"
        )
    one_line_error(_convert(model, tmp_path / "out", "--int8", "--calib", str(calib)), "2-channel")


def test_not_an_image_to_mask_model(tmp_path: Path, synth_data: Path) -> None:
    inp = keras.Input((32, 32, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    path = tmp_path / "classifier.keras"
    keras.Model(inp, keras.layers.Dense(3)(x)).save(path)
    one_line_error(
        _convert(path, tmp_path / "out", "--fp16", "--calib", str(synth_data / "images")),
        "not an image-to-mask model",
    )


def test_unwritable_output_and_prebuilt_set_without_val(tiny_unet: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = write_pairs(tmp_path / "d", n=3, size=(32, 32))
    one_line_error(
        _convert(tiny_unet, blocker / "out", "--fp16", "--calib", str(data / "images")),
        "cannot write",
    )
    one_line_error(
        _convert(tiny_unet, blocker, "--fp16", "--calib", str(data / "images")), "is a file"
    )
    fake_set = tmp_path / "set.npz"
    fake_set.write_bytes(b"x")
    one_line_error(_convert(tiny_unet, tmp_path / "o", "--int8", "--calib", str(fake_set)), "--val")
    one_line_error(_convert(tiny_unet, tmp_path / "o", "--recipe", "int3"), "unknown recipe")
