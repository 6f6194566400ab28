"""The window sink: rendered frames in an OpenCV window; q, Esc or closing it ends the run
(:class:`WindowSink`)."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from edgeseg.errors import DataError, MissingDependencyError
from edgeseg.hardware import opencv_has_gui
from edgeseg.optional import cv2
from edgeseg.runtime.sinks.base import Record, SinkBase

__all__ = ["WindowSink"]

_GUI_HINT = (
    "pip uninstall -y opencv-python-headless && pip install 'edgeseg[gui]' (replaces "
    "opencv-python-headless), or run with --headless / --stream"
)


class WindowSink(SinkBase):
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

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
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
