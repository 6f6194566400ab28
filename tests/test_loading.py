"""Tests for edgeseg.model.loading: every supported format, the Lambda guard, bad files.

Models are tiny (32x32 inputs, 4 filters) and built in module-scoped fixtures under tmp paths.
Legacy Keras 2 files are written by tf_keras in a subprocess, so Keras 2 and Keras 3 never
share a process (they register clashing global state) and the files are exactly what a
TF 2.x user would have on disk.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the convert extra (TensorFlow)")
keras = pytest.importorskip("keras", reason="needs the convert extra (Keras 3)")
pytest.importorskip("h5py", reason="needs the convert extra (h5py)")

from edgeseg.errors import DataError, ModelError  # noqa: E402
from edgeseg.model.loading import (  # noqa: E402
    LoadedModel,
    find_lambda_layers,
    find_tf_op_layers,
    load_model,
)

H = W = 32


def _tiny_unet(num_classes: int = 2, seed: int = 0) -> Any:
    """A 2-level U-Net: (N, 32, 32, 3) float32 -> (N, 32, 32, num_classes) softmax."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((H, W, 3), name="image")
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    down = keras.layers.MaxPooling2D()(c1)
    c2 = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(down)
    up = keras.layers.UpSampling2D()(c2)
    merged = keras.layers.Concatenate()([up, c1])
    out = keras.layers.Conv2D(num_classes, 1, activation="softmax")(merged)
    return keras.Model(inp, out)


def _images(n: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, H, W, 3), dtype=np.float32)


