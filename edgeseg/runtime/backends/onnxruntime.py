"""onnxruntime: an .onnx model on TensorRT, CUDA or the CPU (the Jetson path).

``--delegate`` picks the execution provider: ``auto`` takes TensorRT, then CUDA, then the CPU,
whichever this onnxruntime has (the CPU always last, as the fallback for nodes the others do
not take); ``tensorrt``, ``cuda`` or ``cpu`` asks for that one.
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
    ImageModel,
    Opened,
    check_raw,
    check_tiles,
    detail,
    image_model_input,
    nominal_shapes,
    parse_metadata_json,
    sized_tensors,
)
from edgeseg.runtime.backends.registry import Runtime

__all__ = [
    "ORT_INSTALL_HINT",
    "ORT_PROVIDERS",
    "RUNTIME",
    "OnnxBackend",
    "choose_providers",
    "provider_name",
]

ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ORT_INSTALL_HINT = (
    "on a Jetson install NVIDIA's onnxruntime-gpu wheel for your JetPack (PyPI has no aarch64 "
    "GPU build); elsewhere pip install 'edgeseg[onnx]'"
)
# What each provider is, for what `run` prints: (device, accelerator).
_PROVIDER_DEVICE = {
    "TensorrtExecutionProvider": ("GPU", "TensorRT"),
    "CUDAExecutionProvider": ("GPU", "CUDA"),
    "CPUExecutionProvider": ("CPU", None),
}


def choose_providers(
    available: list[str],
    requested: str = "auto",
    *,
    trt_cache: str | Path | None = None,
    trt_fp16: bool = False,
) -> list[Any]:
    """onnxruntime providers to ask for, best first, with their options.

    ``auto``: TensorRT, then CUDA, then CPU, whichever are present (CPU is always last, as
    the fallback for nodes the others do not take). ``tensorrt``/``cuda``/``cpu``: that one
    (plus CPU), or a one-line error naming what this onnxruntime has.
    """
    if requested == "auto":
        wanted = [p for p in ORT_PROVIDERS.values() if p in available]
    elif requested in ORT_PROVIDERS:
        name = ORT_PROVIDERS[requested]
        if name not in available:
            raise MissingDependencyError(
                f"onnxruntime has no {name} here (it has {', '.join(available) or 'none'}); "
                + ORT_INSTALL_HINT
            )
        wanted = [name] + (["CPUExecutionProvider"] if name != "CPUExecutionProvider" else [])
    else:
        raise DataError(
            f"unknown ONNX provider {requested!r}; use auto, {', '.join(ORT_PROVIDERS)}"
        )
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    result: list[Any] = []
    for p in wanted:
        if p == "TensorrtExecutionProvider":
            options: dict[str, Any] = {"trt_fp16_enable": bool(trt_fp16)}
            if trt_cache:
                Path(trt_cache).mkdir(parents=True, exist_ok=True)
                options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache))
            result.append((p, options))
        else:
            result.append(p)
    return result


class OnnxBackend(ImageModel):
    """An .onnx image-to-mask model on onnxruntime, behind the same interface as the others.

    Attributes:
        provider: The first execution provider of the session, e.g. "CPUExecutionProvider".
        runtime: e.g. "onnxruntime 1.32.0 (CPUExecutionProvider)".
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        provider: str = "auto",
        threads: int | None = None,
        trt_cache: str | Path | None = None,
        trt_fp16: bool = False,
    ) -> None:
        from edgeseg.optional import require

        ort = require("onnxruntime")
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        providers = choose_providers(
            ort.get_available_providers(), provider, trt_cache=trt_cache, trt_fp16=trt_fp16
        )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{self.path} is not a valid ONNX model: {detail(exc)}") from exc
        self.provider = self.session.get_providers()[0]
        self.runtime = f"onnxruntime {ort.__version__} ({self.provider})"
        self.threads = threads
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shapes_out = [tuple(d if isinstance(d, int) else -1 for d in o.shape) for o in outputs]
        shapes_in = [tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in inputs]
        # A model for whole frames of any size (size_multiple) opens at its nominal size.
        shapes_in, shapes_out, self.dynamic = nominal_shapes(shapes_in, shapes_out, self.metadata())
        b, h, w, c = image_model_input(
            self.path,
            shapes_in,
            shapes_out,
            ["float32" if i.type == "tensor(float)" else i.type for i in inputs],
            "export it with a fixed tile size",
            accepted=("float32",),
        )
        self.input = TensorInfo(inputs[0].name, 0, (max(b, 1), h, w, c), "float32")
        out = tuple(max(d, 1) if i == 0 else d for i, d in enumerate(shapes_out[0]))
        self.output = TensorInfo(outputs[0].name, 0, out, "float32")

    def at_size(self, size: tuple[int, int]) -> OnnxBackend:
        """This model (dynamic H/W) as a backend of input ``size`` (H, W): the same session,
        its tensors described at that size."""
        if not self.dynamic:
            raise ModelError(f"{self.path} takes {self.input_size[0]}x{self.input_size[1]} only")
        other = copy.copy(self)
        other.input, other.output = sized_tensors(self.input, self.output, size)
        return other

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One raw inference of float32 (B, H, W, C); returns (B, h, w, K)."""
        x = check_raw(x, self.input, self.path.name)
        try:
            return self.session.run([self.output.name], {self.input.name: x})[0]
        except Exception as exc:
            raise ModelError(f"{self.path}: inference failed: {detail(exc)}") from exc

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """float32 (n, H, W, C) → float32 (n, h, w, K), ``batch_size`` tiles at a time."""
        tiles = check_tiles(np.asarray(tiles, dtype=np.float32), self.input, self.path.name)
        _, h, w, c = self.input.shape
        b = self.batch_size
        out = []
        for start in range(0, len(tiles), b):
            chunk = tiles[start : start + b]
            k = len(chunk)
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k, h, w, c), np.float32)])
            out.append(np.asarray(self.invoke(chunk), np.float32)[:k])
        return np.concatenate(out) if out else np.empty((0, *self.output.shape[1:]), np.float32)

    predict_raw = predict

    def _read_metadata(self) -> ModelMetadata | None:
        """edgeseg metadata from the model's ``metadata_props`` (key ``edgeseg``)."""
        text = self.session.get_modelmeta().custom_metadata_map.get("edgeseg")
        return parse_metadata_json(text, self.path)


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
    """The model on onnxruntime, ``delegate`` naming the provider (auto: the best present)."""
    if delegate not in ("auto", *ORT_PROVIDERS):
        raise DataError(
            f"--delegate {delegate} is for TFLite models; for ONNX use auto, "
            + ", ".join(ORT_PROVIDERS)
        )
    backend = OnnxBackend(path, provider=delegate, threads=threads)
    where, accelerator = _PROVIDER_DEVICE.get(backend.provider, (backend.provider, None))
    return Opened(backend, "onnxruntime", path, where, accelerator, threads)


def _reopen(backend: Backend, threads: int | None) -> Backend:
    provider = provider_name(backend)
    return OnnxBackend(backend.path, provider=provider, threads=threads)


def provider_name(backend: Backend) -> str:
    """The ``--delegate`` name of an OnnxBackend's provider ("cpu", "cuda", "tensorrt")."""
    if not isinstance(backend, OnnxBackend):
        raise DataError(f"cannot open another instance of {type(backend).__name__} on onnxruntime")
    return {v: k for k, v in ORT_PROVIDERS.items()}.get(backend.provider, "auto")


def _load() -> None:
    from edgeseg.optional import require

    require("onnxruntime")


RUNTIME = Runtime(
    name="onnxruntime",
    title="onnxruntime",
    reads=(".onnx",),
    native=(".onnx",),
    delegates=True,
    distributions=("onnxruntime", "onnxruntime-gpu"),
    modules=("onnxruntime",),
    install=ORT_INSTALL_HINT,
    open=_open,
    reopen=_reopen,
    load=_load,
)
