"""Touching nuclei as separate objects on BBBC039: an instance U-Net, int8, against today's way.

BBBC039 (143 fields of U2OS nuclei, 520x696, 16-bit, one id per nucleus) is split by well
(the part of the file name before the first ``_``): about 20% of the wells, chosen with
``--seed``, are held out and never seen by training, model selection or calibration.

(a) An instance U-Net (the default U-Net of `edgeseg train`: 16 filters, depth 4) is trained
    with `edgeseg train --instances` for ``--minutes`` (its own validation holds out whole
    wells of the training wells), converted to int8 (`edgeseg convert --int8 --calib <training
    images> --val <held-out wells>`, whose parity report compares the int8 objects with the
    float model's), and the float and int8 models are scored on the held-out wells with
    `edgeseg eval` (AP@0.5, mean AP, F1@0.5, median count error).
(b) Counted today's way: a semantic U-Net trained on the binarized labels (labels > 0) for the
    same budget, int8 too; its objects are the connected components, scored the same way.
(c) The ceiling of (b): the TRUE foreground split into connected components.
(d) The cost: median preprocess / inference / postprocess milliseconds per 520x696 frame of
    the int8 instance model through `edgeseg run --headless --csv` (one worker).

Every training, conversion, scoring and timing runs in its own process through the command
line, whose ``--json`` outputs are parsed. Prints a table and PASS/FAIL lines for the targets
(issue 14): int8 AP@0.5 >= 0.80, int8 - float AP@0.5 >= -0.01, median count error <= 5%.

    python benchmarks/instances_bbbc039.py [--minutes 15] [--minutes 15,30] [--skip-baseline]
        [--data ../shared/data/bbbc039] [--out DIR] [--seed 0]

Quick check of the whole path: ``--minutes 0.5 --skip-baseline``. Several budgets
(``--minutes 15,30``) report AP against minutes; the targets are judged on the longest.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc039"
EDGESEG = [sys.executable, "-m", "edgeseg.cli.main"]
TARGET_AP50 = 0.80
TARGET_INT8_DROP = -0.01
TARGET_COUNT_ERROR = 0.05

#: The options of other commands this script depends on.
NEEDED = {
    "train": ("--data", "--instances", "--no-instances", "--val-fraction", "--max-minutes",
              "--base-filters", "--depth", "--seed", "--out", "--epochs", "--steps-per-epoch"),
    "convert": ("--int8", "--calib", "--val", "--out"),
    "eval": ("--data", "--json"),
    "run": ("--source", "--headless", "--csv", "--workers"),
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
            raise BenchError(
                f"`edgeseg {command}` has no {', '.join(missing)} option (this script needs "
                "it; update the script to the command's spelling)"
            )


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def edgeseg(args: list[str], log: Path, what: str, check: bool = True) -> int:
    """Run one edgeseg command in its own process; its output goes to ``log``."""
    t0 = time.perf_counter()
    print(f"  {what} …", flush=True)
    done = subprocess.run([*EDGESEG, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    log.write_text(f"$ edgeseg {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    took = time.perf_counter() - t0
    if done.returncode != 0:
        if check:
            raise BenchError(f"{what} failed after {took:.0f} s: {_last_line(done)} (log {log})")
        print(f"  {what}: exit {done.returncode} after {took:.0f} s: {_last_line(done)}")
    else:
        print(f"  {what}: done in {took:.0f} s")
    return done.returncode


def well(name: str) -> str:
    return name.split("_", 1)[0]


def split_wells(data: Path, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    wells = sorted({well(p.stem) for p in (data / "images").iterdir() if p.is_file()})
    if len(wells) < 2:
        raise BenchError(f"{data} has fewer than 2 wells; cannot hold any out")
    n = min(len(wells) - 1, max(1, round(len(wells) * fraction)))
    order = np.random.default_rng(seed).permutation(len(wells))
    held = sorted(wells[i] for i in order[:n])
    return [w for w in wells if w not in held], held


def make_folders(data: Path, root: Path, held: list[str]) -> dict[str, Path]:
    """train/ and heldout/ (images + labels, linked), train_semantic/ (images + masks)."""
    from edgeseg.imageio import read_image, write_image

    folders = {k: root / k for k in ("train", "heldout", "train_semantic")}
    for name, folder in folders.items():
        for sub in ("images", "masks" if name == "train_semantic" else "labels"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    for img in sorted((data / "images").iterdir()):
        lab = data / "labels" / img.name
        if not lab.is_file():
            raise BenchError(f"{img.name} has no label image in {data / 'labels'}")
        target = "heldout" if well(img.stem) in held else "train"
        for src, sub in ((img, "images"), (lab, "labels")):
            link = folders[target] / sub / src.name
            if not link.exists():
                link.symlink_to(src.resolve())
        if target == "train":
            link = folders["train_semantic"] / "images" / img.name
            if not link.exists():
                link.symlink_to(img.resolve())
            mask = folders["train_semantic"] / "masks" / f"{img.stem}.png"
            if not mask.exists():
                write_image(mask, ((read_image(lab) > 0) * 255).astype(np.uint8))
    return folders


def ceiling(heldout: Path) -> dict[str, Any]:
    """The true foreground split into 8-connected components, scored as `eval` scores."""
    import cv2

    from edgeseg.core.metrics import match_instances, median_count_error
    from edgeseg.imageio import read_image

    counts = []
    for lab_path in sorted((heldout / "labels").iterdir()):
        truth = read_image(lab_path).astype(np.int32)
        _, comps = cv2.connectedComponents((truth > 0).astype(np.uint8), connectivity=8)
        counts.append(match_instances(comps.astype(np.int32), truth))
    pooled = counts[0]
    for c in counts[1:]:
        pooled = pooled + c
    return {
        "ap50": pooled.ap(0.5),
        "mean_ap": pooled.mean_ap,
        "f1_50": pooled.f1(0.5),
        "median_count_error": median_count_error(counts),
    }


def scores_of(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    inst = report.get("instances")
    if inst is None:
        raise BenchError(f"{path}: `edgeseg eval` wrote no instance scores (no labels/ used?)")
    p = inst["pooled"]
    return {k: p.get(k) for k in ("ap50", "mean_ap", "f1_50", "median_count_error")}


def train_convert_score(
    kind: str, minutes: float, folders: dict[str, Path], work: Path, seed: int
) -> dict[str, Any]:
    """Train (instance or semantic), convert to int8, score float and int8 on held-out wells."""
    tag = f"{kind}_{minutes:g}min"
    model = work / f"{tag}.keras"
    data = folders["train"] if kind == "instance" else folders["train_semantic"]
    print(f"{kind} U-Net, {minutes:g} min:", flush=True)
    edgeseg(
        ["train", "--data", str(data), "--instances" if kind == "instance" else "--no-instances",
         "--val-fraction", "0.2", "--base-filters", "16", "--depth", "4", "--epochs", "1000",
         # Validation segments ~20 whole fields: every 150 steps, not 50, so it takes ~10% of
         # the budget rather than ~25%, for both models alike.
         "--steps-per-epoch", "150",
         "--max-minutes", str(minutes), "--seed", str(seed), "--out", str(model)],
        work / f"{tag}_train.log", "train",
    )  # fmt: skip
    build = work / f"{tag}_build"
    code = edgeseg(
        ["convert", str(model), "--int8", "--calib", str(folders["train"] / "images"),
         "--val", str(folders["heldout"]), "--out", str(build)],
        work / f"{tag}_convert.log", "convert to int8", check=False,
    )  # fmt: skip
    parity_path = build / f"{tag}_parity.json"
    if not parity_path.is_file():
        raise BenchError(f"convert wrote no parity report (log {work / f'{tag}_convert.log'})")
    parity = json.loads(parity_path.read_text())
    art = next(a for a in parity["artefacts"] if a["recipe"] == "int8")
    int8 = Path(art["path"])  # *.rejected.tflite when the gate refused it: scored anyway
    row: dict[str, Any] = {
        "kind": kind,
        "minutes": minutes,
        "model": str(model),
        "int8_path": str(int8),
        "gate_passed": art["passed"] and code == 0,
        "gate": art.get("gate"),
        "gate_on": art.get("gate_on"),
        "int8_ap50_vs_float": (art.get("instances") or {}).get("ap50"),
        "int8_dice_vs_float": art["agreement"]["dice"],
    }
    for precision, path in (("float", model), ("int8", int8)):
        out = work / f"{tag}_{precision}_eval.json"
        edgeseg(["eval", str(path), "--data", str(folders["heldout"]), "--json", str(out)],
                work / f"{tag}_{precision}_eval.log", f"eval {precision}")  # fmt: skip
        row[precision] = scores_of(out)
    return row


def timing(int8: Path, heldout: Path, work: Path) -> dict[str, float]:
    """Median milliseconds per frame of each stage, from `edgeseg run --csv` (one worker)."""
    stats = work / "run_timing.csv"
    print("timing the int8 instance model:", flush=True)
    edgeseg(
        ["run", str(int8), "--source", str(heldout / "images"), "--headless", "--csv", str(stats),
         "--workers", "1"],
        work / "run_timing.log", "edgeseg run",
    )  # fmt: skip
    with open(stats, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = ("preprocess_ms", "inference_ms", "postprocess_ms")
    if not rows or any(c not in rows[0] for c in cols):
        raise BenchError(f"{stats}: expected the columns {', '.join(cols)}")
    out = {}
    for c in cols:
        values = [float(r[c]) for r in rows if r.get(c) not in (None, "")]
        out[c] = statistics.median(values) if values else float("nan")
    out["frames"] = len(rows)
    return out


def _f(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x * 100:.1f}%" if pct else f"{x:.4f}"


def print_table(rows: list[dict[str, Any]], ceil: dict[str, Any]) -> None:
    print()
    print("| method | minutes | precision | AP@0.5 | mean AP | F1@0.5 | median count error "
          "| int8 AP@0.5 vs float | int8 gate |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        for precision in ("float", "int8"):
            s = r[precision]
            vs = _f(r["int8_ap50_vs_float"]) if precision == "int8" else ""
            gate = ("pass" if r["gate_passed"] else "REJECTED") if precision == "int8" else ""
            print(
                f"| {r['kind']} | {r['minutes']:g} | {precision} | {_f(s['ap50'])} "
                f"| {_f(s['mean_ap'])} | {_f(s['f1_50'])} | {_f(s['median_count_error'], True)} "
                f"| {vs} | {gate} |"
            )
    print(
        f"| true foreground, connected components | – | – | {_f(ceil['ap50'])} "
        f"| {_f(ceil['mean_ap'])} | {_f(ceil['f1_50'])} "
        f"| {_f(ceil['median_count_error'], True)} | | |"
    )


def verdicts(row: dict[str, Any]) -> bool:
    f, q = row["float"], row["int8"]
    err = q["median_count_error"]
    checks = [
        (f"int8 AP@0.5 {_f(q['ap50'])} >= {TARGET_AP50:.2f}", q["ap50"] >= TARGET_AP50),
        (
            f"int8 - float AP@0.5 {q['ap50'] - f['ap50']:+.4f} >= {TARGET_INT8_DROP:+.2f}",
            q["ap50"] - f["ap50"] >= TARGET_INT8_DROP,
        ),
        (
            f"int8 median count error {_f(err, True)} <= {TARGET_COUNT_ERROR:.0%}",
            err is not None and err <= TARGET_COUNT_ERROR,
        ),
    ]
    print(f"\ntargets (instance U-Net, {row['minutes']:g} min):")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return all(ok for _, ok in checks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--minutes", default="15", help="training budget; comma-separated: AP against minutes"
    )
    ap.add_argument("--skip-baseline", action="store_true", help="skip the semantic U-Net baseline")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of wells held out")
    ap.add_argument("--seed", type=int, default=0, help="well split and training seed")
    ap.add_argument("--out", type=Path, default=None, help="keep models and logs here")
    args = ap.parse_args()
    try:
        budgets = [float(m) for m in args.minutes.split(",") if m.strip()]
    except ValueError:
        print(f"error: --minutes takes numbers, e.g. 15 or 15,30; got {args.minutes!r}")
        return 2
    if not budgets or any(m <= 0 for m in budgets):
        print("error: --minutes must be positive")
        return 2
    if not (args.data / "images").is_dir() or not (args.data / "labels").is_dir():
        print(f"error: BBBC039 (images/ + labels/) not found at {args.data}")
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="bbbc039-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        check_cli()
        train_wells, held = split_wells(args.data, args.holdout, args.seed)
        folders = make_folders(args.data, work / "data", held)
        n_held = len(list((folders["heldout"] / "images").iterdir()))
        n_train = len(list((folders["train"] / "images").iterdir()))
        print(f"wells: {len(train_wells)} for training ({n_train} fields), {len(held)} held out "
              f"({n_held} fields): {', '.join(held)}; work folder {work}")  # fmt: skip
        ceil = ceiling(folders["heldout"])
        rows = []
        for minutes in budgets:
            rows.append(train_convert_score("instance", minutes, folders, work, args.seed))
            if not args.skip_baseline:
                rows.append(train_convert_score("semantic", minutes, folders, work, args.seed))
        instance_rows = [r for r in rows if r["kind"] == "instance"]
        longest = max(instance_rows, key=lambda r: r["minutes"])
        times = timing(Path(longest["int8_path"]), folders["heldout"], work)
    except BenchError as exc:
        print(f"error: {exc}")
        return 1
    print_table(rows, ceil)
    if len(instance_rows) > 1:
        print("\nAP@0.5 against minutes (instance U-Net, float / int8):")
        for r in instance_rows:
            print(f"  {r['minutes']:g} min: {_f(r['float']['ap50'])} / {_f(r['int8']['ap50'])}")
    pre, inf, post = (times[c] for c in ("preprocess_ms", "inference_ms", "postprocess_ms"))
    print(
        f"\nint8 instance model per 520x696 frame (median of {times['frames']} frames, one "
        f"worker): preprocess {pre:.1f} ms, inference {inf:.1f} ms, postprocess {post:.1f} ms "
        f"({post / inf:.2f}x inference)"
    )
    ok = verdicts(longest)
    summary = {
        "held_out_wells": held,
        "training_wells": train_wells,
        "ceiling": ceil,
        "rows": rows,
        "timing_ms": times,
        "targets_met": ok,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {work / 'summary.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
