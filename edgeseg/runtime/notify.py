"""systemd's notify protocol, spoken by `edgeseg run` under a ``Type=notify`` unit.

systemd passes the address of a datagram socket in ``$NOTIFY_SOCKET`` (a path, or an abstract
address written with a leading ``@``) and, when the unit has ``WatchdogSec=``, the watchdog's
period in ``$WATCHDOG_USEC`` (for the process ``$WATCHDOG_PID``, when set). The process sends
newline-separated ``KEY=VALUE`` lines in one datagram each (sd_notify(3)): no daemon library is
needed, and without ``$NOTIFY_SOCKET`` every call here does nothing.

- :class:`Notifier`: the socket; ``READY=1``, ``WATCHDOG=1``, ``STATUS=…``, ``STOPPING=1``.
- :class:`Watchdog`: a sink that hears every rendered frame and every change of the source's
  status, and pets the watchdog from its own thread every half period **only while the
  pipeline moves**: a frame was rendered within the last half period, the source is lost and
  being reopened (working, not hung), or no frame is in flight (waiting on a slow source, a
  time-lapse). A pipeline that stops moving (inference stuck in a driver,
  a deadlock, a sink that blocks) stops the pets within half a period, and systemd restarts it
  one period later. It also keeps ``STATUS=`` current ("12.3 FPS, 1234 frames, 0 dropped",
  "camera lost, retrying since 14:02:11") and says ``STOPPING=1`` once the run is stopping.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from edgeseg.runtime.sinks.base import Record, SinkBase, record_fields

__all__ = ["Notifier", "Watchdog", "watchdog_seconds"]

# How often STATUS= is refreshed while frames flow (seconds).
_STATUS_EVERY_S = 5.0
# How often the petting thread looks (seconds): how late STOPPING=1 may come.
_TICK_S = 0.1


def watchdog_seconds(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period systemd asks for (``$WATCHDOG_USEC``), in seconds; None when there
    is none, or when ``$WATCHDOG_PID`` names another process (a child started by the service)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


class Notifier:
    """The notify socket of ``address`` (default ``$NOTIFY_SOCKET``); does nothing without one.

    ``enabled`` says there is an address to talk to. A message that cannot be sent (systemd
    gone, the socket full) is dropped: being watched is never a reason for a run to fail.
    ``sent`` counts the datagrams sent.
    """

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET") or None
        self.address = address
        self.sent = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._target = ""
        if address and address[0] in "/@" and len(address) > 1:
            # Sent to by address every time (as sd_notify does), not connected: a systemd
            # re-executed meanwhile has a new socket at the same address.
            self._target = "\0" + address[1:] if address.startswith("@") else address
            with contextlib.suppress(OSError):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)  # never stall the pipeline on a full socket
                self._sock = sock

    @property
    def enabled(self) -> bool:
        """Whether there is a notify address (a path or an abstract ``@name``) to send to."""
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram of ``KEY=VALUE`` lines (``send(READY=1, STATUS="…")``); whether sent."""
        if self._sock is None or not fields:
            return False
        text = "\n".join(f"{k}={' '.join(str(v).split())}" for k, v in fields.items())
        with self._lock:
            if self._sock is None:
                return False
            try:
                self._sock.sendto(text.encode("utf-8", "replace"), self._target)
            except OSError:
                return False
            self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class Watchdog(SinkBase):
    """Pets systemd's watchdog while the pipeline moves; a sink (add it after the outputs).

    ``period`` is the watchdog's period in seconds (``WatchdogSec``; default
    :func:`watchdog_seconds`; None: no pets, only READY/STATUS/STOPPING). :meth:`start` says
    ``READY=1`` (call it once the model is loaded and the source is open or being retried) and
    starts the petting thread; every ``period / 2`` it sends ``WATCHDOG=1`` if a frame was
    rendered within the last half period (READY counts as one), if the source is lost and
    being reopened, or if no frame is in flight: ``in_flight()`` (the frames inference has
    taken from the capture so far) is not ahead of the frames rendered, so the run is waiting
    on a slow source, not stuck. A frame taken and not rendered for half a period (inference
    stuck, a deadlock, a sink that blocks) stops the pets. ``stop`` (an Event: the run's) set,
    or :meth:`close`, says ``STOPPING=1`` once. ``clock`` is for tests.
    """

    def __init__(
        self,
        notifier: Notifier,
        period: float | None = None,
        *,
        stop: threading.Event | None = None,
        what: str = "frames",
        in_flight: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self._taken = in_flight
        self.period = watchdog_seconds() if period is None else period
        self.pets = 0
        self._stop = stop or threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._frames = 0
        self._dropped = 0
        self._last_frame: float | None = None
        self._recent: list[float] = []
        self._lost: str | None = None
        self._said_stopping = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._what = what

    # -- what the pipeline tells a sink ----------------------------------------------------

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
        now = self._clock()
        dropped = record_fields(record).get("dropped", 0)
        with self._lock:
            self._frames += 1
            self._dropped = int(dropped or 0)
            self._last_frame = now
            self._recent.append(now)
            if len(self._recent) > 30:
                del self._recent[:-30]

    def status(self, message: str | None) -> None:
        with self._lock:
            self._lost = message
        self.notifier.status(message or self._flowing())

    # -- the petting thread ----------------------------------------------------------------

    def start(self, status: str | None = None) -> Watchdog:
        """Say READY=1 (with ``status``) and start petting; returns self."""
        with self._lock:
            self._last_frame = self._clock()  # READY counts as progress: the first frame may
            # take a warm-up inference
        self.notifier.ready(status or "running, waiting for the first frame")
        self._thread = threading.Thread(target=self._loop, name="edgeseg-watchdog", daemon=True)
        self._thread.start()
        return self

    def moving(self) -> bool:
        """Whether the pipeline moves: a frame rendered within the last half period, the
        source being reopened, or nothing in flight (waiting on a slow source, such as a
        time-lapse: a source that hangs is the capture's read timeout's to notice)."""
        with self._lock:
            if self._lost is not None:
                return True
            half = (self.period or _STATUS_EVERY_S) / 2
            if self._last_frame is not None and self._clock() - self._last_frame <= half:
                return True
            rendered = self._frames
        return self._taken is not None and self._taken() <= rendered

    def _loop(self) -> None:
        half = self.period / 2 if self.period else None
        next_pet = self._clock() + half if half else None
        next_status = self._clock() + _STATUS_EVERY_S
        while not self._done.wait(_TICK_S):
            if self._stop.is_set():
                self._say_stopping()
                return
            now = self._clock()
            if next_pet is not None and half is not None and now >= next_pet:
                next_pet = now + half
                if self.moving() and self.notifier.watchdog():
                    self.pets += 1
            if now >= next_status:
                next_status = now + _STATUS_EVERY_S
                with self._lock:
                    lost = self._lost
                if lost is None:
                    self.notifier.status(self._flowing())

    def _flowing(self) -> str:
        with self._lock:
            n, dropped, recent = self._frames, self._dropped, list(self._recent)
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
        if recent and recent[-1] - recent[0] > 0 and self._clock() - recent[-1] > 5.0:
            fps = 0.0
        return f"{fps:.1f} FPS, {n} {self._what}, {dropped} dropped"

    def _say_stopping(self) -> None:
        with self._lock:
            if self._said_stopping:
                return
            self._said_stopping = True
        self.notifier.stopping(f"stopping after {self._frames} {self._what}")

    def close(self) -> None:
        """Stop petting and say STOPPING=1 (once); idempotent."""
        if self.closed:
            return
        self.closed = True
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._say_stopping()
