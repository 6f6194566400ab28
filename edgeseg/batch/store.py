"""Where `edgeseg segment` writes, and how a restart knows what is done.

Layout of OUT:

- ``STEM.png`` / ``STEM.tif``: the label image of an image file (exactly what `edgeseg run
  --save-masks` writes for that frame); ``STEM.tif``: the label stack of a TIFF stack;
  ``STEM.zarr``: the label array of a Zarr input (its shape without C, its chunking);
- ``objects.parquet`` (or ``objects.csv``): one row per object per frame;
- ``summary.json``: counts per input, throughput, what ran where;
- ``.edgeseg-batch/``: the restart ledger (one small JSON a finished frame or block, named by
  a key of input identity, unit, model sha256 and settings, and beside it a ``.npz`` of its
  arrays: object measurements, a block's classes and edges), the parts of stacks being
  assembled, and the work arrays of Zarr inputs (deleted when the input is finished).

Every file is published by :func:`edgeseg.paths.atomic_write` (a temporary name, fsync, rename),
and a unit's ledger entry is written after its outputs: an interrupted unit is simply redone, a
finished one never.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.objects import OBJECT_CSV_FIELDS, csv_value
from edgeseg.errors import DataError
from edgeseg.paths import atomic_write, is_partial

__all__ = [
    "TABLE_FIELDS",
    "WORK",
    "Ledger",
    "ObjectTable",
    "columns_bytes",
    "load_columns",
    "remove_partials",
    "unit_key",
]

WORK = ".edgeseg-batch"
#: Columns of the objects table: the input, then `edgeseg run --objects`'s columns.
TABLE_FIELDS = ("input", *OBJECT_CSV_FIELDS)


def unit_key(*parts: Any) -> str:
    """A ledger key: sha256 of the parts (JSON), 32 hex digits."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def remove_partials(folder: Path) -> None:
    """Delete the temporary files an interrupted run left in ``folder`` (ours only:
    :func:`edgeseg.paths.is_partial`)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if is_partial(p) and p.is_file():
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
        return {p.stem for p in self.dir.glob("*.json") if not is_partial(p)}

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


#: Text columns of the objects table.
_STRING = ("input", "name", "class")


def columns_bytes(columns: Mapping[str, np.ndarray]) -> bytes:
    """Arrays (a frame's object columns…) as ``.npz`` bytes (no pickle: text columns, object
    arrays of str, become fixed-width unicode)."""
    buf = io.BytesIO()
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    arrays = {k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()}
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
    """The objects table (:data:`TABLE_FIELDS`), gathered a frame at a time and written once,
    frames in (input, frame) order and objects in id order within a frame.

    For Parquet each frame becomes an Arrow table as it arrives (while the workers work), so
    that the end of a run only concatenates and writes; for CSV frames stay numpy columns.
    """

    def __init__(self, fmt: str = "parquet") -> None:
        if fmt not in ("parquet", "csv"):
            raise DataError(f"--table-format must be parquet or csv, got {fmt}")
        self.fmt = fmt
        self._parts: list[tuple[tuple[str, int], Any]] = []
        self._rows = 0

    def add(
        self,
        input: str,
        frame: int,
        name: str | None,
        columns: Mapping[str, np.ndarray],
        class_names: Sequence[str] | None = None,
    ) -> int:
        """Add one frame's objects (``class`` and the measurement columns); returns how many.
        ``class_names``: ``class`` holds codes, indices into these names."""
        n = len(columns["id"]) if "id" in columns else 0
        if not n:
            return 0
        ids = np.asarray(columns["id"])
        if np.any(ids[1:] < ids[:-1]):
            order = np.argsort(ids, kind="stable")
            columns = {k: np.asarray(v)[order] for k, v in columns.items()}
        head = {"input": input, "frame": frame, "name": name}
        if self.fmt == "parquet":
            part: Any = _arrow_part(head, columns, n, class_names)
        else:
            if class_names is not None:
                names = np.asarray(list(class_names), object)
                columns = {**columns, "class": names[np.asarray(columns["class"], np.intp)]}
            part = (head, columns)
        self._parts.append(((input, frame), part))
        self._rows += n
        return n

    def __len__(self) -> int:
        return self._rows

    def columns(self) -> dict[str, np.ndarray]:
        """Every column over all frames, in table order (text columns as object arrays)."""
        if self.fmt == "parquet":
            table = self._arrow()
            return {f: np.asarray(table.column(f).to_pylist(), _dtype(f)) for f in TABLE_FIELDS}
        parts = [p for _, p in sorted(self._parts, key=lambda p: p[0])]
        counts = np.asarray([len(c["id"]) for _, c in parts], np.int64)
        out: dict[str, np.ndarray] = {}
        for f in TABLE_FIELDS:
            if f in ("input", "frame", "name"):
                out[f] = np.repeat(np.asarray([h[f] for h, _ in parts], _dtype(f)), counts)
            elif not parts:
                out[f] = np.zeros(0, _dtype(f))
            else:
                out[f] = np.concatenate([np.asarray(c[f]) for _, c in parts]).astype(_dtype(f))
        return out

    def _arrow(self) -> Any:
        from edgeseg.batch.deps import need

        pa = need("pyarrow")
        parts = [p for _, p in sorted(self._parts, key=lambda p: p[0])]
        if not parts:
            return pa.schema(_arrow_fields(pa)).empty_table()
        return pa.concat_tables(parts)

    def write(self, path: Path) -> int:
        """Write the table (atomically); returns its number of rows."""
        if self.fmt == "parquet":
            from edgeseg.batch.deps import need

            pq = need("pyarrow.parquet")
            buf = io.BytesIO()
            pq.write_table(self._arrow(), buf)
            atomic_write(path, buf.getvalue())
            return self._rows
        cols = self.columns()
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
        return self._rows


def _dtype(field: str) -> Any:
    if field in _STRING:
        return object
    if field in _FLOAT:
        return np.float64
    return bool if field == "touches_border" else np.int64


def _arrow_fields(pa: Any) -> list[Any]:
    types = {"touches_border": pa.bool_()}
    types.update({f: pa.string() for f in _STRING})
    types.update({f: pa.float64() for f in _FLOAT})
    return [pa.field(f, types.get(f, pa.int64())) for f in TABLE_FIELDS]


def _arrow_part(
    head: Mapping[str, Any],
    columns: Mapping[str, np.ndarray],
    n: int,
    class_names: Sequence[str] | None,
) -> Any:
    """One frame's rows as an Arrow table of the table's schema (NaN floats: nulls)."""
    from edgeseg.batch.deps import need

    pa = need("pyarrow")
    arrays = []
    for field in _arrow_fields(pa):
        f = field.name
        if f in head:
            arrays.append(pa.repeat(pa.scalar(head[f], field.type), n))
        elif f == "class" and class_names is not None:
            codes = pa.array(np.asarray(columns[f], np.int32))
            names = pa.array(list(class_names), pa.string())
            arrays.append(pa.DictionaryArray.from_arrays(codes, names).cast(pa.string()))
        elif f in _FLOAT:
            arrays.append(pa.array(np.asarray(columns[f], np.float64), from_pandas=True))
        else:
            arrays.append(pa.array(np.asarray(columns[f]), type=field.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(_arrow_fields(pa)))


#: Measurement columns of floats (NaN: not measured, an empty cell).
_FLOAT = (
    "area_um2",
    "centroid_y",
    "centroid_x",
    "mean_intensity",
    "integrated_intensity",
)
