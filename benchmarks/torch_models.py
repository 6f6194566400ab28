"""PyTorch-style U-Nets through `edgeseg convert` beside a Keras U-Net of the same layers.

Three ONNX graphs of the families issue 22 names, built with ``onnx.helper`` by
``tests/onnx_unets.py`` as ``torch.onnx.export`` writes them (NCHW, logits):

- milesial: 1 channel, bilinear align_corners upsampling, opset 18 (the onnx2tf 1.x trap);
- smp: 3 channels, a ResNet stem (padded 3x3/2 MaxPool after ReLU), ImageNet normalization;
- monai: 3 channels, InstanceNorm, LeakyReLU, ConvTranspose, 2-class softmax head.

Without torch they cannot be trained here: their weights are seeded He-initialised, which is
a harsher int8 test than a trained model (probabilities sit near the threshold). With torch,
`benchmarks/torch_train.py` trains the real families (milesial's architecture, smp's
Unet(resnet18), MONAI's BasicUNet) briefly on ISBI 2012 and exports them as users do (dynamic
H/W, logits); pass its folder with ``--exports DIR`` and they are converted instead, with
their flags, ``--input-size SIZE``, the held-out ISBI slices 24-29 as ``--val``, and a last
step: `edgeseg run` on the held-out slices with the int8 artefact tiled, the int8 artefact
built whole at 512x512 (``--frame-size``: the dynamic ONNX imported again at that size), and
the source ONNX itself, each label map scored against onnxruntime's float masks of the source
graph (the same frames, padded and tiled the same way) beside what the parity report promised.

Measured, each `convert` in its own process, contenders alternated round by round:

- cold: `convert X.onnx --fp32 --int8 --onnx` with an empty onnx2tf cache (onnx2tf included);
- warm: the same with the cache kept (the SavedModel keyed by the file's sha256);
- keras: the same command on a Keras U-Net (edgeseg's builder, same widths and depth);
- from the parity report: int8 TFLite Dice vs the ONNX float model on onnxruntime, the QDQ
  ONNX's Dice; and max |fp32 TFLite − onnxruntime| on the held-out tiles;
- the Edge TPU preflight (`--edgetpu`), or the one-line refusal (MONAI).

    python benchmarks/torch_models.py [--rounds 2] [--size 128] [--out DIR]
    python benchmarks/torch_models.py --exports /tmp/torch-unets --size 256
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from isbi import split

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "isbi2012"
EDGESEG = str(Path(sys.executable).parent / "edgeseg")  # the CLI of this interpreter's install
FAMILIES = {
    "milesial": {"channels": 1, "up": "align_corners", "opset": 18},
    "smp": {"channels": 3, "up": "half_pixel", "stem_maxpool": True, "opset": 17},
    "monai": {
        "channels": 3, "classes": 2, "up": "convtranspose", "instance_norm": True,
        "leaky": True, "opset": 18,
    },
}  # fmt: skip
FLAGS = {"milesial": [], "smp": ["--normalization", "imagenet"], "monai": []}


def _builder():
    spec = importlib.util.spec_from_file_location("onnx_unets", ROOT / "tests" / "onnx_unets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _convert(
    model: Path, out: Path, calib: Path, cache: Path, extra: list[str], recipes: list[str] = ()
) -> float:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
    made = list(recipes) or ["--recipe", "fp32", "--int8", "--onnx"]
    cmd = [EDGESEG, "convert", str(model), *made,
           "--calib", str(calib), "--n", "40", "--out", str(out), *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        line = [ln for ln in done.stderr.splitlines() if ln.startswith("error")] or [done.stderr]
        if "below the gate" not in line[-1]:  # a gate failure still ran every step: timed
            raise RuntimeError(f"{model.name}: {line[-1][:300]}")
        print(f"{model.name}: {line[-1][:120]}", file=sys.stderr)
    return seconds


def _fp32_error(onnx_path: Path, tflite: Path, size: int, channels: int) -> float:
    """max |fp32 TFLite − onnxruntime(source ONNX + activation)| on seeded tiles."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    it = Interpreter(str(tflite))
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(4):
        x = rng.random((1, size, size, channels), dtype=np.float32)
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _edgetpu(model: Path, out: Path, calib: Path, cache: Path, extra: list[str]) -> str:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [EDGESEG, "convert", str(model), "--edgetpu",
           "--calib", str(calib), "--n", "40", "--out", str(out), *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    report = out / f"{model.stem}_parity.json"
    if done.returncode == 2 and not report.is_file():
        return (
            "refused: "
            + next((ln for ln in done.stderr.splitlines() if ln.startswith("error")), "?")[7:200]
        )
    data = json.loads(report.read_text())
    tpu = next((a["edgetpu"] for a in data["artefacts"] if a.get("edgetpu")), None) or {}
    pre = tpu.get("preflight") or {}
    mapped, total = pre.get("mapped"), pre.get("total")
    if mapped is None:
        return "no preflight"
    first = pre.get("first_cpu_op")
    tail = f", first CPU op {first['op']}" if first else ""
    return f"{mapped}/{total} ops mapped{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=128, help="tile size")
    ap.add_argument("--base", type=int, default=8, help="filters of the first level")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", nargs="*", default=list(FAMILIES))
    ap.add_argument(
        "--exports", type=Path, default=None, help="torch_train.py's folder (NAME.onnx, NAME.json)"
    )
    ap.add_argument(
        "--only-run", action="store_true",
        help="with --exports: only the `run` checks, on the conversions --out already holds",
    )  # fmt: skip
    args = ap.parse_args()
    if args.only_run and not args.exports:
        ap.error("--only-run takes --exports")
    if not (args.data / "images").is_dir():
        print(f"ISBI 2012 data not found at {args.data}", file=sys.stderr)
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="edgeseg-torch-models-"))
    work.mkdir(parents=True, exist_ok=True)
    build = _builder()
    if args.only_run and (work / "data").is_dir():
        train_dir, held_dir = work / "data" / "train", work / "data" / "test"
    else:
        train_dir, held_dir = split(args.data, work / "data") if args.exports else (None, None)
    calib = train_dir / "images" if train_dir else args.data / "images"
    rows = []
    for name in args.only:
        spec, flags, record = dict(FAMILIES[name]), list(FLAGS[name]), None
        onnx_path = work / f"{name}.onnx"
        if args.exports:
            record = json.loads((args.exports / f"{name}.json").read_text())
            shutil.copyfile(args.exports / f"{name}.onnx", onnx_path)
            spec["channels"], spec["classes"] = record["channels"], record["classes"]
            flags = [*record["flags"], "--input-size", str(args.size)]
            if record["classes"] == 1:  # ISBI's masks: membrane 0; the models' foreground
                flags += ["--foreground-value", "0", "--val", str(held_dir)]
        else:
            build.unet_onnx(onnx_path, size=args.size, base=args.base, depth=args.depth, **spec)
        if args.only_run:
            run = _run_checks(name, onnx_path, work, calib, held_dir, flags, spec)
            print(json.dumps({"model": name, "run": run}), flush=True)
            rows.append({"model": name, "trained": record, "run": run})
            continue
        keras_path = work / f"{name}_keras.keras"
        _keras_twin(keras_path, args, spec, record)
        keras_flags = _without(flags, {"--activation": 1, "--input-size": 1})
        times: dict[str, list[float]] = {"cold": [], "warm": [], "keras": []}
        for r in range(args.rounds):
            cache = work / f"cache-{name}-{r}"  # a fresh cache: cold
            times["cold"].append(_convert(onnx_path, work / f"{name}-cold{r}", calib, cache, flags))
            times["keras"].append(
                _convert(keras_path, work / f"{name}-keras{r}", calib, cache, keras_flags)
            )
            times["warm"].append(_convert(onnx_path, work / f"{name}-warm{r}", calib, cache, flags))
        report = json.loads((work / f"{name}-cold0" / f"{name}_parity.json").read_text())
        by = {a["recipe"]: a for a in report["artefacts"] if not a.get("frame_size")}
        keras_report = json.loads(
            (work / f"{name}-keras0" / f"{name}_keras_parity.json").read_text()
        )
        keras_int8 = next(a for a in keras_report["artefacts"] if a["recipe"] == "int8")
        prepared = work / f"{name}-cold0" / f"{name}.onnx"  # NHWC, activation appended
        err = _fp32_error(prepared, work / f"{name}-cold0" / f"{name}_fp32.tflite", args.size,
                          spec["channels"])  # fmt: skip
        tpu = _edgetpu(onnx_path, work / f"{name}-tpu", calib, work / f"cache-{name}-0", flags)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "model": name,
            "trained": record,
            "fp32_max_error": err,
            "int8_dice": by["int8"]["agreement"]["dice"],
            "qdq_dice": by["onnx-int8"]["agreement"]["dice"],
            "keras_int8_dice": keras_int8["agreement"]["dice"],
            "onnx_dice": by["onnx"]["agreement"]["dice"],
            "int8_truth_dice": (by["int8"].get("truth") or {}).get("dice"),
            "edgetpu": tpu,
            "cold_s": med["cold"],
            "warm_s": med["warm"],
            "keras_s": med["keras"],
            "warm_over_keras": med["warm"] / med["keras"],
            "cold_over_keras": med["cold"] / med["keras"],
            "times": times,
        }
        print(json.dumps(row), flush=True)  # before the run checks: kept if they fail
        if args.exports:
            row["run"] = _run_checks(name, onnx_path, work, calib, held_dir, flags, spec)
            print(json.dumps({"model": name, "run": row["run"]}), flush=True)
        rows.append(row)
    print()
    what = f"trained exports from {args.exports}" if args.exports else "seeded graphs"
    if args.only_run:
        _run_table(rows)
        return 0
    print(f"CPU: {_cpu()}; {what}; tile {args.size}, {args.rounds} rounds, medians")
    print("| model | fp32 max err | int8 Dice | QDQ Dice | Keras twin int8 Dice | Edge TPU | "
          "cold s | warm s | keras s | warm/keras | cold/keras |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['fp32_max_error']:.2g} | {r['int8_dice']:.4f} | "
            f"{r['qdq_dice']:.4f} | {r['keras_int8_dice']:.4f} | {r['edgetpu']} | "
            f"{r['cold_s']:.1f} | {r['warm_s']:.1f} | "
            f"{r['keras_s']:.1f} | {r['warm_over_keras']:.2f} | {r['cold_over_keras']:.2f} |"
        )
    if args.exports:
        _run_table(rows)
    (work / "torch_models.json").write_text(json.dumps(rows, indent=1))
    return 0


