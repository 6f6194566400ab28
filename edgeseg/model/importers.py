"""Models from outside Keras: an ONNX U-Net (what ``torch.onnx.export`` writes) turned into the
one form ``convert`` works on, a TensorFlow SavedModel with NHWC image in and probabilities
out (:class:`edgeseg.model.loading.LoadedModel`).

The route: :mod:`edgeseg.core.onnx_graph`'s pre-passes (one output, batch 1, the tile size,
opset 17 for an align_corners Resize, onnxsim, Pad(0)+MaxPool, a Sigmoid/Softmax after
logits) → onnx2tf in a child process (:mod:`edgeseg.model.onnx2tf_child`) → the SavedModel,
checked against onnxruntime on the prepared ONNX before it is used. The result is cached in
``$XDG_CACHE_HOME/edgeseg/onnx-import/`` keyed by the file's sha256, the options and the
versions, so a second ``convert`` of the same file skips onnx2tf (minutes on a U-Net).

The prepared ONNX (NCHW, probabilities) run in onnxruntime is the float reference of the
parity report: :meth:`ImportedModel.predict`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg import child
from edgeseg.core import onnx_graph
from edgeseg.errors import MissingDependencyError, ModelError
from edgeseg.optional import require
from edgeseg.paths import file_sha256, publish

__all__ = [
    "IMPORTED_SUFFIXES",
    "ImportOptions",
    "ImportedModel",
    "import_cache_dir",
    "import_model",
    "import_onnx",
    "is_imported",
    "torch_to_onnx",
]

#: PyTorch files: a ``torch.export`` program (.pt2) or TorchScript (.pt, .pth, .ts).
TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".torchscript")
IMPORTED_SUFFIXES = (".onnx", *TORCH_SUFFIXES)
TORCH_OPSET = 17
#: Bumped when a pre-pass changes what is cached.
PREPARE_VERSION = 2
#: Largest |SavedModel - onnxruntime| accepted on the probe tiles (probabilities).
MAX_IMPORT_ERROR = 1e-3
ONNX2TF_TIMEOUT = 1800.0

#: Steps of ``convert`` that work on a Keras graph and so do not apply to an imported model.
KERAS_ONLY_STEPS = (
    "range equalization and the Edge TPU graph rewrites (they edit Keras layers)",
    "--keep-float (names Keras layers)",
)
#: The whole-frame step, Keras-only unless the ONNX leaves height and width open.
FRAME_STEP_STATIC = (
    "whole-frame rebuilding (--frame-size needs an ONNX export with dynamic H/W, or one "
    "exported at the frame size)"
)
FRAME_STEP_DYNAMIC = (
    "whole frames (--frame-size) come from the dynamic-H/W ONNX imported again at each "
    "padded frame size"
)


@dataclass(frozen=True)
class ImportOptions:
    """How to read an ONNX model.

    ``activation``: what the chosen output holds (logits, sigmoid, softmax); None: read from
    the graph (a Sigmoid/Softmax last node, else logits). ``output``: the output to convert
    (default the first). ``input_size``: (H, W) of the tiles, for a model with dynamic H/W.
    ``edgetpu``: refuse ops the Edge TPU cannot run, before anything slow.
    """

    activation: str | None = None
    output: str | None = None
    input_size: tuple[int, int] | None = None
    edgetpu: bool = False


@dataclass(frozen=True)
class ImportedModel:
    """An imported model: the SavedModel ``loaded`` for the converter, and the prepared ONNX
    ``onnx_path`` (NCHW ``(1, C, H, W)`` → ``(1, K, H, W)`` probabilities) for the reference.
    ``notes``: what the import did, one line each, for the parity report. ``activation``:
    what the source model's output held (logits get a sigmoid/softmax appended).
    ``dynamic``: the source ONNX leaves height and width open, so it can be imported again
    at a whole frame's size."""

    loaded: Any  # edgeseg.model.loading.LoadedModel
    onnx_path: Path
    notes: tuple[str, ...]
    cached: bool
    activation: str
    dynamic: bool = False

    def predict(self, batch: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """float32 ``(N, H, W, C)`` tiles → ``(N, h, w, K)`` probabilities by onnxruntime."""
        del batch_size  # the prepared model has batch 1
        session = self._session()
        name = session.get_inputs()[0].name
        x = np.asarray(batch, dtype=np.float32)
        outs = [
            session.run(None, {name: np.ascontiguousarray(tile.transpose(2, 0, 1)[None])})[0]
            for tile in x
        ]
        if not outs:
            h, w = self.loaded.output_shape[1:3]
            return np.zeros((0, h, w, self.loaded.output_shape[3]), np.float32)
        return np.concatenate(outs).transpose(0, 2, 3, 1).astype(np.float32, copy=False)

    def _session(self) -> Any:
        cached = self.__dict__.get("_ort")
        if cached is None:
            ort = require("onnxruntime")
            cached = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
            object.__setattr__(self, "_ort", cached)
        return cached


def is_imported(path: str | Path) -> bool:
    """True for a file the importer reads (``.onnx``) rather than the Keras loader."""
    return Path(path).suffix.lower() in IMPORTED_SUFFIXES


def import_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgeseg/onnx-import`` (``~/.cache/edgeseg/onnx-import``)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "edgeseg" / "onnx-import"


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("onnx2tf", "onnx", "onnxsim", "tensorflow-cpu", "tensorflow", "tf-keras"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _cache_key(sha: str, opts: ImportOptions) -> str:
    key = {
        "sha256": sha,
        "activation": opts.activation,
        "output": opts.output,
        "input_size": list(opts.input_size) if opts.input_size else None,
        "prepare": PREPARE_VERSION,
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _require_onnx2tf() -> None:
    if importlib.util.find_spec("onnx2tf") is None:
        raise MissingDependencyError(
            "onnx2tf is not installed; install the ONNX importer with: "
            "pip install 'edgeseg[onnx-import]'"
        )


def import_model(
    path: str | Path,
    opts: ImportOptions = ImportOptions(),
    *,
    channels: int | None = None,
    say: Any = lambda _m: None,
) -> ImportedModel:
    """An ONNX file (:func:`import_onnx`), or a PyTorch file exported to ONNX first
    (:func:`torch_to_onnx`, when torch is installed), cached by the PyTorch file's sha256."""
    path = Path(path)
    if path.suffix.lower() not in TORCH_SUFFIXES:
        return import_onnx(path, opts, say=say)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    sha = file_sha256(path)
    with tempfile.TemporaryDirectory(prefix="edgeseg-torch-") as tmp:
        onnx_path = Path(tmp) / f"{path.stem}.onnx"
        say(f"{path.name}: exporting to ONNX with torch (opset {TORCH_OPSET}, batch 1)")
        torch_to_onnx(path, onnx_path, input_size=opts.input_size, channels=channels)
        return import_onnx(onnx_path, opts, say=say, sha=sha)


def torch_to_onnx(
    path: Path, out: Path, *, input_size: tuple[int, int] | None, channels: int | None
) -> Path:
    """A ``torch.export`` program (its own example input) or a TorchScript module (an input
    of ``input_size`` and ``channels``) as ONNX at opset 17 with a static batch of 1.

    Raises:
        MissingDependencyError: torch is not installed (the line says how to export).
        ModelError: the file does not load or export.
    """
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            f"{path} is a PyTorch file and torch is not installed here; export it to ONNX "
            "where the model was trained: torch.onnx.export(model.eval(), torch.zeros(1, C, H, "
            "W), 'unet.onnx', opset_version=17), then convert unet.onnx"
        ) from None
    try:
        if path.suffix.lower() == ".pt2":
            # A program's module cannot be switched to eval() (the TorchScript exporter
            # does): torch.export's own ONNX exporter takes the program as it was exported.
            if importlib.util.find_spec("onnxscript") is None:
                raise MissingDependencyError(
                    f"{path} is a torch.export program, which torch exports to ONNX with "
                    "onnxscript: pip install onnxscript"
                )
            program = torch.export.load(str(path))
            exported = torch.onnx.export(program, (), dynamo=True, opset_version=TORCH_OPSET)
            exported.save(str(out))
            return out
        if input_size is None or channels is None:
            raise ModelError(
                f"{path} is TorchScript, which holds no input shape: give --input-size HxW "
                "and --channel-order GRAY|RGB"
            )
        module = torch.jit.load(str(path), map_location="cpu")
        module.eval()
        args = (torch.zeros(1, channels, *input_size),)
        kwargs: dict[str, Any] = {
            "opset_version": TORCH_OPSET,
            "input_names": ["input"],
            "output_names": ["logits"],
        }
        try:
            torch.onnx.export(module, args, str(out), dynamo=False, **kwargs)
        except TypeError:  # a torch without the dynamo argument
            torch.onnx.export(module, args, str(out), **kwargs)
    except (ModelError, MissingDependencyError):
        raise
    except Exception as exc:
        raise ModelError(f"could not export {path} to ONNX with torch: {_one(exc)}") from exc
    return out


def _one(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def import_onnx(
    path: str | Path,
    opts: ImportOptions = ImportOptions(),
    *,
    say: Any = lambda _m: None,
    sha: str | None = None,
) -> ImportedModel:
    """Import the ONNX model ``path`` (see the module docstring); ``sha``: the cache key's
    file hash when ``path`` was made from another file (a PyTorch export).

    Raises:
        ModelError: not ONNX, not image-to-mask, an op that does not convert (named with its
            node), an Edge TPU op refusal with ``opts.edgetpu``, or a conversion that does
            not agree with onnxruntime.
        MissingDependencyError: onnx2tf (the ``onnx-import`` extra) is missing.
    """
    from edgeseg.model.loading import load_model

    path = Path(path)
    activation = onnx_graph.parse_activation(opts.activation)
    model = onnx_graph.load_onnx(path)
    info = onnx_graph.describe(model, opts.output, path=path)
    onnx_graph.check_activation(activation, info.output_shape[1], path=path.name)
    onnx_graph.check_ops(model, edgetpu=opts.edgetpu, path=path, folded=False)
    dynamic = info.input_shape[2] is None or info.input_shape[3] is None
    require("onnxruntime")
    _require_onnx2tf()
    folder = import_cache_dir() / _cache_key(sha or file_sha256(path), opts)
    if (folder / "notes.json").is_file():
        try:
            record = json.loads((folder / "notes.json").read_text())
            loaded = load_model(folder / "saved_model")
            say(f"{path.name}: onnx2tf's SavedModel from the cache ({folder})")
            return ImportedModel(
                loaded,
                folder / "model.onnx",
                (*record["notes"], "onnx2tf's SavedModel came from the cache"),
                True,
                record["activation"],
                dynamic,
            )
        except (OSError, ValueError, KeyError, ModelError):
            shutil.rmtree(folder, ignore_errors=True)  # a broken entry: build it again
    notes: list[str] = []
    model, prepared_activation = _prepare(model, info, activation, opts, notes, path, dynamic)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        onnx = require("onnx")
        onnx.save(model, str(tmp / "model.onnx"))
        say(f"{path.name}: converting with onnx2tf (minutes for a U-Net)")
        done = child.run_python(
            [
                "-m",
                "edgeseg.model.onnx2tf_child",
                str(tmp / "model.onnx"),
                str(tmp / "saved_model"),
            ],
            timeout=ONNX2TF_TIMEOUT,
        )
        if done.returncode != 0 or not done.stdout.rstrip().endswith("ok"):
            why = "timed out" if done.timed_out else _last_error(done.stderr or done.stdout)
            raise ModelError(f"onnx2tf could not convert {path}: {why}")
        loaded = load_model(tmp / "saved_model")
        err = _agreement(loaded, tmp / "model.onnx", info.input_shape[1])
        if not err <= MAX_IMPORT_ERROR:
            raise ModelError(
                f"onnx2tf's conversion of {path} differs from onnxruntime by up to {err:.3g} "
                f"(limit {MAX_IMPORT_ERROR:g}); export the model again with opset_version=17"
            )
        notes.append(f"onnx2tf's SavedModel agrees with onnxruntime within {err:.2g}")
        (tmp / "notes.json").write_text(
            json.dumps({"notes": notes, "activation": prepared_activation}, indent=1)
        )
        # A cache folder is cheap to lose (it is rebuilt), and one rename makes it whole.
        publish(tmp, folder, durable=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    loaded = load_model(folder / "saved_model")
    return ImportedModel(
        loaded, folder / "model.onnx", tuple(notes), False, prepared_activation, dynamic
    )


def _prepare(
    model: Any,
    info: onnx_graph.GraphInfo,
    activation: str | None,
    opts: ImportOptions,
    notes: list[str],
    path: Path,
    dynamic: bool = False,
) -> tuple[Any, str]:
    """The pre-passes of :mod:`edgeseg.core.onnx_graph`, each noted."""
    if len(info.outputs) > 1:
        model = onnx_graph.keep_output(model, info.output_name)
        notes.append(f"output {info.output_name!r} converted (of {', '.join(info.outputs)})")
    model = onnx_graph.fix_input(model, opts.input_size, path=path)
    model, note = onnx_graph.to_opset17_for_resize(model, path=path)
    if note:
        notes.append(note)
    model, note = onnx_graph.simplify(model)
    notes.append(note)
    onnx_graph.check_ops(model, path=path)  # the shape arithmetic folded: what is left
    model, count = onnx_graph.pad_maxpools(model)
    if count:
        notes.append(f"{count} padded MaxPool after ReLU made Pad(0) + MaxPool (exact)")
    found = onnx_graph.detect_activation(model, info.output_name)
    activation = activation or found
    channels = info.output_shape[1] or 1
    if activation == "logits":
        model, op = onnx_graph.append_activation(model, info.output_name, channels)
        notes.append(f"the model ends in logits: {op} appended")
    else:
        notes.append(f"the model ends in {activation}: kept as it is")
    notes.append(
        "layout: the ONNX model is NCHW; the converted artefacts are NHWC. Not applied to an "
        "imported model: "
        + "; ".join(KERAS_ONLY_STEPS)
        + ("" if dynamic else "; " + FRAME_STEP_STATIC)
    )
    if dynamic:
        notes.append(FRAME_STEP_DYNAMIC)
    model = onnx_graph.safe_node_names(model)
    require("onnx").checker.check_model(model)
    return model, activation


def _agreement(loaded: Any, onnx_path: Path, channels: int | None) -> float:
    """Largest |SavedModel − onnxruntime| over a few seeded random tiles in [0, 1]."""
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    _, h, w, c = loaded.input_shape
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(2):
        x = rng.random((1, h, w, c or channels or 1), dtype=np.float32)
        ref = session.run(None, {name: x.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)
        got = loaded.predict(x)
        if got.shape != ref.shape:
            raise ModelError(
                f"onnx2tf's SavedModel gives {got.shape} for onnxruntime's {ref.shape}"
            )
        worst = max(worst, float(np.max(np.abs(got - ref))))
    return worst


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _last_error(text: str) -> str:
    """The child's failure in one line: onnx2tf's ``ERROR:`` lines, else a Python
    exception's last line, else its last line."""
    lines = [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("I0000", "W0000", "WARNING: All"))]
    flagged = [ln.removeprefix("ERROR:").strip() for ln in lines if ln.startswith("ERROR:")]
    if flagged:
        return " ".join(flagged[:2])[:300]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"
