"""Load a trained segmentation model safely, in one place.

Supported formats:

* ``.keras`` - the Keras 3 zip archive (``config.json`` + weights).
* ``.h5`` / ``.hdf5`` - legacy full-model HDF5 files, typically written by Keras 2 / TF 2.x.
* a TensorFlow 2 SavedModel directory (``saved_model.pb``), e.g. from ``model.export(dir)``.

Every model config is inspected *before* Keras deserialises anything, so a file carrying
``Lambda`` layers (pickled Python bytecode, i.e. arbitrary code) is refused unless the caller
says it trusts the file. Every user-caused failure is a one-line :class:`ModelError`.

TensorFlow, Keras and h5py are imported inside the functions through
:func:`edgeseg.optional.require`, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import DataError, EdgesegError, ModelError
from edgeseg.optional import require
from edgeseg.sizes import format_shape, format_shapes

__all__ = [
    "KERAS_SUFFIXES",
    "LoadedModel",
    "find_lambda_layers",
    "find_tf_op_layers",
    "load_model",
]

Shape = tuple[int | None, ...]

#: File suffixes Keras 3 can load (matched case-insensitively).
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")

_SUPPORTED = (
    "a .keras file, a legacy .h5/.hdf5 file, or a TensorFlow SavedModel directory "
    "(one holding saved_model.pb)"
)

# Layer classes that Keras 2 functional models record for raw TensorFlow calls made on
# symbolic tensors (``x * 2``, ``tf.nn.relu(x)``, ``x[:, :, :, :1]``). TFOpLambda and
# SlicingOpLambda (TF >= 2.4) store the *name* of a public ``tf.*`` API, and
# TensorFlowOpLayer (TF 2.0-2.3) stores a NodeDef; none of them carries Python bytecode, so
# they are not a code-execution risk and need no --trust-model. But Keras 3 has no such
# classes and cannot rebuild them ("Unknown layer: 'TFOpLambda'"), with or without trust,
# so we refuse them up front with a message that says how to re-export the model.
_TF_OP_LAYER_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer"})

# Keras 3 error messages that name a class it cannot resolve.
#   legacy .h5:  "Unknown layer: 'MyScale'. Please ensure you are using ..."
#   .keras:      "Could not locate class 'MyScale'. Make sure custom classes ..."
_UNKNOWN_CLASS_RES = (
    re.compile(
        r"Unknown (layer|activation|initializer|regularizer|constraint|loss|metric|object)"
        r"(?: function)?: '([^']+)'"
    ),
    re.compile(r"Could not locate (class|function) '([^']+)'"),
)

_MAX_DETAIL = 200  # characters of an underlying error kept in our one-line message


@dataclass(frozen=True)
class LoadedModel:
    """A loaded image-to-mask model and what we know about its tensors.

    Exactly one of ``keras_model`` / ``saved_model`` is set.

    Attributes:
        path: The file or directory the model was loaded from.
        format: ``"keras"``, ``"h5"`` or ``"savedmodel"``.
        keras_model: A ``keras.Model`` for ``.keras``/``.h5`` files; ``None`` for a SavedModel.
        saved_model: The object returned by ``tf.saved_model.load`` for a SavedModel. It is
            kept here because its concrete signature function only holds weak references to
            the variables; dropping this object would leave the signature unusable.
        input_shape: ``(batch, H, W, C)``; any dimension may be ``None`` (batch usually is).
        output_shape: ``(batch, h, w, K)``; K is the number of mask channels/classes.
        input_name: SavedModel only: keyword name of the image input of ``serving_default``.
        output_name: SavedModel only: key of the mask output of ``serving_default``.
    """

    path: Path
    format: str
    keras_model: Any | None
    saved_model: Any | None
    input_shape: Shape
    output_shape: Shape
    input_name: str | None = field(default=None, repr=False)
    output_name: str | None = field(default=None, repr=False)

    def predict(self, batch: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Run the model in inference mode over ``batch``.

        Args:
            batch: Float array ``(N, H, W, C)``, already preprocessed the way the model was
                trained (e.g. scaled to [0, 1]); cast to float32. Integer arrays are refused
                because un-normalised uint8 pixels would silently give garbage masks.
            batch_size: Images per forward pass (bounds peak memory).

        Returns:
            float32 array ``(N, h, w, K)``.

        Raises:
            DataError: ``batch`` is not a float array of the shape the model expects.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = np.asarray(batch)
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError(
                f"model input must be a float array (preprocessed images), got dtype {x.dtype}; "
                "scale the images (e.g. to [0, 1]) before predicting"
            )
        x = x.astype(np.float32, copy=False)
        self._check_batch_shape(x.shape)

        # A model exported with a fixed batch size only accepts exactly that many images
        # per call: chunk by it and zero-pad the last chunk.
        fixed_batch = self.input_shape[0]
        step = fixed_batch if fixed_batch else batch_size
        n = x.shape[0]
        if n == 0:
            return self._empty_output(x)
        outputs = []
        for start in range(0, n, step):
            chunk = x[start : start + step]
            real = chunk.shape[0]
            if fixed_batch and real < fixed_batch:
                pad = np.zeros((fixed_batch - real, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self._run(chunk)[:real])
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def _check_batch_shape(self, shape: tuple[int, ...]) -> None:
        expected = self.input_shape
        ok = len(shape) == len(expected) and all(
            want is None or got == want for got, want in zip(shape[1:], expected[1:], strict=True)
        )
        if not ok:
            raise DataError(
                f"input batch has shape {tuple(shape)} but the model expects "
                f"(N, H, W, C) = {format_shape(expected)}"
            )

    def _empty_output(self, x: np.ndarray) -> np.ndarray:
        """``(0, h, w, K)`` float32 for an empty batch, without running the model if possible."""
        if all(d is not None for d in self.output_shape[1:]):
            return np.zeros((0, *self.output_shape[1:]), dtype=np.float32)
        return self._run(x).astype(np.float32, copy=False)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One forward pass: float32 ``(n, H, W, C)`` -> ``(n, h, w, K)``, model's float dtype."""
        if self.keras_model is not None:
            keras = require("keras")
            model = self.keras_model
            # Models rebuilt from legacy .h5 configs declare their inputs as a one-element
            # list; passing a bare tensor works but Keras warns on every call.
            inputs = [x] if isinstance(model.input, (list, tuple)) else x
            # model(x, training=False) rather than model.predict(): predict() builds a
            # tf.data pipeline and a progress bar on every call, which dominates for the
            # small batches we run.
            y = model(inputs, training=False)
            if isinstance(y, (list, tuple)):
                y = y[0]
            elif isinstance(y, dict):
                y = next(iter(y.values()))
            # Eager TF tensors convert directly; keras.ops.convert_to_numpy is the
            # backend-neutral fallback (it trips a NumPy 2 DeprecationWarning on TF tensors).
            return np.asarray(y.numpy() if hasattr(y, "numpy") else keras.ops.convert_to_numpy(y))
        if self.saved_model is not None and self.input_name and self.output_name:
            tf = require("tensorflow")
            signature = self.saved_model.signatures["serving_default"]
            spec = signature.structured_input_signature[1][self.input_name]
            result = signature(**{self.input_name: tf.constant(x, dtype=spec.dtype)})
            return np.asarray(result[self.output_name].numpy())
        raise RuntimeError("LoadedModel holds neither a Keras model nor a SavedModel signature")


