"""Train the default small U-Net on synthetic microscopy and score it on unseen images.

`edgeseg samples` writes a held-out test set (a seed never used for training), then
`edgeseg train --data synthetic` trains under a wall-clock budget and `edgeseg eval` scores
the test set (Dice pooled over all pixels). Each step runs in its own process.

    python benchmarks/train_synthetic.py [--minutes 4] [--seed 0]

Target (issue 2): Dice >= 0.90 in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-images", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    edgeseg = [sys.executable, "-m", "edgeseg.cli.main"]
    test_dir = tmp / "test"
    subprocess.run(
        [*edgeseg, "samples", "--out", str(test_dir), "-n", str(args.test_images),
         "--size", "512", "--seed", "9999"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    model = tmp / "synthetic.keras"
    t0 = time.perf_counter()
    subprocess.run(
        [*edgeseg, "train", "--data", "synthetic", "--epochs", "1000", "--steps-per-epoch",
         "25", "--max-minutes", str(args.minutes), "--seed", str(args.seed),
         "--out", str(model)],
        check=True,
    )  # fmt: skip
    minutes = (time.perf_counter() - t0) / 60
    scores = tmp / "scores.json"
    subprocess.run(
        [*edgeseg, "eval", str(model), "--data", str(test_dir), "--json", str(scores)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    pooled = json.loads(scores.read_text())["classes"]["foreground"]["pooled"]
    print(
        f"synthetic: Dice {pooled['dice']:.4f} (target >= 0.90) IoU {pooled['iou']:.4f} "
        f"on {args.test_images} unseen 512² images (tiled), training {minutes:.1f} min"
    )
    return 0 if pooled["dice"] >= 0.90 else 1


if __name__ == "__main__":
    raise SystemExit(main())
