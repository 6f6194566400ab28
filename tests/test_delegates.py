"""Delegates: the Edge TPU up to the missing library, libraries by path, CPU fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeseg import hardware
from edgeseg.errors import DataError, MissingDependencyError, ModelError
from edgeseg.hardware import EdgeTPU
from edgeseg.runtime.backends import cpu_sibling, litert, open_backend

pytest.importorskip("ai_edge_litert")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def int8_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny int8 model `m.tflite` and a copy named as the Edge TPU compiler names its output."""
    import keras

    inp = keras.Input((16, 16, 1), batch_size=1)
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: (
        [rng.random((1, 16, 16, 1), np.float32)] for _ in range(8)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    root = tmp_path_factory.mktemp("delegates")
    (root / "m.tflite").write_bytes(conv.convert())
    shutil.copy(root / "m.tflite", root / "m_edgetpu.tflite")
    return root


def test_cpu_and_auto(int8_pair: Path) -> None:
    opened = open_backend(int8_pair / "m.tflite", delegate="auto", threads=1)
    backend, chosen = opened.backend, opened.describe()
    assert "CPU" in chosen and "ai-edge-litert" in chosen and opened.cpu
    assert backend.predict(np.zeros((1, 16, 16, 1), np.float32)).shape == (1, 16, 16, 1)


def test_edgetpu_library_missing_is_named(int8_pair: Path, capsys: pytest.CaptureFixture) -> None:
    # No libedgetpu on this machine: auto picks the Edge TPU for *_edgetpu.tflite and says why
    # it cannot, in one line, without LiteRT's stray "Exception ignored" traceback.
    with pytest.raises(MissingDependencyError, match=r"libedgetpu\.so\.1 is not installed") as e:
        open_backend(int8_pair / "m_edgetpu.tflite", delegate="auto")
    assert "\n" not in str(e.value) and "coral.ai" in str(e.value)
    assert "Traceback" not in capsys.readouterr().err


def test_fallback_runs_the_cpu_sibling(int8_pair: Path) -> None:
    warnings: list[str] = []
    opened = open_backend(
        int8_pair / "m_edgetpu.tflite", delegate="edgetpu", fallback=True, warn=warnings.append
    )
    backend, chosen = opened.backend, opened.describe()
    assert backend.path.name == "m.tflite" and "fallback" in chosen
    assert opened.model.name == "m.tflite" and opened.cpu and "libedgetpu" in opened.fallback
    assert len(warnings) == 1 and "falling back to m.tflite" in warnings[0]


def test_fallback_without_sibling(int8_pair: Path, tmp_path: Path) -> None:
    lone = tmp_path / "x_edgetpu.tflite"
    shutil.copy(int8_pair / "m.tflite", lone)
    with pytest.raises(ModelError, match="no CPU sibling"):
        open_backend(lone, delegate="edgetpu", fallback=True)


def test_no_device_and_version_mismatch_are_told_apart(
    int8_pair: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def failing(library: str, options: dict) -> None:
        raise ValueError("Failed to load delegate from libedgetpu.so.1")

    monkeypatch.setattr(litert, "_load_delegate_function", lambda: failing)
    monkeypatch.setattr(hardware, "edgetpus", lambda: [])
    with pytest.raises(DataError, match="no Edge TPU attached"):
        open_backend(int8_pair / "m_edgetpu.tflite")
    monkeypatch.setattr(hardware, "edgetpus", lambda: [EdgeTPU("usb", "2-1 (18d1:9302)")])
    with pytest.raises(ModelError, match=r"attached \(usb:2-1 \(18d1:9302\)\).*built against one"):
        open_backend(int8_pair / "m_edgetpu.tflite")


def test_device_option_reaches_the_delegate(
    int8_pair: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}

    def recording(library: str, options: dict) -> None:
        seen.update(library=library, options=options)
        raise ValueError("Failed to load delegate")

    monkeypatch.setattr(litert, "_load_delegate_function", lambda: recording)
    monkeypatch.setattr(hardware, "edgetpus", lambda: [])
    with pytest.raises(DataError):
        open_backend(int8_pair / "m_edgetpu.tflite", device="usb:1")
    assert seen == {"library": "libedgetpu.so.1", "options": {"device": "usb:1"}}


def test_delegate_library_by_path(int8_pair: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="not found"):
        open_backend(int8_pair / "m.tflite", delegate=str(tmp_path / "libnope.so"))
    bad = tmp_path / "libbad.so"
    bad.write_bytes(b"not a library")
    with pytest.raises(ModelError, match="cannot load delegate"):
        open_backend(int8_pair / "m.tflite", delegate=str(bad))


def test_cpu_sibling_from_metadata_or_name(tmp_path: Path) -> None:
    from edgeseg.core.metadata import ModelMetadata

    (tmp_path / "a.tflite").write_bytes(b"")
    (tmp_path / "plain.tflite").write_bytes(b"")
    assert cpu_sibling(tmp_path / "a_edgetpu.tflite", None) == tmp_path / "a.tflite"
    meta = ModelMetadata(input_size=(8, 8), provenance={"cpu_sibling": "plain.tflite"})
    assert cpu_sibling(tmp_path / "x_edgetpu.tflite", meta) == tmp_path / "plain.tflite"
    assert cpu_sibling(tmp_path / "zzz.tflite", None) is None