def load_model(path: str | Path, *, trust_model: bool = False) -> LoadedModel:
    """Load a ``.keras``, legacy ``.h5``/``.hdf5`` or SavedModel-directory segmentation model.

    The model config is read and checked before anything is deserialised. Training state
    (optimizer, losses, metrics) is never restored: edgeseg only runs inference, and legacy
    files compiled with custom losses such as ``dice_coef_loss`` cannot be compiled by Keras 3.

    Args:
        path: The model file, or the SavedModel directory (a path to its ``saved_model.pb``
            is accepted too).
        trust_model: Allow ``Lambda`` layers, which embed Python code that runs on load.
            Only for files from a source you trust.

    Returns:
        The :class:`LoadedModel`, with a single rank-4 image input and a rank-4 mask output.

    Raises:
        ModelError: The path is missing, not a supported format, corrupt, unsafe (Lambda
            layers without ``trust_model``), or not an image-to-mask model.
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name == "saved_model.pb":
        path = path.parent
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelError(
                f"{path} is a directory without saved_model.pb, so it is not a SavedModel; "
                f"pass {_SUPPORTED}"
            )
        return _load_saved_model(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return _load_keras_archive(path, trust_model=trust_model)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path, trust_model=trust_model)
    raise ModelError(
        f"unsupported model format {path.suffix or '(no suffix)'!r} for {path}; pass {_SUPPORTED}"
    )


# --------------------------------------------------------------------------------------------
# Config inspection (pure Python, no Keras)
# --------------------------------------------------------------------------------------------


def find_lambda_layers(config: Any) -> list[str]:
    """Names of ``Lambda`` layers anywhere in a Keras model config.

    Walks any JSON-like structure of dicts and lists, so it covers functional and sequential
    models, models nested inside models, and wrapped layers (``TimeDistributed`` etc.), in
    both the Keras 2 (.h5 ``model_config``) and Keras 3 (.keras ``config.json``) layouts.

    TFOpLambda/SlicingOpLambda are *not* reported here: they wrap public TF ops rather than
    user code (see :func:`find_tf_op_layers`).

    Args:
        config: The parsed model config (``dict``/``list`` from JSON).

    Returns:
        Layer names in config order, without duplicates (``"<unnamed>"`` if a config has none).
    """
    return _find_layers(config, lambda class_name: class_name == "Lambda")


def find_tf_op_layers(config: Any) -> list[str]:
    """Names of Keras 2 TF-op layers (TFOpLambda, SlicingOpLambda, TensorFlowOpLayer).

    Keras 2 records these for raw TensorFlow calls on symbolic tensors; Keras 3 cannot load
    them. Same traversal and return convention as :func:`find_lambda_layers`.
    """
    return _find_layers(config, lambda class_name: class_name in _TF_OP_LAYER_CLASSES)


def _find_layers(config: Any, match: Any) -> list[str]:
    found: dict[str, None] = {}  # an ordered set
    # Iterative depth-first walk: a hostile config nested thousands of levels deep must not
    # crash us with RecursionError. Children are pushed reversed so names come out in order.
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            class_name = node.get("class_name")
            if isinstance(class_name, str) and match(class_name.rpartition(">")[2]):
                found[_layer_name(node)] = None
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return list(found)


def _layer_name(node: dict[str, Any]) -> str:
    inner = node.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    name = name or node.get("name")
    return str(name) if name else "<unnamed>"


def _check_config(path: Path, config: Any, *, trust_model: bool) -> None:
    """Refuse configs Keras 3 cannot rebuild (TF-op layers) or that run code (Lambda)."""
    # TF-op layers first: the model cannot be loaded even with --trust-model, so asking the
    # user to trust it would send them round in a circle.
    tf_ops = find_tf_op_layers(config)
    if tf_ops:
        export_dir = str(path.with_name(f"{path.stem}_savedmodel"))
        raise ModelError(
            f"{path} uses Keras 2 TF-op layers ({_fmt_names(tf_ops)}) that Keras 3 cannot load; "
            "re-export it as a SavedModel with Keras 2 (tf_keras.models.load_model("
            f"{str(path)!r}, compile=False).export({export_dir!r})) and pass that directory"
        )
    if not trust_model:
        lambdas = find_lambda_layers(config)
        if lambdas:
            raise ModelError(
                f"model contains Lambda layer(s) {_fmt_names(lambdas)}, which can run arbitrary "
                "code; pass --trust-model if you trust its source"
            )


# --------------------------------------------------------------------------------------------
# Per-format loaders
# --------------------------------------------------------------------------------------------


def _load_keras_archive(path: Path, *, trust_model: bool) -> LoadedModel:
    """``.keras`` zip: check config.json (and metadata.json) first, then deserialise."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelError(f"{path} is not a valid .keras file: it holds no config.json")
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
    except ModelError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        RecursionError,
        NotImplementedError,
    ) as exc:
        # BadZipFile: not a zip / truncated / CRC error; ValueError: bad JSON or UTF-8;
        # NotImplementedError: unsupported compression method.
        raise ModelError(f"{path} is not a valid .keras file: {_detail(exc)}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} is not a valid .keras file: config.json is not a JSON object")

    # tf_keras (Keras 2) can also write .keras archives, but their config names classes by
    # Keras 2 module paths (tf_keras.src.engine.functional) that Keras 3 cannot resolve: it
    # fails with "Could not locate class 'Functional'". Say what the real problem is.
    saved_by = str(metadata.get("keras_version", "")) if isinstance(metadata, dict) else ""
    module = str(config.get("module", ""))
    if saved_by.startswith("2.") or module.startswith(("tf_keras", "keras.engine")):
        h5_name = str(path.with_suffix(".h5"))
        origin = f"keras_version {saved_by}" if saved_by else module
        raise ModelError(
            f"{path} was saved by Keras 2 ({origin}) in .keras format, which Keras 3 cannot "
            f"read; load it with tf_keras and save it as .h5 (model.save({h5_name!r})) or "
            "export a SavedModel (model.export(DIR)), then pass that instead"
        )
    _check_config(path, config, trust_model=trust_model)
    model = _keras_load(path, trust_model=trust_model)
    return _from_keras(path, "keras", model)


