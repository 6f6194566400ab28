"""What recording costs per frame: edgeseg's PyAV writer (H.264, libx264 veryfast/zerolatency,
segments with read-back and publish) against OpenCV's VideoWriter (MPEG-4 part 2, "mp4v", one
file: what edgeseg used before, which cannot carry timestamps).

Each contender runs in its own process, alternated ``--rounds`` times (the order flips each
round), on the same synthetic microscopy frames (``--size``, RGB uint8, as rendered overlays
are); printed: the median milliseconds per frame of each and their ratio, and the bytes per
frame.

    python benchmarks/recording_cost.py [--size 512] [--frames 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def frames(size: int, n: int) -> list:
    import numpy as np

    from edgeseg.samples import SyntheticStream

    gen = SyntheticStream(size=(size, size), seed=3)
    out = []
    for _ in range(n):
        image, _mask = gen.read()
        gray = image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)
        out.append(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)))
    return out


def measure(kind: str, size: int, n: int) -> dict:
    import numpy as np

    data = frames(size, n)
    with tempfile.TemporaryDirectory(prefix="edgeseg-reccost-") as tmp:
        if kind == "pyav":
            from edgeseg.runtime.sinks import FrameRecord, VideoSink

            sink = VideoSink(Path(tmp) / "rec", segment_seconds=4.0)
            sink.prepare(live=False, fps=25.0, size=(size, size))
            labels = np.zeros((size, size), np.uint8)
            t0 = time.perf_counter()
            for i, rgb in enumerate(data):
                record = FrameRecord(i, 0.0, 0, 0, 0, 0, 0, 0, 0, clock_s=i / 25.0)
                sink.write(i, rgb, labels, record)
            sink.close()
            seconds = time.perf_counter() - t0
            written = sum(p.stat().st_size for p in (Path(tmp) / "rec").glob("edgeseg-*"))
        else:
            import cv2

            path = str(Path(tmp) / "out.mp4")
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
            t0 = time.perf_counter()
            for rgb in data:
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            writer.release()
            seconds = time.perf_counter() - t0
            written = os.path.getsize(path)
    return {"ms": 1000 * seconds / n, "bytes": written / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.size, args.frames)))
        return 0
    got: dict[str, list[dict]] = {"pyav": [], "opencv": []}
    for r in range(args.rounds):
        order = ("pyav", "opencv") if r % 2 == 0 else ("opencv", "pyav")
        for kind in order:
            cmd = [sys.executable, __file__, "--child", kind]
            cmd += ["--size", str(args.size), "--frames", str(args.frames)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            got[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(v["ms"] for v in runs) for k, runs in got.items()}
    size = {k: statistics.median(v["bytes"] for v in runs) for k, runs in got.items()}
    print(f"{args.frames} frames of {args.size}x{args.size}, {args.rounds} rounds alternated, ")
    print(f"{os.cpu_count()} cores; medians:")
    print(f"  PyAV H.264 segments   {med['pyav']:.2f} ms/frame, {size['pyav'] / 1024:.1f} kB/frame")
    print(
        f"  OpenCV mp4v one file  {med['opencv']:.2f} ms/frame, "
        f"{size['opencv'] / 1024:.1f} kB/frame"
    )
    print(f"pyav / opencv time = {med['pyav'] / med['opencv']:.2f}")
    print(f"pyav / opencv bytes = {size['pyav'] / size['opencv']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
