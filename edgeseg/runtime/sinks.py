"""Where rendered frames go: a window, a video file, label maps, a CSV, a CSV of objects, an
MJPEG HTTP stream.

Every sink has ``write(index, rendered, labels, record)`` and ``close()``:

- ``index``: the frame's number in the run;
- ``rendered``: uint8 array (H, W, 3), RGB, the overlay as shown;
- ``labels``: (H, W) label map (0 background): uint8 classes, or the int32 object ids of an
  instance model;
- ``record``: plain per-frame data (timings in ms, counts; ``name``, the frame's file, for
  file sources), what :class:`CsvSink` writes.

A sink that needs the raw frame as read (:class:`ObjectSink`: intensities) has a true
``wants_frame`` attribute (:class:`FrameSink`); the pipeline then also passes ``frame=``.

``close()`` is idempotent and sinks are context managers. Bad input (a frame of the wrong
type, a closed sink) raises :class:`~edgeseg.errors.DataError`. A write that fails on disk (full,
the folder removed: any OSError) never raises into the pipeline: that sink stops writing, sets
``stopped`` and adds a one-line warning to its ``warnings`` (``"recording stopped: disk full
(…)"``), and inference and the other sinks go on; what was written before stays valid (closed
video segments, every mask file, the CSV up to its last whole row).

A sink may also have ``status(message)``: the pipeline tells it the source's state (None while
frames flow, else e.g. ``"camera lost, retrying since 14:02:11"``); :class:`MjpegServer` shows
it. Video segments, mask files and rotated CSVs can be kept within a size
(:mod:`edgeseg.runtime.storage`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hmac
import io
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import socket
import socketserver
import stat
import struct
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import parse_qs

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.objects import (
    OBJECT_CSV_FIELDS,
    column_rows,
    csv_value,
    frame_object_columns,
    frame_objects,
    object_class_names,
)
from edgeseg.errors import DataError, MissingDependencyError
from edgeseg.hardware import opencv_has_gui
from edgeseg.imageio import encode_mask, stored_labels
from edgeseg.optional import cv2, require
from edgeseg.runtime.storage import Ring, disk_full, fsync_dir, fsync_file, parse_size

__all__ = [
    "CSV_FIELDS",
    "OBJECT_CSV_FIELDS",
    "CsvSink",
    "FrameSink",
    "MaskSink",
    "MjpegServer",
    "ObjectSink",
    "Sink",
    "VideoSink",
    "WindowSink",
    "column_rows",
    "frame_object_columns",
    "frame_objects",
    "is_loopback",
    "object_class_names",
    "parse_size",
    "parse_stream_address",
    "stream_token",
    "token_dir",
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
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_VIDEO_FPS = 25.0
SEGMENT_SECONDS = 10.0
# Our file names: closed segments, the open one, a mask being written.
_SEGMENT = re.compile(r"edgeseg-\d{8}-\d{6}-(?P<seq>\d{6,})\.(?:mp4|avi)")
_PARTIAL_SEGMENT = re.compile(r"\.edgeseg-\d{8}-\d{6}-(?P<seq>\d{6,})\.partial\.(?:mp4|avi)")
_PARTIAL_MASK = re.compile(r"\.\d{6,}\.partial\.(?:png|tif)")
_LOW_SPACE = 1 << 20  # less free than this after a failed write: the disk is full
_GUI_HINT = (
    "pip uninstall -y opencv-python-headless && pip install 'edgeseg[gui]' (replaces "
    "opencv-python-headless), or run with --headless / --stream"
)


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


class _SinkBase:
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


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """A uint8 class map as is (bool as uint8); any other integer map is one of object ids."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            "expected uint8 (H, W) labels or an integer (H, W) map of object ids, got "
            f"{labels.dtype} {labels.shape}"
        )
    return labels


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _stop_message(what: str, exc: BaseException) -> str:
    """``"recording stopped: disk full (/rec/x.mp4)"``: one line for a sink that gave up."""
    if disk_full(exc):
        reason = "disk full"
    elif isinstance(exc, OSError):
        reason = _os_reason(exc)
    else:
        reason = str(exc) or type(exc).__name__
    where = getattr(exc, "filename", None)
    return f"{what} stopped: {reason} ({where})" if where else f"{what} stopped: {reason}"


