"""`edgeseg bench`'s p50 against a bare interpreter loop and LiteRT's own `litert-benchmark`.

One model (default: a 256² U-Net, 16 filters, depth 4, int8, built here), the same threads,
runs and warm-up for all three. Each repetition runs the three, each in its own process, in
rotating order (so none always runs first or after the same neighbour); medians over the
repetitions. The three time slightly different things:

- `edgeseg bench`: set_tensor + invoke + get_tensor through edgeseg's backend (its report's
  ``latency_ms.p50``);
- bare loop: ``Interpreter.invoke()`` alone on LiteRT's interpreter, input set once;
- `litert-benchmark`: LiteRT's CompiledModel API, ``run_by_name`` on pre-allocated buffers
  (its printed "Inference (median)").

Target (issue 6): edgeseg's p50 within 5% of both. Run it on a quiet machine.

    python benchmarks/bench_overhead.py [--model M.tflite] [--reps 5] [--runs 200]
        [--warmup 20] [--threads N]
    python benchmarks/bench_overhead.py --save-models build/bench   # unet_int8 + unet_fp32
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TOLERANCE = 0.05

BARE_LOOP = r"""
import statistics, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
path, runs, warmup, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
it = Interpreter(model_path=path, num_threads=threads)
it.allocate_tensors()
d = it.get_input_details()[0]
rng = np.random.default_rng(0)
dt = np.dtype(d["dtype"])
if np.issubdtype(dt, np.integer):
    x = rng.integers(np.iinfo(dt).min, int(np.iinfo(dt).max) + 1, size=d["shape"], dtype=dt)
else:
    x = rng.random(d["shape"], dtype=np.float32).astype(dt)
it.set_tensor(d["index"], x)
for _ in range(warmup + 1):
    it.invoke()
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    it.invoke()
    times.append((time.perf_counter() - t0) * 1000)
print(statistics.median(times))
"""


def build_models(folder: Path, precisions: tuple[str, ...] = ("int8", "fp32")) -> list[Path]:
    """A 256² U-Net (16 filters, depth 4) converted by each recipe, with metadata and recipe
    embedded as `edgeseg convert` does (speed does not depend on the weights)."""
    import numpy as np

    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.preprocess import prepare
    from edgeseg.core.tflite_file import embed_metadata
    from edgeseg.model.loading import load_model
    from edgeseg.model.unet import UNetConfig, build_unet
    from edgeseg.samples import SynthConfig, generate

    folder.mkdir(parents=True, exist_ok=True)
    keras_path = folder / "unet.keras"
    build_unet(UNetConfig()).save(keras_path)
    loaded = load_model(keras_path)
    meta = ModelMetadata(input_size=(256, 256), normalization="percentile")
    tiles = np.stack([prepare(img, meta) for img, _ in generate(16, SynthConfig(), seed=1)])
    paths = []
    for name in precisions:
        recipe = load_recipe(name)
        conv = convert(loaded, meta, recipe, tiles if recipe.needs_calibration else None)
        path = folder / f"unet_{recipe.name}.tflite"
        path.write_bytes(embed_metadata(conv.tflite, meta, extra={"recipe": recipe.to_dict()}))
        paths.append(path)
    return paths


def run_edgeseg(model: Path, runs: int, warmup: int, threads: int, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "edgeseg.cli.main", "bench", str(model), "--runs", str(runs),
        "--warmup", str(warmup), "--threads", str(threads), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (report,) = sorted(out.rglob("*.json"))
    return float(json.loads(report.read_text())["latency_ms"]["p50"])


def run_bare(model: Path, runs: int, warmup: int, threads: int) -> float:
    cmd = [sys.executable, "-c", BARE_LOOP, str(model), str(runs), str(warmup), str(threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def litert_benchmark_command() -> list[str]:
    exe = Path(sys.executable).with_name("litert-benchmark")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("litert-benchmark")
    return (
        [found] if found else [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model"]
    )


def parse_litert_benchmark(text: str) -> dict[str, float]:
    """The "Inference (avg|min|max|median|std|p5|p95): X ms" lines of litert-benchmark."""
    found = {}
    for key, value in re.findall(r"Inference \((\w+)\):\s+([\d.]+) ms", text):
        found[key] = float(value)
    if "median" not in found:
        raise RuntimeError(f"no 'Inference (median)' line in litert-benchmark's output:\n{text}")
    return found


def run_litert(model: Path, runs: int, warmup: int, threads: int) -> float:
    cmd = [
        *litert_benchmark_command(), "--model", str(model), "--num_runs", str(runs),
        "--warmup_runs", str(warmup), "--num_threads", str(threads),
    ]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return parse_litert_benchmark(done.stdout)["median"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--save-models", type=Path, help="Only build unet_int8/unet_fp32 here.")
    args = ap.parse_args()
    if args.save_models:
        for p in build_models(args.save_models):
            print(p)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    model = args.model or build_models(tmp, ("int8",))[0]
    tools = {
        "edgeseg bench": lambda: run_edgeseg(
            model, args.runs, args.warmup, args.threads, tmp / "reports"
        ),
        "bare loop": lambda: run_bare(model, args.runs, args.warmup, args.threads),
        "litert-benchmark": lambda: run_litert(model, args.runs, args.warmup, args.threads),
    }
    names = list(tools)
    results: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.reps):
        order = names[rep % 3 :] + names[: rep % 3]
        for name in order:
            results[name].append(tools[name]())
        print(f"rep {rep}: " + ", ".join(f"{n} {results[n][-1]:.3f} ms" for n in order), flush=True)
    med = {n: statistics.median(v) for n, v in results.items()}
    print(
        f"{model.name}, {args.threads} thread(s), {args.runs} runs after {args.warmup} warm-up, "
        f"medians of the p50 over {args.reps} reps: "
        + ", ".join(f"{n} {m:.3f} ms" for n, m in med.items())
    )
    ok = True
    for other in ("bare loop", "litert-benchmark"):
        ratio = med["edgeseg bench"] / med[other]
        good = abs(ratio - 1) <= TOLERANCE
        ok &= good
        print(f"{'PASS' if good else 'FAIL'}  edgeseg bench / {other} = {ratio:.3f} (within 5%)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
