"""`edgeseg convert` as a library call: load, calibrate, convert each recipe, prove parity.

Order of work, chosen so that bad input fails before anything slow runs and nothing already
produced is lost: check the output folder, load the model and its metadata, open the
held-out frames and the calibration source, build (or load) the calibration set, convert the
fp32 reference and every recipe, write each artefact with its metadata embedded, score it
against the float model, and write the parity report (JSON + Markdown) whatever the
verdict. An int8 artefact under the agreement gate is renamed ``*.rejected.tflite`` and the
call raises :class:`ParityGateError` after the report is written. An instance model is gated
on its objects instead (AP@0.5 against the float model's objects, ``min_ap_agreement``; see
:mod:`edgeseg.convert.parity`); a held-out folder with ``labels/`` (instance ids) scores its
objects against the truth too.

Every int8 artefact also gets its per-layer quantization error on calibration tiles. An Edge
TPU recipe's artefact names itself as the CPU sibling in its metadata, gets an op-by-op
preflight, and, when it passed the gate and ``edgetpu_compiler`` is on PATH, is compiled to
``<stem>_<recipe>_edgetpu.tflite`` (same metadata); without the compiler the report says how to
install it. A compiler that fails or times out raises :class:`CompilerError` after the report
is written, the other artefacts kept.

With ``frame_sizes`` (``--frame-size HxW`` or ``auto``) each recipe (and ONNX) also gets a
whole-frame artefact per frame size, ``<stem>_<recipe>_<H>x<W>.tflite``, calibrated on whole
frames and scored on whole held-out frames against the float model run the same way (see
:mod:`edgeseg.convert.frames`); what cannot be built whole keeps its tiled artefact and the
report says why.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg import __version__
from edgeseg.convert.edgetpu import DEFAULT_COMPILER_TIMEOUT, CompilerError, check_recipe
from edgeseg.convert.frames import (
    AUTO,
    FramePlan,
    auto_frame_sizes,
    calibration_frames,
    edgetpu_refusal,
    parse_frame_sizes,
    plan_frames,
)
from edgeseg.convert.parity import (
    DEFAULT_MIN_AP_AGREEMENT,
    GATE_AP50,
    GATE_DICE,
    ArtefactReport,
    InstanceScores,
    Overlap,
    ParityReport,
    instance_scores,
    label_maps,
    layer_errors,
    overlap,
)
from edgeseg.convert.recipes import Recipe, load_recipe
from edgeseg.core.backend import CallableBackend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.tflite_file import op_histogram
from edgeseg.errors import DataError, EdgesegError, ModelError
from edgeseg.paths import atomic_write, ensure_writable_dir, file_sha256, hash_file, publish
from edgeseg.sizes import format_hw as frame_tag

MAX_HELDOUT_FRAMES = 50
MICRO_RECIPE = "int8"  # the recipe --micro converts with (full int8 at the tile size)
CHOOSE = "choose what to build: --fp16, --int8, --edgetpu, --onnx and/or --recipe NAME"


class ParityGateError(EdgesegError):
    """An artefact agrees too little with the float model; the report has been written."""


@dataclass(frozen=True)
class ConvertRequest:
    model: Path
    recipes: tuple[Recipe, ...]
    out: Path
    calib: str | None = None
    val: Path | None = None
    n: int = 200
    holdout: float = 0.2
    seed: int = 0
    min_dice_agreement: float | None = None
    min_ap_agreement: float | None = None  # int8 gate of an instance model (AP@0.5 vs float)
    trust_model: bool = False
    threads: int | None = None
    max_heldout_frames: int = MAX_HELDOUT_FRAMES
    flags: dict[str, Any] = field(default_factory=dict)
    keep_float: tuple[str, ...] = ()  # layers int8 recipes leave in float
    onnx: bool = False  # also export ONNX (the Jetson / TensorRT path)
    compiler_timeout: float = DEFAULT_COMPILER_TIMEOUT
    # Whole-frame artefacts: (H, W) camera frame sizes, "HxW" strings or "auto".
    frame_sizes: tuple[Any, ...] = ()
    # DICOM calibration frames' window (CENTER,WIDTH, file or a preset), recorded in the
    # artefacts' metadata (dicom_window) so `run` windows as calibration did.
    window: str | None = None
    # An ONNX model (model.importers): what its output holds (logits|sigmoid|softmax; None:
    # read from the graph) and which output to convert (None: the first).
    activation: str | None = None
    output: str | None = None
    # TensorFlow Lite Micro (convert/micro.py): the int8 model as C source, its arena and a
    # TFLM row in the report; micro_device: a microcontroller profile it must fit.
    micro: bool = False
    micro_device: str | None = None


@dataclass(frozen=True)
class ConvertResult:
    report: ParityReport
    artefacts: tuple[Path, ...]
    report_json: Path
    report_md: Path
    micro: Any = None  # convert/micro.MicroResult with --micro: arena, flash, fit


def model_sha256(path: Path) -> str:
    """sha256 of a model file, or of every file of a SavedModel folder (paths included)."""
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(p.relative_to(path)).encode())
        hash_file(h, p)
    return h.hexdigest()


@dataclass
class _Heldout:
    frames: list[np.ndarray]
    truths: list[np.ndarray] | None  # class labels (foreground for an instance model)
    source: str
    instances: list[np.ndarray] | None = None  # true object ids, from labels/


def _heldout_from_val(val: Path, meta: Any, limit: int) -> _Heldout:
    from edgeseg.datasets import LABELS, find_pairs, mask_to_labels, read_instance_labels, read_pair
    from edgeseg.imageio import read_image
    from edgeseg.runtime.sources import open_file_source

    has_images = (val / "images").is_dir()
    has_labels, has_masks = (val / LABELS).is_dir(), (val / "masks").is_dir()
    if has_images and has_labels and (meta.instances is not None or not has_masks):
        # Instance labels: objects for the instance scores, their union for the pixel scores.
        if meta.num_classes != 1:
            raise DataError(
                f"{val} holds instance labels (labels/), which give one foreground class; the "
                f"model has {meta.num_classes} classes: give masks/ with class indices"
            )
        frames, truths, instances = [], [], []
        for img_path, lab_path in find_pairs(val, LABELS)[:limit]:
            img = read_image(img_path)
            lab = read_instance_labels(lab_path, img.shape)
            frames.append(img)
            instances.append(lab)
            truths.append((lab > 0).astype(np.uint8))
        return _Heldout(frames, truths, f"{val} (images/ + labels/)", instances)
    if has_images and has_masks:
        pairs = find_pairs(val)[:limit]
        frames, truths = [], []
        for img_path, mask_path in pairs:
            img, mask = read_pair(img_path, mask_path)
            frames.append(img)
            truths.append(mask_to_labels(mask, meta, mask_path.name))
        return _Heldout(frames, truths, f"{val} (images/ + masks/)")
    src = open_file_source(val / "images" if (val / "images").is_dir() else val)
    try:
        idx = np.linspace(0, len(src) - 1, min(limit, len(src))).round().astype(int)
        return _Heldout([src.read(int(i)) for i in sorted(set(idx))], None, src.description)
    finally:
        getattr(src, "close", lambda: None)()


def resolve_recipes(
    names: list[str],
    fp16: bool = False,
    int8: bool = False,
    edgetpu: bool = False,
    onnx: bool = False,
    micro: bool = False,
) -> tuple[Recipe, ...]:
    """The recipes for ``--fp16``, ``--int8``, ``--edgetpu`` and ``--recipe NAME`` (deduplicated,
    in order)."""
    wanted = [
        *(["fp16"] if fp16 else []),
        *(["int8"] if int8 else []),
        *(["int8-edgetpu"] if edgetpu else []),
        *names,
    ]
    if not wanted and not onnx and not micro:
        raise DataError(CHOOSE)
    recipes: list[Recipe] = []
    for name in wanted:
        r = load_recipe(name)
        if r.name not in [x.name for x in recipes]:
            recipes.append(r)
    return tuple(recipes)


def convert_model(
    req: ConvertRequest, say: Callable[[str], None] = lambda _msg: None
) -> ConvertResult:
    """Run the whole conversion; see the module docstring. ``say`` receives progress lines.

    The steps, each a function of this module: :func:`_check_request` (nothing opened yet),
    :func:`_load_inputs` (model, metadata, whole-frame plans, calibration, held-out frames),
    :func:`_float_reference` (the float model's labels, the fp32 conversion), then per recipe
    :func:`_tiled_artefact` (with :func:`_edgetpu_step` for an Edge TPU recipe) and
    :func:`_whole_frame_artefacts`, :func:`_onnx_artefacts`, and last :func:`_parity_report`,
    :func:`_write_reports` and :func:`_verdict`.
    """
    checked = _check_request(req)
    inputs = _load_inputs(req, checked, say)
    ref = _float_reference(req, inputs, say)
    frames = _FrameBuilder(req, inputs, ref, say)
    outputs = _Outputs(frame_notes=list(inputs.refusals))
    int8_tiled = None  # the int8 recipe's conversion, which --micro reuses
    for recipe in req.recipes:
        tiled = _tiled_artefact(req, inputs, ref, recipe, say)
        int8_tiled = tiled if recipe.name == MICRO_RECIPE else int8_tiled
        if recipe.edgetpu:
            info, compiled, failure = _edgetpu_step(
                tiled.path, tiled.data, tiled.report.passed, tiled.meta, tiled.extra, req, say
            )
            outputs.add(replace(tiled.report, edgetpu=info), tiled.path, compiled)
            outputs.compiler_error = outputs.compiler_error or failure
        else:
            outputs.add(tiled.report, tiled.path)
        _whole_frame_artefacts(recipe, tiled, inputs.plans, frames, outputs, say)
    if req.onnx:
        _onnx_artefacts(req, inputs, ref, frames, outputs, say)
    micro = _micro_artefact(req, inputs, ref, int8_tiled, outputs, say) if req.micro else None
    outputs.frame_notes += frames.notes()
    parity = _parity_report(req, inputs, ref, outputs)
    report_json, report_md = _write_reports(parity, req.out, inputs.stem)
    _verdict(parity.artefacts, outputs.compiler_error, report_md)
    _micro_verdict(micro, report_md)
    return ConvertResult(parity, tuple(outputs.paths), report_json, report_md, micro)


# --------------------------------------------------------------------------------------------
# What flows between the steps


@dataclass(frozen=True)
class _Checked:
    """What :func:`_check_request` found in a request (nothing opened or loaded yet)."""

    frame_sizes: tuple[Any, ...]  # (H, W) whole-frame sizes and/or AUTO, parsed
    needs_calib: bool  # some recipe is int8
    calib_is_set: bool  # --calib is a prebuilt set (.npz of tiles, no frames)


@dataclass(frozen=True)
class _Inputs:
    """The model and the frames every recipe works on (:func:`_load_inputs`)."""

    loaded: Any  # the loaded Keras model (model.loading)
    meta: ModelMetadata
    sha: str  # model_sha256 of the model file or folder
    stem: str  # every output's name starts with it
    heldout: _Heldout
    plans: tuple[FramePlan, ...]  # whole-frame sizes to build (refused ones left out)
    refusals: tuple[str, ...]  # the report's frame notes for the refused sizes
    tiles: np.ndarray | None  # calibration tiles: float32 (N, H, W, C) inputs; None: no set
    frame_calib: dict[str, Any]  # frame tag → calibration set of whole frames (int8)
    calib_info: dict[str, Any] | None  # the report's calibration entry
    # An imported model: the prepared ONNX on onnxruntime (the float reference), its notes.
    reference: Callable[[np.ndarray], np.ndarray] | None = None
    imported_onnx: Path | None = None  # the prepared ONNX (NCHW), exported as the ONNX artefact
    import_notes: tuple[str, ...] = ()

    @property
    def instance(self) -> bool:
        return self.meta.instance_spec is not None


@dataclass(frozen=True)
class _Reference:
    """What every artefact is scored against (:func:`_float_reference`)."""

    float_labels: list[np.ndarray]  # the float model's label maps of the held-out frames
    float_truth: Overlap | None  # the float model against the truth, when there is one
    float_instances_truth: InstanceScores | None
    gate_notes: tuple[str, ...]  # notes of every int8 artefact (a gate that does not apply)
    fp32_recipe: Recipe
    fp32: Any  # the fp32 conversion: the size every ratio divides by, reused as fp32 recipe

    @property
    def fp32_size(self) -> int:
        return len(self.fp32.tflite)


@dataclass
class _Outputs:
    """What the recipe steps produced so far, in the report's order."""

    artefacts: list[ArtefactReport] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    frame_notes: list[str] = field(default_factory=list)
    compiler_error: CompilerError | None = None

    def add(self, report: ArtefactReport, *paths: Path | None) -> None:
        self.artefacts.append(report)
        self.paths += [p for p in paths if p is not None]

    def keep_tiled(self, why: str, say: Callable[[str], None]) -> None:
        """A whole-frame artefact not built: the report's frame notes say why."""
        self.frame_notes.append(why)
        say(why)


@dataclass(frozen=True)
class _Tiled:
    """One recipe's tiled artefact, written and scored (:func:`_tiled_artefact`)."""

    report: ArtefactReport
    path: Path  # where it is now: ``*.rejected.tflite`` when it failed its gate
    data: bytes  # the .tflite with its metadata embedded
    meta: ModelMetadata  # as embedded (an Edge TPU artefact names its CPU sibling)
    extra: dict[str, Any]  # the provenance embedded beside the metadata


# --------------------------------------------------------------------------------------------
# The steps


def _check_request(req: ConvertRequest) -> _Checked:
    """Refuse a request that cannot succeed before anything slow runs (one-line errors);
    create the output folder."""
    if not req.recipes and not req.onnx and not req.micro:
        raise DataError(CHOOSE)
    _check_micro(req)
    if req.model.suffix.lower() == ".tflite":
        raise ModelError(f"{req.model} is already a .tflite model; convert the Keras model")
    for r in req.recipes:
        check_recipe(r)
    if req.compiler_timeout <= 0:
        raise DataError("--compiler-timeout must be a positive number of seconds")
    if req.keep_float and not any(r.precision == "int8" for r in req.recipes):
        raise DataError("--keep-float applies to int8 recipes: add --int8, --edgetpu or --recipe")
    if req.keep_float and any(
        r.precision == "int8" and r.quantizer == "legacy" for r in req.recipes
    ):
        raise DataError("--keep-float needs the default quantizer, not int8-legacy")
    ensure_writable_dir(req.out)
    needs_calib = any(r.needs_calibration for r in req.recipes) or req.micro
    if req.calib is None and (needs_calib or req.val is None):
        raise DataError(
            "give --calib SOURCE (images, video, TIFF stack or a set from `edgeseg calib build`)"
            + (" for int8" if needs_calib else " or --val DIR for the parity check")
        )
    calib_is_set = req.calib is not None and req.calib.endswith(".npz")
    if calib_is_set and req.val is None:
        raise DataError(
            "--calib is a prebuilt set, which holds no frames for the parity check: add --val DIR"
        )
    frame_sizes = parse_frame_sizes(req.frame_sizes)
    if AUTO in frame_sizes and (req.calib is None or calib_is_set):
        raise DataError(
            "--frame-size auto takes the size of the calibration frames, and "
            + ("--calib is a set of tiles" if calib_is_set else "no --calib was given")
            + ": give the frame size as --frame-size HxW (height first)"
        )
    return _Checked(tuple(frame_sizes), needs_calib, calib_is_set)


def _load_inputs(req: ConvertRequest, checked: _Checked, say: Callable[[str], None]) -> _Inputs:
    """Load the model and its metadata, plan the whole-frame sizes, build (or load) the
    calibration sets and gather the held-out frames."""
    from edgeseg.convert.calibration import open_calibration_source
    from edgeseg.core.metadata import apply_flags, read_sidecar
    from edgeseg.model.loading import load_model

    # Open the calibration source before the (slow) model load, so a bad path fails at once.
    opens = req.calib is not None and not checked.calib_is_set
    from edgeseg.dicom import FILE, parse_window, window_spec

    window = parse_window(req.window)
    src = open_calibration_source(req.calib, window=window) if opens else None
    try:
        say(f"loading {req.model}")
        imported = _import(req, say)
        loaded = imported.loaded if imported else load_model(req.model, trust_model=req.trust_model)
        meta = apply_flags(
            read_sidecar(req.model), loaded.input_shape, loaded.output_shape, **req.flags
        )
        if window is not None or (src is not None and hasattr(src, "frame_geometry")):
            # DICOM calibration frames (or a set built from them, with --window given)
            meta = meta.with_updates(dicom_window=window_spec(window) or FILE)
        sha = model_sha256(req.model)
        heldout = None
        if req.val is not None:
            heldout = _heldout_from_val(req.val, meta, req.max_heldout_frames)
        plans, refusals = _frame_plans(req, checked, loaded, meta, src, say, imported)
        calib_set, heldout, frame_calib = _calibrate(req, checked, meta, src, heldout, plans, say)
    finally:
        if src is not None:
            getattr(src, "close", lambda: None)()
    calib_info = None
    if calib_set is not None:
        calib_info = {
            "source": calib_set.manifest.get("source"),
            "n": len(calib_set),
            "sha256": calib_set.sha256,
        }
    return _Inputs(
        loaded=loaded,
        meta=meta,
        sha=sha,
        stem=req.model.stem if req.model.is_file() else req.model.name,
        heldout=heldout,
        plans=tuple(plans),
        refusals=tuple(refusals),
        tiles=calib_set.tiles if calib_set is not None else None,
        frame_calib=frame_calib,
        calib_info=calib_info,
        reference=imported.predict if imported else None,
        imported_onnx=imported.onnx_path if imported else None,
        import_notes=imported.notes if imported else (),
    )


def _import(req: ConvertRequest, say: Callable[[str], None]) -> Any:
    """An ONNX model imported (:func:`edgeseg.model.importers.import_onnx`), or None for a
    Keras model."""
    from edgeseg.model.importers import import_model, is_imported

    if not is_imported(req.model):
        if req.activation is not None or req.output is not None:
            raise DataError("--activation and --output apply to an ONNX model")
        return None
    if req.keep_float:
        raise DataError("--keep-float names Keras layers; an ONNX model has none to keep")
    opts, channels = _import_options(req)
    return import_model(req.model, opts, channels=channels, say=say)


def _import_options(req: ConvertRequest) -> tuple[Any, int | None]:
    """(ImportOptions, input channels or None) from the flags and the sidecar."""
    from edgeseg.core.metadata import read_sidecar
    from edgeseg.model.importers import ImportOptions

    sidecar = read_sidecar(req.model)
    size = req.flags.get("input_size") or (sidecar.input_size if sidecar else None)
    opts = ImportOptions(
        activation=req.activation,
        output=req.output,
        input_size=size,
        edgetpu=any(r.edgetpu for r in req.recipes),
    )
    order = req.flags.get("channel_order") or (sidecar.channel_order if sidecar else None)
    channels = None if order is None else (1 if str(order).upper() == "GRAY" else 3)
    return opts, channels


def _frame_plans(
    req: ConvertRequest,
    checked: _Checked,
    loaded: Any,
    meta: ModelMetadata,
    src: Any,
    say: Callable[[str], None],
    imported: Any = None,
) -> tuple[list[FramePlan], list[str]]:
    """(whole-frame plans to build, notes on the refused ones): the sizes given, with
    ``auto`` those of the calibration frames ``src``; for an ``imported`` ONNX model, see
    :func:`_imported_plans`."""
    sizes = [x for x in checked.frame_sizes if x != AUTO]
    if AUTO in checked.frame_sizes and src is not None:
        found = auto_frame_sizes(src)
        say(f"--frame-size auto: {', '.join(map(frame_tag, found))} (the calibration frames)")
        sizes += [x for x in found if x not in sizes]
    if imported is not None:
        plans = _imported_plans(req, imported, meta, sizes, say)
    else:
        plans = plan_frames(loaded, meta, sizes, trust_model=req.trust_model)
    refusals: list[str] = []
    for plan in plans:
        if plan.refused:
            refusals.append(f"{plan.tag}: {plan.refused}; kept the tiled artefacts only")
            say(f"--frame-size {plan.tag}: {plan.refused}; kept the tiled artefacts only")
    return [p for p in plans if not p.refused], refusals


def _imported_plans(
    req: ConvertRequest,
    imported: Any,
    meta: ModelMetadata,
    sizes: list[Any],
    say: Callable[[str], None],
) -> list[FramePlan]:
    """Whole-frame plans of an imported ONNX model (:func:`plan_frames` with the import in
    place of the Keras rebuild): one with dynamic H/W is imported again at each frame size
    padded to a multiple of the graph's downsampling (onnx2tf once per size, cached); one
    exported at a fixed size is converted at that size only."""
    from dataclasses import replace

    from edgeseg.core import onnx_graph
    from edgeseg.model.importers import import_model

    if not sizes:  # no --frame-size: nothing to read the graph for
        return []
    step = onnx_graph.size_multiple(onnx_graph.load_onnx(imported.onnx_path)) or 1

    def rebuild(padded: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
        if not imported.dynamic:
            raise ModelError(
                f"the ONNX model was exported at {frame_tag(tuple(meta.input_size))} only; "
                "export it with dynamic H/W (dynamic_axes) or at the frame size for whole frames"
            )
        opts, channels = _import_options(req)
        say(f"importing the ONNX model at {frame_tag(padded)} for whole frames")
        again = import_model(
            req.model, replace(opts, input_size=padded), channels=channels, say=say
        )
        return again.loaded, {"reference": again.predict, "source_onnx": again.onnx_path}

    return plan_frames(None, meta, sizes, multiple=(step, step), rebuild=rebuild)


def _calibrate(
    req: ConvertRequest,
    checked: _Checked,
    meta: ModelMetadata,
    src: Any,
    heldout: _Heldout | None,
    plans: list[FramePlan],
    say: Callable[[str], None],
) -> tuple[Any, _Heldout, dict[str, Any]]:
    """(calibration set of tiles or None, held-out frames, frame tag → calibration set of
    whole frames).

    The tile set is the prebuilt ``--calib`` set, else built from ``src`` when an int8 recipe
    needs it or the parity check needs frames: without ``--val`` some of ``src``'s frames
    are held out of calibration for the parity check. Int8 whole-frame artefacts are
    calibrated on whole frames of ``src``, the same frames held out.
    """
    from edgeseg.convert.calibration import CalibrationSet, build_calibration

    frame_calib: dict[str, Any] = {}
    calib_set = None
    if req.calib is not None and checked.calib_is_set:
        calib_set = CalibrationSet.load(req.calib)
        calib_set.check_fits(meta)
        say(f"calibration set {req.calib}: {len(calib_set)} tiles")
    elif src is not None:
        holdout = 0.0 if heldout is not None else req.holdout
        if checked.needs_calib or heldout is None:
            say(f"building a calibration set from {src.description}")
            calib_set, held_idx = build_calibration(
                src, meta, req.n, holdout=holdout, seed=req.seed
            )
            if heldout is None:
                if not held_idx:
                    raise DataError(
                        f"{req.calib} has too few frames to hold some out for the parity "
                        "check; add --val DIR"
                    )
                held_idx = held_idx[: req.max_heldout_frames]
                heldout = _Heldout(
                    [src.read(i) for i in held_idx],
                    None,
                    f"{len(held_idx)} frames of {src.description} held out of calibration",
                )
        if checked.needs_calib:
            for plan in plans:  # whole frames, the same frames held out
                count = calibration_frames(req.n, meta.input_size, plan.input_size)
                say(f"calibrating {plan.tag} artefacts on up to {count} whole frames")
                frame_calib[plan.tag], _ = build_calibration(
                    src, plan.meta, count, holdout=holdout, seed=req.seed
                )
    assert heldout is not None  # guaranteed by _check_request
    return calib_set, heldout, frame_calib


def _float_reference(
    req: ConvertRequest, inputs: _Inputs, say: Callable[[str], None]
) -> _Reference:
    """The float model on the held-out frames, and the fp32 conversion."""
    from edgeseg.convert.tflite import convert

    heldout, meta = inputs.heldout, inputs.meta
    say(f"segmenting {len(heldout.frames)} held-out frames with the float model")
    float_model = CallableBackend(inputs.reference or inputs.loaded.predict, meta, path=req.model)
    float_labels = label_maps(heldout.frames, float_model, meta)
    float_truth = overlap(float_labels, heldout.truths, meta) if heldout.truths else None
    float_instances_truth = None
    if inputs.instance and heldout.instances is not None:
        float_instances_truth = instance_scores(float_labels, heldout.instances)
    fp32_recipe = next((r for r in req.recipes if r.name == "fp32"), None) or load_recipe("fp32")
    say("converting the fp32 reference")
    fp32 = convert(inputs.loaded, meta, fp32_recipe)
    return _Reference(
        float_labels=float_labels,
        float_truth=float_truth,
        float_instances_truth=float_instances_truth,
        gate_notes=tuple(_gate_notes(req, inputs.instance)),
        fp32_recipe=fp32_recipe,
        fp32=fp32,
    )


def _tiled_artefact(
    req: ConvertRequest,
    inputs: _Inputs,
    ref: _Reference,
    recipe: Recipe,
    say: Callable[[str], None],
) -> _Tiled:
    """``recipe``'s tiled artefact ``<stem>_<recipe>.tflite``: converted, written with its
    metadata embedded, scored on the held-out frames and gated (renamed
    ``*.rejected.tflite`` when it fails)."""
    from edgeseg.convert.tflite import convert
    from edgeseg.core.tflite_file import embed_metadata
    from edgeseg.runtime.backends import load_backend

    meta, stem = inputs.meta, inputs.stem
    int8 = recipe.precision == "int8"
    gate, gate_on = _gate(recipe, req, inputs.instance)
    say(f"converting {recipe.name}")
    if recipe.name == ref.fp32_recipe.name:
        conv = ref.fp32
    else:
        keep = req.keep_float if int8 else ()
        conv = convert(inputs.loaded, meta, recipe, inputs.tiles, keep_float=keep, float_twin=int8)
    name = f"{stem}_{recipe.name}.tflite"
    art_meta = meta
    if recipe.edgetpu:
        # The plain int8 model is the CPU fallback of its compiled Edge TPU twin.
        art_meta = meta.with_updates(provenance={**meta.provenance, "cpu_sibling": name})
    extra = {
        "recipe": recipe.to_dict(),
        **_extra_base(req, inputs.sha),
        "calibration_sha256": inputs.calib_info["sha256"] if inputs.calib_info else None,
    }
    extra.update(_graph_changes(conv))
    data = embed_metadata(conv.tflite, art_meta, extra=extra)
    path = atomic_write(req.out / name, data)
    backend = load_backend(path, threads=req.threads)
    say(f"checking {path.name} on the held-out frames")
    labels = label_maps(inputs.heldout.frames, backend, meta)
    notes = list(conv.notes) + (list(ref.gate_notes) if int8 else [])
    if conv.float_twin is not None and inputs.tiles is not None:
        say(f"measuring the quantization error of each layer of {path.name}")
    errors = _layer_errors(data, conv, inputs.tiles, req.threads, notes)
    if conv.rewritten:
        layers = ", ".join(conv.rewritten)
        notes.append(f"UpSampling2D rewritten as one RESIZE_NEAREST_NEIGHBOR: {layers}")
    if conv.depth_to_space:
        layers = ", ".join(conv.depth_to_space)
        notes.append(f"Conv2DTranspose as 1x1 CONV_2D + DEPTH_TO_SPACE: {layers}")
    if conv.kept_float:
        kept = ", ".join(conv.kept_float)
        notes.append(f"kept float (--keep-float or the recipe's float_ends): {kept}")
    report, path = _scored(
        recipe, path, data, backend.input.dtype, conv, errors, notes, meta, inputs.heldout,
        labels, ref.float_labels, ref.fp32_size, inputs.instance, gate, gate_on,
        rejected=path.with_name(f"{stem}_{recipe.name}.rejected.tflite"),
    )  # fmt: skip
    return _Tiled(report, path, data, art_meta, extra)


def _whole_frame_artefacts(
    recipe: Recipe,
    tiled: _Tiled,
    plans: tuple[FramePlan, ...],
    frames: _FrameBuilder,
    outputs: _Outputs,
    say: Callable[[str], None],
) -> None:
    """``recipe``'s whole-frame artefact at each size of ``plans`` into ``outputs``; a size
    it is not built at keeps the tiled artefact, and the frame notes say why."""
    for plan in plans:
        if recipe.edgetpu or not recipe.whole_frame:
            outputs.keep_tiled(
                edgetpu_refusal(recipe, plan, tiled.data)
                if recipe.edgetpu
                else f"{recipe.name} keeps its tiled artefact for {plan.tag}: the recipe "
                "says whole_frame = false",
                say,
            )
            continue
        try:
            report, path = frames.build(recipe, plan, tiled.path.name)
        except (DataError, ModelError) as exc:
            outputs.keep_tiled(f"{recipe.name} {plan.tag}: {exc}; kept the tiled artefact", say)
            continue
        outputs.add(report, path)


def _onnx_artefacts(
    req: ConvertRequest,
    inputs: _Inputs,
    ref: _Reference,
    frames: _FrameBuilder,
    outputs: _Outputs,
    say: Callable[[str], None],
) -> None:
    """The ONNX model ``<stem>.onnx`` and one per whole-frame size into ``outputs``, each
    scored like any artefact (see :func:`_onnx_step`)."""
    stem = inputs.stem
    report, path = _onnx_step(
        inputs.loaded, inputs.meta, stem, _extra_base(req, inputs.sha), inputs.heldout,
        ref.float_labels, ref.fp32_size, req, say, source_onnx=inputs.imported_onnx,
    )  # fmt: skip
    outputs.add(report, path)
    int8 = next((r for r in req.recipes if r.precision == "int8"), None)
    if int8 is not None and inputs.tiles is not None:
        report, path = _onnx_int8_step(path, int8, inputs, ref, req, say)
        outputs.add(report, path)
    for plan in inputs.plans:
        try:
            report, path = _onnx_step(
                plan.loaded, plan.meta, stem, _extra_base(req, inputs.sha), inputs.heldout,
                frames.float_labels(plan), ref.fp32_size, req, say,
                frame=plan, tiled_sibling=f"{stem}.onnx", source_onnx=plan.source_onnx,
            )  # fmt: skip
        except ModelError as exc:
            outputs.keep_tiled(f"onnx {plan.tag}: {exc}; kept the tiled ONNX model", say)
            continue
        outputs.add(report, path)


def _parity_report(
    req: ConvertRequest, inputs: _Inputs, ref: _Reference, outputs: _Outputs
) -> ParityReport:
    """The report of every artefact built, whatever the verdict."""
    heldout = inputs.heldout
    return ParityReport(
        model=str(req.model),
        model_sha256=inputs.sha,
        metadata=inputs.meta.to_dict(),
        heldout={
            "source": heldout.source,
            "frames": len(heldout.frames),
            "with_truth": heldout.truths is not None,
        },
        calibration=inputs.calib_info,
        float_truth=ref.float_truth,
        fp32_size_bytes=ref.fp32_size,
        artefacts=tuple(outputs.artefacts),
        float_instances_truth=ref.float_instances_truth,
        frame_notes=tuple(outputs.frame_notes),
        import_notes=inputs.import_notes,
    )


def _write_reports(parity: ParityReport, out: Path, stem: str) -> tuple[Path, Path]:
    """``<stem>_parity.json`` and ``<stem>_parity.md`` in ``out``: (JSON, Markdown)."""
    report_json = atomic_write(out / f"{stem}_parity.json", parity.to_json() + "\n")
    report_md = atomic_write(out / f"{stem}_parity.md", parity.to_markdown())
    return report_json, report_md


def _verdict(
    artefacts: tuple[ArtefactReport, ...],
    compiler_error: CompilerError | None,
    report_md: Path,
) -> None:
    """Raise for the first artefact under its gate (:class:`ParityGateError`), else for an
    Edge TPU compiler that failed (:class:`CompilerError`); the report is written by then."""
    failed = [a for a in artefacts if not a.passed]
    if failed:
        worst = failed[0]
        if worst.gate_on == GATE_AP50:
            value = worst.gated_value
            what = "finds the float model's objects at AP@0.5 " + (
                f"{value:.4f}" if value is not None else "(not measured)"
            )
        else:
            what = f"agrees with the float model at Dice {worst.agreement.dice:.4f}"
        raise ParityGateError(
            f"{worst.label} {what}, "
            f"below the gate {worst.gate:.2f}; kept {Path(worst.path).name} and the report "
            f"{report_md}. Try more or more varied calibration images (--calib, --n), another "
            "quantization strategy (--recipe int8-legacy), or keep the model float "
            "(--recipe fp16)"
        )
    if compiler_error is not None:
        raise CompilerError(
            f"{compiler_error}; kept the other artefacts and the report {report_md}"
        )


class _FrameBuilder:
    """Whole-frame artefacts of one convert: build, embed, score against the float model run
    on whole frames, gate. One per :func:`convert_model` call; float labels cached per size."""

    def __init__(
        self,
        req: ConvertRequest,
        inputs: _Inputs,
        ref: _Reference,
        say: Callable[[str], None],
    ) -> None:
        self.req, self.inputs, self.ref, self.say = req, inputs, ref, say
        self._float: dict[str, list[np.ndarray]] = {}
        self._plans: dict[str, FramePlan] = {}

    def float_labels(self, plan: FramePlan) -> list[np.ndarray]:
        """The float model, rebuilt at the frame size, on the whole held-out frames."""
        if plan.tag not in self._float:
            self.say(f"segmenting the held-out frames whole ({plan.tag}) with the float model")
            predict = plan.reference or plan.loaded.predict
            backend = CallableBackend(predict, plan.meta, path=self.req.model)
            self._float[plan.tag] = label_maps(self.inputs.heldout.frames, backend, plan.meta)
            self._plans[plan.tag] = plan
        return self._float[plan.tag]

    def notes(self) -> list[str]:
        """Per frame size: padding, and how the whole-frame float model agrees with tiling."""
        out = []
        for tag, plan in self._plans.items():
            (fh, fw), (ph, pw) = plan.frame_size, plan.input_size
            agree = overlap(self._float[tag], self.ref.float_labels, self.inputs.meta)
            out.append(
                f"{tag}: static input {ph}x{pw} (a {fh}x{fw} frame is reflect-padded by "
                f"{ph - fh}x{pw - fw} pixels, centred, and cropped back at run time); its rows "
                "are scored against the float model run on whole frames, which agrees with "
                f"the tiled float model at Dice {agree.dice:.4f}"
            )
            shapes = sorted({f.shape[:2] for f in self.inputs.heldout.frames})
            if shapes != [plan.frame_size]:
                shown = ", ".join(f"{h}x{w}" for h, w in shapes[:4])
                out.append(
                    f"{tag}: the held-out frames are {shown}, not {tag}; they were run as `run` "
                    "runs them on this artefact (padded when smaller, tiled when larger)"
                )
        return out

    def build(
        self, recipe: Recipe, plan: FramePlan, tiled_name: str
    ) -> tuple[ArtefactReport, Path]:
        """The whole-frame artefact of ``recipe`` at ``plan``'s size, scored and gated."""
        from edgeseg.convert.tflite import FrameTarget, convert
        from edgeseg.core.segmenter import frame_tiles
        from edgeseg.core.tflite_file import embed_metadata
        from edgeseg.model.reshape import rebuild_keras
        from edgeseg.runtime.backends import load_backend

        req, inputs = self.req, self.inputs
        instance, stem = inputs.instance, inputs.stem
        int8 = recipe.precision == "int8"
        keep = req.keep_float if int8 else ()
        calib = inputs.frame_calib.get(plan.tag)
        self.say(f"converting {recipe.name} at {plan.tag} (input {frame_tag(plan.input_size)})")
        notes: list[str] = []
        probe = None  # inputs of the frame size for the per-layer error
        calib_sha = None
        if not int8:
            conv = convert(plan.loaded, plan.meta, recipe)
        elif calib is not None:
            conv = convert(plan.loaded, plan.meta, recipe, calib.tiles, keep_float=keep,
                           float_twin=True)  # fmt: skip
            probe, calib_sha = calib.tiles, calib.sha256
            notes.append(f"calibrated on {len(calib)} whole frames of the calibration source")
        elif inputs.tiles is not None:

            def rebuild(model: Any) -> Any:
                return rebuild_keras(model, plan.input_size, trust_model=req.trust_model)

            conv = convert(
                inputs.loaded, inputs.meta, recipe, inputs.tiles, keep_float=keep,
                float_twin=True, frame=FrameTarget(plan.meta, rebuild),
            )  # fmt: skip
            probe = np.concatenate([frame_tiles(t, plan.meta) for t in inputs.tiles[:4]])
            calib_sha = inputs.calib_info["sha256"] if inputs.calib_info else None
            notes.append(
                "int8 ranges of the tile calibration set (a prebuilt .npz holds no whole "
                "frames): every tensor has the tiled artefact's scale"
            )
        else:
            raise DataError("int8 needs calibration (--calib)")
        name = f"{stem}_{recipe.name}_{plan.tag}.tflite"
        provenance = {**plan.meta.provenance, "tiled_sibling": tiled_name}
        art_meta = plan.meta.with_updates(provenance=provenance)
        extra = {
            "recipe": recipe.to_dict(),
            **_extra_base(req, inputs.sha),
            "calibration_sha256": calib_sha,
            "frame_size": list(plan.frame_size),
        }
        extra.update(_graph_changes(conv))
        data = embed_metadata(conv.tflite, art_meta, extra=extra)
        path = atomic_write(req.out / name, data)
        backend = load_backend(path, threads=req.threads)
        self.say(f"checking {path.name} on the whole held-out frames")
        labels = label_maps(inputs.heldout.frames, backend, plan.meta)
        float_labels = self.float_labels(plan)
        errors = _layer_errors(data, conv, probe, req.threads, notes, max_tiles=4)
        notes += list(conv.notes) + (list(self.ref.gate_notes) if int8 else [])
        if conv.kept_float:
            notes.append(f"kept float (--keep-float or the recipe's float_ends): "
                         f"{', '.join(conv.kept_float)}")  # fmt: skip
        gate, gate_on = _gate(recipe, req, instance)
        return _scored(
            recipe, path, data, backend.input.dtype, conv, errors, notes, plan.meta,
            inputs.heldout, labels, float_labels, self.ref.fp32_size, instance, gate, gate_on,
            rejected=path.with_name(f"{stem}_{recipe.name}_{plan.tag}.rejected.tflite"),
            frame_size=plan.frame_size,
        )  # fmt: skip


def _check_micro(req: ConvertRequest) -> Any:
    """--micro's checks before anything slow: TFLM installed, a microcontroller profile."""
    if req.micro_device is not None and not req.micro:
        raise DataError(
            "--device checks a microcontroller profile and applies to --micro; add --micro"
        )
    if not req.micro:
        return None
    from edgeseg.convert.micro import tflm

    tflm()
    return _micro_profile(req)


def _micro_profile(req: ConvertRequest) -> Any:
    """The microcontroller profile --device names, or None; DataError for another kind."""
    if req.micro_device is None:
        return None
    from edgeseg.devices.profiles import available_profiles, load_profile

    profile = load_profile(req.micro_device)
    if profile.micro is None:
        micro = ", ".join(n for n, p in available_profiles().items() if p.micro is not None)
        raise DataError(
            f"{profile.name} is not a microcontroller profile (no [micro] table); "
            f"microcontroller profiles: {micro or '(none found)'}"
        )
    return profile


def _micro_artefact(
    req: ConvertRequest,
    inputs: _Inputs,
    ref: _Reference,
    int8_tiled: _Tiled | None,
    outputs: _Outputs,
    say: Callable[[str], None],
) -> Any:
    """The microcontroller target (convert/micro.py) of the int8 recipe's conversion: reused
    when --int8 built it, else converted here; its TFLM row joins ``outputs``."""
    from edgeseg.convert.micro import build_micro
    from edgeseg.convert.tflite import convert

    recipe = load_recipe(MICRO_RECIPE)
    extra = {
        "recipe": {**recipe.to_dict(), "name": "micro"},
        **_extra_base(req, inputs.sha),
        "calibration_sha256": inputs.calib_info["sha256"] if inputs.calib_info else None,
    }
    if int8_tiled is not None:
        say(f"--micro: the {MICRO_RECIPE} artefact's conversion, for TensorFlow Lite Micro")
        tflite = int8_tiled.data
        changes = ("rewritten_upsampling", "depth_to_space", "kept_float")
        extra.update({k: v for k, v in int8_tiled.extra.items() if k in changes})
    else:
        say(f"converting {MICRO_RECIPE} for TensorFlow Lite Micro")
        conv = convert(inputs.loaded, inputs.meta, recipe, inputs.tiles, keep_float=req.keep_float)
        tflite = conv.tflite
        extra.update(_graph_changes(conv))
    gate, gate_on = _gate(recipe, req, inputs.instance)
    heldout = inputs.heldout
    result = build_micro(
        tflite, inputs.meta, extra, req.out, inputs.stem,
        frames=heldout.frames, truths=heldout.truths, instances=heldout.instances,
        float_labels=ref.float_labels, fp32_size=ref.fp32_size, gate=gate, gate_on=gate_on,
        profile=_micro_profile(req), threads=req.threads, say=say,
    )  # fmt: skip
    report, path = result.report, result.paths[0]
    if not report.passed:
        rejected = path.with_name(f"{inputs.stem}_micro.rejected.tflite")
        publish(path, rejected)
        report = replace(report, path=str(rejected))
        result = replace(result, report=report, paths=(rejected, *result.paths[1:]))
    outputs.add(report, *result.paths)
    figures = f"flash {result.flash_bytes} bytes, tensor arena {result.arena.arena_bytes} bytes"
    say(f"{path.name}: {figures}" + (f"; {result.fit.summary()}" if result.fit else ""))
    return result


def _micro_verdict(micro: Any, report_md: Path) -> None:
    """Raise when the microcontroller target does not fit the --device profile (one line,
    after every file and the report are written)."""
    if micro is None or micro.fit is None or micro.fit.fits:
        return
    from edgeseg.convert.micro import MicroFitError

    raise MicroFitError(
        f"{Path(micro.report.path).name} {micro.fit.summary()}; kept the files and the report "
        f"{report_md}. For a smaller model, train a student with `edgeseg distill` (fewer "
        "filters or levels)"
    )


def _gate(recipe: Recipe, req: ConvertRequest, instance: bool) -> tuple[float | None, str]:
    """(minimum value, what it gates) of one recipe's artefact.

    A semantic model: the agreement Dice (``min_dice_agreement``, ``--min-dice-agreement``
    for int8 recipes). An instance model: AP@0.5 of its objects against the float model's
    (``min_ap_agreement``, else :data:`DEFAULT_MIN_AP_AGREEMENT` when the recipe gates at all;
    ``--min-ap-agreement`` for int8 recipes).
    """
    int8 = recipe.precision == "int8"
    if not instance:
        gate = recipe.min_dice_agreement
        if req.min_dice_agreement is not None and int8:
            gate = req.min_dice_agreement
        return gate, GATE_DICE
    gate = recipe.min_ap_agreement
    if gate is None and recipe.min_dice_agreement is not None:
        gate = DEFAULT_MIN_AP_AGREEMENT
    if req.min_ap_agreement is not None and int8:
        gate = req.min_ap_agreement
    return gate, GATE_AP50


def _gate_notes(req: ConvertRequest, instance: bool) -> list[str]:
    """Notes for an int8 artefact when a gate option given does not apply to this model."""
    if instance and req.min_dice_agreement is not None:
        return [
            "--min-dice-agreement does not gate an instance model: its gate is AP@0.5 of its "
            "objects against the float model's (--min-ap-agreement)"
        ]
    if not instance and req.min_ap_agreement is not None:
        return [
            "--min-ap-agreement gates instance models only: this semantic model's gate is the "
            "agreement Dice (--min-dice-agreement)"
        ]
    return []


def _instance_fields(
    labels: list[np.ndarray],
    float_labels: list[np.ndarray],
    heldout: _Heldout,
    instance: bool,
) -> dict[str, InstanceScores | None]:
    """An artefact's objects against the float model's and, with labels, the truth's."""
    if not instance:
        return {}
    return {
        "instances": instance_scores(labels, float_labels),
        "instances_truth": (
            instance_scores(labels, heldout.instances) if heldout.instances is not None else None
        ),
    }


def _layer_errors(
    data: bytes,
    conv: Any,
    probe: np.ndarray | None,
    threads: int | None,
    notes: list[str],
    **kw: Any,
) -> tuple:
    """Per-layer quantization errors of an artefact against its float twin (empty without a
    twin or probe tiles); a runtime that cannot measure them leaves a note instead."""
    if conv.float_twin is None or probe is None:
        return ()
    try:
        return layer_errors(data, conv.float_twin, probe, threads=threads, **kw)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. an old runtime
        notes.append(f"per-layer quantization error not measured: {exc}")
        return ()


def _scored(
    recipe: Recipe,
    path: Path,
    data: bytes,
    input_type: str,
    conv: Any,
    errors: tuple,
    notes: list[str],
    meta: ModelMetadata,
    heldout: _Heldout,
    labels: list[np.ndarray],
    float_labels: list[np.ndarray],
    fp32_size: int,
    instance: bool,
    gate: Any,
    gate_on: Any,
    *,
    rejected: Path,
    frame_size: tuple[int, int] | None = None,
) -> tuple[ArtefactReport, Path]:
    """The report of an artefact checked on the held-out frames (against the float model's
    labels and the truths); one that fails its gate is renamed to ``rejected``."""
    report = ArtefactReport(
        recipe=recipe.name,
        path=str(path),
        size_bytes=len(data),
        size_ratio=len(data) / fp32_size,
        ops=op_histogram(data),
        agreement=overlap(labels, float_labels, meta),
        truth=overlap(labels, heldout.truths, meta) if heldout.truths else None,
        gate=gate,
        equalization=conv.equalization.to_dict() if conv.equalization else None,
        seconds=conv.seconds,
        input_type=input_type,
        layer_errors=errors,
        notes=tuple(notes),
        **_instance_fields(labels, float_labels, heldout, instance),
        gate_on=gate_on,
        frame_size=frame_size,
    )
    if report.passed:
        return report, path
    publish(path, rejected)
    return replace(report, path=str(rejected)), rejected


def _graph_changes(conv: Any) -> dict[str, list]:
    """What the conversion changed in the graph, for an artefact's embedded provenance."""
    out: dict[str, list] = {}
    for key, names in (
        ("rewritten_upsampling", conv.rewritten),
        ("depth_to_space", conv.depth_to_space),
        ("kept_float", conv.kept_float),
    ):
        if names:
            out[key] = list(names)
    return out


def _extra_base(req: ConvertRequest, sha: str) -> dict[str, Any]:
    """Provenance every artefact carries besides its metadata."""
    return {
        "source_model": req.model.name,
        "source_sha256": sha,
        "edgeseg_version": __version__,
        "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _onnx_step(
    loaded: Any,
    meta: Any,
    stem: str,
    extra: dict[str, Any],
    heldout: _Heldout,
    float_labels: list[np.ndarray],
    fp32_size: int,
    req: ConvertRequest,
    say: Callable[[str], None],
    frame: FramePlan | None = None,
    tiled_sibling: str | None = None,
    source_onnx: Path | None = None,
) -> tuple[ArtefactReport, Path]:
    """Export ONNX, run it on onnxruntime's CPU provider, and score it like any artefact.

    ``frame``: a whole-frame export (``meta`` and ``loaded`` of that frame size), named
    ``<stem>_<H>x<W>.onnx`` and naming its ``tiled_sibling``.
    """
    from edgeseg.convert.onnx import export_onnx, op_histogram
    from edgeseg.runtime.backends import OnnxBackend

    tag = f"_{frame.tag}" if frame is not None else ""
    say(f"exporting ONNX{' at ' + frame.tag if frame is not None else ''}")
    extra = {**extra, "recipe": {"name": "onnx"}}
    if frame is not None:
        meta = meta.with_updates(provenance={**meta.provenance, "tiled_sibling": tiled_sibling})
        extra["frame_size"] = list(frame.frame_size)
    if source_onnx is not None:  # an imported model: its own ONNX graph, NHWC at the edges
        from edgeseg.convert.onnx import export_imported_onnx

        export = export_imported_onnx(source_onnx, meta, extra=extra)
    else:
        export = export_onnx(loaded, meta, extra=extra)
    path = atomic_write(req.out / f"{stem}{tag}.onnx", export.data)
    backend = OnnxBackend(path, provider="cpu", threads=req.threads)
    say(f"checking {path.name} on the held-out frames ({backend.runtime})")
    labels = label_maps(heldout.frames, backend, meta)
    report = ArtefactReport(
        recipe="onnx",
        path=str(path),
        size_bytes=len(export.data),
        size_ratio=len(export.data) / fp32_size,
        ops=op_histogram(export.data),
        agreement=overlap(labels, float_labels, meta),
        truth=overlap(labels, heldout.truths, meta) if heldout.truths else None,
        gate=None,
        seconds=export.seconds,
        input_type="float32",
        notes=(
            f"opset {export.opset}; run with onnxruntime (TensorRT/CUDA/CPU providers)",
            *(
                [
                    f"static input {frame_tag(meta.input_size)} for {frame.tag} frames: "
                    "TensorRT builds its engine for that one shape"
                ]
                if frame is not None
                else []
            ),
        ),
        **_instance_fields(labels, float_labels, heldout, meta.instance_spec is not None),
        gate_on=GATE_AP50 if meta.instance_spec is not None else GATE_DICE,
        frame_size=frame.frame_size if frame is not None else None,
    )
    return report, path


def _onnx_int8_step(
    float_path: Path,
    recipe: Recipe,
    inputs: _Inputs,
    ref: _Reference,
    req: ConvertRequest,
    say: Callable[[str], None],
) -> tuple[ArtefactReport, Path]:
    """``<stem>_int8.onnx``: the float ONNX artefact as static int8 QDQ, calibrated on the
    int8 recipes' calibration tiles, scored on onnxruntime and gated like the int8 TFLite
    artefact (``*_int8.rejected.onnx`` when it fails)."""
    from edgeseg.convert.onnx import op_histogram as onnx_op_histogram
    from edgeseg.convert.onnx import quantize_onnx
    from edgeseg.runtime.backends import OnnxBackend

    stem, meta = inputs.stem, inputs.meta
    say("quantizing the ONNX model to int8 (QDQ)")
    extra = {**_extra_base(req, inputs.sha), "recipe": {"name": "onnx-int8"}}
    assert inputs.tiles is not None  # the caller checks
    source, eq_notes = float_path.read_bytes(), []
    keras_model = inputs.loaded.keras_model
    if keras_model is not None and recipe.equalize:
        # As for the int8 TFLite artefact: skip ranges equalized first (exact in float), or
        # one wide-range skip input leaves its concatenation too few int8 steps.
        from edgeseg.convert.equalize import equalize
        from edgeseg.convert.onnx import export_onnx

        eq = equalize(keras_model, inputs.tiles)
        if eq.changed:
            source = export_onnx(replace(inputs.loaded, keras_model=eq.model), meta).data
            eq_notes.append(
                f"range equalization: {len(eq.scalings)} skip(s) rescaled before quantizing"
            )
    export = quantize_onnx(source, inputs.tiles, extra=extra)
    path = atomic_write(req.out / f"{stem}_int8.onnx", export.data)
    backend = OnnxBackend(path, provider="cpu", threads=req.threads)
    say(f"checking {path.name} on the held-out frames ({backend.runtime})")
    labels = label_maps(inputs.heldout.frames, backend, meta)
    gate, gate_on = _gate(recipe, req, inputs.instance)
    report = ArtefactReport(
        recipe="onnx-int8",
        path=str(path),
        size_bytes=len(export.data),
        size_ratio=len(export.data) / ref.fp32_size,
        ops=onnx_op_histogram(export.data),
        agreement=overlap(labels, ref.float_labels, meta),
        truth=overlap(labels, inputs.heldout.truths, meta) if inputs.heldout.truths else None,
        gate=gate,
        seconds=export.seconds,
        input_type="float32",
        notes=(
            f"static int8 QDQ (onnxruntime.quantization, opset {export.opset}): onnxruntime "
            "and OpenVINO run it; TensorRT builds an int8 engine from its Q/DQ scales",
            *eq_notes,
            *ref.gate_notes,
        ),
        **_instance_fields(labels, ref.float_labels, inputs.heldout, inputs.instance),
        gate_on=gate_on,
    )
    if report.passed:
        return report, path
    rejected = publish(path, path.with_name(f"{stem}_int8.rejected.onnx"))
    return replace(report, path=str(rejected)), rejected


def _edgetpu_step(
    path: Path,
    data: bytes,
    passed: bool,
    meta: Any,
    extra: dict[str, Any],
    req: ConvertRequest,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], Path | None, CompilerError | None]:
    """Preflight, then the compiler when it is there: (report entry, compiled model, failure)."""
    from edgeseg.convert.edgetpu import (
        COMPILER_INSTALL_HINT,
        compile_model,
        compiler_path,
        preflight,
    )
    from edgeseg.core.tflite_file import embed_metadata

    pre = preflight(data, path.name)
    say(f"Edge TPU preflight of {path.name}: {pre.verdict}")
    info: dict[str, Any] = {"preflight": pre.to_dict()}
    if not passed:
        info["compiler"] = {"status": "skipped", "why": "the artefact failed the parity gate"}
        return info, None, None
    if compiler_path() is None:
        say(COMPILER_INSTALL_HINT)
        info["compiler"] = {"status": "missing", "hint": COMPILER_INSTALL_HINT}
        return info, None, None
    say(f"compiling {path.name} with edgetpu_compiler")
    try:
        result = compile_model(path, req.out, timeout=req.compiler_timeout)
    except CompilerError as exc:
        info["compiler"] = {"status": "failed", "error": str(exc)}
        return info, None, exc
    compiled = result.compiled
    try:  # the compiled model carries the same metadata, naming its CPU sibling
        atomic_write(compiled, embed_metadata(compiled.read_bytes(), meta, extra=extra))
    except ModelError as exc:
        info["metadata_error"] = str(exc)
    info["compiler"] = {
        "status": "compiled",
        "path": str(compiled),
        "command": list(result.command),
        "summary": result.report.summary,
        **result.report.to_dict(),
    }
    return info, compiled, None


__all__ = [
    "CompilerError",
    "ConvertRequest",
    "ConvertResult",
    "InstanceScores",
    "Overlap",
    "ParityGateError",
    "convert_model",
    "model_sha256",
    "resolve_recipes",
]
