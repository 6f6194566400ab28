"""`edgeseg train` / `eval` / `samples` end to end on tiny models, and their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, write_pairs
from typer.testing import CliRunner

from edgeseg.cli.main import app

pytest.importorskip("keras")
runner = CliRunner()
TINY = ["--size", "32", "--base-filters", "4", "--depth", "2", "--batch-size", "4"]


def test_samples_train_eval_on_synthetic(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(app, ["samples", "--out", str(data), "-n", "6", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert len(list((data / "images").iterdir())) == 6
    model = tmp_path / "m.keras"
    result = runner.invoke(
        app,
        ["train", "--data", str(data), *TINY, "--epochs", "2", "--steps-per-epoch", "2",
         "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "val Dice" in result.output and model.is_file()
    meta = json.loads((tmp_path / "m.edgeseg.json").read_text())
    assert meta["input_size"] == [32, 32] and meta["normalization"] == "percentile"
    tuned = meta["provenance"]["threshold"]  # chosen on the training images
    assert tuned["chosen_on"] == "training images" and tuned["dice"] >= tuned["dice_at_0.5"]
    assert 0.0 < meta["threshold"] < 1.0 and f"threshold {meta['threshold']:.2f}" in result.output
    scores = tmp_path / "scores.json"
    # 48² images with a 32² model: eval must tile.
    result = runner.invoke(app, ["eval", str(model), "--data", str(data), "--json", str(scores)])
    assert result.exit_code == 0, result.output
    report = json.loads(scores.read_text())
    assert report["n_images"] == 6
    pooled = report["classes"]["foreground"]["pooled"]
    assert set(pooled) >= {"dice", "iou", "precision", "recall", "pixel_accuracy", "hd95"}


def test_train_k_classes_from_16bit_rgb_tiff(tmp_path: Path) -> None:
    data = write_pairs(
        tmp_path / "d", n=3, size=(40, 40), image_dtype=np.uint16, channels=3,
        suffix=".tif", mask_values=(0, 1, 2),
    )  # fmt: skip
    model = tmp_path / "k.keras"
    result = runner.invoke(
        app,
        ["train", "--data", str(data), *TINY, "--channels", "3", "--num-classes", "3",
         "--class-names", "bg,a,b", "--epochs", "1", "--steps-per-epoch", "1",
         "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "k.edgeseg.json").read_text())
    assert meta["num_classes"] == 3 and meta["class_names"] == ["bg", "a", "b"]
    assert meta["channel_order"] == "RGB" and meta["foreground_value"] is None
    assert meta["threshold"] == 0.5 and "threshold" not in meta["provenance"]  # argmax
    result = runner.invoke(app, ["eval", str(model), "--data", str(data)])
    assert result.exit_code == 0, result.output


def test_train_valid_padding_records_border(tmp_path: Path) -> None:
    model = tmp_path / "v.keras"
    result = runner.invoke(
        app,
        ["train", "--data", "synthetic", "--synthetic-images", "4", "--size", "44",
         "--base-filters", "4", "--depth", "1", "--padding", "valid", "--epochs", "1",
         "--steps-per-epoch", "1", "--batch-size", "2", "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "v.edgeseg.json").read_text())
    assert meta["output_border"] == 8  # 44 → 40 → 20 → 16 → 32 → 28


def test_no_tune_threshold_keeps_half(tmp_path: Path) -> None:
    model = tmp_path / "f.keras"
    result = runner.invoke(
        app,
        ["train", "--data", "synthetic", "--synthetic-images", "4", *TINY, "--epochs", "1",
         "--steps-per-epoch", "1", "--no-tune-threshold", "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "f.edgeseg.json").read_text())
    assert meta["threshold"] == 0.5 and "threshold" not in meta["provenance"]


def test_tune_threshold_finds_the_separating_threshold() -> None:
    """A 'model' that returns its input as the probability, on masks cut at 0.70: the tuner
    must find 0.70 exactly, through the same tiling the runtime uses (64² images, 32² tiles)."""
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.datasets import LabelledSet
    from edgeseg.train.trainer import tune_threshold

    rng = np.random.default_rng(0)
    # Values at k/100 + 0.005 never sit on a candidate threshold, so blending noise is harmless.
    images = tuple(
        ((rng.integers(0, 100, (64, 64, 1)) + 0.5) / 100).astype(np.float32) for _ in range(3)
    )
    targets = tuple((im[..., 0] > 0.70).astype(np.uint8) for im in images)
    data = LabelledSet(images, targets, ("a", "b", "c"))
    meta = ModelMetadata(input_size=(32, 32))

    def identity(tiles: np.ndarray, training: bool = False) -> np.ndarray:  # a "model"
        return tiles

    choice = tune_threshold(identity, data, meta, max_pixels=10**9)
    assert choice.threshold == 0.70 and choice.dice == 1.0 and choice.dice_at_half < 1.0
    # The pixel budget keeps at least one image and never more than it allows.
    assert tune_threshold(identity, data, meta, max_pixels=1).dice == 1.0


def test_isbi_membranes_with_foreground_zero(tmp_path: Path, isbi: Path) -> None:
    """Real data: ISBI 2012 marks membranes with 0; a 128² model tiles the 512² slices."""
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.datasets import load_labelled

    meta = ModelMetadata(input_size=(128, 128), foreground_value=0, normalization="percentile")
    data = load_labelled(isbi, meta)
    assert len(data) == 30 and data.images[0].shape == (512, 512, 1)
    membrane = np.mean([t.mean() for t in data.targets])
    assert 0.1 < membrane < 0.35  # membranes are the minority class
    model = tmp_path / "isbi.keras"
    result = runner.invoke(
        app,
        ["train", "--data", str(isbi), "--foreground-value", "0", "--size", "128",
         "--base-filters", "4", "--depth", "2", "--epochs", "1", "--steps-per-epoch", "2",
         "--batch-size", "2", "--val-fraction", "0.1", "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(model), "--data", str(isbi), "--per-image"])
    assert result.exit_code == 0, result.output
    assert "pooled" in result.output


# ---- bad inputs: each a one-line error and a non-zero exit ----------------------------------


def _train(data: Path | str, out: Path, *extra: str):
    return runner.invoke(
        app,
        ["train", "--data", str(data), *TINY, "--epochs", "1", "--steps-per-epoch", "1",
         "--out", str(out), *extra],
    )  # fmt: skip


def test_missing_and_empty_data_folders(tmp_path: Path) -> None:
    one_line_error(_train(tmp_path / "nope", tmp_path / "m.keras"), "not found")
    (tmp_path / "empty").mkdir()
    one_line_error(_train(tmp_path / "empty", tmp_path / "m.keras"), "images/")
    (tmp_path / "empty" / "images").mkdir()
    (tmp_path / "empty" / "masks").mkdir()
    one_line_error(_train(tmp_path / "empty", tmp_path / "m.keras"), "no images")
    assert not (tmp_path / "m.keras").exists()


def test_images_without_masks(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", n=3)
    (data / "masks" / "1.png").unlink()
    one_line_error(_train(data, tmp_path / "m.keras"), "without a mask", "1.png")


def test_mismatched_sizes(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", n=2)
    write_pairs(tmp_path / "other", n=2, size=(20, 20))
    (tmp_path / "other" / "masks" / "0.png").replace(data / "masks" / "0.png")
    one_line_error(_train(data, tmp_path / "m.keras"), "0.png", "mask is 20x20")


def test_unreadable_image(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", n=2)
    (data / "images" / "1.png").write_bytes(b"\x89PNG broken")
    one_line_error(_train(data, tmp_path / "m.keras"), "cannot read", "1.png")


def test_foreground_value_absent_from_masks(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", n=2, mask_values=(0, 1))
    one_line_error(_train(data, tmp_path / "m.keras"), "--foreground-value", "0, 1")


def test_bad_class_index_and_output_path(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", n=2, mask_values=(0, 7))
    one_line_error(_train(data, tmp_path / "m.keras", "--num-classes", "3"), "class index")
    one_line_error(_train(data, tmp_path / "m.h5"), ".keras")
    (tmp_path / "dir.keras").mkdir()
    one_line_error(_train(data, tmp_path / "dir.keras"), "is a folder")
    one_line_error(_train(data, tmp_path / "m.keras", "--size", "30"), "multiple of 4")


def test_eval_bad_models(tmp_path: Path, tiny_unet: Path) -> None:
    data = write_pairs(tmp_path / "d", n=1, size=(32, 32))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(tiny_unet.read_bytes()[:500])
    one_line_error(runner.invoke(app, ["eval", str(corrupt), "--data", str(data)]), "corrupt")
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"x")
    one_line_error(runner.invoke(app, ["eval", str(odd), "--data", str(data)]))
    one_line_error(
        runner.invoke(app, ["eval", str(tiny_unet), "--data", str(tmp_path / "none")]),
        "not found",
    )


def test_eval_refuses_lambda_unless_trusted(tmp_path: Path) -> None:
    import keras

    inp = keras.Input((32, 32, 1))
    out = keras.layers.Lambda(lambda t: t * 0.5)(inp)
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(out))
    path = tmp_path / "lam.keras"
    model.save(path)
    data = write_pairs(tmp_path / "d", n=1, size=(32, 32))
    one_line_error(
        runner.invoke(app, ["eval", str(path), "--data", str(data)]), "Lambda", "--trust-model"
    )
    trusted = runner.invoke(app, ["eval", str(path), "--data", str(data), "--trust-model"])
    assert trusted.exit_code == 0, trusted.output


# --------------------------------------------------------------------------------------------
# Instance models: labels/ folders, two sigmoid outputs, AP50


def test_train_instances_writes_two_sigmoid_outputs_and_eval_scores_objects(
    tmp_path: Path,
) -> None:
    keras = pytest.importorskip("keras")
    data = tmp_path / "data"
    result = runner.invoke(app, ["samples", "--out", str(data), "-n", "6", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert len(list((data / "labels").iterdir())) == 6
    model = tmp_path / "i.keras"
    result = runner.invoke(
        app,
        ["train", "--data", str(data), "--instances", *TINY, "--epochs", "2",
         "--steps-per-epoch", "2", "--interior-weight", "2", "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "val AP50" in result.output and "held out" in result.output
    meta = json.loads((tmp_path / "i.edgeseg.json").read_text())
    assert meta["instances"]["method"] == "interior-seeds"
    assert meta["num_classes"] == 1 and meta["class_names"] == ["object"]
    assert meta["threshold"] == 0.5 and "threshold" not in meta["provenance"]  # not tuned
    assert meta["provenance"]["interior_weight"] == 2.0
    net = keras.models.load_model(model, compile=False)
    assert net.output_shape[-1] == 2
    assert net.get_layer("head").get_config()["activation"] == "sigmoid"
    # The folder has masks/ and labels/: an instance model is scored on the labels.
    scores = tmp_path / "scores.json"
    result = runner.invoke(
        app, ["eval", str(model), "--data", str(data), "--json", str(scores), "--per-image"]
    )
    assert result.exit_code == 0, result.output
    assert "AP50" in result.output and "median count error" in result.output
    report = json.loads(scores.read_text())
    assert report["targets"] == "labels" and report["instances"]["objects"] == "instances"
    pooled = report["instances"]["pooled"]
    assert {"ap50", "mean_ap", "precision50", "recall50", "f1_50", "median_count_error"} <= set(
        pooled
    )
    assert len(report["instances"]["per_image"]) == 6


def test_instances_automatic_for_a_labels_only_folder(tmp_path: Path) -> None:
    from helpers import write_instance_pairs

    data = write_instance_pairs(tmp_path / "d", n=4, size=(48, 48))
    model = tmp_path / "a.keras"
    result = runner.invoke(
        app,
        ["train", "--data", str(data), *TINY, "--epochs", "1", "--steps-per-epoch", "1",
         "--val-groups", "w1", "--out", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held out 1 of 2 groups for validation (2 images): w1" in result.output
    meta = json.loads((tmp_path / "a.edgeseg.json").read_text())
    assert meta["instances"] is not None
    result = runner.invoke(
        app,
        ["train", "--data", str(data), *TINY, "--epochs", "1", "--steps-per-epoch", "1",
         "--val-groups", "w7", "--out", str(model)],
    )  # fmt: skip
    one_line_error(result, "'w7' not found")


def test_semantic_model_on_a_labels_folder_counts_components(
    tmp_path: Path, tiny_unet: Path
) -> None:
    from helpers import write_instance_pairs

    data = write_instance_pairs(tmp_path / "d", n=2, size=(48, 48))
    scores = tmp_path / "s.json"
    result = runner.invoke(
        app, ["eval", str(tiny_unet), "--data", str(data), "--json", str(scores)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(scores.read_text())
    assert report["instances"]["objects"] == "8-connected components"
    assert report["instances"]["pooled"]["n_true"] > 0


def test_elastic_keeps_instance_ids_exact() -> None:
    from helpers import disc_labels

    from edgeseg.train.augment import AugmentConfig, augment

    ids = disc_labels((64, 64), [(20.0, 20.0, 8.0), (20.0, 35.0, 8.0), (45.0, 45.0, 10.0)])
    ids[ids == 3] = 70_000  # beyond uint16
    image = ids.astype(np.float32)[..., None]
    rng = np.random.default_rng(0)
    for _ in range(5):
        _, y = augment(image, ids, rng, AugmentConfig(elastic_prob=1.0))
        assert y.dtype == np.int32 and set(np.unique(y)) <= {0, 1, 2, 70_000}


def test_instance_loss_is_mean_of_channels() -> None:
    pytest.importorskip("keras")
    from edgeseg.train.losses import dice_bce_loss, multi_sigmoid_loss

    rng = np.random.default_rng(0)
    y = (rng.random((2, 8, 8, 2)) > 0.5).astype(np.float32)
    p = rng.uniform(0.05, 0.95, (2, 8, 8, 2)).astype(np.float32)
    single = [float(dice_bce_loss()(y[..., c : c + 1], p[..., c : c + 1])) for c in (0, 1)]
    assert float(multi_sigmoid_loss((1.0, 1.0))(y, p)) == pytest.approx(np.mean(single), rel=1e-5)
    weighted = (single[0] + 3 * single[1]) / 4
    assert float(multi_sigmoid_loss((1.0, 3.0))(y, p)) == pytest.approx(weighted, rel=1e-5)
