"""A new runtime is one file and one registry line.

The runtime here is a throw-away distribution on ``PYTHONPATH``: one module
(``fake_edgeseg_runtime.py``, its adapter and its ``RUNTIME`` entry) and one line of metadata
(an entry point in the ``edgeseg.runtimes`` group). Nothing else of edgeseg changes, yet
``run``, ``eval`` and ``--backend auto`` (which measures each runtime in a child process) all
run models through it. Its backend is LiteRT underneath and remembers its last answers, so it
gives LiteRT's label maps and is the fastest to measure: ``auto`` has a reason to pick it.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import bright_model, one_line_error, write_pairs
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.runtime.backends import registry

runner = CliRunner()

FAKE_MODULE = '''
"""A runtime for edgeseg's registry test: LiteRT underneath, with a memory of its answers."""
from edgeseg.runtime.backends.base import Opened, QuantizedModel
from edgeseg.runtime.backends.litert import TFLiteBackend
from edgeseg.runtime.backends.registry import Runtime


class FakeBackend(QuantizedModel):
    def __init__(self, path, threads=None):
        self._inner = TFLiteBackend(path, threads=threads)
        self.path, self.threads = self._inner.path, threads
        self.input, self.output = self._inner.input, self._inner.output
        self.runtime = "fake-runtime 0.1"
        self._memory = {}

    def invoke(self, x):
        key = x.tobytes()
        if key not in self._memory:
            self._memory = {key: self._inner.invoke(x)}
        return self._memory[key].copy()

    def _read_metadata(self):
        return self._inner.metadata()


def _open(path, *, threads=None, delegate="auto", device=None, fallback=False, warn=None):
    return Opened(FakeBackend(path, threads), "fake", path, "CPU", "memory", threads)


RUNTIME = Runtime(
    name="fake",
    title="Fake",
    reads=(".tflite",),
    distributions=("fake-edgeseg-runtime",),
    modules=("fake_edgeseg_runtime",),
    open=_open,
    reopen=lambda backend, threads: FakeBackend(backend.path, threads),
)
'''


@pytest.fixture()
def fake_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The throw-away distribution, on this process's path and every child's."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fake_edgeseg_runtime.py").write_text(textwrap.dedent(FAKE_MODULE))
    info = site / "fake_edgeseg_runtime-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-edgeseg-runtime\nVersion: 0.1\n"
    )
    # The one registry line:
    (info / "entry_points.txt").write_text(
        "[edgeseg.runtimes]\nfake = fake_edgeseg_runtime:RUNTIME\n"
    )
    monkeypatch.syspath_prepend(str(site))
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(site), *([inherited] if inherited else [])])
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return site


def test_the_registry_finds_the_new_runtime(fake_runtime: Path) -> None:
    assert "fake" in registry.backend_names()
    assert registry.installed_runtimes()["fake"] == "fake-edgeseg-runtime 0.1"
    model = Path("m.tflite")
    assert [r.name for r in registry.readers(model)][:1] == ["litert"]  # the native one first
    assert "fake" in [r.name for r in registry.readers(model)]
    assert registry.registry_problems() == () and list(registry.plugins()) == ["fake"]
    result = runner.invoke(app, ["doctor"])
    line = next(ln for ln in result.output.splitlines() if "--backend fake" in ln)
    assert "fake-edgeseg-runtime 0.1" in line and ".tflite" in line


def test_run_eval_and_auto_go_through_it(fake_runtime: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    model = bright_model(tmp_path / "bright.tflite", size=32)
    source = "synthetic://?size=48x64&frames=3"

    def masks(backend: str, *extra: str) -> tuple[str, list[np.ndarray]]:
        from edgeseg.imageio import list_images, read_image

        out = tmp_path / f"masks-{backend}"
        args = ["run", str(model), "--source", source, "--headless", "--backend", backend]
        result = runner.invoke(app, [*args, "--save-masks", str(out), *extra])
        assert result.exit_code == 0, result.output
        return result.output, [read_image(p) for p in list_images(out)]

    said, fake = masks("fake")
    assert "via fake-runtime 0.1" in said  # the start-up line names what runs
    _, lite = masks("litert")
    assert len(fake) == 3 and all(np.array_equal(a, b) for a, b in zip(fake, lite, strict=True))
    assert sum(int(m.sum()) for m in fake) > 0

    data = write_pairs(tmp_path / "data", n=2, size=(40, 48))
    scores = {}
    for backend in ("fake", "litert"):
        out = tmp_path / f"{backend}.json"
        result = runner.invoke(app, ["eval", str(model), "--data", str(data), "--backend", backend,
                                     "--json", str(out), "--explain"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"running on CPU ({'memory' if backend == 'fake' else 'XNNPACK'}" in result.output
        scores[backend] = json.loads(out.read_text())["classes"]
    assert scores["fake"] == scores["litert"]

    # auto measures it in a child process like the built-in runtimes, finds its label maps
    # agree with LiteRT's, and picks it: its answers come from memory, so it is the fastest.
    said, auto = masks("auto", "--explain")
    assert "backend auto: fake (measured)" in said, said
    assert "picked by auto (measured)" in said and "via fake-runtime 0.1" in said
    fake_line = next(line for line in said.splitlines() if line.strip().startswith("fake "))
    assert "labels identical" in fake_line and "chosen" in fake_line
    assert all(np.array_equal(a, b) for a, b in zip(auto, lite, strict=True))


def test_a_broken_entry_point_is_listed_not_fatal(
    fake_runtime: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    info = fake_runtime / "fake_edgeseg_runtime-0.1.dist-info" / "entry_points.txt"
    info.write_text("[edgeseg.runtimes]\nfake = fake_edgeseg_runtime:NOTHING\n")
    monkeypatch.syspath_prepend(str(fake_runtime))  # a new path: the registry reads it again
    assert "fake" not in registry.runtimes()
    problems = registry.registry_problems()
    assert len(problems) == 1 and "fake" in problems[0] and "NOTHING" in problems[0]
    assert "NOTHING" in runner.invoke(app, ["doctor"]).output  # doctor says what is wrong
    model = bright_model(tmp_path / "bright.tflite", size=32)
    result = runner.invoke(app, ["run", str(model), "--backend", "fake", "--headless",
                                 "--source", "synthetic://?frames=1"])  # fmt: skip
    one_line_error(result, "unknown --backend 'fake'")
