"""Outputs of `edgeseg run`: video, label maps, CSV, window and the MJPEG HTTP stream."""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import read_video

from edgeseg.errors import DataError, MissingDependencyError
from edgeseg.hardware import opencv_has_gui
from edgeseg.imageio import read_image
from edgeseg.runtime import sinks
from edgeseg.runtime.sinks import (
    CSV_FIELDS,
    CsvSink,
    MaskSink,
    MjpegServer,
    VideoSink,
    WindowSink,
    parse_stream_address,
)

cv2 = pytest.importorskip("cv2")

RED = (230, 30, 30)


def rendered(i: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    """A gray frame with a red block (where an overlay would be) and a moving bright bar."""
    frame = np.full((h, w, 3), 90, np.uint8)
    frame[8:32, 8:32] = RED
    frame[:, (40 + 2 * i) % w] = 250
    return frame


def labels_for(h: int = 48, w: int = 64) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[8:32, 8:32] = 1
    labels[40:44, 50:60] = 2
    return labels


RECORD = {"frame": 0, "inference_ms": 12.3456789, "objects": 2, "dropped": 0}


# ---------------------------------------------------------------------------- video


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
def test_video_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "out" / f"run{suffix}"
    with VideoSink(path, fps=10) as sink:
        for i in range(5):
            sink.write(i, rendered(i), labels_for(), RECORD)
        sink.write(5, rendered(5, 96, 128), labels_for(96, 128), RECORD)  # another size
        sink.write(6, rendered(6, 30, 40), labels_for(30, 40), RECORD)
    assert sink.frames == 7
    assert len(sink.warnings) == 1 and "resized" in sink.warnings[0]
    frames = read_video(path, rgb=True)
    assert len(frames) == 7
    assert all(f.shape == (48, 64, 3) for f in frames)
    block = frames[2][12:28, 12:28].reshape(-1, 3).mean(axis=0)
    assert np.abs(block - RED).max() < 40  # colours survive RGB → BGR → codec → RGB
    assert np.abs(frames[2][40:46, 2:6].mean() - 90) < 20
    sink.close()  # idempotent
    with pytest.raises(DataError, match="closed"):
        sink.write(7, rendered(), labels_for(), RECORD)


def test_video_frame_rate_set_later(tmp_path: Path) -> None:
    sink = VideoSink(tmp_path / "late.avi", fps=0)
    sink.fps = 7.0  # as `edgeseg run` does once the camera reports its rate
    for i in range(3):
        sink.write(i, rendered(i), labels_for(), RECORD)
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "late.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0, abs=0.1)
    cap.release()


def test_video_bad_paths(tmp_path: Path) -> None:
    # A name that is not a video file's (.mp4, .mkv, .avi) is a folder of segments.
    assert VideoSink(tmp_path / "run.xyz", fps=10).segmented
    assert VideoSink(f"{tmp_path}/name.v2/", fps=10).segmented
    assert VideoSink(tmp_path / "name.v3", fps=10).segmented and (tmp_path / "name.v3").is_dir()
    assert not VideoSink(tmp_path / "file.mkv", fps=10).segmented
    (tmp_path / "folder.mp4").mkdir()  # an existing folder records segments into it
    assert VideoSink(tmp_path / "folder.mp4", fps=10).segmented
    assert VideoSink(f"{tmp_path}/new.mp4/", fps=10).segmented  # a trailing slash too
    assert not VideoSink(tmp_path / "file.mp4", fps=10).segmented
    with pytest.raises(DataError, match="frame rate"):
        VideoSink(tmp_path / "run.avi", fps=-1)
    VideoSink(tmp_path / "unused.mp4", fps=10).close()  # nothing written: no file, no error
    assert not (tmp_path / "unused.mp4").exists()


def test_video_folder_removed_while_recording(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    sink = VideoSink(folder / "run.avi", fps=10)
    sink.write(0, rendered(), labels_for(), RECORD)
    shutil.rmtree(folder)
    sink.write(1, rendered(1), labels_for(), RECORD)  # stops recording, never raises
    sink.write(2, rendered(2), labels_for(), RECORD)
    sink.close()
    assert sink.stopped is not None and sink.stopped.startswith("recording stopped: ")
    assert "run.avi" in sink.stopped
    assert sink.frames == 1 and len(sink.warnings) == 1


def test_video_without_an_encoder_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeseg.runtime.sinks import recorder

    class NoCodec:
        def __init__(self, name: str, mode: str) -> None:
            raise ValueError(f"no {name}")

    av = pytest.importorskip("av")
    recorder.pick_encoder.cache_clear()
    monkeypatch.setattr(av.codec, "Codec", NoCodec)
    try:
        with pytest.raises(DataError, match="no h264 video encoder") as info:
            VideoSink(tmp_path / "run.mp4", fps=10)
        assert "\n" not in str(info.value)
    finally:
        recorder.pick_encoder.cache_clear()


# ---------------------------------------------------------------------------- masks


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_masks_lossless_round_trip(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "masks" / "nested"
    labels = labels_for()
    with MaskSink(folder, fmt=fmt) as sink:
        sink.write(7, rendered(), labels, RECORD)
        sink.write(123456, rendered(), labels * 0, RECORD)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"000007.{fmt}", f"123456.{fmt}"]  # no partial files left behind
    back = read_image(folder / f"000007.{fmt}")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


def test_masks_errors(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        MaskSink(tmp_path / "afile")
    with pytest.raises(DataError, match="png or tif"):
        MaskSink(tmp_path / "m", fmt="jpg")
    sink = MaskSink(tmp_path / "gone")
    sink.write(0, rendered(), labels_for(), RECORD)
    shutil.rmtree(tmp_path / "gone")
    sink.write(1, rendered(), labels_for(), RECORD)  # stops saving, never raises
    assert sink.stopped is not None and sink.stopped.startswith("saving masks stopped:")
    assert sink.frames == 1 and len(sink.warnings) == 1
    with pytest.raises(DataError, match="uint8"):
        sink.write(2, rendered(), labels_for().astype(np.float32), RECORD)


def instance_ids(h: int = 48, w: int = 64) -> np.ndarray:
    """int32 object ids: two touching objects and one with an id past 8 bits."""
    ids = np.zeros((h, w), np.int32)
    ids[8:20, 8:20] = 1
    ids[8:20, 20:30] = 2
    ids[30:40, 40:50] = 40000
    return ids


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_masks_of_instances_are_16_bit(tmp_path: Path, fmt: str) -> None:
    ids = instance_ids()
    with MaskSink(tmp_path, fmt=fmt) as sink:
        sink.write(0, rendered(), ids, RECORD)
        sink.write(1, rendered(), ids * 0, RECORD)  # no objects: still 16-bit
    for i, want in ((0, ids), (1, ids * 0)):
        back = read_image(tmp_path / f"{i:06d}.{fmt}")
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back, want)


def test_masks_with_more_ids_than_16_bits(tmp_path: Path) -> None:
    ids = instance_ids()
    ids[0, 0] = 70000
    with MaskSink(tmp_path / "tif", fmt="tif") as tif:
        tif.write(0, rendered(), ids, RECORD)
    back = pytest.importorskip("tifffile").imread(tmp_path / "tif" / "000000.tif")
    assert back.dtype == np.uint32  # a TIFF keeps them all
    np.testing.assert_array_equal(back, ids)
    with MaskSink(tmp_path / "png") as png:
        png.write(0, rendered(), ids, RECORD)
        png.write(1, rendered(), ids, RECORD)
    back = read_image(tmp_path / "png" / "000000.png")
    assert back.dtype == np.uint16 and back[0, 0] == 0
    np.testing.assert_array_equal(back[1:], ids[1:])
    assert len(png.warnings) == 1 and "--mask-format tif" in png.warnings[0]
    with pytest.raises(DataError, match="negative"):
        MaskSink(tmp_path / "neg").write(0, rendered(), ids - 5, RECORD)


def test_masks_named_after_the_frames_files(tmp_path: Path) -> None:
    labels = labels_for()
    with MaskSink(tmp_path) as sink:
        sink.write(0, rendered(), labels, {**RECORD, "name": "A06_s6.tif"})
        sink.write(1, rendered(), labels, {**RECORD, "name": "plate 2/B01.png"})  # a relpath
        sink.write(2, rendered(), labels, {**RECORD, "name": "clip.mp4#frame2"})  # by index
        sink.write(3, rendered(), labels, {**RECORD, "name": "A06_s6.png"})  # same stem
        sink.write(4, rendered(), labels, RECORD)  # a camera frame: by index
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "000002.png", "000004.png", "A06_s6-000003.png", "A06_s6.png", "plate 2_B01.png"
    ]  # fmt: skip
    assert len(sink.warnings) == 1 and "same name" in sink.warnings[0]
    np.testing.assert_array_equal(read_image(tmp_path / "A06_s6.png"), labels)


def test_named_masks_stay_within_their_bound_and_spare_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_bytes(b"x" * 50)  # not ours: never counted or deleted
    labels = labels_for()
    size = len(cv2.imencode(".png", labels)[1])
    with MaskSink(tmp_path, max_bytes=size * 3) as sink:
        for i in range(6):
            sink.write(i, rendered(), labels, {**RECORD, "name": f"well{i}.tif"})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["notes.png", "well3.png", "well4.png", "well5.png"]


def test_mjpeg_stats_show_the_object_count_and_the_frame_name() -> None:
    with MjpegServer(port=0) as server:
        record = {**RECORD, "objects": 3, "name": "A06_s6.tif"}
        server.write(0, rendered(), instance_ids(), record)
        stats = json.loads(get(server.url + "stats.json")[2])
    assert stats["objects"] == 3 and stats["name"] == "A06_s6.tif"


# ---------------------------------------------------------------------------- CSV


def test_csv_write_rows_writes_a_frame_at_once(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with CsvSink(path, ("frame", "id")) as sink:
        sink.write_rows([{"frame": 0, "id": i} for i in (1, 2, 3)])
        sink.write_rows([])
        assert sink.rows == 3
    assert path.read_text().splitlines() == ["frame,id", "0,1", "0,2", "0,3"]


def test_csv_rows_complete_and_flushed(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "run.csv"
    sink = CsvSink(path)
    for i in range(3):
        sink.write(i, rendered(), labels_for(), {**RECORD, "frame": i, "extra": "ignored"})
    # Readable before close: every row is flushed as it is written.
    rows = list(csv.DictReader(path.open(newline="")))
    assert len(rows) == 3 and list(rows[0]) == list(CSV_FIELDS)
    assert [r["frame"] for r in rows] == ["0", "1", "2"]
    assert float(rows[1]["inference_ms"]) == pytest.approx(12.3457)
    assert rows[2]["objects"] == "2" and rows[2]["latency_ms"] == ""
    sink.close()
    sink.close()
    assert len(path.read_text().splitlines()) == 4


def test_csv_custom_fields_and_numpy_values(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    with CsvSink(path, ("frame", "timestamp_s", "objects")) as sink:
        sink.write(0, rendered(), labels_for(), {"frame": np.int64(4), "timestamp_s": 0.5,
                                                  "objects": np.int32(3)})  # fmt: skip
        sink.write(1, rendered(), labels_for(), {"frame": 5, "timestamp_s": float("nan")})
    rows = list(csv.reader(path.open(newline="")))
    assert rows == [["frame", "timestamp_s", "objects"], ["4", "0.5", "3"], ["5", "", ""]]
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match="folder"):
        CsvSink(tmp_path / "dir.csv")


# ---------------------------------------------------------------------------- window


def test_window_without_gui_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if opencv_has_gui(cv2):
        pytest.skip("this OpenCV has windows")
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgeseg\[gui\]'") as info:
        WindowSink("test")
    assert "--headless" in str(info.value) and "\n" not in str(info.value)


def fake_cv2(keys: list[int]) -> SimpleNamespace:
    calls: list[str] = []
    return SimpleNamespace(
        calls=calls,
        error=cv2.error,
        getBuildInformation=lambda: "  GUI:                           GTK3\n",
        WINDOW_NORMAL=0,
        WND_PROP_VISIBLE=4,
        COLOR_RGB2BGR=cv2.COLOR_RGB2BGR,
        cvtColor=cv2.cvtColor,
        namedWindow=lambda title, flags: calls.append("named"),
        imshow=lambda title, frame: calls.append("show"),
        waitKey=lambda delay: keys.pop(0) if keys else -1,
        getWindowProperty=lambda title, prop: 1.0,
        destroyWindow=lambda title: calls.append("destroy"),
    )


def test_window_without_display_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.window, "cv2", lambda: fake_cv2([]))
    monkeypatch.setattr(sinks.window.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DataError, match="no display") as info:
        WindowSink("test")
    assert "--headless" in str(info.value)


def test_window_quits_on_q_or_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (ord("q"), 27):
        fake = fake_cv2([-1, key])
        monkeypatch.setattr(sinks.window, "cv2", lambda fake=fake: fake)
        monkeypatch.setenv("DISPLAY", ":0")
        with WindowSink("test") as window:
            window.write(0, rendered(), labels_for(), RECORD)
            assert not window.quit_requested
            window.write(1, rendered(), labels_for(), RECORD)
            assert window.quit_requested
        window.close()
        assert fake.calls == ["named", "show", "show", "destroy"]


# ---------------------------------------------------------------------------- MJPEG


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], b""


def read_part(response: http.client.HTTPResponse) -> bytes:
    """One JPEG from a multipart/x-mixed-replace body."""
    line = response.fp.readline()
    while line.strip() == b"":
        line = response.fp.readline()
    assert line.strip() == b"--edgesegframe"
    headers = {}
    while (line := response.fp.readline().strip()) != b"":
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    return response.fp.read(int(headers["content-length"]))


def decode(jpeg: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_mjpeg_page_frame_stats_and_stream() -> None:
    with MjpegServer(port=0) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/"
        status, ctype, body = get(server.url)
        assert status == 200 and ctype.startswith("text/html")
        assert b"/stream.mjpg" in body and b"/stats.json" in body
        assert get(server.url + "frame.jpg")[0] == 503  # nothing written yet
        assert json.loads(get(server.url + "stats.json")[2]) == {}
        assert get(server.url + "nothing")[0] == 404

        server.write(0, rendered(0), labels_for(), {**RECORD, "latency_ms": float("nan")})
        status, ctype, body = get(server.url + "frame.jpg")
        assert status == 200 and ctype == "image/jpeg"
        frame = decode(body)
        assert frame.shape == (48, 64, 3)
        assert np.abs(frame[12:28, 12:28].reshape(-1, 3).mean(0) - RED).max() < 30
        stats = json.loads(get(server.url + "stats.json")[2])
        assert stats["objects"] == 2 and stats["latency_ms"] is None

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/stream.mjpg")
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        first = decode(read_part(response))  # the newest frame, sent at once
        assert first.shape == (48, 64, 3)
        server.write(1, rendered(1, 60, 80), labels_for(60, 80), {**RECORD, "frame": 1})
        second = decode(read_part(response))
        assert second.shape == (60, 80, 3)
        conn.close()
    server.close()  # idempotent
    with pytest.raises(DataError, match="closed"):
        server.write(2, rendered(), labels_for(), RECORD)


def test_mjpeg_slow_client_does_not_block_and_close_releases_it() -> None:
    server = MjpegServer(port=0, quality=95)
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frame_bytes = len(cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
    server.write(0, noise, np.zeros((240, 320), np.uint8), RECORD)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.recv(12).startswith(b"HTTP/1")  # connected, and then reads nothing more
    for i in range(30):  # far more than the socket buffers hold: write() must not wait
        server.write(i, np.roll(noise, i, axis=1), np.zeros((240, 320), np.uint8), RECORD)
    server.close()
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := client.recv(1 << 16):  # ends because close() released the client
            received += len(chunk)
    client.close()
    assert received < 5 * frame_bytes  # a frame or two, never the backlog of 30


def test_mjpeg_port_in_use() -> None:
    first = MjpegServer(port=0)
    try:
        with pytest.raises(DataError, match=f"port {first.port} is in use on 127.0.0.1"):
            MjpegServer(port=first.port)
    finally:
        first.close()
    with pytest.raises(DataError, match="quality"):
        MjpegServer(port=0, quality=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", ("127.0.0.1", 8080)),
        (" 0 ", ("127.0.0.1", 0)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("localhost:9000", ("localhost", 9000)),
        ("[::1]:8080", ("::1", 8080)),
    ],
)
def test_parse_stream_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_stream_address(text) == expected


@pytest.mark.parametrize("text", ["", "http", "70000", ":8080", "::1", "[::1]", "a:b", "1:2:3"])
def test_parse_stream_address_errors(text: str) -> None:
    with pytest.raises(DataError, match="stream address"):
        parse_stream_address(text)


def test_mjpeg_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = MjpegServer(host="::1", port=0)
    except DataError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server:
        assert server.url == f"http://[::1]:{server.port}/"
        assert json.loads(get(server.url + "stats.json")[2]) == {}


# ---------------------------------------------------------------------------- MJPEG token


def request(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET a path on this machine; the status, headers and (a bounded part of) the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        if response.status == 200 and path.startswith("/stream.mjpg"):
            return response.status, dict(response.headers), read_part(response)
        return response.status, dict(response.headers), response.read(1 << 20)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.20", False),
        ("camera.local", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert sinks.is_loopback(host) is loopback


def test_mjpeg_off_loopback_needs_the_token(tmp_path: Path) -> None:
    folder = tmp_path / "config" / "edgeseg"
    with MjpegServer(host="0.0.0.0", port=0, token_folder=folder) as server:
        token = server.token
        # Addresses others can open: the host name, then the interfaces', never 0.0.0.0.
        assert (
            token
            and server.urls[0] == f"http://{socket.gethostname()}:{server.port}/?token={token}"
        )
        assert server.url == server.urls[0]
        assert all(
            "0.0.0.0" not in u and u.endswith(f":{server.port}/?token={token}") for u in server.urls
        )
        server.write(0, rendered(0), labels_for(), RECORD)
        server.status("camera lost, retrying since 14:02:11")
        for path in ("/", "/frame.jpg", "/stream.mjpg", "/stats.json", "/nothing"):
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
                status, got, body = request(server.port, path, headers)
                assert status == 401 and b"\xff\xd8" not in body, path
                assert "image" not in got.get("Content-Type", "")
            status, _, _ = request(server.port, f"{path}?token={token[:-1]}x")
            assert status == 401
            status, _, _ = request(server.port, f"{path}?token=caf%C3%A9")  # not ASCII
            assert status == 401
        status, _, body = request(server.port, f"/frame.jpg?token={token}")
        assert status == 200 and decode(body).shape == (48, 64, 3)
        status, _, body = request(server.port, "/stream.mjpg", {"Authorization": f"Bearer {token}"})
        assert status == 200 and decode(body).shape == (48, 64, 3)
        status, got, page = request(server.port, f"/?token={token}")
        assert status == 200 and f"/stream.mjpg?token={token}".encode() in page
        assert f"/stats.json?token={token}".encode() in page
        cookie = got["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in got["Set-Cookie"]
        status, _, body = request(server.port, "/stats.json", {"Cookie": cookie})
        stats = json.loads(body)
        assert status == 200 and stats["objects"] == 2
        assert stats["status"] == "camera lost, retrying since 14:02:11"
    path = folder / "stream-token"
    assert path.read_text().strip() == token
    assert (path.stat().st_mode & 0o777) == 0o600 and (folder.stat().st_mode & 0o777) == 0o700
    # A restart reads the same token back.
    with MjpegServer(port=0, require_token=True, token_folder=folder) as again:
        assert again.token == token
        assert request(again.port, "/frame.jpg")[0] == 401
        assert request(again.port, f"/frame.jpg?token={token}")[0] == 503  # no frame yet


def test_mjpeg_token_in_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert sinks.token_dir() == tmp_path / "xdg" / "edgeseg"
    with MjpegServer(port=0, require_token=True) as server:
        assert (tmp_path / "xdg" / "edgeseg" / "stream-token").read_text().strip() == server.token
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert sinks.token_dir() == Path.home() / ".config" / "edgeseg"


def test_mjpeg_given_token_and_loopback_stays_open(tmp_path: Path) -> None:
    token = "given-token-0123456789"
    with MjpegServer(port=0, token=token) as server:  # a given token is always required
        assert server.url.endswith(f"?token={token}")
        assert request(server.port, "/stats.json")[0] == 401
        assert request(server.port, "/stats.json", {"Authorization": f"bearer {token}"})[0] == 200
    with MjpegServer(port=0, token_folder=tmp_path / "cfg") as server:
        assert server.token is None and server.url == f"http://127.0.0.1:{server.port}/"
        server.write(0, rendered(0), labels_for(), RECORD)
        assert request(server.port, "/frame.jpg")[0] == 200
    assert not (tmp_path / "cfg").exists()  # no token made for a loopback server
    with pytest.raises(DataError, match="URL-safe"):
        MjpegServer(port=0, token="short")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match=r"stream token .*pass a token instead"):
        MjpegServer(port=0, require_token=True, token_folder=tmp_path / "file" / "sub")


def test_mjpeg_status_on_page_and_stats() -> None:
    with MjpegServer(port=0) as server:
        server.status("camera lost, retrying since 14:02:11")
        assert json.loads(get(server.url + "stats.json")[2]) == {
            "status": "camera lost, retrying since 14:02:11"
        }
        page = get(server.url)[2]
        assert b'id="status"' in page and b"s.status" in page
        server.write(0, rendered(0), labels_for(), RECORD)
        server.status(None)  # frames flow again
        assert "status" not in json.loads(get(server.url + "stats.json")[2])
