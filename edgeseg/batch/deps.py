"""The ``batch`` extra's imports: Dask, distributed, Zarr, pyarrow, with an error naming it."""

from __future__ import annotations

from types import ModuleType

from edgeseg.errors import MissingDependencyError
from edgeseg.optional import require


def need(module: str) -> ModuleType:
    """Import ``module`` (dask, distributed, zarr, pyarrow) or raise a one-line error that
    names the ``batch`` extra (:data:`edgeseg.optional` knows which extra has what)."""
    return require(module)


def has(module: str) -> bool:
    """Whether ``module`` imports (pyarrow decides the default table format)."""
    try:
        need(module)
    except MissingDependencyError:
        return False
    return True
