"""A source ONNX model as PyTorch exports it (NCHW, logits, maybe dynamic H/W) made runnable
by every ONNX runtime edgeseg has (onnxruntime, OpenVINO): the same graph with NHWC image in
and probabilities out, written once to ``$XDG_CACHE_HOME/edgeseg/onnx-adapted/``.

Only an ONNX file without edgeseg metadata whose input is NCHW ``(N, C, H, W)`` (C 1 or 3,
W not) is adapted; edgeseg's own artefacts and NHWC models are opened as they are. What is
done, exact each time (:mod:`edgeseg.core.onnx_graph`): batch 1; dynamic H/W fixed to the
tile size of the sidecar ``<model>.edgeseg.json`` (refused in one line without one); a
``Sigmoid`` (one channel) or ``Softmax`` over channels after logits; two Transposes for the
layout; the sidecar's metadata embedded, so ``run``, ``eval`` and ``bench`` read it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgeseg.core import onnx_graph
from edgeseg.core.metadata import read_sidecar
from edgeseg.errors import ModelError
from edgeseg.paths import atomic_write, file_sha256

__all__ = ["adapt_onnx", "is_source_onnx"]

ADAPT_VERSION = 1
METADATA_KEY = "edgeseg"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "edgeseg" / "onnx-adapted"


def is_source_onnx(model: Any) -> bool:
    """True for an ONNX graph without edgeseg metadata and with an NCHW image input."""
    if any(p.key == METADATA_KEY for p in model.metadata_props):
        return False
    try:
        info = onnx_graph.describe(model)
    except ModelError:
        return False  # the runtime's own check says what is wrong with it
    _, c, _, w = info.input_shape
    return c in (1, 3) and w not in (1, 3)


def adapt_onnx(path: str | Path) -> Path:
    """``path`` itself, or for a source ONNX (see the module docstring) its adapted copy.

    Raises:
        ModelError: a dynamic H/W without a sidecar giving the tile size, or a graph the
            adaptation cannot take (one line).
    """
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return path
    try:
        import onnx
    except ImportError:
        # A device with onnxruntime alone: edgeseg's own artefacts open as they are, and a
        # source ONNX meets the runtime's shape checks (channels 1 or 3) unadapted.
        return path
    try:
        model = onnx.load(str(path))
    except Exception:
        return path  # not readable ONNX: the runtime's own error says so
    if not is_source_onnx(model):
        return path
    sidecar = read_sidecar(path)
    key = json.dumps(
        {
            "sha256": file_sha256(path),
            "sidecar": sidecar.to_dict() if sidecar else None,
            "v": ADAPT_VERSION,
        },
        sort_keys=True,
    )
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    target = _cache_dir() / f"{path.stem}-{name}.onnx"
    if target.is_file():
        return target
    info = onnx_graph.describe(model, path=path)
    size = sidecar.input_size if sidecar else None
    if (info.input_shape[2] is None or info.input_shape[3] is None) and size is None:
        raise ModelError(
            f"{path} takes any image size: put its tile size in {path.stem}.edgeseg.json "
            "(input_size), or convert it (edgeseg convert --input-size HxW)"
        )
    model = onnx_graph.fix_input(model, size, path=path)
    if onnx_graph.detect_activation(model, info.output_name) == "logits":
        model, _ = onnx_graph.append_activation(model, info.output_name, info.output_shape[1] or 1)
    if len(info.outputs) > 1:
        model = onnx_graph.keep_output(model, info.output_name)
    model = onnx_graph.nhwc_wrapped(model, "image", "mask")
    if sidecar is not None:
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = json.dumps({"metadata": sidecar.to_dict(), "adapted_from": str(path)})
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, model.SerializeToString())
    return target
