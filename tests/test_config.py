"""edgeseg.toml for `edgeseg run`: keys derived from run's options, merge order, relative paths,
one-line errors, `edgeseg config show`, and a run with no model argument end to end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from helpers import bright_model, one_line_error, write_nuclei_video
from typer.testing import CliRunner

from edgeseg.cli.configured import run_params
from edgeseg.cli.main import app
from edgeseg.cli.run import run_command
from edgeseg.config import Param, load_config, read_config_file
from edgeseg.errors import DataError

runner = CliRunner()


@dataclass
class Places:
    system: Path  # /etc/edgeseg/edgeseg.toml
    user: Path  # ~/.config/edgeseg/edgeseg.toml
    here: Path  # ./edgeseg.toml
    cwd: Path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Places:
    """The three searched files in tmp_path (none written yet), cwd in tmp_path/cwd."""
    monkeypatch.setenv("EDGESEG_SYSTEM_CONFIG_DIR", str(tmp_path / "etc"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    cwd = tmp_path / "cwd"
    for folder in (tmp_path / "etc", tmp_path / "xdg" / "edgeseg", cwd):
        folder.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return Places(
        tmp_path / "etc" / "edgeseg.toml",
        tmp_path / "xdg" / "edgeseg" / "edgeseg.toml",
        cwd / "edgeseg.toml",
        cwd,
    )


class Captured(Exception):
    pass


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`run` stops at build_session; the RunOptions it would have built are collected."""
    import edgeseg.session

    seen: list[Any] = []

    def fake_build_session(options: Any, **_kwargs: Any) -> Any:
        seen.append(options)
        raise DataError("stopped by the test")

    monkeypatch.setattr(edgeseg.session, "build_session", fake_build_session)
    return seen


def _options(argv: list[str], captured: list[Any]) -> Any:
    result = runner.invoke(app, ["run", *argv])
    one_line_error(result, "stopped by the test")
    return captured[-1]


# --------------------------------------------------------------------------------------------
# The keys come from run's own parameters
# --------------------------------------------------------------------------------------------


def test_keys_and_kinds_come_from_the_run_command() -> None:
    command = run_command()
    params = run_params(command)
    longs = {o[2:] for p in command.params for o in p.opts[:1] if o.startswith("--")}
    assert set(params) == (longs - {"config"}) | {"model"}
    assert params["model"] == Param("path", "model")
    assert params["save-masks"] == Param("path", "save_masks")
    assert params["csv"] == Param("path", "csv")
    assert params["max-frames"] == Param("int", "max_frames", min=1)
    assert params["alpha"].kind == "float" and params["headless"].kind == "bool"
    assert params["resize"] == Param("bool", "resize")  # --resize/--tile
    assert params["source"].kind == "source" and params["stream"].kind == "str"


def test_run_options_are_declared_once_and_run_and_its_keys_come_from_them() -> None:
    """Every RunOptions field is a parameter of `edgeseg run` of the same name, with the help,
    default and bounds its declaration gives, and a config key; ``flags`` stands for the
    shared metadata flags; a library-only field is neither. Nothing else is a parameter of
    `run` but ``--config`` (the file itself)."""
    import dataclasses

    from edgeseg.run_options import (
        ARGUMENT,
        LIBRARY,
        METADATA_FLAGS,
        OPTION,
        RunOptions,
        option_specs,
    )

    command = run_command()
    params = run_params(command)
    by_name = {p.name: p for p in command.params}
    specs = option_specs()
    assert [f.name for f, _ in specs] == [f.name for f in dataclasses.fields(RunOptions)]
    flag_keys = {"input-size", "normalization", "input-max", "threshold", "channel-order"}
    keys, names = set(), {"config"}
    for f, spec in specs:
        if spec.kind == LIBRARY:
            assert f.name not in by_name and f.name.replace("_", "-") not in params
            continue
        if spec.kind == METADATA_FLAGS:
            names |= {key.replace("-", "_") for key in flag_keys}
            continue
        p = by_name[f.name]
        names.add(f.name)
        key = spec.decls[0].split("/")[0][2:] if spec.kind != ARGUMENT else f.name
        assert params[key].dest == f.name, f.name
        keys.add(key)
        assert p.help == spec.help, f.name
        default = None if f.default is dataclasses.MISSING else f.default
        assert p.default == default, f.name
        assert getattr(p, "min", None) == spec.min, f.name
        if spec.kind == ARGUMENT:
            assert p.opts == [f.name]
        else:
            assert p.opts[0] == spec.decls[0].split("/")[0], f.name
    assert set(params) == keys | flag_keys
    assert set(by_name) == names
    # `run`'s parameters (and so `edgeseg config show`) keep the fields' order.
    fields = [f.name for f, s in specs if s.kind in (OPTION, ARGUMENT)]
    assert [n for n in by_name if n in fields] == fields


