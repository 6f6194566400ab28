"""`edgeseg segment`: plan the work, hand it to Dask, follow it, write the table and summary.

File inputs: a few frames a task (read, segment, write the label image, measure objects, all
on the worker); a TIFF stack's frames are assembled into one label stack when all are done.
Zarr inputs, per chunk of frames and block of a frame (:mod:`~edgeseg.batch.chunks`):

1. segment the block with its halo, keep the core (ids 1..n), save the halo's labels (an
   instance model) or return the ids on the core's four edges (a semantic model);
2. link objects of neighbouring blocks: an instance model's by overlap in the halos (a task
   per block), a semantic model's across the core edges (on the client, no task); the client
   joins the links (union-find) into ids unique over the whole array;
3. write the final ids (or classes, for a semantic model) and measure the objects' parts.

The objects table is gathered as numpy columns (a frame's objects travel and are kept in
the ledger as arrays, never as one Python object per row) and written once at the end.

Each finished unit has a ledger entry (:mod:`~edgeseg.batch.store`): a run started again
skips them and writes nothing twice. Worker deaths are retried by Dask; a frame or array
that cannot be read is reported in the summary and the rest goes on.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.batch import tasks
from edgeseg.batch.chunks import (
    STAT_FIELDS,
    edge_links,
    face_pairs,
    merge_ids,
    merge_stats,
    plan_blocks,
)
from edgeseg.batch.cluster import ClusterInfo, open_client
from edgeseg.batch.deps import has, need
from edgeseg.batch.inputs import ArrayInput, FileInput, discover, first_frame_size
from edgeseg.batch.store import (
    WORK,
    Ledger,
    ObjectTable,
    remove_partials,
    unit_key,
)
from edgeseg.core.instances import OBJECT_FIELDS
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import foreground_classes
from edgeseg.errors import DataError
from edgeseg.paths import ensure_writable_dir, file_sha256
from edgeseg.runtime.backends import resolve_runtime

__all__ = ["BatchSummary", "InputReport", "Progress", "SegmentOptions", "segment_archive"]

FORMAT_VERSION = 2  # of outputs and ledger: a change makes earlier entries count as not done
MASK_FORMATS = ("png", "tif")
TABLE_FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class SegmentOptions:
    """Everything `edgeseg segment` takes; field names are its option names.

    ``halo``: pixels of context around each block of a Zarr frame (default: half the model's
    tile, at least 32); ``frames_per_task``: file frames one task segments (default: a few,
    so that every worker has several tasks). ``backend``: the runtime every worker opens
    (None: the file's own; ``auto``: measured once here, where segment runs, with
    ``threads`` threads, as `run --backend auto` measures; see
    :func:`~edgeseg.runtime.selection.choose_runtime`). Without ``objects`` nothing is
    measured and no objects table is written (label images and arrays only).
    """

    model: Path
    inputs: tuple[str, ...]
    out: Path
    axes: str | None = None
    threads: int = 1
    workers: int | None = None
    scheduler: str | None = None
    host: str = "127.0.0.1"
    overlap: int = 32
    halo: int | None = None
    min_area: int = 0
    resize: bool | None = None
    mask_format: str = "png"
    table_format: str | None = None
    pixel_size: float | None = None
    frames_per_task: int | None = None
    retries: int = 3
    backend: str | None = None
    objects: bool = True
    # DICOM: the window (CENTER,WIDTH, file or a preset; None: the model's, else file) and
    # whether to write a DICOM Segmentation per series ("binary" or "fractional").
    window: str | None = None
    dicom_seg: str | None = None
    # Send the SEGs of dicomweb:// inputs back to their server (STOW-RS).
    store: bool = False
    # "binary" (from the label maps) or "fractional" (the model's probabilities, 0..255).
    dicom_seg_type: str = "binary"


@dataclass
class InputReport:
    """One input in the summary: frames segmented now and earlier, objects, or its error."""

    name: str
    kind: str
    frames: int = 0
    frames_skipped: int = 0
    objects: int = 0
    output: str | None = None
    errors: list[str] = field(default_factory=list)
    # A DICOM input's foreground volume per series and class, mm³ ("CT-series3 foreground").
    volumes_mm3: dict[str, float] | None = None


@dataclass
class BatchSummary:
    """What a segment run did."""

    inputs: list[InputReport]
    where: str
    backend: str
    workers: int
    dashboard: str | None
    frames: float  # segmented by this run (blocks count as fractions of their frame)
    megapixels: float
    seconds: float
    units_done: int
    units_skipped: int
    table: str | None
    interrupted: bool = False
    # DICOM Segmentation files written (--dicom-seg), one per series; how many were stored
    # on a DICOMweb server (--store).
    segs: list[str] = field(default_factory=list)
    stored: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def megapixels_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> list[str]:
        return [f"{r.name}: {e}" for r in self.inputs for e in r.errors]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frames_per_s"] = round(self.frames_per_s, 3)
        d["megapixels_per_s"] = round(self.megapixels_per_s, 3)
        return d

    def lines(self) -> list[str]:
        ok = [r for r in self.inputs if not r.errors]
        out = [
            f"{len(ok)} of {len(self.inputs)} input(s) done on {self.where} ({self.backend})",
            f"{self.frames:.0f} frame(s), {self.megapixels:.1f} MP in {self.seconds:.1f} s: "
            f"{self.frames_per_s:.2f} frames/s, {self.megapixels_per_s:.2f} MP/s; "
            f"{self.units_skipped} unit(s) already done, skipped",
        ]
        out += [f"skipped {e}" for e in self.errors]
        for r in self.inputs:
            for what, mm3 in (r.volumes_mm3 or {}).items():
                out.append(f"{r.name}: {what} {mm3:.1f} mm³")
        out += [f"DICOM SEG {p}" for p in self.segs]
        if self.stored:
            out.append(f"stored {self.stored} SEG(s) on the DICOMweb server")
        return out


@dataclass(frozen=True)
class Progress:
    """Handed to ``on_progress``: units (frames, blocks) done of all, frames and MP so far."""

    units_done: int
    units_total: int
    frames: float
    megapixels: float
    seconds: float


def _check(o: SegmentOptions) -> None:
    if not o.model.is_file():
        raise DataError(f"model not found: {o.model}")
    if o.model.suffix.lower() not in (".tflite", ".onnx"):
        raise DataError(f"{o.model} is not a .tflite or .onnx model; convert it first")
    if o.mask_format not in MASK_FORMATS:
        raise DataError(f"--mask-format must be png or tif, got {o.mask_format}")
    if o.table_format is not None and o.table_format not in TABLE_FORMATS:
        raise DataError(f"--table-format must be parquet or csv, got {o.table_format}")
    if o.threads < 1 or (o.workers is not None and o.workers < 1):
        raise DataError("--threads and --workers must be at least 1")
    if o.halo is not None and o.halo < 0:
        raise DataError(f"--halo must be >= 0, got {o.halo}")
    if o.store and not o.dicom_seg:
        raise DataError("--store sends the DICOM SEGs: add --dicom-seg")
    if o.dicom_seg_type not in ("binary", "fractional"):
        raise DataError(f"--dicom-seg-type must be binary or fractional, got {o.dicom_seg_type}")
    if o.dicom_seg == "instances" and o.dicom_seg_type == "fractional":
        raise DataError("--dicom-seg-objects makes a binary SEG (objects have no probability)")
    resolve_runtime(o.model, o.backend, "auto")  # a runtime that cannot read MODEL: one line


def _runtime(o: SegmentOptions, found: list[Any]) -> str | None:
    """The runtime the workers open: ``auto`` measured once, here, on frames the size of the
    first input's (``found``: what :func:`~edgeseg.batch.inputs.discover` found)."""
    kind = resolve_runtime(o.model, o.backend, "auto")
    if kind != "auto":
        return None if o.backend is None else kind
    from edgeseg.runtime.selection import choose_runtime

    return choose_runtime(o.model, threads=o.threads, frame_size=first_frame_size(found)).runtime


