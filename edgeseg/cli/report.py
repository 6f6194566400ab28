"""`edgeseg report`: compare latency reports across devices, models and precisions."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import err, handle_errors, out


@handle_errors
def report(
    paths: list[Path] | None = typer.Argument(
        None, help="Report folders (searched recursively) or JSON files. Default: devices/reports."
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="Where report.md and report.html go. Default: the first folder given.",
    ),
) -> None:
    """Compare latency reports: one table of devices x models x precisions.

    With the speed-up of int8/fp16 over fp32 on each device and the deviation from the device
    profiles' published figures, as Markdown and a self-contained HTML page with a plot.
    """
    from edgeseg.bench.report import (
        collect_reports,
        compare,
        comparison_html,
        comparison_markdown,
    )
    from edgeseg.errors import DataError

    paths = list(paths or [Path("devices") / "reports"])
    reports = collect_reports(paths)
    if not reports:
        where = ", ".join(str(p) for p in paths)
        raise DataError(f"no reports found in {where}; measure with `edgeseg bench MODEL`")
    comp = compare(reports)
    target = out_dir or (paths[0] if paths[0].is_dir() else paths[0].parent)
    markdown = comparison_markdown(comp)
    md_path, html_path = target / "report.md", target / "report.html"
    try:
        target.mkdir(parents=True, exist_ok=True)
        md_path.write_text(markdown)
        html_path.write_text(comparison_html(comp))
    except OSError as exc:
        raise DataError(f"cannot write to {target}: {exc.strerror or exc}") from exc
    out.print(markdown, highlight=False, markup=False)
    err.print(f"wrote {md_path} and {html_path}", highlight=False)
