"""A Keras model file (``.keras``, legacy ``.h5``, SavedModel) as a float backend and its
metadata: sidecar, or inferred from the model's tensors with the user's flags.

Device artefacts (``.tflite``, ``.onnx``) are the runtime's (:func:`edgeseg.runtime.backends.
open_model`); :func:`edgeseg.session.open_any_model` composes the two for commands that take
either, so this module never imports a runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeseg.core.backend import CallableBackend
from edgeseg.core.metadata import ModelMetadata, apply_flags, read_sidecar

__all__ = ["keras_metadata", "open_keras_model"]


def keras_metadata(
    model_path: str | Path, *, trust_model: bool = False, **flags: Any
) -> ModelMetadata:
    """Metadata of a .keras/.h5/SavedModel model (its sidecar), flags applied.

    Loads the model only when it carries no metadata and its tensor shapes are needed.
    """
    path = Path(model_path)
    meta = read_sidecar(path)
    if meta is not None:
        return apply_flags(meta, (), (), **flags)
    return open_keras_model(path, trust_model=trust_model, **flags)[1]


def open_keras_model(
    model_path: str | Path, *, trust_model: bool = False, **flags: Any
) -> tuple[CallableBackend, ModelMetadata]:
    """A float backend over a Keras model's ``predict``, and its metadata (sidecar, or
    inferred from its tensors, flags applied). Loaded safely (:mod:`edgeseg.model.loading`)."""
    from edgeseg.model.loading import load_model

    path = Path(model_path)
    loaded = load_model(path, trust_model=trust_model)  # refuses what is not a Keras model
    meta = apply_flags(read_sidecar(path), loaded.input_shape, loaded.output_shape, **flags)
    return CallableBackend(loaded.predict, meta, path=path), meta
