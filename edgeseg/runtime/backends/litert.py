"""LiteRT: a .tflite model on the CPU (XNNPACK) or a TFLite delegate (the Edge TPU, a library).

The interpreter is LiteRT's (``ai-edge-litert``, the successor of ``tflite-runtime``) when it
is installed, else ``tflite_runtime``, else ``tensorflow.lite``: whatever the device has. On a
CPU, LiteRT applies XNNPACK by default; ``threads`` sets how many cores it uses.

The file is validated before the interpreter sees it (identifier, size, a full flatbuffer
parse and index checks in :mod:`edgeseg.core.tflite_file`), and every failure of the
interpreter (construction, allocation, inference) becomes a one-line :class:`ModelError`.

Delegates are LiteRT's: ``edgetpu`` (``libedgetpu``, the library named per platform as
Coral's pycoral names it) or a delegate library given by path. With ``fallback``, a delegate
that cannot be loaded is reported and the model's CPU sibling (an Edge TPU model's plain int8
twin) runs on the CPU instead.
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
from edgeseg.core.quant import TensorInfo
from edgeseg.errors import DataError, MissingDependencyError, ModelError
from edgeseg.runtime.backends.base import (
    Opened,
    QuantizedModel,
    check_raw,
    detail,
    image_model_input,
)
from edgeseg.runtime.backends.registry import Runtime
from edgeseg.sizes import format_shape

__all__ = [
    "DELEGATES",
    "EDGETPU_INSTALL_HINT",
    "EDGETPU_LIBRARY",
    "RUNTIME",
    "TFLiteBackend",
    "cpu_sibling",
    "interpreter_class",
    "load_backend",
    "load_delegate",
]

# (distribution name, module, attribute holding the Interpreter class), in order of preference.
_INTERPRETERS = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "tensorflow", "lite.Interpreter"),
)


def interpreter_class() -> tuple[type, str]:
    """(Interpreter class, "ai-edge-litert 2.3.0") of the first TFLite runtime installed.

    Raises:
        MissingDependencyError: none of LiteRT, tflite-runtime or TensorFlow is importable.
    """
    for dist, module_name, attr in _INTERPRETERS:
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


class TFLiteBackend(QuantizedModel):
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
            raise ModelError(f"{label} cannot be loaded by {self.runtime}: {detail(exc)}") from exc
        self.interpreter = interpreter
        self.input, self.output = self._allocate(label)

    def _allocate(self, label: str) -> tuple[TensorInfo, TensorInfo]:
        """Check the model is image-to-mask, fix a dynamic batch to 1, allocate tensors."""
        interp = self.interpreter
        try:
            inputs = interp.get_input_details()
            outputs = interp.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{label} cannot be loaded by {self.runtime}: {detail(exc)}") from exc
        batch, h, w, c = image_model_input(
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
                f"{label} cannot be prepared by {self.runtime}: {detail(exc)}"
            ) from exc
        if len(out.shape) != 4 or min(out.shape) < 1:
            raise ModelError(
                f"{label} is not an image-to-mask model: input shape {format_shape(inp.shape)}, "
                f"output shape {format_shape(out.shape)} after allocation"
            )
        return inp, out

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One raw inference: ``x`` in the model's input dtype and exact shape (B, H, W, C).

        Returns a copy of the raw output, (B, h, w, K) in the model's output dtype.
        """
        x = check_raw(x, self.input, self.path.name)
        try:
            self.interpreter.set_tensor(self.input.index, x)
            self.interpreter.invoke()
            # get_tensor returns a copy: the next invoke cannot overwrite it.
            return self.interpreter.get_tensor(self.output.index)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: inference failed: {detail(exc)}") from exc

    def _read_metadata(self) -> ModelMetadata | None:
        """The edgeseg metadata embedded in the file."""
        from edgeseg.core.tflite_file import read_metadata

        return read_metadata(self.path)


def load_backend(model_path: str | Path, *, threads: int | None = None) -> TFLiteBackend:
    """The CPU backend (LiteRT with XNNPACK) for a .tflite model."""
    return TFLiteBackend(model_path, threads=threads)


def _signature(detail_: dict[str, Any]) -> tuple[int, ...]:
    """A tensor's shape signature (-1 for dynamic dimensions), else its shape."""
    sig = detail_.get("shape_signature")
    if sig is None or len(sig) != len(detail_["shape"]):
        sig = detail_["shape"]
    return tuple(int(d) for d in sig)


def _tensor_info(detail_: dict[str, Any], label: str) -> TensorInfo:
    params = detail_.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []))
    if scales.size > 1:
        raise ModelError(
            f"{label}: tensor {detail_['name']!r} is quantized per channel; edgeseg feeds "
            "and reads only per-tensor quantized inputs and outputs"
        )
    scale, zero_point = detail_.get("quantization", (0.0, 0))
    return TensorInfo(
        name=str(detail_["name"]),
        index=int(detail_["index"]),
        shape=tuple(int(d) for d in detail_["shape"]),
        dtype=np.dtype(detail_["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


# --------------------------------------------------------------------------------------------
# Delegates: the Edge TPU and any delegate library given by path

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
            text = detail(exc)
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
        from edgeseg.hardware import edgetpu_ids_text, edgetpus

        devices = edgetpus()
        if not devices:
            raise DataError(
                f"no Edge TPU attached: {library} loaded but found no device (looked for "
                f"{edgetpu_ids_text()}); plug in the Coral and check `lsusb`"
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
    """The model on LiteRT: the CPU with XNNPACK, or ``delegate`` (``auto``: the Edge TPU for
    ``*_edgetpu.tflite`` models), falling back to the CPU sibling with ``fallback``."""
    choice = delegate
    if delegate == "auto":
        choice = "edgetpu" if path.stem.endswith("_edgetpu") else "cpu"
    if choice == "cpu":
        tfl = TFLiteBackend(path, threads=threads)
        return Opened(tfl, "litert", path, "CPU", "XNNPACK", threads)
    options = {"device": device} if (device and choice == "edgetpu") else None
    try:
        loaded, what = load_delegate(choice, options)
        tfl = TFLiteBackend(path, threads=threads, experimental_delegates=[loaded])
        where = "Edge TPU" if choice == "edgetpu" else Path(choice).name
        return Opened(tfl, "litert", path, where, what, threads)
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
        return Opened(tfl, "litert", target, "CPU", "XNNPACK", threads, fallback=str(exc))


def _reopen(backend: Backend, threads: int | None) -> Backend:
    return TFLiteBackend(backend.path, threads=threads)


def _load() -> None:
    interpreter_class()  # imports the first TFLite runtime installed, or says what to install


RUNTIME = Runtime(
    name="litert",
    title="LiteRT",
    reads=(".tflite",),
    native=(".tflite",),
    delegates=True,
    distributions=("ai-edge-litert", "tflite-runtime", "tensorflow"),
    modules=("ai_edge_litert", "tflite_runtime", "tensorflow"),
    install="pip install 'edgeseg[runtime]'",
    open=_open,
    reopen=_reopen,
    load=_load,
)
