"""Train the default small U-Net on ISBI 2012 and score it on held-out slices.

Slices 0-23 train, 24-29 are held out (never used for model selection: the last epoch is
kept, and the threshold is chosen on the training slices). The object is the membrane (mask
value 0). For each seed, `edgeseg train` runs in its own process under a wall-clock budget,
then `edgeseg eval` scores the held-out slices: Dice pooled over all held-out pixels and pixel
accuracy. Prints each seed and the medians.

    python benchmarks/train_isbi.py [--seeds 0 1 2] [--minutes 13] [--data ../shared/data/isbi2012]

Targets (issue 2): median Dice >= 0.80, pixel accuracy >= 0.92, each run under 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isbi import DATA, split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=13.0, help="training budget per seed")
    ap.add_argument("--keep", type=Path, default=None, help="keep models in this folder")
    ap.add_argument("extra", nargs="*", help="extra flags passed to edgeseg train (after --)")
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        print(f"ISBI 2012 data not found at {args.data}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="isbi-bench-"))
    train_dir, test_dir = split(args.data, tmp)
    out_dir = args.keep or tmp
    out_dir.mkdir(parents=True, exist_ok=True)
    edgeseg = [sys.executable, "-m", "edgeseg.cli.main"]
    rows = []
    for seed in args.seeds:
        model = out_dir / f"isbi_seed{seed}.keras"
        cmd = [
            *edgeseg, "train", "--data", str(train_dir), "--val", str(test_dir),
            "--keep", "last", "--foreground-value", "0", "--size", "256",
            "--base-filters", "16", "--depth", "4", "--epochs", "1000",
            "--steps-per-epoch", "60", "--max-minutes", str(args.minutes),
            "--seed", str(seed), "--out", str(model), *args.extra,
        ]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        minutes = (time.perf_counter() - t0) / 60
        scores = out_dir / f"isbi_seed{seed}.json"
        subprocess.run(
            [*edgeseg, "eval", str(model), "--data", str(test_dir), "--json", str(scores)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        pooled = json.loads(scores.read_text())["classes"]["foreground"]["pooled"]
        rows.append((seed, pooled["dice"], pooled["pixel_accuracy"], pooled["hd95"], minutes))
        threshold = json.loads(model.with_suffix(".edgeseg.json").read_text())["threshold"]
        print(
            f"seed {seed}: membrane Dice {pooled['dice']:.4f}  pixel accuracy "
            f"{pooled['pixel_accuracy']:.4f}  HD95 {pooled['hd95']:.2f} px  "
            f"threshold {threshold:.2f}  train+save {minutes:.1f} min",
            flush=True,
        )
    dice = statistics.median(r[1] for r in rows)
    acc = statistics.median(r[2] for r in rows)
    mins = statistics.median(r[4] for r in rows)
    print(
        f"median over {len(rows)} seeds: membrane Dice {dice:.4f} (target >= 0.80), "
        f"pixel accuracy {acc:.4f} (target >= 0.92), training {mins:.1f} min "
        f"(target < 15), longest {max(r[4] for r in rows):.1f} min"
    )
    return 0 if dice >= 0.80 and acc >= 0.92 and max(r[4] for r in rows) < 15 else 1


if __name__ == "__main__":
    raise SystemExit(main())