def _write_failed(path: Path, what: str) -> OSError:
    """The error for a writer that failed without saying why: disk full if it is."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < _LOW_SPACE:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, what, str(path))


def _remove_partials(folder: Path, pattern: re.Pattern[str], warnings: list[str]) -> None:
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


def is_folder_target(text: str | Path) -> bool:
    """A recording target is a folder if it is one, ends with a slash or has no suffix."""
    raw = os.fspath(text)
    path = Path(raw)
    return raw.endswith(("/", os.sep)) or path.is_dir() or path.suffix == ""


# --------------------------------------------------------------------------------------------
# Video file


class VideoSink(_SinkBase):
    """Record rendered frames with OpenCV: one file, or short segments in a folder.

    **One file** (``path`` ends with ``.mp4``, codec mp4v, or ``.avi``, Motion JPEG): as
    before; :meth:`close` finalizes it, and an ``.mp4`` cut by a crash or power loss is
    unplayable.

    **Segments** (``path`` is a folder: it exists as one, ends with ``/`` or has no suffix):
    ``segment_seconds`` of frames at the recording's frame rate each (default 10 s), named
    ``edgeseg-YYYYMMDD-HHMMSS-NNNNNN.mp4`` (``.avi`` with ``fmt="avi"``): the UTC start time
    and a sequence number that continues across restarts (the order, even if the clock
    jumps). A segment is written as ``.edgeseg-….partial.mp4`` (hidden), then checked (OpenCV
    reads back as many frames as were written), fsynced, renamed and the folder fsynced, so
    after a kill or power cut at any moment only the segment being written is lost; leftover
    partial files of a killed run are deleted at start (with a warning). With ``max_bytes``
    (bytes, ``"2G"``, ``"20%"`` of the free space: :func:`~edgeseg.runtime.storage.parse_size`)
    the oldest segments of our naming, earlier runs' included, are deleted after each new one
    so the folder's segments stay within it; no other file is ever touched. Readers should
    take ``edgeseg-*.mp4``.

    The frame size is the first frame's; a later frame of another size is resized to it (and
    one warning is added to :attr:`warnings`). ``fps`` may be 0 at construction and set on the
    attribute before the first frame (a camera's rate is known only once it is open); still 0
    at the first frame means 25. The codec is checked at construction, so an unusable one
    fails before the camera opens.

    A write that fails on disk (full, folder removed, any OSError) never raises: recording
    stops, :attr:`stopped` and :attr:`warnings` say why (``"recording stopped: disk full
    (…)"``), and the run goes on; the segments already closed stay as they are.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 0.0,
        *,
        segment_seconds: float | None = None,
        fmt: str | None = None,
        max_bytes: int | str | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.warnings: list[str] = []
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height)
        self.segmented = is_folder_target(path)
        self.segments = 0  # segments closed by this run
        self.last_segment: Path | None = None
        self.ring: Ring | None = None
        self._writer: Any = None
        self._finalizer: weakref.finalize | None = None
        self._partial: Path | None = None  # the open segment, under its temporary name
        self._final: Path | None = None  # ... and the name it gets when closed
        self._segment_frames = 0
        self._per_segment = 0
        self._segment_bytes = 0  # the size of the last closed segment
        self._next_seq = 0
        if not math.isfinite(self.fps) or self.fps < 0:
            raise DataError(f"video frame rate must be positive, got {fps}")
        if self.segmented:
            self._init_folder(segment_seconds, fmt, max_bytes)
        else:
            self._init_file(segment_seconds, fmt, max_bytes)
        self.fourcc = VIDEO_CODECS[f".{self.fmt}"]
        self._probe_codec()

    def _init_file(
        self, segment_seconds: float | None, fmt: str | None, max_bytes: int | str | None
    ) -> None:
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise DataError(
                f"cannot record to {self.path}: use a .mp4 or .avi file, or a folder for "
                f"segments (got {self.path.suffix})"
            )
        self.fmt = suffix[1:]
        if fmt is not None and fmt.lower().lstrip(".") != self.fmt:
            raise DataError(f"cannot record {fmt} video to {self.path}: the name says {self.fmt}")
        if segment_seconds is not None or max_bytes is not None:
            raise DataError(
                f"segments and a size bound need a folder to record to, not the file {self.path}"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {self.path.parent}: {_os_reason(exc)}") from exc
        if not os.access(self.path.parent, os.W_OK):
            raise DataError(f"cannot record to {self.path}: {self.path.parent} is not writable")

    def _init_folder(
        self, segment_seconds: float | None, fmt: str | None, max_bytes: int | str | None
    ) -> None:
        self.fmt = (fmt or "mp4").lower().lstrip(".")
        if f".{self.fmt}" not in VIDEO_CODECS:
            raise DataError(f"video format must be mp4 or avi, got {fmt!r}")
        seconds = SEGMENT_SECONDS if segment_seconds is None else float(segment_seconds)
        if not math.isfinite(seconds) or seconds <= 0:
            raise DataError(f"segment length must be more than 0 seconds, got {segment_seconds}")
        self.segment_seconds = seconds
        if self.path.exists() and not self.path.is_dir():
            raise DataError(f"cannot record segments to {self.path}: it is a file")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {self.path}: {_os_reason(exc)}") from exc
        if not os.access(self.path, os.W_OK):
            raise DataError(f"cannot record to {self.path}: the folder is not writable")
        _remove_partials(self.path, _PARTIAL_SEGMENT, self.warnings)
        self.ring = Ring(self.path, _SEGMENT, max_bytes, order=_segment_seq)
        self._next_seq = max((_segment_seq(Path(n)) for n in self.ring.names()), default=-1) + 1

    def _open_writer(self, path: Path, size: tuple[int, int], fps: float) -> Any:
        cv = cv2()
        fourcc = cv.VideoWriter_fourcc(*self.fourcc)
        registry = getattr(cv, "videoio_registry", None)
        if registry is not None and registry.hasBackend(cv.CAP_FFMPEG):
            return cv.VideoWriter(str(path), cv.CAP_FFMPEG, fourcc, fps, size)
        return cv.VideoWriter(str(path), fourcc, fps, size)

    def _cannot_open(self) -> DataError:
        if self.fourcc == "mp4v":
            hint = (
                "record Motion JPEG .avi segments instead"
                if self.segmented
                else f"record to an .avi (Motion JPEG) instead, e.g. --record "
                f"{self.path.with_suffix('.avi')}"
            )
            return DataError(f"this OpenCV cannot write MPEG-4 video to {self.path}; {hint}")
        return DataError(f"this OpenCV cannot write Motion JPEG video to {self.path}")

    def _probe_codec(self) -> None:
        """Open and discard a tiny writer with the same codec, away from the target path."""
        with tempfile.TemporaryDirectory(prefix="edgeseg-video-") as tmp:
            writer = self._open_writer(Path(tmp) / f"probe.{self.fmt}", (64, 64), 25.0)
            ok = writer.isOpened()
            writer.release()
        if not ok:
            raise self._cannot_open()

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        frame = self._rendered(rendered)
        if self.stopped is not None:
            return
        cv = cv2()
        h, w = frame.shape[:2]
        if self.size is None:
            self.size = (w, h)
        elif (w, h) != self.size:
            if not any("resized" in m for m in self.warnings):
                self.warnings.append(
                    f"{self.path.name}: frame {index} is {w}x{h}, the video "
                    f"{self.size[0]}x{self.size[1]}; later frames of another size are resized"
                )
            frame = cv.resize(frame, self.size, interpolation=cv.INTER_AREA)
        try:
            if self._writer is None:
                self._open_next()
            target = self._partial if self.segmented else self.path
            assert target is not None
            if not self.segmented and not self.path.exists():
                raise OSError(errno.ENOENT, "removed while recording", str(self.path))
            # OpenCV 4.x returns None here; False (5.x) is a failed write.
            if self._writer.write(cv.cvtColor(frame, cv.COLOR_RGB2BGR)) is False:
                raise _write_failed(target, "the video writer failed")
            self.frames += 1
            self._segment_frames += 1
            if self.segmented and self._segment_frames >= self._per_segment:
                self._close_segment()
        except OSError as exc:
            self._stop(exc)

    def _open_next(self) -> None:
        """Open the file, or the next segment under its temporary name (raises OSError)."""
        assert self.size is not None
        fps = self.fps if self.fps > 0 else DEFAULT_VIDEO_FPS
        if not self.segmented:
            target = self.path
        else:
            self._per_segment = max(1, round(self.segment_seconds * fps))
            if self._segment_bytes:  # would the next segment still fit?
                free = shutil.disk_usage(self.path).free
                if free < self._segment_bytes:
                    raise OSError(
                        errno.ENOSPC,
                        f"{free} bytes free, a segment takes about {self._segment_bytes}",
                        str(self.path),
                    )
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            stem = f"edgeseg-{stamp}-{self._next_seq:06d}"
            self._next_seq += 1
            self._final = self.path / f"{stem}.{self.fmt}"
            self._partial = target = self.path / f".{stem}.partial.{self.fmt}"
        writer = self._open_writer(target, self.size, fps)
        if not writer.isOpened():
            writer.release()
            raise _write_failed(target, "cannot open the video writer")
        self._writer = writer
        self._segment_frames = 0
        # An interpreter exit without close() (an uncaught error elsewhere) still
        # finalizes the file (a segment keeps its temporary name: the next run deletes it).
        self._finalizer = weakref.finalize(self, writer.release)

    def _release(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        writer.release()

    def _close_segment(self) -> None:
        """Finish the open segment: release, check, fsync, rename, fsync the folder, then
        keep the ring within its bound. Raises OSError (the partial file is deleted)."""
        partial, final, frames = self._partial, self._final, self._segment_frames
        assert partial is not None and final is not None and self.ring is not None
        self._release()
        self._partial = self._final = None
        self._segment_frames = 0
        try:
            readable = _frame_count(partial)
            if readable != frames:
                raise _write_failed(
                    partial, f"the segment reads back {readable} of its {frames} frames"
                )
            fsync_file(partial)
            os.replace(partial, final)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        fsync_dir(self.path)
        self._segment_bytes = final.stat().st_size
        self.segments += 1
        self.last_segment = final
        self.ring.add(final)
        self.ring.enforce(reserve=self._segment_bytes)

    def _stop(self, exc: OSError) -> None:
        self.stopped = _stop_message("recording", exc)
        kept = (
            f"{self.segments} segment(s) of this run kept" if self.segmented else "the file is kept"
        )
        self.warnings.append(f"{self.stopped}; {kept}, inference goes on")
        with contextlib.suppress(Exception):
            self._release()
        if self._partial is not None:
            with contextlib.suppress(OSError):
                self._partial.unlink()  # unplayable: the disk is full or the folder gone
            self._partial = self._final = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._writer is None:
                return
            if self.segmented:
                try:
                    self._close_segment()
                except OSError as exc:
                    self._stop(exc)
                return
            self._release()
            try:
                size = self.path.stat().st_size
            except OSError as exc:
                self.warnings.append(f"{self.path} is missing after recording: {_os_reason(exc)}")
                return
            if size == 0:
                self.warnings.append(f"{self.path} is empty after recording {self.frames} frames")
        finally:
            if self.ring is not None:
                self.warnings += self.ring.warnings


def _segment_seq(path: Path) -> int:
    m = _SEGMENT.fullmatch(path.name) or _PARTIAL_SEGMENT.fullmatch(path.name)
    return int(m["seq"]) if m else -1


def _frame_count(path: Path) -> int:
    """How many frames OpenCV finds in a closed video file (from its index: nothing decoded)."""
    cv = cv2()
    cap = cv.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        return max(0, int(cap.get(cv.CAP_PROP_FRAME_COUNT)))
    finally:
        cap.release()


# --------------------------------------------------------------------------------------------
# Label maps


class MaskSink(_SinkBase):
    """Lossless label maps, one file a frame: ``folder/000123.png`` (or ``.tif``), or named
    after the frame's file.

    The files hold the label values themselves (0 background, 1 the foreground of a one-class
    model, 1..K-1 the classes otherwise: uint8), or, for an instance model's id map (any
    integer map that is not uint8), the object ids 1..N as uint16 (ids above 65535: a TIFF
    keeps them as uint32, for tifffile to read; a PNG cannot, they are left out with a
    warning). They look black in an image viewer; :func:`edgeseg.imageio.read_image` and any
    image library read them back exactly.

    A frame whose record has a ``name`` that is a whole file (``"A06_s6.tif"``: the frames of
    image folders and glob patterns) is saved under that file's stem (``A06_s6.png``; a name
    with folders, ``"a/x.png"``, becomes ``a_x.png``); other frames (cameras, videos, pages of
    a stack: ``"clip.mp4#frame3"``) by their index. Two frames of one run with the same stem
    (``A.png`` and ``A.tif``) keep both: the later one is ``A-000012.png`` (with a warning).
    Each file is written under a temporary name and renamed, so a file either is complete or
    does not exist (leftover temporary files of a killed run are deleted at start).

    With ``max_bytes`` (bytes, ``"500M"``, ``"20%"``) the oldest mask files are deleted after
    each new one to stay within it: files of the index naming (``NNNNNN.png``, earlier runs'
    included) and the named files this run wrote; no other file is touched. A write that fails
    on disk stops saving masks with a warning (:attr:`stopped`) and never raises.
    """

    def __init__(
        self, folder: str | Path, fmt: str = "png", max_bytes: int | str | None = None
    ) -> None:
        self.folder = Path(folder)
        fmt = fmt.lower().lstrip(".")
        if fmt == "tiff":
            fmt = "tif"
        if fmt not in ("png", "tif"):
            raise DataError(f"mask format must be png or tif, got {fmt!r}")
        if fmt == "tif":
            require("tifffile")  # missing: a one-line error now, not at the first frame
        self.fmt = fmt
        self.frames = 0
        self.warnings: list[str] = []
        self.ring: Ring | None = None
        self._ours = _OwnMasks(fmt)
        self._stems: dict[str, int] = {}  # named masks of this run: stem → frame index
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"cannot save masks to {self.folder}: it is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {self.folder}: {_os_reason(exc)}") from exc
        _remove_partials(self.folder, _PARTIAL_MASK, self.warnings)
        if max_bytes is not None:
            self.ring = Ring(
                self.folder, cast("re.Pattern[str]", self._ours), max_bytes, order=_mtime
            )

    def path_for(self, index: int, name: str | None = None) -> Path:
        """Where frame ``index`` (named ``name`` in its source, if it is) is saved."""
        stem = _mask_stem(name)
        if stem is None:
            return self.folder / f"{index:06d}.{self.fmt}"
        first = self._stems.get(stem, index)
        if first != index:
            stem = f"{stem}-{index:06d}"
        return self.folder / f"{stem}.{self.fmt}"

    def _stored(self, labels: np.ndarray, index: int) -> np.ndarray:
        """The array to save: uint8 classes as they are, object ids as uint16 (or uint32)."""
        if labels.dtype == np.uint8:
            return labels
        top = int(labels.max(initial=0))
        if labels.size and int(labels.min()) < 0:
            raise DataError(f"frame {index}: an instance map with negative ids")
        if top > 0xFFFF and self.fmt != "tif" and not any("65535" in w for w in self.warnings):
            self.warnings.append(
                f"frame {index} has object ids up to {top}: a 16-bit PNG holds 65535, the "
                "objects above are left out of its mask (and of later such frames'); "
                "--mask-format tif keeps them"
            )
        return stored_labels(labels, self.fmt)

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        self._check_open()
        labels = _check_labels(labels)
        if index < 0:
            raise DataError(f"frame index must be >= 0, got {index}")
        if self.stopped is not None:
            return
        data = encode_mask(self._stored(labels, index), self.fmt)
        name = record.get("name")
        path = self.path_for(index, name if isinstance(name, str) else None)
        stem = _mask_stem(name if isinstance(name, str) else None)
        if stem is not None:
            if path.stem != stem and not any("same name" in w for w in self.warnings):
                self.warnings.append(
                    f"frames {self._stems[stem]} and {index} have the same name {stem!r}; "
                    f"the later mask is {path.name} (and so on for further ones)"
                )
            self._stems.setdefault(stem, index)
            self._ours.names.add(path.name)
        tmp = self.folder / f".{index:06d}.partial.{self.fmt}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            if self.ring is not None:
                self.ring.add(path)
                self.ring.enforce()
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.stopped = _stop_message("saving masks", exc)
            self.warnings.append(f"{self.stopped}; {self.frames} masks saved, inference goes on")
            return
        self.frames += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ring is not None:
            self.warnings += self.ring.warnings


class _OwnMasks:
    """Which files of a mask folder its ring counts and deletes (used as the ring's pattern):
    the index naming (any run's) and the files named after frames that this run wrote."""

    def __init__(self, fmt: str) -> None:
        self._index = re.compile(rf"\d{{6,}}\.{fmt}")
        self.names: set[str] = set()

    def fullmatch(self, name: str) -> bool:
        return name in self.names or self._index.fullmatch(name) is not None


_UNSAFE_STEM = re.compile(r"[^\w.\-+ ()\[\]]+")


def _mask_stem(name: str | None) -> str | None:
    """The file stem a frame named ``name`` gives its mask, or None (saved by index): only
    names of whole files have one (``"A06_s6.tif"`` → ``"A06_s6"``, ``"a/x.png"`` → ``"a_x"``)."""
    if not name or "#" in name:
        return None
    parts = [p for p in re.split(r"[\\/]+", name) if p and p not in (".", "..")]
    if not parts:
        return None
    parts[-1] = Path(parts[-1]).stem
    stem = _UNSAFE_STEM.sub("_", "_".join(parts)).lstrip(".")
    return stem or None


def _mtime(path: Path) -> tuple[int, str]:
    try:
        return path.stat().st_mtime_ns, path.name
    except OSError:
        return 0, path.name


# --------------------------------------------------------------------------------------------
# CSV


class CsvSink(_SinkBase):
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
            raise DataError(f"cannot write CSV {self.path}: {_os_reason(exc)}") from exc
        if max_bytes is not None:
            stem, suffix = re.escape(self.path.stem), re.escape(self.path.suffix)
            self.ring = Ring(
                self.path.parent, rf"{stem}\.(?P<seq>\d+){suffix}", max_bytes, order=self._seq
            )
            assert self.ring.max_bytes is not None
            per_file = (
                max(1, self.ring.max_bytes // 10) if file_bytes is None else parse_size(file_bytes)
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
            raise DataError(f"cannot write CSV {self.path}: {_os_reason(exc)}") from exc

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
        """Rename ``path`` to the next ``name.N.csv`` and keep the rotated files bounded."""
        assert self.ring is not None and self.file_bytes is not None
        target = self.path.with_name(f"{self.path.stem}.{self._next}{self.path.suffix}")
        self._next += 1
        os.replace(self.path, target)
        fsync_dir(self.path.parent)
        self.ring.add(target)
        self.ring.enforce(reserve=self.file_bytes)

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._rotate_aside()
        self._open()

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        self.write_rows([record])

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
            self.stopped = _stop_message(self.what, exc)
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
                    self.warnings.append(f"cannot write CSV {self.path}: {_os_reason(exc)}")
            finally:
                os.close(fd)


class ObjectSink(_SinkBase):
    """One CSV row per object per frame (:data:`OBJECT_CSV_FIELDS`): frame, name (the frame's
    file in a file source), id, class, area in pixels (and µm² with ``pixel_size_um``),
    centroid, bounding box (y0, x0, y1, x1, exclusive), mean and integrated intensity on the
    raw frame, and whether the object touches the frame's edge (:func:`frame_objects`).

    A :class:`FrameSink`: the pipeline gives it the raw frame. A :class:`CsvSink` writes the
    rows (each frame's in one write, straight to the file: complete up to the last frame after
    a kill; ``max_bytes`` rotates it the same way); a write that fails on disk stops it with a
    warning and never raises. The folder of ``path`` must exist (a typo fails at once).
    """

    wants_frame = True

    def __init__(
        self,
        path: str | Path,
        meta: ModelMetadata,
        *,
        pixel_size_um: float | None = None,
        max_bytes: int | str | None = None,
        file_bytes: int | str | None = None,
    ) -> None:
        path = Path(path)
        if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise DataError(f"the pixel size must be a positive number of µm, got {pixel_size_um}")
        parent = path.parent
        if not parent.is_dir():
            what = "is not a folder" if parent.exists() else "does not exist"
            raise DataError(f"cannot write the objects CSV {path}: {parent} {what}")
        if not os.access(parent, os.W_OK):
            raise DataError(f"cannot write the objects CSV {path}: {parent} is not writable")
        self.meta = meta
        self.pixel_size_um = pixel_size_um
        self.path = path
        self.csv = CsvSink(
            path, OBJECT_CSV_FIELDS, max_bytes=max_bytes, file_bytes=file_bytes, what="objects CSV"
        )

    @property
    def warnings(self) -> list[str]:
        return self.csv.warnings

    @property
    def stopped(self) -> str | None:  # type: ignore[override]
        return self.csv.stopped

    @property
    def rows(self) -> int:
        return self.csv.rows

    def write(
        self,
        index: int,
        rendered: np.ndarray,
        labels: np.ndarray,
        record: Mapping[str, Any],
        *,
        frame: np.ndarray | None = None,
    ) -> None:
        self._check_open()
        if self.csv.stopped is not None:
            return
        labels = _check_labels(labels)
        rows = frame_objects(labels, self.meta, frame, self.pixel_size_um)
        head = {"frame": record.get("frame", index), "name": record.get("name")}
        self.csv.write_rows([{**head, **row} for row in rows])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.csv.close()


# --------------------------------------------------------------------------------------------
# Window


class WindowSink(_SinkBase):
    """Show rendered frames in an OpenCV window; ``quit_requested`` turns true after q or Esc
    (or when the user closes the window).

    Needs an OpenCV with windows (``edgeseg[gui]``) and a display; without either the
    constructor raises a one-line error saying what to do.
    """

    def __init__(self, title: str = "edgeseg") -> None:
        self.title = title
        self.quit_requested = False
        self._shown = False
        cv = cv2()
        if not opencv_has_gui(cv):
            raise MissingDependencyError(f"this OpenCV has no window support; {_GUI_HINT}")
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise DataError(
                "no display (DISPLAY and WAYLAND_DISPLAY are unset); run with --headless and "
                "--record / --stream, or start from a desktop session"
            )
        try:
            cv.namedWindow(title, cv.WINDOW_NORMAL)
        except cv.error as exc:
            raise DataError(f"cannot open a window: {str(exc).strip().splitlines()[-1]}") from exc

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        frame = self._rendered(rendered)
        cv = cv2()
        cv.imshow(self.title, cv.cvtColor(frame, cv.COLOR_RGB2BGR))
        self._shown = True
        key = cv.waitKey(1)
        if key != -1 and (key & 0xFF) in (ord("q"), ord("Q"), 27):
            self.quit_requested = True
        with contextlib.suppress(cv.error):
            if cv.getWindowProperty(self.title, cv.WND_PROP_VISIBLE) < 1:
                self.quit_requested = True  # closed with the window manager's button

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        cv = cv2()
        with contextlib.suppress(cv.error):
            cv.destroyWindow(self.title)
            cv.waitKey(1)  # lets the GUI loop actually remove the window


# --------------------------------------------------------------------------------------------
# MJPEG over HTTP


def parse_stream_address(text: str) -> tuple[str, int]:
    """``"8080"`` → ("127.0.0.1", 8080); ``"0.0.0.0:8080"``, ``"host:8080"``, ``"[::1]:8080"``.

    Port 0 asks for any free port. Anything else raises DataError.
    """
    s = str(text).strip()
    bad = DataError(f"bad stream address {text!r}: give PORT, HOST:PORT or [IPv6]:PORT")
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        if not sep or not host:
            raise bad
    elif ":" in s:
        host, _, port = s.partition(":")
        if not host or ":" in port:
            raise bad
    else:
        host, port = "127.0.0.1", s
    if not port.isdigit() or int(port) > 65535:
        raise bad
    return host, int(port)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgeseg</title>
<style>
body{margin:0;background:#111;color:#ddd;font:14px system-ui,sans-serif}
img{display:block;max-width:100vw;max-height:calc(100vh - 2.5em);margin:0 auto}
#stats{padding:.5em 1em;font-family:ui-monospace,monospace;white-space:pre}
#status{padding:.5em 1em;background:#7a4b00;color:#fff}
</style></head>
<body><div id="status" hidden></div>
<img src="/stream.mjpg@QUERY@" alt="edgeseg stream"><div id="stats">waiting for frames</div>
<script>
const el = document.getElementById("stats");
const st = document.getElementById("status");
async function poll() {
  try {
    const r = await fetch("/stats.json@QUERY@", {cache: "no-store"});
    const s = await r.json();
    st.textContent = s.status || "";
    st.hidden = !s.status;
    delete s.status;
    el.textContent = Object.entries(s).map(([k, v]) => k + " " + v).join("   ")
      || "waiting for frames";
  } catch (e) { el.textContent = "stream stopped"; }
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""
_BOUNDARY = "edgesegframe"
_STREAM_SNDBUF = 128 * 1024
_TOKEN_COOKIE = "edgeseg_token"
_TOKEN_FILE = "stream-token"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.~-]{16,256}")
_UNAUTHORIZED = (
    b"401 Unauthorized: this stream needs its token; open the address edgeseg printed at "
    b"start-up (.../?token=...)\n"
)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 (also as
    ::ffff:127.x) and ``localhost``."""
    name = host.strip().strip("[]").split("%", 1)[0]
    if name.lower() in ("localhost", "localhost."):
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def token_dir() -> Path:
    """Where the stream token is kept: ``$XDG_CONFIG_HOME/edgeseg`` (``~/.config/edgeseg``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "edgeseg"


def stream_token(folder: str | Path | None = None) -> str:
    """The stream token kept in ``folder/stream-token`` (default :func:`token_dir`); created
    with mode 0600 (its folder 0700) on first use, read back on every later start."""
    folder = Path(folder) if folder is not None else token_dir()
    path = folder / _TOKEN_FILE
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise DataError(
            f"cannot read the stream token {path}: {_os_reason(exc)}; pass a token instead"
        ) from exc
    if _TOKEN_CHARS.fullmatch(text):
        with contextlib.suppress(OSError):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)  # readable by others: only its owner should see it
        return text
    token = secrets.token_urlsafe(32)
    tmp = folder / f".{_TOKEN_FILE}.{os.getpid()}.tmp"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # never a half-written token, even after a power cut
        fsync_dir(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DataError(
            f"cannot keep a stream token in {path}: {_os_reason(exc)}; pass a token instead"
        ) from exc
    return token


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restarts right after a stop; a listening port still fails
    allow_reuse_port = False  # never share a port with another server
    sink: MjpegServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds on a
        # device without DNS; the name is only used in CGI environments.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that stops reading is dropped, never waited on forever
    server_version = "edgeseg"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request chatter on the console

    def _authorized(self, query: str) -> bool:
        """The request carries the server's token (query, bearer header or cookie)."""
        token = self.server.sink.token
        if token is None:
            return True
        offered = list(parse_qs(query).get("token", []))
        scheme, _, value = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip())
        with contextlib.suppress(CookieError):
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
            if _TOKEN_COOKIE in cookie:
                offered.append(cookie[_TOKEN_COOKIE].value)
        want = token.encode()
        # Every candidate is compared, in constant time each.
        return any([hmac.compare_digest(o.encode("utf-8", "replace"), want) for o in offered])

    def do_GET(self) -> None:
        sink = self.server.sink
        path, _, query = self.path.partition("?")
        if not self._authorized(query):
            self.send_response(HTTPStatus.UNAUTHORIZED)
            self.send_header("WWW-Authenticate", 'Bearer realm="edgeseg"')
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(_UNAUTHORIZED)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(_UNAUTHORIZED)
            return
        if path in ("/", "/index.html"):
            q = f"?token={sink.token}" if sink.token else ""
            self._send(_PAGE.replace("@QUERY@", q).encode(), "text/html; charset=utf-8")
        elif path == "/stats.json":
            self._send(sink._stats_json(), "application/json")
        elif path == "/frame.jpg":
            _, jpeg = sink._latest_jpeg()
            if jpeg is None:
                self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(jpeg, "image/jpeg")
        elif path == "/stream.mjpg":
            self._stream(sink)
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        token = self.server.sink.token
        if token is not None and content_type.startswith("text/html"):
            # The page's own requests (and a reload without ?token=) carry it from now on.
            self.send_header(
                "Set-Cookie", f"{_TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            )
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, sink: MjpegServer) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        # A small send buffer keeps at most about one frame queued in the kernel for a slow
        # client, instead of seconds of them (Linux grows it to megabytes on its own).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STREAM_SNDBUF)
        sink._attach(self.connection)
        try:
            seen = 0
            while True:
                seq = sink._wait_newer(seen, timeout=1.0)
                if seq is None:
                    return  # the server is closing
                if seq == seen:
                    continue
                seq, jpeg = sink._latest_jpeg()
                if jpeg is None:
                    continue
                # Only the newest frame is sent; frames written meanwhile are skipped, so a
                # slow client falls behind in frame rate, never in time.
                self.wfile.write(
                    f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
                self.wfile.flush()
                seen = seq
        except OSError:
            return  # the client went away (or close() shut its socket)
        finally:
            sink._detach(self.connection)


class MjpegServer(_SinkBase):
    """Serve rendered frames as MJPEG over HTTP, from a daemon thread.

    - ``/``: a page showing the stream with live stats and the source's status;
    - ``/stream.mjpg``: multipart/x-mixed-replace JPEGs; each client gets the newest frame
      when it is ready for one, never a backlog, and a slow client never blocks ``write``;
    - ``/frame.jpg``: the latest frame (503 before the first);
    - ``/stats.json``: the latest record (``{}`` before the first frame), with ``"status"``
      while :meth:`status` has a message.

    Binds ``host`` (127.0.0.1 by default: this machine only); port 0 picks a free port
    (see :attr:`port`, :attr:`url`). A frame is JPEG-encoded at most once, right in
    :meth:`write` while a stream client is connected, otherwise only when someone asks.

    Bound to a loopback address (127.0.0.0/8, ::1, localhost) the stream is open. Bound to
    any other address it needs a token: ``token``, or the one kept in ``token_folder``
    (default ``$XDG_CONFIG_HOME/edgeseg``, see :func:`stream_token`: made on first use, mode
    0600, the same after a restart). A request without it (``?token=…``, ``Authorization:
    Bearer …`` or the cookie the page sets) gets 401 and never a frame; :attr:`url` then ends
    with ``?token=…`` (print it at start-up). ``require_token`` True or False overrides the
    address rule (a given ``token`` is always required).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        quality: int = 80,
        *,
        token: str | None = None,
        require_token: bool | None = None,
        token_folder: str | Path | None = None,
    ) -> None:
        if not 1 <= quality <= 100:
            raise DataError(f"JPEG quality must be between 1 and 100, got {quality}")
        if not 0 <= port <= 65535:
            raise DataError(f"port must be between 0 and 65535, got {port}")
        if token is not None and not _TOKEN_CHARS.fullmatch(token):
            raise DataError(
                "a stream token must be 16 to 256 URL-safe characters (letters, digits, - _ . ~)"
            )
        self.host = host
        self.quality = int(quality)
        self.token: str | None = None
        self._cond = threading.Condition()
        self._seq = 0
        self._jpeg: bytes | None = None
        self._raw: np.ndarray | None = None
        self._record: dict[str, Any] = {}
        self._status: str | None = None
        self._clients: set[socket.socket] = set()
        cls = _Server6 if ":" in host else _Server
        try:
            self._server = cls((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DataError(
                    f"port {port} is in use on {host}; pick another with --stream PORT"
                ) from None
            raise DataError(f"cannot serve on {host}:{port}: {_os_reason(exc)}") from None
        self._server.sink = self
        bound = str(self._server.server_address[0])
        needed = require_token if require_token is not None else not is_loopback(bound)
        if token is not None:
            self.token = token
        elif needed:
            try:
                self.token = stream_token(token_folder)
            except DataError:
                self._server.server_close()
                raise
        self.port: int = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{self.port}/"
        self.url = self.base_url + (f"?token={self.token}" if self.token else "")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"edgeseg-mjpeg-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def status(self, message: str | None) -> None:
        """The source's state, shown on the page and in ``/stats.json`` (``"status"``):
        None while frames flow, else e.g. ``"camera lost, retrying since 14:02:11"``."""
        with self._cond:
            self._status = None if message is None else str(message)

    @property
    def clients(self) -> int:
        """How many clients are watching the stream now."""
        with self._cond:
            return len(self._clients)

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        frame = self._rendered(rendered)
        stats = _json_value(dict(record))
        if self._clients:  # someone is watching: encode once, here, for all of them
            jpeg, raw = self._encode(frame), None
        else:  # nobody is: keep a copy, encoded only if asked for
            jpeg, raw = None, frame.copy()
        with self._cond:
            self._seq += 1
            self._jpeg, self._raw, self._record = jpeg, raw, stats
            self._cond.notify_all()

    def _encode(self, frame: np.ndarray) -> bytes:
        cv = cv2()
        ok, buf = cv.imencode(
            ".jpg",
            cv.cvtColor(frame, cv.COLOR_RGB2BGR),
            [cv.IMWRITE_JPEG_QUALITY, self.quality],
        )
        if not ok:
            raise DataError("cannot encode the frame as JPEG")
        return buf.tobytes()

    def _latest_jpeg(self) -> tuple[int, bytes | None]:
        """(sequence number, JPEG) of the newest frame, encoding it now if nobody has yet."""
        with self._cond:
            seq, jpeg, raw = self._seq, self._jpeg, self._raw
        if jpeg is None and raw is not None:
            jpeg = self._encode(raw)  # outside the lock: write() never waits on an encode
            with self._cond:
                if self._seq == seq:
                    self._jpeg, self._raw = jpeg, None
        return seq, jpeg

    def _wait_newer(self, seen: int, timeout: float) -> int | None:
        """The newest sequence number once it differs from ``seen`` (or after ``timeout``);
        None once the server is closing."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq != seen or self.closed, timeout)
            return None if self.closed else self._seq

    def _stats_json(self) -> bytes:
        with self._cond:
            stats, status = self._record, self._status
        if status is not None:
            stats = {**stats, "status": status}
        return json.dumps(stats).encode()

    def _attach(self, conn: socket.socket) -> None:
        with self._cond:
            self._clients.add(conn)

    def _detach(self, conn: socket.socket) -> None:
        with self._cond:
            self._clients.discard(conn)

    def close(self) -> None:
        """Stop serving and disconnect every client; idempotent."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            clients = list(self._clients)
            self._cond.notify_all()
        for conn in clients:
            with contextlib.suppress(OSError):
                # Reset rather than drain what a slow client has not read yet, and wake its
                # handler if it is blocked sending.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
