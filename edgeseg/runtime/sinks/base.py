"""What every sink is: the :class:`Sink` protocol, the :class:`SinkBase` class the sinks
build on, and the disk-failure policy they share.

A write that fails on disk (full, the folder removed: any OSError) never raises into the
pipeline: the sink stops writing, sets ``stopped`` to :func:`stop_message`'s one line
(``"recording stopped: disk full (…)"``), adds it to its ``warnings``, and inference and the
other sinks go on. :func:`write_failed` names the error of a writer that failed without
saying why (disk full if it is); :func:`remove_partials` deletes the unfinished files of
an earlier run that was killed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeseg.errors import DataError
from edgeseg.runtime.storage import disk_full

__all__ = [
    "CSV_FIELDS",
    "FrameSink",
    "Sink",
    "SinkBase",
    "os_reason",
    "remove_partials",
    "stop_message",
    "write_failed",
]

# The per-frame CSV columns the pipeline writes (a caller may pass its own list).
CSV_FIELDS = (
    "frame",
    "timestamp_s",
    "preprocess_ms",
    "inference_ms",
    "postprocess_ms",
    "render_ms",
    "latency_ms",
    "objects",
    "dropped",
)
_LOW_SPACE = 1 << 20  # less free than this after a failed write: the disk is full


@runtime_checkable
class Sink(Protocol):
    """What the pipeline writes rendered frames to."""

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class FrameSink(Sink, Protocol):
    """A sink that also wants the raw frame as read (``wants_frame`` true): the pipeline
    passes it as ``frame=`` (uint8/uint16/float, (H, W) or (H, W, C), the labels' size)."""

    wants_frame: bool

    def write(
        self,
        index: int,
        rendered: np.ndarray,
        labels: np.ndarray,
        record: Mapping[str, Any],
        *,
        frame: np.ndarray | None = None,
    ) -> None: ...


class SinkBase:
    """Context-manager plumbing and the closed flag shared by every sink."""

    closed = False
    stopped: str | None = None  # why writing stopped early (a disk error), else None

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise DataError(f"{type(self).__name__} is closed")

    def _rendered(self, rendered: np.ndarray) -> np.ndarray:
        """The rendered frame a write was given, checked; raises when the sink is closed."""
        self._check_open()
        if rendered.ndim != 3 or rendered.shape[2] != 3 or rendered.dtype != np.uint8:
            raise DataError(
                "expected a rendered uint8 (H, W, 3) RGB frame, "
                f"got {rendered.dtype} {rendered.shape}"
            )
        return rendered


def os_reason(exc: OSError) -> str:
    """What went wrong, for a one-line message: the OS's words (``"No space left on device"``)."""
    return exc.strerror or str(exc)


def stop_message(what: str, exc: BaseException) -> str:
    """``"recording stopped: disk full (/rec/x.mp4)"``: one line for a sink that gave up."""
    if disk_full(exc):
        reason = "disk full"
    elif isinstance(exc, OSError):
        reason = os_reason(exc)
    else:
        reason = str(exc) or type(exc).__name__
    where = getattr(exc, "filename", None)
    return f"{what} stopped: {reason} ({where})" if where else f"{what} stopped: {reason}"


def write_failed(path: Path, what: str) -> OSError:
    """The error for a writer that failed without saying why: disk full if it is."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < _LOW_SPACE:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, what, str(path))


def remove_partials(folder: Path, pattern: re.Pattern[str], warnings: list[str]) -> None:
    """Delete the partial files of our naming an earlier, killed run left in ``folder``."""
    try:
        names = sorted(n for n in os.listdir(folder) if pattern.fullmatch(n))
    except OSError:
        return
    removed = []
    for name in names:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
            removed.append(name)
    if removed:
        more = f" and {len(removed) - 3} more" if len(removed) > 3 else ""
        shown = ", ".join(removed[:3]) + more
        warnings.append(
            f"deleted {len(removed)} unfinished file(s) of an earlier run that was killed in "
            f"{folder}: {shown}"
        )
