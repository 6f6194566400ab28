"""Keras / SavedModel → ONNX (static batch 1, a current opset) for TensorRT on a Jetson.

On a Jetson the TFLite GPU delegate is slower than the CPU; TensorRT runs ONNX models, through
onnxruntime's TensorRT or CUDA execution providers. The export goes through ``tf2onnx`` from a
traced TensorFlow function of the model, with the same static batch-1 tile input as every
TFLite artefact. edgeseg's metadata travels in the model's ``metadata_props`` under the key
``edgeseg`` (JSON), readable with onnxruntime alone.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.errors import ModelError
from edgeseg.optional import require

OPSET = 17
METADATA_KEY = "edgeseg"
INPUT_NAME = "image"
OUTPUT_NAME = "mask"


@dataclass(frozen=True)
class OnnxExport:
    data: bytes
    opset: int
    seconds: float


def export_onnx(
    loaded: Any, meta: ModelMetadata, *, opset: int = OPSET, extra: dict[str, Any] | None = None
) -> OnnxExport:
    """A loaded model (see :func:`edgeseg.model.loading.load_model`) as ONNX bytes.

    The input ``image`` is float32 (1, H, W, C) of the metadata's tile size; the output
    ``mask`` is the model's (1, h, w, K) probabilities.
    """
    tf = require("tensorflow")
    tf2onnx = require("tf2onnx")
    start = time.perf_counter()
    h, w = meta.input_size
    spec = tf.TensorSpec((1, h, w, meta.channels), tf.float32, name=INPUT_NAME)
    if loaded.keras_model is not None:
        model = loaded.keras_model

        @tf.function(input_signature=[spec])
        def serve(x: Any) -> Any:
            return {OUTPUT_NAME: model(x, training=False)}

    else:
        signature = loaded.saved_model.signatures["serving_default"]
        in_name, out_name = loaded.input_name, loaded.output_name

        @tf.function(input_signature=[spec])
        def serve(x: Any) -> Any:
            return {OUTPUT_NAME: signature(**{in_name: x})[out_name]}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
    except Exception as exc:  # tf2onnx raises many types for unsupported graphs
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX export failed: {first}") from exc
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps({"metadata": meta.to_dict(), **(extra or {})})
    proto.producer_name = "edgeseg"
    return OnnxExport(proto.SerializeToString(), opset, time.perf_counter() - start)


def export_imported_onnx(
    source: str | Path, meta: ModelMetadata, *, extra: dict[str, Any] | None = None
) -> OnnxExport:
    """An imported model's prepared ONNX (NCHW, probabilities) as edgeseg's ONNX artefact:
    the same graph with NHWC ``image`` (1, H, W, C) in and ``mask`` (1, h, w, K) out (two
    exact Transposes) and the metadata, without a round trip through TensorFlow."""
    from edgeseg.core.onnx_graph import nhwc_wrapped, opset_of

    onnx = require("onnx")
    start = time.perf_counter()
    proto = nhwc_wrapped(onnx.load(str(source)), INPUT_NAME, OUTPUT_NAME)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps({"metadata": meta.to_dict(), **(extra or {})})
    proto.producer_name = "edgeseg"
    return OnnxExport(proto.SerializeToString(), opset_of(proto), time.perf_counter() - start)


def quantize_onnx(
    float_data: bytes, tiles: np.ndarray, *, extra: dict[str, Any] | None = None
) -> OnnxExport:
    """A float edgeseg ONNX artefact as static int8 QDQ ONNX (onnxruntime.quantization),
    calibrated on ``tiles`` (float32 ``(N, H, W, C)``, the calibration set of the TFLite
    int8 artefacts), float I/O kept.

    Weights int8 per channel, activations int8 symmetric (zero point 0, what TensorRT's
    explicit quantization takes; onnxruntime and OpenVINO run it too). The metadata of the
    float model is carried over, ``extra`` (the provenance) replacing its own.
    """
    onnx = require("onnx")
    quant = require("onnxruntime.quantization")
    start = time.perf_counter()
    model = onnx.load_from_string(float_data)
    meta_json = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    name = model.graph.input[0].name
    batches = iter([{name: t[None].astype(np.float32)} for t in np.asarray(tiles)])

    class _Reader(quant.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    with tempfile.TemporaryDirectory(prefix="edgeseg-qdq-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_data)
        try:
            quant.quantize_static(
                str(src), str(dst), _Reader(),
                quant_format=quant.QuantFormat.QDQ, per_channel=True,
                activation_type=quant.QuantType.QInt8, weight_type=quant.QuantType.QInt8,
                calibrate_method=quant.CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True},
            )  # fmt: skip
        except Exception as exc:  # onnxruntime raises many types for graphs it cannot take
            raise ModelError(f"int8 ONNX quantization failed: {_first_line(exc)}") from exc
        proto = onnx.load(str(dst))
    del proto.metadata_props[:]
    if meta_json is not None:
        entry = proto.metadata_props.add()
        entry.key = METADATA_KEY
        record = json.loads(meta_json)
        entry.value = json.dumps({"metadata": record.get("metadata"), **(extra or {})})
    proto.producer_name = "edgeseg"
    return OnnxExport(proto.SerializeToString(), opset_of_model(proto), time.perf_counter() - start)


def opset_of_model(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def op_histogram(data: bytes) -> dict[str, int]:
    """ONNX node type → count (needs the ``onnx`` package, which the ``onnx`` extra brings)."""
    onnx = require("onnx")
    model = onnx.load_from_string(data)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
