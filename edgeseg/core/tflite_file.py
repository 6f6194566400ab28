"""What a .tflite file says about itself: edgeseg metadata, ops and tensors, without TensorFlow.

`convert` embeds the model's :class:`ModelMetadata` in every .tflite it writes, so `run`,
`eval` and `bench` need no flags on the device. It lives in a ``Model.metadata`` entry named
``"edgeseg"`` whose buffer holds UTF-8 JSON::

    {"metadata": {...ModelMetadata.to_dict()...}, "source_sha256": "...", "recipe": "..."}

Other metadata entries (the converter's ``min_runtime_version`` and ``CONVERSION_METADATA``)
are kept. The flatbuffer is read with the schema bindings that ship with LiteRT
(``ai_edge_litert.schema_py_generated``, which needs only the ``flatbuffers`` package), or
TensorFlow's copy when LiteRT is absent; no interpreter is created here.

Every reader validates the file first (identifier, size, a full parse, index ranges) and
turns any problem into a one-line :class:`ModelError` "PATH is not a valid .tflite model: …",
because a corrupt flatbuffer must never reach the C++ interpreter unchecked.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.quant import TensorInfo
from edgeseg.errors import MissingDependencyError, ModelError

__all__ = [
    "METADATA_NAME",
    "TFLITE_IDENTIFIER",
    "TensorSummary",
    "embed_metadata",
    "op_histogram",
    "parse_bytes",
    "parse_model",
    "read_embedded",
    "read_metadata",
    "read_model_bytes",
    "tensor_summary",
]

METADATA_NAME = "edgeseg"
TFLITE_IDENTIFIER = b"TFL3"

#: A .tflite file's path, or its contents.
Source = str | Path | bytes | bytearray | memoryview

_MAX_DETAIL = 160
# Repacked buffers (weights) start on 16-byte boundaries, as the schema's ``force_align: 16``
# asks (the Python bindings ignore it and would align them to 1 byte only): kernels read
# weights in place, and float32 weights at odd addresses are unaligned loads on ARM.
_BUFFER_ALIGNMENT = 16


@lru_cache(maxsize=1)
def schema() -> ModuleType:
    """The TFLite flatbuffer bindings: LiteRT's, else TensorFlow's."""
    try:
        from ai_edge_litert import schema_py_generated

        return schema_py_generated
    except ImportError:
        pass
    try:
        from tensorflow.lite.python import schema_py_generated  # type: ignore[no-redef]

        return schema_py_generated
    except ImportError as exc:
        raise MissingDependencyError(
            "reading .tflite files needs LiteRT (or TensorFlow), which is not installed; "
            "install it with: pip install 'edgeseg[runtime]'"
        ) from exc


# --------------------------------------------------------------------------------------------
# Reading and validating
# --------------------------------------------------------------------------------------------


def read_model_bytes(source: Source) -> tuple[bytes, str]:
    """(contents, label) of a .tflite path or of bytes; the label names it in error messages.

    A missing file, a directory or an unreadable file is a one-line :class:`ModelError`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the model"
    path = Path(source)
    if not path.exists():
        raise ModelError(f"{path} not found")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a .tflite model")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc


def parse_model(source: Source) -> Any:
    """The validated model as the schema's object tree (``ModelT``); ModelError if invalid."""
    data, label = read_model_bytes(source)
    return parse_bytes(data, label)


def _invalid(label: str, why: str) -> ModelError:
    # A corrupt file can put anything into names quoted in ``why``: keep the message short.
    why = " ".join(why.split())
    return ModelError(f"{label} is not a valid .tflite model: {why[:300]}")


def _what_it_looks_like(data: bytes) -> str:
    if data[:2] == b"PK":
        return " (it is a zip archive, e.g. a .keras model: convert it with `edgeseg convert`)"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return " (it is an HDF5 file, e.g. a Keras .h5 model: convert it with `edgeseg convert`)"
    return ""


def parse_bytes(data: bytes, label: str = "the model") -> Any:
    """Check identifier and size, unpack the whole flatbuffer, check index ranges."""
    if not data:
        raise _invalid(label, "the file is empty")
    if len(data) < 16:
        raise _invalid(label, f"only {len(data)} bytes")
    if data[4:8] != TFLITE_IDENTIFIER:
        raise _invalid(label, "no TFL3 file identifier" + _what_it_looks_like(data))
    (root,) = struct.unpack_from("<I", data, 0)
    if not 8 <= root < len(data) - 4:
        raise _invalid(label, f"root table offset {root} is outside the {len(data)}-byte file")
    fb = schema()
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    except Exception as exc:  # any parse failure of untrusted bytes is "corrupt"
        raise _invalid(label, f"the flatbuffer is truncated or corrupt ({_detail(exc)})") from exc
    _resolve_offsets(model, data, label)
    _check_indices(model, label)
    return model


