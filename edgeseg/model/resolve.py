"""Find a model's metadata, whatever the model file: sidecar, embedded, or inferred + flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeseg.core.backend import Backend, CallableBackend
from edgeseg.core.metadata import ModelMetadata, apply_flags, read_sidecar


def model_metadata(
    model_path: str | Path, *, trust_model: bool = False, **flags: Any
) -> ModelMetadata:
    """Metadata of a .keras/.h5/SavedModel (sidecar) or .tflite (embedded) model, flags applied.

    Loads the model only when it carries no metadata and its tensor shapes are needed.
    """
    path = Path(model_path)
    if path.suffix.lower() in (".tflite", ".onnx"):
        return open_model(path, **flags)[1]
    meta = read_sidecar(path)
    if meta is not None:
        return apply_flags(meta, (), (), **flags)
    return open_model(path, trust_model=trust_model, **flags)[1]


def open_model(
    model_path: str | Path,
    *,
    trust_model: bool = False,
    threads: int | None = None,
    **flags: Any,
) -> tuple[Backend, ModelMetadata]:
    """A backend and the metadata of any model file: .tflite, .onnx, .keras, .h5, SavedModel.

    A Keras model becomes a float backend over its ``predict``; a .tflite or .onnx model the
    runtime's backend, on the CPU, as `run` opens it.
    """
    path = Path(model_path)
    if path.suffix.lower() in (".tflite", ".onnx"):
        from edgeseg.runtime.backends import open_backend

        backend, _ = open_backend(path, delegate="cpu" if path.suffix == ".onnx" else "auto",
                                  threads=threads)  # fmt: skip
        meta = apply_flags(backend.metadata(), backend.input.shape, backend.output.shape, **flags)
        return backend, meta
    from edgeseg.model.loading import load_model

    loaded = load_model(path, trust_model=trust_model)
    meta = apply_flags(read_sidecar(path), loaded.input_shape, loaded.output_shape, **flags)
    return CallableBackend(loaded.predict, meta, path=path), meta