def _run_table(rows: list[dict]) -> None:
    print()
    print("`run` on the held-out slices (512x512) against onnxruntime's float masks of the "
          "source graph (Dice), beside the parity report's figure:")  # fmt: skip
    print("| model | held-out Dice of torch | int8 tiled: run / report | "
          "int8 whole 512x512: run / report | source ONNX (run) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        c = r["run"]
        print(
            f"| {r['model']} | {r['trained']['heldout_dice_torch']:.4f} | "
            f"{c['tiled']['run']:.4f} / {c['tiled']['report']:.4f} | "
            f"{c['whole']['run']:.4f} / {c['whole']['report']:.4f} | {c['source']['run']:.4f} |"
        )


def _without(flags: list[str], drop: dict[str, int]) -> list[str]:
    """``flags`` less each option in ``drop`` and its value."""
    out, skip = [], 0
    for f in flags:
        if skip:
            skip -= 1
        elif f in drop:
            skip = drop[f]
        else:
            out.append(f)
    return out


def _run_checks(
    name: str, onnx_path: Path, work: Path, calib: Path, held: Path, flags: list[str], spec: dict
) -> dict[str, dict[str, float]]:
    """`edgeseg run` on the held-out slices: int8 tiled, int8 whole-frame (512x512) and the
    source ONNX, each scored against onnxruntime on the source graph. ``--only-run`` reuses
    the conversions an earlier run left in ``--out``."""
    out = work / f"{name}-frames"
    cache = work / f"cache-{name}-0"
    frame_flags = _without(flags, {"--val": 1})
    # ISBI's masks (0/255) are truth for a one-class model only; K-class masks hold 0..K-1
    val = ["--val", str(held)] if spec["classes"] == 1 else []
    if not (out / f"{name}_parity.json").is_file():
        _convert(onnx_path, out, calib, cache, [*frame_flags, *val],
                 ["--int8", "--frame-size", "512x512"])  # fmt: skip
    report = json.loads((out / f"{name}_parity.json").read_text())
    by = {(a["recipe"], bool(a.get("frame_size"))): a for a in report["artefacts"]}
    run_flags = _without(flags, {"--val": 1, "--foreground-value": 1})
    found = {}
    # Alone in its folder: beside its whole-frame sibling, `run` would pick that one for
    # 512x512 frames (as it should on a device).
    alone = work / f"{name}-tiled-only"
    alone.mkdir(exist_ok=True)
    tiled = Path(shutil.copy2(out / f"{name}_int8.tflite", alone))
    for key, model, extra, promised in (
        ("tiled", tiled, [], by[("int8", False)]),
        ("whole", out / f"{name}_int8_512x512.tflite", [], by[("int8", True)]),
        ("source", onnx_path, run_flags, None),
    ):
        masks = work / f"{name}-run-{key}"
        env = dict(os.environ, XDG_CACHE_HOME=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [EDGESEG, "run", str(model), "--source", str(held / "images"), "--headless",
               "--save-masks", str(masks), *extra]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:  # said, and the other checks still run
            print(f"{name} run {key}: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            found[key] = {"run": float("nan"), "report": float("nan")}
            continue
        # the source ONNX runs tiles of --input-size with the flags' metadata: the tiled
        # artefact's
        dice = _against_source(onnx_path, tiled if key == "source" else model, masks, held, spec)
        found[key] = {
            "run": dice,
            "report": promised["agreement"]["dice"] if promised else float("nan"),
        }
    return found


def _against_source(onnx_path: Path, model: Path, masks: Path, held: Path, spec: dict) -> float:
    """Pooled foreground Dice of `run`'s saved label maps against edgeseg's Segmenter over
    onnxruntime on the source graph, with ``model``'s metadata (tiles, padding, threshold).
    The foreground: any class but 0."""
    import onnxruntime as ort

    from edgeseg.convert.parity import label_maps
    from edgeseg.core.backend import CallableBackend
    from edgeseg.imageio import read_image
    from edgeseg.runtime.backends import open_model

    meta = open_model(model, backend="litert").meta
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def reference(tiles: np.ndarray) -> np.ndarray:
        outs = [sess.run(None, {sess.get_inputs()[0].name: t.transpose(2, 0, 1)[None]})[0]
                for t in tiles]  # fmt: skip
        logits = np.concatenate(outs).transpose(0, 2, 3, 1)
        if spec["classes"] == 1:
            return 1 / (1 + np.exp(-logits))
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    names = sorted(p.name for p in (held / "images").iterdir())
    frames = [read_image(held / "images" / n) for n in names]
    want = label_maps(frames, CallableBackend(reference, meta), meta)
    saved = sorted(masks.iterdir())
    if len(saved) != len(frames):
        raise RuntimeError(f"run saved {len(saved)} label maps for {len(frames)} frames")
    inter = total = 0
    for got_path, ref in zip(saved, want, strict=True):
        got = read_image(got_path) != 0
        ref = ref != 0
        inter += int((got & ref).sum())
        total += int(got.sum() + ref.sum())
    return 2 * inter / total if total else 1.0


def _keras_twin(
    path: Path, args: argparse.Namespace, spec: dict, record: dict | None = None
) -> None:
    """edgeseg's Keras U-Net with the same tile, widths, depth, channels and classes (for a
    trained export: its first level's filters, depth 4 and batch norm)."""
    from edgeseg.core.metadata import ModelMetadata, write_sidecar
    from edgeseg.model.unet import UNetConfig, build_unet

    classes = spec.get("classes", 1)
    cfg = UNetConfig(
        input_size=(args.size, args.size), channels=spec["channels"], num_classes=classes,
        base_filters=record["base"] if record else args.base,
        depth=4 if record else args.depth, batch_norm=record is not None,
        decoder="transpose" if spec["up"] == "convtranspose" else "upsample",
    )  # fmt: skip
    build_unet(cfg).save(path)
    names = ("foreground",) if classes == 1 else ("background", "class1")
    meta = ModelMetadata(
        input_size=(args.size, args.size), channels=spec["channels"],
        channel_order="GRAY" if spec["channels"] == 1 else "RGB", num_classes=classes,
        class_names=names, foreground_value=255 if classes == 1 else None,
    )  # fmt: skip
    write_sidecar(meta, path)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


if __name__ == "__main__":
    sys.exit(main())
