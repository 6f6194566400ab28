"""`edgeseg report`: the comparison table against the JSON it came from, speed-ups, deviations
from a profile's reference figures, the HTML page in headless Chromium, and bad reports."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import one_line_error, probe_model
from typer.testing import CliRunner

from edgeseg.bench.report import _ms
from edgeseg.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real reports of one model name in two precisions (`tiny_fp32`, `tiny_int8`)."""
    root = tmp_path_factory.mktemp("reports")
    a = probe_model(root / "tiny_fp32.tflite", recipe="fp32")
    b = probe_model(root / "tiny_int8.tflite", recipe="int8", precision="int8")
    out = root / "out"
    result = runner.invoke(
        app,
        ["bench", str(a), str(b), "--runs", "5", "--warmup", "1", "--threads", "1",
         "--backend", "litert", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _table(markdown: str) -> list[dict[str, str]]:
    """The first Markdown table as dicts."""
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| device | model |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, [c.strip() for c in ln.strip("|").split("|")], strict=True)))
    return rows


def _load(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def test_table_matches_the_json_it_came_from(reports: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["report", str(reports), "--out", str(out)])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert markdown in result.stdout
    rows = _table(markdown)
    data = _load(reports)
    assert len(rows) == len(data) == 2
    by_label = {r["precision"]: r for r in rows}
    for rep in data:
        row = by_label[rep["model"]["label"]]
        lat = rep["latency_ms"]
        assert row["device"] == rep["device"]["slug"]
        assert row["model"] == rep["model"]["name"] == "tiny"
        assert row["delegate"] == rep["runtime"]["delegate"]
        assert row["threads"] == "1"
        assert row["input"] == "8x8"
        assert (row["p50 ms"], row["p90 ms"], row["p99 ms"]) == (
            _ms(lat["p50"]),
            _ms(lat["p90"]),
            _ms(lat["p99"]),
        )
        assert row["inferences/s"] == f"{rep['throughput']['inferences_per_s']:.1f}"
        assert row["measured"] == rep["created"][:10]
    fp32, int8 = (next(r for r in data if r["model"]["label"] == k) for k in ("fp32", "int8"))
    speedup = fp32["latency_ms"]["p50"] / int8["latency_ms"]["p50"]
    assert by_label["int8"]["vs fp32"] == f"{speedup:.2f}x"
    assert by_label["fp32"]["vs fp32"] == "1.00 (base)"
    assert f"| {speedup:.2f}x |" in markdown.split("## Speed-up over fp32")[1]


def test_deviation_from_a_profiles_reference(reports: Path, tmp_path: Path) -> None:
    """A 256² int8 report of a device measured as x86-64 meets the DESIGN.md figure
    (edgeseg U-Net int8, 5.8 ms) of that profile: the ratio is p50 / 5.8."""
    rep = copy.deepcopy(next(r for r in _load(reports) if r["model"]["label"] == "int8"))
    rep["model"]["input"]["shape"] = [1, 256, 256, 1]
    rep["device"]["profile"] = "x86-64"
    rep["device"]["slug"] = "some-pc"
    rep["latency_ms"].update(p50=11.6, p90=12.0, p99=13.0, min=11.0, max=14.0, mean=11.7)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "one.json").write_text(json.dumps(rep))
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    section = (folder / "report.md").read_text().split("## Deviation")[1]
    line = next(ln for ln in section.splitlines() if "ranges equalized" in ln)
    assert "| 11.6 |" in line and "| 5.8 ms |" in line and "| 2.00 |" in line
    assert "DESIGN.md" in line
    assert "| 1.68 |" in section  # against the int8-legacy figure, 6.9 ms


def test_html_is_self_contained_and_renders_in_chromium(reports: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert runner.invoke(app, ["report", str(reports), "--out", str(out)]).exit_code == 0
    page = (out / "report.html").read_text()
    lowered = page.lower()
    for asset in ("<script", "<link", " src=", "url(", "@import", "<img"):
        assert asset not in lowered, asset
    assert page.count("<svg") == 1 and "</svg>" in page
    assert page.count("<rect") >= 2 + 3  # two bars and the three legend swatches
    for rep in _load(reports):
        assert _ms(rep["latency_ms"]["p50"]) in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory(prefix="edgeseg-chromium-") as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1200,900", (out / "report.html").resolve().as_uri()],
            capture_output=True, timeout=180, check=False,
        )  # fmt: skip
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(shot))
    assert image.shape[:2] == (900, 1200)
    # The plot was drawn: pixels of the fp32 (#4e79a7) and int8 (#59a14f) bars are there.
    for bgr in ((167, 121, 78), (79, 161, 89)):
        close = (abs(image.astype(int) - bgr).max(axis=2) <= 12).sum()
        assert close > 200, bgr


