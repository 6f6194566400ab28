"""The MJPEG sink: rendered frames served over HTTP with a page, live stats, a chart and the
source's status (:class:`MjpegServer`), the run's ``/metrics`` and the recordings' folder; what
guards it: the address rule (:func:`is_loopback`, :func:`parse_stream_address`) and the token
kept on disk (:func:`stream_token`); and the addresses others can open it at
(:func:`reachable_hosts`)."""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import json
import math
import os
import re
import secrets
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

import numpy as np

from edgeseg.errors import DataError
from edgeseg.optional import cv2
from edgeseg.paths import atomic_path
from edgeseg.runtime.sinks.base import Record, SinkBase, os_reason, record_fields
from edgeseg.runtime.sinks.page import listing_page, stream_page

__all__ = [
    "MetricsSource",
    "MjpegServer",
    "is_loopback",
    "parse_stream_address",
    "reachable_hosts",
    "stream_token",
    "token_dir",
]


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


_BOUNDARY = "edgesegframe"
_STREAM_SNDBUF = 128 * 1024
_TOKEN_COOKIE = "edgeseg_token"
_TOKEN_FILE = "stream-token"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.~-]{16,256}")
_UNAUTHORIZED = (
    b"401 Unauthorized: this stream needs its token; open the address edgeseg printed at "
    b"start-up (.../?token=...)\n"
)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 (also as
    ::ffff:127.x) and ``localhost``."""
    name = host.strip().strip("[]").split("%", 1)[0]
    if name.lower() in ("localhost", "localhost."):
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


_WILDCARDS = ("", "0.0.0.0", "::", "::0")
_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
# Seconds of history kept for the page's chart (one point a second).
_HISTORY_S = 300
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class MetricsSource(Protocol):
    """What serves ``/metrics``: its text and content type
    (:class:`~edgeseg.runtime.metrics.RunMetrics`)."""

    content_type: str

    def exposition(self) -> bytes: ...


def _interface_ipv4() -> list[str]:
    """The IPv4 addresses of this machine's interfaces, loopback left out (Linux ioctl)."""
    if not sys.platform.startswith("linux"):
        return []
    import fcntl

    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = struct.pack("256s", name.encode()[:15])
                raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, packed)
            except OSError:
                continue  # no IPv4 address on it, or it is down
            addr = socket.inet_ntoa(raw[20:24])
            if not ipaddress.ip_address(addr).is_loopback and addr not in found:
                found.append(addr)
    return found


def _interface_ipv6(root: str = "/") -> list[str]:
    """The global IPv6 addresses of this machine (``/proc/net/if_inet6``, scope 0)."""
    found: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path(root, "proc/net/if_inet6").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[3] == "00":
                addr = str(ipaddress.ip_address(bytes.fromhex(parts[0])))
                if addr not in found:
                    found.append(addr)
    return found


def reachable_hosts(bound: str) -> list[str]:
    """Where others can open a server bound to ``bound``: for a wildcard (0.0.0.0, ::) this
    machine's host name, then its interface addresses (IPv6 ones too for ::), loopback left
    out; else ``bound`` itself. Never empty (falls back to ``bound``)."""
    host = bound.strip().strip("[]")
    if host not in _WILDCARDS:
        return [host]
    names: list[str] = []
    with contextlib.suppress(OSError):
        name = socket.gethostname()
        if name and not is_loopback(name):
            names.append(name)
    names += _interface_ipv4()
    if ":" in host:
        names += _interface_ipv6()
    return names or [host or "0.0.0.0"]


