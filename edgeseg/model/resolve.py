"""Find a model's metadata, whatever the model file: sidecar, embedded, or inferred + flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeseg.model.metadata import ModelMetadata, infer_metadata, read_sidecar


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
    if path.suffix.lower() == ".tflite":
        from edgeseg.convert.tflite_meta import read_metadata
        from edgeseg.runtime.backends import load_backend

        backend = load_backend(path)
        meta = read_metadata(path)
        return apply_flags(meta, backend.input.shape, backend.output.shape, **flags)
    meta = read_sidecar(path)
    if meta is not None and not flags.get("input_size"):
        return apply_flags(meta, (), (), **flags)
    from edgeseg.model.loading import load_model

    loaded = load_model(path, trust_model=trust_model)
    return apply_flags(meta, loaded.input_shape, loaded.output_shape, **flags)
