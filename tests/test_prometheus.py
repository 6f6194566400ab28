"""`/metrics`: what a run exports in the Prometheus text format, read back with the client's own
parser; the device's temperatures and throttling from a planted sysfs tree and vcgencmd; the
token rule; `--metrics` alone and with `--stream`, from the command line and edgeseg.toml."""

from __future__ import annotations

import http.client
import stat
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import bright_model, one_line_error, wait_for
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.errors import DataError
from edgeseg.runtime.sinks import CsvSink, FrameRecord, MjpegServer
from edgeseg.runtime.storage import Ring

prom_parser = pytest.importorskip("prometheus_client.parser")
from edgeseg.runtime.metrics import RunMetrics  # noqa: E402

runner = CliRunner()


def parse(text: bytes | str) -> dict[str, Any]:
    """The families of an exposition by name (the client's parser: what a scraper reads)."""
    if isinstance(text, bytes):
        text = text.decode()
    return {f.name: f for f in prom_parser.text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(f"{name} {labels}")


def record(i: int, objects: int = 2, dropped: int = 0) -> FrameRecord:
    return FrameRecord(
        frame=i, timestamp_s=i / 10, preprocess_ms=1.0, inference_ms=30.0, postprocess_ms=2.0,
        render_ms=3.0, latency_ms=40.0, objects=objects, dropped=dropped,
    )  # fmt: skip


FRAME = np.zeros((8, 8, 3), np.uint8)
LABELS = np.zeros((8, 8), np.uint8)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def plant_device(root: Path) -> Path:
    """A Pi's sysfs (one thermal zone, one that cannot be read) and a vcgencmd that says the
    Pi is under-voltage now and was throttled since boot."""
    zone = root / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("61234\n")
    (zone / "type").write_text("cpu-thermal\n")
    off = root / "sys" / "class" / "thermal" / "thermal_zone1"
    off.mkdir()
    (off / "temp").write_text("not a number\n")
    tool = root / "vcgencmd"
    tool.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x40001\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


def test_run_metrics_parse_and_count(tmp_path: Path) -> None:
    clock = Clock()
    tool = plant_device(tmp_path)
    csv_sink = CsvSink(tmp_path / "out" / "frames.csv", ("frame",), max_bytes=4096)
    metrics = RunMetrics(sys_root=tmp_path, vcgencmd=str(tool), clock=clock)
    metrics.describe(model="bright.tflite", runtime="litert", device="CPU", accelerator=None)
    metrics.watch_outputs([metrics, csv_sink])
    for i in range(20):
        clock.t += 0.1
        metrics.write(i, FRAME, LABELS, record(i, objects=i % 4, dropped=i // 5))
        csv_sink.write(i, FRAME, LABELS, {"frame": i})
    metrics.status("camera lost, retrying since 14:02:11")
    metrics.status("camera lost, retrying since 14:02:11")  # the same outage
    clock.t += 2.5
    during = parse(metrics.exposition())
    assert sample(during, "edgeseg_camera_lost_seconds_total") == pytest.approx(2.5)
    assert sample(during, "edgeseg_camera_up") == 0.0
    metrics.status(None)
    clock.t += 3.0
    fam = parse(metrics.exposition())
    assert sample(fam, "edgeseg_frames_total") == 20
    assert sample(fam, "edgeseg_frames_dropped_total") == 3  # 19 // 5
    assert sample(fam, "edgeseg_camera_outages_total") == 1
    assert sample(fam, "edgeseg_camera_lost_seconds_total") == pytest.approx(2.5)
    assert sample(fam, "edgeseg_camera_up") == 1.0
    assert sample(fam, "edgeseg_objects") == 19 % 4
    for stage, seconds in (("preprocess", 0.001), ("inference", 0.03), ("render", 0.003)):
        assert sample(fam, "edgeseg_stage_seconds_count", stage=stage) == 20
        assert sample(fam, "edgeseg_stage_seconds_sum", stage=stage) == pytest.approx(20 * seconds)
    assert sample(fam, "edgeseg_stage_seconds_bucket", stage="inference", le="0.025") == 0
    assert sample(fam, "edgeseg_stage_seconds_bucket", stage="inference", le="0.05") == 20
    assert fam["edgeseg_stage_seconds"].type == "histogram"
    assert fam["edgeseg_frames"].type == "counter"
    # No frame for 5.5 s: the rate is 0, not the last one seen.
    assert sample(fam, "edgeseg_fps") == 0.0
    info = next(s for s in fam["edgeseg_model_info"].samples)
    assert info.labels["model"] == "bright.tflite" and info.labels["runtime"] == "litert"
    assert info.labels["accelerator"] == "" and info.labels["edgeseg_version"]
    assert sample(fam, "edgeseg_temperature_celsius", zone="thermal_zone0") == pytest.approx(61.234)
    temps = [s for s in fam["edgeseg_temperature_celsius"].samples]
    assert [s.labels["type"] for s in temps] == ["cpu-thermal"]  # the unreadable zone left out
    assert sample(fam, "edgeseg_throttled", flag="under_voltage") == 1
    assert sample(fam, "edgeseg_throttled", flag="throttling_occurred") == 1
    assert sample(fam, "edgeseg_throttled", flag="throttled") == 0
    assert sample(fam, "edgeseg_ring_max_bytes", output="csv") == 4096
    assert sample(fam, "edgeseg_disk_free_bytes", path=str(tmp_path / "out")) > 0
    csv_sink.close()


def test_fps_and_ring_bytes_of_a_recording(tmp_path: Path) -> None:
    clock = Clock()
    metrics = RunMetrics(sys_root=tmp_path, vcgencmd=str(tmp_path / "none"), clock=clock)
    folder = tmp_path / "rec"
    folder.mkdir()
    for k, size in enumerate((1000, 2000, 3000)):
        (folder / f"edgeseg-{k:06d}.mp4").write_bytes(b"x" * size)

    class Recording:  # what the metrics read of a recorder: its path and its ring
        def __init__(self) -> None:
            self.ring: Ring | None = Ring(folder, r"edgeseg-\d+\.mp4", 5000)

        def write(self, *args: Any) -> None: ...

    Recording.__name__ = "VideoSink"
    rec = Recording()
    assert rec.ring is not None
    rec.ring.enforce()  # 6000 > 5000: the oldest segment goes
    metrics.watch_outputs([rec])
    for i in range(11):
        clock.t += 0.05  # 20 FPS
        metrics.write(i, FRAME, LABELS, record(i))
    fam = parse(metrics.exposition())
    assert sample(fam, "edgeseg_fps") == pytest.approx(20.0)
    assert sample(fam, "edgeseg_recorder_bytes") == 5000
    assert sample(fam, "edgeseg_ring_bytes", output="recording") == 5000
    assert sample(fam, "edgeseg_ring_deleted_files_total", output="recording") == 1
    assert "edgeseg_temperature_celsius" not in fam and "edgeseg_throttled" not in fam


def test_each_session_has_its_own_registry(tmp_path: Path) -> None:
    a, b = RunMetrics(sys_root=tmp_path), RunMetrics(sys_root=tmp_path)
    a.write(0, FRAME, LABELS, record(0))
    assert sample(parse(a.exposition()), "edgeseg_frames_total") == 1
    assert sample(parse(b.exposition()), "edgeseg_frames_total") == 0
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("edgeseg_frames_total") is None


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    finally:
        conn.close()


def test_metrics_on_the_stream_follow_its_token_rule(tmp_path: Path) -> None:
    metrics = RunMetrics(sys_root=tmp_path)
    metrics.write(0, FRAME, LABELS, record(0))
    with MjpegServer(port=0, metrics=metrics) as server:  # loopback: open
        status, kind, body = get(server.port, "/metrics")
        assert status == 200 and kind.startswith("text/plain; version=0.0.4")
        assert sample(parse(body), "edgeseg_frames_total") == 1
        assert b'href="/metrics"' in get(server.port, "/")[2]
    with MjpegServer(host="0.0.0.0", port=0, metrics=metrics, token_folder=tmp_path / "t") as s:
        assert get(s.port, "/metrics")[0] == 401
        ok = get(s.port, "/metrics", {"Authorization": f"Bearer {s.token}"})
        assert ok[0] == 200 and sample(parse(ok[2]), "edgeseg_frames_total") == 1
    with MjpegServer(port=0, metrics=metrics, frames=False) as alone:  # --metrics alone
        assert alone.url == f"http://127.0.0.1:{alone.port}/metrics"
        assert get(alone.port, "/metrics")[0] == 200
        for path in ("/", "/stream.mjpg", "/stats.json", "/frame.jpg"):
            assert get(alone.port, path)[0] == 404, path
        alone.write(0, np.zeros((8, 8, 3), np.uint8), LABELS, record(0))  # ignored
    with MjpegServer(port=0) as plain:  # no metrics: no /metrics
        assert get(plain.port, "/metrics")[0] == 404


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bright_model(tmp_path_factory.mktemp("prom") / "bright.tflite", size=32)


def test_a_run_with_metrics_alone_is_scraped_while_it_runs(model: Path, tmp_path: Path) -> None:
    from edgeseg.session import RunOptions, build_session

    options = RunOptions(
        model=model,
        source="synthetic://?size=32x32&fps=40&frames=400&seed=2",
        headless=True,
        metrics="127.0.0.1:0",
    )
    session = build_session(options)
    server = next(s for s in session.sinks if isinstance(s, MjpegServer))
    assert not server.frames and session.metrics is not None
    assert any(m.startswith("metrics at http://127.0.0.1:") for m in session.messages)
    stop = threading.Event()
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(session.run(stop)), daemon=True)
    thread.start()
    try:
        scrapes = []

        def scraped_frames() -> float:
            with urllib.request.urlopen(server.url, timeout=10) as r:
                scrapes.append(parse(r.read()))
            return sample(scrapes[-1], "edgeseg_frames_total")

        wait_for(lambda: scraped_frames() >= 20, timeout=60)
    finally:
        stop.set()
        thread.join(timeout=30)
    fam = scrapes[-1]
    info = next(s for s in fam["edgeseg_model_info"].samples)
    assert info.labels["model"] == "bright.tflite" and info.labels["runtime"]
    assert sample(fam, "edgeseg_stage_seconds_count", stage="inference") >= 20
    assert sample(fam, "edgeseg_fps") > 0
    assert done and done[0].frames >= 20


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import edgeseg.session

    seen: list[Any] = []

    def fake_build_session(options: Any, **_kwargs: Any) -> Any:
        seen.append(options)
        raise DataError("stopped by the test")

    monkeypatch.setattr(edgeseg.session, "build_session", fake_build_session)
    return seen


def test_metrics_from_the_command_line_and_the_config(
    captured: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(app, ["run", "m.tflite", "--metrics", "9100"]), "stopped")
    assert captured[-1].metrics == "9100"
    config = tmp_path / "edgeseg.toml"
    config.write_text('model = "m.tflite"\nmetrics = "0.0.0.0:9100"\n')
    one_line_error(runner.invoke(app, ["run", "--config", str(config)]), "stopped")
    assert captured[-1].metrics == "0.0.0.0:9100"


def test_a_bad_metrics_address_is_one_line(model: Path, tmp_path: Path) -> None:
    argv = ["run", str(model), "--source", "synthetic://?size=32x32&frames=2", "--headless"]
    result = runner.invoke(app, [*argv, "--metrics", "nowhere:port"])
    assert result.exit_code == 2
    one_line_error(result, "bad --metrics address")


def test_with_stream_metrics_are_on_its_address(model: Path, tmp_path: Path) -> None:
    from edgeseg.session import RunOptions, build_session

    base = {
        "model": model,
        "source": "synthetic://?size=32x32&frames=5",
        "headless": True,
        "record": tmp_path / "rec",
        "record_segment": 1.0,
    }
    session = build_session(RunOptions(**base, stream="127.0.0.1:0"))  # type: ignore[arg-type]
    try:
        servers = [s for s in session.sinks if isinstance(s, MjpegServer)]
        assert len(servers) == 1 and servers[0].frames
        assert servers[0].metrics is session.metrics and servers[0].recordings == tmp_path / "rec"
        status, _, body = get(servers[0].port, "/metrics")
        assert status == 200 and "edgeseg_model_info" in parse(body)
        page = get(servers[0].port, "/")[2]
        assert b'href="/metrics"' in page and b'href="/recordings/"' in page
    finally:
        session.close()
    # --metrics on another address as well: a second server, /metrics only.
    session = build_session(RunOptions(**base, stream="127.0.0.1:0", metrics="127.0.0.1:1"))  # type: ignore[arg-type]
    session.close()
    assert [s.frames for s in session.sinks if isinstance(s, MjpegServer)] == [True, False]


def test_the_outputs_give_the_metrics_what_they_read(tmp_path: Path) -> None:
    """The recorder, the CSV and the mask sinks are BoundedOutputs (they have a ring): the
    one interface the metrics read them through. A recorder that stops being one loses its
    rows in /metrics, so this fails first."""
    from edgeseg.runtime.metrics import BoundedOutput
    from edgeseg.runtime.sinks import MaskSink, VideoSink

    outputs = [
        VideoSink(f"{tmp_path / 'rec'}/", fps=10, segment_seconds=1.0, max_bytes="10M"),
        CsvSink(tmp_path / "f.csv", ("frame",), max_bytes=100_000),
        MaskSink(tmp_path / "masks", max_bytes="1M"),
    ]
    try:
        for sink in outputs:
            assert isinstance(sink, BoundedOutput), type(sink).__name__
            assert sink.ring is not None and sink.ring.max_bytes
        metrics = RunMetrics(sys_root=tmp_path)
        metrics.watch_outputs(outputs)
        fam = parse(metrics.exposition())
        for name in ("recording", "csv", "mask"):
            assert sample(fam, "edgeseg_ring_max_bytes", output=name) > 0, name
        for folder in (tmp_path / "rec", tmp_path, tmp_path / "masks"):
            assert sample(fam, "edgeseg_disk_free_bytes", path=str(folder)) > 0, folder
        assert sample(fam, "edgeseg_recorder_bytes") == 0
    finally:
        for sink in outputs:
            sink.close()
