"""What runs on a Dask worker: frames and blocks in, label files, arrays and ledger entries out.

Workers read their inputs themselves (by path, page and region) and write their outputs
themselves; only records (counts, object measurements as numpy columns, block edges,
links) travel back through the scheduler. Each worker process opens the model once
(:func:`segmenter`, cached by model path, threads and settings) and keeps it for every later
task: interpreters are never shipped.

Every frame goes through the :class:`~edgeseg.core.segmenter.Segmenter`, as in `edgeseg
run`. A block of a frame split into several blocks is normalized with the whole frame's
intensity range (percentile or minmax models), so that it sees what the whole frame would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.batch.chunks import (
    SIDES,
    STAT_FIELDS,
    Block,
    core_edges,
    overlap_links,
    partial_stats,
)
from edgeseg.batch.inputs import ArrayInput
from edgeseg.batch.store import Ledger
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.preprocess import drop_alpha, intensity_range
from edgeseg.core.segmenter import Segmenter
from edgeseg.errors import DataError
from edgeseg.imageio import encode_mask, stored_labels
from edgeseg.paths import atomic_path, atomic_write

__all__ = [
    "FAULT_ENV",
    "ModelSpec",
    "assemble_stack",
    "describe",
    "finish_unit",
    "frame_range",
    "link_unit",
    "pack_planes",
    "segment_files",
    "segment_unit",
    "segmenter",
    "unpack_planes",
]

#: Test hook: a worker that finds this variable naming a file that does not exist yet creates
#: it and dies at once (os._exit), as a killed worker would; its task must be retried.
FAULT_ENV = "EDGESEG_BATCH_DIE_ONCE"

_CACHE: dict[Any, tuple[Segmenter, ModelMetadata, str]] = {}


@dataclass(frozen=True)
class ModelSpec:
    """The model and Segmenter settings every worker builds its Segmenter from."""

    path: str
    threads: int = 1
    overlap: int = 32
    min_area: int = 0
    resize: bool | None = None
    backend: str | None = None  # a runtime (litert, onnxruntime, openvino); None: the file's


def _fault_hook() -> None:
    marker = os.environ.get(FAULT_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)


def segmenter(spec: ModelSpec) -> tuple[Segmenter, ModelMetadata, str]:
    """This worker's Segmenter for ``spec`` (opened once), its metadata and backend."""
    cached = _CACHE.get(spec)
    if cached is None:
        from edgeseg.runtime.backends import open_model

        model = open_model(spec.path, threads=spec.threads, backend=spec.backend)
        tile = model.embedded if spec.resize is None else not spec.resize
        seg = Segmenter(
            model.backend, model.meta, resize=not tile, overlap=spec.overlap, min_area=spec.min_area
        )
        cached = (seg, model.meta, model.opened.describe())
        _CACHE[spec] = cached
    return cached


def describe(spec: ModelSpec) -> dict[str, Any]:
    """The model's metadata (as a dict), backend and mode, as a worker opens it."""
    seg, meta, chosen = segmenter(spec)
    return {"meta": meta.to_dict(), "backend": chosen, "resize": seg.resize}


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


# --------------------------------------------------------------------------------------------
# Files: image files and TIFF stacks, a few frames a task


def _reader(path: str, cache: dict[str, Any], window: str | None = None) -> Any:
    if path not in cache:
        if window is not None:  # a DICOM input (its window: CENTER,WIDTH or file)
            from edgeseg.dicom import open_dicom, parse_window

            cache[path] = open_dicom(path, parse_window(window))
        elif Path(path).suffix.lower() in (".tif", ".tiff"):
            from edgeseg.runtime.sources import TiffStack

            cache[path] = TiffStack(path)
        else:
            from edgeseg.runtime.sources import ImageFile

            cache[path] = ImageFile(path)
    return cache[path]


