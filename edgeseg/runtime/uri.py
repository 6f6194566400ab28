"""The stream URI grammar: ``--camera N`` / ``--source URI`` → one canonical URI.

Nothing here opens anything (see :func:`edgeseg.runtime.streams.open_stream` for the table of
schemes). :func:`parse_source` is what the CLI calls; :func:`parse_uri` gives the parts the
openers need; :func:`redact` hides passwords of network URIs in messages and reports.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgeseg.errors import DataError
from edgeseg.sizes import format_hw, parse_hw

__all__ = [
    "SCHEMES",
    "SUPPORTED",
    "SYNTHETIC_KEYS",
    "ParsedURI",
    "parse_source",
    "parse_uri",
    "redact",
    "synthetic_uri",
]

SCHEMES = ("camera", "v4l2", "csi", "gst", "rtsp", "http", "https", "file", "synthetic")
#: The accepted forms, as error messages list them.
SUPPORTED = (
    "camera://N, csi://N, v4l2:///dev/videoN, gst:PIPELINE, rtsp://…, http(s)://…, "
    "file://PATH (or a plain path), synthetic://?size=HxW&fps=N"
)
#: ``synthetic://`` parameters, in the order a canonical URI writes them.
SYNTHETIC_KEYS = ("size", "fps", "seed", "bit_depth", "channels", "frames", "speed")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


@dataclass(frozen=True)
class ParsedURI:
    """A parsed source: its ``scheme``, canonical ``uri``, the ``target`` it names (camera
    index, device path, pipeline, URL or path) and, for ``synthetic://``, its ``params``."""

    scheme: str
    uri: str
    target: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def parse_source(camera: int | None, source: str | None) -> str:
    """The canonical stream URI of ``--camera N`` or ``--source URI``.

    Plain paths become ``file://PATH``, a bare number that is not a file ``camera://N``,
    ``/dev/videoN`` ``v4l2:///dev/videoN`` (``/dev/v4l/by-id/NAME`` and ``by-path`` names
    likewise); ``synthetic://`` parameters are checked and written in a fixed order. Nothing
    is opened.

    Raises:
        DataError: both or neither given, a negative camera index, an unknown scheme, a
            malformed URI or ``synthetic://`` parameter.
    """
    if camera is not None and source is not None:
        raise DataError("give either --camera N or --source URI, not both")
    if camera is None and source is None:
        raise DataError(f"give a frame source: --camera N or --source URI ({SUPPORTED})")
    if camera is not None:
        if isinstance(camera, bool) or not isinstance(camera, int) or camera < 0:
            raise DataError(f"--camera takes a camera index 0, 1, …, got {camera!r}")
        return f"camera://{camera}"
    assert source is not None
    return parse_uri(source).uri


