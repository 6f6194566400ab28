"""Weeks unattended: segmented recordings that survive a kill, size-bounded output folders,
a full disk that stops recording only."""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import frame_index, index_frame, read_video

from edgeseg.errors import DataError
from edgeseg.imageio import read_image
from edgeseg.runtime import sinks
from edgeseg.runtime.sinks import CsvSink, MaskSink, VideoSink
from edgeseg.runtime.storage import Ring
from edgeseg.sizes import parse_bytes

cv2 = pytest.importorskip("cv2")

TESTS = Path(__file__).resolve().parent
OURS = re.compile(r"edgeseg-\d{8}-\d{6}-(\d{6,})\.(mp4|mkv|avi)")
FOREIGN = {
    "notes.txt": b"keep me",
    "holiday.mp4": b"not ours",
    "edgeseg-final-cut.mp4": b"not ours either",
    "edgeseg-20260101-000000-000001.mp4.bak": b"a backup",
}
LABELS = np.zeros((48, 160), np.uint8)


def segments(folder: Path) -> list[Path]:
    """Our closed segments in ``folder``, in sequence order."""
    found = [p for p in folder.iterdir() if OURS.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(OURS.fullmatch(p.name)[1]))  # type: ignore[index]


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial." in p.name)


def indexes(path: Path) -> list[int]:
    return [frame_index(f) for f in read_video(path, rgb=True)]


def put_foreign(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in FOREIGN.items():
        (folder / name).write_bytes(data)


def assert_foreign_intact(folder: Path) -> None:
    for name, data in FOREIGN.items():
        assert (folder / name).read_bytes() == data, name


# ---------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("500M", 500 << 20),
        ("2G", 2 << 30),
        ("2g", 2 << 30),
        (" 1.5 GiB ", int(1.5 * (1 << 30))),
        ("64KB", 64 << 10),
        ("1T", 1 << 40),
        ("20%", 200),
        ("100%", 1000),
        (4096, 4096),
    ],
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert parse_bytes(text, free_bytes=1000) == expected


@pytest.mark.parametrize("text", ["", "G", "2X", "-5", "0", "0M", "1e9", "five", "2 G B", "0.1"])
def test_parse_bytes_errors(text: str) -> None:
    with pytest.raises(DataError, match="size") as info:
        parse_bytes(text, free_bytes=1000)
    assert "\n" not in str(info.value)


def test_parse_bytes_share_errors() -> None:
    with pytest.raises(DataError, match="needs a folder"):
        parse_bytes("20%")
    with pytest.raises(DataError, match="0-100%"):
        parse_bytes("150%", free_bytes=1000)
    with pytest.raises(DataError, match="0-100%"):
        parse_bytes("0%", free_bytes=1000)
    with pytest.raises(DataError, match="disk is full"):
        parse_bytes("1%", free_bytes=10)


def test_ring_share_counts_our_files_as_free(tmp_path: Path) -> None:
    (tmp_path / "000001.png").write_bytes(b"x" * 1000)
    ring = Ring(tmp_path, r"\d{6}\.png", "100%")
    import shutil

    free = shutil.disk_usage(tmp_path).free
    assert ring.total == 1000
    assert abs(ring.max_bytes - (free + 1000)) < 1 << 20  # the disk may move a little


def test_ring_deletes_oldest_of_ours_only(tmp_path: Path) -> None:
    put_foreign(tmp_path)
    for i in range(5):
        (tmp_path / f"{i:06d}.png").write_bytes(b"x" * 100)
    ring = Ring(tmp_path, r"\d{6}\.png", 250)
    assert ring.names() == [f"{i:06d}.png" for i in range(5)] and ring.total == 500
    gone = ring.enforce()
    assert [p.name for p in gone] == ["000000.png", "000001.png", "000002.png"]
    assert ring.total == 200 and len(ring) == 2
    (tmp_path / "000003.png").write_bytes(b"y" * 120)  # rewritten: now the newest
    ring.add(tmp_path / "000003.png")
    (tmp_path / "000005.png").write_bytes(b"x" * 100)
    ring.add(tmp_path / "000005.png")
    ring.enforce()
    assert ring.names() == ["000003.png", "000005.png"]  # 000004 was the oldest
    assert ring.enforce(reserve=100) and ring.names() == ["000005.png"]
    assert_foreign_intact(tmp_path)
    with pytest.raises(ValueError, match="not a file of this ring"):
        ring.add(tmp_path / "notes.txt")