def token_dir() -> Path:
    """Where the stream token is kept: ``$XDG_CONFIG_HOME/edgeseg`` (``~/.config/edgeseg``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "edgeseg"


def stream_token(folder: str | Path | None = None) -> str:
    """The stream token kept in ``folder/stream-token`` (default :func:`token_dir`); created
    with mode 0600 (its folder 0700) on first use, read back on every later start."""
    folder = Path(folder) if folder is not None else token_dir()
    path = folder / _TOKEN_FILE
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise DataError(
            f"cannot read the stream token {path}: {os_reason(exc)}; pass a token instead"
        ) from exc
    if _TOKEN_CHARS.fullmatch(text):
        with contextlib.suppress(OSError):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)  # readable by others: only its owner should see it
        return text
    token = secrets.token_urlsafe(32)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Published durably: never a half-written token, even after a power cut.
        with atomic_path(path, mode=0o600) as tmp:
            os.chmod(tmp, 0o600)  # whatever the umask: its owner reads and writes it
            tmp.write_bytes((token + "\n").encode("ascii"))
    except OSError as exc:
        raise DataError(
            f"cannot keep a stream token in {path}: {os_reason(exc)}; pass a token instead"
        ) from exc
    return token


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

    def _authorized(self, query: str) -> bool:
        """The request carries the server's token (query, bearer header or cookie)."""
        token = self.server.sink.token
        if token is None:
            return True
        offered = list(parse_qs(query).get("token", []))
        scheme, _, value = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip())
        with contextlib.suppress(CookieError):
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
            if _TOKEN_COOKIE in cookie:
                offered.append(cookie[_TOKEN_COOKIE].value)
        want = token.encode()
        # Every candidate is compared, in constant time each.
        return any([hmac.compare_digest(o.encode("utf-8", "replace"), want) for o in offered])

    def do_GET(self) -> None:
        sink = self.server.sink
        path, _, query = self.path.partition("?")
        if not self._authorized(query):
            self.send_response(HTTPStatus.UNAUTHORIZED)
            self.send_header("WWW-Authenticate", 'Bearer realm="edgeseg"')
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(_UNAUTHORIZED)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(_UNAUTHORIZED)
            return
        if path == "/metrics" and sink.metrics is not None:
            self._send(sink.metrics.exposition(), sink.metrics.content_type)
        elif path == "/recordings" and sink.recordings is not None:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", "/recordings/" + (f"?{query}" if query else ""))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith("/recordings/") and sink.recordings is not None:
            self._recording(sink, unquote(path[len("/recordings/") :]))
        elif not sink.frames:
            self.send_error(HTTPStatus.NOT_FOUND)
        elif path in ("/", "/index.html"):
            q = f"?token={sink.token}" if sink.token else ""
            page = stream_page(
                q, metrics=sink.metrics is not None, recordings=sink.recordings is not None
            )
            self._send(page, "text/html; charset=utf-8")
        elif path == "/stats.json":
            self._send(sink._stats_json(), "application/json")
        elif path == "/history.json":
            self._send(sink._history_json(), "application/json")
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

    def _recording(self, sink: MjpegServer, name: str) -> None:
        """The folder's listing (``name`` empty) or one of its closed files."""
        folder = sink.recordings
        assert folder is not None
        q = f"?token={sink.token}" if sink.token else ""
        files = sink._recorded_files()
        if not name:
            page = listing_page(str(folder), files, q)
            self._send(page, "text/html; charset=utf-8")
            return
        # Only a file the listing shows: no path of the client's making is ever opened.
        if name not in {f[0] for f in files}:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            handle = (folder / name).open("rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)  # deleted by the ring meanwhile
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            first, last = 0, size - 1
            # One byte range (what a browser's <video> asks for to seek), else the whole file.
            wanted = _RANGE.fullmatch((self.headers.get("Range") or "").strip())
            if wanted and (wanted.group(1) or wanted.group(2)):
                if wanted.group(1):
                    first = int(wanted.group(1))
                    last = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
                else:  # the last N bytes
                    first = max(0, size - int(wanted.group(2)))
                if first > last or first >= size:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            else:
                self.send_response(HTTPStatus.OK)
            kind = {".mp4": "video/mp4", ".mkv": "video/x-matroska", ".avi": "video/x-msvideo"}
            self.send_header(
                "Content-Type", kind.get(Path(name).suffix, "application/octet-stream")
            )
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(max(0, last - first + 1)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            handle.seek(first)
            left = last - first + 1
            with contextlib.suppress(OSError):
                while left > 0 and (chunk := handle.read(min(1 << 16, left))):
                    self.wfile.write(chunk)
                    left -= len(chunk)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        token = self.server.sink.token
        if token is not None and content_type.startswith("text/html"):
            # The page's own requests (and a reload without ?token=) carry it from now on.
            self.send_header(
                "Set-Cookie", f"{_TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            )
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


class MjpegServer(SinkBase):
    """Serve rendered frames as MJPEG over HTTP, from a daemon thread.

    - ``/``: a page showing the stream with live stats and the source's status;
    - ``/stream.mjpg``: multipart/x-mixed-replace JPEGs; each client gets the newest frame
      when it is ready for one, never a backlog, and a slow client never blocks ``write``;
    - ``/frame.jpg``: the latest frame (503 before the first);
    - ``/stats.json``: the latest record (``{}`` before the first frame), with ``"status"``
      while :meth:`status` has a message.

    Binds ``host`` (127.0.0.1 by default: this machine only); port 0 picks a free port
    (see :attr:`port`, :attr:`url`). A frame is JPEG-encoded at most once, right in
    :meth:`write` while a stream client is connected, otherwise only when someone asks.

    - ``/history.json``: the page's chart: ``{"fps", "outages", "points": [[age_s, fps,
      objects], …]}``, one point a second over the last five minutes, oldest first;
    - ``/metrics``: ``metrics``' text (a :class:`MetricsSource`), when given;
    - ``/recordings/``: a listing of the video files in ``recordings`` (a folder; hidden
      files, such as the segment being written, left out), each file served as it is.

    ``frames=False`` serves only ``/metrics`` (``--metrics HOST:PORT`` without ``--stream``):
    frames written are ignored, the page and the stream answer 404.

    :attr:`urls` are the addresses others can open (:func:`reachable_hosts`: for 0.0.0.0 the
    host name and interface addresses), each with the token; :attr:`url` is the first.

    Bound to a loopback address (127.0.0.0/8, ::1, localhost) the stream is open. Bound to
    any other address it needs a token: ``token``, or the one kept in ``token_folder``
    (default ``$XDG_CONFIG_HOME/edgeseg``, see :func:`stream_token`: made on first use, mode
    0600, the same after a restart). A request without it (``?token=…``, ``Authorization:
    Bearer …`` or the cookie the page sets) gets 401 and never a frame; :attr:`url` then ends
    with ``?token=…`` (print it at start-up). ``require_token`` True or False overrides the
    address rule (a given ``token`` is always required).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        quality: int = 80,
        *,
        token: str | None = None,
        require_token: bool | None = None,
        token_folder: str | Path | None = None,
        metrics: MetricsSource | None = None,
        recordings: str | Path | None = None,
        frames: bool = True,
    ) -> None:
        if not 1 <= quality <= 100:
            raise DataError(f"JPEG quality must be between 1 and 100, got {quality}")
        if not 0 <= port <= 65535:
            raise DataError(f"port must be between 0 and 65535, got {port}")
        if token is not None and not _TOKEN_CHARS.fullmatch(token):
            raise DataError(
                "a stream token must be 16 to 256 URL-safe characters (letters, digits, - _ . ~)"
            )
        self.host = host
        self.quality = int(quality)
        self.token: str | None = None
        self._cond = threading.Condition()
        self._seq = 0
        self._jpeg: bytes | None = None
        self._raw: np.ndarray | None = None
        self._record: dict[str, Any] = {}
        self._status: str | None = None
        self._clients: set[socket.socket] = set()
        self.metrics = metrics
        self.recordings = Path(recordings) if recordings is not None else None
        self.frames = bool(frames)
        self._times: deque[float] = deque(maxlen=10)  # when the last frames were written
        self._history: deque[tuple[float, float, int]] = deque(maxlen=_HISTORY_S)
        self._outages = 0
        cls = _Server6 if ":" in host else _Server
        try:
            self._server = cls((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DataError(
                    f"port {port} is in use on {host}; pick another with --stream PORT"
                ) from None
            raise DataError(f"cannot serve on {host}:{port}: {os_reason(exc)}") from None
        self._server.sink = self
        bound = str(self._server.server_address[0])
        needed = require_token if require_token is not None else not is_loopback(bound)
        if token is not None:
            self.token = token
        elif needed:
            try:
                self.token = stream_token(token_folder)
            except DataError:
                self._server.server_close()
                raise
        self.port: int = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{self.port}/"
        tail = f"?token={self.token}" if self.token else ""
        if not self.frames:
            tail = "metrics" + tail
        self.urls = [
            f"http://{f'[{h}]' if ':' in h else h}:{self.port}/{tail}"
            for h in reachable_hosts(bound)
        ]
        self.url = self.urls[0]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"edgeseg-mjpeg-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def status(self, message: str | None) -> None:
        """The source's state, shown on the page and in ``/stats.json`` (``"status"``):
        None while frames flow, else e.g. ``"camera lost, retrying since 14:02:11"``."""
        with self._cond:
            if message is not None and self._status is None:
                self._outages += 1
            self._status = None if message is None else str(message)

    @property
    def clients(self) -> int:
        """How many clients are watching the stream now."""
        with self._cond:
            return len(self._clients)

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
        frame = self._rendered(rendered)
        if not self.frames:
            return
        stats = _json_value(dict(record_fields(record)))
        self._note(stats)
        if self._clients:  # someone is watching: encode once, here, for all of them
            jpeg, raw = self._encode(frame), None
        else:  # nobody is: keep a copy, encoded only if asked for
            jpeg, raw = None, frame.copy()
        with self._cond:
            self._seq += 1
            self._jpeg, self._raw, self._record = jpeg, raw, stats
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

    def _note(self, stats: Mapping[str, Any]) -> None:
        """Keep the chart's points: one a second (the last frame of that second)."""
        now = time.monotonic()
        objects = stats.get("objects")
        with self._cond:
            self._times.append(now)
            fps = self._fps(now)
            point = (now, fps, int(objects) if isinstance(objects, (int, float)) else 0)
            if self._history and int(self._history[-1][0]) == int(now):
                self._history[-1] = point
            else:
                self._history.append(point)

    def _fps(self, now: float) -> float:
        """(with the lock held) Frames per second over the last 10 frames; 0 after 5 s of none."""
        t = self._times
        if len(t) < 2 or now - t[-1] > 5.0 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    def _history_json(self) -> bytes:
        now = time.monotonic()
        with self._cond:
            points = [[round(now - t, 1), round(f, 2), n] for t, f, n in self._history]
            fps, outages = self._fps(now), self._outages
        points = [p for p in points if p[0] <= _HISTORY_S]
        return json.dumps({"fps": round(fps, 2), "outages": outages, "points": points}).encode()

    def _recorded_files(self) -> list[tuple[str, int, float]]:
        """The recordings' video files (name, bytes, mtime), newest first; hidden ones (the
        segment being written) left out."""
        folder = self.recordings
        if folder is None:
            return []
        found = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in (
                    ".mp4", ".mkv", ".avi", ".mov", ".webm",
                ):  # fmt: skip
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found.append((entry.name, st.st_size, st.st_mtime))
        return sorted(found, key=lambda f: (f[2], f[0]), reverse=True)

    def _stats_json(self) -> bytes:
        with self._cond:
            stats, status = self._record, self._status
        if status is not None:
            stats = {**stats, "status": status}
        return json.dumps(stats).encode()

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
