"""The ``batch`` extra's imports: Dask, distributed, Zarr, pyarrow, with an error naming it."""

from __future__ import annotations

from types import ModuleType

from edgeseg.errors import MissingDependencyError
from edgeseg.optional import require

_WHAT = {
    "dask": "Dask",
    "distributed": "dask.distributed",
    "zarr": "Zarr",
    "pyarrow": "pyarrow",
}


def need(module: str) -> ModuleType:
    """Import ``module`` (dask, distributed, zarr, pyarrow) or raise a one-line error that
    names the ``batch`` extra."""
    try:
        return require(module)
    except MissingDependencyError as exc:
        what = _WHAT.get(module.split(".")[0], module)
        raise MissingDependencyError(
            f"{what} is not installed; `edgeseg segment` needs it: pip install 'edgeseg[batch]'"
        ) from exc


def has(module: str) -> bool:
    """Whether ``module`` imports (pyarrow decides the default table format)."""
    try:
        need(module)
    except MissingDependencyError:
        return False
    return True
