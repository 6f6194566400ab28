"""A source ONNX model as PyTorch exports it (NCHW, logits, maybe dynamic H/W) made runnable
by every ONNX runtime edgeseg has (onnxruntime, OpenVINO): the same graph with NHWC image in
and probabilities out, written once to ``$XDG_CACHE_HOME/edgeseg/onnx-adapted/``.

Only an ONNX file without edgeseg metadata whose input is NCHW ``(N, C, H, W)`` (C 1 or 3,
W not) is adapted; edgeseg's own artefacts and NHWC models are opened as they are. Telling
them apart is cheap: edgeseg's artefacts carry the ``edgeseg`` metadata key (an adapted copy
also ``edgeseg.adapted``), read from the file's top-level protobuf fields without parsing the
graph (:mod:`edgeseg.core.onnx_props`), and the answer is kept per (path, mtime, size).

What is done, exact each time (:mod:`edgeseg.core.onnx_graph`): batch 1; the output named
first kept; a ``Sigmoid`` (one channel) or ``Softmax`` over channels after logits (what the
graph ends in, or what ``--activation`` says it holds); two Transposes for the layout; the
metadata embedded — the sidecar ``<model>.edgeseg.json`` and the metadata flags over it —
so ``run``, ``eval`` and ``bench`` read it. Dynamic H/W become, one adapted file per mode:

- **tiles**: fixed to the tile size (``--input-size``, else the sidecar's ``input_size``);
- **whole frames** (``--whole-frames``; bench's ``--frame-size``): left dynamic, with
  ``size_multiple`` in the metadata — the sidecar's, else the product of the strides of the
  graph's downsampling ops (2**depth) — so each frame runs at its own size padded up to that
  multiple and cropped back (:class:`edgeseg.core.segmenter.Segmenter`).

Without either, a dynamic model is refused in one line. Without the ``onnx`` package (a
device with the ``runtime`` extra and onnxruntime), edgeseg's own artefacts open as they
are and a source ONNX is refused in one line naming the extra to install.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgeseg.core import onnx_graph
from edgeseg.core.metadata import ModelMetadata, apply_flags, read_sidecar
from edgeseg.core.onnx_props import read_metadata_props
from edgeseg.errors import DataError, MissingDependencyError, ModelError
from edgeseg.paths import atomic_write, file_sha256

__all__ = ["ONNX_INSTALL_HINT", "adapt_onnx", "is_edgeseg_onnx", "is_source_onnx"]

ADAPT_VERSION = 2
METADATA_KEY = "edgeseg"
ADAPTED_KEY = "edgeseg.adapted"
ONNX_INSTALL_HINT = "pip install 'edgeseg[onnx]' (the onnx package, no TensorFlow)"

# (path, mtime_ns, size) → whether the file carries edgeseg's keys (an artefact or an adapted
# copy): asked at every open, answered once per process.
_decided: dict[tuple[str, int, int], bool] = {}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "edgeseg" / "onnx-adapted"


def is_edgeseg_onnx(path: str | Path) -> bool:
    """Whether the .onnx file ``path`` carries edgeseg's metadata key (one of edgeseg's
    artefacts, or an adapted copy), read without parsing the graph; kept per (path, mtime,
    size)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    hit = _decided.get(key)
    if hit is None:
        props = read_metadata_props(path) or {}
        hit = METADATA_KEY in props or ADAPTED_KEY in props
        _decided[key] = hit
    return hit


def is_source_onnx(model: Any) -> bool:
    """True for an ONNX graph without edgeseg metadata and with an NCHW image input."""
    if any(p.key in (METADATA_KEY, ADAPTED_KEY) for p in model.metadata_props):
        return False
    try:
        info = onnx_graph.describe(model)
    except ModelError:
        return False  # the runtime's own check says what is wrong with it
    return _nchw(info.input_shape)


def _nchw(shape: tuple[Any, ...]) -> bool:
    return len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3)


def _asked(activation: str | None, whole_frames: bool) -> str:
    return " and ".join(
        f for f, on in (("--activation", activation is not None), ("--whole-frames", whole_frames))
        if on
    )  # fmt: skip