def test_report_of_another_schema_version_is_one_line_error(reports: Path, tmp_path: Path) -> None:
    rep = _load(reports)[0]
    rep["schema"] = "edgeseg.bench/2"
    (tmp_path / "future.json").write_text(json.dumps(rep))
    result = runner.invoke(app, ["report", str(tmp_path)])
    one_line_error(result, "future.json", "edgeseg.bench/2", "edgeseg.bench/1")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"schema": "edgeseg.bench/1", "created": ', "not valid JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        ('{"latency_ms": {}}', "no 'schema' field"),
        ("", "not valid JSON"),
    ],
)
def test_malformed_report_is_one_line_error(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "broken.json").write_text(text)
    one_line_error(runner.invoke(app, ["report", str(tmp_path)]), "broken.json", needle)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r["latency_ms"].pop("p99"), "latency_ms.p99"),
        (lambda r: r["latency_ms"].update(p50="fast"), "latency_ms.p50"),
        (lambda r: r["model"].update(precision="int4"), "int4"),
        (lambda r: r["model"]["input"].update(shape=[8, 8]), "model.input.shape"),
        (lambda r: r.pop("device"), "device.slug"),
    ],
)
def test_report_missing_fields_is_one_line_error(
    reports: Path, tmp_path: Path, edit, needle: str
) -> None:
    rep = _load(reports)[0]
    edit(rep)
    (tmp_path / "edited.json").write_text(json.dumps(rep))
    one_line_error(runner.invoke(app, ["report", str(tmp_path)]), "edited.json", needle)


def test_no_reports_is_one_line_error(tmp_path: Path) -> None:
    one_line_error(runner.invoke(app, ["report", str(tmp_path)]), "no reports", "edgeseg bench")
    one_line_error(runner.invoke(app, ["report", str(tmp_path / "nope")]), "nope", "not found")


def test_newest_report_per_configuration(reports: Path, tmp_path: Path) -> None:
    from edgeseg.bench.report import collect_reports, compare

    rep = next(r for r in _load(reports) if r["model"]["label"] == "fp32")
    old = copy.deepcopy(rep)
    old["created"] = "2000-01-01T00:00:00Z"
    old["latency_ms"]["p50"] = 999.0
    (tmp_path / "a.json").write_text(json.dumps(rep))
    (tmp_path / "b.json").write_text(json.dumps(old))
    comp = compare(collect_reports([tmp_path]))
    (row,) = comp.rows
    assert row.p50 == rep["latency_ms"]["p50"] and row.older == 1


def test_committed_reports_render(tmp_path: Path) -> None:
    """The worked example under devices/reports/: every table row is its newest JSON."""
    root = Path(__file__).resolve().parents[1] / "devices" / "reports"
    files = sorted(root.rglob("*.json")) if root.is_dir() else []
    if not files:
        pytest.skip("no committed reports under devices/reports/")
    result = runner.invoke(app, ["report", str(root), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    newest: dict[tuple, dict] = {}
    for rep in (json.loads(p.read_text()) for p in files):
        key = (
            rep["device"]["slug"],
            rep["model"]["name"],
            rep["model"]["label"],
            rep["runtime"]["delegate"],
        )
        if key not in newest or rep["created"] > newest[key]["created"]:
            newest[key] = rep
    rows = _table((tmp_path / "report.md").read_text())
    assert len(rows) == len(newest)
    for row in rows:
        rep = newest[(row["device"], row["model"], row["precision"], row["delegate"])]
        assert row["p50 ms"] == _ms(rep["latency_ms"]["p50"])
        assert row["p99 ms"] == _ms(rep["latency_ms"]["p99"])
    assert (tmp_path / "report.html").is_file()
