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
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from edgeseg.errors import DataError
from edgeseg.runtime.storage import disk_full

__all__ = [
    "CSV_FIELDS",
    "FrameRecord",
    "FrameSink",
    "Record",
    "Sink",
    "SinkBase",
    "os_reason",
    "record_fields",
    "remove_partials",
    "stop_message",
    "write_failed",
]

# The per-frame CSV columns the pipeline writes (a caller may pass its own list): the fields
# of a FrameRecord but its name.
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


@dataclass(frozen=True)
class FrameRecord:
    """What the pipeline knows of one rendered frame; every sink gets it with the frame.

    ``frame`` is the frame's index in the stream (frames a live source dropped leave gaps),
    ``timestamp_s`` the seconds from the start of the run to its capture (4 decimals), the
    ``*_ms`` fields the milliseconds of each stage and ``latency_ms`` from capture to the
    rendered overlay (3 decimals), ``objects`` the objects counted in it, ``dropped`` the
    frames the capture had dropped so far, ``name`` the frame's name in a file source
    (``"A06.tif"``, ``"clip.mp4#frame37"``), else None. ``clock_s`` is the frame's time on
    its source's clock in seconds (a live source's monotonic capture time, a video file's own
    timestamp; None where the source has none): what a recording times its frames by. It is
    not a CSV column.
    """

    frame: int
    timestamp_s: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    render_ms: float
    latency_ms: float
    objects: int
    dropped: int
    name: str | None = None
    clock_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a row: the :data:`CSV_FIELDS` in order, then ``name`` when the
        frame has one (what :class:`~edgeseg.runtime.sinks.CsvSink` writes and the MJPEG
        page's ``/stats.json`` shows)."""
        row: dict[str, Any] = {
            "frame": self.frame,
            "timestamp_s": self.timestamp_s,
            "preprocess_ms": self.preprocess_ms,
            "inference_ms": self.inference_ms,
            "postprocess_ms": self.postprocess_ms,
            "render_ms": self.render_ms,
            "latency_ms": self.latency_ms,
            "objects": self.objects,
            "dropped": self.dropped,
        }
        if self.name is not None:
            row["name"] = self.name
        return row


#: What a sink's ``write`` takes as ``record``: the pipeline's :class:`FrameRecord`, or a row's
#: fields by name (a caller with columns of its own, such as the objects sink's rows).
Record: TypeAlias = "FrameRecord | Mapping[str, Any]"


def record_fields(record: Record) -> Mapping[str, Any]:
    """A record's fields by name: :meth:`FrameRecord.to_dict`, or the mapping as it is."""
    return record.to_dict() if isinstance(record, FrameRecord) else record


@runtime_checkable
class Sink(Protocol):
    """What the pipeline writes rendered frames to, and everything it may ask of a sink.

    - ``write(index, rendered, labels, record)``: one frame (see the package docstring;
      ``record`` a :class:`FrameRecord` from the pipeline);
    - ``close()``: idempotent; the pipeline closes every sink at the end of a run;
    - ``wants_frame``: true for a sink that also wants the raw frame as read (a
      :class:`FrameSink`): the pipeline then passes it as ``frame=``;
    - ``quit_requested``: turns true when the user asked to stop (q in a window);
    - ``status(message)``: the source's state, None while frames flow, else e.g. ``"camera
      lost, retrying since 14:02:11"`` (told at every change; a sink may ignore it);
    - ``warnings``: one-line messages for the run's summary (a stopped recording);
    - ``notes``: one-line facts for the run's summary, read after ``close()`` (what a
      recording holds and at which rate).

    :class:`SinkBase` gives the defaults (no frame, never quits, status ignored, no
    warnings or notes), so a sink defines ``write`` and overrides only what it has.
    """

    wants_frame: bool
    quit_requested: bool

    @property
    def warnings(self) -> Sequence[str]: ...

    @property
    def notes(self) -> Sequence[str]: ...

    def status(self, message: str | None) -> None: ...

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record
    ) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class FrameSink(Sink, Protocol):
    """A sink that also wants the raw frame as read (``wants_frame`` true): the pipeline
    passes it as ``frame=`` (uint8/uint16/float, (H, W) or (H, W, C), the labels' size)."""

    def write(
        self,
        index: int,
        rendered: np.ndarray,
        labels: np.ndarray,
        record: Record,
        *,
        frame: np.ndarray | None = None,
    ) -> None: ...


class SinkBase(ABC):
    """What every sink builds on: the defaults of :class:`Sink`'s capabilities, the closed
    flag, ``stopped`` (why writing stopped early, a disk error, else None) and the
    context-manager plumbing. A subclass defines :meth:`write` and, where it has them, sets
    ``warnings`` to a list of its own, ``wants_frame`` or ``quit_requested`` to True, and
    defines :meth:`status` and :meth:`close` (which sets ``closed``)."""

    wants_frame: bool = False
    quit_requested: bool = False
    warnings: Sequence[str] = ()
    notes: Sequence[str] = ()
    closed = False
    stopped: str | None = None

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record
    ) -> None: ...

    def status(self, message: str | None) -> None:  # noqa: B027 (optional: ignored by default)
        """The source's state (None while frames flow); this sink does not show it."""

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
