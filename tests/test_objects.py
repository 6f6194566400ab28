"""`edgeseg run --objects`: one CSV row per object per frame, measured on the raw frame."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import THREE, instance_model, one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.core.instances import InstanceSpec
from edgeseg.core.metadata import ModelMetadata
from edgeseg.errors import DataError
from edgeseg.runtime.sinks import OBJECT_CSV_FIELDS, FrameSink, ObjectSink, frame_objects

cv2 = pytest.importorskip("cv2")
runner = CliRunner()
INSTANCES = ModelMetadata(input_size=(32, 32), instances=InstanceSpec().to_dict())
RENDERED = np.zeros((10, 12, 3), np.uint8)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _touching_instances() -> tuple[np.ndarray, np.ndarray]:
    """Three objects in a 10x12 frame: 1 and 2 touch, 3 sits in the bottom-right corner; the
    16-bit frame is 40000 + 100 y + x, so every mean is 40000 + 100 cy + cx."""
    ids = np.zeros((10, 12), np.int32)
    ids[2:5, 2:6] = 1  # 12 px, centroid (3, 3.5)
    ids[2:5, 6:8] = 2  # 6 px, touching 1, centroid (3, 6.5)
    ids[7:10, 9:12] = 3  # 9 px at the border, centroid (8, 10)
    y, x = np.indices(ids.shape)
    frame = (40000 + 100 * y + x).astype(np.uint16)
    return ids, frame


def test_instance_rows_exact_on_a_16_bit_frame(tmp_path: Path) -> None:
    ids, frame = _touching_instances()
    path = tmp_path / "objects.csv"
    with ObjectSink(path, INSTANCES, pixel_size_um=0.5) as sink:
        assert isinstance(sink, FrameSink) and sink.wants_frame
        sink.write(4, RENDERED, ids, {"frame": 4, "name": "A06_s6.tif"}, frame=frame)
        # Flushed per frame: readable before close.
        rows = _rows(path)
    assert list(rows[0]) == list(OBJECT_CSV_FIELDS)
    got = [
        (
            int(r["id"]), r["class"], int(r["area_px"]), float(r["area_um2"]),
            float(r["centroid_y"]), float(r["centroid_x"]),
            tuple(int(r[k]) for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")),
            float(r["mean_intensity"]), float(r["integrated_intensity"]), r["touches_border"],
        )
        for r in rows
    ]  # fmt: skip
    assert got == [
        (1, "foreground", 12, 3.0, 3.0, 3.5, (2, 2, 5, 6), 40303.5, 483642.0, "False"),
        (2, "foreground", 6, 1.5, 3.0, 6.5, (2, 6, 5, 8), 40306.5, 241839.0, "False"),
        (3, "foreground", 9, 2.25, 8.0, 10.0, (7, 9, 10, 12), 40810.0, 367290.0, "True"),
    ]
    assert {(r["frame"], r["name"]) for r in rows} == {("4", "A06_s6.tif")}


def test_without_a_pixel_size_or_a_frame_those_columns_stay_empty(tmp_path: Path) -> None:
    ids, _ = _touching_instances()
    path = tmp_path / "objects.csv"
    with ObjectSink(path, INSTANCES) as sink:
        sink.write(0, RENDERED, ids, {"frame": 0})  # a caller that gives no frame
        sink.write(1, RENDERED, np.zeros_like(ids), {"frame": 1})  # no objects: no rows
    rows = _rows(path)
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert {r["area_um2"] for r in rows} == {""} == {r["name"] for r in rows}
    assert {r["mean_intensity"] for r in rows} == {""} == {r["integrated_intensity"] for r in rows}


def test_semantic_objects_are_the_components_of_each_class() -> None:
    labels = np.zeros((10, 12), np.uint8)
    labels[1, 1] = labels[2, 2] = 1  # diagonal neighbours: one 8-connected object
    labels[5:7, 5:7] = 1
    labels[8, 0:3] = 2  # at the left edge
    frame = np.zeros((10, 12, 3), np.uint16)
    frame[..., 0], frame[..., 1], frame[..., 2] = 300, 600, 60000  # RGB: the channel mean
    rows = frame_objects(labels, THREE, frame, pixel_size_um=2.0)
    got = [
        (r["id"], r["class"], r["area_px"], r["area_um2"], r["centroid_y"], r["centroid_x"],
         r["touches_border"], r["mean_intensity"], r["integrated_intensity"])
        for r in rows
    ]  # fmt: skip
    assert got == [
        (1, "nucleus", 2, 8.0, 1.5, 1.5, False, 20300.0, 40600.0),
        (2, "nucleus", 4, 16.0, 5.5, 5.5, False, 20300.0, 81200.0),
        (3, "membrane", 3, 12.0, 8.0, 1.0, True, 20300.0, 60900.0),
    ]
    # RGBA: the alpha channel is not an intensity.
    rgba = np.concatenate([frame, np.full((10, 12, 1), 65535, np.uint16)], axis=2)
    assert [r["mean_intensity"] for r in frame_objects(labels, THREE, rgba)] == [20300.0] * 3


def test_rotation_keeps_every_file_whole_and_within_the_bound(tmp_path: Path) -> None:
    ids, frame = _touching_instances()
    path = tmp_path / "objects.csv"
    with ObjectSink(path, INSTANCES, max_bytes=4000, file_bytes=1000) as sink:
        for i in range(40):
            sink.write(i, RENDERED, ids, {"frame": i}, frame=frame)
    files = sorted(tmp_path.glob("objects*.csv"))
    assert len(files) >= 3 and sum(p.stat().st_size for p in files) <= 4000 + 1000
    frames_seen = []
    for p in files:
        rows = _rows(p)
        assert rows and list(rows[0]) == list(OBJECT_CSV_FIELDS)
        # A frame's objects are never split over two files.
        per_frame = {}
        for r in rows:
            per_frame.setdefault(r["frame"], []).append(r["id"])
        assert all(v == ["1", "2", "3"] for v in per_frame.values())
        frames_seen += [int(f) for f in per_frame]
    assert frames_seen[-1] == 39


def test_objects_csv_removed_while_writing_stops_it_with_a_warning(tmp_path: Path) -> None:
    ids, frame = _touching_instances()
    path = tmp_path / "objects.csv"
    sink = ObjectSink(path, INSTANCES)
    sink.write(0, RENDERED, ids, {"frame": 0}, frame=frame)
    path.unlink()
    sink.write(1, RENDERED, ids, {"frame": 1}, frame=frame)  # never raises
    sink.write(2, RENDERED, ids, {"frame": 2}, frame=frame)
    sink.close()
    assert sink.stopped is not None and sink.stopped.startswith("objects CSV stopped:")
    assert sink.rows == 3 and len(sink.warnings) == 1 and "3 rows written" in sink.warnings[0]


def test_bad_objects_paths_and_pixel_sizes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        ObjectSink(tmp_path / "missing" / "objects.csv", INSTANCES)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        ObjectSink(tmp_path / "afile" / "objects.csv", INSTANCES)
    with pytest.raises(DataError, match="folder"):
        ObjectSink(tmp_path, INSTANCES)
    with pytest.raises(DataError, match="pixel size"):
        ObjectSink(tmp_path / "o.csv", INSTANCES, pixel_size_um=0.0)


# ---------------------------------------------------------------------------- edgeseg run


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    return instance_model(tmp_path_factory.mktemp("objects") / "instances.tflite", 64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 16-bit TIFFs of synthetic nuclei, named like plate wells."""
    import tifffile

    from edgeseg.samples import SyntheticStream

    root = tmp_path_factory.mktemp("wells")
    synth = SyntheticStream(size=(96, 128), seed=11, bit_depth=16)
    for name in ("A01_s1", "A02_s1", "B01_s2"):
        tifffile.imwrite(root / f"{name}.tif", synth.read()[0])
    return root