class _Run:
    """The state of one run: the event loop's handlers and what they collect."""

    def __init__(
        self, o: SegmentOptions, client: Any, ledger: Ledger, settings: dict, table_format: str
    ) -> None:
        self.o = o
        self.client = client
        self.ledger = ledger
        self.done_keys = ledger.done()
        self.settings = settings
        self.table = ObjectTable(table_format)
        self.reports: dict[str, InputReport] = {}
        self.handlers: dict[Any, Callable[[Any], None]] = {}
        self.pending = None  # the as_completed iterator
        self.units_total = 0
        self.units_done = 0
        self.units_skipped = 0
        self.frames = 0.0
        self.megapixels = 0.0
        self.meta: ModelMetadata | None = None
        self.window: str | None = None  # of DICOM inputs (canonical; see dicom_window)
        self.spec: tasks.ModelSpec | None = None
        # File frames to submit (frame, callback) and what to do once they are submitted.
        self.file_queue: list[tuple[dict[str, Any], Callable[[list[dict]], None]]] = []
        self.after_plan: list[Callable[[], None]] = []

    def submit(self, fn: Callable, *args: Any, then: Callable[[Any], None], **kw: Any) -> Any:
        future = self.client.submit(fn, *args, retries=self.o.retries, pure=False, **kw)
        self.handlers[future] = then
        self.pending.add(future)  # type: ignore[union-attr]
        return future

    def unit_done(self, frames: float, pixels: float) -> None:
        self.units_done += 1
        self.frames += frames
        self.megapixels += pixels / 1e6


