"""OpenVINO: a .tflite (int8 included) or .onnx model on x86-64 edge PCs (oneDNN: AVX-512
VNNI, AMX) and arm64.

OpenVINO reads both formats itself, so the same artefacts LiteRT and onnxruntime run need no
conversion; ``--backend auto`` measures it against the file's own runtime.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.quant import TensorInfo
from edgeseg.errors import DataError, MissingDependencyError, ModelError
from edgeseg.runtime.backends.base import (
    Opened,
    QuantizedModel,
    check_raw,
    detail,
    image_model_input,
    nominal_shapes,
    onnx_metadata,
    sized_tensors,
)
from edgeseg.runtime.backends.registry import Runtime

__all__ = ["OPENVINO_INSTALL_HINT", "RUNTIME", "OpenVinoBackend"]

OPENVINO_INSTALL_HINT = "install it with: pip install 'edgeseg[openvino]'"


def _openvino() -> Any:
    """The ``openvino`` module, or a one-line error naming the extra."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(
            f"OpenVINO is not installed ({exc}); {OPENVINO_INSTALL_HINT}"
        ) from exc
    return openvino


class OpenVinoBackend(QuantizedModel):
    """A .tflite (int8 included) or .onnx image-to-mask model on OpenVINO.

    OpenVINO reads both formats itself. An integer .tflite keeps its integer input and output
    (e.g. int8 with the file's scale and zero point), so tiles are fed and read exactly as
    LiteRT's are and the label maps match LiteRT's bit for bit. Float models are compiled with
    ``INFERENCE_PRECISION_HINT=f32``: on CPUs with AMX OpenVINO would otherwise compute an
    fp32 model in bf16 (an artefact runs at its own precision). One ``InferRequest`` is
    reused across calls.

    Attributes:
        path: The model file.
        runtime: e.g. "openvino 2026.4.1 (CPU)".
        input, output: (B, H, W, C) and (B, h, w, K), dtypes and quantization as the file
            declares them (the batch fixed to 1 when it is dynamic).
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default).
        precision: The compiled model's inference precision, e.g. "f32".
    """

    def __init__(
        self, model_path: str | Path, *, threads: int | None = None, device: str = "CPU"
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        ov = _openvino()
        self.path = Path(model_path)
        self.threads = threads
        self.device = device
        label = str(self.path)
        tflite = self.path.suffix.lower() == ".tflite"
        declared: tuple[TensorInfo, TensorInfo] | None = None
        if tflite:
            from edgeseg.core.tflite_file import tensor_summary

            # Parsed and checked first: a corrupt flatbuffer must not reach the C++ reader.
            summary = tensor_summary(self.path)
            if len(summary.inputs) == 1 and len(summary.outputs) == 1:
                declared = (summary.inputs[0], summary.outputs[0])
        elif not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        version = ov.get_version().split("-")[0]
        self.runtime = f"openvino {version} ({device})"
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise ModelError(f"{label} cannot be read by {self.runtime}: {detail(exc)}") from exc
        inputs, outputs = list(model.inputs), list(model.outputs)
        shapes_in, shapes_out = [_ov_shape(i) for i in inputs], [_ov_shape(o) for o in outputs]
        # A model for whole frames of any size (size_multiple) compiles at its nominal size,
        # and at each frame's size through at_size.
        meta = None if tflite else onnx_metadata(self.path)
        shapes_in, shapes_out, self.dynamic = nominal_shapes(shapes_in, shapes_out, meta)
        b, h, w, _ = image_model_input(
            label,
            shapes_in,
            shapes_out,
            [i.get_element_type().to_dtype().name for i in inputs],
            "convert the model with a fixed input size",
        )
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device.upper().startswith("CPU"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._core, self._config = core, config
        self._compile(model, (h, w), reshape=b < 1 or self.dynamic)
        try:  # what the plugin computes floats in (f32 asked for on the CPU)
            hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
            self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        except Exception:
            self.precision = "?"
        out_shape = tuple(int(d) for d in self._compiled.outputs[0].get_shape())
        in_shape = tuple(int(d) for d in self._compiled.inputs[0].get_shape())
        out_type = self._compiled.outputs[0].get_element_type().to_dtype().name
        in_type = self._compiled.inputs[0].get_element_type().to_dtype().name
        name_in = inputs[0].get_any_name()
        name_out = outputs[0].get_any_name() if outputs[0].get_names() else "output"
        self.input = TensorInfo(name_in, 0, in_shape, in_type)
        self.output = TensorInfo(name_out, 0, out_shape, out_type)
        if declared is not None:  # the file's own quantization of its integer I/O
            d_in, d_out = declared
            if d_in.dtype == in_type and d_in.quantized:
                self.input = TensorInfo(name_in, 0, in_shape, in_type, d_in.scale, d_in.zero_point)
            if d_out.dtype == out_type and d_out.quantized:
                self.output = TensorInfo(
                    name_out, 0, out_shape, out_type, d_out.scale, d_out.zero_point
                )
        if np.issubdtype(np.dtype(in_type), np.integer) and not self.input.quantized:
            raise ModelError(
                f"{label}: {self.runtime} presents an {in_type} input without quantization "
                "parameters, so tiles cannot be mapped to it"
            )

    def _compile(self, model: Any, size: tuple[int, int], *, reshape: bool) -> None:
        """Compile ``model`` (reshaped to batch 1 and ``size`` when asked) for this device."""
        try:
            if reshape:
                c = _ov_shape(model.inputs[0])[3]
                model.reshape({model.inputs[0].get_any_name(): [1, size[0], size[1], c]})
            self._compiled = self._core.compile_model(model, self.device, self._config)
            self._request = self._compiled.create_infer_request()
        except Exception as exc:
            raise ModelError(
                f"{self.path} cannot be compiled by {self.runtime}: {detail(exc)}"
            ) from exc

    def at_size(self, size: tuple[int, int]) -> OpenVinoBackend:
        """This model (dynamic H/W) compiled for input ``size`` (H, W): another compiled
        model and request, the same file, threads and device."""
        if not self.dynamic:
            raise ModelError(f"{self.path} takes {self.input_size[0]}x{self.input_size[1]} only")
        other = copy.copy(self)
        try:
            model = self._core.read_model(str(self.path))
        except Exception as exc:
            raise ModelError(
                f"{self.path} cannot be read by {self.runtime}: {detail(exc)}"
            ) from exc
        other._compile(model, size, reshape=True)
        other.input, other.output = sized_tensors(self.input, self.output, size)
        return other

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One raw inference: ``x`` in the input's dtype and exact shape (B, H, W, C).

        Returns a copy of the raw output, (B, h, w, K) in the output's dtype.
        """
        x = check_raw(x, self.input, self.path.name)
        try:
            # share_inputs: no copy of a contiguous input; the output is copied below, since
            # the request's own buffer is overwritten by the next call.
            self._request.infer({0: np.ascontiguousarray(x)}, share_inputs=True)
            return np.array(self._request.get_output_tensor(0).data, copy=True)
        except Exception as exc:
            raise ModelError(f"{self.path}: inference failed: {detail(exc)}") from exc

    def _read_metadata(self) -> ModelMetadata | None:
        """The edgeseg metadata of the file (embedded in a .tflite, ``metadata_props`` of an
        .onnx)."""
        if self.path.suffix.lower() == ".tflite":
            from edgeseg.core.tflite_file import read_metadata

            return read_metadata(self.path)
        return onnx_metadata(self.path)


def _ov_shape(port: Any) -> tuple[int, ...]:
    """A port's partial shape, -1 for dynamic dimensions."""
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        return ()
    return tuple(d.get_length() if d.is_static else -1 for d in shape)


# --------------------------------------------------------------------------------------------
# The registry entry


def _open(
    path: Path,
    *,
    threads: int | None = None,
    delegate: str = "auto",
    device: str | None = None,
    fallback: bool = False,
    warn: Any = None,
) -> Opened:
    """The model on OpenVINO's CPU plugin (delegates are LiteRT's and onnxruntime's)."""
    if delegate not in ("auto", "cpu"):
        raise DataError(f"--backend openvino cannot take --delegate {delegate}")
    backend = OpenVinoBackend(path, threads=threads)
    return Opened(backend, "openvino", path, "CPU", None, threads)


def _reopen(backend: Backend, threads: int | None) -> Backend:
    if not isinstance(backend, OpenVinoBackend):
        raise DataError(f"cannot open another instance of {type(backend).__name__} on OpenVINO")
    return OpenVinoBackend(backend.path, threads=threads, device=backend.device)


def _load() -> None:
    _openvino()


RUNTIME = Runtime(
    name="openvino",
    title="OpenVINO",
    reads=(".tflite", ".onnx"),
    distributions=("openvino",),
    modules=("openvino",),
    install=OPENVINO_INSTALL_HINT,
    open=_open,
    reopen=_reopen,
    load=_load,
)
