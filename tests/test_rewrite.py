"""Graph rewrites before conversion: up-convolutions as 1x1 conv + depth-to-space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import DataError, ModelError

pytest.importorskip("keras")


def _randomize(model) -> None:
    """Non-zero biases and batch-norm statistics, so a wrong rearrangement shows. Vectors
    (biases, gammas, means, variances) are drawn from [0.5, 1.5], which keeps variances valid."""
    rng = np.random.default_rng(1)
    model.set_weights(
        [(rng.uniform(0.5, 1.5, w.shape) if w.ndim == 1 else rng.normal(0, 0.3, w.shape))
         .astype(np.float32) for w in model.get_weights()]
    )  # fmt: skip


def _up_model(kernel: int, strides: int, padding: str = "same", nested: bool = False):
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c0")(inp)
    up = keras.layers.Conv2DTranspose(
        5, kernel, strides=strides, padding=padding, activation="relu", name="up"
    )
    x = up(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, use_bias=False, name="up_nobias")(x)
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(x))
    if nested:
        outer_in = keras.Input((8, 8, 3))
        model = keras.Model(outer_in, model(outer_in), name="outer")
    _randomize(model)
    return model


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_non_overlapping_up_convolutions_become_depth_to_space_exactly(padding: str) -> None:
    from edgeseg.convert.rewrite import rewrite_transpose_conv

    model = _up_model(2, 2, padding)
    x = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    new, names = rewrite_transpose_conv(model, x)
    assert names == ("up", "up_nobias")
    np.testing.assert_allclose(np.asarray(new(x)), np.asarray(model(x)), atol=1e-6)
    assert new.output_shape == model.output_shape == (None, 32, 32, 1)
    # The original model is untouched.
    assert [type(layer).__name__ for layer in model.layers].count("Conv2DTranspose") == 2


def test_overlapping_up_convolution_is_kept_and_nested_models_are_visited() -> None:
    from edgeseg.convert.rewrite import rewrite_transpose_conv

    model = _up_model(3, 2, nested=True)  # 3x3 stride 2 overlaps; the 2x2 one does not
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    new, names = rewrite_transpose_conv(model, x)
    assert names == ("up_nobias",)
    np.testing.assert_allclose(np.asarray(new(x)), np.asarray(model(x)), atol=1e-6)


def test_a_rewrite_that_changes_the_output_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeseg.convert import rewrite

    real = rewrite._as_depth_to_space

    def wrong(layer):
        new = real(layer)
        new.set_weights([w[..., ::-1].copy() for w in new.get_weights()])  # scrambled channels
        return new

    monkeypatch.setattr(rewrite, "_as_depth_to_space", wrong)
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    with pytest.raises(ModelError, match="changed the model's output"):
        rewrite.rewrite_transpose_conv(_up_model(2, 2), x)


def test_converted_unet_has_depth_to_space_and_the_keras_outputs(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.metadata import infer_metadata
    from edgeseg.core.tflite_file import op_histogram
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig, build_unet

    path = tmp_path / "u.keras"
    unet = build_unet(UNetConfig((32, 32), base_filters=4, depth=2, decoder="transpose"))
    _randomize(unet)
    unet.save(path)
    loaded = load_model(path)
    meta = infer_metadata(loaded.input_shape, loaded.output_shape)
    tiles = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)

    fp32 = convert(loaded, meta, load_recipe("fp32"), tiles)
    assert len(fp32.depth_to_space) == 2
    ops = op_histogram(fp32.tflite)
    assert ops["DEPTH_TO_SPACE"] == 2 and "TRANSPOSE_CONV" not in ops
    interp = Interpreter(model_content=fp32.tflite)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], tiles[:1])
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(loaded.predict(tiles[:1])), atol=1e-5)

    int8 = convert(loaded, meta, load_recipe("int8"), tiles)
    assert op_histogram(int8.tflite)["DEPTH_TO_SPACE"] == 2
    # The Edge TPU has no DEPTH_TO_SPACE: its recipe keeps the up-convolutions.
    tpu = convert(loaded, meta, load_recipe("int8-edgetpu"), tiles)
    assert tpu.depth_to_space == () and op_histogram(tpu.tflite)["TRANSPOSE_CONV"] == 2


def test_recipe_cannot_ask_depth_to_space_for_the_edge_tpu(tmp_path: Path) -> None:
    from edgeseg.convert.recipes import load_recipe

    bad = tmp_path / "tpu.toml"
    bad.write_text('name = "x"\nprecision = "int8"\nio = "uint8"\nedgetpu = true\n'
                   "depth_to_space = true\n")  # fmt: skip
    with pytest.raises(DataError, match="no DEPTH_TO_SPACE"):
        load_recipe(str(bad))


def test_float_ends_keep_the_first_convolution_and_the_head_float(tmp_path: Path) -> None:
    """int8-cpu: the int8 model still takes and returns int8, with float ops at both ends."""
    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import _names_layer, convert, float_end_layers
    from edgeseg.core.metadata import infer_metadata
    from edgeseg.core.tflite_file import op_histogram, tensor_summary
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig, build_unet

    path = tmp_path / "u.keras"
    unet = build_unet(UNetConfig((32, 32), base_filters=4, depth=2, decoder="transpose"))
    assert float_end_layers(unet) == (("enc0_conv1", "head"), "")
    unet.save(path)
    loaded = load_model(path)
    meta = infer_metadata(loaded.input_shape, loaded.output_shape)
    tiles = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    conv = convert(loaded, meta, load_recipe("int8-cpu"), tiles)
    for layer in ("enc0_conv1", "head"):
        assert any(_names_layer(tensor, layer) for tensor in conv.kept_float)
    ops = op_histogram(conv.tflite)
    assert ops["DEQUANTIZE"] == 2 and ops["QUANTIZE"] == 2 and ops["DEPTH_TO_SPACE"] == 2
    summary = tensor_summary(conv.tflite)
    assert summary.inputs[0].dtype == "int8" and summary.outputs[0].dtype == "int8"
    full = convert(loaded, meta, load_recipe("int8"), tiles)
    assert "DEQUANTIZE" not in op_histogram(full.tflite) and full.kept_float == ()


def test_float_ends_walk_through_weightless_layers_and_say_when_they_cannot() -> None:
    import keras

    from edgeseg.convert.tflite import float_end_layers

    inp = keras.Input((16, 16, 1))
    x = keras.layers.Rescaling(1 / 255, name="scale")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", name="first")(x)
    x = keras.layers.Conv2D(2, 1, name="last")(x)
    out = keras.layers.Softmax(name="softmax")(x)
    assert float_end_layers(keras.Model(inp, out)) == (("first", "last"), "")
    dense = keras.Model(inp, keras.layers.Dense(2, name="dense")(inp))
    assert float_end_layers(dense) == ((), "no convolution next to the input or the output")


def test_rewrites_leave_the_original_graph_walkable() -> None:
    """After a rewrite (as the fp32 reference does before every int8 recipe), equalization and
    the float ends still see each layer of the original model used once."""
    from edgeseg.convert.equalize import Graph
    from edgeseg.convert.rewrite import rewrite_transpose_conv, rewrite_upsampling
    from edgeseg.convert.tflite import float_end_layers
    from edgeseg.model.unet import UNetConfig, build_unet

    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    cases = (("transpose", rewrite_transpose_conv), ("upsample", rewrite_upsampling))
    for decoder, rewrite in cases:
        unet = build_unet(UNetConfig((32, 32), base_filters=4, depth=2, decoder=decoder))
        _randomize(unet)
        new, names = rewrite(unet, x)
        assert names and Graph(unet).problem is None
        assert float_end_layers(unet)[0] == ("enc0_conv1", "head")
        np.testing.assert_allclose(np.asarray(new(x)), np.asarray(unet(x)), atol=1e-5)