def _resolve_offsets(model: Any, data: bytes, label: str) -> None:
    """Buffers of models over 2 GB live after the flatbuffer, addressed by offset and size."""
    for i, buf in enumerate(model.buffers or []):
        if buf.offset:
            if buf.offset + buf.size > len(data):
                raise _invalid(label, f"buffer {i} ends beyond the end of the file")
            buf.data = np.frombuffer(data, np.uint8, count=buf.size, offset=buf.offset)
            buf.offset = buf.size = 0
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            if op.largeCustomOptionsOffset:
                end = op.largeCustomOptionsOffset + op.largeCustomOptionsSize
                if end > len(data):
                    raise _invalid(label, "custom options end beyond the end of the file")
                op.customOptions = np.frombuffer(
                    data,
                    np.uint8,
                    count=op.largeCustomOptionsSize,
                    offset=op.largeCustomOptionsOffset,
                )
                op.largeCustomOptionsOffset = op.largeCustomOptionsSize = 0


def _check_indices(model: Any, label: str) -> None:
    """Every index into buffers, op codes and tensors is in range."""
    subgraphs = model.subgraphs or []
    if not subgraphs:
        raise _invalid(label, "it has no subgraph")
    n_buffers = len(model.buffers or [])
    n_codes = len(model.operatorCodes or [])
    for s, sg in enumerate(subgraphs):
        tensors = sg.tensors or []
        n = len(tensors)
        for t, tensor in enumerate(tensors):
            if not 0 <= tensor.buffer < max(n_buffers, 1):
                raise _invalid(label, f"tensor {t} refers to buffer {tensor.buffer} of {n_buffers}")
        for role, ids in (("input", sg.inputs), ("output", sg.outputs)):
            for i in as_list(ids):
                if not 0 <= i < n:
                    raise _invalid(label, f"subgraph {s} {role} {i} is not one of its {n} tensors")
        for o, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                raise _invalid(label, f"operator {o} has op code {op.opcodeIndex} of {n_codes}")
            for i in (*as_list(op.inputs), *as_list(op.outputs)):
                if not -1 <= i < n:  # -1 marks an omitted optional input
                    raise _invalid(label, f"operator {o} uses tensor {i} of {n}")
    for entry in model.metadata or []:
        if not 0 <= entry.buffer < n_buffers:
            raise _invalid(
                label, f"metadata {as_text(entry.name)[:40]!r} refers to a missing buffer"
            )


# --------------------------------------------------------------------------------------------
# Embedded edgeseg metadata
# --------------------------------------------------------------------------------------------


def embed_metadata(
    tflite_bytes: bytes, meta: ModelMetadata, extra: dict[str, Any] | None = None
) -> bytes:
    """The .tflite ``tflite_bytes`` with ``meta`` (and ``extra`` provenance) embedded as JSON.

    An existing ``"edgeseg"`` entry is replaced; other metadata entries are kept. ``extra``
    holds JSON-serialisable fields stored beside the metadata, e.g. ``{"source_sha256": …,
    "recipe": "int8-cpu"}``. The graph, weights and signatures are unchanged.
    """
    extra = dict(extra or {})
    if "metadata" in extra:
        raise ValueError("extra must not hold a 'metadata' key")
    blob = json.dumps({"metadata": meta.to_dict(), **extra}, sort_keys=True).encode("utf-8")
    data, label = read_model_bytes(tflite_bytes)
    model = parse_bytes(data, label)
    fb = schema()
    model.buffers = list(model.buffers or [])
    entries = list(model.metadata or [])
    ours = [e for e in entries if as_text(e.name) == METADATA_NAME]
    others = [e for e in entries if as_text(e.name) != METADATA_NAME]
    used = {t.buffer for sg in model.subgraphs for t in sg.tensors or []}
    used |= {e.buffer for e in others} | {0}  # buffer 0 is the shared empty sentinel
    reusable = [e.buffer for e in ours if e.buffer not in used]
    if reusable:
        index = reusable[0]
    else:
        model.buffers.append(fb.BufferT())
        index = len(model.buffers) - 1
    model.buffers[index].data = np.frombuffer(blob, dtype=np.uint8)
    model.buffers[index].offset = model.buffers[index].size = 0
    entry = fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = index
    model.metadata = [*others, entry]
    builder = aligned_builder()(len(data) + len(blob) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def read_embedded(source: Source) -> dict[str, Any] | None:
    """The embedded edgeseg JSON object, or None when the model carries none."""
    data, label = read_model_bytes(source)
    return _embedded(parse_bytes(data, label), label)


def read_metadata(source: Source) -> ModelMetadata | None:
    """The embedded :class:`ModelMetadata`, or None when the model carries none."""
    data, label = read_model_bytes(source)
    embedded = _embedded(parse_bytes(data, label), label)
    if embedded is None:
        return None
    if "metadata" not in embedded:
        raise ModelError(f"{label}: the embedded edgeseg JSON has no 'metadata' object")
    try:
        return ModelMetadata.from_dict(embedded["metadata"])
    except ModelError as exc:
        raise ModelError(f"{label}: embedded {exc}") from exc


def _embedded(model: Any, label: str) -> dict[str, Any] | None:
    entries = [e for e in model.metadata or [] if as_text(e.name) == METADATA_NAME]
    if not entries:
        return None
    buf = model.buffers[entries[-1].buffer]
    raw = bytes(np.asarray(buf.data, dtype=np.uint8)) if buf.data is not None else b""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"{label}: the embedded edgeseg metadata is not valid JSON ({_detail(exc)})"
        ) from exc
    if not isinstance(value, dict):
        raise ModelError(f"{label}: the embedded edgeseg metadata is not a JSON object")
    return value