def segment_files(
    spec: ModelSpec,
    frames: list[dict[str, Any]],
    out: str,
    fmt: str,
    pixel_size: float | None,
    objects: bool = True,
) -> list[dict[str, Any]]:
    """Segment ``frames`` (dicts: path, page, index, name, target, key, input, part) and
    write each label map to its ``target`` (a mask file, or a stack part ``.npy``), then its
    ledger entry with the frame's object columns (also in its result, ``columns``; classes
    as codes into ``class_names``). A frame that cannot be read is reported in its result
    (``error``), never raised. Without ``objects`` nothing is measured (no columns)."""
    from edgeseg.core.objects import frame_object_columns, object_class_names

    _fault_hook()
    seg, meta, _ = segmenter(spec)
    ledger = Ledger(Path(out))
    readers: dict[str, Any] = {}
    results = []
    try:
        for f in frames:
            try:
                frame = _reader(f["path"], readers, f.get("window")).read(f["page"])
                if f.get("prob"):  # a fractional DICOM SEG: keep the probabilities too
                    from edgeseg.dicom.seg import fractions

                    prob = seg.probabilities(frame)
                    labels = seg.labels_from(prob)
                    Path(f["prob"]).parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(Path(f["prob"]), _npy_bytes(fractions(prob, meta)))
                else:
                    labels = seg(frame).labels
                target = Path(f["target"])
                if f["part"]:
                    buf = _npy_bytes(stored_labels(labels, "tif"))
                    atomic_write(target, buf)
                else:
                    atomic_write(target, encode_mask(labels, fmt))
                columns = (
                    frame_object_columns(
                        labels, meta, frame, f.get("pixel_size") or pixel_size, codes=True
                    )
                    if objects
                    else None
                )
            except (DataError, OSError, ValueError) as exc:
                results.append({"key": f["key"], "input": f["input"], "error": str(exc)})
                continue
            record = {
                "key": f["key"],
                "input": f["input"],
                "frame": f["index"],
                "name": f["name"],
                "frames": 1,
                "pixels": int(labels.size),
                "objects": len(columns["id"]) if columns is not None else 0,
                "class_names": object_class_names(meta),
                "worker": _worker_name(),
            }
            ledger.write(f["key"], record, columns)
            results.append({**record, "columns": columns} if columns is not None else record)
    finally:
        for r in readers.values():
            r.close()
    return results


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def assemble_stack(parts: list[str], target: str, key: str, out: str, record: dict) -> dict:
    """Write the label stack ``target`` (multi-page TIFF) from its frames' ``parts`` in
    order, page by page, then its ledger entry; the parts are deleted."""
    from edgeseg.optional import require

    tifffile = require("tifffile")
    _fault_hook()
    dtype = np.uint8
    for p in parts:  # the widest type of any page
        head = np.load(p, mmap_mode="r")
        if np.dtype(head.dtype).itemsize > np.dtype(dtype).itemsize:
            dtype = head.dtype
    with atomic_path(target) as tmp, tifffile.TiffWriter(tmp) as tw:
        for p in parts:
            tw.write(np.load(p).astype(dtype), contiguous=True)
    Ledger(Path(out)).write(key, record)
    for p in parts:
        Path(p).unlink(missing_ok=True)
    return record


# --------------------------------------------------------------------------------------------
# Zarr arrays: blocks with halos


def _open(store: str, path: str = "", mode: str = "r") -> Any:
    from edgeseg.batch.deps import need

    zarr = need("zarr")
    if path:
        return zarr.open_group(store=store, mode=mode)[path]
    return zarr.open_array(store=store, mode=mode)


def _frame_dtype(region: np.ndarray) -> np.ndarray:
    """The pixel types frames have (uint8, uint16, float32; bool → 0/255)."""
    if region.dtype in (np.uint8, np.uint16, np.float32):
        return region
    if region.dtype == bool:
        return region.astype(np.uint8) * 255
    if np.issubdtype(region.dtype, np.floating):
        return region.astype(np.float32)
    if region.size and region.min() >= 0 and region.max() <= 65535:
        return region.astype(np.uint16)
    raise DataError(f"pixel values of type {region.dtype} outside 0..65535")


def read_region(
    array: Any,
    info: ArrayInput,
    lead: tuple[int, ...],
    rows: slice,
    cols: slice,
) -> np.ndarray:
    """A region of one frame as a frame: (h, w) or (h, w, C), uint8/uint16/float32."""
    index: list[Any] = []
    it = iter(lead)
    for a in info.axes:
        if a == "Y":
            index.append(rows)
        elif a == "X":
            index.append(cols)
        elif a == "C":
            index.append(slice(None))
        else:
            index.append(next(it))
    region = np.asarray(array[tuple(index)])
    if "C" in info.axes and info.axes.index("C") < info.axes.index("Y"):
        region = np.moveaxis(region, 0, -1)
    if region.ndim == 3 and region.shape[2] == 1:
        region = region[..., 0]
    return _frame_dtype(np.ascontiguousarray(region))


def frame_range(
    spec: ModelSpec, info: ArrayInput, lead: tuple[int, ...], block: tuple[int, int]
) -> tuple[float, float] | None:
    """The whole frame's intensity range (lo, hi) by the model's rule, computed as the
    Segmenter computes it on a whole frame (the same strided sample); None for ``scale``."""
    _fault_hook()
    _, meta, _ = segmenter(spec)
    if meta.normalization in ("scale", "meanstd"):  # a fixed range: no frame statistics
        return None
    array = _open(info.store, info.array_path)
    h, w = info.plane_shape
    if meta.normalization == "percentile":
        step = max(1, int(np.sqrt(h * w / (512 * 512))))
        sample = read_region(array, info, lead, slice(0, h, step), slice(0, w, step))
        return intensity_range(drop_alpha(sample), meta)
    lo, hi = np.inf, -np.inf  # minmax: one block of rows at a time
    for y in range(0, h, block[0]):
        part = drop_alpha(
            read_region(array, info, lead, slice(y, min(h, y + block[0])), slice(0, w))
        )
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    return lo, hi


