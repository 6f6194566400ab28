"""`edgeseg demo`: the whole path on built-in synthetic microscopy, no data or model needed."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import err, handle_errors, out, quiet_console


@handle_errors
def demo(
    out_dir: Path = typer.Option(Path("edgeseg-demo"), "--out", "-o", help="Demo folder."),
    quick: bool = typer.Option(False, "--quick", help="Smaller everything: about a minute."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Synthetic microscopy → train → convert (fp16, int8, Edge TPU preflight) → parity →
    latency → live run with overlay → one report (Markdown + HTML).

    Run it again in the same folder to resume after the last finished step.
    """
    from edgeseg.demo import STEPS, can_hold_demo, run_demo

    def step(name: str, i: int, n: int) -> None:
        err.print(f"[bold]step {i + 1}/{n}: {name}[/]")

    # The log goes in the demo folder, unless that is a folder the demo will not write into.
    with quiet_console("demo", out_dir if can_hold_demo(out_dir) else None) as log:
        result = run_demo(
            out_dir,
            quick=quick,
            seed=seed,
            say=lambda m: err.print(m, highlight=False, markup=False),
            step_progress=step,
        )
    if result.resumed and len(result.resumed) == len(STEPS):
        out.print(f"the demo in {out_dir} is complete already", highlight=False)
    out.print(f"demo finished in {result.seconds / 60:.1f} min; open {out_dir / 'report.html'}")
    for key in ("report_md", "report_html", "parity_md", "video", "csv", "bench"):
        if key in result.files:
            out.print(f"  {key}: {result.files[key]}", highlight=False)
    if log is not None:
        out.print(f"  log: {log}", highlight=False)
