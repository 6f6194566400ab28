"""The pure parts of `edgeseg segment`: object columns, block stitching, the objects table and
task sizing (numpy only, no cluster)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from edgeseg.batch.chunks import (
    core_edges,
    edge_links,
    merge_ids,
    merge_stats,
    partial_stats,
    plan_blocks,
)
from edgeseg.batch.run import _task_groups
from edgeseg.batch.store import TABLE_FIELDS, ObjectTable
from edgeseg.core.instances import OBJECT_FIELDS, measure_objects, object_columns
from edgeseg.core.objects import column_rows
from edgeseg.errors import DataError
from edgeseg.optional import cv2


def _blobs(shape=(90, 130), n=60, seed=0) -> np.ndarray:
    """Labels of random overlapping rectangles and specks (ids 1..n, some touching)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, 14), rng.integers(1, 20)
        labels[y : y + h, x : x + w] = i
    return labels


@pytest.mark.parametrize("pixel", [None, 0.65])
@pytest.mark.parametrize("with_frame", [True, False])
def test_object_columns_are_measure_objects_as_columns(pixel, with_frame) -> None:
    labels = _blobs()
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 65535, (*labels.shape, 3), np.uint16) if with_frame else None
    rows = [r.to_dict() for r in measure_objects(labels, frame, pixel)]
    cols = object_columns(labels, frame, pixel)
    assert list(cols) == list(OBJECT_FIELDS)
    assert len(rows) == len(cols["id"]) > 20
    as_rows = column_rows(cols)
    for mine, theirs in zip(as_rows, rows, strict=True):
        assert mine == theirs
    assert object_columns(np.zeros((4, 5), np.int32))["id"].size == 0


def _split(labels: np.ndarray, block: tuple[int, int]):
    return plan_blocks(labels.shape, block, 0)


def test_blocks_merge_to_the_whole_frame_measurements() -> None:
    labels = _blobs(seed=2)
    frame = np.random.default_rng(3).integers(0, 4000, labels.shape, np.uint16)
    parts = []
    for b in _split(labels, (32, 48)):
        y0, y1, x0, x1 = b.core
        parts.append(partial_stats(labels[y0:y1, x0:x1], frame[y0:y1, x0:x1], (y0, x0)))
    merged = merge_stats(parts, labels.shape, 0.5)
    whole = object_columns(labels, frame, 0.5)
    for f in OBJECT_FIELDS:
        np.testing.assert_array_equal(merged[f], whole[f], err_msg=f)


def test_edge_links_join_components_cut_by_blocks() -> None:
    """Components labelled block by block and joined across the core edges are exactly the
    whole frame's 8-connected components (same class only)."""
    cv = cv2()
    rng = np.random.default_rng(4)
    classes = (rng.random((70, 100)) < 0.45).astype(np.uint8) * rng.integers(1, 3, (70, 100))
    blocks = _split(classes, (16, 24))
    edges, cls_of, local = [], [], []
    for b in blocks:
        y0, y1, x0, x1 = b.core
        core = classes[y0:y1, x0:x1]
        ids = np.zeros(core.shape, np.int64)
        cls = [0]
        for c in (1, 2):
            n, comp = cv.connectedComponents((core == c).astype(np.uint8), connectivity=8)
            ids[comp > 0] = comp[comp > 0] + len(cls) - 1
            cls += [c] * (n - 1)
        local.append(ids)
        edges.append(core_edges(ids))
        cls_of.append(np.asarray(cls))
    links = edge_links(blocks, edges, cls_of)
    base = np.cumsum([0] + [len(c) - 1 for c in cls_of])
    pairs = np.asarray([(base[i] + u - 1, base[j] + v - 1) for i, u, j, v in links])
    final = merge_ids(int(base[-1]), pairs)
    stitched = np.zeros(classes.shape, np.int64)
    for b, ids, start in zip(blocks, local, base[:-1], strict=True):
        y0, y1, x0, x1 = b.core
        lut = np.concatenate([[0], final[start : start + ids.max(initial=0)]])
        stitched[y0:y1, x0:x1] = lut[ids]
    for c in (1, 2):
        n, whole = cv.connectedComponents((classes == c).astype(np.uint8), connectivity=8)
        mine = stitched[classes == c]
        theirs = whole[classes == c]
        pairs = np.unique(np.stack([mine, theirs], axis=1), axis=0)
        assert len(pairs) == n - 1 == len(np.unique(mine))  # one-to-one


def _frame_columns(ids, cls="nucleus", **extra):
    n = len(ids)
    cols = {f: np.arange(n, dtype=np.float64) + 0.5 for f in OBJECT_FIELDS}
    cols.update({"id": np.asarray(ids, np.int64), "area_px": np.full(n, 4, np.int64)})
    for f in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"):
        cols[f] = np.full(n, 2, np.int64)
    cols["touches_border"] = np.arange(n) % 2 == 0
    cols["area_um2"] = np.full(n, np.nan)
    cols["class"] = np.full(n, cls, object)
    cols.update(extra)
    return cols


