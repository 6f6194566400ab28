"""Shared by the ISBI 2012 benchmarks: the data, the train / held-out split, a latency probe.

Slices 0-23 train (and calibrate), 24-29 are held out; the object is the membrane (mask 0).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "isbi2012"
TRAIN, HELD_OUT = range(0, 24), range(24, 30)


def split_folder(src: Path, dst: Path, ids: range) -> Path:
    """images/ and masks/ under ``dst`` with links to slices ``ids`` of ``src``."""
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
        for i in ids:
            (dst / sub / f"{i}.png").symlink_to((src / sub / f"{i}.png").resolve())
    return dst


def split(src: Path, root: Path) -> tuple[Path, Path]:
    """(train folder, held-out folder) under ``root``."""
    return split_folder(src, root / "train", TRAIN), split_folder(src, root / "test", HELD_OUT)


def probe(path: str, threads: int, warmup: int, runs: int) -> None:
    """Child process: median model-only latency (ms) of one .tflite or .onnx file, as JSON."""
    import numpy as np

    from edgeseg.runtime.backends import open_backend

    backend = open_backend(path, delegate="cpu", threads=threads).backend
    info = backend.input
    rng = np.random.default_rng(0)
    if info.dtype.startswith("float"):
        x = rng.random(info.shape, dtype=np.float32).astype(info.dtype)
    else:
        top = np.iinfo(info.dtype)
        x = rng.integers(top.min, top.max, size=info.shape, dtype=info.dtype)
    for _ in range(warmup):
        backend.invoke(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.invoke(x)
        times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"median_ms": statistics.median(times), "runtime": backend.runtime}))
