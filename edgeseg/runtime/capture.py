"""The capture thread: reads a stream ahead of inference, the way its kind of source needs.

- A live stream (camera, network, paced ``synthetic://``) goes into a single slot: a new frame
  replaces one nobody has taken yet (counted in ``dropped``), so when inference is slower than
  the camera, the next frame it gets is the newest one, not one that waited in a queue.
- A file stream goes into a bounded queue (``queue_size``) and the capture thread waits when it
  is full: every frame is delivered, in order, none dropped.

A live stream survives faults. Its ``read()`` runs in a helper thread, so a read that hangs
(a USB camera in limbo, a network stream that went silent) is noticed after ``read_timeout``
seconds; a read that returns None or raises is a fault as well. The capture thread then closes
the stream (best-effort: a hung stream is abandoned, never waited for) and reopens the source
with back-off (``backoff`` seconds, doubling up to ``max_backoff``) through ``reopen`` (a
function returning a new stream; by default the stream's own ``reopen``, which every live
stream of :func:`~edgeseg.runtime.streams.open_stream` has) until frames flow again. Meanwhile
``status`` says "camera lost, retrying since HH:MM:SS", and ``outages`` / ``outage_seconds``
count what was lost. :meth:`CaptureThread.stop` ends the retrying at once.

Without retrying (``retry=False``, a live stream that cannot be reopened, and always for file
streams): when a live stream stops delivering (``read()`` returns None, or hangs longer than
``read_timeout``) or any stream's ``read()`` raises, the frames already read are still
delivered; then :meth:`CaptureThread.get` returns None and ``error`` says what happened. The
caller (the pipeline) finishes its recording and reports the error. A file stream ends at its
end.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeseg.errors import DataError, EdgesegError
from edgeseg.runtime.streams import Stream

__all__ = ["Capture", "CaptureThread", "Frame"]

# How long the capture thread waits for a read still running when it stops, and for close().
_GRACE_S = 1.0
# Status changes kept for status_changes().
_KEEP_CHANGES = 64
# Schemes whose outage is a "camera lost"; other live sources are a "stream lost".
_CAMERA_SCHEMES = ("camera://", "v4l2://", "csi://")


@dataclass(frozen=True)
class Frame:
    """One frame as captured. ``index`` counts the frames read from the stream (from 0; the
    frames dropped in between leave gaps), ``image`` is the stream's array (uint8/uint16,
    (H, W) or (H, W, C), RGB), ``captured`` the time.perf_counter() when read() returned it,
    ``name`` the frame's name in a file source (the stream's ``frame_name``: ``"A06.tif"``,
    ``"clip.mp4#frame37"``), None for other streams. ``clock`` is the frame's time on its
    source's clock, seconds: ``captured`` for a live stream (monotonic: the time that passed),
    the stream's ``frame_time`` for a file (a video's own timestamp), None where a file has
    none (images)."""

    index: int
    image: np.ndarray
    captured: float
    name: str | None = None
    clock: float | None = None


@runtime_checkable
class Capture(Protocol):
    """What the pipeline may ask of a capture (:class:`CaptureThread` is edgeseg's).

    - :meth:`get` the next :class:`Frame` (None at the end or after ``timeout``;
      ``finished`` tells the two apart); :meth:`stop` ends it.
    - Live counters: ``dropped`` (frames replaced before anyone took them), ``outages``
      (times the source was lost), ``outage_seconds``, ``status`` (None while frames flow,
      else "camera lost, retrying since HH:MM:SS") and every change of it in order
      (:meth:`status_changes`), ``kind`` ("camera" or "stream", for messages) and
      ``last_fault`` (why the source was last lost).
    - After the end: ``error`` (why the source failed, else None), ``reached_max`` (it
      ended at ``max_frames``) and ``warnings`` (the stream's one-line warnings).
    """

    kind: str
    dropped: int
    outages: int
    status: str | None
    last_fault: str | None
    error: EdgesegError | None
    reached_max: bool

    @property
    def finished(self) -> bool: ...

    @property
    def outage_seconds(self) -> float: ...

    @property
    def warnings(self) -> list[str]: ...

    def get(self, timeout: float | None = None) -> Frame | None: ...

    def status_changes(self, since: int = 0) -> tuple[int, list[str | None]]: ...

    def stop(self, timeout: float | None = 10.0) -> None: ...


class CaptureThread:
    """Reads ``stream`` in a daemon thread; :meth:`get` hands out the frames.

    ``max_frames`` ends the capture once that many frames have been delivered (taken with
    :meth:`get`); for a file stream, exactly the first ``max_frames`` frames are read.
    ``queue_size`` bounds the queue of a file stream; a live stream always keeps one frame.

    Live streams only (file streams are read as they are, and end at their end or first error):

    - ``read_timeout``: seconds a ``read()`` may take before the stream counts as lost (None:
      wait forever). It is stretched to three frame periods of a slower announced rate.
    - ``retry``: reopen a lost stream and carry on (False: a lost stream ends the capture with
      ``error``, as a stream that cannot be reopened does).
    - ``reopen``: returns a new stream of the same source (raising while it is not back);
      default: the stream's own ``reopen`` attribute.
    - ``backoff``, ``max_backoff``: seconds before the first reopen of an outage, doubling after
      every failed attempt up to ``max_backoff``; ``open_timeout``: seconds a ``reopen()`` may
      take before it is given up (its stream closed if it ever arrives) and tried again.

    Counters (read them any time): ``delivered`` (frames returned by :meth:`get`), ``dropped``
    (live streams: frames replaced before anyone took them), ``frames_read``, ``outages``
    (times the stream was lost), ``outage_seconds`` (from each loss being noticed to the next
    frame, the current outage included), ``status`` (None while frames flow, else "camera lost,
    retrying since HH:MM:SS"), ``last_fault`` (why the stream was last lost) and
    ``reopen_error`` (why the last reopen failed). After the end: ``error`` (an
    :class:`~edgeseg.errors.EdgesegError` when the stream failed, else None), ``reached_max``
    (the capture ended at ``max_frames``) and ``finished``. ``stream`` is the stream in use (a
    new one after a reopen; it carries the earlier streams' warnings, which ``warnings``
    gives). A :class:`Capture`.

    Use as ``with CaptureThread(stream).start() as capture: ...``, or call :meth:`stop`: it
    ends the thread and closes the stream (the thread owns the stream while it runs).
    """

    def __init__(
        self,
        stream: Stream,
        *,
        max_frames: int | None = None,
        queue_size: int = 4,
        retry: bool = True,
        reopen: Callable[[], Stream] | None = None,
        read_timeout: float | None = 5.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        open_timeout: float | None = 60.0,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise DataError(f"max_frames must be at least 1, got {max_frames}")
        if queue_size < 1:
            raise DataError(f"queue_size must be at least 1, got {queue_size}")
        for name, value in (("read_timeout", read_timeout), ("open_timeout", open_timeout)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise DataError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (math.isfinite(backoff) and backoff > 0):
            raise DataError(f"backoff must be a positive number of seconds, got {backoff!r}")
        if not (math.isfinite(max_backoff) and max_backoff >= backoff):
            raise DataError(
                f"max_backoff must be at least backoff ({backoff:g} s), got {max_backoff!r}"
            )
        self.stream = stream
        self.live = bool(stream.info.live)
        self.max_frames = max_frames
        self.queue_size = queue_size
        self.retry = bool(retry) and self.live
        self.reopen = reopen
        rate = stream.info.fps
        if read_timeout is not None and rate:
            read_timeout = max(read_timeout, 3.0 / rate)
        self.read_timeout = read_timeout if self.live else None
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.kind = "camera" if stream.info.uri.startswith(_CAMERA_SCHEMES) else "stream"
        self.delivered = 0
        self.dropped = 0
        self.frames_read = 0
        self.outages = 0
        self.status: str | None = None
        self.last_fault: str | None = None
        self.reopen_error: str | None = None
        self.error: EdgesegError | None = None
        self.reached_max = False
        self._lost_s = 0.0  # the outages that ended
        self._lost_since: float | None = None  # time.monotonic() when the current one began
        self._changes: deque[str | None] = deque(maxlen=_KEEP_CHANGES)  # the last statuses
        self._change_count = 0
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque()
        self._ended = False  # the thread will add no more frames
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stream_closed = False

    def start(self) -> CaptureThread:
        """Start reading; returns self. A capture thread starts once."""
        with self._cond:
            if self._thread is not None or self._stopping:
                raise RuntimeError("a CaptureThread can be started only once")
            self._thread = threading.Thread(target=self._run, name="edgeseg-capture", daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, waiting up to ``timeout`` seconds (forever with None).

        Returns None at the end (the source ended or failed, ``max_frames`` were delivered,
        :meth:`stop` was called) and when ``timeout`` passes without a frame (also while a lost
        stream is being reopened): ``finished`` tells the two apart.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._thread is None and not self._stopping:
                raise RuntimeError("call start() before get()")
            while True:
                if self._stopping or self._at_max():
                    return None
                if self._frames:
                    frame = self._frames.popleft()
                    self.delivered += 1
                    if self._at_max():
                        self.reached_max = True
                    self._cond.notify_all()  # room in the queue, or the thread may stop
                    return frame
                if self._ended:
                    return None
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)

    @property
    def finished(self) -> bool:
        """True once :meth:`get` returns None for good: everything read was taken and no more
        will come, ``max_frames`` were delivered, or :meth:`stop` was called."""
        with self._cond:
            return self._stopping or self._at_max() or (self._ended and not self._frames)

    @property
    def warnings(self) -> list[str]:
        """The stream's one-line warnings (those of the streams before a reopen too)."""
        return self.stream.warnings

    @property
    def lost(self) -> bool:
        """True while a lost stream is being reopened (``status`` says since when)."""
        return self.status is not None

    @property
    def outage_seconds(self) -> float:
        """Seconds without frames in all outages, from each loss being noticed until the next
        frame came (the current outage up to now, or up to the end of the thread)."""
        with self._cond:
            ongoing = 0.0 if self._lost_since is None else time.monotonic() - self._lost_since
            return self._lost_s + ongoing

    def status_changes(self, since: int = 0) -> tuple[int, list[str | None]]:
        """(number of status changes so far, the statuses after the first ``since`` of them):
        every change in order, also those too short to be seen by polling ``status`` (the
        last 64 are kept). Pass the number back as ``since`` to get only the new ones."""
        with self._cond:
            kept = len(self._changes)
            new = min(self._change_count - since, kept)
            return self._change_count, (list(self._changes)[kept - new :] if new > 0 else [])

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the capture: wake the thread (also when it waits on a full queue, for a read, or
        between attempts to reopen a lost stream), join it and close the stream. Idempotent.
        Frames not taken yet are discarded.

        A live stream's read still running is given a moment, then abandoned (closed
        best-effort from another thread). A file stream's thread blocked inside ``read()`` is
        waited for up to ``timeout`` seconds; if it is still there, it closes the stream when
        read() returns.
        """
        with self._cond:
            self._stopping = True
            self._frames.clear()
            self._cond.notify_all()
            thread = self._thread
            stream = self.stream
        stream.interrupt()
        if thread is None:
            self._close_stream()
        elif thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> CaptureThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------

    def _at_max(self) -> bool:
        return self.max_frames is not None and self.delivered >= self.max_frames

    def _stopped(self) -> bool:
        return self._stopping

    def _run(self) -> None:
        stream: Stream | None = self.stream
        worker = _Worker(self._cond) if self.live else None
        n = 0
        delay = self.backoff
        try:
            while True:
                with self._cond:
                    if self._stopping or self._at_max():
                        break
                    if not self.live and self.max_frames is not None and n >= self.max_frames:
                        break
                assert stream is not None
                got = self._read(stream, worker, n)
                if got is None:  # stop() came during the read
                    break
                image, captured, fault = got
                if fault is not None:
                    reopen = self.reopen or stream.reopen
                    if not self.retry or reopen is None:
                        self._fail(fault)
                        break
                    self._lose(fault)
                    assert worker is not None  # live streams are read through one
                    self._release(stream, worker, grace=0.0)  # a read still running hangs
                    stream = worker = None
                    reopened = self._reconnect(reopen, delay)
                    if reopened is None:  # stopping
                        break
                    stream, worker, delay = reopened  # delay: for the next attempt, if it fails
                    continue
                if image is None:  # the end of a file, or of the frames a live stream announced
                    break
                # read() has returned: its frame_name is this frame's, no race
                clock = captured if self.live else stream.frame_time
                frame = Frame(n, image, captured, stream.frame_name, clock)
                n += 1
                delay = self.backoff
                with self._cond:
                    self.frames_read = n
                    if self._lost_since is not None:  # frames flow again
                        self._lost_s += time.monotonic() - self._lost_since
                        self._lost_since = None
                        self._set_status(None)
                    if self.live:
                        if self._frames:
                            self._frames.clear()
                            self.dropped += 1
                    else:
                        while len(self._frames) >= self.queue_size and not self._stopping:
                            self._cond.wait()
                    if self._stopping:
                        break
                    self._frames.append(frame)
                    self._cond.notify_all()
        finally:
            if stream is not None:
                if worker is None:
                    self._close_stream()
                else:
                    self._release(stream, worker)
            with self._cond:
                if self._lost_since is not None:  # the outage counts up to here
                    self._lost_s += time.monotonic() - self._lost_since
                    self._lost_since = None
                self._ended = True
                self._cond.notify_all()

    def _read(
        self, stream: Stream, worker: _Worker | None, n: int
    ) -> tuple[np.ndarray | None, float, EdgesegError | None] | None:
        """(frame or None at the end, time read, the fault when the stream failed), or None
        when stop() came first."""
        if worker is None:
            try:
                image, exc = stream.read(), None
            except Exception as error:  # a driver or decoder error: one line, not a traceback
                image, exc = None, error
        else:
            outcome = worker.call(stream.read, self.read_timeout, self._stopped)
            if outcome is _STOPPED:
                return None
            if outcome is _TIMEOUT:
                return (
                    None,
                    0.0,
                    DataError(
                        f"{_what(stream)} stopped delivering frames after {_frames(n)}: read() "
                        f"hung for {self.read_timeout:g} s"
                    ),
                )
            assert isinstance(outcome, tuple)
            image, exc = outcome
        captured = time.perf_counter()
        if exc is not None:
            if isinstance(exc, EdgesegError):
                return None, captured, exc
            if not isinstance(exc, Exception):  # KeyboardInterrupt and the like: not ours
                raise exc
            text = " ".join(str(exc).split())
            return (
                None,
                captured,
                DataError(
                    f"{_what(stream)} failed after {_frames(n)}: {type(exc).__name__}: {text}"
                ),
            )
        if image is None and self.live:
            announced = stream.info.frames
            if announced is None or n < announced:
                return (
                    None,
                    captured,
                    DataError(f"{_what(stream)} stopped delivering frames after {_frames(n)}"),
                )
        return image, captured, None

    def _lose(self, fault: EdgesegError) -> None:
        """Note a fault: a new outage unless one is going on."""
        with self._cond:
            self.last_fault = str(fault)
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                self.outages += 1
                self._set_status(f"{self.kind} lost, retrying since {time.strftime('%H:%M:%S')}")
            self._cond.notify_all()

    def _set_status(self, status: str | None) -> None:
        """(with the lock held)"""
        self.status = status
        self._changes.append(status)
        self._change_count += 1

    def _reconnect(
        self, reopen: Callable[[], Stream], delay: float
    ) -> tuple[Stream, _Worker, float] | None:
        """Reopen the source, waiting ``delay`` seconds before each attempt (doubling after
        each one, up to ``max_backoff``): the new stream, its worker and the delay the next
        attempt of this outage would wait, or None once stop() was called."""
        while True:
            if not self._pause(delay):
                return None
            delay = min(delay * 2, self.max_backoff)
            worker = _Worker(self._cond)
            outcome = worker.call(reopen, self.open_timeout, self._stopped)
            if outcome is _STOPPED or outcome is _TIMEOUT:
                worker.abandon(late=_close_quietly)  # a stream that opens after all is closed
                if outcome is _STOPPED:
                    return None
                self.reopen_error = f"reopening gave no answer within {self.open_timeout:g} s"
                continue
            assert isinstance(outcome, tuple)
            stream, exc = outcome
            if exc is not None or stream is None:
                worker.abandon()
                if exc is not None and not isinstance(exc, Exception):
                    raise exc
                self.reopen_error = (
                    f"reopening: {_one_line(exc)}" if exc is not None else "reopening gave None"
                )
                continue
            with self._cond:
                if self._stopping:
                    stopping = True
                else:
                    stopping = False
                    _carry_warnings(self.stream, stream)
                    self.stream = stream
                    self.reopen_error = None
            if stopping:
                self._release(stream, worker)
                return None
            return stream, worker, delay

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False when stop() came first."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(left)
            return False

    def _release(self, stream: Stream, worker: _Worker, grace: float = _GRACE_S) -> None:
        """Close a live stream the thread is done with, without waiting long: a read still
        running (cut short by stop()) gets ``grace`` seconds to return; if it does not (a read
        that hangs), the stream is abandoned and closed best-effort from another thread."""
        if worker.busy:
            _quietly(stream.interrupt)
            if not worker.wait_idle(grace):
                worker.abandon()
                threading.Thread(
                    target=_close_quietly, args=(stream,), name="edgeseg-close", daemon=True
                ).start()
                return
        worker.call(lambda: _close_quietly(stream), _GRACE_S, lambda: False)
        worker.abandon()

    def _fail(self, error: EdgesegError) -> None:
        with self._cond:
            if not self._stopping:  # a read interrupted by stop() is no failure
                self.error = error

    def _close_stream(self) -> None:
        with self._cond:
            if self._stream_closed:
                return
            self._stream_closed = True
        _close_quietly(self.stream)


# --------------------------------------------------------------------------------------------
# Calls into a live stream that the capture thread can give up on


class _Outcome:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_STOPPED = _Outcome("stopped")
_TIMEOUT = _Outcome("timeout")


class _Worker:
    """A daemon thread making the capture thread's calls into a live stream (open, read, close)
    one at a time, so the capture thread can wait for them with a timeout, wake up when stop()
    is called, and give up on a call that hangs. It shares the capture's condition, so every
    wait wakes on stop(). An abandoned worker ends once its call returns (if ever), handing
    what that call returned to ``late``."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._fn: Callable[[], Any] | None = None
        self._outcome: tuple[Any, BaseException | None] | None = None
        self._late: Callable[[Any], None] | None = None
        self.busy = False
        self.abandoned = False
        threading.Thread(target=self._loop, name="edgeseg-capture-io", daemon=True).start()

    def call(
        self, fn: Callable[[], Any], timeout: float | None, stopped: Callable[[], bool]
    ) -> tuple[Any, BaseException | None] | _Outcome:
        """(value, None) or (None, exception) of ``fn()``; _TIMEOUT after ``timeout`` seconds
        or _STOPPED once ``stopped()`` (checked whenever the condition is notified), the call
        still running then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._fn, self._outcome, self.busy = fn, None, True
            self._cond.notify_all()
            while self._outcome is None:
                if stopped():
                    return _STOPPED
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return _TIMEOUT
                self._cond.wait(left)
            outcome, self._outcome = self._outcome, None
            return outcome

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the running call to return; whether it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def abandon(self, late: Callable[[Any], None] | None = None) -> None:
        """Let the thread end: now when idle, else when its call returns."""
        with self._cond:
            self.abandoned, self._late = True, late
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._fn is None and not self.abandoned:
                    self._cond.wait()
                if self._fn is None:
                    return
                fn, self._fn = self._fn, None
            try:
                outcome: tuple[Any, BaseException | None] = (fn(), None)
            except BaseException as exc:  # handed to the capture thread, which decides
                outcome = (None, exc)
            with self._cond:
                self.busy = False
                late = self._late if self.abandoned else None
                if not self.abandoned:
                    self._outcome = outcome
                self._cond.notify_all()
                if self.abandoned:
                    break
        if late is not None and outcome[0] is not None:
            _quietly(lambda: late(outcome[0]))


# --------------------------------------------------------------------------------------------
# Helpers


def _close_quietly(stream: Stream) -> None:
    """Close a stream; a failing release becomes a warning of the stream, not an error."""
    try:
        stream.close()
    except Exception as exc:  # a failing release must not hide what was captured
        stream.warnings.append(f"closing the stream: {type(exc).__name__}: {_one_line(exc)}")


def _quietly(fn: Callable[[], Any]) -> None:
    """Call ``fn`` best-effort (on a stream being given up): its failure is of no interest."""
    with contextlib.suppress(Exception):
        fn()


def _carry_warnings(old: Stream, new: Stream) -> None:
    """Put the old stream's warnings before the new one's (those it does not repeat)."""
    new.warnings[:0] = [w for w in old.warnings if w not in new.warnings]


def _what(stream: Stream) -> str:
    info = stream.info
    return info.description or info.uri


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, EdgesegError) else f"{type(exc).__name__}: {text}"


def _frames(n: int) -> str:
    return f"{n} frame{'' if n == 1 else 's'}"
