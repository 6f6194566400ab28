"""`edgeseg demo`: the whole path on built-in synthetic microscopy, in one folder.

samples → train a small U-Net → convert to fp16, int8 and int8-edgetpu (preflight; compiled
when ``edgetpu_compiler`` is there) with the parity report → latency of every artefact on this
machine → ``run`` of the int8 model on a synthetic microscope stream whose frames are larger
than the model input (tiling) → one report (Markdown and a self-contained HTML page).

The folder keeps a state file: a demo run again with the same settings resumes after the
last finished step; with other settings, or a state it cannot read, it starts clean. A
folder that is not a demo folder is never written into.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeseg import __version__
from edgeseg.errors import DataError
from edgeseg.paths import atomic_write, ensure_writable_dir
from edgeseg.quiet import is_log_file

STATE = ".edgeseg-demo.json"
STEPS = ("samples", "train", "convert", "bench", "run", "report")
SUBDIRS = ("data", "model", "build", "bench", "run")
REPORT_FILES = ("report.md", "report.html")


@dataclass(frozen=True)
class DemoSettings:
    quick: bool
    seed: int = 0

    @property
    def tile(self) -> int:
        return 64 if self.quick else 128

    @property
    def frame(self) -> int:
        return 2 * self.tile  # larger than the model input: the run tiles it

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "edgeseg": __version__}


@dataclass
class DemoResult:
    out: Path
    resumed: list[str]
    files: dict[str, str]
    seconds: float


def _prepare_folder(out: Path, settings: DemoSettings, say: Callable[[str], None]) -> list[str]:
    """Check ``out``; return the steps already done (resume) or [] after a clean start."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the demo")
    state_path = out / STATE
    if not can_hold_demo(out):
        raise DataError(
            f"{out} is not empty and is not an edgeseg demo folder; give a new or empty folder"
        )
    ensure_writable_dir(out)
    done: list[str] = []
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
            same = state.get("settings") == settings.to_dict()
            done = [s for s in state.get("done", []) if s in STEPS] if same else []
        except (OSError, ValueError):
            same = False
        if same and done:
            # Resume only after the longest finished prefix of the steps.
            prefix = []
            for step in STEPS:
                if step not in done:
                    break
                prefix.append(step)
            done = prefix
            say(f"resuming the demo in {out} after: {', '.join(done)}")
        else:
            say(f"starting the demo in {out} afresh (earlier run had other settings)")
            _clean(out)
            done = []
    _save_state(out, settings, done)
    return done


def can_hold_demo(out: Path) -> bool:
    """True when ``out`` is, or may become, a demo folder: absent, empty but for edgeseg logs,
    or holding a demo's state file."""
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    return (out / STATE).exists() or all(is_log_file(p) for p in out.iterdir())


def _clean(out: Path) -> None:
    for sub in SUBDIRS:
        shutil.rmtree(out / sub, ignore_errors=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)


def _save_state(out: Path, settings: DemoSettings, done: list[str]) -> None:
    atomic_write(out / STATE, json.dumps({"settings": settings.to_dict(), "done": done}, indent=2))


