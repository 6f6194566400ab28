"""What a .tflite model takes, gives, is made of and says about itself (`edgeseg inspect`).

:func:`inspect_model` reads the file (validated before any interpreter sees it), opens it on
LiteRT for its tensors as they run, reads its embedded edgeseg metadata (unreadable metadata
is reported, not fatal: inspecting such a file is how one finds out what is wrong with it)
and, when asked, runs the Edge TPU preflight. The result is plain data: the CLI prints it as
tables or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.errors import ModelError

__all__ = ["Inspection", "inspect_model"]


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect_model` found.

    Attributes:
        report: JSON-ready: model, size_bytes, runtime, input/output (name, index, shape,
            shape_signature, dtype, scale, zero_point, quantized), subgraphs, tensors,
            operators, ops (name → count), weight_bytes, metadata_entries, metadata (the
            edgeseg metadata as a dict, or None), embedded (the rest of the embedded record),
            metadata_error (when unreadable), edgetpu_preflight (when asked), micro (flash
            and tensor arena for TensorFlow Lite Micro: carried by a `convert --micro`
            model, or measured when asked).
        embedded: The raw embedded record, or None.
        metadata_error: Why the embedded metadata cannot be read, or None.
        preflight: The Edge TPU preflight (``convert.edgetpu.Preflight``), when asked.
    """

    report: dict[str, Any]
    embedded: dict[str, Any] | None
    metadata_error: str | None
    preflight: Any = None


def inspect_model(model: str | Path, *, edgetpu: bool = False, micro: bool = False) -> Inspection:
    """Inspect a .tflite model (see the module docstring); one-line ModelError for a file that
    is not a sound .tflite model."""
    from edgeseg.core.tflite_file import op_histogram, parse_bytes, read_model_bytes, tensor_summary
    from edgeseg.runtime.backends import load_backend

    data, label = read_model_bytes(model)
    parse_bytes(data, label)  # a corrupt file is reported by its path, before any interpreter
    summary = tensor_summary(data)
    ops = op_histogram(data)
    backend = load_backend(model)
    embedded, meta, meta_error = _embedded(data)
    report: dict[str, Any] = {
        "model": str(model),
        "size_bytes": summary.size_bytes,
        "runtime": backend.runtime,
        "input": _tensor(backend.input, summary.inputs[0].shape),
        "output": _tensor(backend.output, summary.outputs[0].shape),
        "subgraphs": summary.subgraphs,
        "tensors": summary.tensors,
        "operators": summary.operators,
        "ops": ops,
        "weight_bytes": summary.weight_bytes,
        "metadata_entries": list(summary.metadata_names),
        "metadata": meta.to_dict() if meta is not None else None,
        "embedded": {k: v for k, v in embedded.items() if k != "metadata"} if embedded else None,
    }
    if meta_error:
        report["metadata_error"] = meta_error
    figures = _micro(model, data, embedded, measure=micro)
    if figures is not None:
        report["micro"] = figures
    pre = None
    if edgetpu:
        from edgeseg.convert.edgetpu import preflight

        pre = preflight(data, str(model))
        report["edgetpu_preflight"] = pre.to_dict()
    return Inspection(report, embedded, meta_error, pre)


def _micro(
    model: str | Path, data: bytes, embedded: dict[str, Any] | None, *, measure: bool
) -> dict[str, Any] | None:
    """Flash and tensor arena figures for TensorFlow Lite Micro: those a `convert --micro`
    model carries, else (``measure``) searched in TFLM now; None when neither."""
    carried = (embedded or {}).get("micro")
    if isinstance(carried, dict) and isinstance(carried.get("arena"), dict):
        arena = carried["arena"]
        return {
            "flash_bytes": len(data),
            "arena_bytes": arena.get("arena_bytes"),
            "arena_used_bytes": arena.get("used_bytes"),
            "measured_with": arena.get("measured_with"),
            "resolver": [o.get("method") for o in carried.get("ops", []) if isinstance(o, dict)],
            "fit": carried.get("fit"),
            "source": "embedded by convert --micro",
        }
    if not measure:
        return None
    from edgeseg.convert.micro import check_target, measure_arena, resolver_ops

    check_target(data, str(model))
    found = measure_arena(Path(model))
    return {
        "flash_bytes": len(data),
        "arena_bytes": found.arena_bytes,
        "arena_used_bytes": found.used_bytes,
        "measured_with": found.version,
        "resolver": [method for _op, method, _n in resolver_ops(data, str(model))],
        "fit": None,
        "source": "measured now",
    }


def _embedded(data: bytes) -> tuple[dict[str, Any] | None, Any, str | None]:
    """(raw embedded JSON, ModelMetadata or None, why it is unreadable or None)."""
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.tflite_file import read_embedded

    try:
        embedded = read_embedded(data)
    except ModelError as exc:
        return None, None, str(exc)
    if embedded is None:
        return None, None, None
    try:
        return embedded, ModelMetadata.from_dict(embedded.get("metadata")), None
    except ModelError as exc:
        return embedded, None, str(exc)


def _tensor(info: Any, file_shape: tuple[int, ...]) -> dict[str, Any]:
    d = info.to_dict()
    d["shape_signature"] = list(file_shape)
    d["quantized"] = info.quantized
    return d