def _source_without_onnx(path: Path) -> bool:
    """Whether ``path`` looks like a source ONNX (NCHW input), asked of onnxruntime when the
    ``onnx`` package is missing; False when onnxruntime cannot say either."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        shape = session.get_inputs()[0].shape
    except Exception:
        return False  # the runtime's own error says what is wrong with it
    return _nchw(tuple(d if isinstance(d, int) else None for d in shape))


def adapt_onnx(
    path: str | Path,
    *,
    activation: str | None = None,
    whole_frames: bool = False,
    flags: dict[str, Any] | None = None,
) -> Path:
    """``path`` itself, or for a source ONNX (see the module docstring) its adapted copy.

    ``activation``: what the source's output holds (logits, sigmoid, softmax; None: read from
    the graph). ``whole_frames``: keep dynamic H/W dynamic (each frame at its own size, padded
    to the model's multiple). ``flags``: the metadata flags (input_size, normalization,
    input_max, threshold, foreground_value, channel_order), over the sidecar's metadata.

    Raises:
        DataError: ``activation`` or ``whole_frames`` for a file they cannot apply to, an
            unknown activation or one that cannot fit the output.
        ModelError: a dynamic H/W without a tile size or whole frames, a multiple that cannot
            be found, or a graph the adaptation cannot take (one line).
        MissingDependencyError: a source ONNX without the ``onnx`` package.
    """
    path = Path(path)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    asked = _asked(activation, whole_frames)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        if asked and path.is_file():
            raise DataError(f"{asked} apply to a source ONNX (a PyTorch export); {path} is not one")
        return path
    activation = onnx_graph.parse_activation(activation)
    if is_edgeseg_onnx(path):
        if asked:
            raise DataError(
                f"{asked} apply to a source ONNX (a PyTorch export); {path.name} is an edgeseg "
                "artefact, which carries its own metadata"
            )
        return path
    try:
        import onnx
    except ImportError:
        if _source_without_onnx(path) or asked:
            raise MissingDependencyError(
                f"{path} is a source ONNX (NCHW, as PyTorch exports it): edgeseg adapts it with "
                f"the onnx package, which is not installed; {ONNX_INSTALL_HINT}"
            ) from None
        return path  # an NHWC model without edgeseg metadata opens as it is
    try:
        model = onnx.load(str(path))
    except Exception:
        return path  # not readable ONNX: the runtime's own error says so
    if not is_source_onnx(model):
        if asked:
            raise DataError(
                f"{asked} apply to a source ONNX (NCHW image input, as PyTorch exports it); "
                f"{path.name} is not one"
            )
        return path
    return _adapted(path, model, activation, whole_frames, flags)


def _adapted(
    path: Path, model: Any, activation: str | None, whole: bool, flags: dict[str, Any]
) -> Path:
    sidecar = read_sidecar(path)
    info = onnx_graph.describe(model, path=path)
    channels = info.output_shape[1]
    onnx_graph.check_activation(activation, channels, path=path.name)
    _, c, h, w = info.input_shape
    dynamic = h is None or w is None
    size = flags.get("input_size") or (sidecar.input_size if sidecar else None)
    multiple = None
    if whole:
        if not dynamic:
            raise DataError(
                f"whole frames (--whole-frames; bench: --frame-size): {path.name} takes {h}x{w} "
                "only (its H and W are fixed); run it in tiles, or export it with dynamic H/W "
                "(dynamic_axes)"
            )
        multiple = (sidecar.size_multiple if sidecar else None) or onnx_graph.size_multiple(model)
        if multiple is None:
            raise ModelError(
                f"{path} takes any image size but edgeseg cannot find the multiple it needs (no "
                "strided MaxPool, AveragePool or Conv): put size_multiple (2**depth) in "
                f"{path.stem}.edgeseg.json, or run tiles with --input-size HxW"
            )
    elif dynamic and size is None:
        raise ModelError(
            f"{path} takes any image size: give its tile size with --input-size HxW (or "
            f"input_size in {path.stem}.edgeseg.json), or run whole frames with --whole-frames "
            "(bench: --frame-size HxW)"
        )
    meta = _metadata(sidecar, info, c, size, multiple, flags, dynamic)
    key = json.dumps(
        {
            "sha256": file_sha256(path),
            "activation": activation,
            "mode": "whole" if whole else "tiles",
            "metadata": meta.to_dict() if meta else None,
            "v": ADAPT_VERSION,
        },
        sort_keys=True,
    )
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    target = _cache_dir() / f"{path.stem}-{name}.onnx"
    if target.is_file():
        return target
    if len(info.outputs) > 1:
        model = onnx_graph.keep_output(model, info.output_name)
    model = onnx_graph.fix_input(model, None if whole else size, path=path, dynamic_hw=whole)
    if (activation or onnx_graph.detect_activation(model, info.output_name)) == "logits":
        model, _ = onnx_graph.append_activation(model, info.output_name, channels or 1)
    model = onnx_graph.nhwc_wrapped(model, "image", "mask")
    entry = model.metadata_props.add()
    entry.key = ADAPTED_KEY
    entry.value = json.dumps({"from": str(path), "activation": activation, "whole_frames": whole})
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = json.dumps({"metadata": meta.to_dict(), "adapted_from": str(path)})
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, model.SerializeToString())
    return target


def _metadata(
    sidecar: ModelMetadata | None,
    info: onnx_graph.GraphInfo,
    channels: int | None,
    size: tuple[int, int] | None,
    multiple: int | None,
    flags: dict[str, Any],
    dynamic: bool,
) -> ModelMetadata | None:
    """The metadata to embed: the sidecar's with the flags over it; for a model without a
    sidecar, inferred from its shapes and the flags when it needs a size (dynamic H/W), else
    None (the flags are applied when it is opened, as for any model without metadata)."""
    if sidecar is None and not dynamic:
        return None
    _, _, h, w = info.input_shape
    _, k, oh, ow = info.output_shape
    extra: dict[str, Any] = {}
    if multiple is not None:
        # Nominal size (a measurement without a frame): the tile size, else one multiple.
        nominal = size or (multiple, multiple)
        extra = {"input_size": tuple(nominal), "size_multiple": int(multiple), "frame_size": None}
        h, w = nominal
        oh, ow = nominal
    elif size is not None and dynamic:
        h, w = size
        oh, ow = size if oh is None or ow is None else (oh, ow)
    in_shape = (1, h, w, channels)
    out_shape = (1, oh, ow, k)
    meta = apply_flags(sidecar, in_shape, out_shape, **flags)
    return meta.with_updates(**extra) if extra else meta
