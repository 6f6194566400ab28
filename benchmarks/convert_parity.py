"""What fp16 and int8 cost on a U-Net trained on ISBI 2012: size, accuracy, latency.

Calibration uses training slices 0-23; accuracy is measured on held-out slices 24-29
(membranes, mask value 0). `edgeseg convert` builds fp32, fp16 and int8 artefacts and scores
them; then each artefact's model-only latency is measured with 2 threads, each measurement
in its own process (LiteRT's thread pool would otherwise carry over), the artefacts
alternated round by round, and the median of the per-process medians kept.

    python benchmarks/convert_parity.py --model isbi.keras [--rounds 3] [--threads 2]
    python benchmarks/convert_parity.py                  # trains a model first (~13 min)

`int8-cpu` is `int8` with the first convolution and the head kept float (int8 I/O). The int8
and fp32 recipes are also converted without their up-convolution rewrite
(``depth_to_space = false``, TRANSPOSE_CONV kept) and timed in the same rotation.

Targets (issue 3): int8 size <= 0.27x fp32, |Dice change| <= 0.005, latency <= 0.30x fp32;
fp16 |Dice change| <= 0.001. Issue 13 retired the latency target as a gate on x86-64 (XNNPACK's
fp32 kernels there are too good for 0.30x, see README Measured): the ratio is still measured
and printed, and gated only on other architectures (ARM, where int8 pays most).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from isbi import DATA, probe, split

RECIPE_DIR = Path(__file__).resolve().parent.parent / "converters" / "recipes"

RECIPES = ("fp32", "fp16", "int8", "int8-cpu")
# The same recipes without the up-convolution rewrite (TRANSPOSE_CONV kept), for comparison.
PLAIN = {"fp32-tconv": "fp32", "int8-tconv": "int8"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a U-Net trained on ISBI slices 0-23")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30, help="timed invocations per process")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="keep the artefacts here")
    ap.add_argument(
        "--reuse", action="store_true", help="time the artefacts already in --out, do not convert"
    )
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
    plain = []
    for name, base_name in PLAIN.items():
        text = (RECIPE_DIR / f"{base_name}.toml").read_text()
        text = text.replace(f'name = "{base_name}"', f'name = "{name}"')
        text = text.replace("depth_to_space = true", "depth_to_space = false")
        (tmp / f"{name}.toml").write_text(text)
        plain += ["--recipe", str(tmp / f"{name}.toml")]
    cmd = [
        *edgeseg, "convert", str(model), "--recipe", "fp32", "--fp16", "--int8", "--recipe",
        "int8-cpu", *plain,
        "--calib", str(train_dir / "images"), "--val", str(test_dir), "--out", str(out),
    ]  # fmt: skip
    if not (args.reuse and (out / f"{model.stem}_parity.json").is_file()):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((out / f"{model.stem}_parity.json").read_text())
    arts = {a["recipe"]: a for a in report["artefacts"]}

    contenders = RECIPES + tuple(PLAIN)
    samples: dict[str, list[float]] = {r: [] for r in contenders}
    runtime = ""
    for rnd in range(args.rounds):
        order = contenders[rnd % len(contenders) :] + contenders[: rnd % len(contenders)]
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
    paired = [i / f for i, f in zip(samples["int8"], samples["fp32"], strict=True)]
    print(
        "int8 / fp32 round by round: "
        + ", ".join(f"{r:.3f}" for r in paired)
        + f" (median {statistics.median(paired):.3f})"
    )
    print(
        f"without the up-convolution rewrite (TRANSPOSE_CONV kept): int8-tconv / fp32-tconv "
        f"{lat['int8-tconv'] / lat['fp32-tconv']:.3f}; fp32 / fp32-tconv "
        f"{lat['fp32'] / lat['fp32-tconv']:.3f}; int8 / int8-tconv "
        f"{lat['int8'] / lat['int8-tconv']:.3f}"
    )
    print("per-process medians (ms): " + "; ".join(
        f"{r} " + ", ".join(f"{v:.2f}" for v in samples[r]) for r in contenders))  # fmt: skip
    fp16 = arts["fp16"]
    checks = {
        "fp16 |Dice change| <= 0.001": abs(fp16["truth"]["dice"] - base["truth"]["dice"]) <= 0.001
    }
    int8_ok = {}
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    for r in ("int8", "int8-cpu"):
        a = arts[r]
        mine = {
            f"{r} size <= 0.27x": a["size_ratio"] <= 0.27,
            f"{r} |Dice change| <= 0.005": abs(a["truth"]["dice"] - base["truth"]["dice"]) <= 0.005,
        }
        ratio = lat[r] / lat["fp32"]
        if x86:  # retired as a gate here (issue 13): reported only
            print(f"INFO  {r} latency = {ratio:.3f}x fp32 (0.30x is not a gate on x86-64)")
        else:
            mine[f"{r} latency <= 0.30x"] = ratio <= 0.30
        checks.update(mine)
        int8_ok[r] = all(mine.values())
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    fp16_ok = checks["fp16 |Dice change| <= 0.001"]
    return 0 if fp16_ok and any(int8_ok.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
