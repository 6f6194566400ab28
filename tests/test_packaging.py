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
