"""Opening a device artefact: a .tflite or .onnx file → the runtime that runs it → a backend
and its metadata.

Every command that runs a converted model opens it here (``run``'s session, ``eval``,
``segment``'s workers, ``bench``, ``--backend auto``'s measuring children):

- :func:`resolve_runtime` turns ``--backend`` and ``--delegate`` into a runtime of the
  registry (:mod:`edgeseg.runtime.backends.registry`), or ``"auto"`` when there is something
  to measure, or a one-line error for a combination that cannot work;
- :func:`open_backend` opens the file on one runtime and says what it opened as a frozen
  :class:`~edgeseg.runtime.backends.base.Opened` record;
- :func:`open_model` adds the model's metadata, with the user's flags applied (for models
  without edgeseg metadata): :class:`OpenedModel`;
- :func:`reopen` opens another instance for a worker pool.

``--backend auto`` itself is :mod:`edgeseg.runtime.selection`'s (it measures with
:func:`open_model` in child processes, then opens the winner with it), so nothing here
imports it. A Keras model is not a device artefact: :mod:`edgeseg.model.resolve` loads one,
and :func:`edgeseg.session.open_any_model` composes the two for commands that take either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata, apply_flags
from edgeseg.errors import DataError
from edgeseg.runtime.backends.base import Opened
from edgeseg.runtime.backends.registry import (
    format_name,
    get_runtime,
    native_runtime,
    readers,
)
from edgeseg.runtime.foreign_onnx import adapt_onnx

__all__ = [
    "OpenedModel",
    "import_runtime",
    "open_backend",
    "open_model",
    "reopen",
    "resolve_runtime",
]


@dataclass(frozen=True)
class OpenedModel:
    """A device artefact opened: what runs it and the metadata it runs with.

    Attributes:
        opened: The backend and how it runs (runtime, device, delegate, threads, how chosen).
        meta: The metadata embedded in the file, or inferred from its tensors, with the
            user's flags applied.
        embedded: Whether the file carries edgeseg metadata (such models are tiled; others
            are resized to the input unless told otherwise).
    """

    opened: Opened
    meta: ModelMetadata
    embedded: bool

    @property
    def backend(self) -> Backend:
        return self.opened.backend


def _needs_native(path: Path, delegate: str) -> bool:
    """A delegate (or an Edge TPU model, which needs its delegate) belongs to the file's own
    runtime: LiteRT's TFLite delegates, onnxruntime's providers."""
    return delegate not in ("auto", "cpu") or path.stem.endswith("_edgetpu")


def resolve_runtime(path: str | Path, backend: str | None, delegate: str = "auto") -> str:
    """The runtime ``backend`` comes down to for this file and delegate, or a one-line
    DataError for a combination that cannot work.

    ``backend`` None is the file's own runtime; ``"auto"`` stays ``"auto"`` only when there
    is something to measure (a delegate or an Edge TPU model goes to the file's own runtime).
    """
    path = Path(path)
    native = native_runtime(path)
    if backend is None:
        return native.name
    if backend == "auto":
        return native.name if _needs_native(path, delegate) else "auto"
    runtime = get_runtime(backend)
    if not runtime.reads_file(path):
        others = [r.name for r in readers(path, installed_only=False) if r.name != backend]
        use = f"use --backend {', '.join(others)} or auto" if others else "use --backend auto"
        raise DataError(
            f"--backend {backend} runs {'/'.join(runtime.reads)} models; {path.name} is "
            f"{format_name(path)}: {use}"
        )
    if _needs_native(path, delegate) and not runtime.is_native(path):
        what = f"--delegate {delegate}" if delegate not in ("auto", "cpu") else path.name
        owner = f"{native.title}'s"
        if path.stem.endswith("_edgetpu"):
            owner += f" (an Edge TPU model runs on {native.title})"
        raise DataError(
            f"--backend {backend} cannot take {what}: it is {owner}; drop --backend or the delegate"
        )
    return runtime.name


def open_backend(
    model_path: str | Path,
    *,
    backend: str | None = None,
    delegate: str = "auto",
    threads: int | None = None,
    fallback: bool = False,
    device: str | None = None,
    warn: Any = None,
) -> Opened:
    """Open ``model_path`` on one runtime; what was opened, as a record.

    ``backend``: None (the file's own runtime: LiteRT for ``.tflite``, onnxruntime for
    ``.onnx``) or a registered runtime ("litert", "onnxruntime", "openvino", …); ``"auto"``
    is measured by :func:`edgeseg.runtime.selection.open_selected`, and here only accepted
    where it cannot mean anything else (a delegate: the file's own runtime).
    ``delegate``: ``auto`` (the Edge TPU for ``*_edgetpu.tflite`` models, else the CPU),
    ``cpu``, ``edgetpu``, a path to a TFLite delegate library, or for ``.onnx`` an
    onnxruntime provider (``tensorrt``, ``cuda``). ``device`` selects one of several Edge
    TPUs (``usb:0``, ``pci:0``). With ``fallback``, a delegate that cannot be loaded is
    reported through ``warn(message)`` and the model's CPU sibling (or the model itself, for
    a delegate library) runs on the CPU instead.
    """
    # A source ONNX (PyTorch's NCHW, logits) runs as its NHWC-probabilities copy.
    path = adapt_onnx(Path(model_path))
    name = resolve_runtime(path, backend, delegate)
    if name == "auto":
        raise ValueError(
            "--backend auto is measured by edgeseg.runtime.selection.open_selected, not here"
        )
    opened = get_runtime(name).open(
        path, threads=threads, delegate=delegate, device=device, fallback=fallback, warn=warn
    )
    chosen_by = {None: "file", "auto": "auto: delegate"}.get(backend, "asked")
    return replace(opened, chosen_by=chosen_by)


def open_model(
    model_path: str | Path,
    *,
    backend: str | None = None,
    delegate: str = "auto",
    threads: int | None = None,
    fallback: bool = False,
    device: str | None = None,
    warn: Any = None,
    **flags: Any,
) -> OpenedModel:
    """:func:`open_backend`, and the model's metadata with ``flags`` applied (input_size,
    normalization, input_max, threshold, channel_order: for models without edgeseg
    metadata; see :func:`edgeseg.core.metadata.apply_flags`)."""
    opened = open_backend(
        model_path,
        backend=backend,
        delegate=delegate,
        threads=threads,
        fallback=fallback,
        device=device,
        warn=warn,
    )
    b = opened.backend
    embedded = b.metadata()
    meta = apply_flags(embedded, b.input.shape, b.output.shape, **flags)
    return OpenedModel(opened, meta, embedded is not None)


def reopen(opened: Opened, threads: int | None) -> Backend:
    """Another instance of the same runtime on the same file, with ``threads`` (one per
    worker of a pool). Delegates are not carried over: CPU backends only."""
    if not opened.cpu:
        raise DataError(f"cannot open another instance of {opened.describe()}: not the CPU")
    return get_runtime(opened.runtime).reopen(opened.backend, threads)


def import_runtime(name: str) -> None:
    """Import the runtime ``name`` now (e.g. before a memory baseline); a one-line
    MissingDependencyError when it is not installed."""
    get_runtime(name).import_now()
