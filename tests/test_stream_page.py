"""The stream page a lab keeps open, in headless Chromium at phone and desktop widths: the stats
grouped and wrapping without horizontal overflow, filled from the live server, the chart drawn,
the links to /metrics and the recordings' listing there; and the listing itself."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import wait_for

from edgeseg.runtime.sinks import FrameRecord, MjpegServer

cv2 = pytest.importorskip("cv2")

# Evaluated in the page once it has polled the server: what a person would see.
MEASURE = """(() => {
  const vw = window.innerWidth, doc = document.documentElement;
  const box = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, width: r.width, height: r.height}; };
  const cards = [...document.querySelectorAll("#stats .card")].map((c) => ({
    id: c.id, box: box(c), title: c.querySelector("h2").textContent,
    value: c.querySelector("b").textContent, visible: getComputedStyle(c).visibility }));
  return {vw, scrollWidth: doc.scrollWidth, bodyWidth: document.body.scrollWidth,
    cards, img: box(document.querySelector("#view img")),
    chart: box(document.getElementById("chart")),
    objects: document.getElementById("l-objects").getAttribute("points"),
    fps: document.getElementById("l-fps").getAttribute("points"),
    links: [...document.querySelectorAll("header nav a")].map((a) => a.getAttribute("href")),
    status: document.getElementById("status").hidden,
    statusText: document.getElementById("status").textContent,
    camera: document.getElementById("camera").textContent };
})()"""


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
    NUL-separated JSON on fds 3 and 4), so a page is seen at a phone's width (a headless window
    is at least 500 px wide; device-metrics emulation is not)."""

    def __init__(self, executable: str, profile: Path) -> None:
        ours_in, theirs_out = os.pipe()  # chromium writes on its fd 4
        theirs_in, ours_out = os.pipe()  # chromium reads its fd 3

        def wire() -> None:
            os.dup2(theirs_in, 3)
            os.dup2(theirs_out, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [executable, *flags(profile), "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(theirs_in)
        os.close(theirs_out)
        self._in, self._out = ours_in, ours_out
        self._buf = b""
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" not in self._buf:
                assert time.monotonic() < deadline, f"no answer to {method}"
                chunk = os.read(self._in, 1 << 16)
                assert chunk, "chromium went away"
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                assert "error" not in answer, answer
                return answer["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def open(self, url: str, width: int, height: int) -> None:
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=1, mobile=width < 600,
        )  # fmt: skip
        self.page("Page.enable")
        self.page("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The expression's value (None while it throws, say before the page has loaded)."""
        got = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        return got["result"].get("value")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._out)
        with contextlib.suppress(OSError):
            os.close(self._in)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def text(browser: Browser, element: str) -> str | None:
    return browser.evaluate(f"document.getElementById({element!r}).textContent")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium(), tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    return found


def flags(profile: Path) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}",
    ]  # fmt: skip


def picture(i: int) -> np.ndarray:
    """A 480x640 frame with something in it (a moving bright square)."""
    img = np.full((480, 640, 3), 40, np.uint8)
    x = 40 + (i * 7) % 500
    img[200:280, x : x + 80] = (250, 180, 30)
    return img


def record(i: int) -> FrameRecord:
    return FrameRecord(
        frame=i, timestamp_s=i / 20, preprocess_ms=1.2, inference_ms=31.5, postprocess_ms=2.2,
        render_ms=3.1, latency_ms=45.0, objects=3 + i % 5, dropped=i // 50,
        name=f"a-really-long-file-name-from-the-microscope-{i:06d}.tif",
    )  # fmt: skip


