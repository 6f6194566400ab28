"""The runtimes edgeseg can run a model on: one :class:`Runtime` entry each, found by name.

A runtime is one module beside this one (``litert.py``, ``onnxruntime.py``, ``openvino.py``)
that defines its adapter class and a module-level ``RUNTIME = Runtime(...)``: its name (what
``--backend`` takes), the model files it reads, the distributions and modules that tell it is
installed, and the functions that open a model on it and open another instance for a worker
pool. Nothing outside that module switches on the runtime's name: opening, ``--backend
auto``'s candidates and cache key, ``bench``'s memory baseline and the worker pools all ask
this registry.

Two ways to register one, both a single line:

- built in: its ``module:attribute`` in :data:`BUILTIN`;
- from another distribution: an entry point in the group :data:`ENTRY_POINT_GROUP`
  (``edgeseg.runtimes``), e.g. in its ``pyproject.toml``::

      [project.entry-points."edgeseg.runtimes"]
      myrt = "my_package.edgeseg_runtime:RUNTIME"

  Entry points are read from the installed distributions' metadata, so a runtime registered
  this way is seen by every process, including the children ``--backend auto`` measures in.

A built-in name wins over an entry point of the same name (the clash is listed by
:func:`registry_problems`, as is an entry point that cannot be loaded).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeseg.errors import DataError, MissingDependencyError

if TYPE_CHECKING:
    from edgeseg.core.backend import Backend
    from edgeseg.runtime.backends.base import Opened

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "FORMATS",
    "Runtime",
    "backend_names",
    "format_name",
    "get_runtime",
    "installed_runtimes",
    "model_suffixes",
    "native_runtime",
    "plugins",
    "readers",
    "registry_problems",
    "runtimes",
]

#: The entry-point group other distributions register runtimes in.
ENTRY_POINT_GROUP = "edgeseg.runtimes"

#: The runtimes that ship with edgeseg, in order of preference among equals.
BUILTIN = (
    "edgeseg.runtime.backends.litert:RUNTIME",
    "edgeseg.runtime.backends.openvino:RUNTIME",
    "edgeseg.runtime.backends.onnxruntime:RUNTIME",
)

#: How messages name a model format, by suffix (a runtime may read others: named by suffix).
FORMATS = {".tflite": "TFLite", ".onnx": "ONNX"}


@dataclass(frozen=True)
class Runtime:
    """One runtime: what it reads and how to open a model on it.

    Attributes:
        name: What ``--backend`` takes, e.g. "litert".
        reads: Model suffixes it opens (lower case), e.g. (".tflite", ".onnx").
        open: ``open(path, *, threads, delegate, device, fallback, warn) -> Opened``: the
            model on this runtime (``delegate``: "auto", "cpu" or, for a runtime with
            ``delegates``, its own delegate or provider name; ``device``: which accelerator
            of several; ``fallback``/``warn``: run on the CPU when the delegate cannot load,
            saying so). Raises one-line edgeseg errors.
        reopen: ``reopen(backend, threads) -> Backend``: another instance on the same file
            with ``threads`` (one per worker of a pool; CPU only).
        native: Suffixes whose own runtime this is: the reference ``--backend auto``
            compares the others with, and what runs the file when no backend is named.
        delegates: It takes ``--delegate`` values beyond auto and cpu (TFLite delegates,
            onnxruntime providers); such a delegate sends a model to its native runtime.
        distributions: Distributions whose installed version identifies it (first found).
        modules: Modules whose presence tells it is installed (found, never imported here).
        title: Its name in messages, e.g. "LiteRT".
        install: How to install it, one clause for messages.
        load: Import the runtime now (before a memory baseline), raising
            MissingDependencyError when it is absent; default: import ``modules[0]``.
    """

    name: str
    reads: tuple[str, ...]
    open: Callable[..., Opened]
    reopen: Callable[[Backend, int | None], Backend]
    native: tuple[str, ...] = ()
    delegates: bool = False
    distributions: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    title: str = ""
    install: str = ""
    load: Callable[[], None] | None = field(default=None, compare=False)

    def reads_file(self, path: str | Path) -> bool:
        return Path(path).suffix.lower() in self.reads

    def is_native(self, path: str | Path) -> bool:
        return Path(path).suffix.lower() in self.native

    def installed(self) -> bool:
        """Whether one of its modules can be imported (nothing is imported to tell)."""
        return any(_found(m) for m in self.modules) if self.modules else True

    def version(self) -> str:
        """ "ai-edge-litert 2.3.0": the first of its distributions installed."""
        for dist in self.distributions:
            try:
                return f"{dist} {importlib.metadata.version(dist)}"
            except importlib.metadata.PackageNotFoundError:
                continue
        return "(unknown version)"

    def import_now(self) -> None:
        """Import the runtime (e.g. before a memory baseline); a one-line
        MissingDependencyError when it is not installed."""
        if self.load is not None:
            self.load()
            return
        for module in self.modules[:1]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                hint = f"; {self.install}" if self.install else ""
                raise MissingDependencyError(
                    f"{self.title or self.name} is not installed ({exc}){hint}"
                ) from exc


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


_lock = threading.Lock()
_cache: dict[tuple[str, ...], tuple[dict[str, Runtime], tuple[str, ...], frozenset[str]]] = {}


def _load(spec: str) -> Runtime:
    module_name, _, attr = spec.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in (attr or "RUNTIME").split("."):
        value = getattr(value, part)
    if not isinstance(value, Runtime):
        raise TypeError(f"{spec} is a {type(value).__name__}, not an edgeseg Runtime")
    return value


def _discover() -> tuple[dict[str, Runtime], tuple[str, ...], frozenset[str]]:
    found: dict[str, Runtime] = {}
    problems: list[str] = []
    for spec in BUILTIN:
        runtime = _load(spec)
        found[runtime.name] = runtime
    builtin = frozenset(found)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} = {ep.value}"
        try:
            runtime = ep.load()
        except Exception as exc:  # a third party's import error must not stop edgeseg
            problems.append(f"{where} cannot be loaded: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(runtime, Runtime):
            problems.append(f"{where} is a {type(runtime).__name__}, not an edgeseg Runtime")
        elif runtime.name in found:
            problems.append(f"{where}: the runtime {runtime.name!r} is already registered")
        else:
            found[runtime.name] = runtime
    return found, tuple(problems), builtin


def _registry() -> tuple[dict[str, Runtime], tuple[str, ...], frozenset[str]]:
    # Keyed by sys.path: a distribution added to the path (a test's plugin) is seen at once.
    key = tuple(sys.path)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            hit = _cache[key] = _discover()
        return hit


def runtimes() -> dict[str, Runtime]:
    """name → Runtime of every registered runtime, installed or not, built-ins first."""
    return dict(_registry()[0])


def plugins() -> dict[str, Runtime]:
    """The runtimes other distributions registered (entry points), by name."""
    found, _, builtin = _registry()
    return {name: r for name, r in found.items() if name not in builtin}


def registry_problems() -> tuple[str, ...]:
    """One line per entry point that could not be registered (for ``edgeseg doctor``)."""
    return _registry()[1]


def backend_names() -> tuple[str, ...]:
    """What ``--backend`` takes: ``auto`` and every registered runtime."""
    return ("auto", *runtimes())


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``, or a one-line DataError listing the known ones."""
    found = runtimes()
    if name not in found:
        raise DataError(f"unknown --backend {name!r}; use {', '.join(backend_names())}")
    return found[name]


