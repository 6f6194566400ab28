"""Turn frames into what a model takes: numpy (OpenCV's LUT where it is there), the same for
eval, calibration and run.

Order matters and is fixed here: drop alpha, normalize the whole frame (before tiling, so
tiles of one frame share one intensity mapping), then reduce or expand channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.quant import TensorInfo, quantize
from edgeseg.errors import DataError, MissingDependencyError
from edgeseg.optional import cv2

# Pixels the percentiles are computed from (a strided sample of larger frames).
_PERCENTILE_PIXELS = 512 * 512
# ITU-R BT.601 luma, the weights OpenCV uses for RGB → gray.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def drop_alpha(image: np.ndarray) -> np.ndarray:
    """(H, W, 4) → (H, W, 3); (H, W, 1) → (H, W); anything else unchanged."""
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    return image


def gray_if_equal(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) frame whose three channels are equal (a gray video decoded as RGB, a gray
    camera in a colour mode) → its (H, W) gray values (a view); anything else unchanged.

    Such a frame is gray: its luma is its value (up to float rounding), so a gray model sees
    exactly what it saw in training, and an integer frame keeps the lookup-table path. A
    strided sample rules out most colour frames before the full comparison.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        return image
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    sample = (slice(None, None, 7), slice(None, None, 7))
    if not (np.array_equal(r[sample], g[sample]) and np.array_equal(r[sample], b[sample])):
        return image
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r
    return image


def integer_percentiles(sample: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """``np.percentile(sample, percentiles)`` of a uint8/uint16 array, bit for bit, from its
    histogram: counting is linear where numpy's partition is not (2.9 → 0.5 ms on a 512²
    sample). The ranks and numpy's linear interpolation (its ``_lerp``, which interpolates
    from the upper value when the fraction is at least 0.5) are reproduced exactly."""
    levels = 256 if sample.dtype == np.uint8 else 65536
    cum = np.cumsum(np.bincount(sample.ravel(), minlength=levels))
    n = int(cum[-1])
    virtual = (n - 1) * np.true_divide(np.asarray(percentiles, dtype=np.float64), 100)
    below = np.minimum(np.floor(virtual).astype(np.intp), n - 1)
    above = np.minimum(below + 1, n - 1)
    a = np.searchsorted(cum, below, side="right").astype(np.float64)
    b = np.searchsorted(cum, above, side="right").astype(np.float64)
    gamma = virtual - below
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def intensity_range(image: np.ndarray, meta: ModelMetadata) -> tuple[float, float]:
    """(lo, hi): the intensities the metadata's rule maps to 0 and 1 for this frame."""
    if meta.normalization in ("scale", "meanstd"):  # meanstd: then (x - mean) / std
        if meta.input_max is not None:
            return 0.0, float(meta.input_max)
        if np.issubdtype(image.dtype, np.integer):
            return 0.0, float(np.iinfo(image.dtype).max)
        return 0.0, 1.0  # float frames are taken to be in [0, 1] already
    if meta.normalization == "percentile":
        # A strided subsample keeps this cheap on 2048² frames; the result is deterministic,
        # so eval, calibration and the runtime still agree exactly.
        step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / _PERCENTILE_PIXELS)))
        sample = image[::step, ::step]
        if sample.dtype in (np.uint8, np.uint16) and sample.size:
            lo, hi = integer_percentiles(sample, meta.percentiles)
        else:
            lo, hi = np.percentile(sample, meta.percentiles)
        return float(lo), float(hi)
    return float(image.min()), float(image.max())  # minmax


def normalize(image: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """uint8/uint16/float array (any shape) → float32 in about [0, 1] by the metadata's rule."""
    lo, hi = intensity_range(image, meta)
    return _apply_range(image.astype(np.float32, copy=False), lo, hi)


def _apply_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if lo == 0.0:
        return x * np.float32(1.0 / max(hi, 1e-6))
    return (x - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))


def prepare_quantized(
    image: np.ndarray, meta: ModelMetadata, info: TensorInfo
) -> np.ndarray | None:
    """A uint8/uint16 frame straight to an integer model's input: (H, W, C) of ``info.dtype``.

    One lookup table per frame maps every possible pixel value through the normalization and
    the input quantization at once, with the same float arithmetic as ``prepare`` followed
    by ``quantize`` (so the result is identical) but without a float copy of the frame.
    Returns None where floats are needed anyway: float frames, float models, and RGB frames
    for a gray model (luma mixes channels).
    """
    if not info.quantized or image.dtype not in (np.uint8, np.uint16):
        return None
    if meta.normalization == "meanstd":  # per-channel after the channel mapping: floats
        return None
    img = drop_alpha(image)
    if meta.channels == 1:
        img = gray_if_equal(img)
    c = 1 if img.ndim == 2 else img.shape[2]
    if c != meta.channels and not (c == 1 and meta.channels == 3):
        return None
    lo, hi = intensity_range(img, meta)
    values = np.arange(np.iinfo(img.dtype).max + 1, dtype=np.float32)
    table = quantize(_apply_range(values, lo, hi), info)
    q = _lookup(img, table)
    if q.ndim == 2:
        q = q[..., None]
    if q.shape[2] != meta.channels:
        q = np.repeat(q, meta.channels, axis=2)
    elif meta.channel_order == "BGR":
        q = q[..., ::-1]
    return np.ascontiguousarray(q)


def _lookup(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[img]``; for a gray uint8 frame through OpenCV's LUT (identical, faster)."""
    if img.dtype == np.uint8 and img.ndim == 2 and table.dtype.itemsize == 1:
        try:
            cv = cv2()
        except MissingDependencyError:
            return table[img]
        return cv.LUT(np.ascontiguousarray(img), table)
    return table[img]


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) float array → (H, W, channels): gray is repeated, RGB uses luma."""
    if image.ndim == 2:
        image = image[..., None]
    c = image.shape[2]
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if c == 3 and channels == 1:
        return (image @ _LUMA)[..., None]
    raise DataError(
        f"cannot turn a {c}-channel image into the {channels}-channel input the model takes"
    )


def prepare(image: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """A frame as read (RGB order, any bit depth, gray/RGB/RGBA) → float32 (H, W, C) model input.

    Raises DataError for frames that cannot be reduced to the model's channels (a 2-channel
    image, say).
    """
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise DataError(f"expected an image of shape (H, W[, C]), got {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise DataError(
            f"cannot turn a {image.shape[2]}-channel image into the {meta.channels}-channel "
            "input the model takes"
        )
    img = drop_alpha(image)
    if meta.channels == 1:
        img = gray_if_equal(img)
    x = normalize(img, meta)
    x = to_channels(x, meta.channels)
    if meta.channel_order == "BGR":
        x = x[..., ::-1]
    if meta.normalization == "meanstd" and meta.mean is not None and meta.std is not None:
        mean = np.asarray(meta.mean, dtype=np.float32)
        x = (x - mean) * (np.float32(1.0) / np.asarray(meta.std, dtype=np.float32))
    return np.ascontiguousarray(x, dtype=np.float32)
