"""Run a .tflite or .onnx model: the one module that imports a runtime (LiteRT,
onnxruntime, OpenVINO).

A .tflite model's own runtime is LiteRT (``ai-edge-litert``, the successor of
``tflite-runtime``) when it is installed, else ``tflite_runtime``, else ``tensorflow.lite``:
whatever the device has. On a CPU, LiteRT applies XNNPACK by default; ``threads`` sets how
many cores it uses. An .onnx model's own runtime is onnxruntime. OpenVINO
(``edgeseg[openvino]``) reads both formats; ``open_backend(..., backend="auto")`` measures
which installed runtime is fastest (:mod:`edgeseg.runtime.selection`).

A backend takes float32 tiles and returns float32 probabilities whatever the model's own
dtypes are: integer models are fed through :mod:`edgeseg.core.quant` at their edges.

The file is validated before the interpreter sees it (identifier, size, a full flatbuffer
parse and index checks in :mod:`edgeseg.core.tflite_file`), and every failure of the
interpreter (construction, allocation, inference) becomes a one-line :class:`ModelError`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.quant import TensorInfo, dequantize, quantize
from edgeseg.errors import DataError, MissingDependencyError, ModelError

__all__ = [
    "BACKENDS",
    "OnnxBackend",
    "OpenVinoBackend",
    "TFLiteBackend",
    "backend_kind",
    "choose_providers",
    "cpu_sibling",
    "import_runtime",
    "interpreter_class",
    "load_backend",
    "load_delegate",
    "onnx_metadata",
    "open_backend",
    "reopen",
]

# (distribution name, module, attribute holding the Interpreter class), in order of preference.
_RUNTIMES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "tensorflow", "lite.Interpreter"),
)

# Dtypes an image input can have; anything else (bool, int32, strings) is not an image model.
_IMAGE_DTYPES = ("float32", "float16", "int8", "uint8", "int16")

_MAX_DETAIL = 200


def interpreter_class() -> tuple[type, str]:
    """(Interpreter class, "ai-edge-litert 2.3.0") of the first TFLite runtime installed.

    Raises:
        MissingDependencyError: none of LiteRT, tflite-runtime or TensorFlow is importable.
    """
    for dist, module_name, attr in _RUNTIMES:
        if module_name == "tensorflow":
            # Quiet TensorFlow's C++ start-up chatter, as edgeseg.optional.require does.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls: Any = module
        for part in attr.split("."):
            cls = getattr(cls, part, None)
        if cls is None:
            continue
        return cls, f"{dist} {_version(dist, module_name)}"
    raise MissingDependencyError(
        "no TFLite runtime is installed (tried ai-edge-litert, tflite-runtime and "
        "tensorflow); install LiteRT with: pip install 'edgeseg[runtime]'"
    )


def _version(dist: str, module_name: str) -> str:
    top = importlib.import_module(module_name.split(".")[0])
    version = getattr(top, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


class _ImageModel:
    """What every backend shares: the attributes of :class:`~edgeseg.core.backend.Backend`,
    and ``input`` (B, H, W, C) describes the tiles it takes."""

    path: Path
    runtime: str
    input: TensorInfo
    output: TensorInfo

    @property
    def batch_size(self) -> int:
        """How many tiles one invocation takes (1 for nearly every model)."""
        return self.input.shape[0]

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model input."""
        return (self.input.shape[1], self.input.shape[2])

    _metadata: ModelMetadata | None = None
    _metadata_read = False

    def metadata(self) -> ModelMetadata | None:
        """The edgeseg metadata the file carries, or None; read once."""
        if not self._metadata_read:
            self._metadata = self._read_metadata()
            self._metadata_read = True
        return self._metadata

    def _read_metadata(self) -> ModelMetadata | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, runtime={self.runtime!r}, "
            f"input={self.input.dtype}{_fmt_shape(self.input.shape)}, "
            f"output={self.output.dtype}{_fmt_shape(self.output.shape)})"
        )


