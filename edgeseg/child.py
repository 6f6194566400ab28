"""Run a Python child process with a timeout and collect what it printed.

Whatever may load native code the machine cannot survive (an interpreter on an untrusted
model, a delegate library, a camera driver) runs in a child: a crash there is a return code
to report, not a dead ``edgeseg``. This module is the one place that spawns such a child;
it imports only the standard library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ChildResult", "run_child", "run_python"]


@dataclass(frozen=True)
class ChildResult:
    """How a child process ended.

    Attributes:
        returncode: Its exit code; negative when a signal killed it; None when it outlived
            its timeout and was killed.
        stdout: What it printed to stdout (what it had printed, on a timeout).
        stderr: What it printed to stderr (what it had printed, on a timeout).
    """

    returncode: int | None
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def signal_name(self) -> str | None:
        """The signal that killed it ("SIGSEGV", or "signal 77" for an unnamed one), or None."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


def run_child(command: Sequence[str], *, timeout: float | None = None) -> ChildResult:
    """Run ``command`` to its end, or kill it after ``timeout`` seconds; never raises for
    what the child does (a crash or a timeout is in the result).

    The child inherits the environment, with TensorFlow's C++ logging quieted
    (``TF_CPP_MIN_LOG_LEVEL=2`` unless set). An OSError starting the command (no such
    executable) propagates.
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed and reaped the child
        return ChildResult(None, _text(exc.stdout), _text(exc.stderr))
    return ChildResult(done.returncode, done.stdout or "", done.stderr or "")


def run_python(args: Sequence[str], *, timeout: float | None = None) -> ChildResult:
    """:func:`run_child` of this interpreter: ``python *args`` (e.g. ``["-c", code]`` or
    ``["-m", "edgeseg.bench.latency", ...]``)."""
    return run_child([sys.executable, *args], timeout=timeout)


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when the output was captured as text.
    if output is None:
        return ""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output
