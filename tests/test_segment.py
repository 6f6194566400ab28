"""`edgeseg segment`: folders, stacks and Zarr arrays on a local Dask cluster (loopback).

One cluster of two worker processes serves the whole module. The models are 1x1-conv
.tflite models (percentile normalization), so every pixel's output depends on that pixel
alone: block results equal whole-frame results exactly, wherever the blocks are cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import (
    bright_model,
    instance_model,
    one_line_error,
    write_instance_pairs,
)
from typer.testing import CliRunner

from edgeseg.cli.main import app

pytest.importorskip("tensorflow")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")
runner = CliRunner()


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "instance": instance_model(root / "instance.tflite", size=64),
        "semantic": bright_model(root / "bright.tflite", size=64),
    }


@pytest.fixture(scope="module")
def wells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_instance_pairs(tmp_path_factory.mktemp("wells"), n=6, size=(96, 112)) / "images"


def _segment(model: Path, inputs: list, out: Path, client, **kw):
    from edgeseg.batch.run import SegmentOptions, segment_archive

    on_progress = kw.pop("on_progress", None)
    options = SegmentOptions(model=model, inputs=tuple(map(str, inputs)), out=out, **kw)
    return segment_archive(options, client=client, on_progress=on_progress)


def _whole_frame(model: Path, frame: np.ndarray) -> np.ndarray:
    from edgeseg.batch.tasks import ModelSpec, segmenter

    seg, _, _ = segmenter(ModelSpec(str(model.resolve())))
    return seg.labels(frame)


def _same_objects(a: np.ndarray, b: np.ndarray) -> None:
    """Equal label maps up to a one-to-one renaming of the ids."""
    assert a.shape == b.shape
    assert np.array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]], axis=1), axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


def _mosaic(shape=(256, 320), chunk=64, seed=0) -> tuple[np.ndarray, list]:
    """uint16 frame of separated bright discs, many centred on chunk borders."""
    rng = np.random.default_rng(seed)
    h, w = shape
    discs: list[tuple[float, float, float]] = []
    border_points = [(y, x) for y in range(chunk, h, chunk) for x in range(20, w - 20, 37)]
    border_points += [(y, x) for x in range(chunk, w, chunk) for y in range(20, h - 20, 41)]
    rng.shuffle(border_points)
    for y, x in border_points:
        r = float(rng.uniform(5, 9))
        y, x = y + rng.uniform(-3, 3), x + rng.uniform(-3, 3)
        if (
            r < y < h - r
            and r < x < w - r
            and all(np.hypot(y - cy, x - cx) > r + cr + 3 for cy, cx, cr in discs)
        ):
            discs.append((y, x, r))
    ys, xs = np.indices(shape)
    frame = np.full(shape, 300, np.float64)
    for cy, cx, r in discs:
        frame[np.hypot(ys - cy, xs - cx) <= r] = 3000
    frame += rng.normal(0, 20, shape)
    return np.clip(frame, 0, 65535).astype(np.uint16), discs


# --------------------------------------------------------------------------------------------


def test_folder_gives_what_run_save_masks_gives(models, wells, client, tmp_path) -> None:
    from edgeseg.imageio import read_image

    model = models["instance"]
    masks = tmp_path / "run"
    result = runner.invoke(
        app,
        ["run", str(model), "--source", str(wells), "--headless", "--save-masks", str(masks),
         "--objects", str(tmp_path / "run_objects.csv"),
         "--backend", "litert"],  # segment's library default: the file's own runtime
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "seg"
    summary = _segment(model, [wells], out, client, table_format="csv", frames_per_task=2)
    assert not summary.errors
    ran = sorted(p.name for p in masks.glob("*.png"))
    assert ran and sorted(p.name for p in out.glob("*.png")) == ran
    for name in ran:
        a, b = read_image(masks / name), read_image(out / name)
        assert a.dtype == b.dtype == np.uint16
        assert np.array_equal(a, b), name
    import csv

    with open(tmp_path / "run_objects.csv") as f:
        run_rows = list(csv.DictReader(f))
    with open(out / "objects.csv") as f:
        seg_rows = list(csv.DictReader(f))
    key = ("frame", "name", "id", "area_px", "centroid_y", "bbox_x1", "mean_intensity")
    assert [tuple(r[k] for k in key) for r in seg_rows] == [
        tuple(r[k] for k in key) for r in run_rows
    ]
    assert summary.frames == len(ran) and summary.units_skipped == 0


def test_zarr_mosaic_keeps_one_id_per_nucleus(models, client, tmp_path) -> None:
    frame, discs = _mosaic()
    src = tmp_path / "mosaic.zarr"
    zarr.create_array(store=str(src), shape=frame.shape, chunks=(64, 64), dtype="uint16")[:] = frame
    out = tmp_path / "out"
    summary = _segment(models["instance"], [src], out, client, halo=24)
    assert not summary.errors
    labels = zarr.open_array(store=str(out / "mosaic.zarr"), mode="r")
    assert labels.shape == frame.shape and labels.chunks == (64, 64)
    got = np.asarray(labels[:])
    whole = _whole_frame(models["instance"], frame)
    _same_objects(whole, got)
    # Every disc (most of them cut by a chunk border) is one object, with one id.
    ys, xs = np.indices(frame.shape)
    for cy, cx, r in discs:
        inside = got[np.hypot(ys - cy, xs - cx) <= r - 1]
        assert len(np.unique(inside)) == 1 and inside[0] > 0, (cy, cx)
    assert len(np.unique(got)) - 1 == len(discs)
    import pyarrow.parquet as pq

    table = pq.read_table(out / "objects.parquet").to_pylist()
    assert len(table) == len(discs)
    assert sorted(r["id"] for r in table) == list(range(1, len(discs) + 1))
    for r in table:
        area = int((got == r["id"]).sum())
        assert r["area_px"] == area
    assert not (out / ".edgeseg-batch" / "work").exists() or not any(
        (out / ".edgeseg-batch" / "work").iterdir()
    )


def test_zarr_time_series_semantic_and_instance_ids_over_the_array(
    models, client, tmp_path
) -> None:
    frames = np.stack([_mosaic((128, 160), 64, seed=s)[0] for s in range(3)])
    src = tmp_path / "movie.zarr"
    zarr.create_array(store=str(src), shape=frames.shape, chunks=(2, 64, 64), dtype="uint16")[:] = (
        frames
    )
    bad = runner.invoke(
        app, ["segment", str(models["semantic"]), str(src), "--out", str(tmp_path / "x")]
    )
    one_line_error(bad, "--axes")
    out = tmp_path / "sem"
    summary = _segment(models["semantic"], [src], out, client, axes="TYX", table_format="csv")
    assert not summary.errors
    got = np.asarray(zarr.open_array(store=str(out / "movie.zarr"), mode="r")[:])
    assert got.dtype == np.uint8
    from edgeseg.batch.tasks import ModelSpec, segmenter
    from edgeseg.core.objects import frame_objects

    _, meta, _ = segmenter(ModelSpec(str(models["semantic"].resolve())))
    import csv

    with open(out / "objects.csv") as f:
        rows = list(csv.DictReader(f))
    for t in range(3):
        whole = _whole_frame(models["semantic"], frames[t])
        assert np.array_equal(whole, got[t])
        expected = frame_objects(whole, meta, frames[t])
        mine = [r for r in rows if int(r["frame"]) == t]
        assert sorted(int(r["area_px"]) for r in mine) == sorted(r["area_px"] for r in expected)
    inst = _segment(models["instance"], [src], tmp_path / "inst", client, axes="TYX")
    assert not inst.errors
    ids = np.asarray(zarr.open_array(store=str(tmp_path / "inst" / "movie.zarr"), mode="r")[:])
    sets = [set(np.unique(ids[t])) - {0} for t in range(3)]
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2])  # unique over the array
    for t in range(3):
        _same_objects(_whole_frame(models["instance"], frames[t]), ids[t])


def test_interrupted_run_resumes_and_writes_nothing_twice(models, wells, client, tmp_path) -> None:
    frame, _ = _mosaic()
    src = tmp_path / "mosaic.zarr"
    zarr.create_array(store=str(src), shape=frame.shape, chunks=(64, 64), dtype="uint16")[:] = frame
    reference = tmp_path / "reference"
    _segment(models["instance"], [wells, src], reference, client, frames_per_task=1)

    out = tmp_path / "out"
    seen = {"n": 0}

    def stop_after_some(p) -> None:
        seen["n"] = p.units_done
        if p.units_done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _segment(
            models["instance"],
            [wells, src],
            out,
            client,
            frames_per_task=1,
            on_progress=stop_after_some,
        )
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert first  # some masks were written before the interruption
    again = _segment(models["instance"], [wells, src], out, client, frames_per_task=1)
    assert again.units_skipped >= 8 and not again.errors
    for name, mtime in first.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} written twice"
    for p in reference.glob("*.png"):
        assert (out / p.name).read_bytes() == p.read_bytes()
    a = zarr.open_array(store=str(reference / "mosaic.zarr"), mode="r")[:]
    b = zarr.open_array(store=str(out / "mosaic.zarr"), mode="r")[:]
    assert np.array_equal(a, b)
    import pyarrow.parquet as pq

    assert pq.read_table(out / "objects.parquet").equals(
        pq.read_table(reference / "objects.parquet")
    )
    # A third run finds everything done.
    third = _segment(models["instance"], [wells, src], out, client)
    assert third.frames == 0 and third.units_done == 0


def test_semantic_mosaic_resumed_keeps_its_links_and_classes(models, client, tmp_path) -> None:
    """A semantic model's links come from the core edges its blocks returned, and the class of
    every final id from the client: both must come back from the ledger after an interruption
    (the table of a third run, with everything done, too)."""
    import pyarrow.parquet as pq

    frame, _ = _mosaic()
    src = tmp_path / "mosaic.zarr"
    zarr.create_array(store=str(src), shape=frame.shape, chunks=(64, 64), dtype="uint16")[:] = frame
    reference = tmp_path / "reference"
    ref = _segment(models["semantic"], [src], reference, client)
    expected = _whole_frame(models["semantic"], frame)
    got = np.asarray(zarr.open_array(store=str(reference / "mosaic.zarr"), mode="r")[:])
    assert np.array_equal(got, expected)
    table = pq.read_table(reference / "objects.parquet").to_pylist()
    assert ref.inputs[0].objects == len(table) > 10
    from edgeseg.batch.tasks import ModelSpec, segmenter
    from edgeseg.core.postprocess import foreground_classes

    _, meta, _ = segmenter(ModelSpec(str(models["semantic"].resolve())))
    assert {r["class"] for r in table} == {name for _, name in foreground_classes(meta)}
    n_blocks = 4 * 5
    for stop in (5, n_blocks + 3):  # during phase 1; during phase 3
        out = tmp_path / f"out{stop}"

        def stop_after(p, stop=stop) -> None:
            if p.units_done >= stop:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            _segment(models["semantic"], [src], out, client, on_progress=stop_after)
        again = _segment(models["semantic"], [src], out, client)
        assert again.units_skipped >= stop and not again.errors
        b = zarr.open_array(store=str(out / "mosaic.zarr"), mode="r")[:]
        assert np.array_equal(got, b)
        assert pq.read_table(out / "objects.parquet").equals(
            pq.read_table(reference / "objects.parquet")
        )
        third = _segment(models["semantic"], [src], out, client)
        assert third.units_done == 0
        assert pq.read_table(out / "objects.parquet").equals(
            pq.read_table(reference / "objects.parquet")
        )


def test_backend_openvino_runs_on_every_worker(models, wells, client, tmp_path) -> None:
    pytest.importorskip("openvino")
    from edgeseg.imageio import read_image

    lite = _segment(models["semantic"], [wells], tmp_path / "lite", client)
    ov = _segment(models["semantic"], [wells], tmp_path / "ov", client, backend="openvino")
    assert "openvino" in ov.backend.lower() and "openvino" not in lite.backend.lower()
    assert ov.workers == 2
    names = sorted(p.name for p in (tmp_path / "lite").glob("*.png"))
    assert names and names == sorted(p.name for p in (tmp_path / "ov").glob("*.png"))
    for name in names:  # a float threshold model: the same labels on either runtime
        a, b = read_image(tmp_path / "lite" / name), read_image(tmp_path / "ov" / name)
        assert np.array_equal(a, b), name


def test_backend_auto_is_measured_once_where_segment_runs(
    models, wells, client, tmp_path, monkeypatch
) -> None:
    from edgeseg.runtime import selection

    calls = []

    def fake(path, *, threads=None, **kw):
        calls.append((Path(path).name, threads))
        return selection.Choice("litert", "measured here (test)")

    monkeypatch.setattr(selection, "choose_runtime", fake)
    summary = _segment(models["semantic"], [wells], tmp_path / "a", client, backend="auto")
    assert calls == [("bright.tflite", 1)]
    assert "litert" in summary.backend.lower() or "xnnpack" in summary.backend.lower()


def test_no_objects_writes_the_same_labels_and_no_table(models, wells, client, tmp_path) -> None:
    frame, _ = _mosaic()
    src = tmp_path / "mosaic.zarr"
    zarr.create_array(store=str(src), shape=frame.shape, chunks=(64, 64), dtype="uint16")[:] = frame
    full = _segment(models["instance"], [wells, src], tmp_path / "full", client)
    bare = _segment(models["instance"], [wells, src], tmp_path / "bare", client, objects=False)
    assert not bare.errors and bare.table is None
    assert not list((tmp_path / "bare").glob("objects.*"))
    assert all(r.objects == 0 for r in bare.inputs) and full.inputs[0].objects > 0
    for p in (tmp_path / "full").glob("*.png"):
        assert (tmp_path / "bare" / p.name).read_bytes() == p.read_bytes()
    a = zarr.open_array(store=str(tmp_path / "full" / "mosaic.zarr"), mode="r")[:]
    b = zarr.open_array(store=str(tmp_path / "bare" / "mosaic.zarr"), mode="r")[:]
    assert np.array_equal(a, b)
    again = _segment(models["instance"], [wells, src], tmp_path / "bare", client, objects=False)
    assert again.units_done == 0 and again.table is None


def test_killed_worker_tasks_are_retried(models, wells, client, tmp_path) -> None:
    from edgeseg.batch.tasks import FAULT_ENV

    marker = tmp_path / "died"
    # (os.environ's methods would pickle a copy of this process's environment)
    client.run(exec, f"import os; os.environ[{FAULT_ENV!r}] = {str(marker)!r}")
    try:
        summary = _segment(models["instance"], [wells], tmp_path / "out", client, frames_per_task=1)
    finally:
        client.run(exec, f"import os; os.environ.pop({FAULT_ENV!r}, None)")
    assert marker.exists()  # a worker died
    assert not summary.errors and summary.frames == 6
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


def test_corrupt_input_is_skipped_and_reported(models, wells, client, tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in sorted(wells.glob("*.png"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "broken2.tif").write_bytes(b"II*\x00garbage")
    stack = np.stack([np.asarray(_mosaic((64, 80), 32, seed=s)[0]) for s in range(3)])
    tifffile.imwrite(folder / "stack.tif", stack, photometric="minisblack")
    out = tmp_path / "out"
    address = client.scheduler.address
    result = runner.invoke(
        app,
        [
            "segment",
            str(models["instance"]),
            str(folder),
            "--out",
            str(out),
            "--scheduler",
            address,
        ],
    )
    line = one_line_error(result, "2 input(s) skipped", "broken.png", "broken2.tif")
    assert "Traceback" not in line
    assert len(list(out.glob("*.png"))) == 3
    labels = tifffile.imread(out / "stack.tif")
    assert labels.shape == stack.shape and labels.dtype == np.uint16
    for t in range(3):
        assert np.array_equal(labels[t], _whole_frame(models["instance"], stack[t]))
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert sum(len(r["errors"]) for r in summary["inputs"]) == 2


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["{missing}"], ("input not found",)),
        (["{cube}"], ("3-D array without OME axes", "--axes")),
        (["{cube}", "--axes", "TQX"], ("Y and X",)),
        (["{cube}", "--axes", "TYXZ"], ("4 letters for a 3-D array",)),
        (["{cube}", "--axes", "TWX"], ("use the letters",)),
        (["{text}"], ("unsupported input",)),
        (["{cube}", "--backend", "onnxruntime"], ("--backend onnxruntime runs .onnx",)),
        (["{cube}", "--backend", "tensorrt"], ("unknown --backend",)),
    ],
)
def test_bad_inputs_give_one_line_errors(models, tmp_path, args, needles) -> None:
    cube = tmp_path / "cube.zarr"
    zarr.create_array(store=str(cube), shape=(2, 16, 16), chunks=(1, 16, 16), dtype="uint8")
    (tmp_path / "notes.txt").write_text("hello")
    paths = {"missing": tmp_path / "nope", "cube": cube, "text": tmp_path / "notes.txt"}
    argv = [a.format(**paths) for a in args]
    result = runner.invoke(
        app, ["segment", str(models["semantic"]), *argv, "--out", str(tmp_path / "o")]
    )
    one_line_error(result, *needles)


def test_ome_zarr_axes_are_read(models, client, tmp_path) -> None:
    frames = np.stack([_mosaic((64, 96), 32, seed=s)[0] for s in range(2)])[:, None]  # TCYX
    root = tmp_path / "plate.ome.zarr"
    group = zarr.open_group(store=str(root), mode="w")
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
            {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]  # fmt: skip
    group.attrs["ome"] = {"multiscales": [{"axes": axes, "datasets": [{"path": "0"}]}]}
    group.create_array("0", shape=frames.shape, chunks=(1, 1, 32, 32), dtype="uint16")[:] = frames
    out = tmp_path / "out"
    summary = _segment(models["instance"], [root], out, client)
    assert not summary.errors
    got = zarr.open_array(store=str(out / "plate.ome.zarr"), mode="r")
    assert got.shape == (2, 64, 96) and got.chunks == (1, 32, 32)
    for t in range(2):
        _same_objects(_whole_frame(models["instance"], frames[t, 0]), np.asarray(got[t]))


def test_local_cluster_runs_without_sub_second_diagnostics() -> None:
    """The local cluster's workers take Dask's batch settings (event-loop ticks and memory
    checks each second) and still enforce nothing less than before: they run tasks."""
    import dask

    from edgeseg.batch.cluster import batch_config, open_client

    with open_client(workers=1) as (client, info):
        assert info.workers == 1
        got = client.run(lambda: dask.config.get("distributed.admin.tick.interval"))
        assert list(got.values()) == ["1s"]
        interval = client.run(lambda: dask.config.get("distributed.worker.memory.monitor-interval"))
        assert list(interval.values()) == ["1s"]
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert dask.config.get("distributed.admin.tick.interval") == "20ms"  # only that cluster
    assert batch_config(False)["distributed.worker.profile.enabled"] is False
    assert "distributed.worker.profile.enabled" not in batch_config(True)
