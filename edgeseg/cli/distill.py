"""`edgeseg distill`: a smaller U-Net that fits a latency budget, from unlabelled frames."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import err, handle_errors, out, parse_hw_option, quiet_console


@handle_errors
def distill(
    teacher: Path = typer.Argument(..., help="The model to distil: .keras or legacy .h5."),
    frames: str = typer.Option(
        ...,
        "--frames",
        help="Unlabelled frames: image folder, glob, video, TIFF stack, synthetic://…, or a "
        "live URI (camera, rtsp://…), captured first.",
    ),
    budget_ms: float = typer.Option(
        ..., "--budget-ms", help="int8 whole-frame latency the student must reach (ms)."
    ),
    out_path: Path = typer.Option(..., "--out", "-o", help="Student model file (.keras)."),
    frame_size: str | None = typer.Option(
        None, "--frame-size", help="Frame size HxW the budget holds for (default: the frames')."
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Device profile: predict latency from its int8_gmacs (measured there by "
        "`edgeseg bench`) instead of measuring here.",
    ),
    max_minutes: float = typer.Option(
        30.0, "--max-minutes", help="Bound on the whole command, search and conversions included."
    ),
    arch: str = typer.Option(
        "unet,separable",
        "--arch",
        help="Student architectures to try, comma-separated: unet, separable, attention.",
    ),
    widths: str | None = typer.Option(
        None,
        "--widths",
        help="Width multipliers to try (of the teacher's filters), comma-separated; default "
        "1,0.75,0.5,0.375,0.25,0.125.",
    ),
    val: str | None = typer.Option(
        None, "--val", help="Labelled folder (images/ + masks/ or labels/): accuracy vs truth."
    ),
    backend: str = typer.Option(
        "auto", "--backend", help="Runtime to measure on: auto (as `run` picks), litert, …"
    ),
    threads: int | None = typer.Option(None, "--threads", help="Threads (default: all cores)."),
    runs: int = typer.Option(15, "--runs", min=2, help="Timed runs per latency measurement."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Distil TEACHER into a smaller U-Net that fits --budget-ms, on unlabelled frames.

    The teacher labels every frame (its probabilities are the targets: no masks needed). The
    student's size is chosen so that its int8 whole-frame latency fits the budget, measured
    here or predicted for --device; training stops when agreement with the teacher on
    held-back frames stops improving. Writes the student, its metadata (the teacher's, with
    provenance) and a report <stem>.distill.json / .md beside it.
    """
    with quiet_console("distill", out_path.parent):
        from edgeseg.distill.run import DistillRequest
        from edgeseg.distill.run import distill as run_distill

        try:
            width_list = tuple(float(w) for w in widths.split(",")) if widths else None
        except ValueError:
            from edgeseg.errors import DataError

            raise DataError(f"--widths takes numbers separated by commas, got {widths!r}") from None
        req = DistillRequest(
            teacher=teacher,
            frames=frames,
            budget_ms=budget_ms,
            out=out_path,
            frame_size=parse_hw_option(frame_size, "--frame-size"),
            device=device,
            max_minutes=max_minutes,
            archs=tuple(a.strip() for a in arch.split(",") if a.strip()),
            widths=width_list,
            val=val,
            backend=backend,
            threads=threads,
            runs=runs,
            seed=seed,
        )

        def say(text: str) -> None:
            err.print(text, highlight=False)

        def on_epoch(rec: object, latency_ms: float | None) -> None:
            lat = f"  est. int8 {latency_ms:.2f} ms" if latency_ms is not None else ""
            err.print(
                f"epoch {rec.epoch:3d}  loss {rec.loss:.4f}  agreement {rec.agreement:.4f}  "
                f"lr {rec.learning_rate:.1e}  {rec.seconds:.0f} s{lat}",
                highlight=False,
            )

        result = run_distill(req, say=say, on_epoch=on_epoch)
        r = result.report
        s, t = r["student"], r["teacher"]
        faster = f", {r['speedup']:.2f}x faster than the teacher" if r.get("speedup") else ""
        out.print(
            f"saved {result.student} ({s['arch']} width {s['width']:g}, {s['top_filters']} "
            f"filters: {s['latency']['ms']:.2f} ms int8 at {r['frame_size']} "
            f"({s['latency']['how']}){faster}; agreement {r['agreement']['metric']} "
            f"{r['agreement']['value']:.4f}; {s['macs'] / 1e9:.3f} vs {t['macs'] / 1e9:.3f} "
            f"GMAC) and {result.metadata_path}; report {result.report_md}",
            highlight=False,
        )
