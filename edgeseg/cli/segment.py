"""`edgeseg segment`: segment image folders, TIFF stacks and Zarr arrays on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgeseg.cli.common import err, handle_errors, out, progress_bar
from edgeseg.errors import DataError


@handle_errors
def segment(
    model: Path = typer.Argument(..., help="A .tflite or .onnx model (from `edgeseg convert`)."),
    inputs: list[str] = typer.Argument(
        ...,
        help="Image folders, globs, image files, (OME-)TIFF stacks, Zarr arrays or OME-Zarr "
        "groups; DICOM files and series folders; dicomweb://HOST/PATH?study=UID.",
        metavar="INPUT...",
        show_default=False,
    ),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (created)."),
    axes: str | None = typer.Option(
        None,
        "--axes",
        help="Axes of Zarr arrays without OME metadata, one letter a dimension: T, Z, C, Q, "
        "then Y X (optionally followed by C), e.g. TYX.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Local worker processes (default: one per core)."
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads per worker."),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="Runtime every worker opens: auto (measured once on this machine with --threads "
        "threads and cached, as `run --backend auto`; on a cluster of other machines name "
        "one), litert, openvino or onnxruntime.",
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="Use the Dask scheduler at this address (tcp://host:8786) instead of a local "
        "cluster; its workers need edgeseg[batch] and the same paths.",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address the local cluster's scheduler, workers and dashboard bind to.",
    ),
    overlap: int = typer.Option(32, "--overlap", help="Model tile overlap in pixels (as run)."),
    halo: int | None = typer.Option(
        None,
        "--halo",
        help="Context around each Zarr block, px: must cover the model's receptive field and, "
        "for instance models, the largest object (default: half the model tile, >= 32).",
    ),
    min_area: int = typer.Option(0, "--min-area", help="Remove objects smaller than this (px)."),
    mask_format: str = typer.Option("png", "--mask-format", help="png or tif (image files)."),
    table_format: str | None = typer.Option(
        None, "--table-format", help="parquet or csv (default: parquet when pyarrow is there)."
    ),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="µm per pixel for areas in µm² (default: the model's)."
    ),
    objects: bool = typer.Option(
        True,
        "--objects/--no-objects",
        help="Measure every object into the objects table (default), or write labels only.",
    ),
    frames_per_task: int | None = typer.Option(
        None, "--frames-per-task", min=1, help="File frames one task segments (default 4)."
    ),
    window: str | None = typer.Option(
        None,
        "--window",
        help="DICOM window: CENTER,WIDTH, file or a preset (ct-soft-tissue, ct-lung, ct-bone, "
        "ct-brain, …); default: the model's calibration window, else file.",
    ),
    dicom_seg: bool = typer.Option(
        False, "--dicom-seg", help="Also write a DICOM Segmentation per DICOM series."
    ),
    store: bool = typer.Option(
        False,
        "--store",
        help="Send the SEGs of dicomweb:// inputs back to their server (needs --dicom-seg); "
        "credentials from the dicomweb table of edgeseg.toml or "
        "EDGESEG_DICOMWEB_USER/PASSWORD/TOKEN.",
    ),
    dicom_seg_type: str = typer.Option(
        "binary",
        "--dicom-seg-type",
        help="binary (the label maps) or fractional (the model's probabilities, 0..255).",
    ),
    dicom_seg_objects: bool = typer.Option(
        False,
        "--dicom-seg-objects",
        help="With --dicom-seg and an instance model: one segment per object.",
    ),
) -> None:
    """Segment archives with MODEL on Dask: one label image per image file, a label stack per
    TIFF stack, a label array per Zarr array (its shape and chunking), the objects table and
    a summary in --out. Started again, a run skips what is done."""
    from edgeseg.batch.run import SegmentOptions, segment_archive

    options = SegmentOptions(
        model=model,
        inputs=tuple(inputs),
        out=out_dir,
        axes=axes,
        threads=threads,
        workers=workers,
        scheduler=scheduler,
        host=host,
        overlap=overlap,
        halo=halo,
        min_area=min_area,
        mask_format=mask_format,
        table_format=table_format,
        pixel_size=pixel_size,
        frames_per_task=frames_per_task,
        backend=backend,
        objects=objects,
        window=window,
        dicom_seg=("instances" if dicom_seg_objects else "classes") if dicom_seg else None,
        store=store,
        dicom_seg_type=dicom_seg_type,
    )
    bar = progress_bar()
    task: dict[str, Any] = {}

    def started(cluster: Any, backend: str) -> None:
        err.print(f"{cluster.where}; {model.name} on {backend}", highlight=False)
        if cluster.dashboard:
            err.print(f"Dask dashboard: {cluster.dashboard}", highlight=False)
        bar.start()
        task["id"] = bar.add_task("segmenting", total=None)

    def progress(p: Any) -> None:
        rate = p.frames / p.seconds if p.seconds > 0 else 0.0
        bar.update(
            task["id"],
            completed=p.units_done,
            total=p.units_total,
            description=f"{p.frames:.0f} frames, {rate:.1f} frames/s",
        )

    try:
        summary = segment_archive(options, on_start=started, on_progress=progress)
    finally:
        bar.stop()
    for line in summary.lines():
        out.print(line, highlight=False)
    table = f" (objects: {summary.table})" if summary.table else ""
    out.print(f"wrote {out_dir}{table}", highlight=False)
    if summary.errors:
        raise DataError(f"{len(summary.errors)} input(s) skipped: " + "; ".join(summary.errors))