def run_demo(
    out: Path,
    *,
    quick: bool = False,
    seed: int = 0,
    say: Callable[[str], None] = lambda _m: None,
    step_progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """Run (or resume) the demo in ``out``; see the module docstring."""
    start = time.perf_counter()
    settings = DemoSettings(quick=quick, seed=seed)
    done = _prepare_folder(out, settings, say)
    resumed = list(done)
    paths = _paths(out)
    for step in STEPS:
        if step in done:
            continue
        if step_progress:
            step_progress(step, STEPS.index(step), len(STEPS))
        # A step that fails half-way is redone from scratch on the next run.
        for sub in _outputs_of(step):
            shutil.rmtree(out / sub, ignore_errors=True)
        {
            "samples": _samples,
            "train": _train,
            "convert": _convert,
            "bench": _bench,
            "run": _run,
            "report": _report,
        }[step](paths, settings, say)
        done.append(step)
        _save_state(out, settings, done)
    files = {k: str(v) for k, v in paths.items() if Path(v).exists()}
    return DemoResult(out, resumed, files, time.perf_counter() - start)


def _outputs_of(step: str) -> tuple[str, ...]:
    return {
        "samples": ("data",),
        "train": ("model",),
        "convert": ("build",),
        "bench": ("bench",),
        "run": ("run",),
        "report": (),
    }[step]


def _paths(out: Path) -> dict[str, Path]:
    return {
        "train_data": out / "data" / "train",
        "val_data": out / "data" / "val",
        "model": out / "model" / "unet.keras",
        "build": out / "build",
        "parity_json": out / "build" / "unet_parity.json",
        "parity_md": out / "build" / "unet_parity.md",
        "int8": out / "build" / "unet_int8.tflite",
        "fp16": out / "build" / "unet_fp16.tflite",
        "bench": out / "bench",
        "video": out / "run" / "overlay.mp4",
        "masks": out / "run" / "masks",
        "csv": out / "run" / "stats.csv",
        "run_summary": out / "run" / "summary.json",
        "report_md": out / "report.md",
        "report_html": out / "report.html",
    }


# ---- steps ------------------------------------------------------------------------------------


def _samples(p: dict[str, Path], s: DemoSettings, say: Callable[[str], None]) -> None:
    from edgeseg.samples import SynthConfig, write_dataset

    n_train, n_val = (40, 8) if s.quick else (160, 16)
    cfg = SynthConfig(size=(s.frame, s.frame))
    say(f"writing {n_train} + {n_val} synthetic microscopy images with exact masks")
    write_dataset(p["train_data"], n_train, cfg, seed=s.seed)
    write_dataset(p["val_data"], n_val, cfg, seed=s.seed + 10_000)


def _train(p: dict[str, Path], s: DemoSettings, say: Callable[[str], None]) -> None:
    from edgeseg.model.unet import UNetConfig
    from edgeseg.train.trainer import TrainConfig, train

    unet = UNetConfig(
        input_size=(s.tile, s.tile), base_filters=8 if s.quick else 16, depth=3 if s.quick else 4
    )
    cfg = TrainConfig(
        out=p["model"],
        data=str(p["train_data"]),
        val=str(p["val_data"]),
        unet=unet,
        epochs=3 if s.quick else 12,
        steps_per_epoch=12 if s.quick else 25,
        batch_size=8,
        max_minutes=None if s.quick else 2.0,  # quick: the same 36 steps on any machine
        seed=s.seed,
    )
    say(
        f"training a U-Net ({unet.base_filters} filters, depth {unet.depth}, "
        f"{s.tile}² tiles)" + (f" for at most {cfg.max_minutes} min" if cfg.max_minutes else "")
    )
    result = train(cfg, on_epoch=lambda e: say(f"  epoch {e.epoch}: val Dice {e.val_dice:.3f}"))
    say(f"trained: val Dice {result.val_dice:.3f} (epoch {result.best_epoch})")


def _convert(p: dict[str, Path], s: DemoSettings, say: Callable[[str], None]) -> None:
    from edgeseg.convert.pipeline import ConvertRequest, convert_model, resolve_recipes

    request = ConvertRequest(
        model=p["model"],
        recipes=resolve_recipes(["fp32"], fp16=True, int8=True, edgetpu=True),
        out=p["build"],
        calib=str(p["train_data"] / "images"),
        val=p["val_data"],
        n=40 if s.quick else 120,
        seed=s.seed,
    )
    convert_model(request, say=lambda m: say(f"  {m}"))


def _bench(p: dict[str, Path], s: DemoSettings, say: Callable[[str], None]) -> None:
    from edgeseg.bench.latency import BenchConfig, measure_in_subprocess, model_info
    from edgeseg.bench.report import build_report, write_report
    from edgeseg.devices.fingerprint import fingerprint

    models = sorted(
        m for m in p["build"].glob("*.tflite") if not m.name.endswith(".rejected.tflite")
    )
    fp = fingerprint()
    for path in models:
        info = model_info(path)
        say(f"  measuring {path.name} in its own process")
        config = BenchConfig(
            model=str(path),
            delegate="auto",
            threads=os.cpu_count() or 1,
            runs=20 if s.quick else 60,
            warmup=3 if s.quick else 10,
        )
        try:
            measured = measure_in_subprocess(config, timeout=300)
        except Exception as exc:  # an Edge TPU model without an Edge TPU, say
            say(f"  skipped {path.name}: {exc}")
            continue
        report = build_report(
            info.to_dict(),
            fp.to_dict(),
            measured,
            profile=None,
            profile_from=None,
            models_in_run=len(models),
        )
        write_report(report, p["bench"])


def _run(p: dict[str, Path], s: DemoSettings, say: Callable[[str], None]) -> None:
    from edgeseg.session import RunOptions, build_session

    frames = 24 if s.quick else 90
    uri = f"synthetic://?size={s.frame}x{s.frame}&frames={frames}&seed={s.seed + 7}"
    say(f"running {p['int8'].name} on {uri} ({s.frame}² frames, {s.tile}² tiles)")
    # The pipeline `edgeseg run` builds, with its policy (one interpreter per core here).
    options = RunOptions(
        model=p["int8"],
        source=uri,
        delegate="cpu",
        headless=True,
        record=p["video"],
        record_fps=10,
        save_masks=p["masks"],
        csv=p["csv"],
    )
    session = build_session(options, warn=say)
    say(f"  {session.description}")
    summary = session.run()
    p["run_summary"].write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    for line in summary.lines():
        say(f"  {line}")


def _report(p: dict[str, Path], s: DemoSettings, say: Callable[[str], None]) -> None:
    parity = json.loads(p["parity_json"].read_text())
    parity_md = p["parity_md"].read_text()
    summary = json.loads(p["run_summary"].read_text())
    bench_rows, svg = _bench_table(p["bench"])
    sample_png = _sample_overlays(p, s)
    files = [
        ("synthetic training and validation data", p["train_data"].parent),
        ("trained model and metadata", p["model"].parent),
        ("converted models and parity report", p["build"]),
        ("latency reports", p["bench"]),
        ("overlay video, masks, per-frame CSV", p["video"].parent),
    ]
    commands = [
        "edgeseg train --data mydata/ --out unet.keras",
        "edgeseg convert unet.keras --fp16 --int8 --calib mydata/images --val val/ --out build/",
        "edgeseg run build/unet_int8.tflite --camera 0",
        "edgeseg bench build/*.tflite --out devices/reports/ && edgeseg report devices/reports/",
    ]
    run_line = (
        f"{summary['frames']} frames at {summary['fps']:.1f} FPS on {summary['backend']}; "
        f"capture→overlay p50 {summary['latency_ms'].get('p50', float('nan')):.0f} ms"
    )
    md = [
        "# edgeseg demo",
        "",
        f"Synthetic fluorescence microscopy, a U-Net trained on {s.tile}² tiles, converted, "
        f"measured and run on {s.frame}² frames ({'quick' if s.quick else 'full'} demo).",
        "",
        "## Parity",
        "",
        parity_md.split("\n", 2)[2] if parity_md.startswith("#") else parity_md,
        "## Latency on this machine (model only)",
        "",
        *bench_rows,
        "",
        "## Live run",
        "",
        run_line,
        "",
        "## Files",
        "",
        *[f"- {what}: `{path}`" for what, path in files],
        "",
        "## The same with your own model and camera",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    p["report_md"].write_text("\n".join(md))
    artefacts = parity["artefacts"]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                a["recipe"],
                f"{a['size_bytes'] / 1024:.0f} KiB",
                f"{a['size_ratio']:.2f}x",
                f"{a['agreement']['dice']:.4f}",
                f"{a['truth']['dice']:.4f}" if a.get("truth") else "–",
                "pass" if a.get("passed", True) else "FAIL",
            )
        )
        + "</tr>"
        for a in artefacts
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeseg demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
img{{max-width:100%;image-rendering:pixelated}}code,pre{{background:#f4f4f4}}</style></head>
<body>
<h1>edgeseg demo</h1>
<p>Synthetic fluorescence microscopy, a U-Net trained on {s.tile}&sup2; tiles, converted,
measured and run on {s.frame}&sup2; frames.</p>
<h2>Sample overlays: float model, fp16, int8</h2>
<img id="overlays" alt="overlays for each precision" src="data:image/png;base64,{sample_png}">
<h2>Parity</h2>
<table id="parity"><tr><th>artefact</th><th>size</th><th>vs fp32</th><th>agreement Dice</th>
<th>Dice vs truth</th><th>gate</th></tr>{rows}</table>
<h2>Latency on this machine</h2>
{svg}
<h2>Live run</h2><p>{html.escape(run_line)}</p>
<h2>Files</h2><ul>{
        "".join(f"<li>{html.escape(w)}: <code>{html.escape(str(q))}</code></li>" for w, q in files)
    }</ul>
<h2>The same with your own model and camera</h2>
<pre>{html.escape(chr(10).join(commands))}</pre>
</body></html>
"""
    p["report_html"].write_text(page)
    say(f"wrote {p['report_md']} and {p['report_html']}")


def _bench_table(folder: Path) -> tuple[list[str], str]:
    from edgeseg.bench.report import collect_reports, compare, latency_svg

    reports = collect_reports([folder]) if folder.is_dir() else []
    if not reports:
        return ["(no latency measured)"], "<p>(no latency measured)</p>"
    comp = compare(reports)
    lines = ["| model | p50 ms | p90 ms | p99 ms |", "|---|---:|---:|---:|"]
    for _, r in reports:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['model']['file']} | {lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} |"
        )
    return lines, latency_svg(comp)


def _sample_overlays(p: dict[str, Path], s: DemoSettings) -> str:
    """One validation image segmented by the float model, fp16 and int8, side by side (PNG)."""
    from edgeseg.core.backend import CallableBackend
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.imageio import list_images, read_image
    from edgeseg.model.loading import load_model
    from edgeseg.optional import cv2
    from edgeseg.runtime.backends import open_backend
    from edgeseg.runtime.overlay import display_frame, overlay, side_by_side

    image = read_image(list_images(p["val_data"] / "images")[0])
    keras_model = load_model(p["model"])
    int8 = open_backend(p["int8"], delegate="cpu").backend
    meta = int8.metadata()
    panels = []
    keras_backend = CallableBackend(keras_model.predict, meta, path=p["model"])
    for backend in (keras_backend, open_backend(p["fp16"]).backend, int8):
        labels = Segmenter(backend, meta).labels(image)
        panels.append(overlay(display_frame(image, meta), labels, meta))
    row = panels[0]
    for panel in panels[1:]:
        row = side_by_side(row, panel, gap=8)
    ok, png = cv2().imencode(".png", cv2().cvtColor(row, cv2().COLOR_RGB2BGR))
    if not ok:
        raise DataError("could not encode the overlay picture")
    return base64.b64encode(png.tobytes()).decode()


__all__ = ["STEPS", "DemoResult", "run_demo"]
