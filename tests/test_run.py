"""`edgeseg run` end to end: files and synthetic streams in, video/masks/CSV/MJPEG out, faults."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    bright_model,
    instance_model,
    one_line_error,
    read_video,
    write_nuclei_video,
)
from typer.testing import CliRunner

from edgeseg.cli.main import app

cv2 = pytest.importorskip("cv2")
tf = pytest.importorskip("tensorflow")
runner = CliRunner()
SYNTH = "synthetic://?size=128x128&frames={n}&seed=2"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bright_model(tmp_path_factory.mktemp("run") / "bright.tflite")


def _bright_onnx(path: Path, size: int = 64) -> Path:
    """The same model as ONNX with edgeseg metadata, for the onnxruntime backend."""
    import keras

    from edgeseg.convert.onnx import export_onnx
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.model.loading import load_model

    inp = keras.Input((size, size, 1))
    out = keras.layers.Conv2D(
        1, 1, activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(20.0),
        bias_initializer=keras.initializers.Constant(-10.0),
    )(inp)  # fmt: skip
    keras_path = path.with_suffix(".keras")
    keras.Model(inp, out).save(keras_path)
    meta = ModelMetadata(input_size=(size, size), normalization="percentile")
    path.write_bytes(export_onnx(load_model(keras_path), meta).data)
    return path


@pytest.fixture(scope="module", params=["tflite", "onnx"])
def any_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bright model on LiteRT and on onnxruntime's CPU provider: one pipeline, two backends."""
    root = tmp_path_factory.mktemp(f"any-{request.param}")
    if request.param == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("tf2onnx")
        return _bright_onnx(root / "bright.onnx")
    return bright_model(root / "bright.tflite")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nuclei_video(tmp_path_factory.mktemp("video") / "clip.avi", 12, (128, 160), 4)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_video_file_to_recording_masks_and_csv(
    any_model: Path, video: Path, tmp_path: Path
) -> None:
    model = any_model
    rec, masks, stats = tmp_path / "out.mp4", tmp_path / "masks", tmp_path / "stats.csv"
    result = runner.invoke(
        app,
        ["run", str(model), "--source", str(video), "--headless", "--record", str(rec),
         "--save-masks", str(masks), "--csv", str(stats), "--summary-json",
         str(tmp_path / "summary.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frames = read_video(rec)
    rows = _rows(stats)
    mask_files = sorted(masks.iterdir())
    # A file source is processed frame by frame: nothing dropped.
    assert len(frames) == len(rows) == len(mask_files) == 12
    assert [int(r["frame"]) for r in rows] == list(range(12))
    assert all(int(r["dropped"]) == 0 for r in rows)
    assert all(float(r["inference_ms"]) > 0 for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["stopped"] == "end of source"
    # The overlay is coloured where the mask is, and the frame stays gray elsewhere.
    from edgeseg.imageio import read_image

    mask = read_image(mask_files[5]) > 0
    frame = frames[5].astype(np.int16)
    spread = frame.max(axis=2) - frame.min(axis=2)
    lower = slice(64, None)  # below the HUD
    inside = spread[lower][mask[lower]]
    outside = spread[lower][~mask[lower]]
    assert mask.mean() > 0.02 and inside.size and outside.size
    assert inside.mean() > outside.mean() + 20
    assert int(rows[5]["objects"]) >= 1


def test_synthetic_stream_tiles_large_frames(any_model: Path, tmp_path: Path) -> None:
    model = any_model
    rec = tmp_path / "syn.avi"
    result = runner.invoke(
        app,
        ["run", str(model), "--source", SYNTH.format(n=5), "--headless", "--record", str(rec),
         "--csv", str(tmp_path / "s.csv")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tiles of 64x64 for 128x128 frames" in result.output
    assert len(read_video(rec)) == 5 and len(_rows(tmp_path / "s.csv")) == 5
    assert "5 frames" in result.output and "p50" in result.output


def test_max_frames_and_third_party_model_resizes(tmp_path: Path) -> None:
    plain = bright_model(tmp_path / "plain.tflite", metadata=False)
    result = runner.invoke(
        app,
        ["run", str(plain), "--source", SYNTH.format(n=50), "--headless", "--max-frames", "3",
         "--csv", str(tmp_path / "s.csv"), "--normalization", "percentile"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resizing to 64x64" in result.output
    assert len(_rows(tmp_path / "s.csv")) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _edgeseg(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeseg.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 60) -> bytes:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_mjpeg_stream_serves_decodable_frames(model: Path) -> None:
    port = _free_port()
    proc = _edgeseg(
        "run", str(model), "--source", "synthetic://?size=128x128&fps=10&frames=100",
        "--headless", "--stream", f"127.0.0.1:{port}",
    )  # fmt: skip
    try:
        page = _wait_for(f"http://127.0.0.1:{port}/", proc)
        assert b"stream.mjpg" in page
        jpg = _wait_for(f"http://127.0.0.1:{port}/frame.jpg", proc)
        img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (128, 128)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream.mjpg", timeout=10) as r:
            assert "multipart/x-mixed-replace" in r.headers["Content-Type"]
            data = b""
            while data.count(b"\xff\xd9") < 2 and len(data) < 2_000_000:
                data += r.read(4096)
        start = data.index(b"\xff\xd8")
        first = cv2.imdecode(
            np.frombuffer(data[start : data.index(b"\xff\xd9") + 2], np.uint8), cv2.IMREAD_COLOR
        )
        assert first is not None and first.shape == (128, 128, 3)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_sigterm_keeps_recording_playable_and_csv_complete(model: Path, tmp_path: Path) -> None:
    rec, stats = tmp_path / "live.mp4", tmp_path / "live.csv"
    proc = _edgeseg(
        "run", str(model), "--source", "synthetic://?size=128x128&fps=15", "--headless",
        "--record", str(rec), "--csv", str(stats),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not stats.exists() or len(_rows(stats)) < 5):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, errtext = proc.communicate(timeout=60)
    assert proc.returncode == 0, errtext
    assert "stopped: interrupted" in out
    rows = _rows(stats)
    assert len(rows) >= 5 and len(read_video(rec)) == len(rows)


# ---- faults -------------------------------------------------------------------------------------


def test_no_camera_at_that_index(model: Path, tmp_path: Path) -> None:
    one_line_error(
        runner.invoke(app, ["run", str(model), "--camera", "7", "--csv", str(tmp_path / "s.csv")]),
        "no camera at index 7",
        "tried",
    )


def test_truncated_video_keeps_what_was_recorded(model: Path, video: Path, tmp_path: Path):
    cut = tmp_path / "cut.avi"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    rec = tmp_path / "rec.avi"
    result = runner.invoke(
        app, ["run", str(model), "--source", str(cut), "--headless", "--record", str(rec)]
    )
    assert result.exit_code == 0, result.output
    assert "warning" in result.output
    assert 1 <= len(read_video(rec)) < 12


def test_bad_frame_depth_mid_stream_keeps_earlier_frames(model: Path, tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    from edgeseg.samples import SyntheticStream

    folder = tmp_path / "frames"
    folder.mkdir()
    stream = SyntheticStream(size=(64, 64), seed=1)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), stream.read()[0])
    tifffile.imwrite(folder / "3.tif", np.zeros((64, 64, 2), np.uint16), planarconfig="contig")
    rec, stats = tmp_path / "rec.avi", tmp_path / "s.csv"
    result = runner.invoke(
        app,
        ["run", str(model), "--source", str(folder), "--headless", "--record", str(rec),
         "--csv", str(stats)],
    )  # fmt: skip
    one_line_error(result, "2-channel")
    assert len(_rows(stats)) == 3 and len(read_video(rec)) == 3


def test_model_that_is_not_image_shaped(tmp_path: Path) -> None:
    import keras

    inp = keras.Input((10,), batch_size=1)
    data = tf.lite.TFLiteConverter.from_keras_model(
        keras.Model(inp, keras.layers.Dense(2)(inp))
    ).convert()
    (tmp_path / "dense.tflite").write_bytes(data)
    one_line_error(
        runner.invoke(app, ["run", str(tmp_path / "dense.tflite"), "--source", SYNTH.format(n=2),
                            "--headless", "--csv", str(tmp_path / "s.csv")]),
        "not an image-to-mask model",
    )  # fmt: skip


def test_edgetpu_without_device_and_fallback(model: Path, tmp_path: Path) -> None:
    tpu = tmp_path / "bright_edgetpu.tflite"
    shutil.copy(model, tpu)
    args = ["--source", SYNTH.format(n=2), "--headless", "--csv", str(tmp_path / "s.csv")]
    one_line_error(
        runner.invoke(app, ["run", str(tpu), "--delegate", "edgetpu", *args]), "libedgetpu"
    )
    shutil.copy(model, tmp_path / "bright.tflite")
    result = runner.invoke(app, ["run", str(tpu), "--fallback", *args])
    assert result.exit_code == 0, result.output
    assert "falling back to bright.tflite" in result.output


def test_port_in_use_and_other_bad_options(model: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        one_line_error(
            runner.invoke(app, ["run", str(model), "--source", SYNTH.format(n=2), "--headless",
                                "--stream", str(port)]),
            f"port {port} is in use",
        )  # fmt: skip
    one_line_error(
        runner.invoke(app, ["run", str(model), "--source", SYNTH.format(n=2), "--headless"]),
        "no output",
    )
    one_line_error(
        runner.invoke(app, ["run", str(tmp_path / "m.keras"), "--camera", "0"]), ".tflite"
    )
    one_line_error(
        runner.invoke(app, ["run", str(model), "--camera", "0", "--source", "x.mp4"]),
    )
    assert not os.path.exists(tmp_path / "s.csv")


# ---------------------------------------------------------------------------- instance models


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return instance_model(tmp_path_factory.mktemp("instances") / "instances.tflite")


@pytest.fixture(scope="module")
def wells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of frames named like a plate's wells: 16-bit TIFFs and 8-bit PNGs."""
    tifffile = pytest.importorskip("tifffile")
    from edgeseg.samples import SyntheticStream

    root = tmp_path_factory.mktemp("wells")
    deep = SyntheticStream(size=(96, 128), seed=8, bit_depth=16)
    for name in ("A06_s6", "A07_s1"):
        tifffile.imwrite(root / f"{name}.tif", deep.read()[0])
    flat = SyntheticStream(size=(96, 128), seed=9, bit_depth=8)
    cv2.imwrite(str(root / "B01_s2.png"), flat.read()[0])
    return root


def _library_instances(model: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    """What eval computes: the model opened as eval opens it, each frame through Segmenter."""
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.runtime.backends import open_model

    opened = open_model(model)
    backend, meta = opened.backend, opened.meta
    assert meta.instances is not None
    segmenter = Segmenter(backend, meta)
    return [segmenter.labels(frame) for frame in frames]


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_instance_masks_are_the_library_labels_as_16_bit_named_after_the_files(
    instances: Path, wells: Path, tmp_path: Path, fmt: str
) -> None:
    from edgeseg.imageio import read_image

    masks = tmp_path / "masks"
    # On the runtime the library call opens (the file's own): auto may pick another whose label
    # maps agree within Dice, not bit for bit.
    args = ["run", str(instances), "--source", str(wells), "--headless", "--backend", "litert"]
    result = runner.invoke(app, [*args, "--save-masks", str(masks), "--mask-format", fmt])
    assert result.exit_code == 0, result.output
    files = sorted(wells.iterdir())
    assert sorted(p.name for p in masks.iterdir()) == sorted(f"{p.stem}.{fmt}" for p in files)
    expected = _library_instances(instances, [read_image(p) for p in files])
    objects = 0
    for path, ids in zip(files, expected, strict=True):
        got = read_image(masks / f"{path.stem}.{fmt}")
        assert got.dtype == np.uint16 and ids.dtype == np.int32
        np.testing.assert_array_equal(got, ids, err_msg=path.name)
        objects += int(ids.max())
    assert objects > len(files)  # blank maps would prove nothing


def test_instance_run_counts_objects_and_records_them(instances: Path, tmp_path: Path) -> None:
    rec, stats = tmp_path / "rec.avi", tmp_path / "frames.csv"
    args = ["run", str(instances), "--source", SYNTH.format(n=4), "--headless"]
    result = runner.invoke(app, [*args, "--record", str(rec), "--csv", str(stats)])
    assert result.exit_code == 0, result.output
    rows = _rows(stats)
    assert len(rows) == 4 and all(int(r["objects"]) > 1 for r in rows)
    assert len(read_video(rec)) == 4


def test_semantic_masks_of_a_folder_are_named_after_the_files_too(
    model: Path, wells: Path, tmp_path: Path
) -> None:
    from edgeseg.imageio import read_image

    masks = tmp_path / "masks"
    result = runner.invoke(
        app, ["run", str(model), "--source", str(wells), "--headless", "--save-masks", str(masks)]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in masks.iterdir())
    assert names == ["A06_s6.png", "A07_s1.png", "B01_s2.png"]
    back = read_image(masks / "A06_s6.png")
    assert back.dtype == np.uint8 and set(np.unique(back)) <= {0, 1}
