"""Bounded output folders: the ring of files, and what a full disk looks like.

- :class:`Ring`: the files of ONE naming pattern in a folder, oldest first, with their total
  size; :meth:`Ring.enforce` deletes the oldest until the total is within ``max_bytes``
  (a size as :func:`edgeseg.sizes.parse_bytes` reads it: ``"2G"``, ``"500M"``, ``"20%"``).
  Files that do not match the pattern are never counted and never deleted.
- :func:`disk_full`: the errors of a full disk or an exhausted quota.

Used by the sinks (video segments, mask files, rotated CSVs), which are the only writers here;
they publish their files with :mod:`edgeseg.paths`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeseg.errors import DataError
from edgeseg.sizes import parse_bytes

__all__ = ["Ring", "disk_full"]


def disk_full(exc: BaseException) -> bool:
    """True for the errors of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Ring:
    """The files named by ``pattern`` in ``folder``, oldest first, kept within ``max_bytes``.

    ``pattern`` (a regex, matched against the whole file name) says which files are ours;
    nothing else is ever counted or deleted. At construction the folder is scanned and the
    files found (an earlier run's) are ordered by ``order`` (a key on the path; default the
    name); later :meth:`add` puts a file at the newest end (again, if it was there already:
    an overwritten file is new). ``max_bytes`` is bytes, a size text for
    :func:`~edgeseg.sizes.parse_bytes`, or None for no bound; a share (``"20%"``) is of the
    space that was free at construction plus what our files already take (so a restart does
    not shrink the bound).
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
            self.max_bytes = parse_bytes(max_bytes, free_bytes=free)

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
