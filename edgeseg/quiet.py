"""A quiet console: what TensorFlow and its company print goes to a log file.

TensorFlow, absl, oneDNN, the TFLite converter (its "Saved artifact at …" dumps), tf2onnx,
LiteRT and Keras write from C++ and Python straight to the process's file descriptors 1 and
2, so replacing ``sys.stdout`` is not enough. Inside :func:`quiet`:

- file descriptors 1 and 2 point at the log file (``os.dup2``; child processes inherit them);
- ``sys.stdout`` and ``sys.stderr`` write to the log too, and so do Python warnings and the
  loggers of :data:`NOISY_LOGGERS` (absl, tensorflow, keras, tf2onnx, h5py);
- the terminal stays reachable through :attr:`Quiet.stdout` and :attr:`Quiet.stderr`: text
  streams on duplicates of the original descriptors, or the original stream objects when
  those were not descriptors 1 and 2 (a test runner's buffers, which the redirection does not
  touch). edgeseg's own consoles print there.

Everything is restored on the way out, on errors and on Ctrl-C too; C's stdio buffers are
flushed into the log first. Nested blocks share the outer one's log. With ``verbose=True``
(``edgeseg --verbose``, or ``EDGESEG_VERBOSE=1``) nothing is redirected: all shows live.

Log files are named ``edgeseg-<command>-<timestamp>.log`` (:func:`new_log_path`): in the
command's output folder when it has one, else in ``$XDG_CACHE_HOME/edgeseg/logs/``
(``~/.cache/edgeseg/logs/``). A folder keeps the newest :data:`KEEP_LOGS` of them, and a log
over :data:`MAX_LOG_BYTES` keeps its head and its tail.

Only the standard library is imported here: ``import edgeseg`` and ``edgeseg --help`` stay
light.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "ENV_VERBOSE",
    "KEEP_LOGS",
    "MAX_LOG_BYTES",
    "NOISY_LOGGERS",
    "Quiet",
    "active",
    "cache_log_dir",
    "is_log_file",
    "new_log_path",
    "quiet",
    "verbose_from_env",
]

ENV_VERBOSE = "EDGESEG_VERBOSE"
KEEP_LOGS = 8
MAX_LOG_BYTES = 8 * 1024 * 1024
NOISY_LOGGERS = ("absl", "tensorflow", "keras", "tf2onnx", "h5py")
_LOG_NAME = re.compile(r"^edgeseg-.+\.log$")


@dataclass(frozen=True)
class Quiet:
    """An active :func:`quiet` block.

    Attributes:
        log_path: where the hidden output goes; None when nothing is hidden (verbose).
        verbose: True when everything shows live.
        stdout: writes to the terminal's (the original) standard output.
        stderr: writes to the terminal's (the original) standard error.
    """

    log_path: Path | None
    verbose: bool
    stdout: TextIO
    stderr: TextIO


_active: Quiet | None = None


def active() -> Quiet | None:
    """The :func:`quiet` block in force, if any."""
    return _active


def verbose_from_env() -> bool:
    """True when ``EDGESEG_VERBOSE`` is set to anything but empty, 0, false, no or off."""
    value = os.environ.get(ENV_VERBOSE, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def cache_log_dir() -> Path:
    """``$XDG_CACHE_HOME/edgeseg/logs`` (``~/.cache/edgeseg/logs`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "edgeseg" / "logs"


def is_log_file(path: Path) -> bool:
    """True for a log file this module names (``edgeseg-….log``)."""
    return bool(_LOG_NAME.match(path.name)) and path.is_file()


def new_log_path(command: str, folder: Path | None = None) -> Path | None:
    """Create an empty ``edgeseg-<command>-<timestamp>.log`` and return its path.

    It goes in ``folder`` (created if needed) when that can be written, else in
    :func:`cache_log_dir`, else in the temporary folder; None when none can be written. The
    folder keeps the newest :data:`KEEP_LOGS` edgeseg logs; older ones are deleted.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", command).strip("-") or "command"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    places = [p for p in (folder, cache_log_dir(), Path(tempfile.gettempdir())) if p is not None]
    for place in places:
        try:
            place.mkdir(parents=True, exist_ok=True)
            path = _create(place, f"edgeseg-{slug}-{stamp}")
        except OSError:
            continue
        _prune(place, KEEP_LOGS)
        return path
    return None


@contextlib.contextmanager
def quiet(log_path: str | Path | None, verbose: bool = False) -> Iterator[Quiet]:
    """Send everything but edgeseg's own lines to ``log_path`` for the block (see the module
    docstring). ``log_path`` None or ``verbose``: show it all live. (The command line adds
    ``EDGESEG_VERBOSE``: :func:`verbose_from_env`.)"""
    global _active
    if _active is not None:  # nested: the outer block's log
        yield _active
        return
    if verbose or log_path is None:
        _active = Quiet(None, True, sys.stdout, sys.stderr)
        try:
            yield _active
        finally:
            _active = None
        return
    with _capture(Path(log_path)) as session:
        _active = session
        try:
            yield session
        finally:
            _active = None


# --------------------------------------------------------------------------------------------
# Internals


class _Forward(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` during a block: writes go to the log while the block
    lasts and to the stream it replaced afterwards, so a handler that TensorFlow binds to
    ``sys.stderr`` during the block keeps working once it is over."""

    def __init__(self, log: TextIO, fallback: Any) -> None:
        self.log: TextIO | None = log
        self.fallback = fallback

    def _target(self) -> Any:
        return self.log if self.log is not None else self.fallback

    def write(self, text: str) -> int:
        target = self._target()
        if target is None:
            return len(text)
        target.write(text)
        return len(text)

    def flush(self) -> None:
        _flush(self._target())

    def isatty(self) -> bool:
        target = self._target()
        return bool(target is not None and self.log is None and target.isatty())

    def fileno(self) -> int:
        target = self._target()
        if target is None:
            raise io.UnsupportedOperation("fileno")
        return int(target.fileno())

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._target(), "encoding", None) or "utf-8")


@contextlib.contextmanager
def _capture(path: Path) -> Iterator[Quiet]:
    orig_out, orig_err = sys.stdout, sys.stderr
    _flush(orig_out, orig_err)
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    saved: dict[int, int] = {}
    opened: list[TextIO] = []
    log = io.TextIOWrapper(
        io.FileIO(os.dup(log_fd), "w"), encoding="utf-8", errors="replace", write_through=True
    )
    log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
    forwards = (_Forward(log, orig_out), _Forward(log, orig_err))
    showwarning = warnings.showwarning
    loggers: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    try:
        for fd in (1, 2):
            try:
                saved[fd] = os.dup(fd)
            except OSError:  # closed: nothing to protect, nothing to show
                continue
            os.dup2(log_fd, fd)
        term_out = _terminal(orig_out, 1, saved, opened)
        term_err = _terminal(orig_err, 2, saved, opened)
        sys.stdout, sys.stderr = forwards

        def to_log(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
            log.write(warnings.formatwarning(message, category, filename, lineno))

        warnings.showwarning = to_log
        # Loggers that exist already may hold the terminal; those made later bind to sys.*.
        existing = logging.Logger.manager.loggerDict
        for name in NOISY_LOGGERS:
            logger = existing.get(name)
            if isinstance(logger, logging.Logger):
                loggers.append((logger, list(logger.handlers), logger.propagate))
                logger.handlers = [handler]
                logger.propagate = False
        yield Quiet(path, False, term_out, term_err)
    finally:
        _flush(sys.stdout, sys.stderr, orig_out, orig_err, sys.__stdout__, sys.__stderr__)
        _flush_c_stdio()  # C's buffered printf output belongs to the log
        for forward in forwards:
            forward.log = None
        if sys.stdout is forwards[0]:
            sys.stdout = orig_out
        if sys.stderr is forwards[1]:
            sys.stderr = orig_err
        if warnings.showwarning is not showwarning:
            warnings.showwarning = showwarning
        for logger, handlers, propagate in loggers:
            logger.handlers = handlers
            logger.propagate = propagate
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        for stream in opened:
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        with contextlib.suppress(OSError, ValueError):
            log.close()
        os.close(log_fd)
        _bound(path, MAX_LOG_BYTES)


def _terminal(stream: Any, fd: int, saved: dict[int, int], opened: list[TextIO]) -> TextIO:
    """A text stream to where ``stream`` wrote before descriptor ``fd`` was redirected."""
    if stream is None:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed when the block ends
        opened.append(devnull)
        return devnull
    try:
        backed = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        backed = False
    if not backed or fd not in saved:
        return stream  # an object of its own (a test runner's buffer): fd untouched for it
    term = io.TextIOWrapper(
        io.FileIO(saved[fd], "w", closefd=False),
        encoding=getattr(stream, "encoding", None) or "utf-8",
        errors=getattr(stream, "errors", None) or "replace",
        write_through=True,
    )
    opened.append(term)
    return term


def _flush(*streams: Any) -> None:
    for stream in streams:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()


def _flush_c_stdio() -> None:
    if os.name == "nt":
        return
    with contextlib.suppress(Exception):  # no libc to find: nothing buffered there either
        import ctypes

        ctypes.CDLL(None).fflush(None)


def _create(folder: Path, stem: str) -> Path:
    for i in range(1, 1000):
        path = folder / (f"{stem}.log" if i == 1 else f"{stem}-{i}.log")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        return path
    raise OSError(f"too many logs named {stem} in {folder}")


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` edgeseg logs of ``folder``."""
    try:
        logs = [p for p in folder.iterdir() if is_log_file(p)]
        logs.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    except OSError:
        return
    for old in logs[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


def _bound(path: Path, limit: int) -> None:
    """Cut a log over ``limit`` bytes to its first quarter and last three quarters."""
    try:
        size = path.stat().st_size
        if size <= limit:
            return
        head_n, tail_n = limit // 4, limit - limit // 4
        with open(path, "rb") as f:
            head = f.read(head_n)
            f.seek(size - tail_n)
            tail = f.read()
        cut = f"\n[… {size - head_n - tail_n} bytes cut by edgeseg …]\n".encode()
        with open(path, "wb") as f:
            f.write(head + cut + tail)
    except OSError:
        return
