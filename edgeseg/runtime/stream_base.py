"""What every stream is: the :class:`Stream` protocol and its :class:`StreamInfo`.

The modules that open streams (:mod:`~edgeseg.runtime.cameras` for live OpenCV and picamera2
sources, :mod:`~edgeseg.runtime.streams` for files and ``synthetic://``) build on this one;
callers get all of it from :mod:`edgeseg.runtime.streams`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Stream", "StreamInfo", "one_line"]


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
    """A source of frames read one after another (no random access).

    ``read()`` returns the next frame, uint8/uint16 array of shape (H, W) or (H, W, C) in RGB
    order, or None when a finite source has ended (for a live source: it stopped delivering).
    It may block until the frame exists. ``close()`` releases the device or file; it is
    idempotent. edgeseg's streams also have ``warnings: list[str]``, and those whose
    ``read()`` can wait long (a paced synthetic stream) have ``interrupt()``, which makes a
    waiting ``read()`` return None soon and is safe to call from another thread.
    """

    info: StreamInfo

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


def one_line(exc: BaseException | str) -> str:
    """An exception or message as one line (for warnings and one-line errors)."""
    return " ".join(str(exc).split())
