"""The Jetson path: ONNX export matching the float model, and the onnxruntime backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import DataError, MissingDependencyError, ModelError
from edgeseg.runtime.backends import ORT_PROVIDERS, OnnxBackend, choose_providers, open_backend

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")


def _export(config: dict, tmp_path: Path):
    from edgeseg.convert.onnx import export_onnx
    from edgeseg.core.metadata import infer_metadata
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig, build_unet

    cfg = UNetConfig(**{"base_filters": 4, "depth": 2, **config})
    keras_path = tmp_path / "m.keras"
    build_unet(cfg).save(keras_path)
    loaded = load_model(keras_path)
    meta = infer_metadata(loaded.input_shape, loaded.output_shape)
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(export_onnx(loaded, meta, extra={"recipe": "onnx"}).data)
    return loaded, meta, onnx_path


@pytest.mark.parametrize(
    "config",
    [
        {"input_size": (128, 128), "decoder": "transpose", "batch_norm": True},
        {"input_size": (128, 128), "decoder": "upsample", "dropout": 0.3, "channels": 3,
         "num_classes": 3},
        {"input_size": (44, 44), "depth": 1, "padding": "valid"},
    ],
    ids=["transpose-bn", "upsample-dropout-rgb-softmax", "valid"],
)  # fmt: skip
def test_export_matches_float_model_on_real_images(
    config: dict, tmp_path: Path, isbi: Path
) -> None:
    from edgeseg.core.preprocess import prepare
    from edgeseg.core.tiling import extract_tiles, plan_tiles
    from edgeseg.imageio import read_image

    loaded, meta, onnx_path = _export(config, tmp_path)
    backend = OnnxBackend(onnx_path, provider="cpu")
    assert backend.metadata() == meta
    assert backend.input.shape == (1, *meta.input_size, meta.channels)
    meta = meta.with_updates(normalization="percentile")
    tiles = []
    for name in ("24.png", "27.png"):  # held-out ISBI slices, 512² EM
        frame = prepare(read_image(isbi / "images" / name), meta)
        grid = plan_tiles(frame.shape[:2], meta.input_size, 0, meta.output_border)
        tiles.append(extract_tiles(frame, grid)[:3])
    tiles = np.concatenate(tiles)
    diff = np.abs(backend.predict(tiles) - loaded.predict(tiles)).max()
    assert diff <= 1e-4, diff


def test_choose_providers_order_and_options(tmp_path: Path) -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = choose_providers(everything, "auto", trt_cache=tmp_path / "cache", trt_fp16=True)
    assert [p if isinstance(p, str) else p[0] for p in chosen] == everything
    trt_options = chosen[0][1]
    assert trt_options["trt_fp16_enable"] is True
    assert trt_options["trt_engine_cache_enable"] and (tmp_path / "cache").is_dir()
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], "auto") == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["CPUExecutionProvider"], "auto") == ["CPUExecutionProvider"]
    with pytest.raises(MissingDependencyError, match=r"TensorrtExecutionProvider.*onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], "tensorrt")
    with pytest.raises(DataError, match="unknown ONNX provider"):
        choose_providers(["CPUExecutionProvider"], "npu")
    assert set(ORT_PROVIDERS) == {"tensorrt", "cuda", "cpu"}


def test_open_backend_dispatches_onnx_and_rejects_absent_providers(tmp_path: Path) -> None:
    _, _, onnx_path = _export({"input_size": (32, 32)}, tmp_path)
    opened = open_backend(onnx_path)
    assert isinstance(opened.backend, OnnxBackend) and "CPUExecutionProvider" in opened.describe()
    with pytest.raises(MissingDependencyError, match="CUDAExecutionProvider"):
        open_backend(onnx_path, delegate="cuda")
    with pytest.raises(DataError, match="for TFLite models"):
        open_backend(onnx_path, delegate="edgetpu")


def test_corrupt_and_non_image_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="not a valid ONNX model") as err:
        OnnxBackend(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="not found"):
        OnnxBackend(tmp_path / "missing.onnx")
    import tensorflow as tf
    import tf2onnx

    dense = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    spec = tf.TensorSpec((1, 10), tf.float32, name="x")
    fn = tf.function(lambda x: dense(x), input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=17)
    (tmp_path / "dense.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="not an image-to-mask model"):
        OnnxBackend(tmp_path / "dense.onnx")
