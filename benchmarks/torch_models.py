"""PyTorch-style U-Nets through `edgeseg convert` beside a Keras U-Net of the same layers.

Three ONNX graphs of the families issue 22 names, built with ``onnx.helper`` by
``tests/onnx_unets.py`` as ``torch.onnx.export`` writes them (NCHW, logits):

- milesial: 1 channel, bilinear align_corners upsampling, opset 18 (the onnx2tf 1.x trap);
- smp: 3 channels, a ResNet stem (padded 3x3/2 MaxPool after ReLU), ImageNet normalization;
- monai: 3 channels, InstanceNorm, LeakyReLU, ConvTranspose, 2-class softmax head.

Without torch they cannot be trained here: their weights are seeded He-initialised, which is
a harsher int8 test than a trained model (probabilities sit near the threshold). With torch,
export trained models and pass them with --onnx-model NAME=PATH instead.

Measured, each `convert` in its own process, contenders alternated round by round:

- cold: `convert X.onnx --fp32 --int8 --onnx` with an empty onnx2tf cache (onnx2tf included);
- warm: the same with the cache kept (the SavedModel keyed by the file's sha256);
- keras: the same command on a Keras U-Net (edgeseg's builder, same widths and depth);
- from the parity report: int8 TFLite Dice vs the ONNX float model on onnxruntime, the QDQ
  ONNX's Dice; and max |fp32 TFLite − onnxruntime| on the held-out tiles;
- the Edge TPU preflight (`--edgetpu`), or the one-line refusal (MONAI).

    python benchmarks/torch_models.py [--rounds 2] [--size 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


def _convert(model: Path, out: Path, calib: Path, cache: Path, extra: list[str]) -> float:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [EDGESEG, "convert", str(model), "--recipe", "fp32", "--int8", "--onnx",
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
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        print(f"ISBI 2012 data not found at {args.data}", file=sys.stderr)
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="edgeseg-torch-models-"))
    work.mkdir(parents=True, exist_ok=True)
    build = _builder()
    calib = args.data / "images"
    rows = []
    for name in args.only:
        spec = FAMILIES[name]
        onnx_path = work / f"{name}.onnx"
        build.unet_onnx(onnx_path, size=args.size, base=args.base, depth=args.depth, **spec)
        keras_path = work / f"{name}_keras.keras"
        _keras_twin(keras_path, args, spec)
        times: dict[str, list[float]] = {"cold": [], "warm": [], "keras": []}
        for r in range(args.rounds):
            cache = work / f"cache-{name}-{r}"  # a fresh cache: cold
            times["cold"].append(
                _convert(onnx_path, work / f"{name}-cold{r}", calib, cache, FLAGS[name])
            )
            times["keras"].append(
                _convert(keras_path, work / f"{name}-keras{r}", calib, cache, FLAGS[name])
            )
            times["warm"].append(
                _convert(onnx_path, work / f"{name}-warm{r}", calib, cache, FLAGS[name])
            )
        report = json.loads((work / f"{name}-cold0" / f"{name}_parity.json").read_text())
        by = {a["recipe"]: a for a in report["artefacts"]}
        keras_report = json.loads(
            (work / f"{name}-keras0" / f"{name}_keras_parity.json").read_text()
        )
        keras_int8 = next(a for a in keras_report["artefacts"] if a["recipe"] == "int8")
        prepared = work / f"{name}-cold0" / f"{name}.onnx"  # NHWC, activation appended
        err = _fp32_error(prepared, work / f"{name}-cold0" / f"{name}_fp32.tflite", args.size,
                          spec["channels"])  # fmt: skip
        tpu = _edgetpu(onnx_path, work / f"{name}-tpu", calib, work / f"cache-{name}-0",
                       FLAGS[name])  # fmt: skip
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "model": name,
                "fp32_max_error": err,
                "int8_dice": by["int8"]["agreement"]["dice"],
                "qdq_dice": by["onnx-int8"]["agreement"]["dice"],
                "keras_int8_dice": keras_int8["agreement"]["dice"],
                "onnx_dice": by["onnx"]["agreement"]["dice"],
                "edgetpu": tpu,
                "cold_s": med["cold"],
                "warm_s": med["warm"],
                "keras_s": med["keras"],
                "warm_over_keras": med["warm"] / med["keras"],
                "cold_over_keras": med["cold"] / med["keras"],
                "times": times,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"CPU: {_cpu()}; tile {args.size}, base {args.base}, depth {args.depth}, "
          f"{args.rounds} rounds, medians")  # fmt: skip
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
    (work / "torch_models.json").write_text(json.dumps(rows, indent=1))
    return 0


def _keras_twin(path: Path, args: argparse.Namespace, spec: dict) -> None:
    """edgeseg's Keras U-Net with the same tile, widths, depth, channels and classes."""
    from edgeseg.core.metadata import ModelMetadata, write_sidecar
    from edgeseg.model.unet import UNetConfig, build_unet

    classes = spec.get("classes", 1)
    cfg = UNetConfig(
        input_size=(args.size, args.size), channels=spec["channels"], num_classes=classes,
        base_filters=args.base, depth=args.depth, batch_norm=False,
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
