"""`edgeseg segment` scaling on Dask: 1 and 2 local workers, and against `edgeseg run`.

Two workloads, each segmented in a fresh output folder by `edgeseg segment` with
``--workers 1`` and ``--workers 2`` (one thread each), alternated over --reps repetitions:

- fields: a few hundred 520x696 16-bit fields made from ../shared/data/bbbc039 (its images,
  flipped and rotated into new fields), one label PNG each: frames/s;
- mosaic: a synthetic nuclei mosaic of --mosaic pixels square (>= 8192 for the full run)
  stored as Zarr with 1024² chunks, one label array: megapixels/s.

Also `edgeseg run --headless --save-masks --objects` (the outputs `segment` writes: label
images and the per-object table) on the same fields with the same model (its default for
files: one interpreter per core, one thread each), against `segment` with 2 workers; and
labels only: `run --save-masks` against `segment --no-objects`.
Throughput is what `segment` reports (first task submitted to the objects table written,
cluster start-up excluded) and what `run` reports (first frame to last); the whole commands'
wall-clock times, start-up included, are printed beside them. ``--only fields|mosaic``
measures one workload. Targets (issue 16): 2-worker / 1-worker >= 1.8 on a 2-core machine;
segment / run >= 1.0. Medians over the repetitions.

The untrained model finds about ten thousand specks per field (a trained one, tens to
hundreds of nuclei): measuring and storing objects is a large part of both commands' work.

The model is the 256² int8 U-Net of pipeline_fps.py (speed does not depend on its weights)
unless --model names one.

    python benchmarks/batch_scale.py [--model m.tflite] [--fields 300] [--mosaic 8192]
    python benchmarks/batch_scale.py --quick     # a small smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc039"
TARGET_SCALE = 1.8
TARGET_VS_RUN = 1.0


def make_fields(data: Path, folder: Path, n: int) -> Path:
    """``n`` 16-bit fields from BBBC039's images: each image, then flipped and rotated
    copies (rot180 keeps 520x696), in turn."""
    from edgeseg.imageio import list_images, read_image, write_image

    images = list_images(data / "images")
    if not images:
        raise SystemExit(f"no BBBC039 images in {data / 'images'}")
    folder.mkdir(parents=True, exist_ok=True)
    variants = (lambda a: a, lambda a: a[::-1], lambda a: a[:, ::-1], lambda a: a[::-1, ::-1])
    for i in range(n):
        src = read_image(images[i % len(images)])
        img = variants[(i // len(images)) % len(variants)](src)
        write_image(folder / f"field{i:04d}.png", img.copy())
    return folder


def make_mosaic(path: Path, size: int, chunk: int = 1024, seed: int = 0) -> Path:
    """A (size, size) uint16 Zarr mosaic of bright noisy nuclei, written chunk by chunk."""
    import numpy as np
    import zarr

    rng = np.random.default_rng(seed)
    arr = zarr.create_array(
        store=str(path), shape=(size, size), chunks=(chunk, chunk), dtype="uint16", overwrite=True
    )
    ys, xs = np.indices((chunk, chunk))
    for y0 in range(0, size, chunk):
        for x0 in range(0, size, chunk):
            h, w = min(chunk, size - y0), min(chunk, size - x0)
            tile = rng.normal(400, 30, (h, w))
            for _ in range(rng.integers(60, 120)):
                cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 14)
                tile[np.hypot(ys[:h, :w] - cy, xs[:h, :w] - cx) <= r] += rng.uniform(800, 2500)
            arr[y0 : y0 + h, x0 : x0 + w] = np.clip(tile, 0, 65535).astype(np.uint16)
    return path


def segment(model: Path, inputs: list[Path], out: Path, workers: int, *extra: str) -> dict:
    """Run `edgeseg segment` in a child process; its summary.json."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "edgeseg.cli.main", "segment", str(model), *map(str, inputs),
        "--out", str(out), "--workers", str(workers), "--threads", "1", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return {**json.loads((out / "summary.json").read_text()), "wall": wall}


