"""Sizes as users write them: H×W of images and frames, and byte sizes.

- :func:`parse_hw`: ``"768x1024"`` (height first, as everywhere in edgeseg; ``×`` and ``X``
  too) or, where a square is meant, ``"256"`` → ``(H, W)``; :func:`format_hw` is its inverse.
- :func:`format_shape`: a tensor shape for messages, ``(1, None, None, 3)``.
- :func:`parse_bytes`: ``"1048576"``, ``"500M"``, ``"2G"``, ``"4.21MiB"`` or ``"20%"`` (of the
  free space) → bytes.

Every failure is a one-line :class:`~edgeseg.errors.DataError` that names what was being
parsed, so a command can print it as it is. Pure Python: imported by every layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from edgeseg.errors import DataError

__all__ = ["format_hw", "format_shape", "format_shapes", "parse_bytes", "parse_hw"]

_HW = re.compile(r"\s*(\d+)\s*(?:[x×]\s*(\d+)\s*)?", re.IGNORECASE)


def parse_hw(
    text: str | int | Sequence[int],
    *,
    what: str = "size",
    square: bool = True,
    minimum: int = 1,
    maximum: int | None = None,
    alternatives: Sequence[str] = (),
) -> tuple[int, int]:
    """``"HxW"`` (or ``"H×W"``; ``"N"`` for N×N when ``square``) → ``(H, W)``.

    A sequence of two integers (from a config file) and, with ``square``, one integer are
    taken as they are. ``what`` names the value in errors (``--frame-size``, ``synthetic://
    size``); each side must lie in ``minimum``..``maximum``. ``alternatives``: words the
    caller takes instead of a size (``auto``), named in the error for an unreadable value.

    Raises:
        DataError: one line naming ``what`` and the value.
    """
    form = " or ".join(["N or HxW" if square else "HxW", *alternatives])
    bad = DataError(f"{what} {text!r}: expected {form} (height first, e.g. 768x1024)")
    if isinstance(text, bool):
        raise bad
    if isinstance(text, int):
        if not square:
            raise bad
        size = (text, text)
    elif isinstance(text, str):
        m = _HW.fullmatch(text)
        if m is None or (m[2] is None and not square):
            raise bad
        h = int(m[1])
        size = (h, int(m[2]) if m[2] is not None else h)
    else:
        try:
            values = tuple(int(v) for v in text)
        except (TypeError, ValueError):
            raise bad from None
        if len(values) != 2:
            raise bad
        size = (values[0], values[1])
    top = f" and {maximum}" if maximum is not None else ""
    if min(size) < minimum or (maximum is not None and max(size) > maximum):
        bound = f"between {minimum}{top}" if maximum is not None else f"at least {minimum}"
        raise DataError(f"{what} {text!r}: height and width must be {bound}")
    return size


def format_hw(size: Sequence[int]) -> str:
    """``(768, 1024)`` → ``"768x1024"`` (H x W)."""
    return f"{int(size[0])}x{int(size[1])}"


def format_shape(shape: Sequence[int | None]) -> str:
    """A tensor shape for messages: ``(1, 256, 256, 1)``, dynamic dimensions (None or
    negative) as ``None``."""
    return "(" + ", ".join("None" if d is None or d < 0 else str(d) for d in shape) + ")"


def format_shapes(shapes: Sequence[Sequence[int | None]]) -> str:
    """One shape as :func:`format_shape`, several as ``[(…), (…)]``."""
    if len(shapes) == 1:
        return format_shape(shapes[0])
    return "[" + ", ".join(format_shape(s) for s in shapes) + "]"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BYTES = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[KMGT]?)(?:I?B)?", re.IGNORECASE)
_SHARE = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*%")


def parse_bytes(text: str | int, free_bytes: int | None = None, *, minimum: int = 1) -> int:
    """Bytes from ``"1048576"``, ``"500M"``, ``"2G"`` (K/M/G/T are powers of 1024; ``B``,
    ``KB``, ``KiB``… are accepted; a fraction rounds to the nearest byte) or ``"20%"``: that
    share of ``free_bytes``.

    A share needs ``free_bytes``. Sizes below ``minimum`` (a limit the user sets must be at
    least 1 byte; a size a tool reports may be 0) and unreadable ones raise a one-line
    :class:`~edgeseg.errors.DataError`.
    """
    if isinstance(text, bool):
        raise DataError(f"bad size {text!r}: give bytes (1048576), 500M, 2G or 20%")
    if isinstance(text, int):
        if text < minimum:
            raise DataError(f"a size must be at least {minimum} byte(s), got {text}")
        return text
    s = str(text).strip()
    share = _SHARE.fullmatch(s)
    if share:
        pct = float(share["num"])
        if not 0 < pct <= 100:
            raise DataError(f"bad size {text!r}: a share of the free space is 0-100%, not {pct:g}%")
        if free_bytes is None:
            raise DataError(f"bad size {text!r}: a share of the free space needs a folder")
        out = int(free_bytes * pct / 100)
        if out <= 0:
            raise DataError(f"{text} of the free space is 0 bytes: the disk is full")
        return out
    m = _BYTES.fullmatch(s)
    if not m:
        raise DataError(
            f"bad size {text!r}: give bytes (1048576), a size with K/M/G/T (500M, 2G) "
            "or a share of the free space (20%)"
        )
    value = float(m["num"]) * _UNITS[m["unit"].upper()]
    if not math.isfinite(value) or value < minimum:
        raise DataError(f"a size must be at least {minimum} byte(s), got {text!r}")
    return round(value)  # "5.05MiB" as a tool rounds it for display: the nearest byte