def test_every_run_option_reaches_run_options(places: Places, captured: list) -> None:
    """A value given on the command line arrives in the RunOptions field of its name."""
    o = _options(
        ["/m/x.tflite", "--csv", "t.csv", "--record-max-bytes", "2G", "--summary-json", "s.json",
         "--no-retry", "--tile", "--threads", "3", "--input-size", "64x32"],
        captured,
    )  # fmt: skip
    assert (o.model, o.csv, o.record_max_bytes) == (Path("/m/x.tflite"), Path("t.csv"), "2G")
    assert (o.summary_json, o.retry, o.resize, o.threads) == (Path("s.json"), False, False, 3)
    assert o.flags["input_size"] == (64, 32) and o.record_fps is None


def test_an_option_added_later_is_configurable_with_no_change() -> None:
    """The derivation reads any command: a new option shows up with its kind and bounds."""
    solo = typer.Typer(add_completion=False)

    @solo.command()
    def run(
        model: Path | None = typer.Argument(None),
        record_segment: float | None = typer.Option(None, "--record-segment", min=1),
        stream_token: str | None = typer.Option(None, "--stream-token"),
        out_dir: Path = typer.Option(Path("x"), "--out-dir"),
        tags: list[str] = typer.Option([], "--tag"),
    ) -> None:
        pass

    params = run_params(typer.main.get_command(solo))
    assert params["record-segment"] == Param("float", "record_segment", min=1)
    assert params["stream-token"] == Param("str", "stream_token")
    assert params["out-dir"] == Param("path", "out_dir")
    assert params["tag"] == Param("str", "tags", multiple=True)


# --------------------------------------------------------------------------------------------
# Merging: system < user < ./edgeseg.toml < command line; --config replaces the search
# --------------------------------------------------------------------------------------------


def test_merge_order_system_user_here_command_line(places: Places, captured: list) -> None:
    places.system.write_text(
        'model = "/models/sys.tflite"\nalpha = 0.1\noverlap = 8\nmin-area = 5\nthreads = 2\n'
    )
    places.user.write_text("alpha = 0.2\noverlap = 16\nmin_area = 6\n")
    places.here.write_text("overlap = 24\nmin-area = 7\n")
    o = _options(["--min-area", "9"], captured)
    assert o.model == Path("/models/sys.tflite")  # only the system file names it
    assert o.threads == 2
    assert o.alpha == 0.2  # user over system
    assert o.overlap == 24  # ./edgeseg.toml over user
    assert o.min_area == 9  # command line over every file
    # A command-line value equal to the default still wins (it was given).
    assert _options(["--overlap", "32", "/m/cli.tflite"], captured).overlap == 32
    assert captured[-1].model == Path("/m/cli.tflite")
    # Options not in any file keep run's defaults.
    assert o.mask_format == "png" and o.hud is True and o.record is None


def test_camera_on_the_command_line_drops_a_configured_source(
    places: Places, captured: list
) -> None:
    places.system.write_text('model = "/m.tflite"\nsource = "csi://0"\n')
    o = _options(["--camera", "0"], captured)
    assert (o.camera, o.source) == (0, None)
    places.here.write_text("camera = 1\n")  # a later file's camera replaces the source too
    o = _options([], captured)
    assert (o.camera, o.source) == (1, None)


def test_config_option_replaces_the_search(places: Places, captured: list, tmp_path: Path) -> None:
    places.system.write_text('model = "/m/sys.tflite"\nthreads = 3\n')
    places.here.write_text("overlap = 8\n")
    other = tmp_path / "other.toml"
    other.write_text('model = "/m/other.tflite"\n')
    o = _options(["--config", str(other)], captured)
    assert o.model == Path("/m/other.tflite")
    assert o.threads is None and o.overlap == 32  # the searched files were not read


def test_relative_paths_resolve_against_the_files_folder(
    places: Places, captured: list, tmp_path: Path
) -> None:
    conf = tmp_path / "deploy"
    (conf / "clips").mkdir(parents=True)
    (conf / "clips" / "a.avi").write_bytes(b"")
    (conf / "edgeseg.toml").write_text(
        'model = "models/unet.tflite"\nsave-masks = "out/masks"\ncsv = "stats.csv"\n'
        'source = "clips/a.avi"\nrecord = "/abs/rec.mp4"\n'
    )
    o = _options(["--config", "../deploy/edgeseg.toml"], captured)  # from tmp_path/cwd
    assert o.model == conf / "models" / "unet.tflite"
    assert o.save_masks == conf / "out" / "masks"
    assert o.csv == conf / "stats.csv"
    assert o.source == str(conf / "clips" / "a.avi")
    assert o.record == Path("/abs/rec.mp4")
    # A URI, or a relative path naming nothing beside the file, is kept as written.
    params = run_params(run_command())
    for text in ("synthetic://?size=64x64", "csi://0", "missing.avi", "gst:videotestsrc"):
        (conf / "s.toml").write_text(f'source = "{text}"\n')
        assert read_config_file(conf / "s.toml", params)["source"].value == text


