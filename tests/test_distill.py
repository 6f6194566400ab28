"""`edgeseg distill`: a student fitted to a latency budget from unlabelled frames, on tiny
fixed-weight teachers (a threshold model, the bright-disks instance model), and its bad input;
the MAC count, `bench`'s GMAC/s and the device profiles' `int8_gmacs` it relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    SIZE,
    disk_instance_model,
    instance_meta,
    one_line_error,
    write_instance_pairs,
    write_pairs,
)
from typer.testing import CliRunner

from edgeseg.cli.main import app

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")
runner = CliRunner()


def threshold_model() -> object:
    """Foreground where a pixel (scaled to [0, 1]) is above 0.5: one fixed 3x3 convolution."""
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    head = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="head")
    out = head(inp)
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1, 0, 0] = 20.0
    head.set_weights([kernel, np.array([-10.0], np.float32)])
    return keras.Model(inp, out, name="bright")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgeseg.core.metadata import ModelMetadata, write_sidecar

    root = tmp_path_factory.mktemp("teachers")
    bright = root / "bright.keras"
    threshold_model().save(bright)
    write_sidecar(
        ModelMetadata(input_size=(SIZE, SIZE), normalization="scale",
                      provenance={"trained_on": "by hand"}),
        bright,
    )  # fmt: skip
    disks = root / "disks.keras"
    disk_instance_model().save(disks)
    write_sidecar(instance_meta(), disks)
    frames = write_pairs(root / "frames", n=8, size=(64, 64), seed=3)
    disk_data = write_instance_pairs(root / "disk_data", n=6, size=(64, 64), seed=4)
    return {"bright": bright, "disks": disks, "frames": frames / "images", "labelled": frames,
            "disk_data": disk_data}  # fmt: skip


def _distill(teacher: Path, frames: Path | str, out: Path, *args: str):
    return runner.invoke(
        app,
        ["distill", str(teacher), "--frames", str(frames), "--out", str(out),
         "--backend", "litert", "--runs", "3", "--max-minutes", "2", *args],
    )  # fmt: skip


def test_distill_measured_writes_student_metadata_and_report(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "s" / "student.keras"
    result = _distill(
        teachers["bright"], teachers["frames"], out, "--budget-ms", "1000", "--arch", "unet",
        "--widths", "1,0.5", "--val", str(teachers["labelled"]),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "agreement" in result.stderr and "est. int8" in result.stderr  # progress
    report = json.loads((tmp_path / "s" / "student.distill.json").read_text())
    md = (tmp_path / "s" / "student.distill.md").read_text()
    assert "Students tried" in md and "agreement with the teacher" in md
    s, t = report["student"], report["teacher"]
    # A 1000 ms budget: the widest candidate fits, and nothing narrower is converted.
    assert [c["width"] for c in report["candidates"]] == [1.0]
    assert report["candidates"][0]["note"].startswith("chosen")
    assert (
        s["arch"] == "unet" and s["latency"]["how"] == "measured" and report["runtime"] == "litert"
    )
    assert 0 < s["latency"]["ms"] <= 1000 and s["macs"] > 0 and t["macs"] > 0
    assert s["measured_ms"] == s["latency"]["ms"] and s["predicted_ms"] is None
    assert report["agreement"]["metric"] == "dice" and 0 <= report["agreement"]["value"] <= 1
    assert report["training"]["frames"]["held_back"] >= 1
    assert set(report["accuracy"]["teacher"]) == {"dice", "iou"}
    # The student carries the teacher's metadata and its provenance.
    meta = json.loads((tmp_path / "s" / "student.edgeseg.json").read_text())
    assert meta["normalization"] == "scale" and meta["input_size"] == [SIZE, SIZE]
    prov = meta["provenance"]
    assert prov["distilled_from"]["provenance"]["trained_on"] == "by hand"
    assert prov["distilled_from"]["sha256"] and prov["unet"]["arch"] == "unet"
    from edgeseg.model.loading import load_model

    loaded = load_model(out)  # the safe loader takes it; one output channel like the teacher
    assert loaded.output_shape[-1] == 1


def test_student_learns_the_teachers_outputs(teachers: dict[str, Path]) -> None:
    """Training brings the student's probabilities closer to the teacher's, and its agreement
    on held-back frames up (a threshold teacher is easy to learn)."""
    import time

    from edgeseg.core.metadata import read_sidecar
    from edgeseg.distill.frames import teacher_data
    from edgeseg.distill.search import build_student, student_configs, student_meta_for
    from edgeseg.distill.student import agreement, train_student
    from edgeseg.runtime.sources import open_file_source

    teacher = keras.models.load_model(teachers["bright"])
    meta = read_sidecar(teachers["bright"])
    data = teacher_data(open_file_source(teachers["frames"]), lambda t: np.asarray(teacher(t)),
                        meta, max_frames=8, holdout=0.25, seed=0)  # fmt: skip
    cfg = student_configs(meta, 8, 1, "transpose", ("unet",), (1.0,))["unet"][0]
    s_meta = student_meta_for(meta, cfg)
    model = build_student(cfg, 0)
    before = agreement(model, data.held_x, data.held_labels, s_meta)
    x = data.held_x[0][None, :SIZE, :SIZE]
    target = np.asarray(teacher(x))
    gap_before = float(np.abs(np.asarray(model(x)) - target).mean())
    result = train_student(model, s_meta, data, deadline=time.perf_counter() + 50,
                           steps_per_epoch=15, max_epochs=12, learning_rate=3e-3,
                           seed=0)  # fmt: skip
    gap_after = float(np.abs(np.asarray(result.model(x)) - target).mean())
    assert gap_after < gap_before / 2
    assert result.agreement > max(before, 0.8)
    assert result.history[result.best_epoch - 1].agreement == result.agreement


def test_distill_instances_predicted_from_a_device_profile(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    profile = tmp_path / "board.toml"
    profile.write_text(
        'name = "board"\ntitle = "A board"\ndelegate = "cpu"\nrecipe = "int8"\n'
        'camera = "0"\nint8_gmacs = 2.0\n'
    )
    out = tmp_path / "inst.keras"
    result = _distill(
        teachers["disks"], teachers["disk_data"] / "images", out, "--budget-ms", "0.5",
        "--device", str(profile), "--arch", "unet,separable", "--val", str(teachers["disk_data"]),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "inst.distill.json").read_text())
    s = report["student"]
    assert report["how"] == "predicted" and report["device"] == "board"
    assert s["predicted_ms"] == pytest.approx(s["macs"] / 2e9 * 1000, rel=1e-3)
    assert s["predicted_ms"] <= 0.5 and s["measured_ms"] > 0  # measured here too
    assert s["prediction_error"] == pytest.approx(
        (s["predicted_ms"] - s["measured_ms"]) / s["measured_ms"]
    )
    # Widest first per architecture; the chosen one has the most MACs of those that fit.
    fits = [c for c in report["candidates"] if c["fits"]]
    assert max(fits, key=lambda c: c["latency"]["macs"])["note"].startswith("chosen")
    tried = [c for c in report["candidates"] if not c["fits"]]
    assert all(c["latency"]["ms"] > 0.5 for c in tried if c["latency"])
    # Those predicted well over the budget from their MACs were not converted.
    assert all("predicted" in c["note"] for c in tried if not c["latency"])
    assert report["agreement"]["metric"] == "ap50"
    assert "ap50" in report["accuracy"]["student"]
    meta = json.loads((tmp_path / "inst.edgeseg.json").read_text())
    assert meta["instances"] is not None
    from edgeseg.model.loading import load_model

    assert load_model(out).output_shape[-1] == 2  # both heads


def test_budget_no_student_reaches(teachers: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "none.keras"
    result = _distill(
        teachers["bright"], teachers["frames"], out, "--budget-ms", "0.00001", "--arch",
        "unet", "--widths", "0.5",
    )  # fmt: skip
    line = one_line_error(result, "no student reaches 1e-05 ms at 64x64", "smallest tried",
                          "agreement dice")  # fmt: skip
    assert "ms (measured)" in line
    # Nothing written but the command's log of TensorFlow's messages.
    assert [p.suffix for p in tmp_path.iterdir()] == [".log"]


def test_bad_inputs_are_one_line_and_write_nothing(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "o" / "s.keras"
    # Too few frames: says how many are needed.
    few = write_pairs(tmp_path / "few", n=3, size=(32, 32))
    one_line_error(_distill(teachers["bright"], few / "images", out, "--budget-ms", "5"),
                   "3 frame(s)", "at least 4")  # fmt: skip
    # No frames at all.
    (tmp_path / "empty").mkdir()
    one_line_error(_distill(teachers["bright"], tmp_path / "empty", out, "--budget-ms", "5"),
                   "no images")  # fmt: skip
    # Frames of another channel count than the teacher's.
    rgb = write_pairs(tmp_path / "rgb", n=4, size=(32, 32), channels=3)
    one_line_error(_distill(teachers["bright"], rgb / "images", out, "--budget-ms", "5"),
                   "3 channel(s)", "the teacher takes 1")  # fmt: skip
    # A teacher that does not load, and a Lambda teacher.
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model")
    one_line_error(_distill(bad, teachers["frames"], out, "--budget-ms", "5"))
    one_line_error(_distill(tmp_path / "missing.keras", teachers["frames"], out,
                            "--budget-ms", "5"), "not found")  # fmt: skip
    inp = keras.Input((SIZE, SIZE, 1))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 0.5)(inp))
    lam.save(tmp_path / "lambda.keras")
    one_line_error(_distill(tmp_path / "lambda.keras", teachers["frames"], out,
                            "--budget-ms", "5"), "Lambda")  # fmt: skip
    # A profile without int8_gmacs says how to measure it; bad budget and architecture.
    profile = tmp_path / "plain.toml"
    profile.write_text(
        'name = "plain"\ntitle = "P"\ndelegate = "cpu"\nrecipe = "int8"\ncamera = "0"\n'
    )
    no_gmacs = _distill(teachers["bright"], teachers["frames"], out, "--budget-ms", "5",
                        "--device", str(profile))  # fmt: skip
    one_line_error(no_gmacs, "no int8_gmacs", "edgeseg bench")
    one_line_error(_distill(teachers["bright"], teachers["frames"], out, "--budget-ms", "-1"),
                   "--budget-ms")  # fmt: skip
    one_line_error(_distill(teachers["bright"], teachers["frames"], out, "--budget-ms", "5",
                            "--arch", "resnet"), "--arch")  # fmt: skip
    # Nothing written but the commands' logs of TensorFlow's messages.
    assert {p.suffix for p in (tmp_path / "o").iterdir()} == {".log"}


def test_tflite_macs_count_every_convolution() -> None:
    import tensorflow as tf

    from edgeseg.core.macs import tflite_macs
    from edgeseg.model.unet import UNetConfig, build_unet

    for arch in ("unet", "separable", "attention"):
        model = build_unet(UNetConfig((64, 64), base_filters=8, depth=2, arch=arch))
        expected = 0
        for layer in model.layers:
            kind = type(layer).__name__
            if kind == "Conv2D":
                _, h, w, c = layer.output.shape
                kh, kw = layer.kernel_size
                expected += h * w * c * kh * kw * layer.input.shape[-1]
            elif kind == "DepthwiseConv2D":
                _, h, w, c = layer.output.shape
                expected += h * w * c * 9
            elif kind == "Conv2DTranspose":
                _, h, w, c = layer.input.shape
                expected += h * w * c * 4 * layer.filters
        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        assert tflite_macs(data) == expected


def test_profiles_record_int8_gmacs_and_bench_reports_it(tmp_path: Path) -> None:
    from helpers import probe_model

    from edgeseg.bench.run import compute_rate
    from edgeseg.devices.profiles import load_profile
    from edgeseg.errors import DataError

    p = tmp_path / "dev.toml"
    base = 'name = "dev"\ntitle = "D"\ndelegate = "cpu"\nrecipe = "int8"\ncamera = "0"\n'
    p.write_text(base + "int8_gmacs = 45.5\n")
    assert load_profile(str(p)).int8_gmacs == 45.5
    assert load_profile(str(p)).to_dict()["int8_gmacs"] == 45.5
    p.write_text(base + "int8_gmacs = -3\n")
    with pytest.raises(DataError, match="int8_gmacs must be a positive number"):
        load_profile(str(p))
    # bench: MACs over the median latency (the probe model has no convolution: no figure).
    assert (
        compute_rate(probe_model(tmp_path / "probe.tflite"), {"latency_ms": {"p50": 1.0}}) is None
    )
    import tensorflow as tf

    from edgeseg.model.unet import UNetConfig, build_unet

    model = build_unet(UNetConfig((32, 32), base_filters=4, depth=2))
    path = tmp_path / "u.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rate = compute_rate(path, {"latency_ms": {"p50": 2.0}})
    assert rate["gmacs_per_s"] == pytest.approx(rate["macs"] / 2.0 / 1e6, rel=1e-3)


def test_live_frames_are_captured_first() -> None:
    """A live source (here the synthetic microscope stream) is read frame by frame up to the
    limit, then serves as a folder does; a stream that ends early gives what it had."""
    from edgeseg.distill.frames import capture, frame_channels
    from edgeseg.runtime.streams import open_stream

    src = capture(open_stream("synthetic://?size=48x40&seed=2"), "synthetic://", 5)
    assert len(src) == 5 and src.read(4).shape[:2] == (48, 40) and src.name(0).endswith("#frame0")
    assert frame_channels(src.read(0)) == 1

    class Short:
        def __init__(self) -> None:
            self.left, self.closed = 2, False

        def read(self) -> np.ndarray | None:
            self.left -= 1
            return np.zeros((8, 8), np.uint8) if self.left >= 0 else None

        def close(self) -> None:
            self.closed = True

    short = Short()
    assert len(capture(short, "rtsp://x", 10)) == 2 and short.closed
