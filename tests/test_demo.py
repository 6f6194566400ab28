"""`edgeseg demo --quick` end to end: every promised file, the HTML page in Chromium, resume."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app

pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")
cv2 = pytest.importorskip("cv2")
runner = CliRunner()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_promised_file(demo_dir: Path) -> None:
    d = demo_dir
    assert len(list((d / "data" / "train" / "images").iterdir())) == 40
    assert (d / "model" / "unet.keras").is_file() and (d / "model" / "unet.edgeseg.json").is_file()
    for recipe in ("fp32", "fp16", "int8", "int8-edgetpu"):
        assert (d / "build" / f"unet_{recipe}.tflite").is_file(), recipe
    parity = json.loads((d / "build" / "unet_parity.json").read_text())
    recipes = {a["recipe"]: a for a in parity["artefacts"]}
    assert recipes["int8"]["agreement"]["dice"] >= 0.95
    assert recipes["int8-edgetpu"]["edgetpu"]["preflight"]
    reports = list((d / "bench").rglob("*.json"))
    assert len(reports) == 4  # every artefact measured
    cap = cv2.VideoCapture(str(d / "run" / "overlay.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    with open(d / "run" / "stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert frames == len(rows) == len(list((d / "run" / "masks").iterdir())) == 24
    summary = json.loads((d / "run" / "summary.json").read_text())
    assert summary["frames"] == 24 and summary["dropped"] == 0
    md = (d / "report.md").read_text()
    assert "## Parity" in md and "int8" in md and "edgeseg run" in md
    page = (d / "report.html").read_text()
    assert 'id="parity"' in page and "data:image/png;base64," in page and "<svg" in page


def test_report_page_renders_in_chromium(demo_dir: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    url = (demo_dir / "report.html").resolve().as_uri()
    shot = tmp_path / "page.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] == 1200
    assert image.std() > 10  # something was drawn, not a blank page
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert 'id="parity"' in dom and "int8" in dom and 'id="overlays"' in dom


def test_run_again_resumes_and_completes(demo_dir: Path) -> None:
    result = runner.invoke(app, ["demo", "--quick", "--out", str(demo_dir)])
    assert result.exit_code == 0, result.output
    assert "complete already" in result.output


def test_interrupted_demo_resumes_and_other_settings_start_clean(tmp_path: Path) -> None:
    from edgeseg.demo import STATE, DemoSettings, _prepare_folder

    out = tmp_path / "d"
    out.mkdir()
    settings = DemoSettings(quick=True)
    (out / STATE).write_text(
        json.dumps({"settings": settings.to_dict(), "done": ["samples", "train"]})
    )
    (out / "data").mkdir()
    said: list[str] = []
    assert _prepare_folder(out, settings, said.append) == ["samples", "train"]
    assert (out / "data").is_dir() and "resuming" in said[0]
    # Another setting: never mix, start clean.
    said.clear()
    assert _prepare_folder(out, DemoSettings(quick=False), said.append) == []
    assert not (out / "data").exists() and "afresh" in said[0]
    # A state file that cannot be read: start clean too.
    (out / STATE).write_text("{broken")
    assert _prepare_folder(out, settings, said.append) == []


def test_bad_output_folders(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_line_error(runner.invoke(app, ["demo", "--quick", "--out", str(a_file)]), "is a file")
    one_line_error(
        runner.invoke(app, ["demo", "--quick", "--out", str(a_file / "sub")]), "cannot write"
    )
    busy = tmp_path / "mine"
    busy.mkdir()
    (busy / "thesis.docx").write_text("precious")
    one_line_error(
        runner.invoke(app, ["demo", "--quick", "--out", str(busy)]), "not an edgeseg demo folder"
    )
    assert (busy / "thesis.docx").read_text() == "precious"
