"""Reading images of every depth and layout, and turning them into model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.preprocess import normalize, prepare
from edgeseg.errors import DataError
from edgeseg.imageio import list_images, read_image, write_image

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("cv2")

GRAY = ModelMetadata(input_size=(32, 32))
RGB = ModelMetadata(input_size=(32, 32), channels=3, channel_order="RGB")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 3), (20, 30, 4)])
def test_write_read_round_trip(tmp_path: Path, suffix: str, dtype: type, shape: tuple) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    path = write_image(tmp_path / f"x{suffix}", img)
    back = read_image(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, img)  # RGB order kept through OpenCV's BGR


def test_channel_first_tiff_and_stacks(tmp_path: Path) -> None:
    img = np.zeros((3, 16, 24), np.uint16)
    img[0] = 100
    tifffile.imwrite(tmp_path / "cf.tif", img, photometric="minisblack")
    back = read_image(tmp_path / "cf.tif")
    assert back.shape == (16, 24, 3) and back[0, 0, 0] == 100
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((7, 16, 16), np.uint16))
    with pytest.raises(DataError, match="stack of 7 pages"):
        read_image(tmp_path / "stack.tif")


def test_unreadable_files_are_data_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    for name in ("bad.png", "empty.png", "bad.tif"):
        with pytest.raises(DataError, match=name):
            read_image(tmp_path / name)
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_list_images_natural_order(tmp_path: Path) -> None:
    for name in ("10.png", "2.png", "1.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["1.tif", "2.png", "10.png"]
    with pytest.raises(DataError, match="not found"):
        list_images(tmp_path / "nope")


def test_normalize_scale_by_depth_and_input_max() -> None:
    assert normalize(np.array([255], np.uint8), GRAY)[0] == pytest.approx(1.0)
    assert normalize(np.array([65535], np.uint16), GRAY)[0] == pytest.approx(1.0)
    twelve_bit = GRAY.with_updates(input_max=4095)
    assert normalize(np.array([4095], np.uint16), twelve_bit)[0] == pytest.approx(1.0)


def test_normalize_percentile_is_depth_independent() -> None:
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257
    meta = GRAY.with_updates(normalization="percentile")
    np.testing.assert_allclose(normalize(img8, meta), normalize(img16, meta), atol=1e-5)
    minmax = normalize(img8, GRAY.with_updates(normalization="minmax"))
    assert minmax.min() == 0.0 and minmax.max() == pytest.approx(1.0)


def test_prepare_converts_layouts() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # pure red, opaque
    rgba[..., 3] = 255
    gray = prepare(rgba, GRAY)
    assert gray.shape == (8, 8, 1) and gray.dtype == np.float32
    assert gray[0, 0, 0] == pytest.approx(0.299, abs=1e-3)
    rgb = prepare(np.full((8, 8), 255, np.uint16), RGB)
    assert rgb.shape == (8, 8, 3)
    bgr = prepare(rgba, RGB.with_updates(channel_order="BGR"))
    assert bgr[0, 0].tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_prepare_refuses_two_channel_frames() -> None:
    with pytest.raises(DataError, match="2-channel"):
        prepare(np.zeros((8, 8, 2), np.uint16), RGB)
    with pytest.raises(DataError, match="shape"):
        prepare(np.zeros((2, 8, 8, 3), np.uint8), RGB)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("normalization", ["scale", "percentile", "minmax"])
@pytest.mark.parametrize("channels", [1, 3])
def test_prepare_quantized_equals_prepare_then_quantize(
    dtype: type, normalization: str, channels: int
) -> None:
    from edgeseg.core.preprocess import prepare_quantized
    from edgeseg.core.quant import TensorInfo, quantize

    rng = np.random.default_rng(3)
    frame = rng.integers(0, np.iinfo(dtype).max, size=(40, 48), dtype=dtype)
    order = "GRAY" if channels == 1 else "RGB"
    meta = GRAY.with_updates(normalization=normalization, channels=channels, channel_order=order)
    for info in (
        TensorInfo("x", 0, (1, 32, 32, channels), "int8", scale=1 / 255, zero_point=-128),
        TensorInfo("x", 0, (1, 32, 32, channels), "uint8", scale=0.0041, zero_point=3),
    ):
        direct = prepare_quantized(frame, meta, info)
        assert direct is not None and direct.dtype == np.dtype(info.dtype)
        np.testing.assert_array_equal(direct, quantize(prepare(frame, meta), info))
    floats = TensorInfo("x", 0, (1, 32, 32, channels), "float32")
    assert prepare_quantized(frame, meta, floats) is None


def test_a_gray_frame_decoded_as_rgb_is_gray() -> None:
    from edgeseg.core.preprocess import gray_if_equal, prepare, prepare_quantized
    from edgeseg.core.quant import TensorInfo

    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    assert gray_if_equal(rgb) is not rgb and np.array_equal(gray_if_equal(rgb), gray)
    meta = ModelMetadata(input_size=(32, 32), normalization="percentile")
    np.testing.assert_array_equal(prepare(rgb, meta), prepare(gray, meta))
    info = TensorInfo("in", 0, (1, 32, 32, 1), "int8", scale=1 / 255, zero_point=-128)
    q = prepare_quantized(rgb, meta, info)
    assert q is not None  # the lookup-table path, not floats
    np.testing.assert_array_equal(q, prepare_quantized(gray, meta, info))
    # One differing pixel, even off the sampled grid, makes it a colour frame: luma, floats.
    colour = rgb.copy()
    colour[5, 3, 1] ^= 1
    assert gray_if_equal(colour) is colour
    assert prepare_quantized(colour, meta, info) is None
    # A 3-channel model keeps all three channels.
    meta3 = ModelMetadata(input_size=(32, 32), channels=3, channel_order="RGB")
    assert prepare(rgb, meta3).shape == (40, 56, 3)


def test_integer_percentiles_are_numpys_bit_for_bit() -> None:
    from edgeseg.core.preprocess import integer_percentiles

    rng = np.random.default_rng(7)
    for i in range(400):
        dtype = np.uint8 if i % 2 else np.uint16
        top = int(rng.integers(1, np.iinfo(dtype).max + 1))
        sample = rng.integers(0, top, int(rng.integers(1, 3000))).astype(dtype)
        qs = [(1.0, 99.8), (0.0, 100.0), (50.0, 50.5), tuple(sorted(rng.uniform(0, 100, 2)))][i % 4]
        np.testing.assert_array_equal(integer_percentiles(sample, qs), np.percentile(sample, qs))
