"""A quiet console: TensorFlow's own output goes to a log file, edgeseg's lines to the terminal.

The commands run in child processes, so what is checked is what really reaches file
descriptors 1 and 2, where TensorFlow's C++ code writes.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import pytest
from helpers import TF_NOISE, edgeseg_subprocess, write_pairs

from edgeseg import quiet as quiet_module
from edgeseg.cli.common import quiet_console
from edgeseg.quiet import KEEP_LOGS, cache_log_dir, is_log_file, new_log_path, quiet

LOG = re.compile(r"\(details in (\S+edgeseg-convert-\S+\.log)\)")


def _no_noise(text: str) -> None:
    found = [needle for needle in TF_NOISE if needle in text]
    assert not found, f"{found} reached the console:\n{text}"


def _logs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_log_file(p))


# --------------------------------------------------------------------------------------------
# The mechanism, in this process (pytest's own capture holds fd 1 and 2: pipes or files)
# --------------------------------------------------------------------------------------------


def test_quiet_sends_fds_warnings_and_loggers_to_the_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import logging

    log = tmp_path / "edgeseg-test-1.log"
    before = (os.fstat(1).st_ino, os.fstat(2).st_ino)
    logging.getLogger("absl").warning("absl python logger line")
    capfd.readouterr()
    with quiet(log) as q:
        assert q.log_path == log and not q.verbose
        os.write(1, b"fd1 from C++\n")
        os.write(2, b"fd2 from C++\n")
        print("python print")
        print("python stderr", file=sys.stderr)
        warnings.warn("a quantizer warning", UserWarning, stacklevel=1)
        logging.getLogger("absl").warning("absl line")
        q.stdout.write("progress on stdout\n")
        q.stderr.write("progress on stderr\n")
    os.write(1, b"after\n")
    seen = capfd.readouterr()
    assert "progress on stdout" in seen.out and "after" in seen.out
    assert "progress on stderr" in seen.err
    for hidden in ("fd1 from", "fd2 from", "python print", "python stderr", "quantizer", "absl"):
        assert hidden not in seen.out + seen.err, hidden
    text = log.read_text()
    for hidden in ("fd1 from", "fd2 from", "python print", "python stderr", "a quantizer warning"):
        assert hidden in text, hidden
    assert "absl line" in text
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_quiet_restores_everything_on_errors_and_ctrl_c(
    tmp_path: Path, error: type[BaseException], capfd: pytest.CaptureFixture[str]
) -> None:
    streams = (sys.stdout, sys.stderr, warnings.showwarning)
    inodes = (os.fstat(1).st_ino, os.fstat(2).st_ino)
    with pytest.raises(error), quiet(tmp_path / "edgeseg-x.log"):
        os.write(2, b"inside\n")
        raise error()
    assert (sys.stdout, sys.stderr, warnings.showwarning) == streams
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == inodes
    os.write(2, b"outside\n")
    seen = capfd.readouterr().err
    assert "outside" in seen and "inside" not in seen
    assert quiet_module.active() is None


def test_nested_blocks_share_one_log_and_verbose_hides_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    with quiet(tmp_path / "edgeseg-outer.log") as outer, quiet(tmp_path / "edgeseg-in.log") as q:
        assert q is outer
        os.write(1, b"nested\n")
    assert "nested" in (tmp_path / "edgeseg-outer.log").read_text()
    assert not (tmp_path / "edgeseg-in.log").exists()

    capfd.readouterr()
    with quiet(tmp_path / "edgeseg-v.log", verbose=True) as q:
        assert q.log_path is None and q.verbose
        os.write(1, b"live\n")
    # The command line's block: EDGESEG_VERBOSE=1 is --verbose.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGESEG_VERBOSE", "1")
    with quiet_console("test", tmp_path / "out") as log:
        assert log is None
        os.write(1, b"env live\n")
    out = capfd.readouterr().out
    assert "live" in out and "env live" in out
    assert not (tmp_path / "edgeseg-v.log").exists() and not (tmp_path / "out").exists()
    monkeypatch.setenv("EDGESEG_VERBOSE", "0")
    with quiet_console("test", tmp_path / "out") as log:
        assert log is not None and log.parent == tmp_path / "out"
        os.write(1, b"hidden\n")
    assert "hidden" not in capfd.readouterr().out and "hidden" in log.read_text()


def test_log_names_places_pruning_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cache_log_dir() == tmp_path / "cache" / "edgeseg" / "logs"
    folder = tmp_path / "out"
    path = new_log_path("convert", folder)
    assert path is not None and path.parent == folder
    assert re.fullmatch(r"edgeseg-convert-\d{8}-\d{6}(-\d+)?\.log", path.name)
    # An output folder that cannot be made (under a file): the cache folder.
    (tmp_path / "afile").write_text("x")
    fallback = new_log_path("train", tmp_path / "afile" / "sub")
    assert fallback is not None and fallback.parent == cache_log_dir()
    # The newest few logs are kept, nothing else of the folder is touched.
    (folder / "model.keras").write_text("mine")
    for i in range(KEEP_LOGS + 3):
        old = folder / f"edgeseg-old-{i}.log"
        old.write_text("old")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    newest = new_log_path("convert", folder)
    logs = _logs(folder)
    assert len(logs) == KEEP_LOGS and newest in logs and path in logs
    assert not (folder / "edgeseg-old-0.log").exists()
    assert (folder / "model.keras").read_text() == "mine"
    # A log that grew too large keeps its head and its tail.
    monkeypatch.setattr(quiet_module, "MAX_LOG_BYTES", 4000)
    big = folder / "edgeseg-big.log"
    with quiet(big):
        os.write(1, b"FIRST\n" + b"x" * 20_000 + b"\nLAST\n")
    text = big.read_text()
    assert len(text) < 4200 and "FIRST" in text and "LAST" in text and "bytes cut" in text


# --------------------------------------------------------------------------------------------
# The commands, in child processes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def convert_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("quiet") / "data", n=4, size=(32, 32))


def _convert(tiny_unet: Path, data: Path, out: Path, *extra: str, verbose: bool = False):
    argv = ["--verbose"] if verbose else []
    argv += ["convert", str(tiny_unet), "--fp16", "--calib", str(data / "images")]
    argv += ["--val", str(data), "--out", str(out), *extra]
    return edgeseg_subprocess(argv, out.parent / "cache")


def test_convert_console_is_quiet_and_the_log_has_the_rest(
    tiny_unet: Path, convert_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "build"
    done = _convert(tiny_unet, convert_data, out)
    assert done.returncode == 0, done.stdout + done.stderr
    _no_noise(done.stdout + done.stderr)
    # edgeseg's own progress and results still show.
    assert f"loading {tiny_unet}" in done.stderr and "converting fp16" in done.stderr
    assert "checking tiny_fp16.tflite on the held-out frames" in done.stderr
    assert "| fp16 |" in done.stdout and f"wrote {out / 'tiny_fp16.tflite'}" in done.stdout
    (log,) = _logs(out)
    assert log.name.startswith("edgeseg-convert-")
    text = log.read_text()
    assert "Saved artifact at" in text and "TensorSpec(" in text


def test_verbose_shows_tensorflow_live(tiny_unet: Path, convert_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "build"
    done = _convert(tiny_unet, convert_data, out, verbose=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Saved artifact at" in done.stdout + done.stderr
    assert "converting fp16" in done.stderr
    assert _logs(out) == []


def test_a_failing_step_names_its_log(tiny_unet: Path, convert_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "build"
    done = _convert(tiny_unet, convert_data, out, "--int8", "--keep-float", "no_such_layer")
    assert done.returncode != 0
    _no_noise(done.stdout + done.stderr)
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "no_such_layer" in errors[0]
    match = LOG.search(errors[0])
    assert match, errors[0]
    log = Path(match.group(1))
    log = log if log.is_absolute() else Path.cwd() / log
    assert log.parent == out and log.is_file()
    text = log.read_text()
    assert "no_such_layer" in text and "Saved artifact at" in text


@pytest.mark.slow
def test_demo_quick_console_is_edgesegs_own(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    pytest.importorskip("ai_edge_litert")
    out = tmp_path / "demo"
    done = edgeseg_subprocess(["demo", "--quick", "--out", str(out)], tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    console = done.stdout + done.stderr
    _no_noise(console)
    for line in ("step 1/6: samples", "step 3/6: convert", "  converting int8", "step 6/6"):
        assert line in console, line
    assert "demo finished in" in done.stdout
    # Some 50 lines, all edgeseg's, where TensorFlow alone used to print 500.
    assert len(console.splitlines()) < 80, console
    (log,) = _logs(out)
    assert f"log: {log}" in done.stdout
    text = log.read_text()
    assert text.count("Saved artifact at") >= 3 and "UserWarning" in text


def test_eval_table_is_whole_when_not_a_terminal(tiny_unet: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", n=2, size=(32, 32))
    long = "a_long_file_name_straight_from_the_microscope_acquisition_software_0001"
    for sub in ("images", "masks"):
        (data / sub / "0.png").rename(data / sub / f"{long}.png")
    done = edgeseg_subprocess(
        ["eval", str(tiny_unet), "--data", str(data), "--per-image"], tmp_path / "cache"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _no_noise(done.stdout + done.stderr)
    header = next(ln for ln in done.stdout.splitlines() if "Dice" in ln)
    cells = [c.strip() for c in re.split(r"[┃│|]", header) if c.strip()]
    assert cells == ["class", "image", "Dice", "IoU", "precision", "recall", "accuracy", "HD95 px"]
    assert long in done.stdout
    assert max(len(ln) for ln in done.stdout.splitlines()) > 80
