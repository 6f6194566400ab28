"""Find a model's metadata, whatever the model file: sidecar, embedded, or inferred + flags."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata, infer_metadata, read_sidecar


def apply_flags(
    meta: ModelMetadata | None,
    input_shape: tuple[int | None, ...],
    output_shape: tuple[int | None, ...],
    **flags: Any,
) -> ModelMetadata:
    """``meta`` (or metadata inferred from the tensor shapes when None) with the flags given.

    Flags left at None change nothing; ``channel_order`` is upper-cased.
    """
    overrides = {k: v for k, v in flags.items() if v is not None}
    if "channel_order" in overrides:
        overrides["channel_order"] = str(overrides["channel_order"]).upper()
    if meta is None:
        return infer_metadata(input_shape, output_shape, **overrides)
    return meta.with_updates(**overrides) if overrides else meta


def model_metadata(
    model_path: str | Path, *, trust_model: bool = False, **flags: Any
) -> ModelMetadata:
    """Metadata of a .keras/.h5/SavedModel (sidecar) or .tflite (embedded) model, flags applied.

    Loads the model only when it carries no metadata and its tensor shapes are needed.
    """
    path = Path(model_path)
    if path.suffix.lower() in (".tflite", ".onnx"):
        return open_predictor(path, **flags)[1]
    meta = read_sidecar(path)
    if meta is not None:
        return apply_flags(meta, (), (), **flags)
    return open_predictor(path, trust_model=trust_model, **flags)[1]


def open_predictor(
    model_path: str | Path,
    *,
    trust_model: bool = False,
    threads: int | None = None,
    **flags: Any,
) -> tuple[Callable[[np.ndarray], np.ndarray], ModelMetadata]:
    """A tile predictor and the metadata of any model file: .tflite, .onnx, .keras, .h5, SavedModel.

    The predictor maps float32 (n, H, W, C) tiles to float32 (n, h, w, K) probabilities.
    """
    path = Path(model_path)
    if path.suffix.lower() in (".tflite", ".onnx"):
        from edgeseg.runtime.backends import open_backend

        backend, _ = open_backend(path, delegate="cpu" if path.suffix == ".onnx" else "auto",
                                  threads=threads)  # fmt: skip
        meta = apply_flags(backend.metadata(), backend.input.shape, backend.output.shape, **flags)
        return backend.predict, meta
    from edgeseg.model.loading import load_model

    loaded = load_model(path, trust_model=trust_model)
    meta = apply_flags(read_sidecar(path), loaded.input_shape, loaded.output_shape, **flags)
    return loaded.predict, meta
