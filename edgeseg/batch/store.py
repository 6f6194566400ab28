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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import DataError
from edgeseg.runtime.sinks import OBJECT_CSV_FIELDS, csv_value

__all__ = [
    "TABLE_FIELDS",
    "WORK",
    "Ledger",
    "atomic_write",
    "file_sha256",
    "unit_key",
    "write_table",
]

WORK = ".edgeseg-batch"
#: Columns of the objects table: the input, then `edgeseg run --objects`'s columns.
#: The objects table: the input, then the `run --objects` columns.
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

    def write(self, key: str, record: Mapping[str, Any]) -> None:
        atomic_write(self.path(key), json.dumps(record, default=_json_default).encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def rows_to_columns(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> dict[str, list]:
    """Rows (dicts) → columns (lists), the compact form the ledger keeps."""
    return {f: [r.get(f) for r in rows] for f in fields}


def columns_to_rows(columns: Mapping[str, list]) -> list[dict[str, Any]]:
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    return [{k: columns[k][i] for k in names} for i in range(n)]


def write_table(rows: Iterable[Mapping[str, Any]], path: Path, fmt: str) -> int:
    """Write the objects table (:data:`TABLE_FIELDS`) as Parquet or CSV; returns its rows."""
    rows = list(rows)
    if fmt == "parquet":
        from edgeseg.batch.deps import need

        pa = need("pyarrow")
        pq = need("pyarrow.parquet")
        types = {
            "input": pa.string(),
            "name": pa.string(),
            "class": pa.string(),
            "touches_border": pa.bool_(),
            "area_um2": pa.float64(),
            "centroid_y": pa.float64(),
            "centroid_x": pa.float64(),
            "mean_intensity": pa.float64(),
            "integrated_intensity": pa.float64(),
        }
        arrays = [
            pa.array([r.get(f) for r in rows], type=types.get(f, pa.int64())) for f in TABLE_FIELDS
        ]
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_arrays(arrays, names=list(TABLE_FIELDS)), buf)
        atomic_write(path, buf.getvalue())
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(TABLE_FIELDS)
        for r in rows:
            writer.writerow([csv_value(r.get(f)) for f in TABLE_FIELDS])
        atomic_write(path, text.getvalue().encode())
    else:
        raise DataError(f"--table-format must be parquet or csv, got {fmt}")
    return len(rows)
