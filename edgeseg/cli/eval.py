"""`edgeseg eval`: Dice, IoU, precision, recall, HD95 of a model on a labelled folder, and
instance metrics (AP50, mean AP, count error) on a folder with labels/."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgeseg.cli.common import (
    ActivationOpt,
    ChannelOrderOpt,
    ForegroundOpt,
    InputMaxOpt,
    InputSizeOpt,
    NormalizationOpt,
    ThresholdOpt,
    TrustOpt,
    WholeFramesOpt,
    handle_errors,
    metadata_flags,
    out,
    progress_bar,
    quiet_console,
)
from edgeseg.cli.common import err as err_console


@handle_errors
def eval_(
    model: Path = typer.Argument(
        ..., help="Model: .keras, legacy .h5, SavedModel folder or .tflite."
    ),
    data: Path = typer.Option(
        ..., "--data", help="Folder with images/ and masks/ (or labels/: one id per object)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the scores as JSON."),
    per_image: bool = typer.Option(False, "--per-image", help="Print a row per image."),
    overlap: int = typer.Option(32, "--overlap", help="Tile overlap in pixels."),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="Runtime of a .tflite/.onnx model: auto (what `run` picks: the fastest installed "
        "runtime whose label maps agree with the file's own, measured once and cached), "
        "litert, openvino or onnxruntime.",
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Say what --backend auto picked and the figures behind it."
    ),
    trust_model: bool = TrustOpt,
    input_size: str | None = InputSizeOpt,
    normalization: str | None = NormalizationOpt,
    input_max: float | None = InputMaxOpt,
    threshold: float | None = ThresholdOpt,
    foreground_value: int | None = ForegroundOpt,
    channel_order: str | None = ChannelOrderOpt,
    activation: str | None = ActivationOpt,
    whole_frames: bool = WholeFramesOpt,
    window: str | None = typer.Option(
        None,
        "--window",
        help="DICOM images: CENTER,WIDTH, file or a preset (ct-soft-tissue, ct-lung, …); "
        "default: the model's calibration window, else each file's own.",
    ),
) -> None:
    """Score MODEL on a labelled folder; large images are tiled, never squashed.

    On a folder with labels/ (one id per object) it also matches objects: AP at IoU 0.5
    (TP, FP, FN pooled over images), mean AP over IoU 0.50-0.95, precision, recall, F1 and
    the median count error; a semantic model's objects are its 8-connected components.
    """
    from rich.table import Table

    from edgeseg.datasets import find_pairs
    from edgeseg.evaluate import eval_targets, evaluate, open_eval_model

    find_pairs(data, eval_targets(data))  # check the data before paying for loading the model
    said: list[str] = []
    with quiet_console("eval"):  # no output folder: the log goes in the cache folder
        runner, meta, chosen = open_eval_model(
            model,
            data,
            backend=backend,
            trust_model=trust_model,
            warn=said.append,
            explain=said.append if explain else None,
            activation=activation,
            whole_frames=whole_frames,
            **metadata_flags(
                input_size, normalization, input_max, threshold, foreground_value, channel_order
            ),
        )
        with progress_bar() as bar:
            task = bar.add_task("segmenting", total=None)
            report = evaluate(
                runner,
                meta,
                data,
                model_name=str(model),
                overlap=overlap,
                progress=lambda i, n: bar.update(task, completed=i, total=n),
                window=window,
            )
    for line in said:
        err_console.print(line, highlight=False)
    if explain:
        err_console.print(f"running on {chosen}", highlight=False)
    table = Table(title=f"{model.name} on {data} ({report.n_images} images)")
    for col in ("class", "image", "Dice", "IoU", "precision", "recall", "accuracy", "HD95 px"):
        table.add_column(col, justify="left" if col in ("class", "image") else "right")
    for c in report.classes:
        rows = list(c.per_image) if per_image else []
        for name, s in [*rows, ("pooled", c.pooled)]:
            table.add_row(
                c.name,
                name,
                f"{s.dice:.4f}",
                f"{s.iou:.4f}",
                f"{s.precision:.4f}",
                f"{s.recall:.4f}",
                f"{s.pixel_accuracy:.4f}",
                f"{s.hd95:.2f}",
            )
    out.print(table)
    inst = report.instances
    if inst is not None:
        table = Table(
            title=f"objects ({inst.objects}) matched by IoU; true objects < 20 px ignored"
        )
        for col in (
            "image",
            "true",
            "pred",
            "AP50",
            "mAP",
            "precision",
            "recall",
            "F1",
            "count err",
        ):
            table.add_column(col, justify="left" if col == "image" else "right")
        for name, c in [*(inst.per_image if per_image else []), ("pooled", inst.pooled)]:
            err = c.count_error if name != "pooled" else inst.median_count_error
            table.add_row(
                name,
                str(c.n_true),
                str(c.n_pred),
                f"{c.ap(0.5):.4f}",
                f"{c.mean_ap:.4f}",
                f"{c.precision(0.5):.4f}",
                f"{c.recall(0.5):.4f}",
                f"{c.f1(0.5):.4f}",
                "-" if err is None else f"{err:.4f}",
            )
        out.print(table)
        p = inst.pooled
        err = inst.median_count_error
        out.print(
            f"AP50 {p.ap(0.5):.4f}  mean AP {p.mean_ap:.4f}  precision {p.precision(0.5):.4f}  "
            f"recall {p.recall(0.5):.4f}  F1 {p.f1(0.5):.4f}  median count error "
            + ("-" if err is None else f"{err:.4f}"),
            highlight=False,
        )
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        out.print(f"wrote {json_out}")
