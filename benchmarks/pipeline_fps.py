"""End-to-end `edgeseg run` throughput and latency against the bare model, side by side.

A 256² int8 U-Net (16 filters, depth 4) segments 512² frames: 4 tiles a frame (--overlap 0).
Each repetition measures, each in its own process and alternated:

- model-only FPS: a bare single-interpreter loop using all cores, making the same 4
  invocations a frame needs (no decoding, preprocessing, stitching or rendering);
- file source: `edgeseg run` on a 512² video, headless, with and without --record;
- live source: `synthetic://` paced at 80% of the model-only frame rate: share of frames
  delivered and capture-to-overlay latency (p50) against the model-only frame time.

Medians over --reps repetitions (default 5). Targets (issue 4): file ratio >= 1.0 without
recording and >= 0.85 with it; live: >= 98% delivered, p50 latency <= 1.5x model frame time.

At the camera's resolution (issue 13): ``--frame-size 1024x1024`` builds a whole-frame int8
artefact of that size (one invocation a frame, ``frame_size`` in its metadata) and runs the same
rows on frames of that size; ``--backend openvino`` runs both the model-only loop and `edgeseg
run` on OpenVINO. The live targets are the ones that matter there.

    python benchmarks/pipeline_fps.py [--model unet_int8.tflite] [--reps 5] [--frames 100]
        [--frame-size HxW] [--backend litert|openvino]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TILES = 4


def build_model(
    path: Path, base_filters: int = 16, depth: int = 4, frame: tuple[int, int] | None = None
) -> Path:
    """A 256² int8 U-Net with edgeseg metadata (speed does not depend on the weights); with
    ``frame``, a whole-frame artefact of that (H, W) instead."""
    import numpy as np

    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.preprocess import prepare
    from edgeseg.core.tflite_file import embed_metadata
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig, build_unet
    from edgeseg.samples import SynthConfig, generate

    keras_path = path.with_suffix(".keras")
    size = frame or (256, 256)
    build_unet(UNetConfig(base_filters=base_filters, depth=depth, input_size=size)).save(keras_path)
    meta = ModelMetadata(input_size=size, normalization="percentile", frame_size=frame)
    synth = SynthConfig(size=size)
    n = 16 if frame is None else 4
    tiles = np.stack([prepare(img, meta) for img, _ in generate(n, synth, seed=1)])
    conv = convert(load_model(keras_path), meta, load_recipe("int8"), tiles)
    path.write_bytes(embed_metadata(conv.tflite, meta))
    return path


def write_video(path: Path, frames: int, size: tuple[int, int] = (512, 512)) -> Path:
    import cv2

    from edgeseg.samples import SyntheticStream

    stream = SyntheticStream(size=size, seed=3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size[1], size[0]))
    for _ in range(frames):
        writer.write(cv2.cvtColor(stream.read()[0], cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def model_only(model: str, frames: int, tiles: int, runtime: str) -> None:
    """Child process: FPS of a bare interpreter loop, ``tiles`` invocations per frame."""
    import numpy as np

    from edgeseg.runtime.backends import open_backend

    backend = open_backend(model, backend=runtime, threads=os.cpu_count()).backend
    info = backend.input
    x = np.zeros(info.shape, dtype=info.dtype)
    for _ in range(5):
        backend.invoke(x)
    t0 = time.perf_counter()
    for _ in range(frames * tiles):
        backend.invoke(x)
    print(json.dumps({"fps": frames / (time.perf_counter() - t0)}))


def run_edgeseg(args: list[str], summary: Path) -> dict:
    cmd = [sys.executable, "-m", "edgeseg.cli.main", "run", *args, "--summary-json", str(summary)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(summary.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--frame-size", help="HxW: a whole-frame model of that size")
    ap.add_argument("--backend", default="litert", choices=("litert", "openvino"))
    ap.add_argument("--tiles", type=int, default=TILES, help=argparse.SUPPRESS)
    ap.add_argument("--model-only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model_only:
        model_only(args.model_only, args.frames, args.tiles, args.backend)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    size, tiles = (512, 512), TILES
    frame = None
    if args.frame_size:
        frame = tuple(int(v) for v in args.frame_size.lower().split("x"))
        size, tiles = frame, 1
    model = args.model or build_model(tmp / "unet_int8.tflite", frame=frame)
    video = write_video(tmp / "clip.avi", args.frames, size)
    common = [str(model), "--headless", "--overlap", "0", "--backend", args.backend]
    rows: dict[str, list[float]] = {k: [] for k in ("model", "file", "record")}
    live_rows: list[dict] = []
    for rep in range(args.reps):
        done = subprocess.run(
            [sys.executable, __file__, "--model-only", str(model), "--frames", str(args.frames),
             "--tiles", str(tiles), "--backend", args.backend],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        model_fps = json.loads(done.stdout.strip().splitlines()[-1])["fps"]
        rows["model"].append(model_fps)
        csv = tmp / f"s{rep}.csv"
        plain = run_edgeseg([*common, "--source", str(video), "--csv", str(csv)], tmp / "a.json")
        rows["file"].append(plain["fps"])
        rec = run_edgeseg(
            [*common, "--source", str(video), "--record", str(tmp / f"r{rep}.mp4")], tmp / "b.json"
        )
        rows["record"].append(rec["fps"])
        pace = 0.8 * model_fps
        n_live = max(30, int(pace * 10))
        live = run_edgeseg(
            [*common, "--source",
             f"synthetic://?size={size[0]}x{size[1]}&fps={pace:.3f}&frames={n_live}",
             "--csv", str(tmp / f"l{rep}.csv")],
            tmp / "c.json",
        )  # fmt: skip
        delivered = live["frames"] / max(1, live["frames"] + live["dropped"])
        live_rows.append(
            {
                "delivered": delivered,
                "p50_ratio": live["latency_ms"]["p50"] / (1000 / model_fps),
                "p50_ms": live["latency_ms"]["p50"],
            }
        )
        print(
            f"rep {rep}: model-only {model_fps:.2f} FPS, file {plain['fps']:.2f}, "
            f"file+record {rec['fps']:.2f}, live at {pace:.2f} FPS: {delivered:.1%} delivered, "
            f"p50 {live['latency_ms']['p50']:.0f} ms",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in rows.items()}
    delivered = statistics.median(r["delivered"] for r in live_rows)
    p50_ratio = statistics.median(r["p50_ratio"] for r in live_rows)
    print(
        f"medians over {args.reps} reps ({os.cpu_count()} cores, {size[0]}x{size[1]} frames, "
        f"{tiles} invocation(s) per frame, {args.backend}): model-only {med['model']:.2f} FPS "
        f"({1000 / med['model']:.0f} ms/frame)"
    )
    checks = {
        f"file / model-only = {med['file'] / med['model']:.3f} (>= 1.0)": med["file"] / med["model"]
        >= 1.0,
        f"file+record / model-only = {med['record'] / med['model']:.3f} (>= 0.85)": med["record"]
        / med["model"]
        >= 0.85,
        f"live delivered = {delivered:.1%} (>= 98%)": delivered >= 0.98,
        f"live p50 latency / model frame time = {p50_ratio:.2f} (<= 1.5)": p50_ratio <= 1.5,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
