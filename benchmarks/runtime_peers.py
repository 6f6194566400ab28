"""LiteRT against onnxruntime on one U-Net, same threads, same calibration, one run.

Contenders: LiteRT fp32, fp16, int8 (edgeseg's recipes) and onnxruntime fp32 and int8 (its
static QDQ quantization, per-channel, calibrated on the same tiles). For each: model-only
latency (p50 of the per-process medians; each measurement in its own process, alternated
round by round, because onnxruntime's thread pool keeps spinning after a run) and membrane
Dice on the held-out ISBI slices, as a table of ratios to LiteRT int8.

    python benchmarks/runtime_peers.py --model isbi.keras [--rounds 3] [--threads 2]
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


def quantize_onnx(fp32: Path, out: Path, calib_npz: Path) -> Path:
    """onnxruntime static QDQ int8 (per-channel weights) on the calibration tiles."""
    import numpy as np
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from edgeseg.convert.calibration import CalibrationSet

    tiles = CalibrationSet.load(calib_npz).tiles

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(tiles)

        def get_next(self) -> dict | None:
            t = next(self.it, None)
            return None if t is None else {"image": t[None].astype(np.float32)}

    quantize_static(
        str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=False)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        probe(args.probe, args.threads, args.warmup, args.runs)
        return 0
    if args.model is None:
        print("give --model: a U-Net trained on ISBI slices 0-23 (benchmarks/train_isbi.py)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    train_dir, test_dir = split(args.data, tmp)
    edgeseg = [sys.executable, "-m", "edgeseg.cli.main"]
    out = tmp / "build"
    calib = tmp / "calib.npz"
    subprocess.run(
        [*edgeseg, "calib", "build", str(train_dir / "images"), "--model", str(args.model),
         "--n", "200", "--out", str(calib)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run(
        [*edgeseg, "convert", str(args.model), "--recipe", "fp32", "--fp16", "--int8", "--onnx",
         "--calib", str(calib), "--val", str(test_dir), "--out", str(out)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    stem = args.model.stem
    onnx_fp32 = out / f"{stem}.onnx"
    onnx_int8 = quantize_onnx(onnx_fp32, out / f"{stem}_ort-int8.onnx", calib)
    models = {
        "LiteRT fp32": out / f"{stem}_fp32.tflite",
        "LiteRT fp16": out / f"{stem}_fp16.tflite",
        "LiteRT int8": out / f"{stem}_int8.tflite",
        "onnxruntime fp32": onnx_fp32,
        "onnxruntime int8 (QDQ)": onnx_int8,
    }
    dice = {}
    for name, path in models.items():
        scores = tmp / f"{path.stem}.json"
        subprocess.run(
            [*edgeseg, "eval", str(path), "--data", str(test_dir), "--json", str(scores)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        dice[name] = json.loads(scores.read_text())["classes"]["foreground"]["pooled"]["dice"]
    samples: dict[str, list[float]] = {n: [] for n in models}
    names = list(models)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            done = subprocess.run(
                [sys.executable, __file__, "--probe", str(models[name]), "--threads",
                 str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            samples[name].append(json.loads(done.stdout.strip().splitlines()[-1])["median_ms"])
    lat = {n: statistics.median(v) for n, v in samples.items()}
    ref = "LiteRT int8"
    print(
        f"{args.model.name}, {args.threads} threads, {args.rounds} rounds x {args.runs} runs, "
        "each in its own process, alternated; Dice on held-out ISBI slices 24-29"
    )
    print("| runtime / precision | p50 ms | latency / LiteRT int8 | Dice | change vs fp32 |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        base = dice["LiteRT fp32"] if name.startswith("LiteRT") else dice["onnxruntime fp32"]
        print(
            f"| {name} | {lat[name]:.2f} | {lat[name] / lat[ref]:.2f} | {dice[name]:.4f} "
            f"| {dice[name] - base:+.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
