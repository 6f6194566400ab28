"""DICOM windows: which modality values a frame shows, and how they become a 16-bit frame.

A window is ``--window CENTER,WIDTH`` (in the modality's units after the rescale: Hounsfield
units for CT), a named preset (:data:`PRESETS`), or ``file``: each file's own VOI LUT or
Window Center/Width (the frame's own minimum..maximum when it has neither).

The window maps modality values onto 0..65535 (a uint16 frame) by DICOM's VOI LUT function
(PS3.3 C.11.2.1.2): LINEAR (the default, and what ``--window`` and the presets use)

    x <= c - 0.5 - (w - 1) / 2  →  0
    x >  c - 0.5 + (w - 1) / 2  →  65535
    otherwise                   →  ((x - (c - 0.5)) / (w - 1) + 0.5) * 65535

rounded to the nearest integer; LINEAR_EXACT and SIGMOID when a file names them. That frame
then goes through the model's normalization exactly as any 16-bit frame does (see README,
"DICOM").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from edgeseg.errors import DataError

__all__ = [
    "FILE",
    "OUT_MAX",
    "PRESETS",
    "Window",
    "apply_window",
    "parse_window",
    "window_spec",
]

#: The output range of a window: a 16-bit frame.
OUT_MAX = 65535
#: ``--window file``: each file's own VOI LUT / Window Center and Width.
FILE = "file"
#: Named windows (centre, width) in Hounsfield units, as radiology viewers ship them.
PRESETS: dict[str, tuple[float, float]] = {
    "ct-soft-tissue": (40.0, 400.0),
    "ct-abdomen": (60.0, 400.0),
    "ct-mediastinum": (50.0, 350.0),
    "ct-liver": (60.0, 160.0),
    "ct-lung": (-600.0, 1500.0),
    "ct-bone": (400.0, 1800.0),
    "ct-brain": (40.0, 80.0),
}
_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class Window:
    """A VOI window: ``center`` and ``width`` in modality units, DICOM's ``function``."""

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise DataError(f"window centre and width must be numbers, got {self}")
        if self.function not in _FUNCTIONS:
            raise DataError(
                f"unsupported VOI LUT function {self.function!r}: supported are "
                f"{', '.join(_FUNCTIONS)}"
            )
        ok = self.width >= 1 if self.function == "LINEAR" else self.width > 0
        if not ok:
            need = ">= 1" if self.function == "LINEAR" else "> 0"
            raise DataError(f"window width must be {need} for {self.function}, got {self.width:g}")

    @property
    def spec(self) -> str:
        """``"40,400"``: what ``--window`` takes and the model metadata records."""
        return f"{self.center:g},{self.width:g}"


def parse_window(text: str | None) -> Window | str | None:
    """``"40,400"`` / ``"ct-lung"`` → a :class:`Window`; ``"file"`` → :data:`FILE`; None → None.

    Raises:
        DataError: anything else (naming the presets).
    """
    if text is None:
        return None
    t = str(text).strip().lower()
    if t == FILE:
        return FILE
    if t in PRESETS:
        c, w = PRESETS[t]
        return Window(c, w)
    m = re.fullmatch(r"\s*([-+]?[\d.eE+-]+)\s*,\s*([-+]?[\d.eE+-]+)\s*", t)
    if m:
        try:
            c, w = float(m.group(1)), float(m.group(2))
        except ValueError:
            m = None
        else:
            return Window(c, w)
    raise DataError(
        f"--window takes CENTER,WIDTH (e.g. 40,400), file, or a preset: "
        f"{', '.join(PRESETS)}; got {text!r}"
    )


def window_spec(window: Window | str | None) -> str | None:
    """The canonical text of a parsed window (``"40,400"``, ``"file"``) or None."""
    if window is None or window == FILE:
        return window  # type: ignore[return-value]
    assert isinstance(window, Window)
    return window.spec


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values (any shape, any numeric dtype) → uint16 0..65535 by ``window``."""
    x = np.asarray(values, dtype=np.float64)
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        y = OUT_MAX / (1.0 + np.exp(-4.0 * (x - c) / w))
    else:
        if window.function == "LINEAR":
            c, w = c - 0.5, w - 1.0
        lo, hi = c - w / 2.0, c + w / 2.0
        y = np.where(x <= lo, 0.0, np.where(x > hi, float(OUT_MAX), 0.0))
        between = (x > lo) & (x <= hi)
        if w > 0 and between.any():
            y[between] = ((x[between] - c) / w + 0.5) * OUT_MAX
    return np.clip(np.rint(y), 0, OUT_MAX).astype(np.uint16)
