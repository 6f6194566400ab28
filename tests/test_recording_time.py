"""Recordings in real time: segments close after their length in wall-clock time (live) or in
the file's own time (files), frames carry their timestamps into the container, a SIGKILL of a
real `edgeseg run` loses at most the open segment, and bad settings are loud at start-up.

Every recording is read back by readers other than the writer: OpenCV (its own FFmpeg build)
decodes every frame, PyAV's demuxer gives the container's timestamps, and one segment is
played in headless Chromium. No TensorFlow: the model is the doctor's 300-byte probe.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, probe_model

from edgeseg.core.segmenter import Segmenter

cv2 = pytest.importorskip("cv2")
av = pytest.importorskip("av")
pytest.importorskip("ai_edge_litert")

from typer.testing import CliRunner  # noqa: E402

from edgeseg.cli.main import app  # noqa: E402

runner = CliRunner()
OURS = re.compile(r"edgeseg-\d{8}-\d{6}-(\d{6,})\.(mp4|mkv|avi)")
SEGMENT_S = 1.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return probe_model(tmp_path_factory.mktemp("model") / "probe.tflite", recipe="fp32")


def segments(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if OURS.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(OURS.fullmatch(p.name)[1]))  # type: ignore[index]


def decoded_by_opencv(path: Path) -> int:
    """Frames OpenCV decodes from ``path`` (0 if it does not open)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened():
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


