"""Edge architectures (`--arch separable|attention`, `--width`): what they are made of, that the
safe loader takes them, that they convert to full int8 and pass the Edge TPU preflight whole,
and that they rebuild at a whole-frame size with the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.errors import ModelError
from edgeseg.model.unet import UNetConfig

pytest.importorskip("keras")
runner = CliRunner()


def _kinds(model) -> dict[str, int]:
    out: dict[str, int] = {}
    for layer in model.layers:
        out[type(layer).__name__] = out.get(type(layer).__name__, 0) + 1
    return out


def test_arch_and_width_validated_and_recorded() -> None:
    with pytest.raises(ModelError, match="arch must be one of"):
        UNetConfig(arch="mobilenet")
    with pytest.raises(ModelError, match="width must be"):
        UNetConfig(width=0)
    cfg = UNetConfig(base_filters=16, width=0.5, arch="attention")
    assert cfg.top_filters == 8 and UNetConfig(base_filters=3, width=0.1).top_filters == 1
    d = cfg.to_dict()
    assert d["arch"] == "attention" and d["width"] == 0.5


def test_layers_of_each_architecture() -> None:
    from edgeseg.model.unet import build_unet

    plain = build_unet(UNetConfig((32, 32), base_filters=8, depth=2))
    sep = build_unet(UNetConfig((32, 32), base_filters=8, depth=2, arch="separable"))
    att = build_unet(UNetConfig((32, 32), base_filters=8, depth=2, arch="attention"))
    half = build_unet(UNetConfig((32, 32), base_filters=8, depth=2, width=0.5))
    k = _kinds(sep)
    # Two depthwise + pointwise pairs per block: 2 encoder levels, bottleneck, 2 decoders.
    assert k["DepthwiseConv2D"] == 10 and "Lambda" not in k
    assert sep.count_params() < plain.count_params() / 3
    k = _kinds(att)
    assert k["Multiply"] == 2 and k["Add"] == 2  # one gate per skip
    psi = att.get_layer("dec0_gate_psi")
    assert psi.filters == 1 and psi.get_config()["activation"] == "sigmoid"
    assert half.get_layer("enc0_conv1").filters == 4
    assert half.get_layer("bottleneck_conv1").filters == 16
    # The gate really weights the skip: a psi that says "closed" silences it.
    import keras

    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    w, b = psi.get_weights()
    probe = keras.Model(att.inputs, att.get_layer("dec0_gate").output)
    assert float(np.abs(np.asarray(probe(x))).max()) > 1e-3
    psi.set_weights([np.zeros_like(w), np.full_like(b, -30.0)])

    probe = keras.Model(att.inputs, att.get_layer("dec0_gate").output)
    assert float(np.abs(np.asarray(probe(x))).max()) < 1e-6


@pytest.fixture(scope="module")
def edge_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Separable and attention U-Nets (upsampling decoder, 32 px, half width) saved as .keras
    and converted int8-edgetpu and int8."""
    import keras

    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.metadata import infer_metadata
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import build_unet

    root = tmp_path_factory.mktemp("arch")
    out = {}
    for arch in ("separable", "attention"):
        keras.utils.set_random_seed(0)
        cfg = UNetConfig((32, 32), base_filters=8, width=0.5, depth=2, arch=arch,
                         decoder="upsample")  # fmt: skip
        path = root / f"{arch}.keras"
        build_unet(cfg).save(path)
        loaded = load_model(path)  # the safe loader: no custom or Lambda layers
        meta = infer_metadata(loaded.input_shape, loaded.output_shape)
        tiles = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
        tpu = convert(loaded, meta, load_recipe("int8-edgetpu"), tiles)
        cpu = convert(loaded, meta, load_recipe("int8"), tiles)
        out[arch] = {"path": path, "loaded": loaded, "tpu": tpu, "cpu": cpu, "tiles": tiles}
    return out


@pytest.mark.parametrize("arch", ["separable", "attention"])
def test_full_int8_and_whole_on_the_edge_tpu(edge_models: dict, arch: str) -> None:
    from edgeseg.convert.edgetpu import preflight
    from edgeseg.core.tflite_file import op_histogram

    m = edge_models[arch]
    pre = preflight(m["tpu"].tflite)
    assert pre.mapped == pre.total and pre.first_cpu is None, pre.to_markdown()
    ops = op_histogram(m["tpu"].tflite)
    if arch == "separable":
        assert ops["DEPTHWISE_CONV_2D"] == 10
    else:  # the gates: ADD, LOGISTIC (sigmoid), MUL (broadcast over the skip's channels)
        assert ops["MUL"] == 2 and ops["ADD"] == 2 and ops["LOGISTIC"] == 3
    assert pre.input_types == ("uint8",) and pre.output_types == ("uint8",)
    # The CPU int8 artefact is full-integer too: every activation tensor int8.
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=m["cpu"].tflite)
    interp.allocate_tensors()
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    assert "FLOAT" not in str({d["dtype"] for d in interp.get_tensor_details()}).upper()


@pytest.mark.parametrize("arch", ["separable", "attention"])
def test_rebuilds_and_converts_at_a_frame_size(edge_models: dict, arch: str) -> None:
    from dataclasses import replace

    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import FrameTarget, convert
    from edgeseg.model.reshape import downsampling, rebuild_keras

    m = edge_models[arch]
    model = m["loaded"].keras_model
    assert downsampling(model) == (4, 4)
    big = rebuild_keras(model, (64, 96))
    assert tuple(big.outputs[0].shape) == (1, 64, 96, 1)
    for a, b in zip(model.get_weights(), big.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The whole-frame int8 artefact, as `convert --frame-size 64x96` builds it.
    from edgeseg.core.metadata import infer_metadata

    meta = infer_metadata(m["loaded"].input_shape, m["loaded"].output_shape)
    frame = FrameTarget(replace(meta, input_size=(64, 96)), lambda k: rebuild_keras(k, (64, 96)))
    conv = convert(m["loaded"], meta, load_recipe("int8"), m["tiles"], frame=frame)
    interp = Interpreter(model_content=conv.tflite)
    interp.allocate_tensors()
    assert list(interp.get_input_details()[0]["shape"]) == [1, 64, 96, 1]
    x = np.random.default_rng(1).integers(-128, 127, (1, 64, 96, 1), dtype=np.int8)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    assert interp.get_tensor(interp.get_output_details()[0]["index"]).shape == (1, 64, 96, 1)


def test_train_cli_arch_width_and_bad_arch(tmp_path: Path) -> None:
    model = tmp_path / "s.keras"
    result = runner.invoke(
        app,
        ["train", "--data", "synthetic", "--synthetic-images", "4", "--size", "32",
         "--base-filters", "8", "--width", "0.5", "--depth", "2", "--arch", "separable",
         "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "s.edgeseg.json").read_text())
    unet = meta["provenance"]["unet"]
    assert unet["arch"] == "separable" and unet["width"] == 0.5
    from edgeseg.model.loading import load_model

    loaded = load_model(model)
    assert "DepthwiseConv2D" in _kinds(loaded.keras_model)
    assert loaded.keras_model.get_layer("enc0_pw1").filters == 4
    bad = runner.invoke(app, ["train", "--arch", "mobile", "--out", str(tmp_path / "b.keras")])
    one_line_error(bad, "arch must be one of")
    assert not (tmp_path / "b.keras").exists()
