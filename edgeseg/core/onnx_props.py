"""An ONNX file's ``metadata_props`` read without parsing its graph (no ``onnx`` package).

Opening a model asks whether an ``.onnx`` file is one of edgeseg's artefacts (it carries the
``edgeseg`` key) before anything else; ``onnx.load`` would decode every weight to answer.
A ``ModelProto`` is a protobuf message whose top-level fields can be walked by their tags:
the graph (field 7) and everything else is skipped by its length, and only the
``metadata_props`` entries (field 14: ``key`` = 1, ``value`` = 2) are decoded. The file is
memory-mapped, so a model of hundreds of megabytes costs a few page reads.
"""

from __future__ import annotations

import mmap
from pathlib import Path

__all__ = ["read_metadata_props"]

_METADATA_PROPS = 14
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: bytes | mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes | mmap.mmap, pos: int, end: int):
    """(field number, wire type, value or (start, stop) of a length-delimited payload)."""
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == _LEN:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise ValueError("truncated field")
            yield number, wire, (pos, pos + size)
            pos += size
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
    if pos != end:
        raise ValueError("truncated message")


def read_metadata_props(path: str | Path) -> dict[str, str] | None:
    """The ``metadata_props`` of the ONNX file ``path`` as a dict, or None when the file is
    not a readable protobuf message (the runtime's own loader then says what is wrong)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            props: dict[str, str] = {}
            for number, wire, value in _fields(buf, 0, len(buf)):
                if number != _METADATA_PROPS or wire != _LEN:
                    continue
                start, stop = value  # type: ignore[misc]
                key = text = ""
                for n, w, v in _fields(buf, start, stop):
                    if w == _LEN and n in (1, 2):
                        s = bytes(buf[v[0] : v[1]]).decode("utf-8")  # type: ignore[index]
                        key, text = (s, text) if n == 1 else (key, s)
                props[key] = text
            return props
    except (OSError, ValueError, UnicodeDecodeError):
        return None
