"""`edgeseg doctor`: what this machine has for edgeseg, and what to install for the rest."""

from __future__ import annotations

import json

import typer

from edgeseg.cli.common import out

_MARK = {"ok": "[green]✓[/]", "missing": "[red]✗[/]", "warn": "[yellow]![/]", "info": "·"}


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Runtimes and versions, delegates that load, OpenCV, cameras, display and memory.

    Never fails: whatever cannot be checked is reported as such, and the exit code is 0.
    """
    try:
        from edgeseg.devices.doctor import run_checks

        checks = run_checks()
    except Exception as exc:  # even a broken install gets an answer, not a traceback
        out.print(f"doctor could not run its checks: {type(exc).__name__}: {exc}", markup=False)
        return
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in checks], indent=2))
        return
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            out.print(f"\n[bold]{section}[/]")
        out.print(f"  {_MARK.get(c.status, '·')} {c.name}: ", end="")
        out.print(c.detail, markup=False, highlight=False)
    hints = list(dict.fromkeys(c.hint for c in checks if c.hint and c.status != "ok"))
    if hints:
        out.print("\n[bold]to install or fix[/]")
        for h in hints:
            out.print("  - ", end="")
            out.print(h, markup=False, highlight=False)
    else:
        out.print("\nnothing to install")
