"""The extras: what a Raspberry Pi installs (`runtime`) must not pull TensorFlow."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires

import pytest


def _requirements() -> list[str]:
    """edgeseg's installed requirements; skip (only) when edgeseg is not installed."""
    try:
        return requires("edgeseg") or []
    except PackageNotFoundError as exc:
        pytest.skip(
            f"edgeseg is not installed as a distribution (PackageNotFoundError: {exc}); "
            "pip install -e . to check its extras"
        )


def _extra_requirements(extra: str, seen: set[str] | None = None) -> set[str]:
    """Distribution names that `pip install edgeseg[extra]` brings, following edgeseg[...]."""
    seen = seen or set()
    seen.add(extra)
    names: set[str] = set()
    for req in _requirements():
        spec, _, marker = req.partition(";")
        in_extra = not marker.strip() or re.search(rf"extra == ['\"]{extra}['\"]", marker)
        if extra == "" and "extra ==" in marker:
            continue
        if not in_extra:
            continue
        name = re.split(r"[\s\[<>=!~]", spec.strip(), maxsplit=1)[0].lower()
        if name == "edgeseg":
            for sub in re.findall(r"\[(.*?)\]", spec)[0].split(","):
                if sub.strip() not in seen:
                    names |= _extra_requirements(sub.strip(), seen)
        else:
            names.add(name)
    return names


def test_runtime_extra_has_litert_and_no_tensorflow() -> None:
    runtime = _extra_requirements("runtime")
    assert {"ai-edge-litert", "opencv-python-headless", "numpy", "tifffile"} <= runtime
    assert not {n for n in runtime if n.startswith("tensorflow") or n in ("keras", "tf-keras")}


def test_convert_extra_brings_tensorflow_and_runtime() -> None:
    convert = _extra_requirements("convert")
    assert {"tensorflow-cpu", "tensorflow"} & convert
    assert "ai-edge-litert" in convert
    assert {"tensorflow-cpu", "ai-edge-litert", "onnxruntime"} <= _extra_requirements(
        "all"
    ) | _extra_requirements("onnx")


def test_onnx_import_extra_pins_onnx2tf_and_leaves_out_tf_keras() -> None:
    """onnx2tf 1.28.x installs beside TensorFlow 2.21 and numpy 2 (1.29+ pins
    tensorflow==2.19); tf-keras would bring the full `tensorflow` distribution beside
    `tensorflow-cpu` on x86-64, so the importer does without it (onnx2tf_child)."""
    names = _extra_requirements("onnx-import")
    assert {"onnx2tf", "onnx", "onnxsim", "onnxruntime", "tensorflow-cpu"} <= names
    assert not names & {"tf-keras", "tf_keras", "torch"}
    pins = [r for r in _requirements() if r.startswith("onnx2tf")]
    assert pins and all("==1.28.8" in r for r in pins), pins
    assert "onnx2tf" in _extra_requirements("all")
    assert not _extra_requirements("runtime") & {"onnx2tf", "torch", "tensorflow"}
