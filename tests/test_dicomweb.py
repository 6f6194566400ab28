"""A real PACS: Orthanc with its DICOMweb plugin, started on a free loopback port with a
throw-away storage folder and authentication on; `segment dicomweb://…` pulls a study,
segments it and stores the SEG back. Skips cleanly without Orthanc (Debian: orthanc,
orthanc-dicomweb)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import ct_series, window_model
from helpers import one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.dicom.web import parse_dicomweb
from edgeseg.errors import DataError

pydicom = pytest.importorskip("pydicom")
requests = pytest.importorskip("requests")
runner = CliRunner()

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "edgeseg", "s3cret-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    binary = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )
    if binary is None or not PLUGIN.exists():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {
        "Name": "edgeseg-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "wb")  # noqa: SIM115 (closed after the process)
    proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(f"{base}/system", auth=(USER, PASSWORD), timeout=2)
                if r.ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-300:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return window_model(tmp_path_factory.mktemp("dicomweb-model") / "bright.tflite")


def _upload(base: str, files: list[Path]) -> None:
    for f in files:
        r = requests.post(f"{base}/instances", data=f.read_bytes(), auth=(USER, PASSWORD))
        r.raise_for_status()


def _series_modalities(base: str, study: str) -> list[str]:
    r = requests.get(f"{base}/dicom-web/studies/{study}/series", auth=(USER, PASSWORD), timeout=10)
    if r.status_code == 204 or not r.content:
        return []
    r.raise_for_status()
    return sorted(pydicom.Dataset.from_json(x).Modality for x in r.json())


def _segment(model: Path, uri: str, out: Path, *extra: str):
    return runner.invoke(
        app,
        ["segment", str(model), uri, "--out", str(out), "--workers", "1", "--backend",
         "litert", "--dicom-seg", "--table-format", "csv", *extra],
    )  # fmt: skip


def test_uri_parsing() -> None:
    s = parse_dicomweb("dicomweb://127.0.0.1:8042/dicom-web?study=1.2.3")
    assert s.url == "http://127.0.0.1:8042/dicom-web" and s.study == "1.2.3"
    assert parse_dicomweb("dicomwebs://pacs/dw?study=1.2&series=1.2.4").url == "https://pacs/dw"
    with pytest.raises(DataError, match="not in the URI"):
        parse_dicomweb("dicomweb://u:p@pacs/dw?study=1.2")
    with pytest.raises(DataError, match="study"):
        parse_dicomweb("dicomweb://pacs/dw")


def test_segment_pulls_study_and_stores_seg(
    tmp_path: Path, orthanc: str, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("highdicom")
    pytest.importorskip("distributed")
    tifffile = pytest.importorskip("tifffile")
    files, _, masks = ct_series(tmp_path / "ct", n=3)
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    _upload(orthanc, files)
    host = orthanc.removeprefix("http://")
    uri = f"dicomweb://{host}/dicom-web?study={study}"
    monkeypatch.chdir(tmp_path)

    # Wrong password (from the environment): one line, nothing stored.
    monkeypatch.setenv("EDGESEG_DICOMWEB_USER", USER)
    monkeypatch.setenv("EDGESEG_DICOMWEB_PASSWORD", "wrong")
    r = _segment(model, uri, tmp_path / "bad", "--store")
    line = one_line_error(r, "401")
    assert "wrong" not in line and "wrong" not in r.output
    assert _series_modalities(orthanc, study) == ["CT"]

    # Unknown study: one line, nothing stored.
    monkeypatch.setenv("EDGESEG_DICOMWEB_PASSWORD", PASSWORD)
    r = _segment(model, f"dicomweb://{host}/dicom-web?study=1.2.3.999", tmp_path / "none")
    one_line_error(r, "1.2.3.999", "not found")
    assert _series_modalities(orthanc, study) == ["CT"]

    # Credentials from edgeseg.toml's [dicomweb] table (the environment cleared).
    monkeypatch.delenv("EDGESEG_DICOMWEB_USER")
    monkeypatch.delenv("EDGESEG_DICOMWEB_PASSWORD")
    (tmp_path / "edgeseg.toml").write_text(
        f'[dicomweb]\nuser = "{USER}"\npassword = "{PASSWORD}"\n'
    )
    out = tmp_path / "out"
    r = _segment(model, uri, out, "--store")
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    assert "Synthetic" not in r.output and "SYNTH" not in r.output  # no patient data
    assert "stored 1 SEG" in r.output
    assert _series_modalities(orthanc, study) == ["CT", "SEG"]
    stack = tifffile.imread(out / "CT-series3.tif")
    assert np.array_equal(stack, masks)
    # The stored SEG's masks are the run's, over the series Orthanc holds.
    from edgeseg.dicom.seg import read_segmentation

    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    assert np.array_equal(read_segmentation(out / "CT-series3.seg.dcm", uids), masks)


def test_dicomweb_table_in_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeseg.cli.configured import load_run_config
    from edgeseg.cli.run import run_command
    from edgeseg.dicom.web import credentials

    monkeypatch.chdir(tmp_path)
    for name in ("EDGESEG_DICOMWEB_USER", "EDGESEG_DICOMWEB_PASSWORD", "EDGESEG_DICOMWEB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "edgeseg.toml").write_text('headless = true\n[dicomweb]\ntoken = "t0k"\n')
    assert credentials().token == "t0k"
    assert "t0k" not in repr(credentials())
    monkeypatch.setenv("EDGESEG_DICOMWEB_USER", "u")  # the environment wins
    assert credentials().user == "u" and credentials().token is None
    # `run` still reads the file's own keys beside the table.
    assert load_run_config(run_command()).values()["headless"] is True
    (tmp_path / "edgeseg.toml").write_text('[dicomweb]\npasword = "x"\n')
    with pytest.raises(DataError, match="pasword"):
        load_run_config(run_command())