def native_runtime(path: str | Path) -> Runtime:
    """The file's own runtime (LiteRT for .tflite, onnxruntime for .onnx), or a one-line
    DataError for a file no runtime claims."""
    for runtime in runtimes().values():
        if runtime.is_native(path):
            return runtime
    suffixes = sorted({s for r in runtimes().values() for s in r.native})
    raise DataError(f"{Path(path).name} is not a model edgeseg runs ({', '.join(suffixes)})")


def readers(path: str | Path, *, installed_only: bool = True) -> list[Runtime]:
    """The runtimes that read ``path``, the native one first (installed ones only, unless
    told otherwise)."""
    found = [r for r in runtimes().values() if r.reads_file(path)]
    found.sort(key=lambda r: not r.is_native(path))
    return [r for r in found if r.installed()] if installed_only else found


def model_suffixes() -> tuple[str, ...]:
    """Every suffix a registered runtime reads (".tflite", ".onnx", …), in registry order:
    the files that are device artefacts."""
    return tuple(dict.fromkeys(s for r in runtimes().values() for s in r.reads))


def installed_runtimes() -> dict[str, str]:
    """name → version of each registered runtime that is installed, found without importing
    it."""
    return {name: r.version() for name, r in runtimes().items() if r.installed()}


def format_name(path: str | Path) -> str:
    """ "TFLite" for a .tflite file, "ONNX" for .onnx, the suffix itself otherwise."""
    suffix = Path(path).suffix.lower()
    return FORMATS.get(suffix, suffix or "a file without a suffix")
