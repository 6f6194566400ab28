"""A source ONNX (PyTorch's NCHW, logits, dynamic H/W) in run, eval and bench: whole frames at
each frame's own size padded to the model's multiple, tiles of --input-size, the metadata
flags and --activation without a sidecar, the one-line refusals, and the cheap check that
tells edgeseg's own ONNX artefacts from source ONNX files. No torch: graphs come from
tests/onnx_unets.py; the reference is onnxruntime run directly on the padded NCHW input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from onnx_unets import single_op_onnx, unet_onnx  # noqa: E402

from edgeseg.cli.main import app  # noqa: E402
from edgeseg.core import onnx_graph  # noqa: E402
from edgeseg.core.metadata import ModelMetadata, write_sidecar  # noqa: E402
from edgeseg.core.onnx_props import read_metadata_props  # noqa: E402
from edgeseg.errors import DataError, MissingDependencyError  # noqa: E402
from edgeseg.runtime import foreign_onnx  # noqa: E402
from edgeseg.runtime.foreign_onnx import adapt_onnx, is_edgeseg_onnx  # noqa: E402

runner = CliRunner()
FRAME = (200, 152)  # not a multiple of 16: padded to 208x160
DEPTH = 4  # 2**4 = 16


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _runtimes() -> list[str]:
    found = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        found.append("openvino")
    except ImportError:
        pass
    return found


def _frames(folder: Path, n: int = 2, size: tuple[int, int] = FRAME) -> list[np.ndarray]:
    """Smooth 8-bit frames (blobs), so foreground and background both appear."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(11)
    frames = []
    for i in range(n):
        noise = rng.random((size[0] // 8 + 2, size[1] // 8 + 2)).astype(np.float32)
        big = cv2.resize(noise, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        frame = np.clip(big * 255, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
        frames.append(frame)
    return frames


def _reference(
    model, frame: np.ndarray, multiple: int = 16, input_max: float | None = None
) -> np.ndarray:
    """Probabilities (H, W) of the source graph run by onnxruntime on the min-max normalized
    frame (or divided by ``input_max``) reflect-padded (centred) up to ``multiple``, then
    cropped back: what edgeseg must give for whole frames."""
    x = frame.astype(np.float32)
    x = x / input_max if input_max else (x - x.min()) / (x.max() - x.min())
    h, w = x.shape
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    top, left = (ph - h) // 2, (pw - w) // 2
    padded = np.pad(x, ((top, ph - h - top), (left, pw - w - left)), mode="reflect")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: padded[None, None]})[0][0, 0]
    return (1 / (1 + np.exp(-logits)))[top : top + h, left : left + w]


# --------------------------------------------------------------------------------------------
# Pure pieces: the multiple, the metadata read without parsing the graph


def test_size_multiple_counts_strided_downsamplings() -> None:
    assert onnx_graph.size_multiple(unet_onnx(size=None, depth=2)) == 4
    assert onnx_graph.size_multiple(unet_onnx(size=None, depth=4)) == 16
    # the ResNet stem's strided MaxPool on the path, then two 2x2 pools
    assert onnx_graph.size_multiple(unet_onnx(stem_maxpool=True, depth=2)) == 8
    assert onnx_graph.size_multiple(single_op_onnx("Relu", (1, 1, 8, 8))) is None


def test_metadata_props_read_without_the_graph(tmp_path: Path) -> None:
    model = unet_onnx(size=None)
    for key, value in (("edgeseg", '{"metadata": {}}'), ("other", "ü ñ")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    stored = onnx.load(str(path)).metadata_props
    assert read_metadata_props(path) == {p.key: p.value for p in stored}
    assert is_edgeseg_onnx(path)
    bare = tmp_path / "bare.onnx"
    unet_onnx(bare)
    assert read_metadata_props(bare) == {} and not is_edgeseg_onnx(bare)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    assert read_metadata_props(bad) is None
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:-7])
    assert read_metadata_props(cut) is None


# --------------------------------------------------------------------------------------------
# Whole frames: run (folder source, masks written), eval, bench


def test_whole_frames_equal_padded_reference_in_library(tmp_path: Path) -> None:
    """Probabilities within 1e-5 of onnxruntime on the padded NCHW input, cropped, on both
    ONNX runtimes; the adapted graph keeps H/W dynamic and says its multiple."""
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.runtime.backends import open_model

    path = tmp_path / "src.onnx"
    model = unet_onnx(path, size=None, depth=DEPTH, base=4)
    frames = _frames(tmp_path / "frames")
    adapted = adapt_onnx(path, whole_frames=True, flags={"normalization": "minmax"})
    assert adapted != path
    dims = onnx.load(str(adapted)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, "H", "W", 1]
    assert adapt_onnx(path, whole_frames=True, flags={"normalization": "minmax"}) == adapted
    for runtime in _runtimes():
        opened = open_model(adapted, backend=runtime)
        assert opened.meta.size_multiple == 16 and opened.embedded
        seg = Segmenter(opened.backend, opened.meta)
        for frame in frames:
            got = seg.probabilities(frame)
            assert got.shape == (*FRAME, 1)
            np.testing.assert_allclose(got[..., 0], _reference(model, frame), atol=1e-5)
        # another frame size: another padded input, same model
        small = frames[0][:37, :61]
        np.testing.assert_allclose(
            seg.probabilities(small)[..., 0], _reference(model, small), atol=1e-5
        )


def test_run_and_eval_whole_frames_cli(tmp_path: Path) -> None:
    path = tmp_path / "src.onnx"
    model = unet_onnx(path, size=None, depth=DEPTH, base=4)
    frames = _frames(tmp_path / "data" / "images")
    refs = [_reference(model, f) for f in frames]
    want = [(r > 0.5).astype(np.uint8) for r in refs]
    # pixels within 1e-5 of the threshold may flip between runtimes: none here, or the check
    # below would be loose
    assert min(np.abs(r - 0.5).min() for r in refs) > 1e-5
    assert all(0 < w.mean() < 1 for w in want)
    flags = ["--whole-frames", "--normalization", "minmax"]
    for runtime in _runtimes():
        out = tmp_path / f"masks-{runtime}"
        result = runner.invoke(
            app,
            ["run", str(path), "--source", str(tmp_path / "data" / "images"), "--headless",
             "--save-masks", str(out), "--backend", runtime, "--workers", "1", *flags],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "whole frames at their own size, padded to a multiple of 16" in result.output
        for i, w in enumerate(want):
            got = cv2.imread(str(out / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
            assert got.shape == FRAME
            np.testing.assert_array_equal(got, w)
    masks = tmp_path / "data" / "masks"
    masks.mkdir()
    for i, w in enumerate(want):
        cv2.imwrite(str(masks / f"f{i}.png"), w * 255)
    for runtime in _runtimes():
        report = tmp_path / f"eval-{runtime}.json"
        result = runner.invoke(
            app,
            ["eval", str(path), "--data", str(tmp_path / "data"), "--backend", runtime,
             "--json", str(report), *flags],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        scores = json.loads(report.read_text())["classes"]["foreground"]["pooled"]
        assert scores["dice"] == pytest.approx(1.0), runtime
    # tiles of --input-size instead: runs, but not the whole-frame label maps bit for bit
    result = runner.invoke(
        app,
        ["eval", str(path), "--data", str(tmp_path / "data"), "--backend", "onnxruntime",
         "--input-size", "64", "--normalization", "minmax"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_flags_reach_run_and_eval(tmp_path: Path) -> None:
    """--normalization scale --input-max, --threshold (run) and --foreground-value (eval) on a
    source ONNX without a sidecar, whole frames."""
    path = tmp_path / "src.onnx"
    model = unet_onnx(path, size=None, depth=DEPTH, base=4)
    frames = _frames(tmp_path / "data" / "images")
    refs = [_reference(model, f, input_max=128.0) for f in frames]
    assert min(np.abs(r - 0.7).min() for r in refs) > 1e-5
    want = [(r > 0.7).astype(np.uint8) for r in refs]
    assert any(not np.array_equal(w, r > 0.5) for w, r in zip(want, refs, strict=True))
    out = tmp_path / "masks"
    result = runner.invoke(
        app,
        ["run", str(path), "--source", str(tmp_path / "data" / "images"), "--headless",
         "--save-masks", str(out), "--backend", "onnxruntime", "--whole-frames",
         "--normalization", "scale", "--input-max", "128", "--threshold", "0.7"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for i, w in enumerate(want):
        np.testing.assert_array_equal(cv2.imread(str(out / f"f{i}.png"), cv2.IMREAD_UNCHANGED), w)
    masks = tmp_path / "data" / "masks"
    masks.mkdir()
    for i, w in enumerate(want):  # foreground marked 0, background 255
        cv2.imwrite(str(masks / f"f{i}.png"), (1 - w) * 255)
    report = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        ["eval", str(path), "--data", str(tmp_path / "data"), "--backend", "onnxruntime",
         "--whole-frames", "--normalization", "scale", "--input-max", "128", "--threshold",
         "0.7", "--foreground-value", "0", "--json", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pooled = json.loads(report.read_text())["classes"]["foreground"]["pooled"]
    assert pooled["dice"] == pytest.approx(1.0)


def test_bench_whole_frame_latency_at_the_requested_size(tmp_path: Path) -> None:
    path = tmp_path / "src.onnx"
    unet_onnx(path, size=None, depth=DEPTH, base=4)
    out = tmp_path / "reports"
    result = runner.invoke(
        app,
        ["bench", str(path), "--frame-size", "200x152", "--backend", "onnxruntime",
         "--runs", "3", "--warmup", "0", "--threads", "1", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (report_path,) = out.rglob("*.json")
    report = json.loads(report_path.read_text())
    assert report["whole_frame"] == {"frame_size": [200, 152], "input_size": [208, 160]}
    assert report["model"]["name"] == "src"
    assert report["model"]["input"]["shape"] == [1, 208, 160, 1]
    assert report["model"]["label"].endswith("-200x152")
    assert "random float32 [1, 208, 160, 1]" in report["method"]["input"]
    # --frame-size for a model of one input size: one line
    fixed = tmp_path / "fixed.onnx"
    unet_onnx(fixed, size=32)
    one_line_error(
        runner.invoke(app, ["bench", str(fixed), "--frame-size", "200x152", "--out", str(out)]),
        "whole frames",
        "--frame-size",
        "takes 32x32 only",
    )


# --------------------------------------------------------------------------------------------
# Flags without a sidecar, --activation, and the refusals


def test_activation_flag_decides_the_head(tmp_path: Path) -> None:
    """logits → a sigmoid appended; sigmoid/softmax → the output kept as it is."""
    x = np.random.default_rng(3).random((1, 32, 32, 1), dtype=np.float32)

    def adapted_out(path: Path, **kw) -> np.ndarray:
        target = adapt_onnx(path, flags={"input_size": (32, 32)}, **kw)
        sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        return sess.run(None, {"image": x})[0]

    path = tmp_path / "logits.onnx"
    model = unet_onnx(path, size=None)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)
    probs = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(adapted_out(path), probs, atol=1e-6)
    np.testing.assert_allclose(adapted_out(path, activation="logits"), probs, atol=1e-6)
    # the user says the output already holds probabilities: nothing appended
    np.testing.assert_array_equal(adapted_out(path, activation="sigmoid"), logits)
    soft = tmp_path / "soft.onnx"
    model = unet_onnx(soft, size=None, classes=3, head="softmax")
    got = adapted_out(soft, activation="softmax")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": x.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(DataError, match="softmax over one channel"):
        adapt_onnx(path, activation="softmax", flags={"input_size": (32, 32)})
    with pytest.raises(DataError, match="--activation must be one of"):
        adapt_onnx(path, activation="relu", flags={"input_size": (32, 32)})


def test_metadata_flags_without_a_sidecar(tmp_path: Path) -> None:
    from edgeseg.runtime.backends import open_model

    path = tmp_path / "rgb.onnx"
    unet_onnx(path, size=None, channels=3, classes=2)
    flags = {
        "input_size": (48, 64), "normalization": "imagenet", "threshold": 0.3,
        "channel_order": "bgr", "input_max": None,
    }  # fmt: skip
    opened = open_model(adapt_onnx(path, flags=flags))
    meta = opened.meta
    assert opened.embedded and meta.input_size == (48, 64) and meta.normalization == "meanstd"
    assert meta.channel_order == "BGR" and meta.threshold == 0.3 and meta.num_classes == 2
    assert opened.backend.input.shape == (1, 48, 64, 3)
    # a sidecar gives the rest; the flags win over it
    side = tmp_path / "side.onnx"
    unet_onnx(side, size=None)
    write_sidecar(ModelMetadata(input_size=(32, 32), normalization="percentile"), side)
    opened = open_model(adapt_onnx(side, flags={"normalization": "minmax"}))
    assert opened.meta.normalization == "minmax" and opened.meta.input_size == (32, 32)
    # the sidecar may state the multiple (here a larger one than the graph's 4)
    write_sidecar(ModelMetadata(input_size=(32, 32), size_multiple=32), side)
    opened = open_model(adapt_onnx(side, whole_frames=True))
    assert opened.meta.size_multiple == 32


def test_cli_refusals_one_line(tmp_path: Path) -> None:
    dyn = tmp_path / "dyn.onnx"
    unet_onnx(dyn, size=None)
    images = tmp_path / "data" / "images"
    _frames(images, n=1, size=(40, 40))
    masks = tmp_path / "data" / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "f0.png"), np.zeros((40, 40), np.uint8))
    data = str(tmp_path / "data")

    def run(*args: str):
        return runner.invoke(
            app, ["run", *args, "--source", str(images), "--headless", "--save-masks",
                  str(tmp_path / "m")],
        )  # fmt: skip

    def eval_(*args: str):
        return runner.invoke(app, ["eval", *args, "--data", data, "--backend", "onnxruntime"])

    def bench(*args: str):
        return runner.invoke(app, ["bench", *args, "--out", str(tmp_path / "r"), "--runs", "2"])

    # a dynamic model with neither a tile size nor whole frames
    for result in (run(str(dyn)), eval_(str(dyn)), bench(str(dyn))):
        one_line_error(result, "takes any image size", "--input-size HxW", "--whole-frames")
        assert result.exit_code == 2
    # --activation: unknown; softmax over one channel
    for cmd in (run, eval_, bench):
        result = cmd(str(dyn), "--input-size", "32", "--activation", "relu")
        one_line_error(result, "--activation must be one of logits, sigmoid, softmax")
        assert result.exit_code == 2
        result = cmd(str(dyn), "--input-size", "32", "--activation", "softmax")
        one_line_error(result, "softmax over one channel")
        assert result.exit_code == 2
    # imagenet statistics on a 1-channel model
    result = eval_(str(dyn), "--input-size", "32", "--normalization", "imagenet")
    one_line_error(result, "one per channel")
    # whole frames of a model whose H/W are fixed
    fixed = tmp_path / "fixed.onnx"
    unet_onnx(fixed, size=32)
    one_line_error(eval_(str(fixed), "--whole-frames"), "takes 32x32 only")
    # no multiple to be found: a dynamic graph that never downsamples
    flat = tmp_path / "flat.onnx"
    model = unet_onnx(size=None, depth=0)
    onnx.save(model, str(flat))
    one_line_error(eval_(str(flat), "--whole-frames"), "size_multiple", "flat.edgeseg.json")
    # --activation / --whole-frames on an edgeseg artefact (it carries its metadata)
    art = tmp_path / "art.onnx"
    adapted = adapt_onnx(dyn, flags={"input_size": (32, 32)})
    art.write_bytes(adapted.read_bytes())
    one_line_error(eval_(str(art), "--whole-frames"), "edgeseg artefact")
    one_line_error(run(str(art), "--activation", "logits"), "edgeseg artefact")


# --------------------------------------------------------------------------------------------
# Without the onnx package (the runtime extra and onnxruntime)


def test_without_onnx_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.onnx"
    unet_onnx(src, size=32)
    art = tmp_path / "art.onnx"
    art.write_bytes(adapt_onnx(src).read_bytes())  # an NHWC copy with edgeseg's key
    foreign_onnx._decided.clear()
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx → ImportError
    assert adapt_onnx(art) == art  # edgeseg's artefacts open as they are
    with pytest.raises(MissingDependencyError, match=r"edgeseg\[onnx\]"):
        adapt_onnx(src)
    from edgeseg.runtime.backends import open_model

    opened = open_model(art, backend="onnxruntime")
    assert opened.backend.input.shape == (1, 32, 32, 1)
    result = runner.invoke(app, ["bench", str(src), "--out", str(tmp_path / "r"), "--runs", "2"])
    one_line_error(result, "source ONNX", "edgeseg[onnx]")
