"""Calibration sets: runtime-exact tiles, diverse selection, holdout, hashing, CLI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import HEAVY, imported_by_cli, one_line_error
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.convert.calibration import (
    CalibrationSet,
    build_calibration,
    manifest_path,
    split_holdout,
)
from edgeseg.core.metadata import ModelMetadata, write_sidecar
from edgeseg.core.preprocess import prepare
from edgeseg.core.tiling import extract_tiles, plan_tiles
from edgeseg.errors import DataError
from edgeseg.imageio import write_image

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("cv2")

runner = CliRunner()
GRAY = ModelMetadata(input_size=(32, 32))
RGB = ModelMetadata(input_size=(32, 32), channels=3, channel_order="RGB")


class ListSource:
    """An in-memory FrameSource that counts reads."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.description = f"test frames ({len(frames)})"
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, i: int) -> np.ndarray:
        self.reads.append(i)
        return self.frames[i]

    def name(self, i: int) -> str:
        return f"f{i}"


def _expected_tiles(frame: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """What the runtime feeds the model for ``frame`` (overlap as edgeseg.model.predict)."""
    x = prepare(frame, meta)
    overlap = min(32, max(0, min(meta.output_size) // 2 - 1))
    grid = plan_tiles(x.shape[:2], meta.input_size, overlap=overlap, border=meta.output_border)
    return extract_tiles(x, grid)


def _assert_runtime_tiles(calib: CalibrationSet, expected: dict[str, np.ndarray]) -> None:
    """Every tile of the set is, bit for bit, the runtime tile its manifest says it is."""
    origins = calib.manifest["tile_origins"]
    assert len(origins) == len(calib)
    for tile, (name, t) in zip(calib.tiles, origins, strict=True):
        np.testing.assert_array_equal(tile, expected[name][t])


def _noise_frames(n: int, shape: tuple[int, ...], dtype: type = np.uint16, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype) for _ in range(n)]


def test_tiles_are_exactly_what_the_runtime_feeds_the_model(tmp_path: Path) -> None:
    meta = ModelMetadata(input_size=(32, 32), normalization="percentile")
    frames = _noise_frames(3, (70, 90))
    for i, f in enumerate(frames):
        write_image(tmp_path / f"{i}.tif", f)
    calib, held = build_calibration(tmp_path, meta, n=1000)
    assert held == []
    expected = {f"{i}.tif": _expected_tiles(f, meta) for i, f in enumerate(frames)}
    assert len(calib) == sum(len(t) for t in expected.values())  # fewer candidates than n
    assert calib.tiles.dtype == np.float32 and calib.tiles.shape[1:] == (32, 32, 1)
    _assert_runtime_tiles(calib, expected)
    assert len({(name, t) for name, t in calib.manifest["tile_origins"]}) == len(calib)
    m = calib.manifest
    assert m["n"] == len(calib) and m["frames_seen"] == 3 and m["frames_used"] == 3
    assert m["source"] == {
        "description": f"image folder {tmp_path} (3 images)",
        "path": str(tmp_path),
    }
    assert m["preprocessing"] == meta.to_dict()
    assert m["selection"].startswith("k-center greedy")
    json.dumps(m)  # JSON-able


@pytest.mark.parametrize(
    ("frame", "meta"),
    [
        (np.random.default_rng(0).integers(0, 255, (40, 50, 4), dtype=np.uint8), RGB),  # RGBA
        (np.random.default_rng(1).integers(0, 65535, (40, 50, 3), dtype=np.uint16), GRAY),
        (np.full((20, 12), 77, np.uint8), RGB.with_updates(channel_order="BGR")),  # padded up
    ],
)
def test_frames_reduced_and_padded_as_the_runtime_does(frame: np.ndarray, meta) -> None:
    calib, _ = build_calibration(ListSource([frame]), meta, n=100)
    expected = _expected_tiles(frame, meta)
    assert len(calib) == len(expected)
    assert calib.tiles.shape[1:] == (32, 32, meta.channels)
    _assert_runtime_tiles(calib, {"f0": expected})


def test_valid_padding_model_tiles_with_its_border() -> None:
    meta = ModelMetadata(input_size=(48, 48), output_border=8)
    frame = _noise_frames(1, (60, 75), np.uint8)[0]
    calib, _ = build_calibration(ListSource([frame]), meta, n=100)
    x = prepare(frame, meta)
    expected = extract_tiles(x, plan_tiles(x.shape[:2], (48, 48), overlap=15, border=8))
    assert len(calib) == len(expected)
    _assert_runtime_tiles(calib, {"f0": expected})
    assert calib.manifest["tiling"] == {"overlap": 15, "border": 8}


def test_selection_is_diverse_not_the_first_frames() -> None:
    rng = np.random.default_rng(3)
    plain = [np.clip(100 + rng.normal(0, 1, (32, 32)), 0, 255).astype(np.uint8) for _ in range(50)]
    yy, xx = np.mgrid[:32, :32]
    odd = [
        np.full((32, 32), 250, np.uint8),
        np.full((32, 32), 5, np.uint8),
        (((yy // 4 + xx // 4) % 2) * 255).astype(np.uint8),  # checkerboard
        (xx * 8).astype(np.uint8),  # ramp
        np.where(yy < 16, 0, 255).astype(np.uint8),  # half and half
    ]
    frames = plain[:20] + odd[:2] + plain[20:35] + odd[2:] + plain[35:]
    odd_idx = [20, 21, 37, 38, 39]
    calib, _ = build_calibration(ListSource(frames), GRAY, n=6)
    picked = {name for name, _ in calib.manifest["tile_origins"]}
    assert {f"f{i}" for i in odd_idx} <= picked
    assert len(picked) == 6


def test_deterministic_and_bounded_reads() -> None:
    frames = _noise_frames(100, (40, 40), np.uint8, seed=5)
    src = ListSource(frames)
    a, held_a = build_calibration(src, GRAY, n=7, holdout=0.2, seed=4, max_candidate_frames=10)
    assert a.manifest["frames_seen"] == 10
    assert len(src.reads) == 10 + a.manifest["frames_used"]  # two passes, no more
    b, held_b = build_calibration(
        ListSource(frames), GRAY, n=7, holdout=0.2, seed=4, max_candidate_frames=10
    )
    np.testing.assert_array_equal(a.tiles, b.tiles)
    assert held_a == held_b and a.sha256 == b.sha256
    assert a.manifest["tile_origins"] == b.manifest["tile_origins"]


def test_holdout_frames_never_in_the_set() -> None:
    frames = [np.full((32, 32), 10 * i, np.uint8) for i in range(20)]
    calib, held = build_calibration(ListSource(frames), GRAY, n=100, holdout=0.25, seed=7)
    assert len(held) == 5 and held == split_holdout(20, 0.25, 7)[1]
    values = {round(float(t[0, 0, 0]) * 255) for t in calib.tiles}
    assert values == {10 * i for i in range(20) if i not in held}
    assert calib.manifest["holdout"] == [f"f{i}" for i in held]
    assert all(name not in calib.manifest["holdout"] for name, _ in calib.manifest["tile_origins"])


def test_split_holdout_contiguous_for_time_series() -> None:
    kept, held = split_holdout(20, 0.25, 3, contiguous=True)
    assert len(held) == 5 and held == list(range(held[0], held[0] + 5))
    assert sorted(kept + held) == list(range(20))


def test_split_holdout() -> None:
    assert split_holdout(10, 0.0, 0) == (list(range(10)), [])
    kept, held = split_holdout(10, 0.3, 1)
    assert len(held) == 3 and sorted(kept + held) == list(range(10))
    assert split_holdout(10, 0.3, 1) == (kept, held)
    assert split_holdout(10, 0.3, 2) != (kept, held)
    assert len(split_holdout(2, 0.01, 0)[1]) == 1  # at least one held out
    assert split_holdout(1, 0.5, 0) == ([0], [])  # one frame: nothing to hold out
    assert len(split_holdout(10, 0.99, 0)[0]) == 1  # at least one left unless fraction == 1
    assert split_holdout(4, 1.0, 0) == ([], [0, 1, 2, 3])
    for bad in (-0.1, 1.5):
        with pytest.raises(DataError, match="holdout"):
            split_holdout(10, bad, 0)


def test_bad_builds(tmp_path: Path) -> None:
    frames = _noise_frames(3, (32, 32), np.uint8)
    with pytest.raises(DataError, match="at least 1 tile"):
        build_calibration(ListSource(frames), GRAY, n=0)
    with pytest.raises(DataError, match="no frames"):
        build_calibration(ListSource([]), GRAY)
    with pytest.raises(DataError, match=r"every frame .* held out"):
        build_calibration(ListSource(frames), GRAY, holdout=1.0)
    with pytest.raises(DataError, match="not found"):
        build_calibration(tmp_path / "missing", GRAY)
    tifffile.imwrite(
        tmp_path / "two.tif",
        np.zeros((40, 40, 2), np.uint8),
        photometric="minisblack",
        planarconfig="contig",
    )
    with pytest.raises(DataError, match=r"two\.tif.*2-channel") as info:
        build_calibration(tmp_path / "two.tif", RGB)
    assert "\n" not in str(info.value)


def test_save_load_round_trip_and_tampering(tmp_path: Path) -> None:
    calib, _ = build_calibration(ListSource(_noise_frames(4, (50, 50), np.uint8)), GRAY, n=5)
    path = calib.save(tmp_path / "out" / "set.npz")
    assert path == tmp_path / "out" / "set.npz"
    side = manifest_path(path)
    assert side == tmp_path / "out" / "set.manifest.json"
    assert json.loads(side.read_text()) == calib.manifest
    back = CalibrationSet.load(path)
    np.testing.assert_array_equal(back.tiles, calib.tiles)
    assert back.manifest == calib.manifest
    batches = list(back)
    assert len(batches) == 5
    assert all(b.shape == (1, 32, 32, 1) and b.dtype == np.float32 for b in batches)

    # Same manifest, one pixel changed: the hash catches it.
    tiles = calib.tiles.copy()
    tiles[0, 0, 0, 0] += 0.5
    np.savez(tmp_path / "tampered.npz", tiles=tiles, manifest=np.array(json.dumps(calib.manifest)))
    with pytest.raises(DataError, match="modified or corrupt"):
        CalibrationSet.load(tmp_path / "tampered.npz")
    # Damaged bytes, a truncated file, something else entirely, a stranger's npz.
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    for name, needle in [
        ("cut.npz", "corrupt"),
        ("flipped.npz", "corrupt"),
        ("text.npz", "corrupt"),
        ("other.npz", "not an edgeseg calibration set"),
        ("missing.npz", "not found"),
    ]:
        with pytest.raises(DataError, match=needle) as info:
            CalibrationSet.load(tmp_path / name)
        assert "\n" not in str(info.value)


def test_save_refuses_bad_paths(tmp_path: Path) -> None:
    calib, _ = build_calibration(ListSource(_noise_frames(1, (32, 32), np.uint8)), GRAY, n=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write"):
        calib.save(tmp_path / "file" / "set.npz")
    with pytest.raises(DataError, match=r"\.npz"):
        calib.save(tmp_path / "set.bin")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_check_fits() -> None:
    meta = ModelMetadata(input_size=(32, 32), normalization="scale", input_max=4095)
    calib, _ = build_calibration(ListSource(_noise_frames(2, (32, 32))), meta, n=2)
    calib.check_fits(meta)
    calib.check_fits(meta.with_updates(threshold=0.7))  # not preprocessing
    for other, needle in [
        (meta.with_updates(input_size=(64, 64)), "tiles are 32x32, the model takes 64x64"),
        (meta.with_updates(normalization="percentile"), "normalization is scale in the set"),
        (meta.with_updates(input_max=None), "input_max is 4095"),
        (
            ModelMetadata(input_size=(32, 32), channels=3, channel_order="RGB", input_max=4095),
            "1 channel(s), the model takes 3",
        ),
    ]:
        with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            calib.check_fits(other)


def test_isbi_slices_give_tiles_of_a_256_gray_model(isbi: Path) -> None:
    meta = ModelMetadata(input_size=(256, 256), foreground_value=0)
    calib, _ = build_calibration(isbi / "images", meta, n=24, max_candidate_frames=6)
    m = calib.manifest
    assert m["frames_seen"] == 6
    assert m["candidate_tiles"] >= 4 * 6  # 512² slices → at least 4 tiles each
    assert calib.tiles.shape == (24, 256, 256, 1)
    assert m["frames_used"] > 1
    assert calib.tiles.min() >= 0.0 and calib.tiles.max() <= 1.0
    # Spot check against the runtime path.
    from edgeseg.imageio import read_image

    name, t = m["tile_origins"][0]
    np.testing.assert_array_equal(
        calib.tiles[0], _expected_tiles(read_image(isbi / "images" / name), meta)[t]
    )


# --------------------------------------------------------------------------------------------
# CLI


def _model(tmp_path: Path, meta: ModelMetadata = GRAY) -> Path:
    """A model path with a sidecar: calib needs only the metadata, so the file is never loaded."""
    path = tmp_path / "m.keras"
    path.write_bytes(b"")
    write_sidecar(meta, path)
    return path


def _folder(tmp_path: Path, n: int = 4) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_noise_frames(n, (40, 48), np.uint8)):
        write_image(folder / f"{i}.png", f)
    return folder


def test_cli_build_and_show(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "build" / "set.npz"
    args = ["calib", "build", str(folder), "--model", str(_model(tmp_path)), "--n", "5"]
    result = runner.invoke(app, [*args, "--out", str(out), "--holdout", "0.25"])
    assert result.exit_code == 0, result.output
    assert f"read image folder {folder} (4 images)" in result.stdout
    assert "kept 5 tiles (32x32x1) from" in result.stdout and "held out 1 frame" in result.stdout
    calib = CalibrationSet.load(out)
    assert f"sha256 {calib.sha256}" in result.stdout
    assert f"wrote {out} and {tmp_path / 'build' / 'set.manifest.json'}" in result.stdout

    shown = runner.invoke(app, ["calib", "show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert calib.sha256 in shown.stdout and "(verified)" in shown.stdout
    assert "5 tiles of 32x32x1" in shown.stdout and "normalization scale" in shown.stdout
    as_json = runner.invoke(app, ["calib", "show", str(out), "--json"])
    assert json.loads(as_json.stdout) == calib.manifest


def test_cli_build_from_a_video(tmp_path: Path) -> None:
    from helpers import write_video

    video = write_video(tmp_path / "clip.avi", n=12)
    model = _model(tmp_path, RGB)
    out = tmp_path / "v.npz"
    argv = ["calib", "build", str(video), "--model", str(model), "-n", "4", "--out", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "read video" in result.stdout and "(12 frames, 64x48" in result.stdout
    calib = CalibrationSet.load(out)
    assert calib.tiles.shape == (4, 32, 32, 3)
    assert all(name.startswith("clip.avi#frame") for name, _ in calib.manifest["tile_origins"])
    # Red carries the frame index in the video (blue stays 0): RGB order reached the tiles.
    for tile, (name, _) in zip(calib.tiles, calib.manifest["tile_origins"], strict=True):
        i = int(name.split("#frame")[1])
        red, blue = float(tile[..., 0].mean()), float(tile[..., 2].mean())
        assert red > blue + 0.05 if i >= 4 else red >= blue - 0.03, (name, red, blue)


@pytest.mark.parametrize("argv", [["calib", "--help"], ["calib", "build", "--help"]])
def test_calib_help_imports_no_heavy_library(argv: list[str]) -> None:
    loaded = imported_by_cli(argv)
    assert "typer" in loaded
    assert [m for m in HEAVY if m in loaded] == []


def test_cli_bad_input(tmp_path: Path) -> None:
    model = _model(tmp_path)
    rgb_model = tmp_path / "rgb" / "m.keras"
    rgb_model.parent.mkdir()
    _model(rgb_model.parent, RGB)
    folder = _folder(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.tif").write_bytes(b"no tiff here" * 10)
    tifffile.imwrite(
        tmp_path / "two.tif",
        np.zeros((40, 40, 2), np.uint8),
        photometric="minisblack",
        planarconfig="contig",
    )
    (tmp_path / "afile").write_text("x")
    out = str(tmp_path / "set.npz")

    def build(source: Path | str, *extra: str, model_path: Path = model):
        argv = ["calib", "build", str(source), "--model", str(model_path), "--out", out, *extra]
        return runner.invoke(app, argv)

    one_line_error(build(tmp_path / "missing"), "not found", "missing")
    one_line_error(build(tmp_path / "empty"), "no images")
    one_line_error(build(tmp_path / "bad.tif"), "cannot read", "bad.tif")
    one_line_error(build(tmp_path / "two.tif", model_path=rgb_model), "two.tif", "2-channel")
    one_line_error(build(folder, "--n", "0"), "at least 1 tile")
    one_line_error(build(folder, "--holdout", "2"), "holdout")
    under_file = str(tmp_path / "afile" / "set.npz")
    one_line_error(
        runner.invoke(
            app, ["calib", "build", str(folder), "--model", str(model), "--out", under_file]
        ),
        "cannot write",
    )
    assert not (tmp_path / "set.npz").exists()

    corrupt = tmp_path / "corrupt.npz"
    with zipfile.ZipFile(corrupt, "w") as z:
        z.writestr("tiles.npy", b"garbage")
    one_line_error(runner.invoke(app, ["calib", "show", str(corrupt)]), "corrupt.npz")
    one_line_error(runner.invoke(app, ["calib", "show", str(tmp_path / "nope.npz")]), "not found")


# --------------------------------------------------------------------------------------------
# Named sets: calibration/sets/*.toml, shipped under edgeseg/data like recipes and profiles
# --------------------------------------------------------------------------------------------

PROJECT = Path(__file__).resolve().parents[1]


def test_named_sets_are_shipped_with_the_package() -> None:
    import sys

    from edgeseg.paths import shipped_tomls

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    link = PROJECT / "edgeseg" / "data" / "calibration"
    assert link.is_symlink() and link.resolve() == (PROJECT / "calibration").resolve()
    on_disk = {p.stem for p in (PROJECT / "calibration" / "sets").glob("*.toml")}
    assert {"synthetic", "synthetic-quick", "synthetic-16bit"} <= on_disk
    assert set(shipped_tomls("calibration", "sets")) == on_disk  # through importlib.resources
    globs = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["edgeseg"]
    assert "data/calibration/sets/*.toml" in globs
    assert (PROJECT / "calibration" / "README.md").is_file()


def test_named_sets_parse_and_name_their_sources() -> None:
    from edgeseg.convert.calibration import SyntheticStills, available_sets

    sets = available_sets(user_dir=Path("/nonexistent"))
    assert list(sets) == sorted(sets)
    for name, s in sets.items():
        assert s.name == name and s.n >= 1 and s.origin == f"edgeseg:{name}"
        assert s.description
        stills = SyntheticStills(s.source)  # every shipped set is synthetic, so checkable
        assert len(stills) >= s.n // 4
    assert SyntheticStills(sets["synthetic-16bit"].source).read(0).dtype == np.uint16


def test_synthetic_set_is_the_demos_calibration(tmp_path: Path) -> None:
    """`calib build synthetic-quick` picks the tiles `demo --quick` calibrates with: the same
    frames as the images the demo writes, so the same selection."""
    from edgeseg.convert.calibration import load_named_set
    from edgeseg.samples import SynthConfig, write_dataset

    named = load_named_set("synthetic-quick", user_dir=tmp_path)
    assert named is not None and named.n == 40
    demo_images = write_dataset(tmp_path / "train", 40, SynthConfig(size=(128, 128)), seed=0)
    from_folder, _ = build_calibration(demo_images / "images", GRAY, 12)
    from_name, _ = build_calibration(named.source, GRAY, 12, named=named)
    assert from_name.sha256 == from_folder.sha256
    assert from_name.manifest["named_set"] == {"name": "synthetic-quick", "from": named.origin}
    assert from_name.manifest["source"]["path"] == named.source


def test_synthetic_stills_source() -> None:
    from edgeseg.convert.calibration import SyntheticStills

    stills = SyntheticStills("synthetic://?size=40x48&frames=3&seed=2")
    assert len(stills) == 3 and stills.read(1).shape == (40, 48)
    np.testing.assert_array_equal(stills.read(2), stills.read(2))
    assert "3 frames" in stills.description and stills.name(0) == "synthetic#0"
    with pytest.raises(IndexError):
        stills.read(3)
    with pytest.raises(DataError, match="fps"):
        SyntheticStills("synthetic://?fps=30")


def test_cli_list_and_build_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    folder = _folder(tmp_path)
    own = tmp_path / "calibration" / "sets"
    own.mkdir(parents=True)
    (own / "bench-scope.toml").write_text(
        f'name = "bench-scope"\nsource = "{folder}"\nn = 3\ndescription = "my scope"\n'
    )
    listed = runner.invoke(app, ["calib", "list"])
    assert listed.exit_code == 0, listed.output
    for name in ("synthetic", "synthetic-quick", "synthetic-16bit", "bench-scope", "my scope"):
        assert name in listed.stdout, name

    model = _model(tmp_path)
    out = tmp_path / "set.npz"
    result = runner.invoke(app, ["calib", "build", "bench-scope", "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert "named set bench-scope" in result.stdout and "kept 3 tiles" in result.stdout
    calib = CalibrationSet.load(out)
    assert len(calib) == 3 and calib.manifest["named_set"]["name"] == "bench-scope"

    result = runner.invoke(
        app, ["calib", "build", "synthetic-quick", "--model", str(model), "--n", "4", "-o", "s.npz"]
    )
    assert result.exit_code == 0, result.output
    calib = CalibrationSet.load(tmp_path / "s.npz")
    assert len(calib) == 4 and calib.manifest["source"]["path"].startswith("synthetic://")
    shown = runner.invoke(app, ["calib", "show", "s.npz"])
    assert "named set:      synthetic-quick (edgeseg:synthetic-quick)" in shown.stdout


def test_cli_bad_named_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    model = str(_model(tmp_path))
    build = ["calib", "build", "--model", model, "--out", "x.npz"]
    one_line_error(runner.invoke(app, [*build, "no-such-set"]), "no-such-set", "synthetic-quick")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nsource = "x"\nframes = 3\n')
    one_line_error(runner.invoke(app, [*build, str(bad)]), "unknown key", "frames")
    bad.write_text('name = "bad"\nsource = "synthetic://?fps=3"\n')
    one_line_error(runner.invoke(app, [*build, str(bad)]), "fps", "stills")
    one_line_error(runner.invoke(app, [*build, str(tmp_path / "gone.toml")]), "gone.toml")
