"""`edgeseg convert` of instance models (two sigmoid outputs): instance parity, the AP gate,
ONNX export and the Edge TPU preflight of two sigmoid heads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    disk_instance_model,
    instance_meta,
    instance_unet,
    one_line_error,
    write_instance_pairs,
)
from typer.testing import CliRunner

from edgeseg.cli.main import app

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")
runner = CliRunner()


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fixed-weight instance model of bright disks (.keras + sidecar with instances) and a
    held-out folder of disk images with instance labels (images/ + labels/)."""
    from edgeseg.core.metadata import write_sidecar

    root = tmp_path_factory.mktemp("disks")
    model = root / "disks.keras"
    disk_instance_model().save(model)
    write_sidecar(instance_meta(), model)
    data = write_instance_pairs(root / "data", n=6, seed=4)
    return {"model": model, "data": data}


def _convert(model: Path, out: Path, *args: str):
    return runner.invoke(app, ["convert", str(model), "--out", str(out), *args])


def test_instance_model_converts_fp16_int8_with_instance_parity(
    disks: dict[str, Path], tmp_path: Path
) -> None:
    from edgeseg.core.tflite_file import read_metadata

    out = tmp_path / "build"
    data = disks["data"]
    result = _convert(
        disks["model"], out, "--fp16", "--int8", "--recipe", "int8-cpu",
        "--calib", str(data / "images"), "--val", str(data), "--n", "24",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "disks_parity.json").read_text())
    assert report["metadata"]["instances"] is not None
    assert report["heldout"]["with_truth"] is True
    fi = report["float_instances_truth"]
    assert fi["n_true"] > 0 and 0.0 <= fi["ap50"] <= 1.0
    by = {a["recipe"]: a for a in report["artefacts"]}
    assert set(by) == {"fp16", "int8", "int8-cpu"}
    for name, art in by.items():
        assert read_metadata(out / f"disks_{name}.tflite").instances is not None
        inst, truth = art["instances"], art["instances_truth"]
        assert inst["n_true"] == fi["n_pred"]  # the float model's objects are the reference
        assert truth["n_true"] == fi["n_true"]
        assert art["truth_ap50_change"] == pytest.approx(truth["ap50"] - fi["ap50"])
        assert "truth_count_error_change" in art and "truth_mean_ap_change" in art
        assert art["gate_on"] == "ap50"
    # fp16 is ungated; the int8 recipes are gated on AP@0.5 against the float objects.
    assert by["fp16"]["gate"] is None
    for name in ("int8", "int8-cpu"):
        assert by[name]["gate"] == 0.95
        assert by[name]["passed"] is (by[name]["instances"]["ap50"] >= 0.95)
        assert by[name]["passed"]
    md = (out / "disks_parity.md").read_text()
    assert "## Instances" in md and "AP50 vs float" in md and "Δ count error" in md
    assert "Float model's objects vs truth: AP50" in md
    assert "AP50 ≥ 0.95" in md