class _QuantizedEdges(_ImageModel):
    """A model fed and read at its own dtypes (LiteRT, OpenVINO): float tiles are quantized
    at the input and outputs dequantized, around the subclass's raw ``invoke``."""

    def invoke(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """float32 (n, H, W, C) tiles → float32 (n, h, w, K) model outputs (probabilities).

        Quantizes the input for integer models, runs the model ``batch_size`` tiles at a time
        (the last batch padded with zeros), and dequantizes the output.
        """
        tiles = np.asarray(tiles)
        _, h, w, c = self.input.shape
        if tiles.ndim != 4 or tiles.shape[1:] != (h, w, c):
            raise DataError(
                f"{self.path.name} takes tiles of shape (n, {h}, {w}, {c}), "
                f"got {_fmt_shape(tiles.shape)}"
            )
        if not self.input.quantized and self.input.dtype not in ("float32", "float16"):
            raise ModelError(
                f"{self.path}: its {self.input.dtype} input has no quantization parameters, "
                "so float tiles cannot be mapped to it"
            )
        return self.predict_raw(quantize(tiles, self.input))

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """Tiles already in the model's input dtype (n, H, W, C) → float32 (n, h, w, K).

        For callers that quantize frames straight to the model's integer input (a lookup
        table per frame, :func:`edgeseg.core.preprocess.prepare_quantized`).
        """
        _, h, w, c = self.input.shape
        n, b = len(tiles), self.batch_size
        result = np.empty((n, *self.output.shape[1:]), dtype=np.float32)
        for start in range(0, n, b):
            chunk = tiles[start : start + b]
            k = len(chunk)
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k, h, w, c), chunk.dtype)])
            raw = self.invoke(chunk)
            result[start : start + k] = dequantize(raw[:k], self.output)
        return result


class TFLiteBackend(_QuantizedEdges):
    """A .tflite image-to-mask model on the CPU (XNNPACK) or a delegate.

    Attributes:
        path: The model file.
        runtime: The runtime and its version, e.g. "ai-edge-litert 2.3.0".
        input: The input tensor: (B, H, W, C) with B the model's batch (1 for a dynamic
            batch, which is resized to 1), its dtype and quantization.
        output: The output tensor: (B, h, w, K).
        interpreter: The runtime's interpreter, for pure adapters that need it.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        experimental_delegates: list[Any] | None = None,
    ) -> None:
        from edgeseg.core.tflite_file import parse_bytes, read_model_bytes

        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.path = Path(model_path)
        self.threads = threads
        data, label = read_model_bytes(self.path)
        parse_bytes(data, label)  # a corrupt flatbuffer must not reach the C++ interpreter
        cls, self.runtime = interpreter_class()
        kwargs: dict[str, Any] = {"model_content": data}
        if threads is not None:
            kwargs["num_threads"] = int(threads)
        if experimental_delegates:
            kwargs["experimental_delegates"] = list(experimental_delegates)
        try:
            interpreter = cls(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            if "not a valid Flatbuffer" in str(exc):  # the runtime's own verifier said no
                raise ModelError(
                    f"{label} is not a valid .tflite model: {self.runtime} rejects the flatbuffer"
                ) from exc
            raise ModelError(f"{label} cannot be loaded by {self.runtime}: {_detail(exc)}") from exc
        self.interpreter = interpreter
        self.input, self.output = self._allocate(label)

    def _allocate(self, label: str) -> tuple[TensorInfo, TensorInfo]:
        """Check the model is image-to-mask, fix a dynamic batch to 1, allocate tensors."""
        interp = self.interpreter
        try:
            inputs = interp.get_input_details()
            outputs = interp.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{label} cannot be loaded by {self.runtime}: {_detail(exc)}") from exc
        batch, h, w, c = _image_model_input(
            label,
            [_signature(d) for d in inputs],
            [_signature(d) for d in outputs],
            [np.dtype(d["dtype"]).name for d in inputs],
            "convert the model with a fixed input size, e.g. (1, 256, 256, C)",
        )
        try:
            if batch < 1:
                interp.resize_tensor_input(inputs[0]["index"], [1, h, w, c])
            interp.allocate_tensors()
            inp = _tensor_info(interp.get_input_details()[0], label)
            out = _tensor_info(interp.get_output_details()[0], label)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"{label} cannot be prepared by {self.runtime}: {_detail(exc)}"
            ) from exc
        if len(out.shape) != 4 or min(out.shape) < 1:
            raise ModelError(
                f"{label} is not an image-to-mask model: input shape {_fmt_shape(inp.shape)}, "
                f"output shape {_fmt_shape(out.shape)} after allocation"
            )
        return inp, out

    # ----------------------------------------------------------------------------------------

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One raw inference: ``x`` in the model's input dtype and exact shape (B, H, W, C).

        Returns a copy of the raw output, (B, h, w, K) in the model's output dtype.
        """
        x = np.asarray(x)
        if x.dtype != np.dtype(self.input.dtype) or x.shape != self.input.shape:
            raise DataError(
                f"{self.path.name} takes {self.input.dtype} of shape "
                f"{_fmt_shape(self.input.shape)}, got {x.dtype} of shape {_fmt_shape(x.shape)}"
            )
        try:
            self.interpreter.set_tensor(self.input.index, x)
            self.interpreter.invoke()
            # get_tensor returns a copy: the next invoke cannot overwrite it.
            return self.interpreter.get_tensor(self.output.index)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: inference failed: {_detail(exc)}") from exc

    def _read_metadata(self) -> ModelMetadata | None:
        """The edgeseg metadata embedded in the file."""
        from edgeseg.core.tflite_file import read_metadata

        return read_metadata(self.path)


