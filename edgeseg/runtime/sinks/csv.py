"""The CSV sink: one row a frame, straight to the file, rotated within a size bound
(:class:`CsvSink`)."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.objects import csv_value
from edgeseg.errors import DataError
from edgeseg.paths import publish
from edgeseg.runtime.sinks.base import (
    CSV_FIELDS,
    Record,
    SinkBase,
    os_reason,
    record_fields,
    stop_message,
)
from edgeseg.runtime.storage import Ring
from edgeseg.sizes import parse_bytes

__all__ = ["CsvSink"]


class CsvSink(SinkBase):
    """One CSV row a frame with the ``fields`` of each record, header first.

    Every row is written straight to the file (no buffer), so the file is complete up to the
    last frame even if the process is killed. Fields missing from a record are left empty,
    keys not in ``fields`` ignored; floats are written with at most 4 decimals.

    With ``max_bytes`` (bytes, ``"50M"``, ``"20%"``) the file rotates: when ``path`` would
    grow past ``file_bytes`` (default a tenth of ``max_bytes``) it is fsynced and renamed to
    ``name.1.csv``, ``name.2.csv``… (higher is newer; the numbers continue across restarts)
    and a new ``path`` starts with the header; the oldest rotated files are deleted so all of
    them with the current one stay within ``max_bytes``. Each file is complete with its
    header. A CSV of an earlier run found at ``path`` is rotated aside, not overwritten
    (without ``max_bytes`` it is overwritten, as always).

    A write that fails on disk stops the CSV with a warning (:attr:`stopped`) and never
    raises; the file is cut back to its last whole row.
    """

    def __init__(
        self,
        path: str | Path,
        fields: Sequence[str] = CSV_FIELDS,
        *,
        max_bytes: int | str | None = None,
        file_bytes: int | str | None = None,
        what: str = "CSV",
    ) -> None:
        self.path = Path(path)
        self.what = what  # how warnings name it: "CSV stopped: disk full (…)"
        self.fields = tuple(fields)
        self.rows = 0
        self.warnings: list[str] = []
        self.ring: Ring | None = None
        self.file_bytes: int | None = None
        self._fd = -1
        self._bytes = 0  # of the current file, all whole rows
        self._header = self._line(self.fields)
        self._next = 1
        if not self.fields:
            raise DataError("a CSV needs at least one field")
        if self.path.is_dir():
            raise DataError(f"cannot write CSV {self.path}: it is a folder")
        if file_bytes is not None and max_bytes is None:
            raise DataError("a CSV file size to rotate at needs a bound on the total (max_bytes)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot write CSV {self.path}: {os_reason(exc)}") from exc
        if max_bytes is not None:
            stem, suffix = re.escape(self.path.stem), re.escape(self.path.suffix)
            self.ring = Ring(
                self.path.parent, rf"{stem}\.(?P<seq>\d+){suffix}", max_bytes, order=self._seq
            )
            assert self.ring.max_bytes is not None
            per_file = (
                max(1, self.ring.max_bytes // 10) if file_bytes is None else parse_bytes(file_bytes)
            )
            if per_file > self.ring.max_bytes:
                raise DataError(
                    f"a CSV file of {per_file} bytes does not fit in a total of "
                    f"{self.ring.max_bytes} bytes"
                )
            self.file_bytes = per_file
            self._next = max((self._seq(Path(n)) for n in self.ring.names()), default=0) + 1
        try:
            if self.ring is not None and self.path.is_file() and self.path.stat().st_size > 0:
                self._rotate_aside()
            self._open()
        except OSError as exc:
            raise DataError(f"cannot write CSV {self.path}: {os_reason(exc)}") from exc

    def _seq(self, path: Path) -> int:
        return int(path.name[len(self.path.stem) + 1 : len(path.name) - len(self.path.suffix)])

    @staticmethod
    def _line(row: Sequence[Any]) -> bytes:
        buf = io.StringIO(newline="")
        csv.writer(buf).writerow(row)
        return buf.getvalue().encode("utf-8")

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._bytes = 0
        self._append(self._header)

    def _append(self, data: bytes) -> None:
        """Write whole ``data`` or, on an error, cut the file back to its last whole row."""
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._bytes)
            raise
        self._bytes += len(data)

    def _rotate_aside(self) -> None:
        """Publish ``path`` as the next ``name.N.csv`` and keep the rotated files bounded."""
        assert self.ring is not None and self.file_bytes is not None
        target = self.path.with_name(f"{self.path.stem}.{self._next}{self.path.suffix}")
        self._next += 1
        publish(self.path, target)
        self.ring.add(target)
        self.ring.enforce(reserve=self.file_bytes)

    def _rotate(self) -> None:
        os.close(self._fd)  # publish fsyncs it before the rename
        self._fd = -1
        self._rotate_aside()
        self._open()

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
        self.write_rows([record_fields(record)])

    def write_rows(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Several rows at once (one frame's objects): written together in one system call, so
        the file holds all of them or, after a failure, none (it is cut back before them)."""
        self._check_open()
        if self.stopped is not None or not records:
            return
        line = b"".join(
            self._line([csv_value(record.get(f)) for f in self.fields]) for record in records
        )
        try:
            if not self.path.exists():
                raise OSError(errno.ENOENT, "removed while writing", str(self.path))
            if (
                self.file_bytes is not None
                and self._bytes > len(self._header)
                and self._bytes + len(line) > self.file_bytes
            ):
                self._rotate()
            self._append(line)
        except OSError as exc:
            self.stopped = stop_message(self.what, exc)
            self.warnings.append(f"{self.stopped}; {self.rows} rows written, inference goes on")
            return
        self.rows += len(records)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ring is not None:
            self.warnings += self.ring.warnings
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            except OSError as exc:
                if not self.stopped:
                    self.warnings.append(f"cannot write CSV {self.path}: {os_reason(exc)}")
            finally:
                os.close(fd)
