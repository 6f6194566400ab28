"""`--backend auto`: which runtime it picks and why, the clean fall-back when a runtime cannot
load a model, and the cache of its choice (invalidated by the model, a runtime version, the
threads or the frame size). Measurements are injected: nothing here depends on which runtime
is faster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import bright_model, one_line_error, probe_model
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.runtime import selection
from edgeseg.runtime.selection import Measurement, choose_runtime

runner = CliRunner()
BOTH = {"litert": "ai-edge-litert 2.3.0", "openvino": "openvino 2026.4.1"}
LABELS = np.zeros((2, 8, 8), np.uint8)
LABELS[:, 2:6, 2:6] = 1


class FakeMeasure:
    """Injected measurement: fixed medians and label maps per runtime; counts its calls."""

    def __init__(self, ms: dict[str, float], labels: dict[str, np.ndarray] | None = None,
                 errors: dict[str, str] | None = None) -> None:  # fmt: skip
        self.ms, self.labels, self.errors = ms, labels or {}, errors or {}
        self.calls: list[tuple[str, int, tuple[int, int] | None]] = []

    def __call__(self, path: Path, runtime: str, threads: int, frame) -> Measurement:
        self.calls.append((runtime, threads, frame))
        if runtime in self.errors:
            return Measurement(runtime, error=self.errors[runtime])
        return Measurement(
            runtime,
            label=f"{runtime} x",
            median_ms=self.ms[runtime],
            times_ms=(self.ms[runtime],),
            labels=self.labels.get(runtime, LABELS),
        )

    def rounds(self) -> int:
        return sum(1 for runtime, _, _ in self.calls if runtime == "litert")


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return probe_model(tmp_path / "m.tflite")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_only_litert_installed_picks_it_without_measuring(model: Path) -> None:
    def never(*_args):
        raise AssertionError("nothing to compare: no measuring")

    choice = choose_runtime(model, installed={"litert": "x"}, measure=never)
    assert choice.runtime == "litert" and choice.source == "only"
    assert not selection.cache_file().exists()


def test_fastest_that_agrees_is_chosen_and_explained(model: Path) -> None:
    fake = FakeMeasure({"litert": 8.8, "openvino": 4.7})
    choice = choose_runtime(model, threads=2, installed=BOTH, measure=fake)
    assert choice.runtime == "openvino" and choice.source == "measured"
    assert [c[0] for c in fake.calls] == ["litert", "openvino"]  # the reference first
    text = "\n".join(choice.lines())
    assert "openvino" in text and "4.700 ms" in text and "8.800 ms" in text
    assert "1.87x litert" in choice.reason


def test_label_maps_must_agree_within_dice_for_every_class(model: Path) -> None:
    """int8 and float models alike (the model here is int8-free; the rule does not ask): a
    runtime qualifies when the Dice of every class with the reference's reaches MIN_DICE."""
    off = LABELS.copy()
    off[0, 0, 0] = 1  # one pixel of 32 foreground pixels differs: Dice 0.98
    fake = FakeMeasure({"litert": 9.0, "openvino": 5.0}, {"openvino": off})
    choice = choose_runtime(model, installed=BOTH, measure=fake)
    assert choice.runtime == "litert"
    verdict = {t.runtime: t.verdict for t in choice.trials}
    assert "every class" in verdict["openvino"] and "left out" in verdict["openvino"]
    lines = "\n".join(choice.lines())
    assert "Dice 0.98" in lines  # the measured agreement is explained
    # within the bound: a handful of boundary pixels of a large map (int8 rounding) agree
    big = np.zeros((2, 100, 100), np.uint8)
    big[:, 10:90, 10:90] = 1
    near = big.copy()
    near[0, 10, 10] = 0
    fake = FakeMeasure({"litert": 9.0, "openvino": 5.0}, {"litert": big, "openvino": near})
    selection.cache_file().unlink()
    choice = choose_runtime(model, installed=BOTH, measure=fake)
    assert choice.runtime == "openvino"
    # ... and the agreement is kept in the cache with the choice
    cached = json.loads(selection.cache_file().read_text())["choices"]
    trials = next(iter(cached.values()))["trials"]
    ov = next(t for t in trials if t["runtime"] == "openvino")
    assert 0.999 <= ov["dice"] < 1.0 and ov["identical"] is False
    assert choose_runtime(model, installed=BOTH, measure=fake).trials == choice.trials
    # a small class is not drowned by a large one: class 2's Dice counts on its own
    two = big.copy()
    two[:, 0:4, 0:4] = 2
    small_off = two.copy()
    small_off[0, 0:2, 0:4] = 0  # class 2 loses a quarter of its pixels in one frame
    fake = FakeMeasure({"litert": 9.0, "openvino": 5.0}, {"litert": two, "openvino": small_off})
    selection.cache_file().unlink()
    assert choose_runtime(model, installed=BOTH, measure=fake).runtime == "litert"


def test_agreement_per_class_and_for_object_ids() -> None:
    from edgeseg.runtime.selection import agreement

    a = np.zeros((10, 10), np.uint8)
    a[:5] = 1
    a[5:, :2] = 2
    assert agreement(a, a) == (1.0, True)
    b = a.copy()
    b[9, 0] = 1  # one class-2 pixel of 10 becomes class 1
    dice, identical = agreement(b, a)
    assert not identical and dice == pytest.approx(2 * 9 / 19)  # class 2's, the lowest
    # object ids (an instance model): numbering may differ, the foreground is scored
    ids = np.zeros((10, 10), np.int32)
    ids[:5] = 7
    renumbered = np.where(ids > 0, 3, 0).astype(np.int32)
    assert agreement(renumbered, ids) == (1.0, False)
    assert agreement(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)) == (1.0, True)
    assert agreement(np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8)) == (0.0, False)


