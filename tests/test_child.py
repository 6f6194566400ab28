"""edgeseg.child: the one runner of Python child processes (bench's measurements, doctor's
probes): exit codes, crashes by a signal, timeouts."""

from __future__ import annotations

import time

import pytest

from edgeseg.child import ChildResult, run_child, run_python


def test_output_and_exit_code() -> None:
    done = run_python(["-c", "import sys; print('out', sys.argv[1]); sys.exit(3)", "x"])
    assert done == ChildResult(3, "out x\n", "")
    assert not done.timed_out and done.signal_name is None


def test_tensorflow_logging_is_quieted_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    code = ["-c", "import os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"]
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert run_python(code).stdout == "2\n"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert run_python(code).stdout == "0\n"


def test_a_crash_is_named_by_its_signal() -> None:
    done = run_python(["-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    assert done.returncode is not None and done.returncode < 0
    assert done.signal_name == "SIGSEGV"
    assert ChildResult(-77, "", "").signal_name == "signal 77"


def test_a_child_past_its_timeout_is_killed() -> None:
    t0 = time.perf_counter()
    done = run_python(
        ["-c", "import sys, time; print('started', flush=True); time.sleep(60)"], timeout=1
    )
    assert time.perf_counter() - t0 < 30
    assert done.timed_out and done.returncode is None and done.signal_name is None
    assert done.stdout == "started\n"  # what it printed before it was killed


def test_a_command_that_cannot_start_raises_oserror(tmp_path) -> None:
    with pytest.raises(OSError):
        run_child([str(tmp_path / "no-such-program")])
