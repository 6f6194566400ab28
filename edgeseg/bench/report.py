"""Latency reports: one JSON file (+ Markdown) per measured model, and their comparison.

A report is versioned JSON (``"schema": "edgeseg.bench/1"``) written by ``edgeseg bench`` to
``OUT/<device slug>/<model>-<label>-<runtime>-<date>.json`` beside a Markdown summary (the
runtime, e.g. ``litert`` or ``openvino``, is in the name since `bench` measures every installed
runtime side by side; reports written before carry no runtime in their name and are read the
same way). Its sections:

- ``device``: the fingerprint (:mod:`edgeseg.devices.fingerprint`) and the device profile
  it was measured as (``profile``, given with ``--device`` or recognised from the
  fingerprint);
- ``model``: file, name, precision, label (recipe), size, sha256, input and output tensors;
- ``runtime`` and ``method``: runtime (``backend``: litert, openvino, onnxruntime; absent in
  older reports) and delegate, threads, runs, warm-up, timer, isolation;
- ``cold`` (load and first inference) and ``latency_ms`` (the sustained runs: min, mean,
  p50, p90, p99, max, std) apart, ``throughput``, ``drift``, ``memory``, ``thermal``;
- ``e2e``: the pipeline's per-stage timings, or null.

:func:`load_report` reads one back and checks it: another schema version, a JSON error or a
missing field is a one-line :class:`DataError` naming the file. :func:`compare` puts many
reports in one table (devices × models × precisions, newest report of each), with the
speed-up of each precision over fp32 on the same device and the deviation from the
reference figures of the device's profile where they are comparable: the same input size,
precision and kind of delegate (the reference's model is named: it is usually another
architecture).
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.errors import DataError

__all__ = [
    "SCHEMA",
    "Comparison",
    "build_report",
    "collect_reports",
    "compare",
    "comparison_html",
    "comparison_markdown",
    "load_report",
    "report_markdown",
    "write_report",
]

SCHEMA = "edgeseg.bench/1"
PRECISION_ORDER = {"fp32": 0, "fp16": 1, "int8": 2}
_STATS = ("min", "mean", "p50", "p90", "p99", "max", "std")


# --------------------------------------------------------------------------------------------
# Writing one report


def build_report(
    model: Mapping[str, Any],
    device: Mapping[str, Any],
    measured: Mapping[str, Any],
    *,
    profile: str | None,
    profile_from: str | None,
    models_in_run: int = 1,
    created: float | None = None,
) -> dict[str, Any]:
    """The report dict from a model description, a fingerprint dict and a measurement."""
    from edgeseg import __version__

    stamp = time.gmtime(created if created is not None else time.time())
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
        "edgeseg_version": __version__,
        "device": {**dict(device), "profile": profile, "profile_from": profile_from},
        "model": dict(model),
    }
    report.update({k: v for k, v in measured.items()})
    method = dict(report.get("method") or {})
    method["models_in_run"] = models_in_run
    if models_in_run > 1:
        method["isolation"] = (
            f"Each of the {models_in_run} models of this run was measured in its own process, "
            "one after another"
        )
    report["method"] = method
    return report


def report_path(out: Path, report: Mapping[str, Any]) -> Path:
    """``OUT/<device slug>/<model>-<label>-<runtime>-<date>.json`` (no ``-<runtime>`` for a
    report that does not name its runtime kind); a time is added if that exists."""
    folder = Path(out) / _safe(report["device"]["slug"])
    created = str(report["created"])
    date = created[:10]
    kind = (report.get("runtime") or {}).get("backend")
    runtime = f"-{_safe(kind)}" if kind else ""
    stem = f"{_safe(report['model']['name'])}-{_safe(report['model']['label'])}{runtime}-{date}"
    path = folder / f"{stem}.json"
    if path.exists():
        clock = created[11:19].replace(":", "")
        path = folder / f"{stem}-{clock}.json"
        n = 2
        while path.exists():
            path = folder / f"{stem}-{clock}-{n}.json"
            n += 1
    return path


def _safe(text: str) -> str:
    keep = "".join(c if (c.isalnum() or c in "._-") else "-" for c in str(text))
    return keep.strip(".-") or "unnamed"


def write_report(report: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the JSON and its Markdown summary under ``out``; (json path, md path)."""
    path = report_path(out, report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        md = path.with_suffix(".md")
        md.write_text(report_markdown(report))
    except OSError as exc:
        raise DataError(f"cannot write the report to {path.parent}: {exc.strerror or exc}") from exc
    return path, md


def _ms(value: Any, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}" if value >= 0.1 else f"{value:.3f}"


def _mb(n_bytes: Any) -> str:
    if not isinstance(n_bytes, (int, float)):
        return "–"
    return f"{n_bytes / 1e6:.2f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.1f} kB"


def _device_line(device: Mapping[str, Any]) -> str:
    parts = [str(device.get("board") or device.get("cpu_model") or "unknown")]
    if device.get("board") and device.get("cpu_model"):
        parts.append(str(device["cpu_model"]))
    parts.append(f"{device.get('cores', '?')} cores, {device.get('machine', '?')}")
    if device.get("os"):
        parts.append(str(device["os"]))
    return "; ".join(parts)


def _thermal_line(thermal: Mapping[str, Any] | None) -> str:
    if not thermal:
        return "not recorded"

    def one(state: Mapping[str, Any] | None) -> str:
        if not state:
            return "–"
        temps = state.get("temperatures_c") or {}
        bits = []
        if temps:
            bits.append(f"{max(temps.values()):.1f} °C")
        if state.get("cpu_mhz"):
            bits.append(f"{state['cpu_mhz']:.0f} MHz")
        if state.get("throttled"):
            flags = ", ".join(state.get("throttled_flags") or []) or "none"
            bits.append(f"throttled={state['throttled']} ({flags})")
        return ", ".join(bits) or "no sensors"

    return f"start {one(thermal.get('start'))}; end {one(thermal.get('end'))}"


def report_markdown(report: Mapping[str, Any]) -> str:
    """A one-page Markdown summary of one report."""
    dev, model, rt = report["device"], report["model"], report.get("runtime", {})
    method, lat = report.get("method", {}), report["latency_ms"]
    cold = report.get("cold") or {}
    shape = model.get("input", {}).get("shape")
    lines = [
        f"# {model['name']} {model['label']} on {dev['slug']}",
        "",
        f"Measured {report['created']} with edgeseg {report.get('edgeseg_version', '?')} "
        f"(report schema `{report['schema']}`). {method.get('isolation', '')}.",
        "",
        "| | |",
        "|---|---|",
        f"| device | {_device_line(dev)} |",
        f"| profile | {dev.get('profile') or '–'}"
        + (f" ({dev['profile_from']})" if dev.get("profile_from") else "")
        + " |",
        f"| model | {model.get('file', model['name'])}: {model['precision']} "
        f"(label {model['label']}), {_mb(model.get('size_bytes'))}, input "
        f"{shape} {model.get('input', {}).get('dtype', '')} |",
        f"| runtime | {rt.get('delegate', '?')} |",
        f"| method | {method.get('runs', '?')} timed runs after {method.get('warmup', '?')} "
        f"warm-up; {method.get('timer', '')} |",
        f"| Python / OS | {dev.get('python', '?')} / {dev.get('os', '?')}, kernel "
        f"{dev.get('kernel', '?')} |",
        f"| governor / clock | {dev.get('governor') or '–'} / max "
        f"{dev.get('cpu_max_mhz') or '–'} MHz |",
        f"| thermal | {_thermal_line(report.get('thermal'))} |",
    ]
    if dev.get("jetson_release"):
        lines.append(f"| Jetson release | {dev['jetson_release']} |")
    if dev.get("edgetpus"):
        tpus = ", ".join(
            f"{t['kind']} {t['id']}"
            + (f" at {t['usb_speed_mbps']} Mbit/s" if t.get("usb_speed_mbps") else "")
            for t in dev["edgetpus"]
        )
        lines.append(f"| Edge TPU | {tpus}; {dev.get('libedgetpu') or 'libedgetpu: –'} |")
    lines += [
        "",
        "## Model-only latency (ms)",
        "",
        "| | " + " | ".join(_STATS) + " |",
        "|---|" + "---:|" * len(_STATS),
        "| sustained | " + " | ".join(_ms(lat.get(k)) for k in _STATS) + " |",
        "",
        f"Cold start: loading {_ms(cold.get('load_ms'))} ms, first inference "
        f"{_ms(cold.get('first_ms'))} ms (not in the statistics above).",
        "",
    ]
    thr = report.get("throughput") or {}
    mem = report.get("memory") or {}
    drift = report.get("drift") or {}
    lines.append(
        f"Throughput {thr.get('inferences_per_s', '–')} inferences/s "
        f"({thr.get('tiles_per_inference', 1)} tile(s) each). Peak memory "
        f"{mem.get('peak_rss_mb', '–')} MB, of which {mem.get('model_peak_mb', '–')} MB after "
        f"loading the model ({mem.get('method', '?')})."
    )
    compute = report.get("compute") or {}
    if compute.get("gmacs_per_s"):
        lines.append(
            f"Compute: {compute['macs'] / 1e9:.3f} GMAC per inference, "
            f"{compute['gmacs_per_s']:.1f} GMAC/s at the median (an int8 model's figure is a "
            "device profile's `int8_gmacs`, which `edgeseg distill --device` predicts from)."
        )
    if drift.get("ratio"):
        lines.append(
            f"Drift: the last tenth of the runs took {drift['ratio']:.2f}x the first tenth "
            "(above 1: the device slowed down while measured)."
        )
    e2e = report.get("e2e")
    if e2e:
        lines += [
            "",
            f"## End to end: {e2e.get('source', '?')}",
            "",
            f"{e2e.get('frames', 0)} frames {e2e.get('frame_size')} ({e2e.get('mode')}) in "
            f"{e2e.get('seconds', 0)} s: {e2e.get('fps', 0)} FPS, {e2e.get('dropped', 0)} "
            f"dropped; {e2e.get('workers', 1)} inference worker(s), as `edgeseg run` would use.",
            "",
            "| stage | p50 | p90 | p99 | mean |",
            "|---|---:|---:|---:|---:|",
        ]
        for stage, st in (e2e.get("stages_ms") or {}).items():
            lines.append(
                f"| {stage} | {_ms(st.get('p50'))} | {_ms(st.get('p90'))} | "
                f"{_ms(st.get('p99'))} | {_ms(st.get('mean'))} |"
            )
        if e2e.get("latency_ms"):
            st = e2e["latency_ms"]
            lines.append(
                f"| capture → overlay | {_ms(st.get('p50'))} | {_ms(st.get('p90'))} | "
                f"{_ms(st.get('p99'))} | {_ms(st.get('mean'))} |"
            )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Reading reports back


def _need(report: Any, dotted: str, kind: Any, where: str) -> Any:
    value = report
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise DataError(f"{where}: malformed report: field '{dotted}' is missing")
        value = value[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DataError(f"{where}: malformed report: field '{dotted}' has the wrong type")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where}: malformed report: field '{dotted}' is not a finite number")
    return value


def load_report(path: str | Path) -> dict[str, Any]:
    """A report read and checked; DataError naming the file for anything else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read report {path}: {exc}") from exc
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(report, dict):
        raise DataError(f"{path} is not an edgeseg bench report (not a JSON object)")
    schema = report.get("schema")
    if schema is None:
        raise DataError(f"{path} is not an edgeseg bench report (no 'schema' field)")
    if schema != SCHEMA:
        raise DataError(
            f"{path} has report schema {schema!r}; this edgeseg reads {SCHEMA!r} (re-run "
            "`edgeseg bench`, or use the edgeseg version that wrote it)"
        )
    where = str(path)
    _need(report, "created", str, where)
    for key in ("device.slug", "model.name", "model.label", "runtime.delegate"):
        _need(report, key, str, where)
    precision = _need(report, "model.precision", str, where)
    if precision not in PRECISION_ORDER:
        raise DataError(f"{where}: malformed report: unknown precision {precision!r}")
    shape = _need(report, "model.input.shape", list, where)
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        raise DataError(f"{where}: malformed report: model.input.shape must be 4 integers")
    for key in _STATS:
        _need(report, f"latency_ms.{key}", (int, float), where)
    _need(report, "throughput.inferences_per_s", (int, float), where)
    return report


def collect_reports(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every report under the folders (recursively) and files given, checked."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.json") if q.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise DataError(f"{p} not found")
    return [(p, load_report(p)) for p in found]


# --------------------------------------------------------------------------------------------
# Comparing reports


@dataclass(frozen=True)
class Row:
    """One device × model × label × delegate × threads: its newest report."""

    device: str
    model: str
    label: str
    precision: str
    delegate: str
    delegate_class: str
    threads: int | None
    input_hw: tuple[int, int]
    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float
    size_bytes: int | None
    peak_mb: float | None
    created: str
    profile: str | None
    path: str
    older: int  # earlier reports of the same row not shown
    backend: str = ""  # litert, openvino, onnxruntime ("" in reports that predate it)


@dataclass(frozen=True)
class Speedup:
    device: str
    model: str
    label: str
    delegate: str
    over_fp32: float  # fp32 p50 / this p50


@dataclass(frozen=True)
class Deviation:
    row: Row
    reference: Any  # edgeseg.devices.profiles.Reference

    @property
    def ratio(self) -> float:
        return self.row.p50 / self.reference.ms


@dataclass(frozen=True)
class Comparison:
    rows: tuple[Row, ...]
    speedups: tuple[Speedup, ...]
    deviations: tuple[Deviation, ...]
    sources: tuple[str, ...]


def compare(
    reports: Sequence[tuple[Path, Mapping[str, Any]]], profiles: Mapping[str, Any] | None = None
) -> Comparison:
    """The comparison of checked reports (see the module docstring)."""
    from edgeseg.devices.profiles import available_profiles, delegate_class, detect_profile

    profiles = available_profiles() if profiles is None else profiles
    groups: dict[tuple[Any, ...], list[tuple[Path, Mapping[str, Any]]]] = {}
    for path, rep in reports:
        key = (
            rep["device"]["slug"],
            rep["model"]["name"],
            rep["model"]["label"],
            rep["runtime"]["delegate"],
            rep["runtime"].get("threads"),
        )
        groups.setdefault(key, []).append((path, rep))
    rows = []
    for items in groups.values():
        items.sort(key=lambda it: str(it[1]["created"]))
        path, rep = items[-1]
        dev = rep["device"]
        delegate = rep["runtime"]["delegate"]
        profile = dev.get("profile") or detect_profile(dev, delegate, profiles)
        shape = rep["model"]["input"]["shape"]
        lat = rep["latency_ms"]
        rows.append(
            Row(
                device=dev["slug"],
                model=rep["model"]["name"],
                label=rep["model"]["label"],
                precision=rep["model"]["precision"],
                delegate=delegate,
                delegate_class=delegate_class(delegate),
                threads=rep["runtime"].get("threads"),
                input_hw=(shape[1], shape[2]),
                p50=float(lat["p50"]),
                p90=float(lat["p90"]),
                p99=float(lat["p99"]),
                mean=float(lat["mean"]),
                throughput=float(rep["throughput"]["inferences_per_s"]),
                size_bytes=rep["model"].get("size_bytes"),
                peak_mb=(rep.get("memory") or {}).get("peak_rss_mb"),
                created=str(rep["created"]),
                profile=profile,
                path=str(path),
                older=len(items) - 1,
                backend=str(rep["runtime"].get("backend") or ""),
            )
        )
    rows.sort(
        key=lambda r: (
            r.device,
            r.model,
            PRECISION_ORDER.get(r.precision, 9),
            r.label,
            r.delegate,
            r.threads or 0,
        )
    )
    speedups = []
    for r in rows:
        if r.precision == "fp32":
            continue
        bases = [
            b
            for b in rows
            if b.device == r.device
            and b.model == r.model
            and b.precision == "fp32"
            and b.delegate_class == "cpu"
        ]
        if not bases:
            continue
        # The fp32 run on the same runtime with the same thread count when there is one.
        base = next(
            (b for b in bases if b.threads == r.threads and b.backend == r.backend),
            next((b for b in bases if b.threads == r.threads), bases[0]),
        )
        speedups.append(Speedup(r.device, r.model, r.label, r.delegate, base.p50 / r.p50))
    deviations = []
    for r in rows:
        prof = profiles.get(r.profile) if r.profile else None
        for ref in getattr(prof, "references", ()):
            if (
                tuple(ref.input) == r.input_hw
                and ref.precision == r.precision
                and ref.delegate == r.delegate_class
            ):
                deviations.append(Deviation(r, ref))
    return Comparison(
        rows=tuple(rows),
        speedups=tuple(speedups),
        deviations=tuple(deviations),
        sources=tuple(sorted({str(p) for p, _ in reports})),
    )


def _threads(value: int | None) -> str:
    return str(value) if value else "default"


def comparison_markdown(comp: Comparison) -> str:
    """The comparison as Markdown: latency table, speed-ups, deviations from references."""
    lines = [
        "# Latency across devices, models and precisions",
        "",
        f"{len(comp.rows)} configurations from {len(comp.sources)} report(s); model-only "
        "latency of the sustained runs, each model measured in its own process. "
        "Newest report per configuration.",
        "",
        "| device | model | precision | delegate | threads | input | p50 ms | p90 ms | p99 ms "
        "| inferences/s | size | peak MB | vs fp32 | measured |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    speed = {(s.device, s.model, s.label, s.delegate): s.over_fp32 for s in comp.speedups}
    for r in comp.rows:
        sp = speed.get((r.device, r.model, r.label, r.delegate))
        vs = "1.00 (base)" if r.precision == "fp32" else (f"{sp:.2f}x" if sp else "–")
        lines.append(
            f"| {r.device} | {r.model} | {r.label} | {r.delegate} | {_threads(r.threads)} "
            f"| {r.input_hw[0]}x{r.input_hw[1]} | {_ms(r.p50)} | {_ms(r.p90)} | {_ms(r.p99)} "
            f"| {r.throughput:.1f} | {_mb(r.size_bytes)} | "
            f"{r.peak_mb if r.peak_mb is not None else '–'} | {vs} | {r.created[:10]} |"
        )
    lines += ["", "## Speed-up over fp32 (same device and model, fp32 on the CPU)", ""]
    if comp.speedups:
        lines += ["| device | model | precision | delegate | speed-up |", "|---|---|---|---|---:|"]
        lines += [
            f"| {s.device} | {s.model} | {s.label} | {s.delegate} | {s.over_fp32:.2f}x |"
            for s in comp.speedups
        ]
    else:
        lines.append("No device has both an fp32 report and another precision of the same model.")
    lines += [
        "",
        "## Deviation from published reference figures",
        "",
        "Where the device's profile (devices/profiles/) carries a figure with the same input "
        "size, precision and kind of delegate. The reference model is named: it is usually "
        "another architecture, so the ratio says how far apart they are, not which is right.",
        "",
    ]
    if comp.deviations:
        lines += [
            "| device | ours | p50 ms | reference | figure | ms | ours / ref | threads "
            "(ours / ref) | measured on | source |",
            "|---|---|---:|---|---:|---:|---:|---|---|---|",
        ]
        for d in comp.deviations:
            r, ref = d.row, d.reference
            lines.append(
                f"| {r.device} ({r.profile}) | {r.model} {r.label} | {_ms(r.p50)} | {ref.model} "
                f"| {ref.figure()} | {_ms(ref.ms)} | {d.ratio:.2f} | {_threads(r.threads)} / "
                f"{ref.threads or '?'} | {ref.measured_on} | {ref.source} |"
            )
    else:
        lines.append(
            "No report matches a reference figure of its device's profile (same input size, "
            "precision and delegate)."
        )
    lines += ["", "Reports: " + ", ".join(f"`{s}`" for s in comp.sources)]
    return "\n".join(lines) + "\n"


_PRECISION_COLOURS = {"fp32": "#4e79a7", "fp16": "#f28e2b", "int8": "#59a14f"}


def latency_svg(comp: Comparison, width: int = 900) -> str:
    """An inline SVG: one bar per configuration (p50), a whisker to p99."""
    rows = comp.rows
    bar, gap, left, right, top = 18, 8, 330, 70, 30
    height = top + len(rows) * (bar + gap) + 40
    top_ms = max([r.p99 for r in rows] + [1e-6])
    scale = (width - left - right) / top_ms
    step = _nice_step(top_ms / 5)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="model-only latency p50 and p99">',
        f'<text x="{left}" y="18" font-size="13" fill="#333">model-only latency, ms '
        "(bar: p50, line: p50 to p99)</text>",
    ]
    tick = 0.0
    axis_y = top + len(rows) * (bar + gap)
    while tick <= top_ms * 1.0001:
        x = left + tick * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle" '
            f'fill="#555">{tick:g}</text>'
        )
        tick += step
    for i, r in enumerate(rows):
        y = top + i * (bar + gap)
        colour = _PRECISION_COLOURS.get(r.precision, "#999")
        name = html.escape(f"{r.device} · {r.model} · {r.label} · {_threads(r.threads)} thr")
        w50 = max(1.0, r.p50 * scale)
        parts.append(
            f'<text x="{left - 6}" y="{y + bar - 5}" font-size="11" text-anchor="end" '
            f'fill="#222">{name}</text>'
            f'<rect x="{left}" y="{y}" width="{w50:.1f}" height="{bar}" fill="{colour}">'
            f"<title>{name}: p50 {r.p50:.3f} ms, p99 {r.p99:.3f} ms</title></rect>"
            f'<line x1="{left + w50:.1f}" y1="{y + bar / 2}" x2="{left + r.p99 * scale:.1f}" '
            f'y2="{y + bar / 2}" stroke="#222" stroke-width="1.5"/>'
            f'<text x="{left + r.p99 * scale + 4:.1f}" y="{y + bar - 5}" font-size="11" '
            f'fill="#222">{_ms(r.p50)}</text>'
        )
    legend_y = height - 8
    for j, (prec, colour) in enumerate(_PRECISION_COLOURS.items()):
        x = left + j * 80
        parts.append(
            f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="{legend_y}" font-size="11" fill="#333">{prec}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


def comparison_html(comp: Comparison) -> str:
    """A self-contained HTML page (no external assets): the tables and an inline SVG plot."""
    e = html.escape
    speed = {(s.device, s.model, s.label, s.delegate): s.over_fp32 for s in comp.speedups}
    head = (
        "<tr><th>device</th><th>model</th><th>precision</th><th>delegate</th><th>threads</th>"
        "<th>input</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>inferences/s</th>"
        "<th>size</th><th>peak MB</th><th>vs fp32</th><th>measured</th></tr>"
    )
    body = []
    for r in comp.rows:
        sp = speed.get((r.device, r.model, r.label, r.delegate))
        vs = "1.00 (base)" if r.precision == "fp32" else (f"{sp:.2f}x" if sp else "–")
        cells = [
            r.device,
            r.model,
            r.label,
            r.delegate,
            _threads(r.threads),
            f"{r.input_hw[0]}x{r.input_hw[1]}",
            _ms(r.p50),
            _ms(r.p90),
            _ms(r.p99),
            f"{r.throughput:.1f}",
            _mb(r.size_bytes),
            "–" if r.peak_mb is None else str(r.peak_mb),
            vs,
            r.created[:10],
        ]
        body.append(
            "<tr>"
            + "".join(
                f'<td class="{"num" if i >= 4 and i != 5 and i != 13 else ""}">{e(c)}</td>'
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    dev_rows = []
    for d in comp.deviations:
        r, ref = d.row, d.reference
        dev_rows.append(
            "<tr>"
            + "".join(
                f"<td>{e(str(c))}</td>"
                for c in (
                    f"{r.device} ({r.profile})",
                    f"{r.model} {r.label}",
                    _ms(r.p50),
                    ref.model,
                    ref.figure(),
                    _ms(ref.ms),
                    f"{d.ratio:.2f}",
                    f"{_threads(r.threads)} / {ref.threads or '?'}",
                    ref.measured_on,
                    ref.source,
                )
            )
            + "</tr>"
        )
    deviations = (
        "<table><tr><th>device</th><th>ours</th><th>p50 ms</th><th>reference</th><th>figure</th>"
        "<th>ms</th><th>ours / ref</th><th>threads (ours / ref)</th><th>measured on</th>"
        "<th>source</th></tr>" + "".join(dev_rows) + "</table>"
        if dev_rows
        else "<p>No report matches a reference figure of its device's profile (same input "
        "size, precision and delegate).</p>"
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;margin:12px 0;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
        "h1{font-size:20px}h2{font-size:16px;margin-top:28px}p{max-width:900px}"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>edgeseg latency report</title>"
        f"<style>{style}</style></head><body>"
        "<h1>Latency across devices, models and precisions</h1>"
        f"<p>{len(comp.rows)} configurations from {len(comp.sources)} report(s): model-only "
        "latency of the sustained runs, each model measured in its own process; the newest "
        "report per configuration.</p>"
        f"{latency_svg(comp)}"
        f"<table>{head}{''.join(body)}</table>"
        "<h2>Deviation from published reference figures</h2>"
        "<p>Where the device's profile carries a figure with the same input size, precision "
        "and kind of delegate. The reference model is usually another architecture.</p>"
        f"{deviations}"
        "<p>Reports: " + ", ".join(e(s) for s in comp.sources) + "</p>"
        "</body></html>\n"
    )
