"""What every stream is: the :class:`Stream` protocol, the :class:`StreamBase` class with the
defaults of its optional parts, and its :class:`StreamInfo`.

The modules that open streams (:mod:`~edgeseg.runtime.cameras` for live OpenCV and picamera2
sources, :mod:`~edgeseg.runtime.streams` for files and ``synthetic://``) build on this one;
callers get all of it from :mod:`edgeseg.runtime.streams`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Stream", "StreamBase", "StreamInfo", "one_line"]


@dataclass(frozen=True)
class StreamInfo:
    """What a stream is. ``size`` is (height, width) of its frames when known, ``fps`` the rate
    it delivers (a camera's or video's nominal rate, a paced synthetic stream's), ``frames`` the
    number of frames it announces when finite (a file source's count: an upper bound when frames
    are skipped; ``frames=N`` of a synthetic stream). ``uri`` hides passwords."""

    uri: str
    description: str
    live: bool
    fps: float | None
    size: tuple[int, int] | None
    frames: int | None = None


@runtime_checkable
class Stream(Protocol):
    """A source of frames read one after another (no random access), and what a capture
    thread may ask of it.

    - ``read()`` returns the next frame, uint8/uint16 array of shape (H, W) or (H, W, C) in
      RGB order, or None when a finite source has ended (for a live source: it stopped
      delivering). It may block until the frame exists.
    - ``close()`` releases the device or file; it is idempotent.
    - ``warnings``: one-line messages (a truncated video, a camera that picked another mode);
      a capture thread adds its own (a failing close) and carries them to a reopened stream.
    - ``interrupt()``: makes a waiting ``read()`` return None soon; safe to call from another
      thread (a no-op where ``read()`` never waits long).
    - ``reopen``: a function that opens the same source again as a new stream (live streams),
      or None (a file ends at its end).
    - ``frame_name``: the source's name of the frame ``read()`` returned last (``"A06.tif"``,
      ``"clip.mp4#frame37"``), or None (cameras; before the first read, after the end).
    - ``frame_time``: the source's own time of the frame ``read()`` returned last, seconds
      from its start (a video file's presentation timestamp), or None (live sources, whose
      time is when a frame was captured; images).

    :class:`StreamBase` gives the defaults of the last four, so a stream states only what
    it has.
    """

    info: StreamInfo
    warnings: list[str]
    reopen: Callable[[], Stream] | None
    frame_name: str | None
    frame_time: float | None

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...

    def interrupt(self) -> None: ...


class StreamBase(ABC):
    """What a stream builds on: the optional capabilities of :class:`Stream` with their
    defaults (no ``reopen``, no ``frame_name`` or ``frame_time``, nothing to interrupt). A
    subclass sets ``info`` and ``warnings`` (a list of its own) and defines ``read`` and
    ``close``."""

    info: StreamInfo
    warnings: list[str]
    reopen: Callable[[], Stream] | None = None
    frame_name: str | None = None
    frame_time: float | None = None

    @abstractmethod
    def read(self) -> np.ndarray | None: ...

    @abstractmethod
    def close(self) -> None: ...

    def interrupt(self) -> None:  # noqa: B027 (optional: nothing to interrupt by default)
        """Make a waiting ``read()`` return None soon (any thread): nothing to do here, this
        stream's ``read()`` never waits long."""


def one_line(exc: BaseException | str) -> str:
    """An exception or message as one line (for warnings and one-line errors)."""
    return " ".join(str(exc).split())
