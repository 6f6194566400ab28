"""Bounded, crash-safe output folders: sizes, the ring of files, fsync.

- :func:`parse_size`: ``"2G"``, ``"500M"``, ``"1048576"`` or ``"20%"`` (of the free space) →
  bytes, with one-line errors.
- :class:`Ring`: the files of ONE naming pattern in a folder, oldest first, with their total
  size; :meth:`Ring.enforce` deletes the oldest until the total is within ``max_bytes``.
  Files that do not match the pattern are never counted and never deleted.
- :func:`fsync_file`, :func:`fsync_dir`: make a finished file and its name durable.

Used by the sinks (video segments, mask files, rotated CSVs), which are the only writers here.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeseg.errors import DataError

__all__ = ["Ring", "disk_full", "fsync_dir", "fsync_file", "parse_size"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[KMGT]?)(?:I?B)?", re.IGNORECASE)
_SHARE = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*%")


def parse_size(text: str | int, free_bytes: int | None = None) -> int:
    """Bytes from ``"1048576"``, ``"500M"``, ``"2G"`` (K/M/G/T are powers of 1024; ``B``,
    ``KB``, ``KiB``… are accepted) or ``"20%"``: that share of ``free_bytes``.

    A share needs ``free_bytes``. Zero, negative and unreadable sizes raise a one-line
    :class:`~edgeseg.errors.DataError`.
    """
    if isinstance(text, bool):
        raise DataError(f"bad size {text!r}: give bytes (1048576), 500M, 2G or 20%")
    if isinstance(text, int):
        if text <= 0:
            raise DataError(f"a size must be more than 0 bytes, got {text}")
        return text
    s = str(text).strip()
    bad = DataError(
        f"bad size {text!r}: give bytes (1048576), a size with K/M/G/T (500M, 2G) "
        "or a share of the free space (20%)"
    )
    share = _SHARE.fullmatch(s)
    if share:
        pct = float(share["num"])
        if not 0 < pct <= 100:
            raise DataError(f"bad size {text!r}: a share of the free space is 0-100%, not {pct:g}%")
        if free_bytes is None:
            raise DataError(f"bad size {text!r}: a share of the free space needs a folder")
        out = int(free_bytes * pct / 100)
        if out <= 0:
            raise DataError(f"{text} of the free space is 0 bytes: the disk is full")
        return out
    m = _SIZE.fullmatch(s)
    if not m:
        raise bad
    value = float(m["num"]) * _UNITS[m["unit"].upper()]
    if not math.isfinite(value) or value < 1:
        raise DataError(f"a size must be at least 1 byte, got {text!r}")
    return int(value)


def disk_full(exc: BaseException) -> bool:
    """True for the errors of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to the disk (raises OSError)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make renames and deletions in ``folder`` durable; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


class Ring:
    """The files named by ``pattern`` in ``folder``, oldest first, kept within ``max_bytes``.

    ``pattern`` (a regex, matched against the whole file name) says which files are ours;
    nothing else is ever counted or deleted. At construction the folder is scanned and the
    files found (an earlier run's) are ordered by ``order`` (a key on the path; default the
    name); later :meth:`add` puts a file at the newest end (again, if it was there already:
    an overwritten file is new). ``max_bytes`` is bytes, a size text for :func:`parse_size`,
    or None for no bound; a share (``"20%"``) is of the space that was free at construction
    plus what our files already take (so a restart does not shrink the bound).
    """

    def __init__(
        self,
        folder: str | Path,
        pattern: str | re.Pattern[str],
        max_bytes: int | str | None = None,
        *,
        order: Callable[[Path], Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        self.warnings: list[str] = []
        self.deleted = 0
        self._files: OrderedDict[str, int] = OrderedDict()  # name → bytes, oldest first
        self.total = 0
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            raise DataError(f"cannot list {self.folder}: {exc.strerror or exc}") from exc
        for entry in entries:
            if not self.pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
        key = order or (lambda p: p.name)
        for path in sorted(found, key=key):
            with contextlib.suppress(OSError):
                self._put(path.name, path.stat().st_size)
        if max_bytes is None:
            self.max_bytes: int | None = None
        else:
            free = None
            if isinstance(max_bytes, str) and max_bytes.strip().endswith("%"):
                try:
                    free = shutil.disk_usage(self.folder).free + self.total
                except OSError as exc:
                    raise DataError(
                        f"cannot measure the free space of {self.folder}: {exc.strerror or exc}"
                    ) from exc
            self.max_bytes = parse_size(max_bytes, free_bytes=free)

    def __len__(self) -> int:
        return len(self._files)

    def _put(self, name: str, size: int) -> None:
        self.total -= self._files.pop(name, 0)
        self._files[name] = size
        self.total += size

    def names(self) -> list[str]:
        """Our files, oldest first."""
        return list(self._files)

    def add(self, path: str | Path) -> None:
        """Count a file just written (or rewritten) as the newest; raises OSError if gone."""
        path = Path(path)
        if path.parent != self.folder or not self.pattern.fullmatch(path.name):
            raise ValueError(f"{path} is not a file of this ring")
        self._put(path.name, path.stat().st_size)

    def enforce(self, reserve: int = 0) -> list[Path]:
        """Delete our oldest files until ``total + reserve <= max_bytes``; the deleted paths.

        ``reserve`` is room kept for a file still being written (the open video segment, the
        current CSV); it never costs the newest file, which only goes when it alone is over
        the bound. A file that cannot be deleted is dropped from the count with a warning.
        """
        if self.max_bytes is None:
            return []
        gone: list[Path] = []
        while self._files and (
            self.total > self.max_bytes
            or (len(self._files) > 1 and self.total + reserve > self.max_bytes)
        ):
            name, size = self._files.popitem(last=False)
            self.total -= size
            path = self.folder / name
            try:
                path.unlink()
            except FileNotFoundError:
                continue  # removed by someone else: nothing to free
            except OSError as exc:
                if len(self.warnings) < 5:
                    self.warnings.append(
                        f"cannot delete {path} to keep {self.folder} within its size bound: "
                        f"{exc.strerror or exc}"
                    )
                continue
            self.deleted += 1
            gone.append(path)
        # No fsync of the folder: a deletion lost to a power cut is found again by the next
        # run's scan and deleted then.
        return gone
