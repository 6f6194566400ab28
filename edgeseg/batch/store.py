"""Where `edgeseg segment` writes, and how a restart knows what is done.

Layout of OUT:

- ``STEM.png`` / ``STEM.tif``: the label image of an image file (exactly what `edgeseg run
  --save-masks` writes for that frame); ``STEM.tif``: the label stack of a TIFF stack;
  ``STEM.zarr``: the label array of a Zarr input (its shape without C, its chunking);
- ``objects.parquet`` (or ``objects.csv``): one row per object per frame;
- ``summary.json``: counts per input, throughput, what ran where;
- ``.edgeseg-batch/``: the restart ledger (one small JSON a finished frame or block, named by
  a key of input identity, unit, model sha256 and settings), the parts of stacks being
  assembled, and the work arrays of Zarr inputs (deleted when the input is finished).

Every file is written under a temporary name and renamed, and a unit's ledger entry is
written after its outputs: an interrupted unit is simply redone, a finished one never.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import DataError
from edgeseg.runtime.sinks import OBJECT_CSV_FIELDS, csv_value

__all__ = [
    "TABLE_FIELDS",
    "WORK",
    "Ledger",
    "ObjectTable",
    "atomic_write",
    "columns_bytes",
    "file_sha256",
    "load_columns",
    "unit_key",
]

WORK = ".edgeseg-batch"
#: Columns of the objects table: the input, then `edgeseg run --objects`'s columns.
TABLE_FIELDS = ("input", *OBJECT_CSV_FIELDS)
_PARTIAL = ".partial"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def unit_key(*parts: Any) -> str:
    """A ledger key: sha256 of the parts (JSON), 32 hex digits."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{_PARTIAL}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_partials(folder: Path) -> None:
    """Delete the temporary files an interrupted run left in ``folder`` (ours only)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(_PARTIAL) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()


class Ledger:
    """What is finished: one JSON file per unit under ``OUT/.edgeseg-batch/ledger``."""

    def __init__(self, out: Path) -> None:
        self.dir = Path(out) / WORK / "ledger"
        self.dir.mkdir(parents=True, exist_ok=True)

    def clean(self) -> None:
        """Delete what an interrupted run left half-written (at start, before any task)."""
        remove_partials(self.dir)

    def done(self) -> set[str]:
        """Keys of every finished unit (read once at start)."""
        return {p.stem for p in self.dir.glob("*.json")}

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def read(self, key: str) -> dict[str, Any]:
        try:
            return json.loads(self.path(key).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"damaged restart ledger entry {self.path(key)}: {exc}") from exc

    def write(
        self, key: str, record: Mapping[str, Any], columns: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Write a unit's entry; ``columns``: its objects (a ``.npz`` beside it, written
        first, so that an entry never exists without them)."""
        if columns is not None:
            atomic_write(self.columns_path(key), columns_bytes(columns))
        atomic_write(self.path(key), json.dumps(record, default=_json_default).encode())

    def columns_path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def read_columns(self, key: str) -> dict[str, np.ndarray]:
        """The object columns written with ``key``'s entry."""
        return load_columns(self.columns_path(key))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


#: Columns the ledger keeps per frame: the measurements (class as text), not input or name.
_STRING = ("input", "name", "class")


def columns_bytes(columns: Mapping[str, np.ndarray]) -> bytes:
    """A frame's object columns as ``.npz`` bytes (no pickle: text as fixed-width unicode)."""
    buf = io.BytesIO()
    arrays = {
        k: np.asarray(v, dtype=str) if k in _STRING else np.asarray(v) for k, v in columns.items()
    }
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_columns(path: Path) -> dict[str, np.ndarray]:
    """The object columns :func:`columns_bytes` wrote to ``path``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"damaged restart ledger entry {path}: {exc}") from exc


class ObjectTable:
    """The objects table (:data:`TABLE_FIELDS`), gathered a frame at a time as columns and
    written once, frames in (input, frame) order and objects in id order within a frame."""

    def __init__(self) -> None:
        self._parts: list[tuple[tuple[str, int], str, str | None, Mapping[str, np.ndarray]]] = []

    def add(
        self, input: str, frame: int, name: str | None, columns: Mapping[str, np.ndarray]
    ) -> int:
        """Add one frame's objects (``class`` and the measurement columns); returns how many."""
        n = len(columns["id"]) if "id" in columns else 0
        if n:
            ids = np.asarray(columns["id"])
            if np.any(ids[1:] < ids[:-1]):
                order = np.argsort(ids, kind="stable")
                columns = {k: np.asarray(v)[order] for k, v in columns.items()}
            self._parts.append(((input, frame), input, name, columns))
        return n

    def __len__(self) -> int:
        return sum(len(c["id"]) for *_, c in self._parts)

    def columns(self) -> dict[str, np.ndarray]:
        """Every column over all frames, in table order (text columns as object arrays)."""
        parts = sorted(self._parts, key=lambda p: p[0])
        counts = np.asarray([len(c["id"]) for *_, c in parts], np.int64)
        out: dict[str, np.ndarray] = {}
        for f in TABLE_FIELDS:
            if f == "input":
                out[f] = np.repeat(np.asarray([p[1] for p in parts], object), counts)
            elif f == "frame":
                out[f] = np.repeat(np.asarray([p[0][1] for p in parts], np.int64), counts)
            elif f == "name":
                out[f] = np.repeat(np.asarray([p[2] for p in parts], object), counts)
            elif not parts:
                out[f] = np.zeros(0, object if f == "class" else np.float64)
            else:
                col = np.concatenate([np.asarray(c[f]) for *_, c in parts])
                out[f] = col.astype(object) if f == "class" else col
        return out

    def write(self, path: Path, fmt: str) -> int:
        """Write the table as Parquet or CSV (atomically); returns its number of rows."""
        cols = self.columns()
        n = len(cols["id"])
        if fmt == "parquet":
            from edgeseg.batch.deps import need

            pa = need("pyarrow")
            pq = need("pyarrow.parquet")
            arrays = []
            for f in TABLE_FIELDS:
                col = cols[f]
                if f in _STRING:
                    arrays.append(pa.array(col, type=pa.string()))
                elif f == "touches_border":
                    arrays.append(pa.array(col.astype(bool), type=pa.bool_()))
                elif f in _FLOAT:
                    arrays.append(pa.array(col.astype(np.float64), from_pandas=True))
                else:
                    arrays.append(pa.array(col.astype(np.int64), type=pa.int64()))
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_arrays(arrays, names=list(TABLE_FIELDS)), buf)
            atomic_write(path, buf.getvalue())
        elif fmt == "csv":
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(TABLE_FIELDS)
            cells = []
            for f in TABLE_FIELDS:
                values = cols[f].tolist()
                if f in _FLOAT:
                    values = [None if v != v else v for v in values]
                cells.append(list(map(csv_value, values)))
            writer.writerows(zip(*cells, strict=True))
            atomic_write(path, text.getvalue().encode())
        else:
            raise DataError(f"--table-format must be parquet or csv, got {fmt}")
        return n


#: Measurement columns of floats (NaN: not measured, an empty cell).
_FLOAT = (
    "area_um2",
    "centroid_y",
    "centroid_x",
    "mean_intensity",
    "integrated_intensity",
)
