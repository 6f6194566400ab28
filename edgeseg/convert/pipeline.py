"""`edgeseg convert` as a library call: load, calibrate, convert each recipe, prove parity.

Order of work, chosen so that bad input fails before anything slow runs and nothing already
produced is lost: check the output folder, load the model and its metadata, open the
held-out frames and the calibration source, build (or load) the calibration set, convert the
fp32 reference and every recipe, write each artefact with its metadata embedded, score it
against the float model, and write the parity report (JSON + Markdown) whatever the
verdict. An int8 artefact under the agreement gate is renamed ``*.rejected.tflite`` and the
call raises :class:`ParityGateError` after the report is written.
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
from edgeseg.convert.parity import ArtefactReport, Overlap, ParityReport, label_maps, overlap
from edgeseg.convert.recipes import Recipe, load_recipe
from edgeseg.errors import DataError, EdgesegError, ModelError

MAX_HELDOUT_FRAMES = 20


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
    trust_model: bool = False
    threads: int | None = None
    max_heldout_frames: int = MAX_HELDOUT_FRAMES
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConvertResult:
    report: ParityReport
    artefacts: tuple[Path, ...]
    report_json: Path
    report_md: Path


def model_sha256(path: Path) -> str:
    """sha256 of a model file, or of every file of a SavedModel folder (paths included)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edgeseg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"cannot write to {out}: {exc.strerror or exc}") from exc


@dataclass
class _Heldout:
    frames: list[np.ndarray]
    truths: list[np.ndarray] | None
    source: str


def _heldout_from_val(val: Path, meta: Any, limit: int) -> _Heldout:
    from edgeseg.runtime.sources import open_file_source
    from edgeseg.train.data import find_pairs, mask_to_labels, read_pair

    if (val / "masks").is_dir() and (val / "images").is_dir():
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


def resolve_recipes(names: list[str], fp16: bool = False, int8: bool = False) -> tuple[Recipe, ...]:
    """The recipes for ``--fp16``, ``--int8`` and ``--recipe NAME`` (deduplicated, in order)."""
    wanted = [*(["fp16"] if fp16 else []), *(["int8"] if int8 else []), *names]
    if not wanted:
        raise DataError("choose what to build: --fp16, --int8 and/or --recipe NAME")
    recipes: list[Recipe] = []
    for name in wanted:
        r = load_recipe(name)
        if r.name not in [x.name for x in recipes]:
            recipes.append(r)
    return tuple(recipes)


