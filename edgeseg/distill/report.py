"""The distill report: a JSON record and its Markdown reading, written beside the student
(``student.distill.json``, ``student.distill.md``), as ``convert`` writes its parity report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeseg.paths import atomic_write

__all__ = ["SCHEMA", "report_markdown", "report_paths", "write_report"]

SCHEMA = "edgeseg.distill/1"


def report_paths(student: Path) -> tuple[Path, Path]:
    """``student.keras`` → (``student.distill.json``, ``student.distill.md``)."""
    stem = student.with_suffix("")
    return stem.with_name(stem.name + ".distill.json"), stem.with_name(stem.name + ".distill.md")


def _ms(lat: Mapping[str, Any] | None) -> str:
    return "–" if not lat else f"{lat['ms']:.2f} ms ({lat['how']})"


def _f(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def report_markdown(r: Mapping[str, Any]) -> str:
    """The report as Markdown: the student against the teacher, then the search and training."""
    t, s = r["teacher"], r["student"]
    metric = r["agreement"]["metric"]
    lines = [
        f"# Distilled {Path(s['path']).name} from {Path(t['path']).name}",
        "",
        f"Budget {r['budget_ms']:g} ms per {r['frame_size']} frame (int8, whole frame, "
        f"{r['how']}{' on ' + r['runtime'] if r.get('runtime') else ''}"
        f"{', device ' + r['device'] if r.get('device') else ''}). "
        f"{r['minutes']:.1f} min in all.",
        "",
        "| | teacher | student |",
        "|---|---|---|",
        f"| architecture | {t.get('arch', '–')} | {s['arch']}, width {s['width']:g} "
        f"({s['top_filters']} filters, depth {s['depth']}) |",
        f"| GMAC per frame | {t['macs'] / 1e9:.3f} | {s['macs'] / 1e9:.3f} |",
        f"| parameters | {t['params']:,} | {s['params']:,} |",
        f"| int8 latency at {r['frame_size']} | {_ms(t.get('latency'))} | "
        f"{_ms(s.get('latency'))} |",
    ]
    if s.get("measured_ms") is not None and s.get("predicted_ms") is not None:
        lines.append(
            f"| student predicted vs measured here | | {s['predicted_ms']:.2f} vs "
            f"{s['measured_ms']:.2f} ms ({s['prediction_error']:+.0%}) |"
        )
    lines += [
        f"| agreement with the teacher ({metric}, held-back frames) | 1 | "
        f"{r['agreement']['value']:.4f} |",
    ]
    acc = r.get("accuracy")
    if acc:
        for key in ("dice", "ap50"):
            if key in acc["teacher"]:
                lines.append(
                    f"| {key} against the truth of {acc['val']} | {_f(acc['teacher'][key])} | "
                    f"{_f(acc['student'][key])} |"
                )
    if r.get("speedup"):
        lines += ["", f"The student runs {r['speedup']:.2f}x faster than the teacher."]
    lines += ["", "## Students tried", "", "| student | int8 latency | GMAC | fits | note |",
              "|---|---|---|---|---|"]  # fmt: skip
    for c in r["candidates"]:
        lat = c["latency"]
        gmac = f"{lat['macs'] / 1e9:.3f}" if lat else "–"
        lines.append(
            f"| {c['arch']} width {c['width']:g} ({c['top_filters']} filters) | {_ms(lat)} | "
            f"{gmac} | {'yes' if c['fits'] else 'no'} | "
            f"{c['note']} |"
        )
    tr = r["training"]
    lines += [
        "",
        "## Training",
        "",
        f"{tr['frames']['train']} frames to learn from, {tr['frames']['held_back']} held back "
        f"(of {tr['frames']['read']} read from {tr['frames']['source']}); {tr['steps']} steps "
        f"in {tr['seconds'] / 60:.1f} min; best epoch {r['agreement']['best_epoch']}; stopped "
        f"by {r['agreement']['stopped']}.",
        "",
        f"| epoch | loss | agreement ({metric}) | learning rate | s |",
        "|---|---|---|---|---|",
    ]
    for e in tr["epochs"]:
        lines.append(
            f"| {e['epoch']} | {e['loss']:.4f} | {e['agreement']:.4f} | "
            f"{e['learning_rate']:.2e} | {e['seconds']:.1f} |"
        )
    if r.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], student: Path) -> tuple[Path, Path]:
    """Write the JSON and Markdown beside ``student``; returns their paths."""
    json_path, md_path = report_paths(student)
    atomic_write(json_path, json.dumps(report, indent=2) + "\n")
    atomic_write(md_path, report_markdown(report))
    return json_path, md_path