class Metrics:
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def exposition(self) -> bytes:
        return b"edgeseg_frames_total 1\n"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[MjpegServer]:
    """A server with metrics and a recordings folder, fed 20 frames a second."""
    rec = tmp_path / "rec"
    rec.mkdir()
    for k in range(3):
        (rec / f"edgeseg-{k:06d}.mp4").write_bytes(b"\0" * (1000 * (k + 1)))
    (rec / ".edgeseg-000003.partial.mp4").write_bytes(b"\0")  # being written: not listed
    (rec / "notes.txt").write_text("not a recording")
    server = MjpegServer(port=0, metrics=Metrics(), recordings=rec)
    stop = threading.Event()

    def feed() -> None:
        i = 0
        labels = np.zeros((480, 640), np.uint8)
        while not stop.is_set():
            server.write(i, picture(i), labels, record(i))
            i += 1
            time.sleep(0.05)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    time.sleep(2.5)  # a few seconds of history for the chart
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_stream_page_layout_in_chromium(
    live: MjpegServer, browser: Browser, tmp_path: Path, width: int, height: int
) -> None:
    browser.open(live.url, width, height)
    wait_for(lambda: text(browser, "fps") not in (None, "–"))
    time.sleep(2.5)  # the chart's poll (every 2 s) has run
    facts = browser.evaluate(MEASURE)
    shot = tmp_path / f"page-{width}.png"
    browser.screenshot(shot)
    vw = facts["vw"]
    assert vw == width
    # Nothing runs off the side: no horizontal scrolling at either width.
    assert facts["scrollWidth"] <= vw and facts["bodyWidth"] <= vw, facts
    cards = facts["cards"]
    assert [c["title"] for c in cards] == ["FPS", "Latency", "Objects", "Dropped", "Camera"]
    for c in cards:
        b = c["box"]
        assert b["width"] > 60 and b["height"] > 20 and c["visible"] == "visible", c
        assert b["left"] >= 0 and b["right"] <= vw + 0.5, c
    values = {c["id"]: c["value"] for c in cards}
    # Filled from the live server (stats.json, history.json), not the placeholders.
    assert float(values["c-fps"]) > 5 and values["c-latency"] == "45 ms"
    assert values["c-camera"] == "live" and values["c-objects"].isdigit()
    rows = {round(c["box"]["top"]) for c in cards}
    if width < 500:
        assert len(rows) >= 2  # the cards wrap into rows on a phone
    # The picture fits the width and shows something.
    assert facts["img"]["width"] <= vw and facts["img"]["height"] > 100
    assert facts["chart"]["width"] > 150 and facts["chart"]["right"] <= vw + 0.5
    assert len(facts["objects"].split()) >= 2 and len(facts["fps"].split()) >= 2
    assert facts["links"] == ["/recordings/", "/metrics"]
    assert facts["status"] is True  # hidden while frames flow
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (height, width)
    assert image.std() > 10  # drawn, not a blank page


def test_camera_lost_shows_on_the_page_in_chromium(live: MjpegServer, browser: Browser) -> None:
    live.status("camera lost, retrying since 14:02:11")
    browser.open(live.url, 390, 844)
    wait_for(lambda: text(browser, "camera") == "lost")
    facts = browser.evaluate(MEASURE)
    assert facts["status"] is False and facts["statusText"].startswith("camera lost, retrying")
    assert facts["scrollWidth"] <= facts["vw"]


def test_recordings_listing_and_files(live: MjpegServer) -> None:
    with urllib.request.urlopen(live.base_url + "recordings/", timeout=10) as r:
        page = r.read().decode()
    names = re.findall(r'href="/recordings/([^"?]+)"', page)
    assert names == ["edgeseg-000002.mp4", "edgeseg-000001.mp4", "edgeseg-000000.mp4"] or sorted(
        names
    ) == ["edgeseg-000000.mp4", "edgeseg-000001.mp4", "edgeseg-000002.mp4"]
    assert "partial" not in page and "notes.txt" not in page
    with urllib.request.urlopen(live.base_url + "recordings/edgeseg-000001.mp4", timeout=10) as r:
        assert r.headers["Content-Type"] == "video/mp4" and len(r.read()) == 2000
    # A browser's <video> seeks with byte ranges.
    req = urllib.request.Request(
        live.base_url + "recordings/edgeseg-000001.mp4", headers={"Range": "bytes=100-199"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 206 and r.headers["Content-Range"] == "bytes 100-199/2000"
        assert len(r.read()) == 100 and r.headers["Accept-Ranges"] == "bytes"
    req = urllib.request.Request(
        live.base_url + "recordings/edgeseg-000001.mp4", headers={"Range": "bytes=-300"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Range"] == "bytes 1700-1999/2000" and len(r.read()) == 300
    req = urllib.request.Request(
        live.base_url + "recordings/edgeseg-000001.mp4", headers={"Range": "bytes=5000-"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 416
    for bad in ("recordings/..%2F..%2Fetc%2Fpasswd", "recordings/notes.txt",
                "recordings/.edgeseg-000003.partial.mp4"):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(live.base_url + bad, timeout=10)
        assert err.value.code == 404, bad


def test_recordings_need_the_token_off_loopback(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "edgeseg-000000.mp4").write_bytes(b"\0" * 10)
    with MjpegServer(host="0.0.0.0", port=0, recordings=rec, token_folder=tmp_path / "t") as s:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{s.port}/recordings/", timeout=10)
        assert err.value.code == 401
        url = f"http://127.0.0.1:{s.port}/recordings/?token={s.token}"
        with urllib.request.urlopen(url, timeout=10) as r:
            page = r.read().decode()
        # Links carry the token, so they work from the listing.
        assert f'href="/recordings/edgeseg-000000.mp4?token={s.token}"' in page
