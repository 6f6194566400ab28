"""A microcontroller-sized U-Net on BBBC039, through `edgeseg convert --micro` (issue 25).

BBBC039 (143 fields of U2OS nuclei, 520x696, 16-bit) is split by well (the file name before
the first ``_``): about 20% of the wells, chosen with ``--seed``, are held out and never seen
by training or calibration. Then, each step in its own process through the command line:

1. `edgeseg train`: a small semantic U-Net (8 filters, depth 3, 96x96 tiles by default) on
   the training wells' nuclei (labels > 0), for ``--minutes`` of wall clock;
2. `edgeseg convert --int8 --micro --device cortex-m7 --calib <training images> --val <held-out
   wells>`: the LiteRT int8 artefact and the TensorFlow Lite Micro target (C array, header,
   op resolver), whose tensor arena TFLM's own interpreter measures and whose outputs on the
   held-out frames it computes, one tile per invoke.

Its parity report (JSON) gives the figures printed here: flash and arena, the fit against
the Cortex-M7 profile, TFLM's int8 outputs against LiteRT's (steps; label maps), and Dice
against the truth of the float model, LiteRT int8 and TFLM. PASS/FAIL lines for the issue's
targets: TFLM's outputs equal LiteRT's int8 outputs (or the step difference is stated), and
TFLM's Dice against the truth within 0.01 of the float model's.

    python benchmarks/micro.py [--minutes 4] [--size 96] [--filters 8] [--depth 3]
        [--device cortex-m7] [--data ../shared/data/bbbc039] [--out DIR] [--seed 0]
    python benchmarks/micro.py --summarize DIR     # the figures of a kept run (--out DIR)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc039"
EDGESEG = [sys.executable, "-m", "edgeseg.cli.main"]
TARGET_DICE_CHANGE = 0.01

#: The options of other commands this script depends on.
NEEDED = {
    "train": ("--data", "--no-instances", "--size", "--base-filters", "--depth",
              "--max-minutes", "--epochs", "--steps-per-epoch", "--seed", "--out"),
    "convert": ("--int8", "--micro", "--device", "--calib", "--val", "--out"),
}  # fmt: skip


class BenchError(Exception):
    """A step failed; the message is one line."""


def check_cli() -> None:
    """Fail with one clear line when a command lacks an option this script passes."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    for command, options in NEEDED.items():
        done = subprocess.run(
            [*EDGESEG, command, "--help"], capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            raise BenchError(f"`edgeseg {command} --help` failed: {_last_line(done)}")
        missing = [o for o in options if o not in done.stdout]
        if missing:
            raise BenchError(f"`edgeseg {command}` has no {', '.join(missing)} option")


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def edgeseg(args: list[str], log: Path, what: str) -> float:
    """Run one edgeseg command in its own process (output to ``log``); seconds it took."""
    t0 = time.perf_counter()
    print(f"  {what} …", flush=True)
    done = subprocess.run([*EDGESEG, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    log.write_text(f"$ edgeseg {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise BenchError(f"{what} failed after {took:.0f} s: {_last_line(done)} (log {log})")
    print(f"  {what}: done in {took:.0f} s", flush=True)
    return took


def well(name: str) -> str:
    return name.split("_", 1)[0]


def make_folders(data: Path, root: Path, fraction: float, seed: int) -> dict[str, Path]:
    """train/ (images + binary masks of the nuclei) and heldout/ (images + labels), by well."""
    from edgeseg.imageio import read_image, write_image

    images = sorted(p for p in (data / "images").iterdir() if p.is_file())
    wells = sorted({well(p.stem) for p in images})
    if len(wells) < 2:
        raise BenchError(f"{data} has fewer than 2 wells; cannot hold any out")
    n = min(len(wells) - 1, max(1, round(len(wells) * fraction)))
    held = {wells[i] for i in np.random.default_rng(seed).permutation(len(wells))[:n]}
    folders = {"train": root / "train", "heldout": root / "heldout"}
    for name, sub in (("train", "masks"), ("heldout", "labels")):
        (folders[name] / "images").mkdir(parents=True, exist_ok=True)
        (folders[name] / sub).mkdir(parents=True, exist_ok=True)
    for img in images:
        lab = data / "labels" / img.name
        if not lab.is_file():
            raise BenchError(f"{img.name} has no label image in {data / 'labels'}")
        target = "heldout" if well(img.stem) in held else "train"
        link = folders[target] / "images" / img.name
        if not link.exists():
            link.symlink_to(img.resolve())
        if target == "heldout":
            link = folders[target] / "labels" / img.name
            if not link.exists():
                link.symlink_to(lab.resolve())
        else:
            mask = folders[target] / "masks" / f"{img.stem}.png"
            if not mask.exists():
                write_image(mask, ((read_image(lab) > 0) * 255).astype(np.uint8))
    counts = {k: len(list((v / "images").iterdir())) for k, v in folders.items()}
    print(f"wells held out: {', '.join(sorted(held))}; frames {counts}", flush=True)
    return folders


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The parity report's rows: float, int8 (LiteRT) and micro (TFLM)."""
    rows = {a["recipe"]: a for a in report["artefacts"]}
    if "int8" not in rows or "micro (TFLM)" not in rows:
        raise BenchError(f"the parity report has rows {sorted(rows)}, not int8 and micro")
    float_dice = (report.get("float_truth") or {}).get("dice")
    return {"float": float_dice, "int8": rows["int8"], "micro": rows["micro (TFLM)"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="keep the work here")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget")
    parser.add_argument("--size", type=int, default=96, help="tile size (96 or 128)")
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--device", default="cortex-m7", help="microcontroller profile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summarize", type=Path, default=None, help="a kept run's --out")
    args = parser.parse_args()
    if args.summarize is not None:
        return summarize(args.summarize / "build", {})
    if not (args.data / "labels").is_dir():
        print(f"BBBC039 not found at {args.data}", file=sys.stderr)
        return 2
    try:
        check_cli()
        work = args.out or Path(tempfile.mkdtemp(prefix="edgeseg-micro-"))
        work.mkdir(parents=True, exist_ok=True)
        folders = make_folders(args.data, work / "data", 0.2, args.seed)
        model = work / "micro_unet.keras"
        print(f"U-Net {args.filters} filters, depth {args.depth}, {args.size}² tiles:")
        train_s = edgeseg(
            ["train", "--data", str(folders["train"]), "--no-instances",
             "--size", str(args.size), "--base-filters", str(args.filters),
             "--depth", str(args.depth), "--epochs", "1000", "--steps-per-epoch", "50",
             "--max-minutes", str(args.minutes), "--seed", str(args.seed), "--out", str(model)],
            work / "train.log", f"train ({args.minutes:g} min)",
        )  # fmt: skip
        build = work / "build"
        convert_s = edgeseg(
            ["convert", str(model), "--int8", "--micro", "--device", args.device,
             "--calib", str(folders["train"] / "images"), "--val", str(folders["heldout"]),
             "--out", str(build)],
            work / "convert.log", "convert --int8 --micro",
        )  # fmt: skip
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return summarize(build, {"train": train_s, "convert --int8 --micro": convert_s})


def summarize(build: Path, seconds: dict[str, float]) -> int:
    """Print the figures of a run's parity report; 0 when the Dice target holds."""
    found = sorted(build.glob("*_parity.json"))
    if not found:
        print(f"no parity report in {build}", file=sys.stderr)
        return 2
    report = json.loads(found[0].read_text())
    rows = figures(report)
    micro, int8 = rows["micro"], rows["int8"]
    info = micro["micro"]
    arena, raw, same = info["arena"], info["raw_vs_litert"], info["labels_vs_litert"]
    fit = info.get("fit") or {}
    print()
    print(f"held-out frames: {report['heldout']['frames']} (whole wells never trained on)")
    took = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    print(f"{took + ' ' if took else ''}(CPU: {cpu()})")
    print(f"flash (the .tflite / C array): {info['flash_bytes']} bytes "
          f"({info['flash_bytes'] / 1024:.1f} KB)")  # fmt: skip
    print(
        f"tensor arena: {arena['arena_bytes']} bytes ({arena['arena_bytes'] / 1024:.1f} KB) to "
        f"allocate; TFLM ran in {arena['used_bytes']} bytes ({arena['measured_with']})"
    )
    print(f"op resolver: {', '.join(o['method'] for o in info['ops'])}")
    if fit:
        verdict = f"fits, arena in {fit['arena_in']}" if fit["fits"] else "does not fit"
        print(f"{fit['profile']}: {verdict}")
    print(
        f"TFLM vs {raw['litert']} int8, raw outputs on {raw['tiles']} held-out tiles: max "
        f"{raw['max_steps']} step(s), {raw['equal_share']:.2%} of values equal; label maps: "
        f"Dice {same['dice']:.4f}, {same['identical_frames']}/{same['frames']} frames identical"
    )
    fdice = rows["float"]
    print()
    print("| model | Dice vs truth | change vs float | agreement Dice with float |")
    print("|---|---:|---:|---:|")
    print(f"| float (Keras) | {fdice:.4f} | – | – |")
    for name, row in (("int8 (LiteRT)", int8), ("int8 (TFLM)", micro)):
        t = row["truth"]["dice"]
        print(f"| {name} | {t:.4f} | {t - fdice:+.4f} | {row['agreement']['dice']:.4f} |")
    print()
    change = micro["truth"]["dice"] - fdice
    ok_dice = abs(change) <= TARGET_DICE_CHANGE
    print(f"{'PASS' if ok_dice else 'FAIL'}: TFLM Dice vs truth within {TARGET_DICE_CHANGE} of "
          f"the float model's ({change:+.4f})")  # fmt: skip
    if raw["identical"]:
        print(f"PASS: TFLM's int8 outputs equal LiteRT's on all {raw['tiles']} tiles")
    else:
        why = next((n for n in micro["notes"] if "op by op" in n), "")
        print(
            f"STATED: TFLM's int8 outputs differ from LiteRT's by at most {raw['max_steps']} "
            f"step(s) ({raw['equal_share']:.2%} equal). Why, as measured: "
            + why[why.find("op by op") :]
        )
    print(f"figures from {build}")
    return 0 if ok_dice else 1


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    raise SystemExit(main())
