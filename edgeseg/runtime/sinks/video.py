"""The video sink: rendered frames to one video file, or to short segments in a folder that
survive a kill or power cut and stay within a size bound (:class:`VideoSink`), in real time:
every frame at its own time (:mod:`edgeseg.runtime.sinks.recorder` writes the files)."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
import statistics
import time
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgeseg.errors import DataError
from edgeseg.optional import cv2
from edgeseg.paths import publish
from edgeseg.runtime.sinks.base import (
    FrameRecord,
    Record,
    SinkBase,
    os_reason,
    remove_partials,
    stop_message,
    write_failed,
)
from edgeseg.runtime.sinks.recorder import (
    CONTAINERS,
    VideoWriter,
    bytes_bound,
    count_packets,
    pick_encoder,
)
from edgeseg.runtime.storage import Ring

__all__ = [
    "DEFAULT_VIDEO_FPS",
    "SEGMENT_SECONDS",
    "VIDEO_SUFFIXES",
    "VideoSink",
    "is_folder_target",
]

VIDEO_SUFFIXES = tuple(f".{fmt}" for fmt in CONTAINERS)  # .mp4, .mkv, .avi
DEFAULT_VIDEO_FPS = 25.0
SEGMENT_SECONDS = 10.0
# A ring that holds fewer segments than this is worth a warning.
_FEW_SEGMENTS = 3
# Our file names: closed segments and the open one.
_SEGMENT = re.compile(r"edgeseg-\d{8}-\d{6}-(?P<seq>\d{6,})\.(?:mp4|mkv|avi)")
_PARTIAL_SEGMENT = re.compile(r"\.edgeseg-\d{8}-\d{6}-(?P<seq>\d{6,})\.partial\.(?:mp4|mkv|avi)")


def is_folder_target(text: str | Path) -> bool:
    """A recording target is a folder unless it names a video file: it is a folder if it is
    one, ends with a slash, or its suffix is not one of :data:`VIDEO_SUFFIXES` (``rec``,
    ``name.v2``, ``name.v2/``)."""
    raw = os.fspath(text)
    path = Path(raw)
    return raw.endswith(("/", os.sep)) or path.is_dir() or path.suffix.lower() not in VIDEO_SUFFIXES


class VideoSink(SinkBase):
    """Record rendered frames with PyAV (FFmpeg), in real time: one file, or segments.

    **Time.** Every frame goes into the container at its own time (its presentation
    timestamp), so playback takes the time that passed and a recording has a variable frame
    rate where frames were dropped (inference slower than the camera). The time is the
    record's ``clock_s`` (:class:`~edgeseg.runtime.sinks.FrameRecord`): a live source's capture
    time (monotonic), a video file's own timestamps (it records at its own rate, however fast
    it is processed); a source without a clock (images, an unpaced synthetic stream) gets
    ``1/fps`` a frame. A file clock that goes back (the next video of a folder) continues
    after the last frame. Each frame lasts until the next; the last one of a segment until the
    first of the next segment. A gap without frames is time that passed (inference slower
    than a segment), unless the source said it was lost (:meth:`status`): then the open
    segment ends at its last frame (one file: the outage is cut out).

    **One file** (``path`` ends with ``.mp4``, ``.mkv`` or ``.avi``): H.264 in MP4 (yuv420p,
    faststart: plays in a browser) or Matroska, Motion JPEG in AVI; :meth:`close` finalizes
    it, and an ``.mp4`` cut by a crash or power loss is unplayable.

    **Segments** (``path`` is a folder: it exists as one, ends with ``/`` or has another
    suffix): a segment closes once ``segment_seconds`` (default 10 s) have passed on the
    frames' clock: wall-clock time for a live source (as a dash camera does), the file's own
    time for a file. Named ``edgeseg-YYYYMMDD-HHMMSS-NNNNNN.mp4`` (``fmt`` "mkv" or "avi"
    for those): the UTC start time and a sequence number that continues across restarts. A
    segment is written as ``.edgeseg-….partial.mp4`` (hidden), read back (its packets
    counted), then published (:func:`edgeseg.paths.publish`: fsync, rename, fsync the
    folder), so after a kill or power cut at any moment only the segment being written is
    lost; leftover partial files of a killed run are deleted at start (with a warning).
    With ``max_bytes`` (bytes, ``"2G"``, ``"20%"`` of the free space) the oldest segments of
    our naming, earlier runs' included, are deleted after each new one so the folder stays
    within it; no other file is touched.

    :meth:`prepare` (called once the source is open) takes its rate and frame size and checks
    the bound against one segment's size. ``fps`` is the nominal rate (the bitrate cap, the
    clock of sources without one); 0 means the source's, else 25. The frame size is the first
    frame's; later frames of another size are resized to it (one warning). :attr:`notes` says
    what was recorded (segments, seconds, the rate, the encoder).

    A write that fails on disk (full, folder removed, any OSError) never raises: recording
    stops, :attr:`stopped` and :attr:`warnings` say why, and the run goes on; the segments
    already closed stay as they are.
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
        self.recorded_seconds = 0.0  # video closed by this run
        self.recorded_frames = 0
        self._writer: VideoWriter | None = None
        self._finalizer: weakref.finalize | None = None
        self._partial: Path | None = None  # the open segment, under its temporary name
        self._final: Path | None = None  # ... and the name it gets when closed
        self._segment_bytes = 0  # the size of the last closed segment
        self._next_seq = 0
        self._live: bool | None = None  # from prepare(): a live source's clock
        self._start = 0.0  # the open file's start on the recording clock
        self._boundary = -math.inf  # where the open segment ends on the recording clock
        self._offset = 0.0  # added to a file clock that went back
        self._last_t: float | None = None  # the newest frame on the recording clock
        self._intervals: deque[float] = deque(maxlen=32)
        self._lost = False  # the source was lost since the last frame
        if not math.isfinite(self.fps) or self.fps < 0:
            raise DataError(f"video frame rate must be positive, got {fps}")
        if self.segmented:
            self._init_folder(segment_seconds, fmt, max_bytes)
        else:
            self._init_file(segment_seconds, fmt, max_bytes)
        self.family = CONTAINERS[self.fmt][1]
        self.encoder = pick_encoder(self.family)  # fails now, before the camera opens

    def _init_file(
        self, segment_seconds: float | None, fmt: str | None, max_bytes: int | str | None
    ) -> None:
        self.fmt = self.path.suffix.lower()[1:]
        if fmt is not None and fmt.lower().lstrip(".") != self.fmt:
            raise DataError(f"cannot record {fmt} video to {self.path}: the name says {self.fmt}")
        if segment_seconds is not None or max_bytes is not None:
            raise DataError(
                f"segments and a size bound need a folder to record to, not the file {self.path}"
            )
        self.segment_seconds = math.inf
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
        if self.fmt not in CONTAINERS:
            raise DataError(f"video format must be mp4, mkv or avi, got {fmt!r}")
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

    # ---------------------------------------------------------------------------- start-up

    @property
    def rate(self) -> float:
        """The nominal frame rate: ``fps``, else 25."""
        return self.fps if self.fps > 0 else DEFAULT_VIDEO_FPS

    def prepare(
        self, *, live: bool, fps: float | None = None, size: tuple[int, int] | None = None
    ) -> list[str]:
        """Take what the open source says: ``live`` (frames carry capture times), its
        nominal ``fps`` (used when the sink was given none) and its frame ``size`` (height,
        width), and check the settings: a DataError when the size bound holds less than one
        segment, the warnings (one line each) when it holds only a few."""
        self._live = bool(live)
        if self.fps <= 0 and fps and math.isfinite(fps) and fps > 0:
            self.fps = float(fps)
        out: list[str] = []
        if not self.segmented or self.ring is None or self.ring.max_bytes is None:
            return out
        if size is None:
            return out
        h, w = size
        seconds = self.segment_seconds
        one = bytes_bound(self.family, (w, h), self.rate, seconds, self.encoder)
        bound = self.ring.max_bytes
        what = f"{seconds:g} s of {w}x{h} video at {self.rate:g} FPS take up to about"
        if bound < one:
            raise DataError(
                f"the recording's size bound {_human(bound)} is smaller than one segment "
                f"({what} {_human(one)}): raise the bound or shorten the segments"
            )
        if bound < _FEW_SEGMENTS * one:
            kept = bound // one
            out.append(
                f"the recording's size bound {_human(bound)} keeps as few as {kept} "
                f"segment(s) ({what} {_human(one)} each)"
            )
        return out

    # ---------------------------------------------------------------------------- frames

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
        frame = self._rendered(rendered)
        if self.stopped is not None:
            return
        h, w = frame.shape[:2]
        if self.size is None:
            self.size = (w, h)
        elif (w, h) != self.size:
            if not any("resized" in m for m in self.warnings):
                self.warnings.append(
                    f"{self.path.name}: frame {index} is {w}x{h}, the video "
                    f"{self.size[0]}x{self.size[1]}; later frames of another size are resized"
                )
            cv = cv2()
            frame = cv.resize(frame, self.size, interpolation=cv.INTER_AREA)
        t = self._clock(record)
        try:
            if self._writer is not None and self.segmented:
                assert self._last_t is not None
                if self._lost:  # after an outage: end at the last frame before it
                    self._close_segment(self._last_t + self._period())
                elif t >= self._boundary - self._period() / 2:  # the frame nearest the boundary
                    self._close_segment(t)
            if self._writer is None:
                self._open_next(t)
            assert self._writer is not None
            if not self.segmented and self._writer.muxed and not self.path.exists():
                raise OSError(errno.ENOENT, "removed while recording", str(self.path))
            self._writer.write(frame, t - self._start)
            self.frames += 1
        except OSError as exc:
            self._stop(exc)
        if self._last_t is not None and t > self._last_t and not self._lost:
            self._intervals.append(t - self._last_t)
        self._last_t = t
        self._lost = False

    def status(self, message: str | None) -> None:
        """The source's state: a loss (a camera outage) ends the open segment at its last
        frame, or, in one file, is cut out of its time (one usual interval), instead of
        showing the last frame for the whole outage."""
        if message is not None:
            self._lost = True

    def _clock(self, record: Record) -> float:
        """The frame's time on the recording's clock, seconds: the record's ``clock_s``
        (a file clock that goes back continues after the last frame), else frames / fps."""
        raw = record.clock_s if isinstance(record, FrameRecord) else None
        if raw is None and isinstance(record, Mapping):
            raw = record.get("clock_s")
        if raw is None or not math.isfinite(raw):
            return self.frames / self.rate
        raw = float(raw)
        if self._last_t is not None and (
            raw + self._offset <= self._last_t or (self._lost and not self.segmented)
        ):
            self._offset = self._last_t + self._period() - raw
        return raw + self._offset

    def _period(self) -> float:
        """The usual time between frames: the median of the recent intervals, else 1/fps."""
        return statistics.median(self._intervals) if self._intervals else 1.0 / self.rate

    def _open_next(self, t: float) -> None:
        """Open the file, or the next segment under its temporary name (raises OSError)."""
        assert self.size is not None
        if not self.segmented:
            target = self.path
        else:
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
        try:
            writer = VideoWriter(target, self.fmt, self.size, self.rate)
        except DataError as exc:
            raise write_failed(target, str(exc)) from exc
        self._writer = writer
        # Segments end on a grid of segment lengths from the first (no drift), unless a gap
        # (an outage) or a slow start put the frame past the next line: then from it.
        if self._boundary - self._period() / 2 <= t < self._boundary + self.segment_seconds / 2:
            self._boundary += self.segment_seconds
        else:
            self._boundary = t + self.segment_seconds
        self._start = t
        # An interpreter exit without close() (an uncaught error elsewhere) still finishes
        # the file (a segment keeps its temporary name: the next run deletes it).
        self._finalizer = weakref.finalize(self, writer.abandon)

    def _release(self, end: float | None) -> VideoWriter | None:
        """Finish the open file, its last frame ending at ``end`` on the recording clock
        (None: one usual interval after it)."""
        if self._writer is None:
            return None
        if end is None:
            end = (self._last_t if self._last_t is not None else self._start) + self._period()
        writer, self._writer = self._writer, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        try:
            writer.close(end - self._start)
        except OSError:
            writer.abandon()
            raise
        self.recorded_seconds += max(0.0, end - self._start)
        self.recorded_frames += writer.frames
        return writer

    def _close_segment(self, end: float | None) -> None:
        """Finish the open segment: close it, check it, publish it (fsync, rename, fsync the
        folder), then keep the ring within its bound. Raises OSError (the partial file is
        deleted)."""
        partial, final = self._partial, self._final
        assert partial is not None and final is not None and self.ring is not None
        self._partial = self._final = None
        try:
            writer = self._release(end)
            assert writer is not None
            readable, _ = count_packets(partial)
            if readable != writer.frames:
                raise write_failed(
                    partial, f"the segment reads back {readable} of its {writer.frames} frames"
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
        if self._writer is not None:
            self._writer.abandon()
            self._writer = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._partial is not None:
            with contextlib.suppress(OSError):
                self._partial.unlink()  # unplayable: the disk is full or the folder gone
            self._partial = self._final = None

    @property
    def notes(self) -> list[str]:
        """What was recorded, for the run's summary (after :meth:`close`): segments or the
        file, seconds of video, the recorded rate and the encoder."""
        if not self.recorded_frames:
            return []
        seconds = self.recorded_seconds
        rate = self.recorded_frames / seconds if seconds > 0 else 0.0
        clock = {True: "as captured", False: "at the file's own times", None: "at a fixed rate"}
        where = f"{self.segments} segment(s) in {self.path}/" if self.segmented else f"{self.path}"
        return [
            f"recorded {self.recorded_frames} frames, {seconds:.1f} s of video at {rate:.1f} FPS "
            f"(frames {clock[self._live]}) to {where}; {self.encoder}"
        ]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._writer is None:
                return
            if self.segmented:
                try:
                    self._close_segment(None)
                except OSError as exc:
                    self._stop(exc)
                return
            try:
                self._release(None)
            except OSError as exc:
                self._stop(exc)
                return
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


def _human(n: int) -> str:
    """Bytes as a person reads them: ``"2.3 MB"``."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"
