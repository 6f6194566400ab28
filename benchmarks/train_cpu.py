"""Where an epoch of `edgeseg train` spends its time on this CPU, and what a budget buys.

Runs the trainer (the library call `edgeseg train` makes) under a wall-clock budget and times
it from its own callbacks, so the script runs unchanged in any checkout (for
`before_after.py`): the steps (from one step's end to the next), validation (from an
epoch's last step to its epoch report: segmenting every held-out image whole, tiled as at run
time) and the rest (start-up, data loading, saving). Prints `name = number` lines:

    steps/s, median step s, validation s per epoch, validation share, epochs,
    held-out Dice (the kept epoch), Dice per budget minute

    python benchmarks/train_cpu.py [--minutes 3] [--data synthetic|FOLDER] [--size 256]
    python benchmarks/before_after.py --base /work/main -- train_cpu.py --minutes 2

Data: `synthetic` (the built-in microscopy, 60 images, 20% held out) unless a labelled
folder is given. One run per call; before_after alternates checkouts and takes medians.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=10)
    ap.add_argument("--images", type=int, default=60, help="synthetic images")
    ap.add_argument("--foreground-value", type=int, default=255)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--precision",
        default="auto",
        help="auto, float32 (with ONEDNN_MAX_CPU_ISA=AVX2: a "
        "CPU without bf16, as the issue measured)",
    )
    args = ap.parse_args()

    from edgeseg.model.unet import UNetConfig
    from edgeseg.train.trainer import TrainConfig, cpu_has_bf16, train

    marks: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="train-cpu-") as tmp:
        config = TrainConfig(
            out=Path(tmp) / "m.keras",
            data=args.data,
            unet=UNetConfig(input_size=(args.size, args.size), base_filters=args.base_filters),
            epochs=1000,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            max_minutes=args.minutes,
            seed=args.seed,
            synthetic_images=args.images,
            foreground_value=args.foreground_value,
            tune_threshold=False,
            keep="best",
            precision=args.precision,
        )
        t0 = time.perf_counter()
        result = train(
            config,
            on_step=lambda *_: marks.append(("step", time.perf_counter())),
            on_epoch=lambda _log: marks.append(("epoch", time.perf_counter())),
        )
        end = time.perf_counter()
        total = end - t0
    steps = [b - a for (ka, a), (kb, b) in itertools.pairwise(marks)
             if ka == "step" and kb == "step"]  # fmt: skip
    vals = [b - a for (ka, a), (kb, b) in itertools.pairwise(marks)
            if ka == "step" and kb == "epoch"]  # fmt: skip
    n_steps = sum(1 for k, _ in marks if k == "step")
    step_time = sum(steps)
    val_time = sum(vals)
    print(
        f"CPU: {os.cpu_count()} cores, bf16 {'yes' if cpu_has_bf16() else 'no'}; "
        f"{args.data}, {args.size}² tiles, {args.base_filters} filters, batch {args.batch_size}, "
        f"{args.minutes:g} min budget, precision {args.precision}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}"
    )
    print(f"steps/s = {len(steps) / step_time if step_time else 0:.4f}")
    print(f"median step s = {statistics.median(steps) if steps else 0:.3f}")
    print(f"validation s per epoch = {statistics.median(vals) if vals else 0:.2f}")
    print(f"validation share = {val_time / total:.3f}")
    print(f"other share = {max(0.0, total - val_time - step_time) / total:.3f}")
    print(f"start-up s = {marks[0][1] - t0 if marks else 0:.2f}")
    print(f"after training s = {end - marks[-1][1] if marks else 0:.2f}")
    print(f"steps = {n_steps}")
    print(f"epochs = {len(result.history)}")
    print(f"held-out Dice = {result.val_dice:.4f}")
    print(f"Dice per budget minute = {result.val_dice / args.minutes:.4f}")
    print(f"total minutes = {total / 60:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