def timestamps(path: Path) -> tuple[list[float], float]:
    """(each frame's presentation time, the stream's duration), seconds, by PyAV's demuxer."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(float(p.pts * p.time_base) for p in container.demux(stream) if p.size)
        return pts, float(stream.duration * stream.time_base)


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def check_segments_against_wall_time(rec: Path, stats: Path, rate: float) -> list[int]:
    """Every segment plays in OpenCV with as many frames as the container has; the frames
    are the CSV's, in order; each closed segment's recorded duration is within 5% of the time
    from its first frame's capture to the next segment's first (the wall time it covers); it
    closed after its length (give or take one frame interval). Returns the frames per
    segment."""
    rows = csv_rows(stats)[1:]
    times = [float(r[1]) for r in rows]  # timestamp_s: capture time since the run's start
    found = segments(rec)
    assert len(found) >= 2, found
    counts, starts, durations = [], [], []
    first = 0
    for path in found:
        pts, duration = timestamps(path)
        assert decoded_by_opencv(path) == len(pts) > 0, path
        assert pts[0] == 0.0 and bool(np.all(np.diff(pts) > 0))
        counts.append(len(pts))
        starts.append(first)
        durations.append(duration)
        first += len(pts)
    assert first == len(rows)  # every processed frame recorded, none twice
    period = 1.0 / rate
    late = max(np.diff(times), default=period)  # a busy machine delays some frames
    for i in range(len(found) - 1):
        wall = times[starts[i + 1]] - times[starts[i]]
        assert durations[i] == pytest.approx(wall, rel=0.05), (i, durations[i], wall)
        assert SEGMENT_S - late <= durations[i] <= SEGMENT_S + late, (i, durations[i])
        # frames inside a segment at their capture offsets (to a millisecond)
        pts, _ = timestamps(found[i])
        offsets = [times[starts[i] + k] - times[starts[i]] for k in range(len(pts))]
        assert np.allclose(pts, offsets, atol=2e-3), i
    return counts


@pytest.mark.parametrize("fps", [5, 10, 25, 30])
def test_live_segments_close_in_wall_clock_time(model: Path, tmp_path: Path, fps: int) -> None:
    rec, stats = tmp_path / "rec", tmp_path / "s.csv"
    frames = int(fps * 3.4)
    args = ["run", str(model), "--source", f"synthetic://?size=48x64&fps={fps}&frames={frames}"]
    args += ["--headless", "--backend", "litert", "--record", f"{rec}/", "--csv", str(stats)]
    args += ["--record-segment", str(SEGMENT_S)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    counts = check_segments_against_wall_time(rec, stats, fps)
    # At most the source's rate (a busy machine drops some), never 25 for a 5 FPS source.
    assert all(n <= fps + 1 for n in counts), counts
    rows = csv_rows(stats)[1:]
    span = float(rows[-1][1]) - float(rows[0][1])
    said = re.search(r"recorded (\d+) frames, ([\d.]+) s of video at ([\d.]+) FPS", result.output)
    assert said is not None, result.output
    assert int(said[1]) == len(rows) == sum(counts)
    assert float(said[2]) == pytest.approx(span, abs=2 / fps)  # the time that passed
    # the rate stated is the frames over the seconds of video (the seconds rounded to 0.1)
    assert float(said[3]) == pytest.approx(len(rows) / float(said[2]), rel=0.03)


class SlowSegmenter(Segmenter):
    """A real Segmenter that takes ``delay`` seconds longer per frame (a slow device)."""

    delay = 0.09

    def __call__(self, image: np.ndarray):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return super().__call__(image)


def test_inference_slower_than_the_source(model: Path, tmp_path: Path) -> None:
    """25 FPS in, about 10 processed: the recording holds the frames processed at their
    capture times (variable frame rate), and plays in the time that passed."""
    from edgeseg.runtime.backends import open_model
    from edgeseg.runtime.capture import CaptureThread
    from edgeseg.runtime.pipeline import run_pipeline
    from edgeseg.runtime.sinks import CSV_FIELDS, CsvSink, VideoSink
    from edgeseg.runtime.streams import open_stream

    opened = open_model(model, delegate="cpu")
    segmenter = SlowSegmenter(opened.backend, opened.meta)
    rec, stats = tmp_path / "rec", tmp_path / "s.csv"
    stream = open_stream("synthetic://?size=48x64&fps=25&frames=90")
    video = VideoSink(rec, segment_seconds=SEGMENT_S)
    video.prepare(live=stream.info.live, fps=stream.info.fps, size=stream.info.size)
    sinks = [CsvSink(stats, CSV_FIELDS), video]
    summary = run_pipeline(CaptureThread(stream).start(), [segmenter], sinks)
    assert summary.dropped > 20  # frames were dropped: the source is faster
    rate = summary.frames / summary.seconds
    assert rate < 15
    counts = check_segments_against_wall_time(rec, stats, rate)
    assert all(n < 15 for n in counts)  # ~10 a segment, not 25
    pts, _ = timestamps(segments(rec)[0])
    gaps = np.diff(pts)
    assert np.median(gaps) > 0.06  # 1/25 s apart (0.04) would be every frame of the source
    assert summary.notes and "FPS (frames as captured)" in summary.notes[0]


def write_clip(path: Path, n: int, fps: float) -> Path:
    """An MJPG .avi of ``n`` 48x64 frames at ``fps`` (frame i's brightness encodes i)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), (i * 7) % 256, np.uint8))
    writer.release()
    return path


def test_video_file_records_at_its_own_rate_and_time(model: Path, tmp_path: Path) -> None:
    """A 12 FPS file processed as fast as it goes: segments of 1 s of the file's time, 12
    frames each, 1/12 s apart: the file's rate, not 25 and not the processing rate."""
    clip = write_clip(tmp_path / "clip12.avi", 30, 12)
    rec = tmp_path / "rec"
    args = ["run", str(model), "--source", str(clip), "--headless", "--backend", "litert"]
    args += ["--record", f"{rec}/", "--record-segment", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    found = segments(rec)
    assert len(found) == 3
    got = [timestamps(p) for p in found]
    assert [len(pts) for pts, _ in got] == [12, 12, 6]
    for pts, duration in got[:2]:
        assert duration == pytest.approx(1.0, rel=0.01)
        assert np.allclose(np.diff(pts), 1 / 12, atol=1e-3)
    assert got[2][1] == pytest.approx(0.5, rel=0.01)
    assert [decoded_by_opencv(p) for p in found] == [12, 12, 6]
    assert "at 12.0 FPS (frames at the file's own times)" in result.output


def test_one_recording_plays_in_chromium(model: Path, tmp_path: Path) -> None:
    """A closed segment is H.264 yuv420p, faststart (the index first), and a browser's
    <video> loads it with its duration."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    rec = tmp_path / "rec"
    clip = write_clip(tmp_path / "clip.avi", 24, 8)
    args = ["run", str(model), "--source", str(clip), "--headless", "--backend", "litert"]
    result = runner.invoke(app, [*args, "--record", f"{rec}/", "--record-segment", "2"])
    assert result.exit_code == 0, result.output
    segment = segments(rec)[0]
    data = segment.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart
    with av.open(str(segment)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.name, ctx.pix_fmt) == ("h264", "yuv420p")
    page = tmp_path / "page.html"
    shutil.copy(segment, tmp_path / "seg.mp4")
    page.write_text(
        '<!doctype html><video id="v" src="seg.mp4" muted preload="auto"></video>'
        '<pre id="out">pending</pre><script>const v = document.getElementById("v");'
        'const out = document.getElementById("out");'
        'v.addEventListener("loadeddata", () => { out.textContent = "loaded " + v.duration'
        ' + " " + v.readyState + " " + v.videoWidth + "x" + v.videoHeight; });'
        'v.addEventListener("error", () => { out.textContent = "error " + v.error.code; });'
        "</script>"
    )
    with tempfile.TemporaryDirectory(prefix="edgeseg-chromium-") as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--allow-file-access-from-files", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    shown = re.search(r'<pre id="out">([^<]*)', done.stdout)
    assert shown is not None, done.stderr[-2000:]
    words = shown[1].split()
    assert words[0] == "loaded", shown[1]
    assert float(words[1]) == pytest.approx(2.0, rel=0.05)  # 16 frames at 8 FPS
    assert int(words[2]) >= 2 and words[3] == "64x48"


# ---------------------------------------------------------------------------- SIGKILL


def _kill_run(args: list[str], stats: Path, rows: int, seconds: float = 90) -> None:
    """Start a real `edgeseg run` child, SIGKILL it once the CSV has ``rows`` rows."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg.cli.main", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if stats.exists() and stats.read_bytes().count(b"\n") > rows:  # the header too
                break
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "ended")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # at whatever the child is doing now
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _check_after_kill(rec: Path, stats: Path, per_segment: float) -> None:
    """Every closed segment plays (OpenCV decodes all its frames); the playable frames are at
    least the processed ones less one segment's worth; the CSV lost at most its last row."""
    text = stats.read_text()
    lines = text.split("\n")
    header = lines[0].split(",")
    whole = [line for line in lines[1:-1]]  # ended by a newline
    assert all(len(line.split(",")) == len(header) for line in whole)
    tail = lines[-1]  # what follows the last newline: "" or a part of one row
    assert tail == "" or len(tail.split(",")) <= len(header)
    processed = len(whole)
    playable = 0
    for path in segments(rec):
        pts, _ = timestamps(path)
        assert decoded_by_opencv(path) == len(pts) > 0, path
        playable += len(pts)
    partial = [p for p in rec.iterdir() if ".partial." in p.name]
    assert len(partial) <= 1
    assert playable <= processed + 1  # a frame may be recorded before its row is seen
    assert playable >= processed - per_segment, (playable, processed, per_segment)


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_of_a_live_run(model: Path, tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fps = (10, 25)[seed % 2]
    rows = int(rng.integers(2, 3 * fps))  # up to 3 s in: 0 to 6 segments closed
    rec, stats = tmp_path / "rec", tmp_path / "s.csv"
    args = ["run", str(model), "--source", f"synthetic://?size=48x64&fps={fps}"]
    args += ["--headless", "--backend", "litert", "--csv", str(stats)]
    args += ["--record", f"{rec}/", "--record-segment", "0.5"]
    _kill_run(args, stats, rows)
    # one segment's worth: 0.5 s of frames, and the frame that would have closed it
    _check_after_kill(rec, stats, 0.5 * fps + 1)


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_of_a_file_run(model: Path, tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    clip = write_clip(tmp_path / "clip.avi", 400, 20)
    rows = int(rng.integers(5, 300))
    rec, stats = tmp_path / "rec", tmp_path / "s.csv"
    args = ["run", str(model), "--source", str(clip), "--headless", "--backend", "litert"]
    args += ["--csv", str(stats), "--record", f"{rec}/", "--record-segment", "0.5"]
    args += ["--workers", "1"]
    _kill_run(args, stats, rows)
    _check_after_kill(rec, stats, 0.5 * 20 + 1)


# ---------------------------------------------------------------------------- settings


def test_a_bound_below_one_segment_is_refused_at_start(model: Path, tmp_path: Path) -> None:
    base = ["run", str(model), "--source", "synthetic://?size=96x128&fps=10&frames=5"]
    base += ["--headless", "--backend", "litert", "--record", f"{tmp_path / 'rec'}/"]
    small = runner.invoke(app, [*base, "--record-max-bytes", "20K"])
    one_line_error(small, "smaller than one segment", "--record-max-bytes")
    assert not list((tmp_path / "rec").glob("edgeseg-*"))
    long = runner.invoke(app, [*base, "--record-max-bytes", "1M", "--record-segment", "600"])
    one_line_error(long, "smaller than one segment", "600 s")
    few = runner.invoke(app, [*base, "--record-max-bytes", "150K", "--record-segment", "10"])
    assert few.exit_code == 0, few.output
    assert "keeps as few as 2 segment(s)" in few.output


def test_a_folder_name_with_a_dot_records_segments(model: Path, tmp_path: Path) -> None:
    target = tmp_path / "name.v2"
    args = ["run", str(model), "--source", "synthetic://?size=48x64&frames=6", "--headless"]
    result = runner.invoke(app, [*args, "--backend", "litert", "--record", f"{target}/"])
    assert result.exit_code == 0, result.output
    assert target.is_dir() and len(segments(target)) == 1
    assert f"recording segments into the folder {target}/" in result.output


def test_a_clock_that_goes_back_continues(tmp_path: Path) -> None:
    """The next video of a folder starts its clock at 0 again: the recording goes on after
    the last frame, one usual interval later."""
    from edgeseg.runtime.sinks import FrameRecord, VideoSink

    labels = np.zeros((48, 64), np.uint8)
    with VideoSink(tmp_path / "two.mp4") as sink:
        for k, clock in enumerate([0.0, 0.1, 0.2, 0.0, 0.1]):
            record = FrameRecord(k, 0.0, 0, 0, 0, 0, 0, 0, 0, clock_s=clock)
            sink.write(k, np.full((48, 64, 3), 40 * k, np.uint8), labels, record)
    pts, duration = timestamps(tmp_path / "two.mp4")
    assert np.allclose(pts, [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-3)
    assert duration == pytest.approx(0.5, abs=1e-3)


def test_an_outage_closes_the_segment_at_its_last_frame(tmp_path: Path) -> None:
    """A camera lost for longer than a segment: the segment ends one interval after its last
    frame instead of showing that frame for the whole outage."""
    from edgeseg.runtime.sinks import FrameRecord, VideoSink

    labels = np.zeros((48, 64), np.uint8)
    clocks = [100.0, 100.1, 100.2, 100.3, 130.0, 130.1]
    with VideoSink(tmp_path / "rec", segment_seconds=2.0) as sink:
        sink.prepare(live=True, fps=10, size=(48, 64))
        for k, clock in enumerate(clocks):
            if k == 4:
                sink.status("camera lost, retrying since 12:00:00")
                sink.status(None)
            record = FrameRecord(k, 0.0, 0, 0, 0, 0, 0, 0, 0, clock_s=clock)
            sink.write(k, np.full((48, 64, 3), 40 * k, np.uint8), labels, record)
    found = segments(tmp_path / "rec")
    assert [len(timestamps(p)[0]) for p in found] == [4, 2]
    assert timestamps(found[0])[1] == pytest.approx(0.4, abs=1e-3)
    assert sink.notes and "6 frames, 0.6 s of video" in sink.notes[0]
    # In one file, the outage is cut out of its time.
    with VideoSink(tmp_path / "one.mp4") as sink:
        for k, clock in enumerate(clocks):
            if k == 4:
                sink.status("camera lost, retrying since 12:00:00")
            record = FrameRecord(k, 0.0, 0, 0, 0, 0, 0, 0, 0, clock_s=clock)
            sink.write(k, np.full((48, 64, 3), 40 * k, np.uint8), labels, record)
    pts, _ = timestamps(tmp_path / "one.mp4")
    assert np.allclose(pts, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-3)


def test_slow_frames_are_time_that_passed(tmp_path: Path) -> None:
    """Inference slower than a segment (a big model on a Pi): each frame shows until the
    next, segments close on the clock, none is cut short."""
    from edgeseg.runtime.sinks import FrameRecord, VideoSink

    labels = np.zeros((48, 64), np.uint8)
    with VideoSink(tmp_path / "rec", segment_seconds=1.0) as sink:
        sink.prepare(live=True, fps=30, size=(48, 64))
        for k in range(5):
            record = FrameRecord(k, 0.0, 0, 0, 0, 0, 0, 0, 0, clock_s=50.0 + 2.5 * k)
            sink.write(k, np.full((48, 64, 3), 40 * k, np.uint8), labels, record)
    got = [timestamps(p) for p in segments(tmp_path / "rec")]
    assert [len(pts) for pts, _ in got] == [1] * 5
    assert [round(d, 3) for _, d in got[:-1]] == [2.5] * 4


def test_recording_is_not_slowed_by_a_reader(tmp_path: Path) -> None:
    """Closed segments are whole files a reader can open while the next one is written."""
    from edgeseg.runtime.sinks import FrameRecord, VideoSink

    labels = np.zeros((48, 64), np.uint8)
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for p in segments(tmp_path / "rec"):
                seen.append(decoded_by_opencv(p))
            time.sleep(0.01)

    (tmp_path / "rec").mkdir()
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with VideoSink(tmp_path / "rec", segment_seconds=0.5) as sink:
            for k in range(30):
                record = FrameRecord(k, 0.0, 0, 0, 0, 0, 0, 0, 0, clock_s=k / 10)
                sink.write(k, np.full((48, 64, 3), 8 * k, np.uint8), labels, record)
    finally:
        stop.set()
        thread.join()
    assert seen and set(seen) <= {5}  # a reader only ever sees whole segments
