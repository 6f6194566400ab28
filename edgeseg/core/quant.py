"""Quantize model inputs and dequantize model outputs: pure numpy, no runtime import.

A TFLite tensor holds either real values (float32, float16) or integers with one affine
mapping ``real = scale * (q - zero_point)`` for the whole tensor. Integer models convert at
their edges: a float32 frame in about [0, 1] becomes int8 or uint8 here, and the model's
integer output becomes float32 probabilities again.

Rounding follows TFLite's QUANTIZE kernel (round half away from zero of ``x / scale`` in
float32, then add the zero point and clamp to the dtype's range), so a frame quantized here
matches one quantized inside a model with float input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseg.errors import DataError


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output tensor.

    Attributes:
        name: The tensor's name in the model.
        index: The interpreter's tensor index.
        shape: The shape the interpreter allocated, e.g. (1, 256, 256, 1).
        dtype: numpy dtype name: "float32", "float16", "int8", "uint8", "int16"...
        scale: Per-tensor quantization scale; 0.0 means the tensor is not quantized.
        zero_point: Per-tensor quantization zero point.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        """True for an integer tensor with an affine mapping to real values."""
        return self.scale != 0.0 and np.issubdtype(np.dtype(self.dtype), np.integer)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "index": self.index,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """float32 array (any shape) → array of ``info.dtype``, ready for the model.

    Quantized tensors: ``round(x / scale) + zero_point``, clipped to the dtype's range (values
    outside the calibrated range saturate). Not quantized: a plain cast.
    """
    dtype = np.dtype(info.dtype)
    if not info.quantized:
        return np.asarray(x).astype(dtype, copy=False)
    v = np.asarray(x, dtype=np.float32) / np.float32(info.scale)
    if np.isnan(v).any():  # casting NaN to an integer is undefined; infinities saturate
        raise DataError(f"input for tensor {info.name!r} holds NaN values")
    # Round half away from zero, as TFLite does (numpy's rint rounds half to even).
    q = np.trunc(v + np.copysign(np.float32(0.5), v)) + np.float32(info.zero_point)
    limits = np.iinfo(dtype)
    return np.clip(q, limits.min, limits.max).astype(dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Model array of ``info.dtype`` → float32: ``scale * (q - zero_point)``, or a cast."""
    if not info.quantized:
        return np.asarray(q).astype(np.float32, copy=False)
    centred = np.asarray(q).astype(np.float32) - np.float32(info.zero_point)
    return centred * np.float32(info.scale)
