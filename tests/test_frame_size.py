"""`edgeseg convert --frame-size HxW|auto`: whole-frame artefacts beside the tiled ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import intensity_unet, one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.convert.frames import AUTO, calibration_frames, parse_frame_sizes
from edgeseg.errors import DataError

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")
runner = CliRunner()


def test_frame_sizes_parse_height_first_and_refuse_nonsense() -> None:
    got = parse_frame_sizes(["768x1024", "1080×1920", "auto", "768x1024", (750, 1000)])
    assert got == ((768, 1024), (1080, 1920), AUTO, (750, 1000))
    for bad in ("1024", "0x10", "axb", "10x10x3", "99999x10", ""):
        with pytest.raises(DataError, match="--frame-size"):
            parse_frame_sizes([bad])
    # About the pixels of the tile set, at least 8 frames, never more than n.
    assert calibration_frames(200, (256, 256), (1024, 1024)) == 13
    assert calibration_frames(200, (256, 256), (2048, 2048)) == 8
    assert calibration_frames(5, (256, 256), (2048, 2048)) == 5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--frame-size", "768by1024"], "expected HxW"),
        (["--frame-size", "0x1024"], "between 1 and"),
        (["--frame-size", "auto", "--calib", "set.npz", "--val", "."], "set of tiles"),
    ],
)
def test_bad_frame_size_is_one_line_error(tiny_unet: Path, tmp_path: Path, args, needle) -> None:
    calib = [] if "--calib" in args else ["--calib", str(tmp_path)]
    result = runner.invoke(
        app, ["convert", str(tiny_unet), "--int8", *calib, *args, "--out", str(tmp_path / "o")]
    )
    one_line_error(result, needle)


def test_odd_frame_size_is_padded_and_cropped_exactly(tmp_path: Path) -> None:
    """750x1000 on a depth-2 model: input 752x1000, centred reflect padding, cropped back."""
    from edgeseg.convert.frames import plan_frames
    from edgeseg.convert.recipes import load_recipe
    from edgeseg.convert.tflite import convert
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.preprocess import prepare
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.core.tflite_file import embed_metadata
    from edgeseg.model.loading import load_model
    from edgeseg.runtime.backends import load_backend

    path = tmp_path / "m.keras"
    intensity_unet(32).save(path)
    loaded = load_model(path)
    meta = ModelMetadata(input_size=(32, 32), normalization="percentile")
    (plan,) = plan_frames(loaded, meta, [(750, 1000)])
    assert plan.refused is None and plan.input_size == (752, 1000)
    assert plan.meta.frame_size == (750, 1000) and plan.meta.input_size == (752, 1000)
    conv = convert(plan.loaded, plan.meta, load_recipe("fp32"))
    art = tmp_path / "m_fp32_750x1000.tflite"
    art.write_bytes(embed_metadata(conv.tflite, plan.meta))
    backend = load_backend(art)
    assert tuple(backend.input.shape) == (1, 752, 1000, 1)

    frame = np.random.default_rng(0).integers(0, 256, (750, 1000), dtype=np.uint8)
    prob = Segmenter(backend, plan.meta).probabilities(frame)
    assert prob.shape == (750, 1000, 1)
    # The reference: pad one row above and below by reflection, run the float model, crop.
    x = prepare(frame, meta)
    padded = np.pad(x, ((1, 1), (0, 0), (0, 0)), mode="reflect")
    want = plan.loaded.predict(padded[None])[0, 1:-1]
    np.testing.assert_allclose(prob, want, atol=1e-4)


def test_valid_padding_and_fixed_models_keep_their_tiles(tmp_path: Path) -> None:
    from edgeseg.convert.frames import plan_frames
    from edgeseg.core.metadata import infer_metadata
    from edgeseg.errors import ModelError
    from edgeseg.model.loading import load_model
    from edgeseg.model.reshape import rebuild_keras
    from edgeseg.model.unet import UNetConfig, build_unet

    model = build_unet(UNetConfig(input_size=(44, 44), base_filters=2, depth=1, padding="valid"))
    path = tmp_path / "valid.keras"
    model.save(path)
    loaded = load_model(path)
    meta = infer_metadata(loaded.input_shape, loaded.output_shape)
    (plan,) = plan_frames(loaded, meta, [(100, 120)])
    assert plan.loaded is None and "valid-padding" in plan.refused
    with pytest.raises(ModelError, match="not the input's size"):
        rebuild_keras(model, (100, 124))
    sub = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(1, 3, padding="same")])
    assert rebuild_keras(sub, (20, 24)).output_shape == (1, 20, 24, 1)


def _crops(src: Path, dst: Path, names: list[str], size: tuple[int, int]) -> Path:
    from edgeseg.imageio import read_image

    cv2 = pytest.importorskip("cv2")
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            img = read_image(src / sub / name)[: size[0], : size[1]]
            cv2.imwrite(str(dst / sub / name), img)
    return dst


def test_whole_frame_int8_agrees_with_tiled_on_real_frames(isbi: Path, tmp_path: Path) -> None:
    """ISBI slices cut to 250x330 (odd sizes): int8 and ONNX artefacts at the frame size."""
    from edgeseg.convert.parity import label_maps, overlap
    from edgeseg.core.metadata import ModelMetadata, write_sidecar
    from edgeseg.core.tflite_file import read_embedded, read_metadata
    from edgeseg.imageio import read_image
    from edgeseg.runtime.backends import load_backend

    model = tmp_path / "em.keras"
    intensity_unet(64).save(model)
    meta = ModelMetadata(input_size=(64, 64), normalization="percentile", foreground_value=0)
    write_sidecar(meta, model)
    calib = _crops(isbi, tmp_path / "calib", [f"{i}.png" for i in range(6)], (250, 330))
    val = _crops(isbi, tmp_path / "val", ["20.png", "27.png"], (250, 330))
    out = tmp_path / "build"
    result = runner.invoke(
        app,
        ["convert", str(model), "--int8", "--onnx", "--calib", str(calib / "images"),
         "--val", str(val), "--n", "40", "--frame-size", "auto", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    whole, tiled = out / "em_int8_250x330.tflite", out / "em_int8.tflite"
    got = read_metadata(whole)
    assert got.frame_size == (250, 330) and got.input_size == (252, 332)
    assert got.provenance["tiled_sibling"] == "em_int8.tflite"
    assert read_embedded(whole)["frame_size"] == [250, 330]
    assert read_metadata(tiled).frame_size is None
    assert (out / "em_250x330.onnx").is_file()
    report = json.loads((out / "em_parity.json").read_text())
    rows = {a["artefact"]: a for a in report["artefacts"]}
    assert {"int8", "int8 250x330", "onnx", "onnx 250x330"} <= set(rows)
    assert rows["int8 250x330"]["frame_size"] == [250, 330]
    assert rows["int8 250x330"]["agreement"]["dice"] >= 0.95
    assert rows["onnx 250x330"]["agreement"]["dice"] >= 0.999
    assert "250x330" in (out / "em_parity.md").read_text()
    # The whole-frame artefact and the tiled one give the same label maps on real frames.
    frames = [read_image(p) for p in sorted((val / "images").iterdir())]
    a = label_maps(frames, load_backend(whole), got)
    b = label_maps(frames, load_backend(tiled), read_metadata(tiled))
    assert a[0].shape == (250, 330) and 0.1 < np.mean([m.mean() for m in b]) < 0.9
    assert overlap(a, b, got).dice >= 0.99


def test_tile_set_gives_whole_frames_the_tile_ranges(tiny_unet: Path, tmp_path: Path) -> None:
    """A prebuilt .npz holds tiles, not frames: the frame artefact reuses their ranges (every
    tensor quantized as in the tiled artefact)."""
    from edgeseg.convert.calibration import build_calibration
    from edgeseg.core.metadata import read_sidecar
    from edgeseg.core.tflite_file import as_text, parse_model
    from edgeseg.samples import SynthConfig, write_dataset

    data = write_dataset(tmp_path / "data", 4, SynthConfig(size=(75, 100)), seed=1)
    calib, _ = build_calibration(data / "images", read_sidecar(tiny_unet), 16)
    calib.save(tmp_path / "set.npz")
    out = tmp_path / "build"
    result = runner.invoke(
        app,
        ["convert", str(tiny_unet), "--int8", "--calib", str(tmp_path / "set.npz"),
         "--val", str(data), "--frame-size", "75x100", "--min-dice-agreement", "0.5",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    def scales(path: Path) -> list:
        sg = parse_model(path).subgraphs[0]
        quantized = [t for t in sg.tensors if t.quantization is not None]
        return [
            (as_text(t.name).split("/")[-1], list(q.scale), list(q.zeroPoint))
            for t in quantized
            if (q := t.quantization).scale is not None and len(q.scale)
        ]

    tiled, whole = scales(out / "tiny_int8.tflite"), scales(out / "tiny_int8_75x100.tflite")
    assert len(tiled) > 20 and tiled == whole
    notes = json.loads((out / "tiny_parity.json").read_text())["frame_notes"]
    assert any("75x100: static input 76x100" in n for n in notes)


def test_edge_tpu_recipe_keeps_its_tiles() -> None:
    from helpers import tflite_bytes

    from edgeseg.convert.frames import FramePlan, edgetpu_refusal
    from edgeseg.convert.recipes import load_recipe

    recipe = load_recipe("int8-edgetpu")
    assert not recipe.whole_frame and load_recipe("int8").whole_frame
    why = edgetpu_refusal(recipe, FramePlan((768, 1024), (768, 1024)), tflite_bytes("int8"))
    assert "keeps its tiled artefact for 768x1024" in why and "on-chip memory" in why
    assert "at 768x1024" in why  # its largest activation, scaled to the frame
