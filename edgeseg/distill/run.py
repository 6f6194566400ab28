"""`edgeseg distill`: the command, step by step, bounded by ``--max-minutes`` as a whole.

1. Check the request (nothing opened): the output name, the budget, the architectures, the
   device profile (with ``--device``, its ``int8_gmacs`` must be recorded).
2. Load the teacher safely (:func:`~edgeseg.model.loading.load_model`: a Lambda model is
   refused) and its metadata (sidecar, or read from its tensors).
3. Read the frames and label them with the teacher (:mod:`edgeseg.distill.frames`).
4. The teacher's own int8 whole-frame artefact and its latency; then the students
   (:mod:`edgeseg.distill.search`), widest first per architecture, until one fits. None fits:
   the smallest is trained briefly and the error says its latency and agreement.
5. Train the chosen student (:mod:`edgeseg.distill.student`) until agreement stops improving
   or the time left (less what the last steps need) runs out.
6. The trained student converted and measured again (the latency in the report is the trained
   model's), accuracy against ``--val`` truth for teacher and student, then the student
   (``.keras`` + sidecar with the teacher's metadata and provenance) and its report are
   written, all at the end: a failure before leaves nothing behind.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata, apply_flags, read_sidecar, sidecar_path
from edgeseg.core.segmenter import frame_tiles
from edgeseg.distill.frames import TeacherData, teacher_data
from edgeseg.distill.report import SCHEMA, write_report
from edgeseg.distill.search import (
    Candidate,
    Latency,
    LatencyJudge,
    convert_at_frame,
    keras_macs,
    student_configs,
    student_meta_for,
    teacher_unet,
    try_candidate,
)
from edgeseg.distill.student import EpochRecord, accuracy, train_student
from edgeseg.errors import DataError, EdgesegError, ModelError
from edgeseg.model.unet import ARCHS, UNetConfig
from edgeseg.sizes import format_hw

__all__ = ["BudgetError", "DistillRequest", "DistillResult", "distill"]


#: A candidate predicted above budget x this (from its MACs at the teacher's measured GMAC/s)
#: is not converted; within it, it is converted and measured.
PREDICTION_MARGIN = 1.25


class BudgetError(EdgesegError):
    """No student reaches the latency budget (or the time budget is spent before one does)."""


@dataclass(frozen=True)
class DistillRequest:
    teacher: Path
    frames: str
    budget_ms: float
    out: Path
    frame_size: tuple[int, int] | None = None  # default: the frames' own size
    device: str | None = None  # a device profile: predict latency from its int8_gmacs
    max_minutes: float = 30.0
    archs: tuple[str, ...] = ("unet", "separable")
    widths: tuple[float, ...] | None = None  # default: search.WIDTHS
    val: str | None = None  # a labelled folder: accuracy against the truth
    backend: str = "auto"  # the runtime to measure on; auto: as --backend auto picks
    threads: int | None = None  # None: every core
    runs: int = 15
    max_frames: int = 200
    holdout: float = 0.2
    batch_size: int = 8
    steps_per_epoch: int = 25
    patience: int = 4
    learning_rate: float = 2e-3
    seed: int = 0
    calibration_tiles: int = 32


@dataclass(frozen=True)
class DistillResult:
    student: Path
    metadata_path: Path
    report_json: Path
    report_md: Path
    report: dict[str, Any] = field(repr=False)


def _check(req: DistillRequest) -> tuple[Any, Any]:
    """(recipe, profile) after checking the request; nothing is opened."""
    from edgeseg.convert.recipes import load_recipe

    out = Path(req.out)
    if out.suffix != ".keras":
        raise DataError(f"--out must name a .keras file, got {out}")
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as student.keras")
    if not (req.budget_ms > 0 and math.isfinite(req.budget_ms)):
        raise DataError(
            f"--budget-ms must be a positive number of milliseconds, got {req.budget_ms}"
        )
    if not req.max_minutes > 0:
        raise DataError(f"--max-minutes must be positive, got {req.max_minutes}")
    bad = [a for a in req.archs if a not in ARCHS]
    if bad or not req.archs:
        raise DataError(
            f"--arch takes {', '.join(ARCHS)} (comma-separated), got {','.join(req.archs)}"
        )
    if req.widths is not None and (not req.widths or not all(0 < w <= 8 for w in req.widths)):
        raise DataError(f"--widths must be numbers in (0, 8], got {req.widths}")
    if not 0 < req.holdout < 1:
        raise DataError(f"holdout must be in (0, 1), got {req.holdout}")
    profile = None
    if req.device:
        from edgeseg.devices.profiles import load_profile

        profile = load_profile(req.device)
        if profile.int8_gmacs is None:
            raise DataError(
                f"device profile {profile.name} records no int8_gmacs: on the device run "
                f"`edgeseg bench MODEL_int8.tflite` (any int8 U-Net), then add "
                f"`int8_gmacs = <its GMAC/s>` to {profile.source or profile.name + '.toml'}"
            )
    recipe = load_recipe(profile.recipe if profile is not None else "int8")
    if recipe.precision != "int8":
        raise DataError(
            f"distill fits int8 latency; the recipe {recipe.name} is {recipe.precision}"
        )
    return recipe, profile


def _load_teacher(path: Path) -> tuple[Any, ModelMetadata]:
    from edgeseg.model.loading import load_model

    if not Path(path).exists():
        raise ModelError(f"teacher not found: {path}")
    loaded = load_model(path)  # refuses Lambda layers and what is not image-to-mask
    if loaded.keras_model is None:
        raise ModelError(
            f"{path}: a SavedModel has no Keras layers to read the teacher's architecture from; "
            "distill from its .keras or .h5 file"
        )
    meta = apply_flags(read_sidecar(path), loaded.input_shape, loaded.output_shape)
    return loaded, meta


def _calibration(data: TeacherData, meta: ModelMetadata, n: int, seed: int) -> np.ndarray:
    tiles = np.concatenate([frame_tiles(x, meta) for x in data.train_x])
    pick = np.random.default_rng(seed).permutation(len(tiles))[:n]
    return tiles[np.sort(pick)]


def distill(
    req: DistillRequest,
    say: Callable[[str], None] = lambda _msg: None,
    on_epoch: Callable[[EpochRecord, float | None], None] | None = None,
) -> DistillResult:
    """Distil ``req.teacher`` into a student that fits ``req.budget_ms``; see the module
    docstring. ``say`` hears progress; ``on_epoch(record, latency_ms)`` each epoch with the
    student's estimated int8 latency.

    Raises:
        EdgesegError: one line for every bad input; :class:`BudgetError` when no student fits.
    """
    from edgeseg.distill.frames import open_frames
    from edgeseg.paths import atomic_path, atomic_write, file_sha256

    start = time.perf_counter()
    deadline = start + req.max_minutes * 60
    recipe, profile = _check(req)
    loaded, meta = _load_teacher(req.teacher)
    teacher = loaded.keras_model
    say(f"teacher {req.teacher}: {meta.input_size[0]}x{meta.input_size[1]} tiles, "
        f"{meta.output_channels} output channel(s)")  # fmt: skip
    src = open_frames(req.frames, req.max_frames)
    try:
        data = teacher_data(src, loaded.predict, meta, max_frames=req.max_frames,
                            holdout=req.holdout, seed=req.seed)  # fmt: skip
    finally:
        close = getattr(src, "close", None)
        if close:
            close()
    frame_size = tuple(req.frame_size or data.frame_size)
    say(f"{data.n_frames} frames from {data.source} labelled by the teacher "
        f"({len(data.held_x)} held back); fitting {req.budget_ms:g} ms at "
        f"{format_hw(frame_size)}")  # fmt: skip
    instance = meta.instance_spec is not None
    metric = "ap50" if instance else "dice"
    tiles = _calibration(data, meta, req.calibration_tiles, req.seed)
    top, depth, decoder = teacher_unet(teacher, meta)
    if recipe.edgetpu:
        decoder = "upsample"  # TRANSPOSE_CONV often stays off the Edge TPU
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-distill-") as tmp:
        work = Path(tmp)
        judge = LatencyJudge(
            gmacs=profile.int8_gmacs if profile is not None else None,
            runtime=None if req.backend == "auto" else req.backend,
            threads=req.threads,
            runs=req.runs,
            frame_size=frame_size,
            say=say,
        )
        # The teacher's own artefact and latency.
        t0 = time.perf_counter()
        teacher_lat: Latency | None = None
        try:
            art, _ = convert_at_frame(
                teacher, meta, frame_size, recipe, tiles, work / "teacher.tflite"
            )
            teacher_lat = judge.judge(art, int(teacher.count_params()), time.perf_counter() - t0)
            say(f"teacher int8 at {format_hw(frame_size)}: {teacher_lat.ms:.2f} ms "
                f"({teacher_lat.how}, {teacher_lat.macs / 1e9:.2f} GMAC)")  # fmt: skip
        except ModelError as exc:
            notes.append(f"teacher latency not measured: {exc}")
            say(f"teacher latency not measured: {exc}")
        # The students, widest first per architecture, until one fits.
        s_meta_tile = None
        configs = student_configs(meta, top, depth, decoder, req.archs,
                                  *(() if req.widths is None else (req.widths,)))  # fmt: skip
        tried: list[Candidate] = []
        search_end = start + req.max_minutes * 60 * 0.4
        # Latency follows MACs closely within one architecture family: with the teacher's
        # measured GMAC/s, candidates predicted well over the budget are not converted (the
        # narrowest of each architecture always is, so an unreachable budget is measured).
        rate = teacher_lat.macs / teacher_lat.ms if teacher_lat and teacher_lat.ms > 0 else None
        pixels = (frame_size[0] * frame_size[1]) / (meta.input_size[0] * meta.input_size[1])
        for arch, cands in configs.items():
            for n, cfg in enumerate(cands):
                now = time.perf_counter()
                measured = any(c.latency for c in tried)
                if (now > search_end and any(c.fits for c in tried)) or (
                    now > deadline and measured
                ):
                    tried.append(Candidate(cfg, None, False, "not tried: search time spent"))
                    continue
                if rate is not None and n < len(cands) - 1:
                    guess = keras_macs(_build(cfg, req.seed)) * pixels / rate
                    if guess > req.budget_ms * PREDICTION_MARGIN:
                        note = f"predicted {guess:.1f} ms from its MACs: not converted"
                        say(f"  {arch} width {cfg.width:g}: {note}")
                        tried.append(Candidate(cfg, None, False, note))
                        continue
                c = try_candidate(cfg, meta, judge, frame_size, recipe, tiles, work,
                                  req.budget_ms, req.seed)  # fmt: skip
                say(f"  {c.label}: {c.latency.ms:.2f} ms ({c.latency.how}, "
                    f"{c.latency.macs / 1e9:.3f} GMAC){' fits' if c.fits else ''}")  # fmt: skip
                tried.append(c)
                if c.fits:
                    break
            del arch
        fitting = [c for c in tried if c.fits]
        if not fitting:
            smallest = min((c for c in tried if c.latency), key=lambda c: c.latency.ms)
            remaining = deadline - time.perf_counter()
            brief = max(0.0, min(remaining, 0.25 * req.max_minutes * 60))
            short = train_student(
                _build(smallest.unet, req.seed), student_meta_for(meta, smallest.unet), data,
                deadline=time.perf_counter() + brief,
                batch_size=req.batch_size, steps_per_epoch=req.steps_per_epoch, max_epochs=3,
                learning_rate=req.learning_rate, seed=req.seed,
            )  # fmt: skip
            raise BudgetError(
                f"no student reaches {req.budget_ms:g} ms at {format_hw(frame_size)}: the smallest "
                f"tried ({smallest.label}) takes {smallest.latency.ms:.2f} ms "
                f"({smallest.latency.how}), agreement {metric} {short.agreement:.3f} after "
                f"{len(short.history)} short epoch(s)"
                + (
                    "; --max-minutes ended the search"
                    if any(c.note.startswith("not tried") for c in tried)
                    else ""
                )
                + "; raise --budget-ms or lower --frame-size"
            )
        chosen = max(fitting, key=lambda c: c.latency.macs)
        for i, c in enumerate(tried):
            if c is chosen:
                tried[i] = replace(c, note="chosen: the most GMAC within the budget")
            elif c.fits:
                tried[i] = replace(c, note="fits, fewer GMAC than the chosen one")
        say(f"chosen: {chosen.label}, {chosen.latency.ms:.2f} ms")
        s_meta_tile = student_meta_for(meta, chosen.unet)
        # Train with what is left, less the final conversion and measurement.
        reserve = (chosen.latency.convert_s + chosen.latency.measure_s) * 1.5 + 5.0
        model = _build(chosen.unet, req.seed)

        def epoch_cb(rec: EpochRecord) -> None:
            if on_epoch:
                on_epoch(rec, chosen.latency.ms)

        result = train_student(
            model, s_meta_tile, data, deadline=deadline - reserve,
            batch_size=req.batch_size, steps_per_epoch=req.steps_per_epoch,
            patience=req.patience, learning_rate=req.learning_rate, seed=req.seed,
            on_epoch=epoch_cb,
        )  # fmt: skip
        # A clean, uncompiled copy: it loads anywhere without edgeseg's losses.
        student = _build(chosen.unet, req.seed)
        student.set_weights(result.model.get_weights())
        # Latency does not depend on the weights: the chosen candidate's artefact (the same
        # graph, converted the same way) gave the student's latency. With --device it was
        # predicted; it is measured here too, for the prediction's error on this machine.
        final = chosen.latency
        measured_ms = final.ms if final.how == "measured" else None
        if final.how == "predicted" and chosen.artefact is not None:
            try:
                measured_ms, _rt = judge.measure(chosen.artefact)
            except EdgesegError as exc:
                notes.append(f"the student was not measured here: {exc}")
        predicted_ms = final.ms if final.how == "predicted" else None
        notes.append(
            "latencies are of int8 whole-frame artefacts converted as `edgeseg convert` would, "
            "from the untrained candidates (latency does not depend on the weights); run "
            "`edgeseg convert` on the student for its parity report and gate"
        )
        # Accuracy against the truth.
        acc = None
        if req.val:
            from edgeseg.datasets import load_labelled

            val = load_labelled(req.val, meta, instances=instance)
            acc = {
                "val": str(req.val),
                "images": len(val),
                "teacher": accuracy(loaded.predict, meta, val.images, val.targets),
                "student": accuracy(
                    lambda t: np.asarray(student(t, training=False)),
                    s_meta_tile, val.images, val.targets,
                ),
            }  # fmt: skip
        # Write: the student, its metadata, the report.
        out = Path(req.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        teacher_sha = file_sha256(req.teacher) if Path(req.teacher).is_file() else None
        provenance = dict(meta.provenance or {})
        teacher_prov = {k: v for k, v in provenance.items() if k != "distilled_from"}
        provenance.update(
            unet=chosen.unet.to_dict(),
            distilled_from={
                "teacher": str(req.teacher),
                "sha256": teacher_sha,
                "provenance": teacher_prov,
                "frames": data.source,
                "budget_ms": req.budget_ms,
                "frame_size": list(frame_size),
                "agreement": {metric: round(result.agreement, 6)},
            },
        )
        s_meta = s_meta_tile.with_updates(provenance=provenance)
        try:
            with atomic_path(out) as tmp_path:
                student.save(tmp_path)
            meta_path = atomic_write(sidecar_path(out), s_meta.to_json() + "\n")
        except OSError as exc:
            raise DataError(f"cannot write {out}: {exc.strerror or exc}") from exc
    speedup = None
    if teacher_lat is not None and measured_ms and teacher_lat.how == "measured":
        speedup = teacher_lat.ms / measured_ms
    elif teacher_lat is not None and final.how == "predicted":
        speedup = teacher_lat.ms / final.ms
    teacher_arch = (meta.provenance or {}).get("unet", {}).get("arch", "unet")
    report = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "budget_ms": req.budget_ms,
        "frame_size": format_hw(frame_size),
        "how": final.how,
        "runtime": judge.runtime,
        "runtime_reason": judge.runtime_reason,
        "device": profile.name if profile is not None else None,
        "recipe": recipe.name,
        "teacher": {
            "path": str(req.teacher),
            "sha256": teacher_sha,
            "arch": teacher_arch,
            "top_filters": top,
            "depth": depth,
            "macs": teacher_lat.macs if teacher_lat else 0,
            "params": int(teacher.count_params()),
            "latency": teacher_lat.to_dict() if teacher_lat else None,
        },
        "student": {
            "path": str(out),
            "arch": chosen.unet.arch,
            "width": chosen.unet.width,
            "top_filters": chosen.unet.top_filters,
            "depth": chosen.unet.depth,
            "unet": chosen.unet.to_dict(),
            "macs": final.macs,
            "params": final.params,
            "latency": final.to_dict(),
            "predicted_ms": predicted_ms,
            "measured_ms": measured_ms,
            "prediction_error": (predicted_ms - measured_ms) / measured_ms
            if predicted_ms and measured_ms
            else None,
        },
        "speedup": speedup,
        "agreement": {
            "metric": metric,
            "value": result.agreement,
            "best_epoch": result.best_epoch,
            "stopped": result.stopped,
        },
        "accuracy": acc,
        "candidates": [c.to_dict() for c in tried],
        "training": {
            "frames": {
                "source": data.source,
                "read": data.n_frames,
                "in_source": data.frames_total,
                "train": len(data.train_x),
                "held_back": len(data.held_x),
            },
            "steps": result.steps,
            "batch_size": req.batch_size,
            "seconds": result.seconds,
            "epochs": [e.__dict__ for e in result.history],
        },
        "minutes": (time.perf_counter() - start) / 60,
        "notes": notes,
    }
    json_path, md_path = write_report(report, out)
    return DistillResult(out, meta_path, json_path, md_path, report)


def _build(config: UNetConfig, seed: int) -> Any:
    from edgeseg.distill.search import build_student

    return build_student(config, seed)
