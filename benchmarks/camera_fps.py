"""Real time at the camera's resolution: `edgeseg run` end to end against the bare model.

Two cases, built from the real data in ``../shared/data``:

- 1024x1024: ISBI 2012 slices tiled 2x2 into 1024² frames;
- 1080x1920: BBBC039 fields (16-bit, 520x696) tiled 3x3 and cropped to 1080x1920, shown as
  8-bit video frames.

For each, the default U-Net of `edgeseg train` (16 filters, depth 4, 256² tiles) is trained
briefly on the data set (semantic: foreground; BBBC039's labels become masks) and converted
with `edgeseg convert --int8 --frame-size HxW`, calibrated on whole mosaic frames. Each
repetition then runs, each in its own process and alternated:

- the bare whole-frame loop of every installed runtime (LiteRT, OpenVINO) on the whole-frame
  int8 artefact: all cores, the runtime's latency configuration, one prepared frame fed over
  and over (no decoding, normalization, postprocessing or rendering);
- `edgeseg run` on the artefact folder (so it picks the whole-frame artefact) with
  ``--backend auto``: the MJPG clip decoded, segmented, overlaid with the HUD and recorded
  (``--record``, mp4v), headless;
- `edgeseg run` on the tiled artefact alone with ``--backend litert``: today's tiled path.

Medians over ``--reps`` (default 3). Targets (issue 13): end to end >= 0.90x the fastest bare
loop at 1024², >= 0.85x at 1080x1920. Also printed: whole-frame path / tiled path.

    python benchmarks/camera_fps.py [--reps 3] [--frames 120] [--work DIR] [--quick]

``--work`` keeps the clips, models and artefacts between runs (built once). ``--quick``: small
frames, a few frames, one repetition and a minute of training, to check the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGETS = {"1024x1024": 0.90, "1080x1920": 0.85}


class Case(NamedTuple):
    name: str  # "1024x1024"
    size: tuple[int, int]  # (H, W)
    data: Path  # the labelled folder (images/ + masks/ or labels/)
    grid: tuple[int, int]  # data images per mosaic (rows, cols)


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("256x384", (256, 384), DATA / "isbi2012", (1, 1)),
            Case("360x640", (360, 640), DATA / "bbbc039", (1, 1)),
        ]
    return [
        Case("1024x1024", (1024, 1024), DATA / "isbi2012", (2, 2)),
        Case("1080x1920", (1080, 1920), DATA / "bbbc039", (3, 3)),
    ]


# --------------------------------------------------------------------------------------------
# Building: mosaics, clip, training set, model, artefacts
# --------------------------------------------------------------------------------------------


def _images(case: Case) -> list:
    from edgeseg.imageio import natural_key, read_image

    files = sorted((case.data / "images").iterdir(), key=natural_key)
    return [read_image(p) for p in files if p.suffix.lower() in (".png", ".tif", ".tiff")]


def mosaics(case: Case, n: int) -> list:
    """``n`` frames of ``case.size``, each tiling grid[0] x grid[1] consecutive images and
    cropping (the source images keep their bit depth)."""
    import numpy as np

    imgs = _images(case)
    rows, cols = case.grid
    h, w = case.size
    out = []
    for i in range(n):
        k = [imgs[(i * rows * cols + j) % len(imgs)] for j in range(rows * cols)]
        big = np.vstack([np.hstack(k[r * cols : (r + 1) * cols]) for r in range(rows)])
        if big.shape[0] < h or big.shape[1] < w:  # tile further (quick frames are small)
            big = np.tile(big, (-(-h // big.shape[0]), -(-w // big.shape[1])))
        y, x = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        out.append(np.ascontiguousarray(big[y : y + h, x : x + w]))
    return out


def to_8bit(frame):
    """A 16-bit fluorescence frame stretched to 8 bits (0.1-99.9 percentiles), as a camera's
    8-bit video would show it."""
    import numpy as np

    if frame.dtype == np.uint8:
        return frame
    lo, hi = np.percentile(frame, (0.1, 99.9))
    return np.clip((frame.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(
        np.uint8
    )


def write_clip(path: Path, frames: list) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h), False)
    for f in frames:
        writer.write(to_8bit(f))
    writer.release()
    return path


def semantic_set(case: Case, root: Path) -> Path:
    """The case's data as images/ + masks/: BBBC039's instance labels become a foreground mask
    (the speed of the semantic path is what is measured here)."""
    if (case.data / "masks").is_dir():
        return case.data
    import cv2
    import numpy as np

    from edgeseg.imageio import read_image

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for p in sorted((case.data / "labels").iterdir()):
        image = case.data / "images" / p.name
        if not image.exists():
            continue
        shutil.copy(image, root / "images" / p.name)
        mask = (read_image(p) > 0).astype(np.uint8) * 255
        cv2.imwrite(str(root / "masks" / (p.stem + ".png")), mask)
    return root


def edgeseg(*args: str, env: dict | None = None, quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edgeseg.cli.main", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"failed: {' '.join(cmd)}\n" + "\n".join(tail))
    if not quiet:
        print(done.stdout.strip())
    return done


def build(case: Case, work: Path, frames: int, quick: bool) -> dict[str, Path]:
    """Clip, calibration frames, trained model and artefacts of a case (reused when present)."""
    from edgeseg.imageio import write_image

    root = work / case.name
    root.mkdir(parents=True, exist_ok=True)
    clip = root / "clip.avi"
    calib = root / "calib"
    if not clip.exists():
        shots = mosaics(case, frames + 12)
        write_clip(clip, shots[:frames])
        calib.mkdir(exist_ok=True)
        # Whole frames for calibration, 8-bit as the clip shows them (not in the clip).
        for i, f in enumerate(shots[frames:]):
            write_image(calib / f"frame{i:02d}.tif", to_8bit(f))
    keras = root / "unet.keras"
    if not keras.exists():
        data = semantic_set(case, root / "train")
        minutes = "1" if quick else "3"
        edgeseg(
            "train", "--data", str(data), "--out", str(keras), "--no-instances",
            "--epochs", "2" if quick else "4", "--steps-per-epoch", "10" if quick else "25",
            "--max-minutes", minutes, "--normalization", "percentile",
        )  # fmt: skip
    out = root / "artefacts"
    h, w = case.size
    if not out.exists():
        edgeseg(
            "convert", str(keras), "--int8", "--frame-size", f"{h}x{w}", "--calib", str(calib),
            "--out", str(out),
        )  # fmt: skip
    whole = sorted(out.glob(f"*int8*_{h}x{w}.tflite"))
    tiled = [p for p in out.glob("*int8*.tflite") if p not in whole and "edgetpu" not in p.name]
    if not whole or not tiled:
        raise SystemExit(f"{out}: expected an int8 artefact and its {h}x{w} sibling")
    family = root / "family"
    family.mkdir(exist_ok=True)
    alone = root / "tiled"
    alone.mkdir(exist_ok=True)
    for p in (whole[0], tiled[0]):
        shutil.copy(p, family / p.name)
    shutil.copy(tiled[0], alone / tiled[0].name)
    return {
        "clip": clip,
        "whole": family / whole[0].name,
        "family": family,
        "tiled": alone / tiled[0].name,
    }


# --------------------------------------------------------------------------------------------
# Contenders, each in its own process
# --------------------------------------------------------------------------------------------


def installed_runtimes() -> list[str]:
    import importlib.util

    found = ["litert"]
    if importlib.util.find_spec("openvino") is not None:
        found.append("openvino")
    return found


def bare_loop(model: str, runtime: str, clip: str, seconds: float) -> None:
    """Child process: FPS of a bare whole-frame loop (all cores, latency configuration)."""
    import cv2

    from edgeseg.core.preprocess import prepare, prepare_quantized
    from edgeseg.core.segmenter import plan_frame
    from edgeseg.core.tiling import extract_tiles
    from edgeseg.runtime.backends import open_backend

    backend = open_backend(model, backend=runtime, threads=os.cpu_count()).backend
    meta = backend.metadata()
    _, frame = cv2.VideoCapture(clip).read()
    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    q = prepare_quantized(frame, meta, backend.input)
    x = q if q is not None else prepare(frame, meta)
    tile = extract_tiles(x, plan_frame(frame.shape[:2], meta))
    run = backend.predict_raw if q is not None else backend.predict
    for _ in range(3):
        run(tile)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 5:
        run(tile)
        n += 1
    print(json.dumps({"fps": n / (time.perf_counter() - t0)}))


def measure_bare(model: Path, runtime: str, clip: Path, seconds: float) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--bare", str(model), "--runtime", runtime, "--clip",
         str(clip), "--seconds", str(seconds)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bare loop {runtime} failed: {done.stderr.strip()[-400:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["fps"])


def measure_run(model: Path, clip: Path, tmp: Path, backend: str, env: dict) -> dict:
    summary = tmp / "summary.json"
    done = edgeseg(
        "run", str(model), "--source", str(clip), "--headless", "--backend", backend,
        "--record", str(tmp / "out.mp4"), "--summary-json", str(summary), env=env,
    )  # fmt: skip
    result = json.loads(summary.read_text())
    result["line"] = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--seconds", type=float, default=6.0, help="per bare loop")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="run one case, e.g. 1024x1024")
    ap.add_argument("--build-only", action="store_true", help="build the cases, measure nothing")
    ap.add_argument("--bare", help=argparse.SUPPRESS)
    ap.add_argument("--runtime", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        bare_loop(args.bare, args.runtime, args.clip, args.seconds)
        return 0
    if args.quick:
        args.reps, args.frames, args.seconds = 1, 8, 1.0
    if not DATA.is_dir():
        print(f"no data at {DATA}: nothing to measure")
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="camera-fps-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"))  # auto measures once, then reuses
    runtimes = installed_runtimes()
    ok = True
    for case in cases(args.quick):
        if args.only and case.name != args.only:
            continue
        if not case.data.is_dir():
            print(f"{case.name}: no data at {case.data}, skipped")
            continue
        t0 = time.perf_counter()
        built = build(case, work, args.frames, args.quick)
        print(f"{case.name}: built in {time.perf_counter() - t0:.0f} s ({built['whole'].name})")
        if args.build_only:
            continue
        rows: dict[str, list[float]] = {f"bare {r}": [] for r in runtimes}
        rows["edgeseg run (whole frame)"] = []
        rows["edgeseg run (tiled, litert)"] = []
        line = ""
        for rep in range(args.reps):
            for r in runtimes:
                rows[f"bare {r}"].append(
                    measure_bare(built["whole"], r, built["clip"], args.seconds)
                )
            got = measure_run(built["family"], built["clip"], work, "auto", env)
            rows["edgeseg run (whole frame)"].append(got["fps"])
            line = got["line"]
            tiled = measure_run(built["tiled"], built["clip"], work, "litert", env)
            rows["edgeseg run (tiled, litert)"].append(tiled["fps"])
            print(
                f"  rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()) + " FPS",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in rows.items()}
        fastest = max((k for k in med if k.startswith("bare")), key=lambda k: med[k])
        e2e = med["edgeseg run (whole frame)"]
        ratio = e2e / med[fastest]
        print(f"  {case.name}, medians over {args.reps} reps, {os.cpu_count()} cores:")
        for k, v in med.items():
            print(f"    {k:<28} {v:7.2f} FPS  ({1000 / v:6.1f} ms/frame)")
        print(f"    run said: {line}")
        print(
            f"    whole-frame path / tiled path = {e2e / med['edgeseg run (tiled, litert)']:.2f}x"
        )
        target = TARGETS.get(case.name)
        if target is None:
            print(f"    end to end / fastest bare ({fastest}) = {ratio:.3f} (quick: no target)")
        else:
            passed = ratio >= target
            ok &= passed
            print(
                f"    {'PASS' if passed else 'MISS'}  end to end / fastest bare ({fastest}) = "
                f"{ratio:.3f} (>= {target:.2f})"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