def load_backend(model_path: str | Path, *, threads: int | None = None) -> TFLiteBackend:
    """The CPU backend (LiteRT with XNNPACK) for a .tflite model."""
    return TFLiteBackend(model_path, threads=threads)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _signature(detail: dict[str, Any]) -> tuple[int, ...]:
    """A tensor's shape signature (-1 for dynamic dimensions), else its shape."""
    sig = detail.get("shape_signature")
    if sig is None or len(sig) != len(detail["shape"]):
        sig = detail["shape"]
    return tuple(int(d) for d in sig)


def _tensor_info(detail: dict[str, Any], label: str) -> TensorInfo:
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []))
    if scales.size > 1:
        raise ModelError(
            f"{label}: tensor {detail['name']!r} is quantized per channel; edgeseg feeds "
            "and reads only per-tensor quantized inputs and outputs"
        )
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        name=str(detail["name"]),
        index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _image_model_input(
    label: Any,
    shapes_in: list[tuple[int, ...]],
    shapes_out: list[tuple[int, ...]],
    dtypes_in: list[str],
    fix: str,
    accepted: tuple[str, ...] = _IMAGE_DTYPES,
) -> tuple[int, int, int, int]:
    """The (N, H, W, C) input of a model with one image input and one mask output, or a
    one-line ModelError: another signature, an input type not in ``accepted``, or a dynamic
    height, width or channel count (``fix`` says how to export it fixed). N may be dynamic."""
    if (
        len(shapes_in) != 1
        or len(shapes_out) != 1
        or len(shapes_in[0]) != 4
        or len(shapes_out[0]) != 4
        or dtypes_in[0] not in accepted
    ):
        raise ModelError(
            f"{label} is not an image-to-mask model: input shape {_fmt_shapes(shapes_in)}"
            f" ({', '.join(dtypes_in)}), output shape {_fmt_shapes(shapes_out)}; edgeseg needs "
            "one (N, H, W, C) image input and one (N, h, w, K) mask output"
        )
    b, h, w, c = shapes_in[0]
    if min(h, w, c) < 1:
        raise ModelError(
            f"{label} has a dynamic input size {_fmt_shape(shapes_in[0])}; edgeseg runs "
            f"fixed-size tiles: {fix}"
        )
    return b, h, w, c


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("None" if d < 0 else str(d) for d in shape) + ")"


def _fmt_shapes(shapes: list[tuple[int, ...]]) -> str:
    if len(shapes) == 1:
        return _fmt_shape(shapes[0])
    return "[" + ", ".join(_fmt_shape(s) for s in shapes) + "]"