# --------------------------------------------------------------------------------------------
# Ops and tensors
# --------------------------------------------------------------------------------------------


def op_histogram(source: Source) -> dict[str, int]:
    """Op name → count over all subgraphs, most frequent first.

    Builtin ops by their schema name ("CONV_2D", "CONCATENATION"), custom ops by their custom
    name ("edgetpu-custom-op"); an op code this schema does not know is "BUILTIN_<code>".
    """
    model = parse_model(source)
    fb = schema()
    names = builtin_names()
    counts: Counter[str] = Counter()
    for sg in model.subgraphs:
        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin == fb.BuiltinOperator.CUSTOM:
                counts[as_text(code.customCode) or "CUSTOM"] += 1
            else:
                counts[names.get(builtin, f"BUILTIN_{builtin}")] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class TensorSummary:
    """What the flatbuffer declares, read without an interpreter.

    ``inputs`` and ``outputs`` are the main subgraph's, with the shape *signature* (-1 marks
    a dynamic dimension, typically the batch). ``weight_bytes`` maps a dtype name to the bytes
    of constant tensors of that type ("int8": 15000 for an int8 model).
    """

    size_bytes: int
    subgraphs: int
    tensors: int
    operators: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    weight_bytes: dict[str, int]
    metadata_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "subgraphs": self.subgraphs,
            "tensors": self.tensors,
            "operators": self.operators,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "weight_bytes": dict(self.weight_bytes),
            "metadata_names": list(self.metadata_names),
        }


def tensor_summary(source: Source) -> TensorSummary:
    """Sizes, tensor counts, I/O tensors and weight bytes per dtype of a .tflite model."""
    data, label = read_model_bytes(source)
    model = parse_bytes(data, label)
    main = model.subgraphs[0]
    tensors = main.tensors or []
    weights: Counter[str] = Counter()
    seen: set[int] = set()
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            buf = model.buffers[t.buffer] if t.buffer else None
            if buf is None or buf.data is None or t.buffer in seen:
                continue
            seen.add(t.buffer)
            weights[dtype_name(t.type)] += len(buf.data)
    return TensorSummary(
        size_bytes=len(data),
        subgraphs=len(model.subgraphs),
        tensors=sum(len(sg.tensors or []) for sg in model.subgraphs),
        operators=sum(len(sg.operators or []) for sg in model.subgraphs),
        inputs=tuple(_info(tensors, i) for i in as_list(main.inputs)),
        outputs=tuple(_info(tensors, i) for i in as_list(main.outputs)),
        weight_bytes=dict(sorted(weights.items(), key=lambda kv: -kv[1])),
        metadata_names=tuple(as_text(e.name) for e in model.metadata or []),
    )


def _info(tensors: list[Any], index: int) -> TensorInfo:
    t = tensors[index]
    shape = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
    q = t.quantization
    scales = as_list(q.scale) if q is not None else []
    zeros = as_list(q.zeroPoint) if q is not None else []
    return TensorInfo(
        name=as_text(t.name),
        index=int(index),
        shape=tuple(int(d) for d in as_list(shape)),
        dtype=dtype_name(t.type),
        scale=float(scales[0]) if len(scales) == 1 else 0.0,
        zero_point=int(zeros[0]) if len(zeros) == 1 else 0,
    )


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def aligned_builder() -> type:
    """A flatbuffers Builder whose byte vectors (the buffers) start on 16-byte boundaries."""
    import flatbuffers

    class AlignedBuilder(flatbuffers.Builder):
        def CreateNumpyVector(self, x: np.ndarray) -> int:
            if x.dtype != np.uint8 or x.ndim != 1:
                return super().CreateNumpyVector(x)
            self.StartVector(1, x.size, _BUFFER_ALIGNMENT)
            self.head = self.head - x.size
            self.Bytes[self.head : self.head + x.size] = x.tobytes()
            self.vectorNumElems = x.size
            return self.EndVector()

    return AlignedBuilder


@lru_cache(maxsize=1)
def builtin_names() -> dict[int, str]:
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


@lru_cache(maxsize=1)
def _type_names() -> dict[int, str]:
    types = schema().TensorType
    return {v: k for k, v in vars(types).items() if not k.startswith("_") and isinstance(v, int)}


def dtype_name(tensor_type: int) -> str:
    """Schema TensorType → numpy dtype name ("FLOAT32" → "float32", "BOOL" → "bool")."""
    name = _type_names().get(tensor_type, f"type{tensor_type}")
    return name.lower()


def as_list(values: Any) -> list[Any]:
    if values is None:
        return []
    return [v.item() if hasattr(v, "item") else v for v in values]


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return str(value)


def _detail(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
