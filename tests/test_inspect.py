"""`edgeseg inspect`: a good model in text and JSON, and every bad file a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import HEAVY, META, imported_after, imported_by_cli, one_line_error, tflite_bytes
from typer.testing import CliRunner

from edgeseg.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgeseg.core.tflite_file import embed_metadata

    root = tmp_path_factory.mktemp("inspect")
    contents = {
        "with_meta.tflite": embed_metadata(tflite_bytes("int8"), META, {"recipe": "int8-cpu"}),
        "plain.tflite": tflite_bytes("float"),
        "dense.tflite": tflite_bytes("dense"),
        "truncated.tflite": tflite_bytes("float")[:5000],
        "garbage.tflite": bytes(range(256)) * 8,
        "empty.tflite": b"",
        "unet.keras": b"PK\x03\x04" + bytes(100),
    }
    for name, data in contents.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in contents}


def test_inspect_help_imports_no_heavy_library() -> None:
    loaded = imported_by_cli(["inspect", "--help"])
    assert "typer" in loaded
    assert not [m for m in HEAVY if m in loaded]
    assert not [m for m in HEAVY if m in imported_after("import edgeseg.cli.inspect")]


def test_inspect_text(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["inspect", str(files["with_meta.tflite"])])
    assert result.exit_code == 0, result.output
    text = result.stdout
    for needle in ("ai-edge-litert", "int8", "0.0039", "-128", "CONV_2D", "CONCATENATION"):
        assert needle in text, needle
    assert "threshold" in text and "0.4" in text and "int8-cpu" in text
    assert "(-1, 32, 32, 1)" in text  # the dynamic batch in the file is reported

    result = runner.invoke(app, ["inspect", str(files["plain.tflite"])])
    assert result.exit_code == 0, result.output
    assert "float32" in result.stdout
    assert "none: run/eval will infer it from the tensors" in " ".join(result.stdout.split())


def test_inspect_json(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["inspect", str(files["with_meta.tflite"]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runtime"].startswith("ai-edge-litert")
    assert report["input"]["shape"] == [1, 32, 32, 1]
    assert report["input"]["shape_signature"] == [-1, 32, 32, 1]
    assert report["input"]["dtype"] == "int8" and report["input"]["zero_point"] == -128
    assert report["output"]["quantized"] is True
    assert report["ops"]["CONV_2D"] == 11
    assert report["metadata"] == META.to_dict()
    assert report["embedded"] == {"recipe": "int8-cpu"}
    assert "edgeseg" in report["metadata_entries"]

    plain = json.loads(runner.invoke(app, ["inspect", str(files["plain.tflite"]), "--json"]).stdout)
    assert plain["metadata"] is None and plain["embedded"] is None
    assert plain["input"]["dtype"] == "float32" and plain["input"]["scale"] == 0.0


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("missing.tflite", ["missing.tflite", "not found"]),
        ("garbage.tflite", ["garbage.tflite", "is not a valid .tflite model"]),
        ("truncated.tflite", ["truncated.tflite", "truncated or corrupt"]),
        ("empty.tflite", ["empty.tflite", "empty"]),
        ("unet.keras", ["unet.keras", "zip archive"]),
        ("dense.tflite", ["dense.tflite", "not an image-to-mask model"]),
    ],
)
def test_inspect_bad_files(files: dict[str, Path], name: str, needles: list[str]) -> None:
    path = files.get(name, files["plain.tflite"].parent / name)
    result = runner.invoke(app, ["inspect", str(path)])
    one_line_error(result, *needles)
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    one_line_error(result, *needles)
    assert result.stdout == ""
