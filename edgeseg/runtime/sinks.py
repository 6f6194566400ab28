"""Where rendered frames go: a window, a video file, label maps, a CSV, an MJPEG HTTP stream.

Every sink has ``write(index, rendered, labels, record)`` and ``close()``:

- ``index``: the frame's number in the run;
- ``rendered``: uint8 array (H, W, 3), RGB, the overlay as shown;
- ``labels``: uint8 array (H, W), the label map (0 background);
- ``record``: plain per-frame data (timings in ms, counts), what :class:`CsvSink` writes.

``close()`` is idempotent and sinks are context managers. A write that fails (disk full, the
folder removed) raises :class:`~edgeseg.errors.DataError`; what was written before stays valid
(the video is finalized on close, every mask file is complete, the CSV ends with a whole row).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import socket
import socketserver
import struct
import sys
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeseg.errors import DataError, MissingDependencyError
from edgeseg.hardware import opencv_has_gui
from edgeseg.imageio import write_image
from edgeseg.optional import cv2

__all__ = [
    "CSV_FIELDS",
    "CsvSink",
    "MaskSink",
    "MjpegServer",
    "Sink",
    "VideoSink",
    "WindowSink",
    "parse_stream_address",
]

# The per-frame CSV columns the pipeline writes (a caller may pass its own list).
CSV_FIELDS = (
    "frame",
    "timestamp_s",
    "preprocess_ms",
    "inference_ms",
    "postprocess_ms",
    "render_ms",
    "latency_ms",
    "objects",
    "dropped",
)
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_VIDEO_FPS = 25.0
_GUI_HINT = (
    "pip uninstall -y opencv-python-headless && pip install 'edgeseg[gui]' (replaces "
    "opencv-python-headless), or run with --headless / --stream"
)


@runtime_checkable
class Sink(Protocol):
    """What the pipeline writes rendered frames to."""

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None: ...

    def close(self) -> None: ...


class _SinkBase:
    """Context-manager plumbing and the closed flag shared by every sink."""

    closed = False

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise DataError(f"{type(self).__name__} is closed")

    def _rendered(self, rendered: np.ndarray) -> np.ndarray:
        """The rendered frame a write was given, checked; raises when the sink is closed."""
        self._check_open()
        if rendered.ndim != 3 or rendered.shape[2] != 3 or rendered.dtype != np.uint8:
            raise DataError(
                "expected a rendered uint8 (H, W, 3) RGB frame, "
                f"got {rendered.dtype} {rendered.shape}"
            )
        return rendered


def _check_labels(labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise DataError(f"expected uint8 (H, W) labels, got {labels.dtype} {labels.shape}")
    return labels


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------------------------
# Video file


class VideoSink(_SinkBase):
    """Record rendered frames to ``.mp4`` (codec mp4v) or ``.avi`` (Motion JPEG) with OpenCV.

    The frame size is the first frame's; a later frame of another size is resized to it (and
    one warning is added to :attr:`warnings`). ``fps`` may be 0 at construction and set on the
    attribute before the first frame (a camera's rate is known only once it is open); still 0
    at the first frame means 25. The codec is checked at construction, so an unusable one
    fails before the camera opens. :meth:`close` finalizes the file (an ``.mp4`` is unplayable
    until then; the pipeline closes its sinks however a run ends).
    """

    def __init__(self, path: str | Path, fps: float = 0.0) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.warnings: list[str] = []
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height)
        self._writer: Any = None
        self._finalizer: weakref.finalize | None = None
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise DataError(
                f"cannot record to {self.path}: use a .mp4 or .avi file "
                f"(got {self.path.suffix or 'no suffix'})"
            )
        if not math.isfinite(self.fps) or self.fps < 0:
            raise DataError(f"video frame rate must be positive, got {fps}")
        self.fourcc = VIDEO_CODECS[suffix]
        if self.path.is_dir():
            raise DataError(f"cannot record to {self.path}: it is a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {self.path.parent}: {_os_reason(exc)}") from exc
        if not os.access(self.path.parent, os.W_OK):
            raise DataError(f"cannot record to {self.path}: {self.path.parent} is not writable")
        self._probe_codec()

    def _open_writer(self, path: Path, size: tuple[int, int], fps: float) -> Any:
        cv = cv2()
        fourcc = cv.VideoWriter_fourcc(*self.fourcc)
        registry = getattr(cv, "videoio_registry", None)
        if registry is not None and registry.hasBackend(cv.CAP_FFMPEG):
            return cv.VideoWriter(str(path), cv.CAP_FFMPEG, fourcc, fps, size)
        return cv.VideoWriter(str(path), fourcc, fps, size)

    def _cannot_open(self) -> DataError:
        if self.fourcc == "mp4v":
            return DataError(
                f"this OpenCV cannot write MPEG-4 video to {self.path}; record to an .avi "
                f"(Motion JPEG) instead, e.g. --record {self.path.with_suffix('.avi')}"
            )
        return DataError(f"this OpenCV cannot write Motion JPEG video to {self.path}")

    def _probe_codec(self) -> None:
        """Open and discard a tiny writer with the same codec, away from the target path."""
        with tempfile.TemporaryDirectory(prefix="edgeseg-video-") as tmp:
            writer = self._open_writer(Path(tmp) / f"probe{self.path.suffix}", (64, 64), 25.0)
            ok = writer.isOpened()
            writer.release()
        if not ok:
            raise self._cannot_open()

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        frame = self._rendered(rendered)
        cv = cv2()
        h, w = frame.shape[:2]
        if self._writer is None:
            fps = self.fps if self.fps > 0 else DEFAULT_VIDEO_FPS
            self.size = (w, h)
            writer = self._open_writer(self.path, (w, h), fps)
            if not writer.isOpened():
                writer.release()
                raise self._cannot_open()
            self._writer = writer
            # An interpreter exit without close() (an uncaught error elsewhere) still
            # finalizes the file.
            self._finalizer = weakref.finalize(self, writer.release)
        elif (w, h) != self.size:
            if not self.warnings:
                self.warnings.append(
                    f"{self.path.name}: frame {index} is {w}x{h}, the video "
                    f"{self.size[0]}x{self.size[1]}; later frames of another size are resized"
                )
            frame = cv.resize(frame, self.size, interpolation=cv.INTER_AREA)
        if not self.path.exists():
            raise DataError(f"{self.path} was removed while recording")
        # OpenCV's VideoWriter reports no write errors; a full disk shows on close.
        self._writer.write(cv.cvtColor(frame, cv.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._writer is None:
            return
        self._writer.release()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._writer = None
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise DataError(f"{self.path} is missing after recording: {_os_reason(exc)}") from exc
        if size == 0:
            raise DataError(f"{self.path} is empty after recording {self.frames} frames")


# --------------------------------------------------------------------------------------------
# Label maps


class MaskSink(_SinkBase):
    """Lossless label maps, one file a frame: ``folder/000123.png`` (or ``.tif``).

    The files hold the label values themselves (0 background, 1 the foreground of a one-class
    model, 1..K-1 the classes otherwise), so they look black in an image viewer;
    :func:`edgeseg.imageio.read_image` and any image library read them back exactly.
    Each file is written under a temporary name and renamed, so a file either is complete or
    does not exist.
    """

    def __init__(self, folder: str | Path, fmt: str = "png") -> None:
        self.folder = Path(folder)
        fmt = fmt.lower().lstrip(".")
        if fmt == "tiff":
            fmt = "tif"
        if fmt not in ("png", "tif"):
            raise DataError(f"mask format must be png or tif, got {fmt!r}")
        self.fmt = fmt
        self.frames = 0
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"cannot save masks to {self.folder}: it is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {self.folder}: {_os_reason(exc)}") from exc

    def path_for(self, index: int) -> Path:
        return self.folder / f"{index:06d}.{self.fmt}"

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        self._check_open()
        labels = _check_labels(labels)
        if index < 0:
            raise DataError(f"frame index must be >= 0, got {index}")
        path = self.path_for(index)
        tmp = path.with_name(f".{path.stem}.partial.{self.fmt}")
        try:
            write_image(tmp, np.ascontiguousarray(labels))
            os.replace(tmp, path)
        except Exception as exc:  # OSError, cv2.error, DataError: all mean "not written"
            with contextlib.suppress(OSError):
                tmp.unlink()
            reason = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
            raise DataError(f"cannot write mask {path}: {reason}") from exc
        self.frames += 1


# --------------------------------------------------------------------------------------------
# CSV


class CsvSink(_SinkBase):
    """One CSV row a frame with the ``fields`` of each record, header first.

    Every row is flushed when written, so the file is complete up to the last frame even if
    the process is killed. Fields missing from a record are left empty, keys not in ``fields``
    ignored; floats are written with at most 4 decimals.
    """

    def __init__(self, path: str | Path, fields: Sequence[str] = CSV_FIELDS) -> None:
        self.path = Path(path)
        self.fields = tuple(fields)
        self.rows = 0
        if not self.fields:
            raise DataError("a CSV needs at least one field")
        if self.path.is_dir():
            raise DataError(f"cannot write CSV {self.path}: it is a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise DataError(f"cannot write CSV {self.path}: {_os_reason(exc)}") from exc
        self._writer = csv.writer(self._file)
        self._write_row(self.fields)

    def _write_row(self, row: Sequence[Any]) -> None:
        try:
            self._writer.writerow(row)
            self._file.flush()
        except OSError as exc:
            raise DataError(f"cannot write CSV {self.path}: {_os_reason(exc)}") from exc

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        self._check_open()
        if not self.path.exists():
            raise DataError(f"{self.path} was removed while writing")
        self._write_row([_csv_value(record.get(f)) for f in self.fields])
        self.rows += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()
        except OSError as exc:
            raise DataError(f"cannot write CSV {self.path}: {_os_reason(exc)}") from exc


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return repr(round(value, 4)) if math.isfinite(value) else ""
    return value


# --------------------------------------------------------------------------------------------
# Window


class WindowSink(_SinkBase):
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

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
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


# --------------------------------------------------------------------------------------------
# MJPEG over HTTP


def parse_stream_address(text: str) -> tuple[str, int]:
    """``"8080"`` → ("127.0.0.1", 8080); ``"0.0.0.0:8080"``, ``"host:8080"``, ``"[::1]:8080"``.

    Port 0 asks for any free port. Anything else raises DataError.
    """
    s = str(text).strip()
    bad = DataError(f"bad stream address {text!r}: give PORT, HOST:PORT or [IPv6]:PORT")
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        if not sep or not host:
            raise bad
    elif ":" in s:
        host, _, port = s.partition(":")
        if not host or ":" in port:
            raise bad
    else:
        host, port = "127.0.0.1", s
    if not port.isdigit() or int(port) > 65535:
        raise bad
    return host, int(port)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgeseg</title>
<style>
body{margin:0;background:#111;color:#ddd;font:14px system-ui,sans-serif}
img{display:block;max-width:100vw;max-height:calc(100vh - 2.5em);margin:0 auto}
#stats{padding:.5em 1em;font-family:ui-monospace,monospace;white-space:pre}
</style></head>
<body><img src="/stream.mjpg" alt="edgeseg stream"><div id="stats">waiting for frames</div>
<script>
const el = document.getElementById("stats");
async function poll() {
  try {
    const r = await fetch("/stats.json", {cache: "no-store"});
    const s = await r.json();
    el.textContent = Object.entries(s).map(([k, v]) => k + " " + v).join("   ")
      || "waiting for frames";
  } catch (e) { el.textContent = "stream stopped"; }
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""
_BOUNDARY = "edgesegframe"
_STREAM_SNDBUF = 128 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restarts right after a stop; a listening port still fails
    allow_reuse_port = False  # never share a port with another server
    sink: MjpegServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds on a
        # device without DNS; the name is only used in CGI environments.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that stops reading is dropped, never waited on forever
    server_version = "edgeseg"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request chatter on the console

    def do_GET(self) -> None:
        sink = self.server.sink
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(_PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/stats.json":
            self._send(sink._stats_json(), "application/json")
        elif path == "/frame.jpg":
            _, jpeg = sink._latest_jpeg()
            if jpeg is None:
                self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(jpeg, "image/jpeg")
        elif path == "/stream.mjpg":
            self._stream(sink)
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, sink: MjpegServer) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        # A small send buffer keeps at most about one frame queued in the kernel for a slow
        # client, instead of seconds of them (Linux grows it to megabytes on its own).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STREAM_SNDBUF)
        sink._attach(self.connection)
        try:
            seen = 0
            while True:
                seq = sink._wait_newer(seen, timeout=1.0)
                if seq is None:
                    return  # the server is closing
                if seq == seen:
                    continue
                seq, jpeg = sink._latest_jpeg()
                if jpeg is None:
                    continue
                # Only the newest frame is sent; frames written meanwhile are skipped, so a
                # slow client falls behind in frame rate, never in time.
                self.wfile.write(
                    f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
                self.wfile.flush()
                seen = seq
        except OSError:
            return  # the client went away (or close() shut its socket)
        finally:
            sink._detach(self.connection)


class MjpegServer(_SinkBase):
    """Serve rendered frames as MJPEG over HTTP, from a daemon thread.

    - ``/``: a page showing the stream with live stats;
    - ``/stream.mjpg``: multipart/x-mixed-replace JPEGs; each client gets the newest frame
      when it is ready for one, never a backlog, and a slow client never blocks ``write``;
    - ``/frame.jpg``: the latest frame (503 before the first);
    - ``/stats.json``: the latest record (``{}`` before the first frame).

    Binds ``host`` (127.0.0.1 by default: this machine only); port 0 picks a free port
    (see :attr:`port`, :attr:`url`). A frame is JPEG-encoded at most once, right in
    :meth:`write` while a stream client is connected, otherwise only when someone asks.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, quality: int = 80) -> None:
        if not 1 <= quality <= 100:
            raise DataError(f"JPEG quality must be between 1 and 100, got {quality}")
        if not 0 <= port <= 65535:
            raise DataError(f"port must be between 0 and 65535, got {port}")
        self.host = host
        self.quality = int(quality)
        self._cond = threading.Condition()
        self._seq = 0
        self._jpeg: bytes | None = None
        self._raw: np.ndarray | None = None
        self._stats = b"{}"
        self._clients: set[socket.socket] = set()
        cls = _Server6 if ":" in host else _Server
        try:
            self._server = cls((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DataError(
                    f"port {port} is in use on {host}; pick another with --stream PORT"
                ) from None
            raise DataError(f"cannot serve on {host}:{port}: {_os_reason(exc)}") from None
        self._server.sink = self
        self.port: int = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"edgeseg-mjpeg-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def clients(self) -> int:
        """How many clients are watching the stream now."""
        with self._cond:
            return len(self._clients)

    def write(
        self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
    ) -> None:
        frame = self._rendered(rendered)
        stats = json.dumps(_json_value(dict(record))).encode()
        if self._clients:  # someone is watching: encode once, here, for all of them
            jpeg, raw = self._encode(frame), None
        else:  # nobody is: keep a copy, encoded only if asked for
            jpeg, raw = None, frame.copy()
        with self._cond:
            self._seq += 1
            self._jpeg, self._raw, self._stats = jpeg, raw, stats
            self._cond.notify_all()

    def _encode(self, frame: np.ndarray) -> bytes:
        cv = cv2()
        ok, buf = cv.imencode(
            ".jpg",
            cv.cvtColor(frame, cv.COLOR_RGB2BGR),
            [cv.IMWRITE_JPEG_QUALITY, self.quality],
        )
        if not ok:
            raise DataError("cannot encode the frame as JPEG")
        return buf.tobytes()

    def _latest_jpeg(self) -> tuple[int, bytes | None]:
        """(sequence number, JPEG) of the newest frame, encoding it now if nobody has yet."""
        with self._cond:
            seq, jpeg, raw = self._seq, self._jpeg, self._raw
        if jpeg is None and raw is not None:
            jpeg = self._encode(raw)  # outside the lock: write() never waits on an encode
            with self._cond:
                if self._seq == seq:
                    self._jpeg, self._raw = jpeg, None
        return seq, jpeg

    def _wait_newer(self, seen: int, timeout: float) -> int | None:
        """The newest sequence number once it differs from ``seen`` (or after ``timeout``);
        None once the server is closing."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq != seen or self.closed, timeout)
            return None if self.closed else self._seq

    def _stats_json(self) -> bytes:
        with self._cond:
            return self._stats

    def _attach(self, conn: socket.socket) -> None:
        with self._cond:
            self._clients.add(conn)

    def _detach(self, conn: socket.socket) -> None:
        with self._cond:
            self._clients.discard(conn)

    def close(self) -> None:
        """Stop serving and disconnect every client; idempotent."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            clients = list(self._clients)
            self._cond.notify_all()
        for conn in clients:
            with contextlib.suppress(OSError):
                # Reset rather than drain what a slow client has not read yet, and wake its
                # handler if it is blocked sending.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
