from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.core.metadata import (
    SCHEMA_VERSION,
    ModelMetadata,
    infer_metadata,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from edgeseg.errors import ModelError


def test_round_trip_through_json(tmp_path: Path) -> None:
    meta = ModelMetadata(
        input_size=(256, 320),
        channels=3,
        channel_order="RGB",
        normalization="percentile",
        num_classes=3,
        class_names=("bg", "nucleus", "edge"),
        foreground_value=None,
        output_border=4,
        pixel_size_um=0.65,
        provenance={"trained_on": "x"},
    )
    assert ModelMetadata.from_json(meta.to_json()) == meta
    path = write_sidecar(meta, tmp_path / "unet.keras")
    assert path.name == "unet.edgeseg.json"
    assert read_sidecar(tmp_path / "unet.keras") == meta
    assert meta.output_size == (248, 312)


def test_sidecar_names(tmp_path: Path) -> None:
    (tmp_path / "saved").mkdir()
    assert sidecar_path(tmp_path / "saved") == tmp_path / "saved.edgeseg.json"
    assert sidecar_path(tmp_path / "m.h5") == tmp_path / "m.edgeseg.json"
    assert read_sidecar(tmp_path / "none.keras") is None


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"channels": 2}, "channels"),
        ({"channels": 3}, "channel_order"),
        ({"normalization": "zscore"}, "normalization"),
        ({"threshold": 1.5}, "threshold"),
        ({"percentiles": (50.0, 10.0)}, "percentiles"),
        ({"num_classes": 3}, "class name"),
        ({"output_border": 200}, "output_border"),
        ({"input_size": (0, 10)}, "input_size"),
    ],
)
def test_invalid_values_are_refused(changes: dict, needle: str) -> None:
    base = {"input_size": (256, 256)}
    with pytest.raises(ModelError, match=needle):
        ModelMetadata(**{**base, **changes})


def test_other_schema_version_and_garbage_are_clear_errors(tmp_path: Path) -> None:
    d = ModelMetadata(input_size=(64, 64)).to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ModelError, match="schema version"):
        ModelMetadata.from_dict(d)
    d["schema_version"] = SCHEMA_VERSION
    d["colour"] = "blue"
    with pytest.raises(ModelError, match="unknown field"):
        ModelMetadata.from_dict(d)
    (tmp_path / "m.edgeseg.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"m\.edgeseg\.json"):
        read_sidecar(tmp_path / "m.keras")


def test_infer_from_shapes_with_defaults_and_flags() -> None:
    meta = infer_metadata((None, 128, 128, 1), (None, 128, 128, 1))
    assert (meta.input_size, meta.channels, meta.normalization) == ((128, 128), 1, "scale")
    assert meta.num_classes == 1 and meta.foreground_value == 255
    valid = infer_metadata((None, 572, 572, 3), (None, 388, 388, 4), threshold=0.3)
    assert valid.output_border == 92 and valid.num_classes == 4
    assert valid.channel_order == "RGB" and valid.foreground_value is None
    dynamic = infer_metadata((None, None, None, 1), (None, None, None, 1), input_size=(96, 96))
    assert dynamic.input_size == (96, 96)
    with pytest.raises(ModelError, match="--input-size"):
        infer_metadata((None, None, None, 1), (None, None, None, 1))
    with pytest.raises(ModelError, match="centred crop"):
        infer_metadata((None, 128, 128, 1), (None, 100, 120, 1))
    with pytest.raises(ModelError, match="1 or 3"):
        infer_metadata((None, 64, 64, 2), (None, 64, 64, 1))