def _load_h5(path: Path, *, trust_model: bool) -> LoadedModel:
    """Legacy HDF5: read ``model_config`` with h5py first, then deserialise with Keras 3."""
    h5py = require("h5py")
    try:
        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
            is_weights_file = raw is None and (
                "layer_names" in h5.attrs or "model_weights" in h5 or "layers" in h5 or "vars" in h5
            )
    except Exception as exc:  # h5py: OSError for non-HDF5/truncated, others for odd attrs
        # A .keras archive renamed to .h5 is a common mix-up; name it rather than the HDF5 error.
        if zipfile.is_zipfile(path):
            raise ModelError(
                f"{path} is a zip archive, not HDF5 (probably a .keras file); rename it to "
                f"{path.stem}.keras"
            ) from exc
        raise ModelError(f"{path} is not a valid HDF5 model file: {_detail(exc)}") from exc
    if raw is None:
        what = "holds weights only" if is_weights_file else "holds no model_config"
        raise ModelError(
            f"{path} {what}, not the model architecture; rebuild the model in code, load these "
            "weights, and save the full model with model.save('model.keras'), then pass that file"
        )
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        config = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelError(f"{path} has an unreadable model_config: {_detail(exc)}") from exc
    _check_config(path, config, trust_model=trust_model)
    model = _keras_load(path, trust_model=trust_model)
    return _from_keras(path, "h5", model)