def test_a_runtime_that_cannot_load_the_model_is_left_out(model: Path) -> None:
    fake = FakeMeasure({"litert": 9.0}, errors={"openvino": "cannot be read by openvino"})
    choice = choose_runtime(model, installed=BOTH, measure=fake)
    assert choice.runtime == "litert"
    assert "cannot be read" in next(t.verdict for t in choice.trials if t.runtime == "openvino")
    # the reference failing too: the reference is returned, so that opening it says why
    fake = FakeMeasure({}, errors={"litert": "broken", "openvino": "broken"})
    model.write_bytes(model.read_bytes() + b"\0")
    assert choose_runtime(model, installed=BOTH, measure=fake).runtime == "litert"


def test_a_child_that_fails_is_a_measurement_not_an_exception(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\0" * 64)
    m = selection.measure_in_child(bad, "litert", 1, None)
    assert m.error and m.median_ms is None and "\n" not in m.error


def test_cache_is_invalidated_by_model_versions_threads_and_frame_size(model: Path) -> None:
    fake = FakeMeasure({"litert": 9.0, "openvino": 5.0})

    def choose(installed=BOTH, threads=2, frame=(64, 64)):
        return choose_runtime(
            model, threads=threads, frame_size=frame, installed=installed, measure=fake
        )

    assert choose().source == "measured" and fake.rounds() == 1
    assert choose().source == "cached" and fake.rounds() == 1
    assert choose(threads=1).source == "measured" and fake.rounds() == 2
    assert choose(frame=(768, 1024)).source == "measured" and fake.rounds() == 3
    newer = dict(BOTH, openvino="openvino 2027.0.0")
    assert choose(installed=newer).source == "measured" and fake.rounds() == 4
    assert choose(threads=1).source == "cached" and fake.rounds() == 4  # earlier ones are kept
    model.write_bytes(model.read_bytes() + b"\0")  # another model at the same path
    assert choose().source == "measured" and fake.rounds() == 5
    assert fake.calls[-1][1:] == (2, (64, 64))  # measured with the threads and frame asked for
    data = json.loads(selection.cache_file().read_text())
    assert len(data["choices"]) == 5
    keys = [c["key"] for c in data["choices"].values()]
    assert all({"device", "model_sha256", "versions", "threads", "frame"} <= set(k) for k in keys)


def test_unwritable_cache_measures_every_time_and_warns_once(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(selection, "_warned_unwritable", False)
    fake = FakeMeasure({"litert": 9.0, "openvino": 5.0})
    said: list[str] = []
    for _ in range(3):
        assert choose_runtime(model, installed=BOTH, measure=fake, warn=said.append).runtime
    assert fake.rounds() == 3
    assert len(said) == 1 and "cache" in said[0]


def test_delegates_mean_litert_without_measuring(model: Path) -> None:
    from edgeseg.runtime.backends import resolve_runtime as backend_kind

    assert backend_kind(model, "auto", "edgetpu") == "litert"
    assert backend_kind(model.with_name("m_edgetpu.tflite"), "auto", "auto") == "litert"
    assert backend_kind(model, "auto", "auto") == "auto"
    assert backend_kind(model, None, "auto") == "litert"
    onnx = model.with_suffix(".onnx")
    assert backend_kind(onnx, "auto", "tensorrt") == "onnxruntime"
    assert backend_kind(onnx, None, "auto") == "onnxruntime"


def test_run_auto_explains_its_pick_and_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --backend auto --explain` with a runtime that fails to load the model: LiteRT runs,
    the reason is said, nothing breaks."""
    pytest.importorskip("cv2")
    model = bright_model(tmp_path / "bright.tflite", size=32)
    fake = FakeMeasure({"litert": 1.0}, errors={"openvino": "cannot be read by openvino"})
    monkeypatch.setattr(selection, "measure_in_child", fake)
    monkeypatch.setattr(selection, "installed_runtimes", lambda: dict(BOTH))
    args = ["run", str(model), "--source", "synthetic://?size=32x32&frames=2", "--headless",
            "--save-masks", str(tmp_path / "masks"), "--explain"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "backend auto: litert (measured)" in result.output
    assert "cannot be read by openvino" in result.output
    assert "picked by auto (measured)" in result.output, result.output
    result = runner.invoke(app, args)  # cached now
    assert result.exit_code == 0 and "litert (cached)" in result.output
    assert fake.rounds() == 1


def test_run_auto_with_real_children(tmp_path: Path) -> None:
    """The real thing, both runtimes in their own processes: whichever is faster here, the
    pick agrees with LiteRT and is cached."""
    pytest.importorskip("openvino")
    model = bright_model(tmp_path / "bright.tflite", size=32)
    choice = choose_runtime(model, threads=1)
    assert choice.source == "measured" and choice.runtime in ("litert", "openvino")
    assert {t.runtime for t in choice.trials} == {"litert", "openvino"}
    assert all(t.median_ms and t.median_ms > 0 and t.qualifies for t in choice.trials)
    assert choose_runtime(model, threads=1).source == "cached"


def test_unknown_backend_is_one_line_error(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "m.tflite")
    result = runner.invoke(
        app, ["run", str(model), "--backend", "tpu", "--headless", "--source",
              "synthetic://?frames=1"],
    )  # fmt: skip
    one_line_error(result, "tpu", "auto, litert, openvino, onnxruntime")
    result = runner.invoke(
        app, ["run", str(model), "--backend", "onnxruntime", "--headless", "--source",
              "synthetic://?frames=1"],
    )  # fmt: skip
    one_line_error(result, "onnxruntime", ".onnx")