def _filled(fmt: str) -> ObjectTable:
    table = ObjectTable(fmt)
    assert table.add("b.png", 0, "b.png", _frame_columns([1, 2])) == 2
    assert table.add("a.tif", 3, "a.tif page 3", _frame_columns([2, 1, 3])) == 3  # unsorted
    assert table.add("a.tif", 1, "a.tif page 1", _frame_columns([])) == 0
    assert table.add("a.tif", 0, "a.tif page 0", _frame_columns([5])) == 1
    assert len(table) == 6
    return table


def test_object_table_orders_frames_and_writes_parquet_and_csv(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    assert _filled("parquet").write(tmp_path / "o.parquet") == 6
    got = pq.read_table(tmp_path / "o.parquet")
    assert got.column_names == list(TABLE_FIELDS)
    rows = got.to_pylist()
    assert [(r["input"], r["frame"], r["id"]) for r in rows] == [
        ("a.tif", 0, 5), ("a.tif", 3, 1), ("a.tif", 3, 2), ("a.tif", 3, 3),
        ("b.png", 0, 1), ("b.png", 0, 2),
    ]  # fmt: skip
    assert rows[0]["area_um2"] is None and rows[0]["class"] == "nucleus"
    assert isinstance(rows[0]["touches_border"], bool)
    # The rows sorted with the table: id 1 of frame 3 came second, its values follow it.
    assert rows[1]["centroid_y"] == 1.5
    assert _filled("csv").write(tmp_path / "o.csv") == 6
    with open(tmp_path / "o.csv") as f:
        lines = list(csv.DictReader(f))
    assert [r["name"] for r in lines][:2] == ["a.tif page 0", "a.tif page 3"]
    assert lines[0]["area_um2"] == "" and lines[0]["touches_border"] == "True"
    assert [(r["input"], r["frame"], r["id"], r["centroid_y"]) for r in lines] == [
        (r["input"], str(r["frame"]), str(r["id"]), repr(r["centroid_y"])) for r in rows
    ]
    a, b = _filled("parquet").columns(), _filled("csv").columns()  # the same either way
    for f in TABLE_FIELDS:
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)
    assert ObjectTable("csv").write(tmp_path / "e.csv") == 0
    assert (tmp_path / "e.csv").read_text().strip() == ",".join(TABLE_FIELDS)
    assert ObjectTable("parquet").write(tmp_path / "e.parquet") == 0
    empty = pq.read_table(tmp_path / "e.parquet")
    assert empty.num_rows == 0 and empty.column_names == list(TABLE_FIELDS)
    with pytest.raises(DataError, match="parquet or csv"):
        ObjectTable("xlsx")


@pytest.mark.parametrize(("n", "per", "workers"), [(300, 4, 2), (7, 4, 2), (3, 4, 2), (9, 1, 4)])
def test_task_groups_cover_every_frame_once_with_single_frames_last(n, per, workers) -> None:
    groups = _task_groups(list(range(n)), per, workers)
    assert [f for g in groups for f in g] == list(range(n))
    assert all(1 <= len(g) <= per for g in groups)
    if per > 1:
        assert all(len(g) == 1 for g in groups[-min(n, 2 * workers) :])
    assert len(groups) <= math.ceil(n / per) + 2 * workers


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_object_table_takes_class_codes(fmt) -> None:
    pytest.importorskip("pyarrow")
    names = ("nucleus", "debris")
    text, coded = ObjectTable(fmt), ObjectTable(fmt)
    codes = np.array([1, 0, 1], np.int16)
    text.add("a.png", 0, "a.png", _frame_columns([1, 2, 3], cls=np.asarray(names, object)[codes]))
    coded.add("a.png", 0, "a.png", _frame_columns([1, 2, 3], cls=codes), class_names=names)
    assert list(coded.columns()["class"]) == ["debris", "nucleus", "debris"]
    assert list(coded.columns()["class"]) == list(text.columns()["class"])


def test_frame_object_columns_codes_name_the_classes() -> None:
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.objects import frame_object_columns, object_class_names

    meta = ModelMetadata(input_size=(32, 32), num_classes=3, class_names=("bg", "cell", "edge"))
    labels = np.zeros((32, 32), np.uint8)
    labels[2:6, 2:6] = 1
    labels[10:12, 10:20] = 2
    labels[20:25, 3:5] = 1
    text = frame_object_columns(labels, meta)
    codes = frame_object_columns(labels, meta, codes=True)
    assert codes["class"].dtype == np.int16
    names = np.asarray(object_class_names(meta), object)
    assert list(names[codes["class"]]) == list(text["class"]) == ["cell", "cell", "edge"]
