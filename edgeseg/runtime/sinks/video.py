"""The video sink: rendered frames to one video file, or to short segments in a folder that
survive a kill or power cut and stay within a size bound (:class:`VideoSink`)."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import DataError
from edgeseg.optional import cv2
from edgeseg.paths import publish
from edgeseg.runtime.sinks.base import (
    Record,
    SinkBase,
    os_reason,
    remove_partials,
    stop_message,
    write_failed,
)
from edgeseg.runtime.storage import Ring

__all__ = ["DEFAULT_VIDEO_FPS", "SEGMENT_SECONDS", "VIDEO_CODECS", "VideoSink", "is_folder_target"]

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_VIDEO_FPS = 25.0
SEGMENT_SECONDS = 10.0
# Our file names: closed segments and the open one.
_SEGMENT = re.compile(r"edgeseg-\d{8}-\d{6}-(?P<seq>\d{6,})\.(?:mp4|avi)")
_PARTIAL_SEGMENT = re.compile(r"\.edgeseg-\d{8}-\d{6}-(?P<seq>\d{6,})\.partial\.(?:mp4|avi)")


def is_folder_target(text: str | Path) -> bool:
    """A recording target is a folder if it is one, ends with a slash or has no suffix."""
    raw = os.fspath(text)
    path = Path(raw)
    return raw.endswith(("/", os.sep)) or path.is_dir() or path.suffix == ""


class VideoSink(SinkBase):
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
    (bytes, ``"2G"``, ``"20%"`` of the free space: :func:`~edgeseg.sizes.parse_bytes`)
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
            raise DataError(f"cannot create {self.path.parent}: {os_reason(exc)}") from exc
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
            raise DataError(f"cannot create {self.path}: {os_reason(exc)}") from exc
        if not os.access(self.path, os.W_OK):
            raise DataError(f"cannot record to {self.path}: the folder is not writable")
        remove_partials(self.path, _PARTIAL_SEGMENT, self.warnings)
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

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
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
                raise write_failed(target, "the video writer failed")
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
            raise write_failed(target, "cannot open the video writer")
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
        """Finish the open segment: release, check, publish (fsync, rename, fsync the
        folder), then keep the ring within its bound. Raises OSError (the partial file is
        deleted)."""
        partial, final, frames = self._partial, self._final, self._segment_frames
        assert partial is not None and final is not None and self.ring is not None
        self._release()
        self._partial = self._final = None
        self._segment_frames = 0
        try:
            readable = _frame_count(partial)
            if readable != frames:
                raise write_failed(
                    partial, f"the segment reads back {readable} of its {frames} frames"
                )
            publish(partial, final)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        self._segment_bytes = final.stat().st_size
        self.segments += 1
        self.last_segment = final
        self.ring.add(final)
        self.ring.enforce(reserve=self._segment_bytes)

    def _stop(self, exc: OSError) -> None:
        self.stopped = stop_message("recording", exc)
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
                self.warnings.append(f"{self.path} is missing after recording: {os_reason(exc)}")
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
