"""The backend contract: what a runtime adapter offers the rest of edgeseg.

A backend is one loaded model in one runtime (LiteRT, onnxruntime, OpenVINO, or a Keras
model for training and parity). The :class:`~edgeseg.core.segmenter.Segmenter` and every
report use only what is declared here, so a new runtime is one adapter in
``edgeseg/runtime/backends.py`` and nothing else changes. Pure typing: nothing here imports a
runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.quant import TensorInfo

__all__ = ["Backend", "CallableBackend"]


@runtime_checkable
class Backend(Protocol):
    """One model loaded in one runtime.

    Attributes:
        path: The model file.
        runtime: The runtime and its version, e.g. "ai-edge-litert 2.3.0".
        input: The input tensor, (B, H, W, C): its dtype and quantization.
        output: The output tensor, (B, h, w, K).
    """

    path: Path
    runtime: str
    input: TensorInfo
    output: TensorInfo

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """float32 (n, H, W, C) tiles → float32 (n, h, w, K) probabilities."""
        ...

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """Tiles already in the input's dtype (n, H, W, C) → float32 (n, h, w, K).

        For integer models, frames are quantized straight to the input (a lookup table per
        frame); for float models this is :meth:`predict`.
        """
        ...

    def metadata(self) -> ModelMetadata | None:
        """The edgeseg metadata the model file carries, or None."""
        ...


class CallableBackend:
    """A plain predictor (a Keras model's ``predict``, a test's lambda) as a float backend.

    ``predict`` maps float32 (n, H, W, C) tiles to (n, h, w, K) probabilities.
    """

    runtime = "python"

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        meta: ModelMetadata,
        *,
        path: str | Path = "<model>",
    ) -> None:
        self._predict = predict
        self._meta = meta
        self.path = Path(path)
        h, w = meta.input_size
        oh, ow = meta.output_size
        self.input = TensorInfo("input", 0, (1, h, w, meta.channels), "float32")
        self.output = TensorInfo("output", 0, (1, oh, ow, meta.output_channels), "float32")

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(tiles), dtype=np.float32)

    predict_raw = predict

    def metadata(self) -> ModelMetadata | None:
        return self._meta
