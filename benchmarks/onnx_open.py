"""How long `open_backend` takes on an edgeseg int8 ONNX artefact: this checkout against a
base checkout (the commit before), each open in its own fresh process, alternated.

Before, every ``.onnx`` was parsed whole with ``onnx.load`` (and ``onnx`` imported) to decide
whether it is a source ONNX (PyTorch's NCHW) to adapt; now edgeseg's metadata key is read from
the file's top-level protobuf fields (``core/onnx_props``) and the answer kept per (path,
mtime, size). The model: a 16-filter, depth-4 U-Net (tests/onnx_unets.py's builder), adapted
to NHWC at 256x256 with edgeseg metadata and quantized to int8 QDQ by
``convert.onnx.quantize_onnx`` (what ``convert --onnx --int8`` writes).

Each child imports numpy and onnxruntime first (not timed: both trees pay them), then times:
``first`` — ``open_backend(model, backend="onnxruntime")`` the first time in the process (the
start-up of ``run``/``eval``/``bench``'s children, the ``onnx`` import included where the code
makes it); ``again`` — a second open in the same process; ``decide`` — the source-ONNX check
alone (``adapt_onnx``) on a third call. Medians over ``--reps``; ratios base / head.

    git archive <base-commit> edgeseg | tar -x -C /tmp/base     # the code before
    python benchmarks/onnx_open.py --base /tmp/base [--reps 15] [--work /tmp/onnx-open]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HEAD = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy, onnxruntime  # both trees pay these: not timed
import edgeseg
from edgeseg.runtime.backends import open_backend
from edgeseg.runtime.foreign_onnx import adapt_onnx
path = sys.argv[1]
t0 = time.perf_counter(); open_backend(path, backend="onnxruntime"); t1 = time.perf_counter()
open_backend(path, backend="onnxruntime"); t2 = time.perf_counter()
adapt_onnx(path); t3 = time.perf_counter()
print(json.dumps({"first": (t1 - t0) * 1e3, "again": (t2 - t1) * 1e3,
                  "decide": (t3 - t2) * 1e3, "edgeseg": edgeseg.__file__,
                  "onnx_imported": "onnx" in sys.modules}))
"""


def build_model(work: Path) -> Path:
    """The int8 QDQ edgeseg ONNX artefact (built once in ``work``)."""
    target = work / "unet_int8.onnx"
    if target.is_file():
        return target
    import numpy as np

    sys.path.insert(0, str(HEAD / "tests"))  # the PyTorch-style U-Net builder (no torch)
    from onnx_unets import unet_onnx

    from edgeseg.convert.onnx import quantize_onnx
    from edgeseg.runtime.foreign_onnx import adapt_onnx

    work.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    src = work / "unet_src.onnx"
    unet_onnx(src, size=None, base=16, depth=4)
    adapted = adapt_onnx(src, flags={"input_size": (256, 256), "normalization": "scale"})
    tiles = np.random.default_rng(0).random((8, 256, 256, 1), dtype=np.float32)
    target.write_bytes(quantize_onnx(adapted.read_bytes(), tiles).data)
    return target


def run_child(tree: Path, model: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(model)],
        env=env,
        cwd=model.parent,  # not a checkout: "" on sys.path must not shadow the tree
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed in {tree}: {done.stderr.strip().splitlines()[-1]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["edgeseg"].startswith(str(tree)):
        raise SystemExit(f"the child imported {result['edgeseg']}, not {tree}'s edgeseg")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="checkout of the code before")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeseg-onnx-open"))
    args = ap.parse_args()
    model = build_model(args.work)
    print(f"model: {model} ({model.stat().st_size / 1e6:.2f} MB, int8 QDQ, edgeseg metadata)")
    trees = {"base": args.base.resolve(), "head": HEAD}
    results: dict[str, list[dict]] = {"base": [], "head": []}
    for rep in range(args.reps):
        order = ["base", "head"] if rep % 2 == 0 else ["head", "base"]
        for name in order:
            results[name].append(run_child(trees[name], model))
        b, h = results["base"][-1], results["head"][-1]
        print(f"rep {rep + 1}: first base {b['first']:.2f} ms, head {h['first']:.2f} ms")
    print(f"medians over {args.reps} alternated pairs of processes (ms):")
    for key in ("first", "again", "decide"):
        base = statistics.median(r[key] for r in results["base"])
        head = statistics.median(r[key] for r in results["head"])
        print(f"  {key:6s} base {base:8.2f}  head {head:8.2f}")
        print(f"open {key} base / head = {base / head:.2f}")
    for name in ("base", "head"):
        print(f"{name}: onnx imported by opening: {results[name][0]['onnx_imported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