def segment_archive(
    options: SegmentOptions,
    *,
    client: Any = None,
    on_start: Callable[[ClusterInfo, str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> BatchSummary:
    """Segment every input of ``options`` into ``options.out`` on Dask; see the module.

    ``client``: an existing Dask client (else a local cluster or ``options.scheduler``).
    ``on_start(cluster, backend)`` hears where the work runs; ``on_progress`` hears progress
    after every finished unit (raise KeyboardInterrupt there to stop: what is done stays).

    Raises:
        DataError: bad options, inputs that name nothing, bad axes; MissingDependencyError
            without the ``batch`` extra; ModelError for a model the workers cannot open.
    """
    o = options
    _check(o)
    need("distributed")
    inputs, remote = _pull_dicomweb(o)
    found, bad = discover(inputs, o.axes)
    table_format = o.table_format or ("parquet" if has("pyarrow") else "csv")
    out = ensure_writable_dir(o.out, "--out")
    remove_partials(out)
    ledger = Ledger(out)
    ledger.clean()
    spec = tasks.ModelSpec(
        path=str(o.model.resolve()),
        threads=o.threads,
        overlap=o.overlap,
        min_area=o.min_area,
        resize=o.resize,
        backend=_runtime(o, found),
    )
    settings = {
        "version": FORMAT_VERSION,
        "model": file_sha256(o.model),
        "overlap": o.overlap,
        "min_area": o.min_area,
        "resize": o.resize,
        "mask_format": o.mask_format,
        "halo": o.halo,
        "pixel_size": o.pixel_size,
        "objects": o.objects,
        # Runtimes may differ in the last quantization step: a resumed run keeps to one.
        "runtime": spec.backend or resolve_runtime(o.model, None, "auto"),
    }
    if o.dicom_seg and o.dicom_seg_type == "fractional":
        settings["fractional"] = True  # frames done without probabilities are done again
    with open_client(o.scheduler, workers=o.workers, host=o.host, client=client) as (cl, info):
        distributed = need("distributed")
        described = cl.submit(tasks.describe, spec, pure=False, retries=o.retries).result()
        meta = ModelMetadata.from_dict(described["meta"])
        cl.run(tasks.describe, spec)  # every worker opens its model now, before the clock
        if on_start is not None:
            on_start(info, described["backend"])
        run = _Run(o, cl, ledger, settings, table_format)
        run.meta, run.spec = meta, spec
        run.window = dicom_window(o.window, meta)
        for b in bad:
            run.reports[b.path] = InputReport(Path(b.path).name, "file", errors=[b.reason])
        run.pending = distributed.as_completed([])
        t0 = time.perf_counter()
        try:
            for item in found:
                if isinstance(item, FileInput):
                    _plan_file(run, item, table_format)
                else:
                    _plan_array(run, item)
            _flush_file_tasks(run)
            if on_progress is not None:
                on_progress(_progress(run, t0))
            for future in run.pending:
                handler = run.handlers.pop(future)
                handler(future)
                if on_progress is not None:
                    on_progress(_progress(run, t0))
        except BaseException:
            futures = list(run.handlers)
            if futures:
                cl.cancel(futures)
            raise
        table = out / f"objects.{'parquet' if table_format == 'parquet' else 'csv'}"
        if o.objects:
            run.table.write(table)
        seconds = time.perf_counter() - t0  # the table is part of the job
        summary = BatchSummary(
            inputs=list(run.reports.values()),
            where=info.where,
            backend=described["backend"],
            workers=info.workers,
            dashboard=info.dashboard,
            frames=run.frames,
            megapixels=run.megapixels,
            seconds=seconds,
            units_done=run.units_done,
            units_skipped=run.units_skipped,
            table=str(table) if o.objects else None,
        )
    for item in found:
        if getattr(item, "dicom", False) and item.path in run.reports:
            report = run.reports[item.path]
            if not report.errors:
                from edgeseg.batch.dicom_seg import series_volumes

                try:
                    report.volumes_mm3 = series_volumes(o, meta, item)
                except (OSError, DataError, ValueError) as exc:
                    report.errors.append(f"volumes: {exc}")
    if o.dicom_seg:
        from edgeseg.batch.dicom_seg import write_segs

        segs = write_segs(o, meta, [i for i in found if getattr(i, "dicom", False)])
        summary.segs = [p for paths in segs.values() for p in paths]
        if o.store:
            from edgeseg.dicom.web import store_instances

            for item_path, paths in segs.items():
                if item_path in remote:
                    study, creds = remote[item_path]
                    summary.stored += store_instances(study, [Path(p) for p in paths], creds)
    import json

    from edgeseg.paths import atomic_write

    atomic_write(out / "summary.json", (json.dumps(summary.to_dict(), indent=2) + "\n").encode())
    return summary


def _pull_dicomweb(o: SegmentOptions) -> tuple[list[str], dict[str, tuple[Any, Any]]]:
    """The inputs with each ``dicomweb://`` study pulled into ``OUT/.edgeseg-batch/dicomweb/``
    (a folder per series, which replaces it), and series folder → (study, credentials)."""
    from edgeseg.dicom.web import is_dicomweb

    if not any(is_dicomweb(t) for t in o.inputs):
        if o.store:
            raise DataError("--store sends SEGs back to a DICOMweb server: give dicomweb:// input")
        return list(o.inputs), {}
    import hashlib

    from edgeseg.dicom.web import credentials, parse_dicomweb, pull_study

    out = ensure_writable_dir(o.out, "--out")
    inputs: list[str] = []
    remote: dict[str, tuple[Any, Any]] = {}
    creds = None
    for text in o.inputs:
        if not is_dicomweb(text):
            inputs.append(text)
            continue
        study = parse_dicomweb(text)
        creds = creds or credentials()
        key = hashlib.sha256(study.uri.encode()).hexdigest()[:12]
        for folder in pull_study(study, out / WORK / "dicomweb" / key, creds):
            inputs.append(str(folder))
            remote[str(folder)] = (study, creds)
    return inputs, remote


def dicom_window(asked: str | None, meta: ModelMetadata) -> str:
    """The canonical window DICOM inputs are read with: ``asked`` (``--window``), else the one
    the model was calibrated with, else ``file``."""
    from edgeseg.dicom import FILE, parse_window, window_spec

    window = parse_window(asked) or parse_window(meta.dicom_window) or FILE
    return window_spec(window) or FILE


def _progress(run: _Run, t0: float) -> Progress:
    return Progress(
        run.units_done + run.units_skipped,
        run.units_total,
        run.frames,
        run.megapixels,
        time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------------------------
# Files


def _frames_per_task(run: _Run) -> int:
    if run.o.frames_per_task:
        return run.o.frames_per_task
    return 4


def _plan_file(run: _Run, item: FileInput, table_format: str) -> None:
    o = run.o
    report = InputReport(item.name, "stack" if item.stack else "image")
    run.reports[item.path] = report
    ext = "tif" if item.stack else o.mask_format
    target = o.out / f"{item.stem}.{ext}"
    report.output = str(target)
    parts_dir = o.out / WORK / "parts" / unit_key(item.identity, run.settings)[:16]
    stack_key = unit_key("stack", item.identity, run.settings)
    todo, keys, parts = [], [], []
    for fr in item.frames:
        key = unit_key("frame", item.identity, fr.page, run.settings)
        keys.append(key)
        part = parts_dir / f"{fr.page:06d}.npy"
        parts.append(str(part))
        run.units_total += 1
        if key in run.done_keys:
            _take_rows(run, report, run.ledger.read(key))
            report.frames_skipped += 1
            run.units_skipped += 1
            continue
        todo.append(
            {
                "path": fr.path,
                "page": fr.page,
                "index": fr.index,
                "name": fr.name,
                "target": str(part if item.stack else target),
                "part": item.stack,
                "key": key,
                "input": item.path,
            }
        )
        if item.dicom:
            todo[-1]["window"] = run.window
            if o.dicom_seg and o.dicom_seg_type == "fractional":
                from edgeseg.batch.dicom_seg import prob_path

                todo[-1]["prob"] = str(prob_path(o.out, item.identity, fr.page))
            if fr.pixel_size_um is not None and o.pixel_size is None:
                todo[-1]["pixel_size"] = fr.pixel_size_um
    if item.stack:
        parts_dir.mkdir(parents=True, exist_ok=True)
        remove_partials(parts_dir)
    state = {"left": len(todo), "failed": False}
    stack_done = stack_key in run.done_keys
    if item.stack and not stack_done:
        run.units_total += 1

    def assemble() -> None:
        if not item.stack or stack_done or state["failed"]:
            return
        record = {"key": stack_key, "input": item.path, "frames": len(item.frames)}
        run.submit(
            tasks.assemble_stack, parts, str(target), stack_key, str(o.out), record,
            then=lambda f: (f.result(), run.unit_done(0, 0)),
        )  # fmt: skip

    def finished(results: list[dict[str, Any]]) -> None:
        for r in results:
            if "error" in r:
                report.errors.append(r["error"])
                state["failed"] = True
                run.unit_done(0, 0)
            else:
                _take_rows(run, report, r)
                report.frames += 1
                run.unit_done(1, r["pixels"])
        state["left"] -= len(results)
        if state["left"] == 0:
            assemble()

    if not todo:
        if item.stack and not stack_done:
            # Every frame done but the stack not assembled: the parts are there.
            run.after_plan.append(assemble)
        elif item.stack:
            run.units_skipped += 1
        return
    run.file_queue += [(f, finished) for f in todo]


def _flush_file_tasks(run: _Run) -> None:
    """Submit the planned file frames, a few consecutive ones a task."""
    queue = run.file_queue
    per = _frames_per_task(run)
    pixel = run.o.pixel_size if run.o.pixel_size is not None else run.meta.pixel_size_um

    def dispatch(future: Any, callbacks: dict[str, Callable]) -> None:
        for result in future.result():
            callbacks[result["key"]]([result])

    for group in _task_groups(queue, per, _worker_count(run.client)):
        callbacks = {f["key"]: cb for f, cb in group}
        run.submit(
            tasks.segment_files, run.spec, [f for f, _ in group], str(run.o.out),
            run.o.mask_format, pixel, run.o.objects,
            then=lambda f, cbs=callbacks: dispatch(f, cbs),
        )  # fmt: skip
    for fn in run.after_plan:
        fn()


def _worker_count(client: Any) -> int:
    try:
        return max(1, len(client.scheduler_info().get("workers", {})))
    except (AttributeError, OSError):
        return 1


def _task_groups(queue: list, per: int, workers: int) -> list[list]:
    """``queue`` in tasks of ``per`` consecutive frames, except the last frames (two per
    worker), one a task: the workers then finish together instead of one waiting on
    another's last task."""
    tail = min(len(queue), 2 * workers) if per > 1 else 0
    head = len(queue) - tail
    groups = [queue[i : min(i + per, head)] for i in range(0, head, per)]
    return groups + [[f] for f in queue[head:]]


def _take_rows(run: _Run, report: InputReport, record: dict[str, Any]) -> None:
    """A frame's objects into the table: from its task's result, or (a frame done by an
    earlier run) from the ledger. Nothing without ``--objects``."""
    if not run.o.objects:
        return
    columns = record.get("columns")
    if columns is None:
        columns = run.ledger.read_columns(record["key"])
    report.objects += run.table.add(
        record["input"], record["frame"], record["name"], columns, record.get("class_names")
    )


# --------------------------------------------------------------------------------------------
# Zarr arrays


def _lead_groups(info: ArrayInput) -> list[list[tuple[int, ...]]]:
    """The frames of each chunk along the lead axes (one group for a 2-D array)."""
    if not info.lead_axes:
        return [[()]]
    ranges = []
    for size, chunk in zip(info.lead_shape, info.lead_chunks, strict=True):
        ranges.append([range(s, min(size, s + chunk)) for s in range(0, size, chunk)])
    groups = []
    for combo in itertools.product(*ranges):
        groups.append(list(itertools.product(*combo)))
    return groups


def _plan_array(run: _Run, info: ArrayInput) -> None:
    """Plan a Zarr array's units and start them: its geometry (:func:`_array_plan`); an array
    finished by an earlier run is only counted (:func:`_take_finished_array`); else its
    outputs are created (:func:`_create_array_outputs`) and its phase-1 tasks submitted
    (:class:`_ArrayJob`, which then runs phases 2 and 3 as the results come in)."""
    assert run.meta is not None
    zarr = need("zarr")
    report = InputReport(info.name, f"zarr {info.axes} {info.shape}")
    run.reports[info.store + "/" + info.array_path] = report
    plan = _array_plan(run, info)
    report.output = str(plan.target)
    run.units_total += 2 * plan.n_units
    if plan.done_key in run.done_keys:
        _take_finished_array(run, plan, report)
        return
    _create_array_outputs(run, plan, zarr)
    _ArrayJob(run, plan, report).segment()


@dataclass(frozen=True)
class _ArrayPlan:
    """How one Zarr array is cut into units, where its outputs go, and the units' keys."""

    info: ArrayInput
    target: Path  # the label array, OUT/<stem>.zarr
    work: Path  # scratch: the labels before final ids, the halos' labels
    instances: bool  # an instance model (links by overlap tasks), else semantic
    blocks: list[Any]  # chunks.Block of a frame, each with its halo
    groups: list[list[tuple[int, ...]]]  # the frames (lead indices) of each lead chunk
    k1: dict[tuple[int, int], str]  # (group, block) → phase-1 unit key
    k3: dict[tuple[int, int], str]  # (group, block) → phase-3 unit key
    done_key: str  # the whole array, finished
    manifest: str  # its outputs, created
    ranges_needed: bool  # blocks normalize by their frame's range (one task per frame)

    @property
    def n_units(self) -> int:
        return len(self.k1)


def _array_plan(run: _Run, info: ArrayInput) -> _ArrayPlan:
    """Blocks of each frame with their halo (``--halo``, default half the model's tile, at
    least 32), groups of frames along the lead axes, and the ledger keys of every unit."""
    o, meta = run.o, run.meta
    assert meta is not None
    halo = o.halo if o.halo is not None else max(32, max(meta.input_size) // 2)
    blocks = plan_blocks(info.plane_shape, info.plane_chunks, halo)
    groups = _lead_groups(info)
    units = [(g, b) for g in range(len(groups)) for b in range(len(blocks))]
    return _ArrayPlan(
        info=info,
        target=o.out / f"{info.stem}.zarr",
        work=o.out / WORK / "work" / unit_key(info.identity, run.settings)[:16],
        instances=meta.instances is not None,
        blocks=blocks,
        groups=groups,
        k1={(g, b): unit_key("p1", info.identity, g, b, run.settings) for g, b in units},
        k3={(g, b): unit_key("p3", info.identity, g, b, run.settings) for g, b in units},
        done_key=unit_key("array-done", info.identity, run.settings),
        manifest=unit_key("array", info.identity, run.settings),
        ranges_needed=meta.normalization != "scale" and len(blocks) > 1,
    )


def _take_finished_array(run: _Run, plan: _ArrayPlan, report: InputReport) -> None:
    """An array finished by an earlier run: its units count as skipped, its objects come
    from the ledger."""
    info = plan.info
    run.units_skipped += 2 * plan.n_units
    report.frames_skipped = info.n_frames
    kept = run.ledger.read_columns(plan.done_key)
    for frame, name in _frames(info, plan.groups):
        columns = {f: kept[f"{frame}.{f}"] for f in ("class", *OBJECT_FIELDS)}
        report.objects += run.table.add(info.store, frame, name, columns)


def _create_array_outputs(run: _Run, plan: _ArrayPlan, zarr: Any) -> None:
    """The label array and the scratch labels, created once (a manifest entry in the ledger
    says so); what a killed run left half written in the halos is removed."""
    info = plan.info
    if plan.manifest not in run.done_keys:
        plan.work.mkdir(parents=True, exist_ok=True)
        (plan.work / "halos").mkdir(exist_ok=True)
        kw = {"shape": info.label_shape, "chunks": info.label_chunks, "fill_value": 0}
        zarr.create_array(
            store=str(plan.work / "labels.zarr"), dtype="uint32", overwrite=True, **kw
        )
        zarr.create_array(
            store=str(plan.target),
            dtype="uint32" if plan.instances else "uint8",
            overwrite=True,
            attributes={"axes": info.label_axes, "source": info.name, "edgeseg": "labels"},
            **kw,
        )
        run.ledger.write(plan.manifest, {"key": plan.manifest, "array": info.name})
    remove_partials(plan.work / "halos")


class _ArrayJob:
    """One array's three phases on the event loop (see the module docstring): phase 1
    (:meth:`segment`), the links (:meth:`link`), the final ids (:meth:`finish`), and the
    objects and ledger entry at the end (:meth:`complete`). Its handlers run on the client,
    one at a time, as the tasks' results come in."""

    def __init__(self, run: _Run, plan: _ArrayPlan, report: InputReport) -> None:
        self.run, self.plan, self.report = run, plan, report
        self.phase1: dict[tuple[int, int], dict] = {}
        self.phase3: set[tuple[int, int]] = set()  # blocks whose final ids are written
        self.failed = False
        self.links: list[np.ndarray] = []  # rows (group, plane, block, id, block, id)
        self.links_left = 0  # instance model: link tasks not back yet
        self.frames: list[tuple[int, str, dict[str, np.ndarray]]] = []  # object columns

    def fail(self, future: Any) -> bool:
        """Whether ``future`` failed; the array's first failure goes into the report."""
        exc = future.exception()
        if exc is None:
            return False
        if not self.failed:
            self.failed = True
            self.report.errors.append(
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, DataError) else str(exc)
            )
        return True

    # Phase 1: segment each block with its halo.

    def segment(self) -> None:
        """Submit every phase-1 unit not done by an earlier run (those are read back from
        the ledger); link at once when all were done."""
        run, plan, o = self.run, self.plan, self.run.o
        info, blocks = plan.info, plan.blocks
        range_futures: dict[tuple[int, ...], Any] = {}
        skipped_frames = 0.0
        for (g, b), key in sorted(plan.k1.items()):
            if key in run.done_keys:
                self.phase1[(g, b)] = _phase1_record(run, key)
                run.units_skipped += 1
                skipped_frames += len(plan.groups[g]) / len(blocks)
                continue
            planes = plan.groups[g]
            ranges: dict[tuple[int, ...], Any] = {}
            if plan.ranges_needed:
                for lead in planes:
                    if lead not in range_futures:
                        range_futures[lead] = run.client.submit(
                            tasks.frame_range, run.spec, info, lead, info.plane_chunks,
                            pure=False, retries=o.retries,
                        )  # fmt: skip
                    ranges[lead] = range_futures[lead]
            run.submit(
                tasks.segment_unit, run.spec, info, str(plan.work), blocks[b], planes, ranges,
                key, str(o.out), o.objects, then=lambda f, u=(g, b): self.segmented(u, f),
            )  # fmt: skip
        self.report.frames_skipped = round(skipped_frames)
        if len(self.phase1) == self.plan.n_units:
            self.link()

    def segmented(self, unit: tuple[int, int], future: Any) -> None:
        if self.fail(future):
            self.run.unit_done(0, 0)
            return
        rec = future.result()
        self.phase1[unit] = rec
        self.run.unit_done(rec["frames"] / len(self.plan.blocks), rec["pixels"])
        if len(self.phase1) == self.plan.n_units:
            self.link()

    # Phase 2: link the objects of neighbouring blocks.

    def link(self) -> None:
        """A semantic model's links from the core edges the blocks returned, here; an
        instance model's by overlap in the halos, a task per block."""
        plan, phase1 = self.plan, self.phase1
        blocks = plan.blocks
        if not plan.instances:
            for g, planes in enumerate(plan.groups):
                for k in range(len(planes)):
                    found = edge_links(
                        blocks,
                        [phase1[(g, b)]["edges"][k] for b in range(len(blocks))],
                        [np.asarray(phase1[(g, b)]["classes"][k]) for b in range(len(blocks))],
                    )
                    if found:
                        arr = np.asarray(found, np.int64)
                        self.links.append(np.column_stack([np.full((len(arr), 2), (g, k)), arr]))
            self.finish()
            return
        pairs: dict[int, list] = {i: [] for i in range(len(blocks))}
        for i, j, region in face_pairs(blocks):
            pairs[i].append((j, region))
        self.links_left = plan.n_units
        for (g, i), _ in sorted(phase1.items()):
            self.run.submit(
                tasks.link_unit, plan.info, str(plan.work), blocks, i, pairs[i], plan.groups[g],
                plan.k1[(g, i)], then=lambda f, g=g: self.linked(g, f),
            )  # fmt: skip

    def linked(self, g: int, future: Any) -> None:
        if self.fail(future):
            return
        found = future.result()
        if found:
            arr = np.asarray(found, np.int64)
            self.links.append(np.column_stack([np.full(len(arr), g), arr]))
        self.links_left -= 1
        if self.links_left == 0:
            self.finish()

    # Phase 3: final ids over the whole array, written block by block.

    def finish(self) -> None:
        """Join the links into final ids, submit each block's write, and measure the objects
        while the workers write."""
        run, plan, phase1 = self.run, self.plan, self.phase1
        instances = plan.instances
        base, ids = _final_ids(plan, phase1, self.links)
        class_of = np.zeros(int(ids.max(initial=0)) + 1, np.int64)  # final id → class
        parts: dict[tuple[int, int], list[np.ndarray]] = {}  # (group, plane): final-id stats
        for (g, b), k3key in sorted(plan.k3.items()):
            planes = plan.groups[g]
            luts, values = [], []
            for k in range(len(planes)):
                start = base[(g, k, b)]
                count = phase1[(g, b)]["counts"][k]
                lut = np.concatenate([[0], ids[start : start + count]]).astype(np.uint32)
                luts.append(lut)
                cls = np.asarray(phase1[(g, b)]["classes"][k], np.int64)
                values.append(cls)
                if not instances:
                    class_of[lut[1:]] = cls[1:]
                st = np.array(phase1[(g, b)]["stats"][k], np.float64)
                st = st.reshape(-1, len(STAT_FIELDS))
                st[:, 0] = lut[st[:, 0].astype(np.int64)]
                parts.setdefault((g, k), []).append(st)
            if k3key in run.done_keys:
                self.phase3.add((g, b))
                run.units_skipped += 1
                continue
            run.submit(
                tasks.finish_unit, plan.info, str(plan.work), str(plan.target), plan.blocks[b],
                planes, luts, None if instances else values, k3key, str(run.o.out),
                then=lambda f, u=(g, b): self.finished(u, f),
            )  # fmt: skip
        # The objects, measured while the workers write the final ids.
        self.frames.extend(
            _array_columns(run, plan.info, plan.groups, parts, None if instances else class_of)
        )
        if len(self.phase3) == plan.n_units:
            self.complete()

    def finished(self, unit: tuple[int, int], future: Any) -> None:
        if self.fail(future):
            self.run.unit_done(0, 0)
            return
        self.phase3.add(unit)
        self.run.unit_done(0, 0)
        if len(self.phase3) == self.plan.n_units:
            self.complete()

    def complete(self) -> None:
        """The objects into the table, the array's ledger entry (with its columns), the
        scratch removed."""
        run, plan, report = self.run, self.plan, self.report
        kept = {}
        for frame, name, columns in self.frames:
            report.objects += run.table.add(plan.info.store, frame, name, columns)
            kept.update({f"{frame}.{f}": v for f, v in columns.items()})
        report.frames = plan.info.n_frames - report.frames_skipped
        run.ledger.write(plan.done_key, {"key": plan.done_key}, kept)
        shutil.rmtree(plan.work, ignore_errors=True)


def _final_ids(
    plan: _ArrayPlan, phase1: dict[tuple[int, int], dict], links: list[np.ndarray]
) -> tuple[dict[tuple[int, int, int], int], np.ndarray]:
    """(first node of each (group, plane, block), final id of every node): the nodes are the
    local ids of every block of every plane, plane-major; linked nodes share an id, and ids
    run 1..n over the whole array (union-find, :func:`~edgeseg.batch.chunks.merge_ids`)."""
    base: dict[tuple[int, int, int], int] = {}
    n = 0
    for g, planes in enumerate(plan.groups):
        for k in range(len(planes)):
            for b in range(len(plan.blocks)):
                base[(g, k, b)] = n
                n += phase1[(g, b)]["counts"][k]
    edges = np.zeros((0, 2), np.int64)
    if links:
        table = np.concatenate(links)
        u = np.array([base[(g, k, i)] for g, k, i in table[:, :3]]) + table[:, 3] - 1
        v = np.array([base[(g, k, j)] for g, k, j in table[:, [0, 1, 4]]]) + table[:, 5] - 1
        edges = np.column_stack([u, v])
    return base, merge_ids(n, edges)


def _phase1_record(run: _Run, key: str) -> dict[str, Any]:
    """A finished phase-1 unit's record (from the ledger) with its arrays: the class of each
    local id, the measurements of its objects' parts and (semantic model) its core edges."""
    record = run.ledger.read(key)
    arrays = tasks.unpack_planes(run.ledger.read_columns(key), record["frames"])
    return {**record, **arrays}


def _frames(info: ArrayInput, groups: list[list[tuple[int, ...]]]) -> list[tuple[int, str]]:
    """(frame number, frame name) of every frame of an array, group by group."""
    out = []
    for planes in groups:
        for lead in planes:
            frame = int(np.ravel_multi_index(lead, info.lead_shape)) if lead else 0
            out.append((frame, info.frame_name(lead)))
    return out


def _array_columns(
    run: _Run,
    info: ArrayInput,
    groups: list[list[tuple[int, ...]]],
    parts: dict[tuple[int, int], list[np.ndarray]],
    class_of: np.ndarray | None,
) -> list[tuple[int, str, dict[str, np.ndarray]]]:
    """(frame, name, object columns) of every frame of an array from its blocks' part
    measurements with final ids (``parts[(group, plane)]``). ``class_of``: a semantic model's
    class of each final id (None: an instance model)."""
    meta = run.meta
    assert meta is not None
    pixel = run.o.pixel_size if run.o.pixel_size is not None else meta.pixel_size_um
    if class_of is not None:
        names = dict(foreground_classes(meta))
        top = int(class_of.max(initial=0))
        label = np.asarray([names.get(c, str(c)) for c in range(top + 1)], object)
    out = []
    order = iter(_frames(info, groups))
    for g, planes in enumerate(groups):
        for k in range(len(planes)):
            frame, name = next(order)
            columns = merge_stats(parts.get((g, k), []), info.plane_shape, pixel)
            if class_of is None:
                columns["class"] = np.full(len(columns["id"]), meta.class_names[0], object)
            else:
                columns["class"] = label[class_of[columns["id"]]]
            out.append((frame, name, columns))
    return out