# ---------------------------------------------------------------------------- segments


def test_segments_named_sortably_and_complete(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    with VideoSink(f"{folder}/", fps=10, segment_seconds=0.5) as sink:
        assert sink.segmented and sink.fmt == "mp4"
        for i in range(12):
            sink.write(i, index_frame(i), LABELS, {})
            assert not partials(folder) or sink.segments == i // 5  # one open at a time
        assert sink.segments == 2 and len(partials(folder)) == 1
    assert partials(folder) == [] and sink.segments == 3 and sink.warnings == []
    found = segments(folder)
    assert [indexes(p) for p in found] == [list(range(5)), list(range(5, 10)), [10, 11]]
    assert sink.last_segment == found[-1]
    assert [p.name for p in found] == sorted(p.name for p in found)


@pytest.mark.parametrize("fmt", ["mp4", "avi"])
def test_segment_formats_and_folder_rules(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "existing.mp4").mkdir()  # an existing folder, whatever its name
    for target in (tmp_path / "nosuffix", tmp_path / "existing.mp4"):
        with VideoSink(target, fps=4, segment_seconds=1, fmt=fmt) as sink:
            for i in range(6):
                sink.write(i, index_frame(i), LABELS, {})
        found = segments(target)
        assert [p.suffix for p in found] == [f".{fmt}"] * 2
        assert [indexes(p) for p in found] == [[0, 1, 2, 3], [4, 5]]


def test_segment_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="need a folder"):
        VideoSink(tmp_path / "run.mp4", fps=10, max_bytes="1G")
    with pytest.raises(DataError, match="need a folder"):
        VideoSink(tmp_path / "run.mp4", fps=10, segment_seconds=5)
    with pytest.raises(DataError, match="mp4, mkv or avi"):
        VideoSink(tmp_path / "rec", fmt="webm")
    with pytest.raises(DataError, match="more than 0 seconds"):
        VideoSink(tmp_path / "rec", segment_seconds=0)
    with pytest.raises(DataError, match="bad size"):
        VideoSink(tmp_path / "rec", max_bytes="lots")
    with pytest.raises(DataError, match="the name says mp4"):
        VideoSink(tmp_path / "run.mp4", fmt="avi")


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from helpers import index_frame
    from edgeseg.runtime.sinks import VideoSink

    sink = VideoSink({folder!r}, fps=10, segment_seconds=0.4, fmt={fmt!r})
    labels = np.zeros((48, 160), np.uint8)
    for i in range(1000):
        sink.write(i, index_frame(i), labels, {{}})
        print(i, flush=True)  # frame i is written (and the segment before it closed)
    """
)
PER_SEGMENT = 4  # 0.4 s at 10 fps


def record_until_killed(folder: Path, fmt: str, frames: int) -> None:
    """Run a recording child, SIGKILL it once it reports ``frames`` frames written."""
    code = CHILD.format(tests=str(TESTS), folder=f"{folder}/", fmt=fmt)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        for _ in range(frames):
            line = proc.stdout.readline()
            assert line, proc.stderr.read().decode() if proc.stderr else "child ended"
        os.kill(proc.pid, signal.SIGKILL)  # at whatever the child is doing now
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_loses_at_most_the_open_segment(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fmt = ("mp4", "avi")[seed % 2]
    folder = tmp_path / "rec"
    put_foreign(folder)
    confirmed = int(rng.integers(1, 30))
    record_until_killed(folder, fmt, confirmed)

    found = segments(folder)
    assert len(partials(folder)) <= 1  # the open segment, under its temporary name
    got = [indexes(p) for p in found]
    for j, frames in enumerate(got):  # every closed segment whole and in order
        assert frames == list(range(j * PER_SEGMENT, (j + 1) * PER_SEGMENT)), (j, frames)
    kept = sum(len(f) for f in got)
    # Only the open segment is lost: a segment closes when the first frame past it comes.
    assert kept >= confirmed - PER_SEGMENT
    assert_foreign_intact(folder)

    # A restart deletes the partial file, says so, and continues the sequence.
    had_partial = bool(partials(folder))
    with VideoSink(folder, fps=10, segment_seconds=0.4, fmt=fmt) as sink:
        assert partials(folder) == []
        assert any("unfinished" in w for w in sink.warnings) == had_partial
        for i in range(PER_SEGMENT):
            sink.write(i, index_frame(500 + i), LABELS, {})
    after = segments(folder)
    assert after[: len(found)] == found and len(after) == len(found) + 1
    assert indexes(after[-1]) == [500, 501, 502, 503]
    assert_foreign_intact(folder)


def test_ring_bounds_segments_across_restarts(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    put_foreign(folder)
    bound = 150_000
    first_run: list[str] = []
    for run in range(2):
        with VideoSink(folder, fps=10, segment_seconds=0.3, fmt="avi", max_bytes=bound) as sink:
            for i in range(60):
                frame = index_frame(i)
                frame[:, :, 1] = np.random.default_rng(i).integers(0, 255, frame.shape[:2])
                sink.write(i, frame, LABELS, {})
                ours = segments(folder)
                assert sum(p.stat().st_size for p in ours) <= bound
        ours = [p.name for p in segments(folder)]
        assert 2 <= len(ours) < 20 and sink.ring is not None and sink.ring.deleted > 0
        assert_foreign_intact(folder)
        if run == 0:
            first_run = ours
        else:  # the earlier run's segments were the oldest: gone first
            assert not set(first_run) & set(ours)
            seqs = [int(OURS.fullmatch(n)[1]) for n in ours]  # type: ignore[index]
            assert min(seqs) > max(int(OURS.fullmatch(n)[1]) for n in first_run)  # type: ignore[index]


# ---------------------------------------------------------------------------- masks, CSV


def test_mask_ring(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    put_foreign(folder)
    (folder / ".000003.partial.png").write_bytes(b"cut")  # a killed run's
    labels = np.zeros((48, 64), np.uint8)
    labels[8:20, 8:20] = 1
    size = len(cv2.imencode(".png", labels)[1])
    with MaskSink(folder, max_bytes=size * 5) as sink:
        assert any("unfinished" in w for w in sink.warnings)
        for i in range(12):
            sink.write(i, index_frame(i), labels, {})
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))
    assert names == [f"{i:06d}.png" for i in range(7, 12)]
    np.testing.assert_array_equal(read_image(folder / "000011.png"), labels)
    assert_foreign_intact(folder)


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_csv_rotation_keeps_headers_and_a_bounded_total(tmp_path: Path) -> None:
    path = tmp_path / "stats.csv"
    (tmp_path / "stats.old.csv").write_text("foreign\n")
    fields = ("frame", "objects", "note")
    bound = 2000
    for run in range(2):
        with CsvSink(path, fields, max_bytes=bound, file_bytes=300) as sink:
            for i in range(100):
                sink.write(
                    i,
                    index_frame(0),
                    LABELS,
                    {"frame": 1000 * run + i, "objects": i, "note": "x" * 20},
                )
                files = [path, *tmp_path.glob("stats.*.csv")]
                ours = [p for p in files if p.name != "stats.old.csv"]
                assert sum(p.stat().st_size for p in ours) <= bound
                assert path.stat().st_size <= 300
        rotated = sorted(tmp_path.glob("stats.[0-9]*.csv"), key=lambda p: int(p.name.split(".")[1]))
        assert len(rotated) >= 3
        frames = []
        for p in [*rotated, path]:
            rows = read_rows(p)
            assert rows[0] == list(fields) and all(len(r) == 3 for r in rows[1:]), p
            frames += [int(r[0]) for r in rows[1:]]
        assert frames == sorted(frames) and frames[-1] == 1000 * run + 99  # newest kept
    assert (tmp_path / "stats.old.csv").read_text() == "foreign\n"


def test_csv_of_an_earlier_run_is_rotated_aside(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    path.write_text("frame\n7\n")
    with CsvSink(path, ("frame",), max_bytes="1M") as sink:
        sink.write(0, index_frame(0), LABELS, {"frame": 8})
    assert read_rows(tmp_path / "run.1.csv") == [["frame"], ["7"]]
    assert read_rows(path) == [["frame"], ["8"]]
    with pytest.raises(DataError, match="needs a bound"):
        CsvSink(path, ("frame",), file_bytes=100)
    with pytest.raises(DataError, match="does not fit"):
        CsvSink(path, ("frame",), max_bytes=100, file_bytes=200)


# ---------------------------------------------------------------------------- full disk


def failing_writers(monkeypatch: pytest.MonkeyPatch, budgets: list[int]) -> None:
    """Video writers that fail like a full disk: the n-th one opened after ``budgets[n]``
    frames (the last budget for all later ones)."""
    from edgeseg.runtime.sinks import video
    from edgeseg.runtime.sinks.recorder import VideoWriter

    opened = [0]

    class FailingWriter(VideoWriter):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.ok = budgets[min(opened[0], len(budgets) - 1)]
            opened[0] += 1

        def write(self, rgb: np.ndarray, t: float) -> None:
            if self.ok <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "segment")
            self.ok -= 1
            super().write(rgb, t)

    monkeypatch.setattr(video, "VideoWriter", FailingWriter)


def test_full_disk_stops_recording_without_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_writers(monkeypatch, [6, 2])
    folder = tmp_path / "rec"
    sink = VideoSink(folder, fps=10, segment_seconds=0.4)
    for i in range(12):
        sink.write(i, index_frame(i), LABELS, {})  # never raises
    sink.close()
    assert sink.stopped is not None and sink.stopped.startswith("recording stopped: disk full")
    assert len(sink.warnings) == 1 and "\n" not in sink.warnings[0]
    assert [indexes(p) for p in segments(folder)] == [[0, 1, 2, 3]]  # the closed one stays
    assert partials(folder) == []
    with pytest.raises(DataError, match="closed"):
        sink.write(12, index_frame(12), LABELS, {})


def test_mask_and_csv_stop_on_a_failing_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    masks = MaskSink(tmp_path / "masks")
    stats = CsvSink(tmp_path / "stats.csv", ("frame",))
    for i in range(3):
        masks.write(i, index_frame(i), LABELS, {})
        stats.write(i, index_frame(i), LABELS, {"frame": i})
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        real_write(fd, data[:3])  # part of a row reaches the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    monkeypatch.setattr(sinks.masks, "open", _open_full, raising=False)
    for i in range(3, 6):
        masks.write(i, index_frame(i), LABELS, {})
        stats.write(i, index_frame(i), LABELS, {"frame": i})
    monkeypatch.undo()
    masks.close()
    stats.close()
    assert masks.stopped and masks.stopped.startswith("saving masks stopped: disk full")
    assert stats.stopped and stats.stopped.startswith("CSV stopped: disk full")
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
    assert read_rows(tmp_path / "stats.csv") == [["frame"], ["0"], ["1"], ["2"]]  # whole rows


def _open_full(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
    if "w" in mode:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
    return open(file, mode, *args, **kwargs)  # type: ignore[call-overload]


@contextlib.contextmanager
def tiny_disk(root: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``root`` (skips without root or mount)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a tmpfs")
    root.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
        capture_output=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], capture_output=True, timeout=30)


@pytest.mark.parametrize("fmt", ["mp4", "avi"])
def test_real_full_disk(tmp_path: Path, fmt: str) -> None:
    with tiny_disk(tmp_path / "disk", "400k") as disk:
        video = VideoSink(disk / "rec", fps=10, segment_seconds=0.4, fmt=fmt)
        masks = MaskSink(disk / "masks")
        stats = CsvSink(disk / "stats.csv", ("frame", "note"))
        rng = np.random.default_rng(0)
        for i in range(300):
            frame = index_frame(i)
            frame[:, :, 1] = rng.integers(0, 255, frame.shape[:2])  # hard to compress
            labels = rng.integers(0, 3, (48, 160), dtype=np.uint8)
            for sink in (video, masks, stats):
                sink.write(i, frame, labels, {"frame": i, "note": "x" * 200})
        for sink in (video, masks, stats):
            sink.close()
        assert video.stopped and "disk full" in video.stopped
        assert masks.stopped and "disk full" in masks.stopped
        assert stats.stopped and "disk full" in stats.stopped
        got = [indexes(p) for p in segments(disk / "rec")]
        assert got and all(
            f == list(range(j * 4, j * 4 + 4)) for j, f in enumerate(got)
        )  # every closed segment whole
        assert partials(disk / "rec") == [] and partials(disk / "masks") == []
        rows = read_rows(disk / "stats.csv")
        assert rows[0] == ["frame", "note"] and all(len(r) == 2 for r in rows[1:])
        for p in (disk / "masks").iterdir():
            assert read_image(p).shape == (48, 160)


def test_full_disk_stops_recording_only_in_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline goes on (inference, stream, CSV) while the recording has stopped."""
    from helpers import probe_model

    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.runtime.capture import CaptureThread
    from edgeseg.runtime.pipeline import run_pipeline
    from edgeseg.runtime.sinks import MjpegServer
    from edgeseg.runtime.streams import open_stream

    try:
        from edgeseg.runtime.backends import load_backend

        backend = load_backend(probe_model(tmp_path / "probe.tflite"))
    except Exception as exc:  # no LiteRT here
        pytest.skip(f"no LiteRT: {exc}")
    failing_writers(monkeypatch, [2])
    video = VideoSink(tmp_path / "rec", fps=10, segment_seconds=10)
    stats = CsvSink(tmp_path / "stats.csv")
    server = MjpegServer(port=0)
    segmenter = Segmenter(backend, ModelMetadata(input_size=(8, 8)))
    capture = CaptureThread(open_stream("synthetic://?size=32x32&frames=10&seed=1")).start()
    summary = run_pipeline(capture, segmenter, [video, stats, server])
    assert summary.frames == 10 and summary.error is None
    assert any("recording stopped: disk full" in w for w in summary.warnings)
    assert len(read_rows(tmp_path / "stats.csv")) == 11
    assert video.frames == 2
    assert server.closed  # closed by the run, after serving every frame


