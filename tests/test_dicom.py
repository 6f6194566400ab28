"""DICOM in (files, multi-frame files, series sorted by slice position, rescale, windows) and
DICOM SEG out, on pydicom's bundled test files and synthetic CT-like series with exact masks
(checked by reading them back with SimpleITK, an independent reader)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import ct_series, window_model
from helpers import one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.dicom import PRESETS, Window, apply_window, open_dicom, parse_window
from edgeseg.errors import DataError

pydicom = pytest.importorskip("pydicom")
runner = CliRunner()


def bundled(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not in the pydicom wheel")
    return str(path)


# --------------------------------------------------------------------------------------------
# Windows


def test_linear_window_follows_dicom_formula() -> None:
    w = Window(40, 400)
    x = np.array([-1000, 40 - 0.5 - 399 / 2, 40 - 0.5 - 399 / 2 + 1e-9, 39.5, 240, 241, 3000])
    y = apply_window(x, w)
    # PS3.3 C.11.2.1.2.1 onto 0..65535
    assert y[0] == 0 and y[1] == 0
    assert y[3] == round(0.5 * 65535)
    assert y[-2] == 65535 and y[-1] == 65535
    assert y.dtype == np.uint16 and np.all(np.diff(y.astype(int)) >= 0)


def test_window_parsing() -> None:
    assert parse_window("40,400") == Window(40, 400)
    assert parse_window("ct-lung") == Window(*PRESETS["ct-lung"])
    assert parse_window("file") == "file"
    assert parse_window(None) is None
    with pytest.raises(DataError, match="preset"):
        parse_window("lungs")
    with pytest.raises(DataError, match="width"):
        parse_window("40,0")


# --------------------------------------------------------------------------------------------
# Reading


def test_series_sorted_by_position_with_rescale(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    _, hu, masks = ct_series(tmp_path / "ct", n=5)
    # An independent reader (SimpleITK/GDCM) finds the same HU volume in the same order.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    image = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(image), hu)
    source = open_dicom(tmp_path / "ct", parse_window("0,200"))
    assert len(source) == 5
    assert [source.name(i) for i in range(5)] == [f"CT-series3_slice{i:04d}" for i in range(5)]
    for i in range(5):
        frame = source.read(i)
        assert frame.dtype == np.uint16
        assert np.array_equal(frame > 32767, masks[i] > 0)  # rescale applied, then windowed
        assert source.frame_geometry(i).spacing_mm == (0.7, 0.7)
    assert "Synthetic" not in source.description and "SYNTH" not in source.description


def test_file_window_and_bundled_files() -> None:
    ct = open_dicom(bundled("CT_small.dcm"))  # its own window, 128x128 int16 with rescale
    frame = ct.read(0)
    assert frame.shape == (128, 128) and frame.dtype == np.uint16
    soft = open_dicom(bundled("CT_small.dcm"), Window(40, 400)).read(0)
    assert not np.array_equal(frame, soft)
    multi = open_dicom(bundled("SC_rgb_rle_2frame.dcm"))
    assert len(multi) == 2 and multi.name(1) == "SC_rgb_rle_2frame.dcm#frame1"
    assert multi.read(1).shape == (100, 100, 3)
    j2k = open_dicom(bundled("MR_small_jp2klossless.dcm")).read(0)
    raw = open_dicom(bundled("MR_small.dcm")).read(0)
    assert np.array_equal(j2k, raw)  # a compressed syntax decodes to the same frame


# --------------------------------------------------------------------------------------------
# Bad DICOM: one-line errors naming the file


def _copy(src: str, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return window_model(tmp_path_factory.mktemp("dicom-model") / "bright.tflite")


def _run(model: Path, source: Path | str, masks: Path, *extra: str):
    return runner.invoke(
        app,
        ["run", str(model), "--source", str(source), "--headless", "--save-masks", str(masks),
         "--backend", "litert", *extra],
    )  # fmt: skip


def test_bad_dicom_one_line_errors(tmp_path: Path, model: Path) -> None:
    truncated = _copy(bundled("MR_truncated.dcm"), tmp_path / "truncated.dcm")
    r = _run(model, truncated, tmp_path / "m1")
    one_line_error(r, "truncated.dcm", "truncated")
    nopix = _copy(bundled("rtplan.dcm"), tmp_path / "plan.dcm")
    one_line_error(_run(model, nopix, tmp_path / "m2"), "plan.dcm", "no pixel data")
    # Mixed sizes in one series
    files, _, _ = ct_series(tmp_path / "mixed", n=3)
    odd = pydicom.dcmread(files[1])
    odd.Rows, odd.Columns = 32, 32
    odd.PixelData = np.zeros((32, 32), np.uint16).tobytes()
    odd.save_as(files[1])
    one_line_error(_run(model, tmp_path / "mixed", tmp_path / "m3"), files[1].name, "mixed sizes")
    # A transfer syntax no installed decoder reads (MPEG-2 video)
    files, _, _ = ct_series(tmp_path / "mpeg", n=1)
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # video: no image decoder
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\xff\x0a" + b"\0" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "mpeg.dcm", enforce_file_format=True)
    one_line_error(
        _run(model, tmp_path / "mpeg.dcm", tmp_path / "m4"), "mpeg.dcm", "transfer syntax"
    )


# --------------------------------------------------------------------------------------------
# run / segment --dicom-seg


def test_run_series_masks_by_position(tmp_path: Path, model: Path) -> None:
    pytest.importorskip("cv2")
    _, _, masks = ct_series(tmp_path / "ct", n=4)
    r = _run(model, tmp_path / "ct", tmp_path / "masks", "--objects", str(tmp_path / "o.csv"))
    assert r.exit_code == 0, r.output
    import csv

    rows = list(csv.DictReader((tmp_path / "o.csv").read_text().splitlines()))
    assert [r["name"] for r in rows] == sorted(r["name"] for r in rows)  # by slice position
    assert rows and rows[0]["name"] == "CT-series3_slice0000"
    for row in rows:  # areas from the files' 0.7 mm pixel spacing
        assert float(row["area_um2"]) == pytest.approx(int(row["area_px"]) * 700.0**2, rel=1e-3)
    from edgeseg.imageio import read_image

    for i in range(4):
        got = read_image(tmp_path / "masks" / f"CT-series3_slice{i:04d}.png")
        assert np.array_equal(got, masks[i])  # exact, in slice order
    # A window that puts everything above the centre: the model's own window matters.
    r = _run(model, tmp_path / "ct", tmp_path / "masks2", "--window", "-200,10")
    assert r.exit_code == 0, r.output
    assert read_image(tmp_path / "masks2" / "CT-series3_slice0000.png").all()
    assert "Synthetic" not in r.output and "SYNTH" not in r.output


def test_segment_dicom_seg_equals_run_masks(tmp_path: Path, model: Path) -> None:
    pytest.importorskip("highdicom")
    pytest.importorskip("distributed")
    tifffile = pytest.importorskip("tifffile")
    files, _, masks = ct_series(tmp_path / "ct", n=4)
    r = _run(model, tmp_path / "ct", tmp_path / "runmasks")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        ["segment", str(model), str(tmp_path / "ct"), "--out", str(out), "--workers", "1",
         "--backend", "litert", "--dicom-seg", "--table-format", "csv"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    stack = tifffile.imread(out / "ct.tif")
    assert np.array_equal(stack, masks)
    from edgeseg.dicom.seg import read_segmentation
    from edgeseg.imageio import read_image

    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    seg = read_segmentation(out / "ct.seg.dcm", uids)
    for i in range(4):
        assert np.array_equal(
            seg[i], read_image(tmp_path / "runmasks" / f"CT-series3_slice{i:04d}.png")
        )
    ds = pydicom.dcmread(out / "ct.seg.dcm")
    assert ds.Modality == "SEG"
    refs = ds.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == pydicom.dcmread(files[0]).SeriesInstanceUID
    # The objects table: rows named by slice, areas from the pixel spacing (0.7 mm).
    import csv

    rows = list(csv.DictReader((out / "objects.csv").read_text().splitlines()))
    assert rows and all(r["name"].startswith("CT-series3_slice") for r in rows)
    first = rows[0]
    assert float(first["area_um2"]) == pytest.approx(int(first["area_px"]) * 700.0**2, rel=1e-3)
    # The series' volume: voxels x 0.7 mm x 0.7 mm x 2.5 mm (slice distance).
    import json

    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["inputs"]
    expected = float(masks.sum()) * 0.7 * 0.7 * 2.5
    assert entry["volumes_mm3"]["CT-series3 foreground"] == pytest.approx(expected, rel=1e-6)
    assert "mm³" in r.output
    text = (out / "objects.csv").read_text() + (out / "summary.json").read_text()
    assert "Synthetic" not in text and "SYNTH" not in text and "19700101" not in text


@pytest.mark.slow
def test_convert_calib_records_window(tmp_path: Path, tiny_unet: Path) -> None:
    pytest.importorskip("tensorflow")
    ct_series(tmp_path / "ct", n=3, size=(32, 32))
    out = tmp_path / "build"
    r = runner.invoke(
        app,
        ["convert", str(tiny_unet), "--fp16", "--calib", str(tmp_path / "ct"), "--window",
         "ct-soft-tissue", "--out", str(out), "-n", "4"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from edgeseg.core.tflite_file import read_metadata

    (artefact,) = out.glob("*fp16*.tflite")
    assert read_metadata(artefact.read_bytes()).dicom_window == "40,400"


def _pooled_dice(output: str) -> float:
    import re

    (line,) = [ln for ln in output.splitlines() if "pooled" in ln]
    return float(re.findall(r"\d+\.\d+", line.split("pooled", 1)[1])[0])


def test_eval_on_dicom_images(tmp_path: Path, model: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    files, _, masks = ct_series(tmp_path / "set" / "images", n=3)
    (tmp_path / "set" / "masks").mkdir()
    for f, m in zip(files, masks, strict=True):
        cv2.imwrite(str(tmp_path / "set" / "masks" / f"{f.stem}.png"), m * 255)
    args = ["eval", str(model), "--data", str(tmp_path / "set"), "--backend", "litert"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "(3 images)" in r.output
    assert _pooled_dice(r.output) == 1.0, r.output
    # Another window (everything above its top): the score drops, so the window is applied.
    r = runner.invoke(app, [*args, "--window", "-200,10"])
    assert r.exit_code == 0, r.output
    assert _pooled_dice(r.output) < 0.9, r.output


def test_bundled_ct_through_run_and_segment_dicom_seg(tmp_path: Path, model: Path) -> None:
    pytest.importorskip("highdicom")
    pytest.importorskip("distributed")
    ct = _copy(bundled("CT_small.dcm"), tmp_path / "CT_small.dcm")
    r = _run(model, ct, tmp_path / "masks", "--window", "ct-soft-tissue")
    assert r.exit_code == 0, r.output
    from edgeseg.dicom.seg import read_segmentation
    from edgeseg.imageio import read_image

    run_mask = read_image(tmp_path / "masks" / "CT_small.png")
    assert 0 < run_mask.sum() < run_mask.size
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        ["segment", str(model), str(ct), "--out", str(out), "--workers", "1", "--backend",
         "litert", "--dicom-seg", "--window", "ct-soft-tissue", "--table-format", "csv"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    uid = str(pydicom.dcmread(ct).SOPInstanceUID)
    seg = read_segmentation(out / "CT_small.seg.dcm", [uid])
    assert np.array_equal(seg[0], run_mask)


def test_calib_build_from_series(tmp_path: Path, tiny_unet: Path) -> None:
    pytest.importorskip("tensorflow")
    ct_series(tmp_path / "ct", n=3, size=(32, 32))
    out = tmp_path / "set.npz"
    r = runner.invoke(
        app,
        ["calib", "build", str(tmp_path / "ct"), "--model", str(tiny_unet), "-n", "3",
         "--window", "ct-lung", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "DICOM CT series CT-series3" in r.output
    tiles = np.load(out)
    first = tiles[tiles.files[0]]
    assert first.shape[0] == 3 and float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_segment_fractional_seg(tmp_path: Path, model: Path) -> None:
    pytest.importorskip("highdicom")
    pytest.importorskip("distributed")
    files, _, masks = ct_series(tmp_path / "ct", n=3)
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        ["segment", str(model), str(tmp_path / "ct"), "--out", str(out), "--workers", "1",
         "--backend", "litert", "--dicom-seg", "--dicom-seg-type", "fractional",
         "--table-format", "csv"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from edgeseg.dicom.seg import read_segmentation

    ds = pydicom.dcmread(out / "ct.seg.dcm")
    assert ds.SegmentationType == "FRACTIONAL"
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    fractions = read_segmentation(out / "ct.seg.dcm", uids)
    assert fractions.shape == (3, 64, 64, 1)
    assert np.array_equal(fractions[..., 0] > 0.5, masks > 0)  # the model's threshold
    # Probabilities, not a copy of the labels: sigmoid(±5) is neither 0 nor 1.
    assert not np.isin(fractions, (0.0, 1.0)).all()


def test_without_the_dicom_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edgeseg.errors import MissingDependencyError

    ct = _copy(bundled("CT_small.dcm"), tmp_path / "CT_small.dcm")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as on a Pi with edgeseg[runtime] only
    with pytest.raises(MissingDependencyError, match=r"edgeseg\[dicom\]"):
        open_dicom(ct)