def _load_saved_model(path: Path) -> LoadedModel:
    """TF2 SavedModel directory via ``tf.saved_model.load`` and its ``serving_default``.

    Keras 3's ``load_model`` refuses SavedModels, so we run the serving signature directly.
    A SavedModel is a TensorFlow graph, not pickled Python, so ``trust_model`` does not apply.
    """
    tf = require("tensorflow")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises OSError, ValueError, NotFoundError, ... for bad files
        raise ModelError(f"{path} is not a valid SavedModel: {_detail(exc)}") from exc
    signatures = getattr(loaded, "signatures", None) or {}
    if "serving_default" not in signatures:
        have = ", ".join(sorted(signatures)) or "none"
        raise ModelError(
            f"{path} has no 'serving_default' signature (it has: {have}); export it with "
            "model.export(DIR) or tf.saved_model.save(model, DIR, signatures=...)"
        )
    signature = signatures["serving_default"]

    args, kwargs = signature.structured_input_signature
    # Signature functions take keyword arguments only; positional specs are counted so an
    # unusual multi-input export is still rejected below.
    input_specs = dict(kwargs)
    n_inputs = len(args) + len(input_specs)
    outputs = signature.structured_outputs
    if not isinstance(outputs, dict):
        # Signatures normally return a dict; a bare tensor spec would have no name to index.
        outputs = {"output_0": outputs}
    output_shapes = {name: _spec_shape(spec) for name, spec in sorted(outputs.items())}
    input_shapes = [_spec_shape(spec) for spec in input_specs.values()]

    if n_inputs != 1 or len(input_shapes) != 1 or len(input_shapes[0]) != 4:
        raise _not_image_to_mask(path, input_shapes, list(output_shapes.values()))
    # Several outputs (e.g. deep-supervision U-Nets, or mask + auxiliary head): use the first
    # rank-4 output in key order ("output_0" before "output_1"), which is the main mask for
    # models exported by model.export(); auxiliary classifier heads are rank 2 and skipped.
    mask_outputs = [name for name, shape in output_shapes.items() if len(shape) == 4]
    if not mask_outputs:
        raise _not_image_to_mask(path, input_shapes, list(output_shapes.values()))

    input_name, input_spec = next(iter(input_specs.items()))
    if not input_spec.dtype.is_floating:
        raise ModelError(
            f"{path} expects {input_spec.dtype.name} input, but edgeseg feeds float images; "
            "re-export the model with a float32 input"
        )
    output_name = mask_outputs[0]
    return LoadedModel(
        path=path,
        format="savedmodel",
        keras_model=None,
        saved_model=loaded,
        input_shape=input_shapes[0],
        output_shape=output_shapes[output_name],
        input_name=input_name,
        output_name=output_name,
    )