# ---------------------------------------------------------------------------- edgeseg run


def test_run_records_segments_within_a_ring_and_bounds_every_output(tmp_path: Path) -> None:
    """The options reach the sinks: a folder --record gets segments, the ring and the CSV
    rotation hold their bounds, and a bad size or a bound on a file name is one line."""
    from helpers import bright_model, one_line_error
    from typer.testing import CliRunner

    from edgeseg.cli.main import app

    runner = CliRunner()
    model = bright_model(tmp_path / "bright.tflite")
    rec, masks, table = tmp_path / "rec", tmp_path / "masks", tmp_path / "frames.csv"
    put_foreign(rec)
    args = ["run", str(model), "--source", "synthetic://?size=96x128&frames=60&seed=1"]
    args += ["--headless", "--record", f"{rec}/", "--record-segment", "0.5", "--fps", "10"]
    args += ["--record-max-bytes", "60K", "--save-masks", str(masks)]
    args += ["--masks-max-bytes", "20K", "--csv", str(table), "--csv-max-bytes", "6K"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ours = segments(rec)
    assert len(ours) >= 2
    assert sum(p.stat().st_size for p in ours) <= 60 * 1024
    assert int(OURS.fullmatch(ours[0].name)[1]) > 0  # type: ignore[index]  # older ones went
    for name, data in FOREIGN.items():
        assert (rec / name).read_bytes() == data
    assert sum(p.stat().st_size for p in masks.glob("*.png")) <= 20 * 1024
    rotated = sorted(tmp_path.glob("frames*.csv"))
    assert len(rotated) >= 2 and sum(p.stat().st_size for p in rotated) <= 6 * 1024
    for path in rotated:
        assert path.read_text().startswith("frame,")

    bad = runner.invoke(
        app, [*args[:4], "--headless", "--record", f"{rec}/", "--record-max-bytes", "lots"]
    )
    assert bad.exit_code != 0
    one_line_error(bad, "lots")
    on_file = runner.invoke(
        app,
        [
            *args[:4],
            "--headless",
            "--record",
            str(tmp_path / "one.mp4"),
            "--record-max-bytes",
            "1M",
        ],
    )
    assert on_file.exit_code != 0
    one_line_error(on_file)