# --------------------------------------------------------------------------------------------
# One-line errors naming the file and the key
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('recrod = "x.mp4"\n', ["unknown key 'recrod'", "(did you mean 'record'?)"]),
        ('save_mask = "m"\n', ["unknown key 'save_mask'", "did you mean 'save-masks'?"]),
        ("zzz = 1\n", ["unknown key 'zzz'"]),
        ('max-frames = "ten"\n', ["'max-frames' must be an integer, got \"ten\""]),
        ("max-frames = 0\n", ["'max-frames' must be at least 1, got 0"]),
        ("threads = 2.5\n", ["'threads' must be an integer, got 2.5"]),
        ('headless = "yes"\n', ["'headless' must be true or false, got \"yes\""]),
        ("alpha = true\n", ["'alpha' must be a number, got true"]),
        ("record = 3\n", ["'record' must be a string, got 3"]),
        ("overlap = 8\noverlap = 9\n", ["not valid TOML"]),
        ("max-frames = \n", ["not valid TOML"]),
        ("overlap = 8\n[run]\nheadless = true\n", ["unknown key 'run'"]),
        ("min-area = 1\nmin_area = 2\n", ["'min-area' is given twice"]),
        ('camera = 0\nsource = "csi://0"\n', ["set one of 'camera' or 'source', not both"]),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(
    places: Places, text: str, needles: list[str]
) -> None:
    places.user.write_text(text)
    for argv in (["run", "/m.tflite"], ["config", "show"]):
        result = runner.invoke(app, argv)
        line = one_line_error(result, str(places.user), *needles)
        assert line.count(str(places.user)) == 1


def test_missing_config_file_is_one_line(places: Places) -> None:
    result = runner.invoke(app, ["run", "--config", "nope.toml"])
    one_line_error(result, "config file not found", str(places.cwd / "nope.toml"))


def test_no_model_anywhere_says_where_it_looked(places: Places) -> None:
    result = runner.invoke(app, ["run", "--camera", "0"])
    one_line_error(result, "no model", str(places.system), str(places.user), str(places.here))
    places.here.write_text("headless = true\n")  # a config without a model: the same
    one_line_error(runner.invoke(app, ["run"]), "no model", str(places.here))


# --------------------------------------------------------------------------------------------
# edgeseg config show / path
# --------------------------------------------------------------------------------------------


def test_config_show_names_each_values_file(places: Places, tmp_path: Path) -> None:
    places.system.write_text('model = "unet.tflite"\nstream = "0.0.0.0:8080"\nalpha = 0.3\n')
    places.here.write_text("alpha = 0.6\nheadless = true\n")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    lines = {ln.split(" = ")[0]: ln for ln in result.stdout.splitlines() if " = " in ln}
    assert lines["model"].endswith(f"# {places.system}")
    assert f'"{places.system.parent / "unet.tflite"}"' in lines["model"]
    assert lines["stream"].startswith('stream = "0.0.0.0:8080"')
    assert lines["alpha"].startswith("alpha = 0.6") and lines["alpha"].endswith(str(places.here))
    assert lines["headless"].startswith("headless = true")
    assert f"{places.user} (not found)" in result.stdout
    assert f"{places.system} (read)" in result.stdout
    # The output is itself a config file (values in TOML, sources in comments).
    copy = tmp_path / "copy.toml"
    copy.write_text(result.stdout)
    again = load_config(run_params(run_command()), copy).values()
    assert again["alpha"] == 0.6 and again["headless"] is True

    result = runner.invoke(app, ["config", "show", "--config", str(places.here)])
    assert "model" not in result.stdout and "alpha = 0.6" in result.stdout
    result = runner.invoke(app, ["config", "path"])
    assert result.exit_code == 0
    assert [ln.split()[0] for ln in result.stdout.splitlines()] == ["found", "missing", "found"]


def test_config_show_without_files(places: Places) -> None:
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "no config file found" in result.stdout


# --------------------------------------------------------------------------------------------
# End to end: a device config and `edgeseg run` with no model argument
# --------------------------------------------------------------------------------------------


def test_run_from_the_system_config_with_no_model_argument(places: Places, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    pytest.importorskip("tensorflow")
    etc = places.system.parent
    bright_model(etc / "bright.tflite")
    write_nuclei_video(etc / "camera.avi", 6, (96, 128), seed=3)  # stands in for the camera
    places.system.write_text(
        "# the device's settings\n"
        'model = "bright.tflite"\n'
        'source = "camera.avi"\n'
        "headless = true\n"
        'save-masks = "masks/"\n'
        "max-frames = 4\n"
    )
    result = runner.invoke(app, ["run"])  # from tmp_path/cwd: paths are the file's
    assert result.exit_code == 0, result.output
    masks = sorted((etc / "masks").iterdir())
    assert len(masks) == 4
    assert f"config: {places.system}" in result.stderr
    assert not (places.cwd / "masks").exists()


def test_the_readme_example_config_is_valid(tmp_path: Path) -> None:
    """The "Deploy on a Pi" config of the README passes the checks `run` applies."""
    import re

    readme = Path(__file__).resolve().parents[1] / "README.md"
    block = re.search(r"```toml\n(# /etc/edgeseg/edgeseg\.toml.*?)```", readme.read_text(), re.S)
    assert block is not None
    path = tmp_path / "edgeseg.toml"
    path.write_text(block.group(1))
    result = runner.invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0, result.output
    for key in ("model", "source", "stream", "record", "record-max-bytes"):
        assert f"{key} = " in result.output