# --------------------------------------------------------------------------------------------
# Keras helpers
# --------------------------------------------------------------------------------------------


def _keras_load(path: Path, *, trust_model: bool) -> Any:
    """``keras.saving.load_model`` with its failures turned into one-line ModelErrors."""
    keras = require("keras")
    try:
        with _keras_named_path(path) as load_path:
            # compile=False: we never train, and Keras 3 cannot compile legacy files whose
            # training_config names custom losses/metrics (it raises a bare
            # "TypeError: string indices must be integers"). safe_mode is Keras' own Lambda
            # guard; our config check has already refused Lambdas unless trusted.
            model = keras.saving.load_model(
                str(load_path), compile=False, safe_mode=not trust_model
            )
    except EdgesegError:
        raise
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError, KeyError, ...
        message = str(exc)
        for pattern in _UNKNOWN_CLASS_RES:
            found = pattern.search(message)
            if found:
                kind, name = found.groups()
                raise ModelError(
                    f"{path} uses custom {kind} {name!r} that Keras cannot rebuild "
                    "without its code; export the model as a SavedModel where it was trained "
                    "(model.export(DIR)) and pass DIR"
                ) from exc
        raise ModelError(f"could not load {path}: {_detail(exc)}") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path} holds a {type(model).__name__}, not a Keras model")
    return model


@contextlib.contextmanager
def _keras_named_path(path: Path) -> Iterator[Path]:
    """Yield a path whose suffix Keras 3 recognises.

    Keras picks the format from the lower-case suffix only, so ``UNET.H5`` would be rejected
    as "File format not supported". Such files are copied to a temporary lower-case name.
    """
    if path.suffix in KERAS_SUFFIXES:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="edgeseg-model-") as tmp:
        copy = Path(tmp) / f"model{path.suffix.lower()}"
        shutil.copyfile(path, copy)
        yield copy


def _from_keras(path: Path, fmt: str, model: Any) -> LoadedModel:
    """Check a Keras model is one image in, one mask out, and wrap it."""
    try:
        inputs = list(model.inputs)
        outputs = list(model.outputs)
    except (AttributeError, ValueError) as exc:
        # A Sequential model saved before it was built has no defined inputs.
        raise ModelError(
            f"{path} has no defined input shape (the model was saved unbuilt); build it on an "
            "input shape, e.g. keras.Input((H, W, C)), and save it again"
        ) from exc
    input_shapes = [tuple(t.shape) for t in inputs]
    output_shapes = [tuple(t.shape) for t in outputs]
    # Unlike a SavedModel signature, a multi-output Keras model is refused rather than
    # reduced to one output: converters downstream take keras_model as-is and would carry
    # every output into the edge model.
    if (
        len(inputs) != 1
        or len(outputs) != 1
        or len(input_shapes[0]) != 4
        or len(output_shapes[0]) != 4
    ):
        raise _not_image_to_mask(path, input_shapes, output_shapes)
    return LoadedModel(
        path=path,
        format=fmt,
        keras_model=model,
        saved_model=None,
        input_shape=_as_shape(input_shapes[0]),
        output_shape=_as_shape(output_shapes[0]),
    )


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _spec_shape(spec: Any) -> Shape:
    """Shape of a ``tf.TensorSpec`` as a tuple; ``()`` if unknown rank or not a tensor spec."""
    shape = getattr(spec, "shape", None)
    if shape is None or getattr(shape, "rank", None) is None:
        return ()
    return _as_shape(shape.as_list())


def _as_shape(dims: Any) -> Shape:
    return tuple(None if d is None else int(d) for d in dims)


def _fmt_names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _not_image_to_mask(path: Path, inputs: list[Shape], outputs: list[Shape]) -> ModelError:
    return ModelError(
        f"{path} is not an image-to-mask model: input shape {format_shapes(inputs)}, "
        f"output shape {format_shapes(outputs)}; edgeseg needs one (N, H, W, C) image input "
        "and a (N, h, w, K) mask output"
    )


def _detail(exc: BaseException) -> str:
    """First line of an exception message, shortened, for embedding in a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
