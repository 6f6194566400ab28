"""One frame path: `edgeseg run --save-masks` writes exactly the label maps that the library
call behind `eval` and the parity check computes, for every backend and bit depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import int8_tflite, write_nuclei_video
from typer.testing import CliRunner

from edgeseg.cli.main import app

tf = pytest.importorskip("tensorflow")
cv2 = pytest.importorskip("cv2")
tifffile = pytest.importorskip("tifffile")
runner = CliRunner()

SIZE = 32  # model input; the clips' frames (80x96) are tiled into 3x4 tiles


@pytest.fixture(scope="module")
def keras_unet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A small U-Net with fixed random weights, and its metadata (percentile normalization)."""
    import keras

    from edgeseg.core.metadata import ModelMetadata, write_sidecar
    from edgeseg.model.unet import UNetConfig, build_unet

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("unet") / "unet.keras"
    model = build_unet(UNetConfig(input_size=(SIZE, SIZE), base_filters=4, depth=2))
    model.save(path)
    meta = ModelMetadata(input_size=(SIZE, SIZE), normalization="percentile")
    write_sidecar(meta, path)
    return path, meta


def _tflite(keras_path: Path, meta: object, int8: bool, out: Path) -> Path:
    from edgeseg.core.tflite_file import embed_metadata
    from edgeseg.model.loading import load_model

    model = load_model(keras_path).keras_model
    if int8:
        data = int8_tflite(model, (SIZE, SIZE), samples=16)
    else:
        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    out.write_bytes(embed_metadata(data, meta))
    return out


@pytest.fixture(scope="module")
def artefacts(keras_unet: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory) -> dict:
    keras_path, meta = keras_unet
    root = tmp_path_factory.mktemp("artefacts")
    made = {
        "fp32": _tflite(keras_path, meta, False, root / "unet_fp32.tflite"),
        "int8": _tflite(keras_path, meta, True, root / "unet_int8.tflite"),
    }
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return made
    from edgeseg.convert.onnx import export_onnx
    from edgeseg.model.loading import load_model

    made["onnx"] = root / "unet.onnx"
    made["onnx"].write_bytes(export_onnx(load_model(keras_path), meta).data)
    return made


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An 8-bit video (decoded as RGB), an 8-bit gray and a 16-bit TIFF stack, 80x96 frames."""
    from edgeseg.samples import SyntheticStream

    root = tmp_path_factory.mktemp("clips")
    video = write_nuclei_video(root / "clip8.avi", 4, (80, 96), 5)
    clips = {"8-bit video": video}
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        synth = SyntheticStream(size=(80, 96), seed=6, bit_depth=bits)
        stack = np.stack([synth.read()[0] for _ in range(3)])
        assert stack.dtype == dtype
        clips[f"{bits}-bit stack"] = root / f"stack{bits}.tif"
        tifffile.imwrite(
            clips[f"{bits}-bit stack"], stack, photometric="minisblack", metadata={"axes": "TYX"}
        )
    return clips


def _library_labels(model: Path, clip: Path) -> list[np.ndarray]:
    """What eval and the parity check compute: the model opened as eval opens it, every frame
    through `convert.parity.label_maps`."""
    from edgeseg.convert.parity import label_maps
    from edgeseg.runtime.backends import open_model
    from edgeseg.runtime.sources import open_file_source

    opened = open_model(model)
    backend, meta = opened.backend, opened.meta
    src = open_file_source(clip)
    frames = [src.read(i) for i in range(len(src))]
    return label_maps(frames, backend, meta)


@pytest.mark.parametrize("precision", ["fp32", "int8", "onnx"])
@pytest.mark.parametrize("depth", ["8-bit video", "8-bit stack", "16-bit stack"])
def test_run_writes_the_label_maps_eval_and_parity_compute(
    artefacts: dict, clips: dict[str, Path], precision: str, depth: str, tmp_path: Path
) -> None:
    if precision not in artefacts:
        pytest.skip("onnxruntime or tf2onnx is not installed")
    model, clip = artefacts[precision], clips[depth]
    masks = tmp_path / "masks"
    result = runner.invoke(
        app,
        [
            "run",
            str(model),
            "--source",
            str(clip),
            "--headless",
            "--save-masks",
            str(masks),
            # The runtime the library call uses (auto may pick another that agrees within Dice).
            "--backend",
            "onnxruntime" if precision == "onnx" else "litert",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "20 tiles of 32x32 for 80x96 frames" in result.output, result.output
    from edgeseg.imageio import read_image

    expected = _library_labels(model, clip)
    written = sorted(masks.glob("*.png"))
    assert len(written) == len(expected) >= 3
    foreground = 0
    for path, labels in zip(written, expected, strict=True):
        got = read_image(path)
        assert got.shape == labels.shape == (80, 96)
        np.testing.assert_array_equal(got, labels, err_msg=f"{precision} {depth} {path.name}")
        foreground += int(labels.sum())
    # A comparison of two blank maps would prove nothing.
    assert 0 < foreground < sum(m.size for m in expected)


def test_int8_frames_take_the_lookup_table_path(artefacts: dict, clips: dict) -> None:
    """Gray integer frames reach an int8 model through the lookup table, which gives exactly
    what normalizing in float and quantizing with TFLite's rounding gives (RGB frames for a gray
    model take the float path: luma mixes channels)."""
    from edgeseg.core.preprocess import prepare, prepare_quantized
    from edgeseg.core.quant import quantize
    from edgeseg.runtime.backends import open_model
    from edgeseg.runtime.sources import open_file_source

    opened = open_model(artefacts["int8"])
    backend, meta = opened.backend, opened.meta
    assert backend.input.quantized
    for name in ("8-bit stack", "16-bit stack"):  # gray integer frames
        frame = open_file_source(clips[name]).read(0)
        q = prepare_quantized(frame, meta, backend.input)
        assert q is not None
        np.testing.assert_array_equal(q, quantize(prepare(frame, meta), backend.input))
