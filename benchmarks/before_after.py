"""A benchmark script of this checkout against the same script of another checkout, alternated.

A change that should not move speed (a refactoring) is checked by running a benchmark from
``benchmarks/`` in two checkouts, each with its own ``.venv`` (the base: a worktree of the
commit before), one after the other, ``--rounds`` times, and comparing what they print: every
``name = number`` line (the scripts' ratios: "file / model-only = 0.987") and every ``name
number FPS`` row (their medians). For each, the median over the rounds of the base, of this
checkout, and head / base.

    git worktree add ../base <commit>     # and give it a .venv
    python benchmarks/before_after.py --base ../base --rounds 3 -- pipeline_fps.py --reps 1
    python benchmarks/before_after.py --base ../base -- camera_fps.py --reps 1 --work /tmp/cam

Both checkouts must accept the same arguments; pass a shared ``--model`` or ``--work`` so that
both measure the very same artefacts. The order alternates (base first in odd rounds), so a
machine that slows down over time favours neither.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

HEAD = Path(__file__).resolve().parents[1]
_RATIO = re.compile(r"^\s*(?:PASS|FAIL|MISS)?\s*(?P<name>[^=:]*?[a-z][^=]*?)\s*=\s*(?P<v>[\d.]+)")
_FPS = re.compile(r"^\s*(?P<name>[A-Za-z][\w ().,/-]*?)\s+(?P<v>[\d.]+) FPS\b")
_CASE = re.compile(r"^\s*(?P<case>\d+x\d+), medians over")
_MODEL_ONLY = re.compile(r"\b(?P<name>model-only) (?P<v>[\d.]+) FPS\b")


def _python(tree: Path) -> str:
    venv = tree / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def figures(text: str) -> dict[str, float]:
    """The ``name = number`` and ``name number FPS`` lines of a benchmark's output (the last
    of each name counts: the scripts print their medians last), each name prefixed by the case
    it belongs to where the script measures several ("1024x1024, medians over …")."""
    found: dict[str, float] = {}
    case = ""
    for line in text.splitlines():
        if line.lstrip().startswith("rep "):
            continue  # a repetition's own line; the medians follow
        c = _CASE.match(line)
        if c:
            case = c["case"] + ": "
            continue
        m = _RATIO.match(line) or _FPS.match(line) or _MODEL_ONLY.search(line)
        if m:
            found[case + m["name"].strip()] = float(m["v"])
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="the other checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="a folder for each run's whole output")
    ap.add_argument("script", help="a script in benchmarks/, e.g. pipeline_fps.py")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (after --)")
    a = ap.parse_args()
    extra = a.args[1:] if a.args[:1] == ["--"] else a.args
    if a.keep:
        a.keep.mkdir(parents=True, exist_ok=True)
    trees = {"base": a.base.resolve(), "head": HEAD}
    seen: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    for r in range(a.rounds):
        for who in ("base", "head") if r % 2 == 0 else ("head", "base"):
            tree = trees[who]
            cmd = [_python(tree), str(tree / "benchmarks" / a.script), *extra]
            done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
            if a.keep:
                (a.keep / f"round{r}-{who}.txt").write_text(done.stdout + done.stderr)
            if done.returncode not in (0, 1):  # 1: a target missed; the figures still count
                print(f"{who} failed ({done.returncode}):\n{done.stderr[-2000:]}")
                return 2
            got = figures(done.stdout)
            for k, v in got.items():
                seen[who].setdefault(k, []).append(v)
            print(f"round {r} {who}: " + ", ".join(f"{k} {v:g}" for k, v in got.items()),
                  flush=True)  # fmt: skip
    print(f"\n{a.script} {' '.join(extra)}: medians over {a.rounds} rounds, alternated")
    print(f"  {'figure':<64} {'base':>9} {'head':>9} {'head/base':>9}")
    for name in seen["head"]:
        if name not in seen["base"]:
            continue
        b, h = statistics.median(seen["base"][name]), statistics.median(seen["head"][name])
        ratio = f"{h / b:9.3f}" if b else "        –"
        print(f"  {name:<64} {b:9.3f} {h:9.3f} {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
