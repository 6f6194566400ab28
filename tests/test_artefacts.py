"""`run` picks the artefact that fits the stream: a whole-frame sibling or the tiled model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import bright_model, one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.errors import DataError
from edgeseg.runtime.artefacts import candidates, choose, frame_size_suffix

runner = CliRunner()


def bright(path: Path, size: tuple[int, int], frame: tuple[int, int] | None = None, **meta):
    """:func:`bright_model` (exact foreground whatever the tiling) with input ``size`` and,
    for a whole-frame artefact, ``frame``."""
    return bright_model(path, size, frame_size=frame, **meta)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.tflite (64² tiles), model_96x128.tflite (whole frame), model_75x100.tflite
    (input 80x104, padded), and an unrelated model_48x48.tflite with another threshold."""
    root = tmp_path_factory.mktemp("family")
    bright(root / "model.tflite", (64, 64))
    bright(root / "model_96x128.tflite", (96, 128), (96, 128))
    bright(root / "model_75x100.tflite", (80, 104), (75, 100))
    bright(root / "model_48x48.tflite", (48, 48), (48, 48), threshold=0.7)
    return root


def test_frame_size_suffix() -> None:
    assert frame_size_suffix("model_int8_768x1024") == ("model_int8", (768, 1024))
    assert frame_size_suffix("model_int8") == ("model_int8", None)
    assert frame_size_suffix("x_12") == ("x_12", None)


def test_siblings_of_a_model_and_the_cheapest_choice(family: Path) -> None:
    arts = candidates(family / "model.tflite")
    names = [a.path.name for a in arts]
    # The given model first; the sibling with other settings is not the same model.
    assert names == ["model.tflite", "model_75x100.tflite", "model_96x128.tflite"]
    exact = choose(arts, (96, 128))
    assert exact.whole_frame and exact.artefact.path.name == "model_96x128.tflite"
    assert exact.reason == "whole frame 96x128"
    smaller = choose(arts, (75, 100))
    assert smaller.artefact.path.name == "model_75x100.tflite"
    assert smaller.reason == "whole frame 75x100, padded to 80x104"
    # A little smaller than 96x128 is padded, never resized: the 96x128 artefact still wins
    # over the tiles.
    near = choose(arts, (90, 120))
    assert near.whole_frame and near.artefact.path.name == "model_96x128.tflite"
    # The other orientation is another size: tiles, from whichever artefact feeds the model
    # the fewest pixels (2 tiles of 80x104 rather than 6 of 64x64: the weights are the same).
    turned = choose(arts, (128, 96))
    assert not turned.whole_frame and turned.artefact.path.name == "model_75x100.tflite"
    assert turned.tiles == 2 and "no whole-frame artefact fits 128x96" in turned.reason
    # Tiny frames: one 64² tile costs less than a padded whole-frame input.
    assert choose(arts, (40, 40)).artefact.path.name == "model.tflite"
    # Given a whole-frame artefact, its tiled sibling is a candidate too.
    assert {a.path.name for a in candidates(family / "model_96x128.tflite")} >= {"model.tflite"}


def test_a_folder_of_one_model_and_of_several(family: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    for name in ("model.tflite", "model_96x128.tflite"):
        shutil.copy(family / name, one / name)
    assert len(candidates(one)) == 2
    several = tmp_path / "several"
    several.mkdir()
    shutil.copy(family / "model.tflite", several / "a.tflite")
    shutil.copy(family / "model.tflite", several / "b.tflite")
    with pytest.raises(DataError, match=r"several models \(a\.tflite, b\.tflite\); name one"):
        candidates(several)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no \.tflite or \.onnx model"):
        candidates(tmp_path / "empty")


def _run(model: Path, source: str, masks: Path) -> str:
    result = runner.invoke(
        app, ["run", str(model), "--source", source, "--headless", "--save-masks", str(masks)]
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("size", "says"),
    [
        ("96x128", "whole frame 96x128"),
        ("75x100", "whole frame 75x100, padded to 80x104"),
        ("128x96", "2 tiles of 80x104 for 128x96 frames (no whole-frame artefact fits 128x96"),
    ],
)
def test_run_picks_the_fitting_artefact_and_crops_exactly(
    family: Path, tmp_path: Path, size: str, says: str
) -> None:
    source = f"synthetic://?size={size}&frames=3&seed=4"
    out = _run(family / "model.tflite", source, tmp_path / "picked")
    assert says in out
    # The tiled model alone (no siblings beside it) gives the same masks: this model is
    # pointwise, so whole frame, padding and tiling must all agree pixel for pixel.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(family / "model.tflite", alone / "model.tflite")
    assert "tiles of 64x64" in _run(alone / "model.tflite", source, tmp_path / "tiled")
    from edgeseg.imageio import read_image

    picked = sorted((tmp_path / "picked").glob("*.png"))
    tiled = sorted((tmp_path / "tiled").glob("*.png"))
    assert len(picked) == len(tiled) == 3
    h, w = (int(v) for v in size.split("x"))
    for a, b in zip(picked, tiled, strict=True):
        got, want = read_image(a), read_image(b)
        assert got.shape == (h, w)
        np.testing.assert_array_equal(got, want)
        assert want.any() and not want.all()


def test_run_on_a_folder_of_several_models_is_one_line(family: Path, tmp_path: Path) -> None:
    shutil.copy(family / "model.tflite", tmp_path / "a.tflite")
    shutil.copy(family / "model.tflite", tmp_path / "b.tflite")
    result = runner.invoke(
        app, ["run", str(tmp_path), "--source", "synthetic://?frames=2", "--headless", "--csv",
              str(tmp_path / "x.csv")],
    )  # fmt: skip
    assert result.exit_code != 0
    one_line_error(result, "several models", "name one")
    assert not (tmp_path / "x.csv").exists()
