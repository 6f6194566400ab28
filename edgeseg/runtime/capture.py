"""The capture thread: reads a stream ahead of inference, the way its kind of source needs.

- A live stream (camera, network, paced ``synthetic://``) goes into a single slot: a new frame
  replaces one nobody has taken yet (counted in ``dropped``), so when inference is slower than
  the camera, the next frame it gets is the newest one, not one that waited in a queue.
- A file stream goes into a bounded queue (``queue_size``) and the capture thread waits when it
  is full: every frame is delivered, in order, none dropped.

When a live stream stops delivering (``read()`` returns None: a camera unplugged, a network
stream gone) or any stream's ``read()`` raises, the frames already read are still delivered;
then :meth:`CaptureThread.get` returns None and ``error`` says what happened. The caller (the
pipeline) finishes its recording and reports the error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from edgeseg.errors import DataError, EdgesegError
from edgeseg.runtime.streams import Stream

__all__ = ["CaptureThread", "Frame"]


@dataclass(frozen=True)
class Frame:
    """One frame as captured. ``index`` counts the frames read from the stream (from 0; the
    frames dropped in between leave gaps), ``image`` is the stream's array (uint8/uint16,
    (H, W) or (H, W, C), RGB), ``captured`` the time.perf_counter() when read() returned it."""

    index: int
    image: np.ndarray
    captured: float


class CaptureThread:
    """Reads ``stream`` in a daemon thread; :meth:`get` hands out the frames.

    ``max_frames`` ends the capture once that many frames have been delivered (taken with
    :meth:`get`); for a file stream, exactly the first ``max_frames`` frames are read.
    ``queue_size`` bounds the queue of a file stream; a live stream always keeps one frame.

    Counters (read them any time): ``delivered`` (frames returned by :meth:`get`), ``dropped``
    (live streams: frames replaced before anyone took them), ``frames_read``. After the end:
    ``error`` (an :class:`~edgeseg.errors.EdgesegError` when the stream failed, else None),
    ``reached_max`` (the capture ended at ``max_frames``) and ``finished``.

    Use as ``with CaptureThread(stream).start() as capture: ...``, or call :meth:`stop`: it
    ends the thread and closes the stream (the thread owns the stream while it runs).
    """

    def __init__(
        self, stream: Stream, *, max_frames: int | None = None, queue_size: int = 4
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise DataError(f"max_frames must be at least 1, got {max_frames}")
        if queue_size < 1:
            raise DataError(f"queue_size must be at least 1, got {queue_size}")
        self.stream = stream
        self.live = bool(stream.info.live)
        self.max_frames = max_frames
        self.queue_size = queue_size
        self.delivered = 0
        self.dropped = 0
        self.frames_read = 0
        self.error: EdgesegError | None = None
        self.reached_max = False
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
        :meth:`stop` was called) and when ``timeout`` passes without a frame: ``finished``
        tells the two apart.
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

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the capture: wake the thread (also when it waits on a full queue), join it and
        close the stream. Idempotent. Frames not taken yet are discarded.

        A thread blocked inside the stream's ``read()`` (a camera that hangs) is waited for up to
        ``timeout`` seconds; if it is still there, it closes the stream when read() returns.
        """
        with self._cond:
            self._stopping = True
            self._frames.clear()
            self._cond.notify_all()
            thread = self._thread
        interrupt = getattr(self.stream, "interrupt", None)
        if callable(interrupt):
            interrupt()
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

    def _run(self) -> None:
        stream = self.stream
        n = 0
        try:
            while True:
                with self._cond:
                    if self._stopping or self._at_max():
                        break
                    if not self.live and self.max_frames is not None and n >= self.max_frames:
                        break
                try:
                    image = stream.read()
                except EdgesegError as exc:
                    self._fail(exc)
                    break
                except Exception as exc:  # a driver or decoder error: one line, not a traceback
                    text = " ".join(str(exc).split())
                    self._fail(
                        DataError(
                            f"{self._what()} failed after {_frames(n)}: "
                            f"{type(exc).__name__}: {text}"
                        )
                    )
                    break
                captured = time.perf_counter()
                if image is None:
                    announced = stream.info.frames
                    if self.live and (announced is None or n < announced):
                        self._fail(
                            DataError(
                                f"{self._what()} stopped delivering frames after {_frames(n)}"
                            )
                        )
                    break
                frame = Frame(n, image, captured)
                n += 1
                with self._cond:
                    self.frames_read = n
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
            self._close_stream()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _fail(self, error: EdgesegError) -> None:
        with self._cond:
            if not self._stopping:  # a read interrupted by stop() is no failure
                self.error = error

    def _close_stream(self) -> None:
        with self._cond:
            if self._stream_closed:
                return
            self._stream_closed = True
        try:
            self.stream.close()
        except Exception as exc:  # a failing release must not hide what was captured
            warnings = getattr(self.stream, "warnings", None)
            if isinstance(warnings, list):
                warnings.append(f"closing the stream: {type(exc).__name__}: {exc}")

    def _what(self) -> str:
        info = self.stream.info
        return info.description or info.uri


def _frames(n: int) -> str:
    return f"{n} frame{'' if n == 1 else 's'}"