def _ranged(seg: Segmenter, frame: np.ndarray, lohi: tuple[float, float] | None) -> np.ndarray:
    """Labels of a block whose normalization uses the frame's range ``lohi``: the same float
    arithmetic as the Segmenter's own normalization of the whole frame."""
    if lohi is None:
        return seg.labels(frame)
    lo, hi = lohi
    meta = seg.meta
    if lo == 0.0:
        fixed = meta.with_updates(normalization="scale", input_max=max(hi, 1e-6))
    else:
        fixed = meta.with_updates(normalization="scale", input_max=max(hi - lo, 1e-6))
        frame = drop_alpha(frame).astype(np.float32) - np.float32(lo)
    other = Segmenter(
        seg.backend, fixed, resize=seg.resize, overlap=seg.overlap, min_area=seg.min_area
    )
    return other.labels(frame)


def _local_ids(
    labels: np.ndarray, core: tuple[slice, slice], instances: bool, meta: ModelMetadata
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(core ids 1..n, the extended labels in those ids (objects outside the core: 0),
    class of each id (index 0: background))."""
    from edgeseg.optional import cv2

    if instances:
        core_labels = labels[core]
        present = np.unique(core_labels)
        present = present[present > 0]
        lut = np.zeros(int(labels.max(initial=0)) + 1, np.uint32)
        lut[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
        ext = lut[labels]
        classes = np.ones(len(present) + 1, np.int64)
        classes[0] = 0
        return ext[core], ext, classes
    from edgeseg.core.postprocess import foreground_classes

    cv = cv2()
    classes_map = np.ascontiguousarray(labels[core])
    ids = np.zeros(classes_map.shape, np.uint32)
    classes = [0]
    for c, _ in foreground_classes(meta):
        mask = (classes_map == c).view(np.uint8)
        if not cv.countNonZero(mask):
            continue
        n, comp = cv.connectedComponents(mask, connectivity=8, ltype=cv.CV_32S)
        ids[comp > 0] = comp[comp > 0] + len(classes) - 1
        classes += [c] * (n - 1)
    return ids, ids, np.asarray(classes, np.int64)


def segment_unit(
    spec: ModelSpec,
    info: ArrayInput,
    work: str,
    block: Block,
    planes: list[tuple[int, ...]],
    ranges: dict[tuple[int, ...], tuple[float, float] | None],
    key: str,
    out: str,
    objects: bool = True,
) -> dict[str, Any]:
    """Phase 1 of a block of one chunk of frames (``planes``): segment each frame's block
    with its halo, keep the core with ids 1..n per frame in the work array, save the halo
    labels (instance models) for the links, measure the parts of its objects (unless not
    ``objects``), then the ledger entry."""
    _fault_hook()
    seg, meta, _ = segmenter(spec)
    instances = meta.instances is not None
    array = _open(info.store, info.array_path)
    labels_out = _open(work + "/labels.zarr", mode="r+")
    ey0, ey1, ex0, ex1 = block.ext
    y0, y1, x0, x1 = block.core
    core = block.core_in_ext
    counts: list[int] = []
    classes: list[np.ndarray] = []
    stats: list[np.ndarray] = []
    cores = []
    halos = {}
    edges: list[dict[str, np.ndarray]] = []
    for k, lead in enumerate(planes):
        frame = read_region(array, info, lead, slice(ey0, ey1), slice(ex0, ex1))
        labels = _ranged(seg, frame, ranges.get(lead))
        ids, ext, cls = _local_ids(labels, core, instances, meta)
        cores.append(ids)
        counts.append(len(cls) - 1)
        classes.append(cls)
        if objects:
            stats.append(partial_stats(ids, drop_alpha(frame[core]), (y0, x0)))
        else:
            stats.append(np.zeros((0, len(STAT_FIELDS))))
        if instances:
            ext = ext.copy()
            ext[core] = 0
            halos[f"p{k}"] = ext
        else:
            edges.append(core_edges(ids))
    _write_planes(labels_out, info, planes, (y0, y1, x0, x1), cores)
    if instances:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **halos)
        atomic_write(
            Path(work) / "halos" / f"{block.grid[0]}_{block.grid[1]}_{key}.npz", buf.getvalue()
        )
    record = {
        "key": key,
        "counts": counts,
        "frames": len(planes),
        "pixels": (y1 - y0) * (x1 - x0) * len(planes),
        "worker": _worker_name(),
    }
    arrays = {"classes": classes, "stats": stats, "edges": edges}
    Ledger(Path(out)).write(key, record, pack_planes(arrays))
    return {**record, **arrays}


def pack_planes(arrays: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Per-plane arrays of a phase-1 unit (``classes``, ``stats``: a list of arrays;
    ``edges``: a list of dicts of :data:`SIDES`) as flat ``.npz`` columns."""
    flat: dict[str, np.ndarray] = {}
    for name, planes in arrays.items():
        for k, value in enumerate(planes):
            if isinstance(value, dict):
                flat.update({f"{name}.{k}.{side}": value[side] for side in SIDES})
            else:
                flat[f"{name}.{k}"] = value
    return flat


def unpack_planes(flat: dict[str, np.ndarray], planes: int) -> dict[str, list[Any]]:
    """What :func:`pack_planes` packed (``edges`` empty for an instance model)."""
    out: dict[str, list[Any]] = {"classes": [], "stats": [], "edges": []}
    for k in range(planes):
        out["classes"].append(flat[f"classes.{k}"])
        out["stats"].append(flat[f"stats.{k}"])
        if f"edges.{k}.top" in flat:
            out["edges"].append({side: flat[f"edges.{k}.{side}"] for side in SIDES})
    return out


def _write_planes(
    array: Any,
    info: ArrayInput,
    planes: list[tuple[int, ...]],
    core: tuple[int, int, int, int],
    data: list[np.ndarray],
) -> None:
    """Write the core of every frame of a chunk at once (one write per chunk)."""
    y0, y1, x0, x1 = core
    if not planes[0]:
        array[y0:y1, x0:x1] = data[0]
        return
    lo = [min(p[i] for p in planes) for i in range(len(planes[0]))]
    hi = [max(p[i] for p in planes) + 1 for i in range(len(planes[0]))]
    sizes = [b - a for a, b in zip(lo, hi, strict=True)]
    block = np.zeros((*sizes, y1 - y0, x1 - x0), data[0].dtype)
    for lead, d in zip(planes, data, strict=True):
        block[tuple(p - a for p, a in zip(lead, lo, strict=True))] = d
    # The label axes keep the input's order with Y, X last: lead axes come first.
    index = (*(slice(a, b) for a, b in zip(lo, hi, strict=True)), slice(y0, y1), slice(x0, x1))
    array[index] = block


def _read_core(
    array: Any, info: ArrayInput, lead: tuple[int, ...], region: tuple[int, int, int, int]
) -> np.ndarray:
    y0, y1, x0, x1 = region
    return np.asarray(array[(*lead, slice(y0, y1), slice(x0, x1))])


def link_unit(
    info: ArrayInput,
    work: str,
    blocks: list[Block],
    i: int,
    pairs: list[tuple[int, tuple[int, int, int, int]]],
    planes: list[tuple[int, ...]],
    key: str,
) -> list[tuple[int, int, int, int, int]]:
    """Phase 2 of block ``i`` of an instance model: links (plane k, block i, id, block j, id)
    between its objects and those of its neighbours j (``pairs``: j and the region where i's
    halo meets j's core), by overlap. (A semantic model's links come from the core edges
    its blocks returned: :func:`~edgeseg.batch.chunks.edge_links`, on the client.)"""
    _fault_hook()
    labels = _open(work + "/labels.zarr")
    a = blocks[i]
    found: list[tuple[int, int, int, int, int]] = []
    halos = np.load(Path(work) / "halos" / f"{a.grid[0]}_{a.grid[1]}_{key}.npz")
    ey0, _, ex0, _ = a.ext
    for k, lead in enumerate(planes):
        ext = halos[f"p{k}"]
        for j, region in pairs:
            y0, y1, x0, x1 = region
            mine = ext[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
            theirs = _read_core(labels, info, lead, region)
            for u, v in overlap_links(mine, theirs):
                found.append((k, i, int(u), j, int(v)))
    return found


def finish_unit(
    info: ArrayInput,
    work: str,
    target: str,
    block: Block,
    planes: list[tuple[int, ...]],
    luts: list[np.ndarray],
    values: list[np.ndarray] | None,
    key: str,
    out: str,
) -> dict[str, Any]:
    """Phase 3 of a block: its final ids (``luts[k]``: local id → id unique over the array)
    or, for a semantic model, its classes (``values[k]``: local id → class) into the label
    array; then the ledger entry. (The objects were measured in phase 1.)"""
    _fault_hook()
    labels = _open(work + "/labels.zarr")
    final = _open(target, mode="r+")
    written = []
    for k, lead in enumerate(planes):
        local = _read_core(labels, info, lead, block.core)
        written.append(
            luts[k][local].astype(np.uint32)
            if values is None
            else values[k][local].astype(np.uint8)
        )
    _write_planes(final, info, planes, block.core, written)
    record = {"key": key, "frames": len(planes), "worker": _worker_name()}
    Ledger(Path(out)).write(key, record)
    return record