def run_edgeseg(model: Path, fields: Path, out: Path, objects: bool = True) -> dict:
    """`edgeseg run --headless --save-masks --objects` on the fields (what `segment` writes:
    the label images and the per-object table), or without ``objects`` only the masks; its
    summary."""
    shutil.rmtree(out, ignore_errors=True)
    summary = out.with_suffix(".json")
    cmd = [
        sys.executable, "-m", "edgeseg.cli.main", "run", str(model), "--source", str(fields),
        "--headless", "--save-masks", str(out), "--summary-json", str(summary),
    ]  # fmt: skip
    if objects:
        cmd += ["--objects", str(out.with_suffix(".csv"))]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return {**json.loads(summary.read_text()), "wall": wall}


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a .tflite model (default: build the int8 U-Net)")
    ap.add_argument("--fields", type=int, default=300, help="fields made from BBBC039")
    ap.add_argument("--mosaic", type=int, default=8192, help="mosaic side in pixels")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (alternated)")
    ap.add_argument("--data", type=Path, default=DATA, help="the BBBC039 folder")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 16 fields, 2048² mosaic, 1 rep"
    )
    ap.add_argument("--only", choices=("fields", "mosaic"), help="measure one workload")
    args = ap.parse_args()
    if args.quick:
        args.fields, args.mosaic, args.reps = 16, 2048, 1
    with tempfile.TemporaryDirectory(prefix="batch_scale-") as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from pipeline_fps import build_model

            model = build_model(root / "unet_int8.tflite")
        fields = make_fields(args.data, root / "fields", args.fields)
        mosaic = make_mosaic(root / "mosaic.zarr", args.mosaic) if args.only != "fields" else None
        fps: dict[int, list[float]] = {1: [], 2: []}
        mps: dict[int, list[float]] = {1: [], 2: []}
        run_fps: list[float] = []
        walls: dict[str, list[float]] = {"segment": [], "run": []}
        masks_fps: list[float] = []
        bare_fps: list[float] = []
        for rep in range(args.reps):
            order = (1, 2) if rep % 2 == 0 else (2, 1)
            for workers in order:
                if args.only != "mosaic":
                    s = segment(model, [fields], root / f"out_f{workers}", workers)
                    fps[workers].append(s["frames_per_s"])
                    if workers == 2:
                        walls["segment"].append(s["wall"])
                if mosaic is not None:
                    s = segment(model, [mosaic], root / f"out_m{workers}", workers)
                    mps[workers].append(s["megapixels_per_s"])
            if args.only != "mosaic":
                r = run_edgeseg(model, fields, root / "run_masks")
                run_fps.append(r["fps"])
                walls["run"].append(r["wall"])
                r = run_edgeseg(model, fields, root / "run_masks_only", objects=False)
                masks_fps.append(r["fps"])
                s = segment(model, [fields], root / "out_bare", 2, "--no-objects")
                bare_fps.append(s["frames_per_s"])
        med = {k: statistics.median(v) if v else 0.0 for k, v in fps.items()}
        med_mp = {k: statistics.median(v) if v else 0.0 for k, v in mps.items()}
        run_med = statistics.median(run_fps) if run_fps else 0.0
        scale_f = med[2] / med[1] if med[1] else 0.0
        scale_m = med_mp[2] / med_mp[1] if med_mp[1] else 0.0
        vs_run = med[2] / run_med if run_med else 0.0
        print(
            f"model {model.name}; {args.fields} fields (520x696); mosaic {args.mosaic}²; "
            f"{args.reps} rep(s), medians"
        )
        for what, m, unit, ratio in (
            ("fields", med, "frames/s", scale_f),
            ("mosaic", med_mp, "MP/s", scale_m),
        ):
            if args.only not in (None, what):
                continue
            print(
                f"{what}  1 worker {m[1]:7.2f} {unit}  2 workers {m[2]:7.2f} {unit}  "
                f"ratio {ratio:.2f} (target >= {TARGET_SCALE}) {verdict(ratio, TARGET_SCALE)}"
            )
        if args.only == "mosaic":
            return 0
        print(
            f"run     {run_med:7.2f} frames/s; segment (2 workers) / run {vs_run:.2f} "
            f"(target >= {TARGET_VS_RUN}) {verdict(vs_run, TARGET_VS_RUN)}"
        )
        only, bare = statistics.median(masks_fps), statistics.median(bare_fps)
        print(
            f"labels only: run --save-masks {only:7.2f} frames/s, segment --no-objects (2 "
            f"workers) {bare:7.2f} frames/s; segment / run {bare / only:.2f}"
        )
        ws, wr = statistics.median(walls["segment"]), statistics.median(walls["run"])
        print(
            f"whole commands, start-up included: segment (2 workers) {ws:.1f} s, run {wr:.1f} s; "
            f"run / segment {wr / ws:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