def test_run_objects_rows_match_the_labels_and_the_raw_frames(
    model: Path, folder: Path, tmp_path: Path
) -> None:
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.imageio import read_image
    from edgeseg.runtime.backends import open_model

    objects, frames = tmp_path / "objects.csv", tmp_path / "frames.csv"
    args = ["run", str(model), "--source", str(folder), "--headless", "--workers", "1"]
    args += ["--backend", "litert"]  # the library call's runtime: the file's own
    args += ["--objects", str(objects), "--csv", str(frames), "--pixel-size", "0.65"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(objects) in result.stdout
    rows, per_frame = _rows(objects), _rows(frames)
    opened = open_model(model)
    backend, meta = opened.backend, opened.meta
    segmenter = Segmenter(backend, meta)
    total = 0
    for frame_row in per_frame:
        i = int(frame_row["frame"])
        mine = [r for r in rows if int(r["frame"]) == i]
        assert len(mine) == int(frame_row["objects"])  # the count the HUD and CSV show
        name = mine[0]["name"]
        raw = read_image(folder / name)
        assert raw.dtype == np.uint16
        expected = frame_objects(segmenter.labels(raw), meta, raw, 0.65)
        assert [int(r["id"]) for r in mine] == [e["id"] for e in expected]
        for r, e in zip(mine, expected, strict=True):
            assert int(r["area_px"]) == e["area_px"]
            assert float(r["area_um2"]) == pytest.approx(e["area_px"] * 0.65**2, abs=1e-4)
            assert float(r["mean_intensity"]) == pytest.approx(e["mean_intensity"], abs=1e-3)
            assert float(r["mean_intensity"]) > 255  # raw 16-bit values, not normalized ones
        total += len(mine)
    assert {r["name"] for r in rows} <= {"A01_s1.tif", "A02_s1.tif", "B01_s2.tif"}
    assert len(per_frame) == 3 and total > 3


def test_run_pixel_size_from_the_metadata(folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    model = instance_model(tmp_path / "calibrated.tflite", 64, pixel_size_um=0.5)
    objects = tmp_path / "objects.csv"
    args = ["run", str(model), "--source", str(folder / "A01_s1.tif"), "--headless"]
    result = runner.invoke(app, [*args, "--objects", str(objects)])
    assert result.exit_code == 0, result.output
    rows = _rows(objects)
    assert rows and all(float(r["area_um2"]) == int(r["area_px"]) * 0.25 for r in rows)


def test_run_objects_in_a_missing_folder_fails_before_the_source_opens(
    model: Path, tmp_path: Path
) -> None:
    # The camera does not exist either: the objects path is what must be named.
    missing = tmp_path / "nowhere" / "objects.csv"
    result = runner.invoke(
        app, ["run", str(model), "--camera", "97", "--headless", "--objects", str(missing)]
    )
    one_line_error(result, str(missing.parent), "does not exist")
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(
        app,
        ["run", str(model), "--camera", "97", "--headless", "--objects", f"{tmp_path}/afile/o.csv"],
    )
    one_line_error(result, "is not a folder")
    result = runner.invoke(
        app,
        ["run", str(model), "--camera", "97", "--headless", "--objects", str(tmp_path / "o.csv"),
         "--pixel-size", "-1"],
    )  # fmt: skip
    one_line_error(result, "--pixel-size")
    assert not (tmp_path / "o.csv").exists()