def test_instance_gate_is_on_objects_not_pixels(
    disks: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int8 artefact whose pixels are the float model's but whose objects are merged into
    one per frame is rejected: the gate of an instance model is AP@0.5, not Dice."""
    import edgeseg.convert.pipeline as pipeline
    from edgeseg.core.backend import CallableBackend

    real = pipeline.label_maps

    def merged(frames, backend, meta, progress=None):
        labels = real(frames, backend, meta, progress)
        if isinstance(backend, CallableBackend):  # the float model: its own objects
            return labels
        return [(lab > 0).astype(np.int32) for lab in labels]  # one object: all foreground

    monkeypatch.setattr(pipeline, "label_maps", merged)
    out = tmp_path / "build"
    data = disks["data"]
    result = _convert(
        disks["model"], out, "--int8", "--calib", str(data / "images"), "--val", str(data),
        "--n", "24", "--min-dice-agreement", "0",
    )  # fmt: skip
    line = one_line_error(result, "int8", "AP@0.5", "below the gate 0.95")
    assert "calibration" in line
    assert (out / "disks_int8.rejected.tflite").is_file()
    assert not (out / "disks_int8.tflite").exists()
    art = json.loads((out / "disks_parity.json").read_text())["artefacts"][0]
    assert art["passed"] is False and art["gate_on"] == "ap50"
    # The pixels would pass a Dice gate; the objects do not pass the AP gate.
    assert art["agreement"]["dice"] >= art["gate"] > art["instances"]["ap50"]
    assert any("--min-dice-agreement does not gate an instance model" in n for n in art["notes"])
    # Lowering the AP gate (the option) lets the same artefact through.
    result = _convert(
        disks["model"], tmp_path / "low", "--int8", "--calib", str(data / "images"),
        "--val", str(data), "--n", "24", "--min-ap-agreement", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_gate_choice_and_verdict() -> None:
    from edgeseg.convert.parity import ArtefactReport, InstanceScores, Overlap
    from edgeseg.convert.pipeline import ConvertRequest, _gate
    from edgeseg.convert.recipes import Recipe, load_recipe

    req = ConvertRequest(model=Path("m.keras"), recipes=(), out=Path("o"))
    int8 = load_recipe("int8")
    assert int8.min_ap_agreement == 0.95
    assert _gate(int8, req, instance=False) == (int8.min_dice_agreement, "dice")
    assert _gate(int8, req, instance=True) == (0.95, "ap50")
    assert _gate(load_recipe("fp16"), req, instance=True) == (None, "ap50")
    # A user's recipe that gates on Dice only gets the default AP gate for instances.
    own = Recipe(name="own", precision="int8", io="int8", min_dice_agreement=0.9)
    assert _gate(own, req, instance=True) == (0.95, "ap50")
    assert _gate(own, replace(req, min_ap_agreement=0.5), instance=True) == (0.5, "ap50")
    assert _gate(own, replace(req, min_ap_agreement=0.5), instance=False) == (0.9, "dice")

    def scores(ap50: float) -> InstanceScores:
        return InstanceScores(ap50, ap50, 1.0, ap50, ap50, 0.0, 10, 10)

    base = ArtefactReport(
        recipe="int8", path="m.tflite", size_bytes=1, size_ratio=0.3, ops={},
        agreement=Overlap(1.0, 1.0), truth=None, gate=0.95, gate_on="ap50",
        instances=scores(0.9),
    )  # fmt: skip
    assert not base.passed  # Dice 1.0 does not matter
    assert replace(base, instances=scores(0.95)).passed
    assert not replace(base, instances=None).passed  # a gate on figures never measured
    assert replace(base, gate_on="dice").passed
    assert replace(base, gate=None).passed


def test_semantic_model_on_a_labels_folder_scores_the_foreground(
    tiny_unet: Path, disks: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "build"
    data = disks["data"]
    result = _convert(tiny_unet, out, "--fp16", "--val", str(data), "--calib", str(data / "images"))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "tiny_parity.json").read_text())
    assert report["heldout"]["with_truth"] is True and "labels/" in report["heldout"]["source"]
    assert report["float_instances_truth"] is None
    art = report["artefacts"][0]
    assert art["instances"] is None and art["gate_on"] == "dice" and art["truth"] is not None
    assert "## Instances" not in (out / "tiny_parity.md").read_text()


def test_labels_folder_with_a_missing_label_is_one_line(
    disks: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(disks["data"], data)
    victim = sorted((data / "labels").iterdir())[0]
    victim.unlink()
    one_line_error(
        _convert(disks["model"], tmp_path / "o", "--fp16", "--val", str(data)),
        victim.stem,
        "label image",
    )


def _keras_file(model, meta, path: Path) -> Path:
    from edgeseg.core.metadata import write_sidecar

    model.save(path)
    write_sidecar(meta, path)
    return path


@pytest.mark.parametrize("decoder", ["upsample", "transpose"])
def test_edgetpu_preflight_has_nothing_against_two_sigmoid_heads(
    decoder: str, tmp_path: Path
) -> None:
    from edgeseg.convert.edgetpu import preflight
    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.tflite_file import op_histogram
    from edgeseg.model.loading import load_model

    path = _keras_file(instance_unet(decoder=decoder), instance_meta(), tmp_path / "u.keras")
    loaded = load_model(path)
    assert loaded.output_shape[-1] == 2
    tiles = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    conv = convert(loaded, instance_meta(), load_recipe("int8-edgetpu"), tiles)
    ops = op_histogram(conv.tflite)
    assert ops.get("LOGISTIC") == 1 and "SOFTMAX" not in ops
    pre = preflight(conv.tflite)
    assert pre.input_types == ("uint8",) and pre.output_types == ("uint8",)
    cpu = [(v.op, v.reasons) for v in pre.ops if v.target == "cpu"]
    assert cpu == [], cpu
    assert pre.first_cpu is None and pre.mapped == pre.total
    head = [v for v in pre.ops if v.op == "LOGISTIC"]
    assert head and all(v.target == "edgetpu" for v in head)


def test_edgetpu_convert_cli_of_an_instance_unet(tmp_path: Path) -> None:
    data = write_instance_pairs(tmp_path / "data", n=4, size=(64, 64), seed=1)
    path = _keras_file(instance_unet(decoder="upsample"), instance_meta(), tmp_path / "u.keras")
    out = tmp_path / "build"
    result = _convert(
        path, out, "--edgetpu", "--calib", str(data / "images"), "--val", str(data),
        "--n", "8", "--min-ap-agreement", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    art = json.loads((out / "u_parity.json").read_text())["artefacts"][0]
    assert art["recipe"] == "int8-edgetpu" and art["instances"] is not None
    pre = art["edgetpu"]["preflight"]
    assert pre["first_cpu_op"] is None, pre


def test_onnx_export_of_an_instance_unet(tmp_path: Path) -> None:
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from edgeseg.model.loading import load_model
    from edgeseg.runtime.backends import OnnxBackend

    data = write_instance_pairs(tmp_path / "data", n=3, size=(64, 64), seed=2)
    meta = instance_meta()
    path = _keras_file(instance_unet(), meta, tmp_path / "u.keras")
    out = tmp_path / "build"
    result = _convert(path, out, "--onnx", "--val", str(data))
    assert result.exit_code == 0, result.output
    backend = OnnxBackend(out / "u.onnx", provider="cpu")
    assert backend.metadata() == meta
    x = np.random.default_rng(3).random((2, 32, 32, 1), dtype=np.float32)
    got = backend.predict(x)
    assert got.shape == (2, 32, 32, 2)
    np.testing.assert_allclose(got, load_model(path).predict(x), atol=1e-4)
    art = json.loads((out / "u_parity.json").read_text())["artefacts"][0]
    assert art["recipe"] == "onnx" and art["gate"] is None
    assert art["instances"]["ap50"] >= 0.99  # the same float graph finds the same objects
    assert art["instances_truth"] is not None