def convert_model(
    req: ConvertRequest, say: Callable[[str], None] = lambda _msg: None
) -> ConvertResult:
    """Run the whole conversion; see the module docstring. ``say`` receives progress lines."""
    from edgeseg.calibration.sets import CalibrationSet, build_calibration
    from edgeseg.convert.tflite import convert
    from edgeseg.convert.tflite_meta import embed_metadata, op_histogram
    from edgeseg.model.loading import load_model
    from edgeseg.model.metadata import read_sidecar
    from edgeseg.model.resolve import apply_flags
    from edgeseg.runtime.backends import load_backend
    from edgeseg.runtime.sources import open_file_source

    if not req.recipes:
        raise DataError("choose what to build: --fp16, --int8 and/or --recipe NAME")
    if req.model.suffix.lower() == ".tflite":
        raise ModelError(f"{req.model} is already a .tflite model; convert the Keras model")
    _check_out(req.out)
    needs_calib = any(r.needs_calibration for r in req.recipes)
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
    # Open the calibration source before the (slow) model load, so a bad path fails at once.
    src = open_file_source(req.calib) if req.calib is not None and not calib_is_set else None
    say(f"loading {req.model}")
    loaded = load_model(req.model, trust_model=req.trust_model)
    meta = apply_flags(
        read_sidecar(req.model), loaded.input_shape, loaded.output_shape, **req.flags
    )
    sha = model_sha256(req.model)

    heldout: _Heldout | None = None
    if req.val is not None:
        heldout = _heldout_from_val(req.val, meta, req.max_heldout_frames)
    calib_set = None
    calib_info = None
    if req.calib is not None and calib_is_set:
        calib_set = CalibrationSet.load(req.calib)
        calib_set.check_fits(meta)
        say(f"calibration set {req.calib}: {len(calib_set)} tiles")
    elif src is not None:
        try:
            holdout = 0.0 if heldout is not None else req.holdout
            if needs_calib or heldout is None:
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
        finally:
            getattr(src, "close", lambda: None)()
    if calib_set is not None:
        m = calib_set.manifest
        calib_info = {
            "source": m.get("source"),
            "n": len(calib_set),
            "sha256": calib_set.sha256,
        }
    assert heldout is not None  # guaranteed by the checks above
    tiles = calib_set.tiles if calib_set is not None else None

    say(f"segmenting {len(heldout.frames)} held-out frames with the float model")
    float_labels = label_maps(heldout.frames, loaded.predict, meta)
    float_truth = overlap(float_labels, heldout.truths, meta) if heldout.truths else None

    fp32_recipe = next((r for r in req.recipes if r.name == "fp32"), None) or load_recipe("fp32")
    say("converting the fp32 reference")
    fp32 = convert(loaded, meta, fp32_recipe)
    fp32_size = len(fp32.tflite)

    stem = req.model.stem if req.model.is_file() else req.model.name
    artefacts: list[ArtefactReport] = []
    paths: list[Path] = []
    for recipe in req.recipes:
        gate = recipe.min_dice_agreement
        if req.min_dice_agreement is not None and recipe.precision == "int8":
            gate = req.min_dice_agreement
        say(f"converting {recipe.name}")
        conv = fp32 if recipe.name == fp32_recipe.name else convert(loaded, meta, recipe, tiles)
        extra = {
            "recipe": recipe.to_dict(),
            "source_model": req.model.name,
            "source_sha256": sha,
            "calibration_sha256": calib_info["sha256"] if calib_info else None,
            "edgeseg_version": __version__,
            "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = embed_metadata(conv.tflite, meta, extra=extra)
        path = req.out / f"{stem}_{recipe.name}.tflite"
        path.write_bytes(data)
        backend = load_backend(path, threads=req.threads)
        say(f"checking {path.name} on the held-out frames")
        labels = label_maps(heldout.frames, backend.predict, meta)
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
            input_type=backend.input.dtype,
        )
        if not report.passed:
            rejected = path.with_name(f"{stem}_{recipe.name}.rejected.tflite")
            path.replace(rejected)
            report = replace(report, path=str(rejected))
            path = rejected
        artefacts.append(report)
        paths.append(path)

    parity = ParityReport(
        model=str(req.model),
        model_sha256=sha,
        metadata=meta.to_dict(),
        heldout={
            "source": heldout.source,
            "frames": len(heldout.frames),
            "with_truth": heldout.truths is not None,
        },
        calibration=calib_info,
        float_truth=float_truth,
        fp32_size_bytes=fp32_size,
        artefacts=tuple(artefacts),
    )
    report_json = req.out / f"{stem}_parity.json"
    report_md = req.out / f"{stem}_parity.md"
    report_json.write_text(parity.to_json() + "\n")
    report_md.write_text(parity.to_markdown())
    failed = [a for a in artefacts if not a.passed]
    if failed:
        worst = failed[0]
        raise ParityGateError(
            f"{worst.recipe} agrees with the float model at Dice {worst.agreement.dice:.4f}, "
            f"below the gate {worst.gate:.2f}; kept {Path(worst.path).name} and the report "
            f"{report_md}. Try more or more varied calibration images (--calib, --n), another "
            "quantization strategy (--recipe int8-legacy), or keep the model float "
            "(--recipe fp16)"
        )
    return ConvertResult(parity, tuple(paths), report_json, report_md)


__all__ = [
    "ConvertRequest",
    "ConvertResult",
    "Overlap",
    "ParityGateError",
    "convert_model",
    "model_sha256",
    "resolve_recipes",
]
