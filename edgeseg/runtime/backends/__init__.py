"""Runtimes: one module per runtime, a registry, and one way to open a device artefact.

- :mod:`~edgeseg.runtime.backends.base`: what every adapter shares (the image-model base
  classes, the signature and input checks) and the :class:`Opened` record;
- :mod:`~edgeseg.runtime.backends.registry`: the :class:`Runtime` entries, found by name
  (built in, or registered by another distribution under the ``edgeseg.runtimes``
  entry-point group);
- :mod:`~edgeseg.runtime.backends.litert`, :mod:`~.onnxruntime`, :mod:`~.openvino`: one
  runtime each, the only modules that import a runtime;
- :mod:`~edgeseg.runtime.backends.opening`: :func:`open_backend`, :func:`open_model`,
  :func:`reopen`.

Adding a runtime is one new module with a ``RUNTIME = Runtime(...)`` entry and one line that
registers it (see the registry's docstring). Importing this package imports no runtime.
"""

from edgeseg.runtime.backends.base import Opened, onnx_metadata
from edgeseg.runtime.backends.litert import (
    EDGETPU_INSTALL_HINT,
    TFLiteBackend,
    cpu_sibling,
    interpreter_class,
    load_backend,
    load_delegate,
)
from edgeseg.runtime.backends.onnxruntime import ORT_PROVIDERS, OnnxBackend, choose_providers
from edgeseg.runtime.backends.opening import (
    OpenedModel,
    import_runtime,
    open_backend,
    open_model,
    reopen,
    resolve_runtime,
)
from edgeseg.runtime.backends.openvino import OpenVinoBackend
from edgeseg.runtime.backends.registry import (
    Runtime,
    backend_names,
    get_runtime,
    installed_runtimes,
    native_runtime,
    readers,
    runtimes,
)

__all__ = [
    "EDGETPU_INSTALL_HINT",
    "ORT_PROVIDERS",
    "OnnxBackend",
    "OpenVinoBackend",
    "Opened",
    "OpenedModel",
    "Runtime",
    "TFLiteBackend",
    "backend_names",
    "choose_providers",
    "cpu_sibling",
    "get_runtime",
    "import_runtime",
    "installed_runtimes",
    "interpreter_class",
    "load_backend",
    "load_delegate",
    "native_runtime",
    "onnx_metadata",
    "open_backend",
    "open_model",
    "readers",
    "reopen",
    "resolve_runtime",
    "runtimes",
]