def _assert_one_line_model_error(path: Path | str, *, trust_model: bool = False) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path, trust_model=trust_model)
    message = str(info.value)
    assert message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unet_keras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    model = _tiny_unet()
    path = tmp_path_factory.mktemp("keras") / "unet.keras"
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def lambda_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .keras model whose Lambda sits inside a nested Sequential (tests the deep walk)."""
    inp = keras.Input((H, W, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    nested = keras.Sequential(
        [keras.Input((H, W, 4)), keras.layers.Lambda(lambda t: t * 2.0, name="double")],
        name="nested",
    )
    out = keras.layers.Conv2D(1, 1, activation="sigmoid")(nested(x))
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    keras.Model(inp, out).save(path)
    return path


# Writes the legacy Keras 2 files with tf_keras, the way a TF 2.x training script does.
_LEGACY_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import tensorflow as tf
    import tf_keras as k

    out = Path(sys.argv[1])
    k.utils.set_random_seed(0)


    def dice_coef(y_true, y_pred, smooth=1.0):
        y_true = k.backend.flatten(y_true)
        y_pred = k.backend.flatten(y_pred)
        inter = k.backend.sum(y_true * y_pred)
        return (2.0 * inter + smooth) / (k.backend.sum(y_true) + k.backend.sum(y_pred) + smooth)


    def dice_coef_loss(y_true, y_pred):
        return 1.0 - dice_coef(y_true, y_pred)


    class MyScale(k.layers.Layer):
        def call(self, x):
            return x * 3.0


    def unet(extra=None):
        inp = k.Input((32, 32, 3))
        c1 = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
        c2 = k.layers.Conv2D(4, 3, padding="same", activation="relu")(k.layers.MaxPooling2D()(c1))
        x = k.layers.Concatenate()([k.layers.UpSampling2D()(c2), c1])
        if extra is not None:
            x = extra(x)
        return k.Model(inp, k.layers.Conv2D(1, 1, activation="sigmoid")(x))


    x = np.load(out / "x.npy")
    y = (x[..., :1] > 0.5).astype("float32")

    model = unet()
    model.compile(optimizer="adam", loss=dice_coef_loss, metrics=[dice_coef])
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    model.save(out / "legacy.h5")
    np.save(out / "legacy_pred.npy", model.predict(x, verbose=0))

    unet(k.layers.Lambda(lambda t: t * 2.0, name="double")).save(out / "lambda.h5")
    unet(lambda t: t * 2.0 + tf.nn.relu(t)).save(out / "tfop.h5")
    unet(MyScale(name="scale")).save(out / "custom.h5")
    unet().save(out / "keras2.keras")
    """
)


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of legacy files written by tf_keras (Keras 2); skips without tf_keras."""
    if importlib.util.find_spec("tf_keras") is None:
        pytest.skip("tf_keras (Keras 2) is not installed; cannot write legacy .h5 files")
    out = tmp_path_factory.mktemp("legacy")
    np.save(out / "x.npy", _images())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _LEGACY_SCRIPT, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, f"tf_keras script failed:\n{proc.stderr[-3000:]}"
    return out


# --------------------------------------------------------------------------------------------
# Formats that load
# --------------------------------------------------------------------------------------------


def test_keras_file_loads_and_predicts_like_the_original(unet_keras: tuple[Path, Any]) -> None:
    path, original = unet_keras
    loaded = load_model(path)

    assert isinstance(loaded, LoadedModel)
    assert loaded.format == "keras"
    assert loaded.saved_model is None
    assert loaded.input_shape == (None, H, W, 3)
    assert loaded.output_shape == (None, H, W, 2)

    x = _images(5)
    y = loaded.predict(x, batch_size=2)  # 2 + 2 + 1: exercises the ragged last chunk
    assert y.shape == (5, H, W, 2)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, original(x, training=False).numpy(), atol=1e-6)
    np.testing.assert_allclose(loaded.predict(x, batch_size=8), y, atol=1e-6)


def test_upper_case_suffix_loads(unet_keras: tuple[Path, Any], tmp_path: Path) -> None:
    # Keras itself only recognises lower-case suffixes.
    upper = tmp_path / "UNET.KERAS"
    upper.write_bytes(unet_keras[0].read_bytes())
    assert load_model(upper).output_shape == (None, H, W, 2)


def test_legacy_h5_with_custom_loss_and_metric(legacy_dir: Path) -> None:
    loaded = load_model(legacy_dir / "legacy.h5")

    assert loaded.format == "h5"
    assert loaded.input_shape == (None, H, W, 3)
    assert loaded.output_shape == (None, H, W, 1)
    y = loaded.predict(np.load(legacy_dir / "x.npy"), batch_size=2)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.load(legacy_dir / "legacy_pred.npy"), atol=1e-5)


def test_savedmodel_from_export(unet_keras: tuple[Path, Any], tmp_path: Path) -> None:
    _, original = unet_keras
    export_dir = tmp_path / "exported"
    original.export(str(export_dir), verbose=False)

    loaded = load_model(export_dir)

    assert loaded.format == "savedmodel"
    assert loaded.keras_model is None
    assert loaded.saved_model is not None
    assert loaded.input_shape == (None, H, W, 3)
    assert loaded.output_shape == (None, H, W, 2)
    x = _images(3)
    y = loaded.predict(x, batch_size=2)
    assert y.shape == (3, H, W, 2)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, original(x, training=False).numpy(), atol=1e-5)
    # A path to the saved_model.pb inside is accepted too.
    assert load_model(export_dir / "saved_model.pb").format == "savedmodel"


class _TwoHeads(tf.Module):
    """Fixed batch of 2; outputs a rank-2 score (sorted first) and a rank-4 mask."""

    @tf.function(input_signature=[tf.TensorSpec((2, 8, 8, 3), tf.float32, name="pixels")])
    def serve(self, pixels: Any) -> dict[str, Any]:
        return {"a_score": tf.reduce_mean(pixels, axis=[1, 2]), "mask": pixels * 2.0}


def test_savedmodel_picks_rank4_output_and_pads_fixed_batch(tmp_path: Path) -> None:
    module = _TwoHeads()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})

    loaded = load_model(tmp_path)

    assert loaded.input_shape == (2, 8, 8, 3)
    assert loaded.output_shape == (2, 8, 8, 3)
    x = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    y = loaded.predict(x, batch_size=8)  # 3 images through a batch-2 signature
    np.testing.assert_allclose(y, x * 2.0, atol=1e-6)


def test_savedmodel_without_serving_default_lists_signatures(tmp_path: Path) -> None:
    module = _TwoHeads()
    tf.saved_model.save(module, str(tmp_path), signatures={"other": module.serve})
    message = _assert_one_line_model_error(tmp_path)
    assert "serving_default" in message
    assert "other" in message


def test_predict_rejects_bad_batches(unet_keras: tuple[Path, Any]) -> None:
    loaded = load_model(unet_keras[0])
    with pytest.raises(DataError, match="expects"):
        loaded.predict(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(DataError, match="float"):
        loaded.predict(np.zeros((1, H, W, 3), np.uint8))
    assert loaded.predict(np.zeros((0, H, W, 3), np.float32)).shape == (0, H, W, 2)


# --------------------------------------------------------------------------------------------
# Lambda guard and Keras 2 leftovers
# --------------------------------------------------------------------------------------------


def test_lambda_keras_refused_unless_trusted(lambda_keras: Path) -> None:
    message = _assert_one_line_model_error(lambda_keras)
    assert "Lambda" in message
    assert "--trust-model" in message
    assert "double" in message

    loaded = load_model(lambda_keras, trust_model=True)
    assert loaded.output_shape == (None, H, W, 1)
    assert loaded.predict(_images(2)).shape == (2, H, W, 1)


def test_lambda_legacy_h5_refused(legacy_dir: Path) -> None:
    message = _assert_one_line_model_error(legacy_dir / "lambda.h5")
    assert "Lambda" in message
    assert "--trust-model" in message


def test_tf_op_layers_explain_reexport(legacy_dir: Path) -> None:
    # Not a trust question: Keras 3 cannot rebuild TFOpLambda at all.
    message = _assert_one_line_model_error(legacy_dir / "tfop.h5", trust_model=True)
    assert "Keras 3 cannot load" in message
    assert ".export(" in message


def test_unknown_custom_layer_is_named(legacy_dir: Path) -> None:
    message = _assert_one_line_model_error(legacy_dir / "custom.h5")
    assert "MyScale" in message


def test_keras2_keras_archive_refused(legacy_dir: Path) -> None:
    message = _assert_one_line_model_error(legacy_dir / "keras2.keras")
    assert "Keras 2" in message


def test_find_lambda_layers_walks_nested_configs() -> None:
    config = {
        "class_name": "Functional",
        "config": {
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "in"}},
                {"class_name": "Lambda", "name": "top", "config": {"name": "top"}},
                {
                    "class_name": "Sequential",  # Keras 2 sequential layout: no top-level name
                    "config": {"layers": [{"class_name": "Lambda", "config": {"name": "deep"}}]},
                },
                {
                    "class_name": "TimeDistributed",
                    "config": {"layer": {"class_name": "Lambda", "config": {"name": "wrapped"}}},
                },
                {"class_name": "TFOpLambda", "config": {"name": "tf.math.multiply"}},
                {"class_name": "Lambda", "config": {"name": "top"}},  # duplicate name
            ]
        },
    }
    assert find_lambda_layers(config) == ["top", "deep", "wrapped"]
    assert find_tf_op_layers(config) == ["tf.math.multiply"]
    assert find_lambda_layers({"class_name": "Conv2D", "config": {}}) == []
    assert find_lambda_layers([]) == []


# --------------------------------------------------------------------------------------------
# Bad inputs: each a one-line ModelError
# --------------------------------------------------------------------------------------------


def test_missing_file() -> None:
    message = _assert_one_line_model_error("/nonexistent/model.keras")
    assert message == "model file not found: /nonexistent/model.keras"


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "model.txt"
    path.write_text("hello")
    message = _assert_one_line_model_error(path)
    assert ".keras" in message and ".h5" in message and "SavedModel" in message


def test_empty_keras_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.keras"
    path.touch()
    assert "not a valid .keras file" in _assert_one_line_model_error(path)


def test_random_bytes_h5(tmp_path: Path) -> None:
    path = tmp_path / "random.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "HDF5" in _assert_one_line_model_error(path)


def test_truncated_keras(unet_keras: tuple[Path, Any], tmp_path: Path) -> None:
    data = unet_keras[0].read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    assert "not a valid .keras file" in _assert_one_line_model_error(path)


def test_keras_zip_without_config(tmp_path: Path) -> None:
    path = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
    assert "config.json" in _assert_one_line_model_error(path)


def test_keras_archive_renamed_to_h5(unet_keras: tuple[Path, Any], tmp_path: Path) -> None:
    path = tmp_path / "actually_keras.h5"
    path.write_bytes(unet_keras[0].read_bytes())
    assert ".keras" in _assert_one_line_model_error(path)


def test_weights_only_h5(unet_keras: tuple[Path, Any], tmp_path: Path) -> None:
    path = tmp_path / "unet.weights.h5"  # Keras 3 insists on this name; the suffix is .h5
    unet_keras[1].save_weights(path)
    assert "weights only" in _assert_one_line_model_error(path)


def test_directory_without_saved_model_pb(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    assert "saved_model.pb" in _assert_one_line_model_error(tmp_path)


def test_garbage_saved_model_pb(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(np.random.default_rng(0).bytes(300))
    assert "not a valid SavedModel" in _assert_one_line_model_error(tmp_path)


def test_classifier_is_not_image_to_mask(tmp_path: Path) -> None:
    model = keras.Sequential(
        [
            keras.Input((H, W, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    path = tmp_path / "classifier.keras"
    model.save(path)
    message = _assert_one_line_model_error(path)
    assert "is not an image-to-mask model" in message
    assert "(None, 3)" in message
