"""`edgeseg inspect`: what a .tflite model takes, gives, is made of and says about itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from edgeseg.cli.common import handle_errors, out

NO_METADATA = "none: run/eval will infer it from the tensors and take normalization from flags"


@handle_errors
def inspect(
    model: Path = typer.Argument(..., help="A .tflite model."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
    edgetpu: bool = typer.Option(
        False,
        "--edgetpu",
        help="Add the Edge TPU preflight: op by op, what the Coral would run and why not.",
    ),
    micro: bool = typer.Option(
        False,
        "--micro",
        help="Measure the flash and tensor arena TensorFlow Lite Micro needs for a full-int8 "
        "model (a `convert --micro` model carries them and shows them without this).",
    ),
) -> None:
    """Show MODEL's runtime, input and output tensors, ops and embedded edgeseg metadata."""
    from edgeseg.convert.inspection import inspect_model

    found = inspect_model(model, edgetpu=edgetpu, micro=micro)
    if as_json:
        typer.echo(json.dumps(found.report, indent=2, sort_keys=True))
        return
    _print(found.report, found.embedded, found.metadata_error)
    if found.preflight is not None:
        _print_preflight(found.preflight)
    if "micro" in found.report:
        _print_micro(found.report["micro"])


def _print_micro(m: dict[str, Any]) -> None:
    out.print(
        f"[bold]microcontroller (TensorFlow Lite Micro):[/] flash {m['flash_bytes']} bytes "
        f"({_size(m['flash_bytes'])}), tensor arena {m['arena_bytes']} bytes "
        f"({_size(m['arena_bytes'] or 0)}; TFLM ran in {m['arena_used_bytes']} bytes, "
        f"{m['measured_with']}, {m['source']}); op resolver: {', '.join(m['resolver'])}",
        highlight=False,
    )
    fit = m.get("fit")
    if fit:
        verdict = "fits" if fit.get("fits") else "does not fit"
        out.print(f"{fit.get('profile')}: {verdict}", highlight=False)


def _print_preflight(pre: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Edge TPU preflight")
    for col in ("#", "op", "output shape", "runs on", "why"):
        table.add_column(col, justify="right" if col == "#" else "left")
    for v in pre.ops:
        where = "Edge TPU" if v.target == "edgetpu" else "[red]CPU[/]"
        why = v.why or ("risk: " + "; ".join(v.risks) if v.risks else "")
        table.add_row(str(v.index), escape(v.op), _fmt(list(v.shape)), where, escape(why))
    out.print(table)
    for note in pre.notes:
        out.print(f"note: {escape(note)}", highlight=False)
    for risk in pre.risks:
        out.print(f"risk: {escape(risk)}", highlight=False)
    out.print(f"[bold]Edge TPU:[/] {escape(pre.verdict)}", highlight=False)


def _print(report: dict[str, Any], embedded: dict[str, Any] | None, meta_error: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    out.print(
        f"[bold]{escape(report['model'])}[/]: {_size(report['size_bytes'])}, "
        f"{report['operators']} ops, {report['tensors']} tensors; "
        f"runtime {escape(report['runtime'])}",
        highlight=False,
    )

    tensors = Table(title="input and output")
    for col in ("", "name", "shape", "dtype", "scale", "zero point"):
        tensors.add_column(col, justify="right" if col in ("scale", "zero point") else "left")
    notes = []
    for role in ("input", "output"):
        t = report[role]
        if t["shape_signature"] != t["shape"]:
            notes.append(f"{role} shape in the file: {_fmt(t['shape_signature'])}")
        quantized = t["quantized"]
        tensors.add_row(
            role,
            escape(t["name"]),
            _fmt(t["shape"]),
            t["dtype"],
            f"{t['scale']:.6g}" if quantized else "-",
            str(t["zero_point"]) if quantized else "-",
        )
    out.print(tensors)
    if notes:
        out.print("; ".join(notes) + " (-1: dynamic, run with batch 1)", highlight=False)

    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for name, count in report["ops"].items():
        ops.add_row(escape(name), str(count))
    out.print(ops)
    weights = ", ".join(f"{k} {_size(v)}" for k, v in report["weight_bytes"].items())
    out.print(f"weights: {weights or 'none'}", highlight=False)

    if report["metadata"] is None and meta_error is None:
        out.print(f"edgeseg metadata: {NO_METADATA}", highlight=False)
        return
    meta = Table(title="edgeseg metadata")
    meta.add_column("field")
    meta.add_column("value")
    if meta_error:
        meta.add_row("[red]error[/]", escape(meta_error))
    for key, value in (report["metadata"] or {}).items():
        meta.add_row(key, escape(_value(value)))
    for key, value in (embedded or {}).items():
        if key != "metadata":
            meta.add_row(f"({escape(key)})", escape(_value(value)))
    out.print(meta)


def _fmt(shape: list[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"
