"""Soak: `edgeseg run` over many frames with every growing output on, memory and speed steady.

`edgeseg run` segments N frames (default 10,000) of `synthetic://` at 512² with a small int8
model that marks the bright nuclei (a 3x3 convolution with fixed weights, 256² tiles: the soak
is about the pipeline and its outputs over time, so the objects must look like a real model's
— an untrained U-Net marks tens of thousands of specks — and the model must not dominate),
recording into a folder of segments with a ring bound small enough to rotate during the run
(--record-max-bytes; the segment being written is not counted), writing the per-frame CSV, and
streaming MJPEG on loopback while a client here reads the stream for the whole run. Every 100
frames (counted from the CSV, which is flushed row by row) the run's resident memory is
sampled from /proc/PID/status.

Printed, and checked against the issue's targets:
- RSS growth after the first 500 frames (max after frame 500 minus the sample at 500): <= 20 MB;
- median FPS over the last 1,000 frames / median over frames 500-1,500: >= 0.95
  (per-frame FPS from the CSV's timestamps, in windows of 100 frames);
- the recording folder never held more than its bound, and it rotated (segments deleted).

    python benchmarks/soak.py [--frames 10000] [--model unet_int8.tflite] [--ring-mb 48]

With --scrape, instead: does scraping /metrics cost the run speed? `edgeseg run` with --csv and
--metrics on loopback, --scrape-frames frames a run, alternately scraped every second (a GET of
/metrics, as a Prometheus server does) and not scraped, --pairs times each (default 3); each
run's FPS is the median of its windows of 100 frames after the first 200 (from the CSV's
timestamps); printed: the medians of each mode and their ratio, checked against <= 2% change,
and beside them the CPU time a frame of the run's process (/proc), which the load of others on
a shared machine blurs far less, and the CPU one scrape costs, measured in-process.

    python benchmarks/soak.py --scrape [--pairs 3] [--scrape-frames 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def build_model(path: Path) -> Path:
    """An int8 256² model that marks pixels brighter than the frame's midrange, as nuclei."""
    import keras
    import numpy as np
    import tensorflow as tf

    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.tflite_file import embed_metadata

    inp = keras.Input((256, 256, 1), batch_size=1)
    out = keras.layers.Conv2D(
        1, 3, padding="same", activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(20.0 / 9),
        bias_initializer=keras.initializers.Constant(-10.0),
    )(inp)  # fmt: skip
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out))
    rng = np.random.default_rng(0)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        [rng.random((1, 256, 256, 1), dtype=np.float32)] for _ in range(8)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    meta = ModelMetadata(input_size=(256, 256), normalization="percentile")
    path.write_bytes(embed_metadata(conv.convert(), meta))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def csv_rows(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


def read_stream(url: str, stop: threading.Event, got: list[int]) -> None:
    """A browser stand-in: read the MJPEG stream until told to stop (bounded by the run)."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                while not stop.is_set():
                    chunk = resp.read(65536)
                    if not chunk:
                        break
                    got[0] += len(chunk)
        except OSError:
            time.sleep(0.5)


def cpu_times() -> tuple[int, int]:
    """(all, steal) jiffies of this machine (/proc/stat): the host's share of a VM's CPU."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[7] if len(fields) > 7 else 0


def folder_bytes(folder: Path) -> int:
    """Bytes of the closed segments (the open one is hidden: ``.edgeseg-….partial.mp4``)."""
    total = 0
    for p in folder.glob("edgeseg-*.mp4"):
        with contextlib.suppress(OSError):  # deleted by the ring meanwhile
            total += p.stat().st_size
    return total


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc/PID/stat), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scraped_run(
    model: Path, tmp: Path, frames: int, scrape: bool, k: int
) -> tuple[float, int, float]:
    """One `edgeseg run` with /metrics served, scraped every second or not: (its FPS, the
    scrapes that answered, its CPU milliseconds a frame after the first 200 frames: what
    the machine's other load blurs far less than the FPS)."""
    table, port = tmp / f"scrape-{k}.csv", free_port()
    cmd = [
        sys.executable, "-m", "edgeseg.cli.main", "run", str(model),
        "--source", f"synthetic://?size=512x512&frames={frames}&seed=11",
        "--headless", "--overlap", "0", "--csv", str(table), "--metrics", f"127.0.0.1:{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answered = 0
    last = b""
    marks: list[tuple[int, float]] = []  # (frames written, CPU seconds), from frame 200 on
    while proc.poll() is None:
        time.sleep(1.0)
        n, used = csv_rows(table), cpu_seconds(proc.pid)
        if n >= 200 and used is not None and proc.poll() is None:
            marks.append((n, used))
        if scrape:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    last = r.read()
                answered += 1
    if proc.returncode != 0:
        err = proc.stderr.read() if proc.stderr else ""
        raise SystemExit(f"edgeseg run failed ({proc.returncode}): {err.strip()[-2000:]}")
    if scrape:  # what was scraped is the Prometheus text format
        from prometheus_client.parser import text_string_to_metric_families

        names = {f.name for f in text_string_to_metric_families(last.decode())}
        assert "edgeseg_frames" in names and "edgeseg_stage_seconds" in names, names
    with table.open() as f:
        stamps = [float(r["timestamp_s"]) for r in csv.DictReader(f)]
    windows = [100 / (stamps[i + 99] - stamps[i]) for i in range(200, len(stamps) - 99, 100)]
    (n0, c0), (n1, c1) = marks[0], marks[-1]
    cpu_ms = (c1 - c0) / (n1 - n0) * 1000 if n1 > n0 else float("nan")
    return statistics.median(windows), answered, cpu_ms


def scrape_cpu_ms(scrapes: int = 200) -> float:
    """CPU milliseconds one scrape of /metrics costs (server and client, both in this process,
    after 2,000 frames were counted): a bound that the machine's load does not blur."""
    from edgeseg.runtime.metrics import RunMetrics
    from edgeseg.runtime.sinks import FrameRecord, MjpegServer

    metrics = RunMetrics()
    for i in range(2000):
        metrics.write(i, None, None, FrameRecord(i, i / 40, 1.0, 20.0, 2.0, 3.0, 30.0, 5, 0))  # type: ignore[arg-type]
    with MjpegServer(port=0, metrics=metrics, frames=False) as server:
        costs = []
        for _ in range(scrapes):
            t = time.process_time()
            with urllib.request.urlopen(server.url, timeout=5) as r:
                r.read()
            costs.append(time.process_time() - t)
    return statistics.median(costs) * 1000


def scrape_main(model: Path, tmp: Path, frames: int, pairs: int) -> int:
    """Alternate scraped and unscraped runs; compare their median FPS."""
    cost = scrape_cpu_ms()
    print(
        f"one scrape of /metrics: {cost:.2f} ms of CPU (median of 200, server and client); "
        f"every second that is {cost / 10:.3f}% of one core"
    )
    fps: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    paired: list[float] = []  # each pair's scraped FPS over its neighbour's unscraped FPS
    k = 0
    for pair in range(pairs):
        # Alternate which mode goes first, so a drift of the machine favours neither.
        got: dict[bool, float] = {}
        for scrape in (pair % 2 == 0, pair % 2 != 0):
            value, answered, cpu_ms = scraped_run(model, tmp, frames, scrape, k)
            k += 1
            got[scrape] = value
            fps[scrape].append(value)
            cpu[scrape].append(cpu_ms)
            print(f"run {k}: {'scraped' if scrape else 'not scraped'} {value:.2f} FPS, "
                  f"{cpu_ms:.2f} ms CPU a frame"
                  + (f" ({answered} scrapes)" if scrape else ""))  # fmt: skip
        paired.append(got[True] / got[False])
    with_, without = statistics.median(fps[True]), statistics.median(fps[False])
    change = with_ / without - 1
    print(
        f"median FPS scraped every second {with_:.2f}, not scraped {without:.2f}: "
        f"{change:+.1%} ({pairs} runs each, {frames} frames of 512², {os.cpu_count()} cores)"
    )
    cpu_with, cpu_without = statistics.median(cpu[True]), statistics.median(cpu[False])
    print(
        f"median CPU a frame scraped {cpu_with:.2f} ms, not scraped {cpu_without:.2f} ms: "
        f"{cpu_with / cpu_without - 1:+.1%}"
    )
    # Each pair's ratio too (neighbouring runs share the machine's state); on 2 cores single
    # runs swing by +-10%, and the pairs show that spread beside the two medians.
    pair_change = statistics.median(paired) - 1
    print(
        "pairs (scraped / not scraped, neighbouring runs): "
        + ", ".join(f"{r:.3f}" for r in paired)
        + f"; median {pair_change:+.1%}"
    )
    ok = abs(change) <= 0.02
    print(f"{'PASS' if ok else 'FAIL'}  FPS change with /metrics scraped every second <= 2%")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--ring-mb", type=float, default=48.0)
    ap.add_argument("--scrape", action="store_true", help="scraped vs not (see above)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--scrape-frames", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    model = args.model or build_model(tmp / "bright_int8.tflite")
    if args.scrape:
        return scrape_main(model, tmp, args.scrape_frames, max(3, args.pairs))
    rec, table = tmp / "recordings", tmp / "frames.csv"
    port = free_port()
    ring = int(args.ring_mb * 1024 * 1024)
    cmd = [
        sys.executable, "-m", "edgeseg.cli.main", "run", str(model),
        "--source", f"synthetic://?size=512x512&frames={args.frames}&seed=11",
        "--headless", "--overlap", "0", "--record", f"{rec}/", "--record-segment", "4",
        "--record-max-bytes", str(ring),
        "--csv", str(table), "--stream", f"127.0.0.1:{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    got = [0]
    reader = threading.Thread(
        target=read_stream, args=(f"http://127.0.0.1:{port}/stream.mjpg", stop, got), daemon=True
    )
    reader.start()
    samples: dict[int, float] = {}
    cpu: dict[int, tuple[int, int]] = {}
    peak_folder = 0
    rotated = False
    seen_segments: set[str] = set()
    next_mark = 100
    while proc.poll() is None:
        n = csv_rows(table)
        while n >= next_mark:
            value = rss_mb(proc.pid)
            if value is not None:
                samples[next_mark] = value
            cpu[next_mark] = cpu_times()
            next_mark += 100
        if rec.is_dir():
            peak_folder = max(peak_folder, folder_bytes(rec))
            names = {p.name for p in rec.glob("edgeseg-*.mp4")}
            rotated = rotated or bool(seen_segments - names)
            seen_segments |= names
        time.sleep(0.2)
    stop.set()
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        print(f"edgeseg run failed ({proc.returncode}): {err.strip()[-2000:]}")
        return 1
    with table.open() as f:
        stamps = [float(r["timestamp_s"]) for r in csv.DictReader(f)]
    n = len(stamps)
    # FPS per window of 100 frames.
    fps = [(100 / (stamps[i + 99] - stamps[i]), i) for i in range(0, n - 99, 100)]
    early = [v for v, i in fps if 500 <= i < 1500]
    late = [v for v, i in fps if i >= n - 1000]
    base = samples.get(500)
    growth = max(v for k, v in samples.items() if k >= 500) - base if base else float("nan")
    ratio = statistics.median(late) / statistics.median(early) if early and late else 0.0

    def steal(a: int, b: int) -> float:
        if a not in cpu or b not in cpu or cpu[b][0] == cpu[a][0]:
            return float("nan")
        return (cpu[b][1] - cpu[a][1]) / (cpu[b][0] - cpu[a][0])

    last = max(cpu) if cpu else 0
    with table.open() as f:
        objects = statistics.median(int(r["objects"]) for r in csv.DictReader(f))
    print(
        f"{n} frames of 512² in {stamps[-1] - stamps[0]:.0f} s ({os.cpu_count()} cores), "
        f"median {objects:g} objects a frame"
    )
    print(
        f"RSS at 500 frames {base:.1f} MB, max after {base + growth:.1f} MB, growth "
        f"{growth:.1f} MB; samples {len(samples)}"
    )
    print(
        f"FPS median frames 500-1500 {statistics.median(early):.2f}, last 1000 "
        f"{statistics.median(late):.2f}"
    )
    print(
        f"CPU steal (the VM host's share): frames 500-1500 {steal(500, 1500):.1%}, last 1000 "
        f"{steal(last - 1000, last):.1%}"
    )
    print(
        f"recording folder peak {peak_folder / 1e6:.2f} MB of a {ring / 1e6:.2f} MB bound; "
        f"rotated: {rotated}; stream bytes read {got[0] / 1e6:.1f} MB"
    )
    checks = {
        f"RSS growth after frame 500 = {growth:.1f} MB (<= 20)": growth <= 20,
        f"FPS last 1000 / frames 500-1500 = {ratio:.3f} (>= 0.95)": ratio >= 0.95,
        f"closed segments within the ring's bound ({peak_folder} <= {ring} bytes)": peak_folder
        <= ring,
        "the ring rotated during the run": rotated,
        "the stream client read frames": got[0] > 0,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