def parse_uri(text: str) -> ParsedURI:
    """Parse a source URI or plain path (any form :func:`parse_source` accepts).

    Raises:
        DataError: an unknown scheme, a malformed URI or ``synthetic://`` parameter.
    """
    text = str(text).strip()
    if not text:
        raise DataError(f"empty source: give {SUPPORTED}")
    if text[:4].lower() == "gst:":
        return _parse_gst(text[4:].strip())
    m = _SCHEME_RE.match(text)
    if m is None:
        bare = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(?!//)", text)
        if bare and bare.group(1).lower() in SCHEMES and not Path(text).exists():
            name = bare.group(1).lower()
            raise DataError(f"write {name}://{text[len(name) + 1 :]}, not {text}")
        if re.fullmatch(r"\d+", text) and not Path(text).exists():
            return ParsedURI("camera", f"camera://{int(text)}", str(int(text)))
        if re.fullmatch(r"/dev/(video\d+|v4l/by-(id|path)/[^/]+)", text):
            return ParsedURI("v4l2", f"v4l2://{text}", text)
        return ParsedURI("file", f"file://{text}", text)
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == "camera" or scheme == "csi":
        if not re.fullmatch(r"\d+", rest):
            raise DataError(f"{scheme}:// takes a camera index ({scheme}://0), got {text}")
        return ParsedURI(scheme, f"{scheme}://{int(rest)}", str(int(rest)))
    if scheme == "v4l2":
        device = f"/dev/video{int(rest)}" if re.fullmatch(r"\d+", rest) else rest
        if not device.startswith("/"):
            raise DataError(f"v4l2 URIs name a device: v4l2:///dev/video0, got {text}")
        return ParsedURI("v4l2", f"v4l2://{device}", device)
    if scheme in ("rtsp", "http", "https"):
        if not rest.strip("/"):
            raise DataError(f"{scheme}:// needs an address: {scheme}://host[:port]/path")
        uri = f"{scheme}://{rest}"
        return ParsedURI(scheme, uri, uri)
    if scheme == "file":
        if not rest:
            raise DataError("file:// needs a path: file://clip.mp4, file:///data/images")
        return ParsedURI("file", f"file://{rest}", rest)
    if scheme == "synthetic":
        return _parse_synthetic(text, rest)
    raise DataError(f"unknown source scheme {scheme}://: supported are {SUPPORTED}")


def synthetic_uri(params: Mapping[str, Any]) -> str:
    """The canonical ``synthetic://`` URI of checked parameters (keys of :data:`SYNTHETIC_KEYS`)."""
    shown = [f"{k}={_format_synthetic(k, params[k])}" for k in SYNTHETIC_KEYS if k in params]
    return "synthetic://" + ("?" + "&".join(shown) if shown else "")


def redact(uri: str) -> str:
    """``rtsp://user:secret@host/x`` → ``rtsp://user:***@host/x`` for messages and reports."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    user = parts.username or ""
    netloc = f"{user}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _parse_gst(pipeline: str) -> ParsedURI:
    if not pipeline:
        raise DataError("gst: needs a pipeline: gst:videotestsrc ! videoconvert ! appsink")
    if "\n" in pipeline:
        pipeline = " ".join(pipeline.split())
    last = pipeline.split("!")[-1].split()
    if not last or last[0] != "appsink":
        raise DataError(f"a gst: pipeline must end in appsink (… ! appsink), got gst:{pipeline}")
    return ParsedURI("gst", f"gst:{pipeline}", pipeline)


def _parse_synthetic(text: str, rest: str) -> ParsedURI:
    where, _, query = rest.partition("?")
    if where.strip("/"):
        raise DataError(
            f"synthetic:// takes only parameters (synthetic://?size=256&fps=30), got {text}"
        )
    params: dict[str, Any] = {}
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        if key not in SYNTHETIC_KEYS:
            raise DataError(
                f"unknown synthetic:// parameter {key!r}: known are {', '.join(SYNTHETIC_KEYS)}"
            )
        if not eq or not value.strip():
            raise DataError(f"synthetic:// parameter {key} needs a value ({key}=…)")
        if key in params:
            raise DataError(f"synthetic:// parameter {key} given twice")
        params[key] = _synthetic_value(key, value.strip())
    return ParsedURI("synthetic", synthetic_uri(params), "", params)


def _synthetic_value(key: str, value: str) -> Any:
    bad = f"synthetic:// {key}={value} is not valid: "
    if key == "size":
        return parse_hw(value, what="synthetic:// size", minimum=8)
    if key in ("fps", "speed"):
        try:
            number = float(value)
        except ValueError:
            raise DataError(bad + "not a number") from None
        if not math.isfinite(number) or number < 0 or (key == "fps" and number == 0):
            raise DataError(bad + ("give frames per second > 0" if key == "fps" else "give ≥ 0"))
        return number
    try:
        integer = int(value)
    except ValueError:
        raise DataError(bad + "not an integer") from None
    allowed = {"bit_depth": (8, 16), "channels": (1, 3)}.get(key)
    if allowed is not None and integer not in allowed:
        raise DataError(bad + f"give {' or '.join(map(str, allowed))}")
    if key == "frames" and integer < 1:
        raise DataError(bad + "give at least 1 frame")
    if key == "seed" and integer < 0:
        raise DataError(bad + "give a seed ≥ 0")
    return integer


def _format_synthetic(key: str, value: Any) -> str:
    if key == "size":
        return format_hw(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
