"""systemd's notify protocol: a socket here plays systemd's part (it receives the datagrams
edgeseg sends to $NOTIFY_SOCKET) while real pipelines run, flow, lose their camera and hang."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import FakeCamera, ListSink, bright_model, edgeseg_subprocess, wait_for

from edgeseg.runtime.notify import Notifier, Watchdog, watchdog_seconds


class FakeSystemd:
    """The receiving end of a notify socket: every datagram, parsed, with its arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address  # what goes into $NOTIFY_SOCKET
        bind = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def times(self, key: str) -> list[float]:
        return [t for t, f in list(self.messages) if key in f]

    def values(self, key: str) -> list[str]:
        return [f[key] for _, f in list(self.messages) if key in f]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


def test_notifier_sends_fields_to_a_path_and_an_abstract_socket(systemd: FakeSystemd) -> None:
    abstract = FakeSystemd(f"@edgeseg-test-{uuid.uuid4().hex}")
    try:
        for fake in (systemd, abstract):
            notifier = Notifier(fake.address)
            assert notifier.enabled
            assert notifier.ready("model loaded")
            assert notifier.watchdog()
            assert notifier.status("camera lost,\nretrying")  # one line, always
            assert notifier.stopping()
            wait_for(lambda fake=fake: len(fake.messages) == 4, timeout=5)
            got = [f for _, f in fake.messages]
            assert got == [
                {"READY": "1", "STATUS": "model loaded"},
                {"WATCHDOG": "1"},
                {"STATUS": "camera lost, retrying"},
                {"STOPPING": "1"},
            ]
            notifier.close()
            assert not notifier.send(WATCHDOG=1)
    finally:
        abstract.close()


def test_without_a_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and not notifier.ready() and not notifier.watchdog()
    # systemd gone (its socket removed): sends fail quietly, never raising into a run
    gone = Notifier("/nonexistent/notify.sock")
    assert gone.enabled and not gone.watchdog() and gone.sent == 0
    assert not Notifier("relative/notify.sock").enabled  # not an address systemd gives


def test_a_notifier_reaches_a_systemd_that_was_re_executed(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    first = FakeSystemd(str(path))
    notifier = Notifier(str(path))
    assert notifier.watchdog()
    wait_for(lambda: len(first.messages) == 1, timeout=5)
    first.close()
    path.unlink()
    assert not notifier.watchdog()  # nobody there: dropped, no error
    second = FakeSystemd(str(path))  # systemctl daemon-reexec: a new socket, same address
    try:
        assert notifier.watchdog()
        wait_for(lambda: second.values("WATCHDOG") == ["1"], timeout=5)
    finally:
        second.close()


def test_watchdog_period_from_the_environment() -> None:
    assert watchdog_seconds({}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_seconds({"WATCHDOG_USEC": "0"}) is None
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_seconds(mine) == 2.0
    # meant for another process (a child that inherited the environment)
    assert watchdog_seconds({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "soon"}) is None


class HangingSegmenter:
    """A segmenter that works ``after`` frames, then hangs (a driver stuck in inference) until
    ``release`` is set; ``hung_at`` is when it started hanging."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner = inner
        self.meta = inner.meta
        self.after = after
        self.calls = 0
        self.release = threading.Event()
        self.hung_at: float | None = None

    def __call__(self, image: np.ndarray) -> Any:
        self.calls += 1
        if self.calls > self.after:
            if self.hung_at is None:
                self.hung_at = time.monotonic()
            self.release.wait()
        return self.inner(image)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bright_model(tmp_path_factory.mktemp("notify") / "bright.tflite", size=32)


def test_a_hung_pipeline_stops_the_pets_within_watchdogsec(
    model: Path, systemd: FakeSystemd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READY once the model and source are open, pets while frames flow, none once inference
    hangs (systemd would restart it), STOPPING when it stops."""
    from edgeseg.session import RunOptions, build_session

    period = 1.0  # WatchdogSec=1
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(period * 1e6)))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    options = RunOptions(
        model=model,
        source="synthetic://?size=32x32&fps=30&seed=1",
        headless=True,
        csv=tmp_path / "frames.csv",
    )
    session = build_session(options)
    hanging = HangingSegmenter(session.segmenters[0], after=45)
    session.segmenters = [hanging]  # type: ignore[list-item]
    stop = threading.Event()
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(session.run(stop)), daemon=True)
    runner.start()
    try:
        wait_for(lambda: hanging.hung_at is not None, timeout=60)
        assert hanging.hung_at is not None
        # Watch for three watchdog periods after the hang began.
        time.sleep(3 * period)
        ready, pets = systemd.times("READY"), systemd.times("WATCHDOG")
        assert len(ready) == 1 and pets and ready[0] <= pets[0]
        before = [t for t in pets if t < hanging.hung_at]
        assert len(before) >= 2, pets  # 45 frames at 30 FPS: 1.5 s of frames, pets each 0.5 s
        after = [t for t in pets if t >= hanging.hung_at]
        # The last pet comes within WatchdogSec of the hang (half a period and a tick), then
        # none: systemd's watchdog fires.
        assert all(t - hanging.hung_at < period for t in after), after
        assert time.monotonic() - max(pets) > 1.5 * period
        assert systemd.values("STATUS")[0].startswith("synthetic")  # READY's status line
        assert not systemd.times("STOPPING")
    finally:
        stop.set()
        hanging.release.set()
        runner.join(timeout=30)
    assert done and done[0].stopped == "interrupted"
    wait_for(lambda: bool(systemd.times("STOPPING")), timeout=5)


