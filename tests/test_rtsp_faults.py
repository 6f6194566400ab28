"""A real RTSP camera (gst-rtsp-server on loopback, tests/rtsp_camera.py) killed in the middle of
`edgeseg run` and restarted on the same address: the run reports the outage (on /metrics while
it lasts, in the summary at the end), processes frames again, and its recording plays.

Needs Debian's gstreamer1.0-rtsp, gir1.2-gst-rtsp-server-1.0, python3-gst-1.0 and
gstreamer1.0-plugins-good (`.ci/run` installs them as root); skips cleanly without them, or
without an OpenCV that reads RTSP through FFmpeg."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import bright_model

from edgeseg.hardware import opencv_has_backend

cv2 = pytest.importorskip("cv2")
prom_parser = pytest.importorskip("prometheus_client.parser")

HELPER = Path(__file__).with_name("rtsp_camera.py")
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = "gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 gstreamer1.0-plugins-good"
_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("videotestsrc", "jpegenc", "rtpjpegpay") if not Gst.ElementFactory.find(e)]
print(" ".join(missing))
"""


def rtsp_server_or_skip() -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} (Debian's Python with the GStreamer bindings)")
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0 or done.stdout.strip():
        pytest.skip(f"gst-rtsp-server is not usable here (apt-get install {PACKAGES})")
    if not opencv_has_backend(cv2, "CAP_FFMPEG"):
        pytest.skip("this OpenCV has no FFmpeg backend to read RTSP")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Camera:
    """tests/rtsp_camera.py in its own process, started and killed as a power cut would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(HELPER), str(self.port), "--size", "160x120", "--fps", "15"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                assert line.startswith("ready "), line + (self.proc.stderr.read() or "")  # type: ignore[union-attr]
                return
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"the RTSP camera did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def camera() -> Iterator[Camera]:
    rtsp_server_or_skip()
    cam = Camera(free_port())
    try:
        yield cam
    finally:
        cam.kill()


def metrics(port: int) -> dict[str, float]:
    """The unlabelled samples of /metrics ({} while the server is not up yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {
        s.name: s.value
        for fam in prom_parser.text_string_to_metric_families(text)
        for s in fam.samples
        if not s.labels
    }


def rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def wait(condition, timeout: float, what: str, run: subprocess.Popen[str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if run.poll() is not None:
            raise AssertionError(f"edgeseg run ended while waiting for {what}: {run.stderr.read()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_rtsp_camera_killed_and_restarted(camera: Camera, tmp_path: Path) -> None:
    model = bright_model(tmp_path / "bright.tflite", size=64)
    camera.start()
    table, summary, rec = tmp_path / "frames.csv", tmp_path / "summary.json", tmp_path / "rec"
    mport = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.Popen(
        [sys.executable, "-m", "edgeseg.cli.main", "run", str(model),
         "--source", f"rtsp://127.0.0.1:{camera.port}/cam", "--headless",
         "--csv", str(table), "--summary-json", str(summary), "--read-timeout", "2",
         "--record", f"{rec}/", "--record-segment", "2", "--metrics", f"127.0.0.1:{mport}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait(lambda: rows(table) >= 45, 120, "frames from the camera", run)  # 3 s at 15 FPS
        camera.kill()  # the camera's power is cut
        before = rows(table)

        def lost() -> bool:
            m = metrics(mport)
            return m.get("edgeseg_camera_outages_total", 0) >= 1 and m.get("edgeseg_camera_up") == 0

        wait(lost, 60, "the outage on /metrics", run)
        time.sleep(1.0)
        assert rows(table) <= before + 30  # nothing (much) after the loss: frames stopped
        camera.start()  # back on the same address
        wait(lambda: rows(table) >= before + 45, 120, "frames after the restart", run)
        m = metrics(mport)
        assert m["edgeseg_camera_up"] == 1 and m["edgeseg_camera_lost_seconds_total"] > 0.5
        assert m["edgeseg_camera_outages_total"] == 1
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    assert "stream lost 1 time" in out and "resumed each time" in out, out
    got = json.loads(summary.read_text())
    assert got["outages"] == 1 and not got["lost_at_end"] and got["stopped"] == "interrupted"
    assert got["frames"] == rows(table) and got["frames"] >= 90
    # The recording plays: every closed segment decodes, in a reader other than the writer's
    # process, and together they hold frames from before and after the outage.
    segments = sorted(p for p in rec.iterdir() if p.suffix == ".mp4" and not p.name.startswith("."))
    assert len(segments) >= 2, list(rec.iterdir())
    decoded = 0
    for seg in segments:
        cap = cv2.VideoCapture(str(seg))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert n > 0, seg
        decoded += n
    assert decoded >= 0.8 * got["frames"]


def test_rtsp_camera_absent_at_start_is_waited_for(camera: Camera, tmp_path: Path) -> None:
    """--wait-for-source (the service's): the camera comes up after the run started, and
    its frames are processed."""
    model = bright_model(tmp_path / "bright.tflite", size=64)
    table, mport = tmp_path / "frames.csv", free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.Popen(
        [sys.executable, "-m", "edgeseg.cli.main", "run", str(model),
         "--source", f"rtsp://127.0.0.1:{camera.port}/cam", "--headless", "--wait-for-source",
         "--csv", str(table), "--metrics", f"127.0.0.1:{mport}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait(lambda: metrics(mport).get("edgeseg_camera_up") == 0, 120, "the run to wait", run)
        time.sleep(2.0)
        assert rows(table) == 0
        camera.start()
        wait(lambda: rows(table) >= 30, 120, "frames from the camera that came", run)
        assert metrics(mport)["edgeseg_camera_up"] == 1
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    assert "waiting for the source" in err and "resumed each time" in out, out