def _detail(exc: BaseException) -> str:
    """The first line of a runtime's error, shortened, for a one-line message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


# --------------------------------------------------------------------------------------------
# Delegates: the Edge TPU and any delegate library given by path
# --------------------------------------------------------------------------------------------

# The Edge TPU runtime library by platform (as Coral's pycoral names it).
EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}
EDGETPU_INSTALL_HINT = (
    "install libedgetpu1-std from Coral's apt repository "
    "(https://coral.ai/docs/accelerator/get-started)"
)
DELEGATES = ("auto", "cpu", "edgetpu")


def _load_delegate_function() -> Any:
    """The ``load_delegate`` of the runtime in use (LiteRT, tflite-runtime or TensorFlow)."""
    _, runtime = interpreter_class()
    if runtime.startswith("ai-edge-litert"):
        from ai_edge_litert.interpreter import load_delegate
    elif runtime.startswith("tflite-runtime"):
        from tflite_runtime.interpreter import load_delegate  # type: ignore[import-not-found]
    else:
        import tensorflow as tf

        load_delegate = tf.lite.experimental.load_delegate
    return load_delegate


def _quiet_load(load: Any, library: str, options: dict[str, str]) -> tuple[Any, str]:
    """(delegate, "") or (None, one-line reason), without stray tracebacks.

    A delegate that fails half-way is collected by LiteRT's ``Delegate.__del__``, which then
    raises AttributeError and Python prints "Exception ignored in …" with a traceback: it is
    silenced here, and the half-built object collected while it is.
    """
    import gc
    import sys

    hook = sys.unraisablehook
    sys.unraisablehook = lambda _unraisable: None
    try:
        try:
            return load(library, options), ""
        except (ValueError, OSError, RuntimeError) as exc:
            text = _detail(exc)
            exc.__traceback__ = None
        gc.collect()
        return None, text
    finally:
        sys.unraisablehook = hook


def load_delegate(spec: str, options: dict[str, str] | None = None) -> tuple[Any, str]:
    """Load the ``edgetpu`` delegate or a delegate library by path; (delegate, description).

    Failures are told apart: the library is missing (MissingDependencyError), no Edge TPU is
    attached, or the library does not fit this runtime (ModelError), each in one line.
    """
    import platform

    load = _load_delegate_function()
    _, runtime = interpreter_class()
    if spec == "edgetpu":
        library = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
    else:
        library = spec
        if not Path(spec).exists():
            raise MissingDependencyError(f"delegate library not found: {spec}")
    delegate, text = _quiet_load(load, library, options or {})
    if delegate is None:
        missing = any(
            s in text
            for s in ("cannot open shared object", "No such file", "not found", "image not found")
        )
        if spec != "edgetpu":
            raise ModelError(f"cannot load delegate {library} with {runtime}: {text}")
        if missing:
            raise MissingDependencyError(
                f"the Edge TPU library {library} is not installed; {EDGETPU_INSTALL_HINT}"
            )
        from edgeseg.hardware import edgetpus

        devices = edgetpus()
        if not devices:
            raise DataError(
                f"no Edge TPU attached: {library} loaded but found no device (looked for USB "
                "1a6e:089a / 18d1:9302 and /dev/apex_*); plug in the Coral and check `lsusb`"
            )
        raise ModelError(
            f"{library} is installed and an Edge TPU is attached ({devices[0].name}), but the "
            f"delegate could not be created with {runtime}: libedgetpu is built against one "
            "TFLite version; use the interpreter that matches it (e.g. tflite-runtime from "
            f"Coral's repository) ({text})"
        )
    return delegate, f"{spec} ({library})"


def cpu_sibling(model_path: Path, meta: ModelMetadata | None) -> Path | None:
    """The plain CPU model that stands in for an Edge TPU model, when it exists.

    Named by the metadata's ``provenance["cpu_sibling"]``, else found by the compiler's naming
    convention ``<stem>_edgetpu.tflite`` → ``<stem>.tflite``.
    """
    candidates = []
    if meta is not None and meta.provenance.get("cpu_sibling"):
        candidates.append(model_path.parent / str(meta.provenance["cpu_sibling"]))
    if model_path.stem.endswith("_edgetpu"):
        candidates.append(model_path.with_name(model_path.stem[: -len("_edgetpu")] + ".tflite"))
    return next((p for p in candidates if p.is_file()), None)


def open_backend(
    model_path: str | Path,
    *,
    delegate: str = "auto",
    threads: int | None = None,
    fallback: bool = False,
    device: str | None = None,
    warn: Any = None,
    backend: str | None = None,
    explain: Any = None,
) -> tuple[Backend, str]:
    """A backend for ``model_path`` with the runtime and delegate asked for; (backend, what
    was chosen).

    ``backend``: None (the file's own runtime: LiteRT for ``.tflite``, onnxruntime for
    ``.onnx``), ``litert``, ``onnxruntime``, ``openvino``, or ``auto`` (the fastest installed
    runtime whose label maps agree with the file's own, measured once and cached:
    :mod:`edgeseg.runtime.selection`; ``explain(line)`` hears the figures behind the pick).
    ``delegate``: ``auto`` (the Edge TPU for ``*_edgetpu.tflite`` models, else the CPU with
    XNNPACK), ``cpu``, ``edgetpu``, or a path to a delegate library: LiteRT's, so ``auto``
    with a delegate is LiteRT without measuring; for ``.onnx`` an onnxruntime provider.
    ``device`` selects one of several Edge TPUs (``usb:0``, ``pci:0``). With ``fallback``, a
    delegate that cannot be loaded is reported through ``warn(message)`` and the model's CPU
    sibling (or the model itself, for a delegate library) runs on the CPU instead.
    """
    path = Path(model_path)
    onnx = path.suffix.lower() == ".onnx"
    kind = backend_kind(path, backend, delegate)
    if kind == "auto":
        from edgeseg.runtime.selection import choose_runtime

        choice = choose_runtime(path, threads=threads, warn=warn)
        if explain:
            for line in choice.lines():
                explain(line)
        kind = choice.runtime
        opened, chosen = open_backend(
            path, delegate=delegate, threads=threads, fallback=fallback, device=device,
            warn=warn, backend=kind,
        )  # fmt: skip
        if choice.source != "only":
            chosen += f", picked by auto ({choice.source})"
        return opened, chosen
    if kind == "openvino":
        ov_backend = OpenVinoBackend(path, threads=threads)
        return ov_backend, f"CPU ({threads or 'default'} threads) via {ov_backend.runtime}"
    if onnx:
        provider = delegate if delegate in ("auto", *ORT_PROVIDERS) else None
        if provider is None:
            raise DataError(
                f"--delegate {delegate} is for TFLite models; for ONNX use auto, "
                + ", ".join(ORT_PROVIDERS)
            )
        onnx_backend = OnnxBackend(path, provider=provider, threads=threads)
        return onnx_backend, onnx_backend.runtime
    choice = delegate
    if delegate == "auto":
        choice = "edgetpu" if path.stem.endswith("_edgetpu") else "cpu"
    if choice == "cpu":
        tfl = TFLiteBackend(path, threads=threads)
        return tfl, f"CPU (XNNPACK, {threads or 'default'} threads) via {tfl.runtime}"
    options = {"device": device} if (device and choice == "edgetpu") else None
    try:
        loaded, what = load_delegate(choice, options)
        tfl = TFLiteBackend(path, threads=threads, experimental_delegates=[loaded])
        return tfl, f"{what} via {tfl.runtime}"
    except (MissingDependencyError, DataError, ModelError) as exc:
        if not fallback:
            raise
        target = path
        if choice == "edgetpu":
            from edgeseg.core.tflite_file import read_metadata

            sibling = cpu_sibling(path, read_metadata(path))
            if sibling is None:
                raise ModelError(
                    f"{exc}; and no CPU sibling of {path.name} was found for --fallback "
                    f"(expected {path.stem.removesuffix('_edgetpu')}.tflite beside it)"
                ) from exc
            target = sibling
        if warn:
            warn(f"warning: {exc}; falling back to {target.name} on the CPU")
        tfl = TFLiteBackend(target, threads=threads)
        return tfl, f"CPU fallback (XNNPACK) for {target.name} via {tfl.runtime}"


BACKENDS = ("auto", "litert", "openvino", "onnxruntime")


def backend_kind(path: Path, backend: str | None, delegate: str) -> str:
    """The runtime ``backend`` comes down to for this file and delegate, or a one-line error
    for a combination that cannot work. "auto" only when there is something to measure."""
    onnx = path.suffix.lower() == ".onnx"
    native = "onnxruntime" if onnx else "litert"
    if backend is None:
        return native
    if backend not in BACKENDS:
        raise DataError(f"unknown --backend {backend!r}; use {', '.join(BACKENDS)}")
    # A delegate belongs to one runtime: LiteRT's TFLite delegates, onnxruntime's providers.
    special = delegate not in ("auto", "cpu") or (not onnx and path.stem.endswith("_edgetpu"))
    if backend == "auto":
        return native if special else "auto"
    if onnx and backend == "litert":
        raise DataError(
            f"--backend litert runs .tflite models; {path.name} is ONNX: use --backend "
            "onnxruntime, openvino or auto"
        )
    if not onnx and backend == "onnxruntime":
        raise DataError(
            f"--backend onnxruntime runs .onnx models; {path.name} is TFLite: use --backend "
            "litert, openvino or auto"
        )
    if backend == "openvino" and special:
        what = f"--delegate {delegate}" if delegate not in ("auto", "cpu") else path.name
        owner = "onnxruntime's" if onnx else "LiteRT's (an Edge TPU model runs on LiteRT)"
        raise DataError(
            f"--backend openvino cannot take {what}: it is {owner}; drop --backend or the delegate"
        )
    return backend


def import_runtime(kind: str) -> None:
    """Import the runtime ``kind`` ("litert", "openvino", "onnxruntime"), e.g. before a memory
    baseline; a one-line MissingDependencyError when it is not installed."""
    if kind == "openvino":
        _openvino()
    elif kind == "onnxruntime":
        from edgeseg.optional import require

        require("onnxruntime")
    else:
        interpreter_class()


def reopen(backend: Backend, threads: int | None) -> Backend:
    """Another instance of the same kind of backend on the same file, with ``threads``
    (one per worker of a pool). Delegates are not carried over: CPU backends only."""
    if isinstance(backend, OpenVinoBackend):
        return OpenVinoBackend(backend.path, threads=threads, device=backend.device)
    if isinstance(backend, OnnxBackend):
        provider = {v: k for k, v in ORT_PROVIDERS.items()}.get(backend.provider, "auto")
        return OnnxBackend(backend.path, provider=provider, threads=threads)
    if isinstance(backend, TFLiteBackend):
        return TFLiteBackend(backend.path, threads=threads)
    raise DataError(f"cannot open another instance of {type(backend).__name__}")


# --------------------------------------------------------------------------------------------
# ONNX Runtime (the Jetson path: TensorRT, then CUDA, then CPU execution providers)
# --------------------------------------------------------------------------------------------

ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ORT_INSTALL_HINT = (
    "on a Jetson install NVIDIA's onnxruntime-gpu wheel for your JetPack (PyPI has no aarch64 "
    "GPU build); elsewhere pip install 'edgeseg[onnx]'"
)


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


class OnnxBackend(_ImageModel):
    """An .onnx image-to-mask model on onnxruntime, behind the same interface as TFLiteBackend."""

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
            raise ModelError(f"{self.path} is not a valid ONNX model: {_detail(exc)}") from exc
        self.provider = self.session.get_providers()[0]
        self.runtime = f"onnxruntime {ort.__version__} ({self.provider})"
        self.threads = threads
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shapes_out = [tuple(d if isinstance(d, int) else -1 for d in o.shape) for o in outputs]
        b, h, w, c = _image_model_input(
            self.path,
            [tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in inputs],
            shapes_out,
            ["float32" if i.type == "tensor(float)" else i.type for i in inputs],
            "export it with a fixed tile size",
            accepted=("float32",),
        )
        self.input = TensorInfo(inputs[0].name, 0, (max(b, 1), h, w, c), "float32")
        out = tuple(max(d, 1) if i == 0 else d for i, d in enumerate(shapes_out[0]))
        self.output = TensorInfo(outputs[0].name, 0, out, "float32")

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One raw inference of float32 (B, H, W, C); returns (B, h, w, K)."""
        try:
            return self.session.run([self.output.name], {self.input.name: x})[0]
        except Exception as exc:
            raise ModelError(f"{self.path}: inference failed: {_detail(exc)}") from exc

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """float32 (n, H, W, C) → float32 (n, h, w, K), ``batch_size`` tiles at a time."""
        tiles = np.asarray(tiles, dtype=np.float32)
        _, h, w, c = self.input.shape
        if tiles.ndim != 4 or tiles.shape[1:] != (h, w, c):
            raise DataError(
                f"{self.path.name} takes tiles of shape (n, {h}, {w}, {c}), "
                f"got {_fmt_shape(tiles.shape)}"
            )
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
        import json

        text = self.session.get_modelmeta().custom_metadata_map.get("edgeseg")
        if not text:
            return None
        try:
            return ModelMetadata.from_dict(json.loads(text)["metadata"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{self.path}: unreadable edgeseg metadata: {exc}") from exc


# --------------------------------------------------------------------------------------------
# OpenVINO (x86-64 edge PCs: oneDNN with AVX-512 VNNI / AMX; reads .tflite and .onnx)
# --------------------------------------------------------------------------------------------

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


class OpenVinoBackend(_QuantizedEdges):
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
            raise ModelError(f"{label} cannot be read by {self.runtime}: {_detail(exc)}") from exc
        inputs, outputs = list(model.inputs), list(model.outputs)
        b, h, w, c = _image_model_input(
            label,
            [_ov_shape(i) for i in inputs],
            [_ov_shape(o) for o in outputs],
            [i.get_element_type().to_dtype().name for i in inputs],
            "convert the model with a fixed input size",
        )
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device.upper().startswith("CPU"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            if b < 1:
                model.reshape({inputs[0].get_any_name(): [1, h, w, c]})
            self._compiled = core.compile_model(model, device, config)
            self._request = self._compiled.create_infer_request()
        except Exception as exc:
            raise ModelError(
                f"{label} cannot be compiled by {self.runtime}: {_detail(exc)}"
            ) from exc
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

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One raw inference: ``x`` in the input's dtype and exact shape (B, H, W, C).

        Returns a copy of the raw output, (B, h, w, K) in the output's dtype.
        """
        x = np.asarray(x)
        if x.dtype != np.dtype(self.input.dtype) or x.shape != self.input.shape:
            raise DataError(
                f"{self.path.name} takes {self.input.dtype} of shape "
                f"{_fmt_shape(self.input.shape)}, got {x.dtype} of shape {_fmt_shape(x.shape)}"
            )
        try:
            # share_inputs: no copy of a contiguous input; the output is copied below, since
            # the request's own buffer is overwritten by the next call.
            self._request.infer({0: np.ascontiguousarray(x)}, share_inputs=True)
            return np.array(self._request.get_output_tensor(0).data, copy=True)
        except Exception as exc:
            raise ModelError(f"{self.path}: inference failed: {_detail(exc)}") from exc

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


def onnx_metadata(path: Path) -> ModelMetadata | None:
    """edgeseg metadata from an .onnx file's ``metadata_props`` (key ``edgeseg``), read with
    the ``onnx`` package or, without it, onnxruntime; None when neither is installed."""
    import json

    text = None
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        text = next((p.value for p in model.metadata_props if p.key == "edgeseg"), None)
    except ImportError:
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        text = session.get_modelmeta().custom_metadata_map.get("edgeseg")
    except Exception as exc:
        raise ModelError(f"{path}: unreadable ONNX metadata: {_detail(exc)}") from exc
    if not text:
        return None
    try:
        return ModelMetadata.from_dict(json.loads(text)["metadata"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable edgeseg metadata: {exc}") from exc