def test_pets_go_on_while_a_lost_camera_is_reopened(systemd: FakeSystemd) -> None:
    """A camera unplugged is a run that works (retrying), not one that hangs: the pets go on;
    STATUS says it is lost, and again when frames flow."""
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.runtime.capture import CaptureThread
    from edgeseg.runtime.pipeline import run_pipeline

    meta = ModelMetadata(input_size=(32, 32))
    camera = FakeCamera([(20, "none")], pace=0.01, back=False)
    period = 1.0
    dog = Watchdog(Notifier(systemd.address), period)
    capture = CaptureThread(
        camera.streams[0], reopen=camera.reopen, backoff=0.05, max_backoff=0.1
    ).start()
    dog.start("camera 9")
    stop = threading.Event()
    sink = ListSink()
    segmenter = Segmenter(_backend(meta), meta, resize=True)
    runner = threading.Thread(
        target=lambda: run_pipeline(capture, segmenter, [sink, dog], stop=stop), daemon=True
    )
    runner.start()
    try:
        wait_for(lambda: capture.status is not None, timeout=30)
        lost_at = time.monotonic()
        wait_for(lambda: len([t for t in systemd.times("WATCHDOG") if t > lost_at]) >= 4)
        pets = [lost_at, *(t for t in systemd.times("WATCHDOG") if t > lost_at)]
        # every half period while retrying: never a period without one
        assert all(b - a < period for a, b in itertools.pairwise(pets)), pets
        assert any(v.startswith("camera lost, retrying since") for v in systemd.values("STATUS"))
        frames_lost = len(sink.frames)
        camera.back.set()
        wait_for(lambda: len(sink.frames) > frames_lost + 5, timeout=30)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert dog.closed
    wait_for(lambda: bool(systemd.times("STOPPING")), timeout=5)  # a datagram: on its way


def _backend(meta: Any) -> Any:
    """A float backend: bright pixels are foreground."""
    from edgeseg.core.backend import CallableBackend

    return CallableBackend(lambda x: (x > 0.5).astype(np.float32), meta)


def test_edgeseg_run_speaks_the_protocol(model: Path, systemd: FakeSystemd, tmp_path: Path) -> None:
    """The command line under a notify unit: READY, STATUS, pets, STOPPING, in that order."""
    env = {
        "NOTIFY_SOCKET": systemd.address,
        "WATCHDOG_USEC": "400000",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    done = edgeseg_subprocess(
        [
            "run", str(model), "--source", "synthetic://?size=32x32&fps=25&frames=40&seed=3",
            "--headless", "--csv", str(tmp_path / "f.csv"),
        ],
        tmp_path / "cache",
        env=env,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for(lambda: bool(systemd.times("STOPPING")), timeout=5)
    ready, pets, stopping = (systemd.times(k) for k in ("READY", "WATCHDOG", "STOPPING"))
    assert len(ready) == 1 and len(stopping) == 1
    assert pets and ready[0] <= min(pets) and max(pets) <= stopping[0]


def test_a_camera_absent_at_start_is_waited_for_and_the_run_is_ready(
    model: Path, systemd: FakeSystemd, tmp_path: Path
) -> None:
    """Under the service (--wait-for-source), a source that is not there at boot is no start
    failure and no restart loop: READY at once, pets while it is reopened, STATUS says so;
    SIGTERM ends it cleanly. Without the flag it stays a one-line error."""
    import signal
    import subprocess
    import sys

    with socket.socket() as s:  # a port nobody listens on: the camera is not there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        sys.executable, "-m", "edgeseg.cli.main", "run", str(model),
        "--source", f"rtsp://127.0.0.1:{port}/cam", "--headless", "--csv", str(tmp_path / "f.csv"),
    ]  # fmt: skip
    env = {
        **os.environ,
        "NOTIFY_SOCKET": systemd.address,
        "WATCHDOG_USEC": "400000",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    refused = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "cannot open rtsp://" in refused.stderr
    assert "Traceback" not in refused.stderr and not systemd.times("READY")

    run = subprocess.Popen(
        [*argv, "--wait-for-source"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: len(systemd.times("WATCHDOG")) >= 4, timeout=120)
    finally:
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "waiting for the source: cannot open rtsp://" in err
    assert len(systemd.times("READY")) == 1 and systemd.times("READY")[0] < min(
        systemd.times("WATCHDOG")
    )
    assert any(v.startswith("stream lost, retrying since") for v in systemd.values("STATUS"))
    assert systemd.times("STOPPING")
    assert "0 frames" in out and "stream lost 1 time" in out and "still lost at the end" in out


def test_a_slow_source_is_waited_on_not_hung(
    model: Path, systemd: FakeSystemd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time-lapse (a frame every 1.5 s) under WatchdogSec=1: between frames nothing is in
    flight, so the run is waiting on its source, not stuck: the pets go on."""
    from edgeseg.session import RunOptions, build_session

    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    options = RunOptions(
        model=model,
        source="synthetic://?size=32x32&fps=0.66&seed=1",
        headless=True,
        csv=tmp_path / "frames.csv",
        read_timeout=10.0,
    )
    session = build_session(options)
    stop = threading.Event()
    runner = threading.Thread(target=lambda: session.run(stop), daemon=True)
    start = time.monotonic()
    runner.start()
    try:
        time.sleep(4.5)
    finally:
        stop.set()
        runner.join(timeout=30)
    pets = [t - start for t in systemd.times("WATCHDOG")]
    # every half period (0.5 s) from READY on: no gap of a period between two pets
    assert len(pets) >= 6, pets
    assert all(b - a < 1.0 for a, b in itertools.pairwise(pets)), pets
