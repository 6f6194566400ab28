"""What fp16 and int8 cost on a U-Net trained on ISBI 2012: size, accuracy, latency.

Calibration uses training slices 0-23; accuracy is measured on held-out slices 24-29
(membranes, mask value 0). `edgeseg convert` builds fp32, fp16 and int8 artefacts and scores
them; then each artefact's model-only latency is measured with 2 threads, each measurement
in its own process (LiteRT's thread pool would otherwise carry over), the artefacts
alternated round by round, and the median of the per-process medians kept.

    python benchmarks/convert_parity.py --model isbi.keras [--rounds 3] [--threads 2]
    python benchmarks/convert_parity.py                  # trains a model first (~13 min)

Targets (issue 3): int8 size <= 0.27x fp32, |Dice change| <= 0.005, latency <= 0.30x fp32;
fp16 |Dice change| <= 0.001.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from isbi import DATA, probe, split

RECIPES = ("fp32", "fp16", "int8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a U-Net trained on ISBI slices 0-23")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30, help="timed invocations per process")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="keep the artefacts here")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        probe(args.probe, args.threads, args.warmup, args.runs)
        return 0
    if not (args.data / "images").is_dir():
        print(f"ISBI 2012 data not found at {args.data}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="parity-bench-"))
    train_dir, test_dir = split(args.data, tmp)
    edgeseg = [sys.executable, "-m", "edgeseg.cli.main"]
    model = args.model
    if model is None:
        model = tmp / "isbi.keras"
        subprocess.run(
            [*edgeseg, "train", "--data", str(train_dir), "--val", str(test_dir), "--keep",
             "last", "--foreground-value", "0", "--epochs", "1000", "--steps-per-epoch", "60",
             "--max-minutes", "13", "--out", str(model)],
            check=True,
        )  # fmt: skip
    out = args.out or tmp / "build"
    cmd = [
        *edgeseg, "convert", str(model), "--recipe", "fp32", "--fp16", "--int8",
        "--calib", str(train_dir / "images"), "--val", str(test_dir), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((out / f"{model.stem}_parity.json").read_text())
    arts = {a["recipe"]: a for a in report["artefacts"]}

    samples: dict[str, list[float]] = {r: [] for r in RECIPES}
    runtime = ""
    for rnd in range(args.rounds):
        order = RECIPES[rnd % len(RECIPES) :] + RECIPES[: rnd % len(RECIPES)]
        for recipe in order:
            done = subprocess.run(
                [sys.executable, __file__, "--probe", arts[recipe]["path"], "--threads",
                 str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            samples[recipe].append(result["median_ms"])
            runtime = result["runtime"]
    lat = {r: statistics.median(v) for r, v in samples.items()}

    base = arts["fp32"]
    print(
        f"model {model.name}, calibration {report['calibration']['n']} tiles of slices 0-23, "
        f"held out {report['heldout']['frames']} slices, {runtime}, {args.threads} threads, "
        f"{args.rounds} rounds x {args.runs} runs, separate processes, alternated"
    )
    print(f"float Keras model: membrane Dice {report['float_truth']['dice']:.4f}")
    print(
        "| artefact | size KiB | size / fp32 | Dice vs truth | change vs fp32 | agreement "
        "| latency ms (median) | latency / fp32 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in RECIPES:
        a = arts[r]
        change = a["truth"]["dice"] - base["truth"]["dice"]
        print(
            f"| {r} | {a['size_bytes'] / 1024:.0f} | {a['size_ratio']:.3f} "
            f"| {a['truth']['dice']:.4f} | {change:+.4f} | {a['agreement']['dice']:.4f} "
            f"| {lat[r]:.2f} | {lat[r] / lat['fp32']:.3f} |"
        )
    print("per-process medians (ms): " + "; ".join(
        f"{r} " + ", ".join(f"{v:.2f}" for v in samples[r]) for r in RECIPES))  # fmt: skip
    int8, fp16 = arts["int8"], arts["fp16"]
    checks = {
        "int8 size <= 0.27x": int8["size_ratio"] <= 0.27,
        "int8 |Dice change| <= 0.005": abs(int8["truth"]["dice"] - base["truth"]["dice"]) <= 0.005,
        "int8 latency <= 0.30x": lat["int8"] / lat["fp32"] <= 0.30,
        "fp16 |Dice change| <= 0.001": abs(fp16["truth"]["dice"] - base["truth"]["dice"]) <= 0.001,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
