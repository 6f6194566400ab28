"""What each artefact cost: size, ops, agreement with the float model, accuracy against truth.

Every artefact segments the same held-out frames as the float Keras model (tiled exactly as
the runtime tiles them). Agreement is the Dice/IoU between the artefact's masks and the float
model's masks, pooled over all held-out pixels (mean over foreground classes); when the
held-out frames have ground truth, both the float model and the artefact are scored against
it, and the change is reported.

An instance model (metadata ``instances``) is judged on its objects, not on the pixels of
a thin interior map: each artefact's instances are matched one to one with the float model's
(:func:`edgeseg.core.metrics.match_instances`, counts pooled over the held-out frames), the
float model's objects taken as truth; AP@0.5 of that matching is the artefact's agreement and
what the int8 gate checks (``min_ap_agreement``, default 0.95). When the held-out folder has
instance labels (``labels/``), the float model and each artefact are also scored against them
(AP@0.5, mean AP over IoU 0.5..0.95, F1@0.5, median count error) and the changes reported.
The pixel Dice/IoU of the foreground is kept beside them.

For int8 artefacts the report also holds the per-layer quantization error of the artefact
actually shipped (:func:`layer_errors`): its intermediate tensors, dequantized, against those
of the same graph in fp32, on calibration tiles, worst layers first. For Edge TPU recipes it
holds the op-by-op preflight and what the compiler said (see :mod:`edgeseg.convert.edgetpu`).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.metrics import foreground_overlap, match_instances, median_count_error
from edgeseg.core.quant import TensorInfo, dequantize, quantize
from edgeseg.core.segmenter import Segmenter
from edgeseg.sizes import format_hw


@dataclass(frozen=True)
class Overlap:
    """Pooled Dice and IoU over foreground classes (the mean over classes 1..K-1)."""

    dice: float
    iou: float


#: The int8 gate of an instance model when its recipe names none: AP@0.5 against the float
#: model's objects.
DEFAULT_MIN_AP_AGREEMENT = 0.95
GATE_DICE = "dice"
GATE_AP50 = "ap50"


@dataclass(frozen=True)
class InstanceScores:
    """Objects matched one to one against reference objects, counts pooled over all frames.

    ``ap50``: TP / (TP + FP + FN) at IoU 0.5; ``mean_ap`` over IoU 0.5, 0.55, …, 0.95;
    ``median_count_error``: median over frames of |found - reference| / reference objects
    (None when no frame has reference objects).
    """

    ap50: float
    mean_ap: float
    precision50: float
    recall50: float
    f1_50: float
    median_count_error: float | None
    n_true: int
    n_pred: int


def instance_scores(
    predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray]
) -> InstanceScores:
    """Instance id maps ``predicted`` against ``reference`` (same frames, same order)."""
    per = [match_instances(p, r) for p, r in zip(predicted, reference, strict=True)]
    if not per:
        raise ValueError("no frames to match instances on")
    pooled = per[0]
    for c in per[1:]:
        pooled = pooled + c
    return InstanceScores(
        ap50=pooled.ap(0.5),
        mean_ap=pooled.mean_ap,
        precision50=pooled.precision(0.5),
        recall50=pooled.recall(0.5),
        f1_50=pooled.f1(0.5),
        median_count_error=median_count_error(per),
        n_true=pooled.n_true,
        n_pred=pooled.n_pred,
    )


@dataclass(frozen=True)
class LayerError:
    """How far one intermediate tensor of an int8 model is from the float model's.

    ``rmse`` in the tensor's float units over all calibration tiles; ``relative`` is the RMSE
    as a share of the float tensor's largest magnitude; ``steps`` is the RMSE in quantization
    steps of that tensor (about 0.3 is rounding alone; more is clipping or error carried in
    from earlier layers; 0 scale means the tensor was kept float).
    """

    layer: str  # Keras layer(s) the tensor comes from, e.g. "enc0_conv1+enc0_relu1"
    op: str
    tensor: str
    shape: tuple[int, ...]
    rmse: float
    relative: float
    steps: float


@dataclass(frozen=True)
class ArtefactReport:
    recipe: str
    path: str
    size_bytes: int
    size_ratio: float  # to the fp32 TFLite artefact
    ops: dict[str, int]
    agreement: Overlap  # with the float model's masks (foreground, for an instance model)
    truth: Overlap | None  # against ground truth, when the held-out frames have masks
    gate: float | None  # minimum agreement (Dice, or AP@0.5 for instances); None: ungated
    equalization: dict[str, Any] | None = None
    seconds: float = 0.0
    input_type: str = "float32"
    layer_errors: tuple[LayerError, ...] = ()  # worst first; int8 artefacts only
    edgetpu: dict[str, Any] | None = None  # preflight and compiler, Edge TPU recipes only
    notes: tuple[str, ...] = ()
    # Instance models only: objects against the float model's objects, and against the truth.
    instances: InstanceScores | None = None
    instances_truth: InstanceScores | None = None
    gate_on: str = GATE_DICE  # "dice" (agreement Dice) or "ap50" (instances.ap50)
    # A whole-frame artefact: the camera frame (H, W) it was built for; None: tiled.
    frame_size: tuple[int, int] | None = None
    # The TensorFlow Lite Micro row (convert --micro): flash, arena, op resolver, TFLM vs
    # LiteRT, the profile's verdict (see convert/micro.py); None for other artefacts.
    micro: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """The recipe, with the frame size of a whole-frame artefact: "int8 768x1024"."""
        if self.frame_size is None:
            return self.recipe
        return f"{self.recipe} {format_hw(self.frame_size)}"

    @property
    def gated_value(self) -> float | None:
        """The figure the gate checks: agreement Dice, or AP@0.5 against the float objects."""
        if self.gate_on == GATE_AP50:
            return self.instances.ap50 if self.instances is not None else None
        return self.agreement.dice

    @property
    def passed(self) -> bool:
        if self.gate is None:
            return True
        value = self.gated_value
        return value is not None and value >= self.gate

    def gate_text(self) -> str:
        """The gate as one short phrase, e.g. "Dice >= 0.95" or "AP50 >= 0.95"."""
        if self.gate is None:
            return "–"
        return f"{'AP50' if self.gate_on == GATE_AP50 else 'Dice'} ≥ {self.gate:.2f}"


@dataclass(frozen=True)
class ParityReport:
    model: str
    model_sha256: str
    metadata: dict[str, Any]
    heldout: dict[str, Any]  # source, frames, with_truth
    calibration: dict[str, Any] | None
    float_truth: Overlap | None  # the float model against ground truth
    fp32_size_bytes: int
    artefacts: tuple[ArtefactReport, ...] = field(default_factory=tuple)
    # Instance models with instance labels in the held-out folder: the float model's objects.
    float_instances_truth: InstanceScores | None = None
    # Whole frames (--frame-size): what was built, refused or skipped, one line each.
    frame_notes: tuple[str, ...] = ()
    # An imported (ONNX) model: what the import did and which Keras-only steps did not apply;
    # its float reference is the prepared ONNX on onnxruntime.
    import_notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        ft = self.float_instances_truth
        for a, src in zip(d["artefacts"], self.artefacts, strict=True):
            a["passed"] = src.passed
            a["artefact"] = src.label
            if src.frame_size is not None:
                a["frame_size"] = list(src.frame_size)
            if self.float_truth and src.truth:
                a["truth_dice_change"] = src.truth.dice - self.float_truth.dice
            if ft and src.instances_truth:
                a["truth_ap50_change"] = src.instances_truth.ap50 - ft.ap50
                a["truth_mean_ap_change"] = src.instances_truth.mean_ap - ft.mean_ap
                a["truth_count_error_change"] = _change(
                    src.instances_truth.median_count_error, ft.median_count_error
                )
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        ft = self.float_truth
        lines = [
            f"# Parity report: {self.model}",
            "",
            f"Held-out frames: {self.heldout.get('frames')} from {self.heldout.get('source')}"
            + (" (with ground truth)" if ft else " (no ground truth: agreement only)"),
        ]
        if self.calibration:
            c = self.calibration
            source = c.get("source")
            if isinstance(source, dict):  # a set's manifest: {"description": …, "path": …}
                source = source.get("description") or source.get("path")
            lines.append(
                f"Calibration: {c.get('n')} tiles from {source} "
                f"(sha256 {str(c.get('sha256'))[:12]})"
            )
        instance = self.metadata.get("instances") is not None
        if ft:
            what = "foreground " if instance else ""
            lines.append(f"Float model vs truth: {what}Dice {ft.dice:.4f}, IoU {ft.iou:.4f}")
        fi = self.float_instances_truth
        if fi:
            lines.append(
                f"Float model's objects vs truth: AP50 {fi.ap50:.4f}, mean AP {fi.mean_ap:.4f}, "
                f"F1@0.5 {fi.f1_50:.4f}, median count error {_pct(fi.median_count_error)} "
                f"({fi.n_pred} found, {fi.n_true} true)"
            )
        if instance:
            lines += [
                "",
                "Instance model: the gate is on objects (AP@0.5 of the artefact's objects, the "
                "float model's objects taken as truth), not on the pixels of its interior map.",
            ]
        lines += [
            "",
            "| artefact | size | vs fp32 | agreement Dice | agreement IoU | Dice vs truth "
            "| change vs float | gate | verdict |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for a in self.artefacts:
            truth = f"{a.truth.dice:.4f}" if a.truth else "–"
            change = f"{a.truth.dice - ft.dice:+.4f}" if (a.truth and ft) else "–"
            verdict = "pass" if a.passed else "**FAIL**"
            lines.append(
                f"| {a.label} | {a.size_bytes / 1024:.0f} KiB | {a.size_ratio:.2f}x "
                f"| {a.agreement.dice:.4f} | {a.agreement.iou:.4f} | {truth} | {change} "
                f"| {a.gate_text()} | {verdict} |"
            )
        if instance:
            lines += ["", "## Instances", "", *self._instance_table()]
        lines += ["", "## Ops", ""]
        for a in self.artefacts:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(a.ops.items()))
            lines.append(f"- {a.label} ({a.input_type} I/O): {ops}")
        eq = [a for a in self.artefacts if a.equalization]
        if eq:
            lines += ["", "## Range equalization", ""]
            for a in eq:
                scal = a.equalization.get("scalings", [])
                lines.append(
                    f"- {a.label}: {len(scal)} skip(s) rescaled"
                    + "".join(f"; {s['layer']} ×{s['factor']:.3g}" for s in scal)
                )
                lines += [f"  - left unchanged: {r}" for r in a.equalization.get("skipped", [])]
        noted = [a for a in self.artefacts if a.notes]
        if noted:
            lines += ["", "## Notes", ""]
            lines += [f"- {a.label}: {n}" for a in noted for n in a.notes]
        errs = [a for a in self.artefacts if a.layer_errors]
        if errs:
            lines += [
                "",
                "## Per-layer quantization error",
                "",
                "Each int8 tensor, dequantized, against the same graph in fp32 on calibration "
                "tiles; worst first. Steps: RMSE in quantization steps (~0.3 is rounding alone).",
            ]
            for a in errs:
                lines += [
                    "",
                    f"{a.label}:",
                    "",
                    "| layer | op | RMSE | of range | steps |",
                    "|---|---|---:|---:|---:|",
                ]
                for e in a.layer_errors[:MARKDOWN_LAYERS]:
                    lines.append(
                        f"| {e.layer} | {e.op} | {e.rmse:.4g} | {e.relative:.2%} | {e.steps:.2f} |"
                    )
        if self.frame_notes:
            lines += ["", "## Whole frames", ""]
            lines += [f"- {n}" for n in self.frame_notes]
        if self.import_notes:
            lines += ["", "## Imported model", ""]
            lines += [f"- {n}" for n in self.import_notes]
        for a in self.artefacts:
            if a.edgetpu:
                lines += ["", *_edgetpu_markdown(a)]
        for a in self.artefacts:
            if a.micro:
                lines += ["", *_micro_markdown(a)]
        return "\n".join(lines) + "\n"

    def _instance_table(self) -> list[str]:
        fi = self.float_instances_truth
        lines = [
            "Objects matched one to one by IoU, counts pooled over the held-out frames. "
            "vs float: the float model's objects as truth; vs truth: the labels' objects.",
            "",
            "| artefact | AP50 vs float | mean AP vs float | count error vs float "
            "| AP50 vs truth | ΔAP50 | mean AP vs truth | F1@0.5 vs truth "
            "| median count error | Δ count error | gate | verdict |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for a in self.artefacts:
            ag, tr = a.instances, a.instances_truth
            cells = [
                f"{ag.ap50:.4f}" if ag else "–",
                f"{ag.mean_ap:.4f}" if ag else "–",
                _pct(ag.median_count_error) if ag else "–",
                f"{tr.ap50:.4f}" if tr else "–",
                f"{tr.ap50 - fi.ap50:+.4f}" if (tr and fi) else "–",
                f"{tr.mean_ap:.4f}" if tr else "–",
                f"{tr.f1_50:.4f}" if tr else "–",
                _pct(tr.median_count_error) if tr else "–",
                _pct(_change(tr.median_count_error, fi.median_count_error), sign=True)
                if (tr and fi)
                else "–",
                a.gate_text(),
                "pass" if a.passed else "**FAIL**",
            ]
            lines.append(f"| {a.label} | " + " | ".join(cells) + " |")
        return lines


def _change(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def _pct(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value * 100:+.1f}%" if sign else f"{value * 100:.1f}%"


MARKDOWN_LAYERS = 8


def _edgetpu_markdown(a: ArtefactReport) -> list[str]:
    info = a.edgetpu or {}
    pre = info.get("preflight") or {}
    comp = info.get("compiler") or {}
    lines = [f"## Edge TPU: {a.recipe}", ""]
    if pre:
        lines.append(f"Preflight: **{pre.get('verdict')}**")
        lines += [f"- {n}" for n in pre.get("notes", [])]
        lines += [f"- risk: {r}" for r in pre.get("risks", [])]
    status = comp.get("status")
    if status == "compiled":
        lines.append(
            f"Compiler {comp.get('version') or ''}: **{comp.get('summary')}**; wrote "
            f"{comp.get('path')}"
        )
    elif status == "missing":
        lines.append(f"Compiler: not run. {comp.get('hint')}")
    elif status:
        lines.append(f"Compiler: {status}: {comp.get('error') or comp.get('why') or ''}")
    if pre.get("ops"):
        from edgeseg.convert.edgetpu import markdown_table

        lines += ["", *markdown_table(pre["ops"])]
    return lines


def _micro_markdown(a: ArtefactReport) -> list[str]:
    """The parity report's section for the TFLM row ``a`` (an ArtefactReport with ``micro``)."""
    info = a.micro or {}
    arena = info.get("arena") or {}
    raw = info.get("raw_vs_litert") or {}
    fit = info.get("fit")
    lines = [
        "## TensorFlow Lite Micro",
        "",
        f"- flash: {info.get('flash_bytes')} bytes ({', '.join(info.get('files', []))})",
        f"- tensor arena: {arena.get('arena_bytes')} bytes to allocate (TFLM ran in "
        f"{arena.get('used_bytes')} bytes here, {arena.get('measured_with')}; "
        f"+{arena.get('margin', 0):.0%} + {arena.get('slack_bytes')} bytes for optimized "
        "kernels' scratch buffers)",
        "- op resolver: "
        + ", ".join(f"{o['method']}() ({o['op']} x{o['count']})" for o in info.get("ops", [])),
        f"- vs {raw.get('litert')}: "
        + (
            f"identical int8 outputs on {raw.get('tiles')} held-out tiles"
            if raw.get("identical")
            else f"at most {raw.get('max_steps')} quantization step(s) apart on "
            f"{raw.get('tiles')} held-out tiles, {raw.get('equal_share', 0):.2%} of values equal"
        ),
    ]
    diffs = [d for d in info.get("layers_vs_builtin") or [] if d.get("max_steps")]
    if diffs:
        lines += [
            "",
            "Op by op, TFLM against TFLite's built-in kernels (XNNPACK off) on the held-out "
            "tile that differs most; ops not listed are identical:",
            "",
            "| # | op | kernel | layer | max steps | equal |",
            "|---:|---|---|---|---:|---:|",
        ]
        lines += [
            f"| {d['index']} | {d['op']} | {d['kernel'] or '–'} | {d['layer']} "
            f"| {d['max_steps']} | {d['equal_share']:.2%} |"
            for d in diffs[: MARKDOWN_LAYERS * 2]
        ]
        lines.append("")
    same = info.get("labels_vs_litert")
    if same:
        lines.append(
            f"- label maps vs LiteRT int8: Dice {same['dice']:.4f}, "
            f"{same['identical_frames']} of {same['frames']} frames identical"
        )
    if fit:
        verdict = "fits" if fit.get("fits") else "**does not fit**"
        lines.append(
            f"- {fit.get('profile')}: {verdict}"
            + (
                f" (arena in {fit.get('arena_in')})"
                if fit.get("fits")
                else ": " + "; ".join(fit.get("problems", []))
            )
        )
    return lines


def layer_errors(
    quantized: bytes,
    reference: bytes,
    tiles: np.ndarray,
    max_tiles: int = 8,
    threads: int | None = None,
) -> tuple[LayerError, ...]:
    """Per-tensor error of the int8 model ``quantized`` against the fp32 model ``reference``.

    Both must come from one graph (same tensor names: see ``float_twin`` in
    :func:`edgeseg.convert.tflite.convert`). ``tiles``: float32 (N, H, W, C) model inputs, of
    which up to ``max_tiles`` evenly spaced ones are run. Tensors are matched by name, the
    int8 ones dequantized; returns the errors worst (largest ``relative``) first.
    """
    from edgeseg.runtime.backends import interpreter_class

    cls, _ = interpreter_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        q, f = (
            cls(model_content=m, experimental_preserve_all_tensors=True, num_threads=threads)
            for m in (quantized, reference)
        )
    q.allocate_tensors()
    f.allocate_tensors()
    q_ops = _producers(quantized)
    f_ops = _producers(reference)
    q_det = {d["name"]: d for d in q.get_tensor_details()}
    f_det = {d["name"]: d for d in f.get_tensor_details()}
    common = [n for n in q_ops if n in f_ops and n in q_det and n in f_det]
    outputs = {d["name"] for d in q.get_output_details()}
    acc: dict[str, list[float]] = {n: [0.0, 0.0, 0.0] for n in common}  # sq err, count, max
    idx = np.unique(np.linspace(0, len(tiles) - 1, min(max_tiles, len(tiles))).round().astype(int))
    for tile in np.asarray(tiles, np.float32)[idx]:
        for interp, x in ((q, tile), (f, tile)):
            inp = interp.get_input_details()[0]
            interp.set_tensor(inp["index"], _to_input(x[None], inp))
            interp.invoke()
        for n in common:
            try:
                qa = _dequantize(q.get_tensor(q_det[n]["index"]), q_det[n])
                fa = np.asarray(f.get_tensor(f_det[n]["index"]), np.float64)
            except ValueError:  # a tensor the runtime did not keep
                continue
            if qa is None or qa.shape != fa.shape:
                continue
            a = acc[n]
            a[0] += float(np.sum((qa - fa) ** 2))
            a[1] += fa.size
            a[2] = max(a[2], float(np.max(np.abs(fa))) if fa.size else 0.0)
    out = []
    for n in common:
        sq, count, peak = acc[n]
        if not count:
            continue
        rmse = (sq / count) ** 0.5
        scale = float(q_det[n]["quantization"][0] or 0.0)
        out.append(
            LayerError(
                layer="output" if n in outputs else layer_label(n),
                op=q_ops[n],
                tensor=n,
                shape=tuple(int(d) for d in q_det[n]["shape"]),
                rmse=rmse,
                relative=rmse / peak if peak > 0 else 0.0,
                steps=rmse / scale if scale > 0 else 0.0,
            )
        )
    return tuple(sorted(out, key=lambda e: -e.relative))


def layer_label(tensor: str) -> str:
    """The Keras layer(s) a TFLite tensor name comes from, in graph order.

    ``unet_1/unet_1/enc0_relu1_1/Relu;unet_1/unet_1/enc0_conv1_1/convolution`` (a fused conv
    and ReLU) gives ``enc0_conv1+enc0_relu1``; names without a layer path are kept.
    """
    names = []
    for part in reversed(tensor.split(";")):
        segs = part.split("/")
        if len(segs) < 2:
            names.append(part)
            continue
        names.append(re.sub(r"_\d+$", "", segs[-2]))
    return "+".join(dict.fromkeys(names))


def _producers(data: bytes) -> dict[str, str]:
    """Output tensor name → the op that produces it (main subgraph, execution order)."""
    from edgeseg.core.tflite_file import as_list, as_text, builtin_names, parse_bytes, schema

    model = parse_bytes(data)
    names = builtin_names()
    custom = schema().BuiltinOperator.CUSTOM
    sg = model.subgraphs[0]
    out: dict[str, str] = {}
    for op in sg.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = as_text(code.customCode) if builtin == custom else names.get(builtin, str(builtin))
        for i in as_list(op.outputs):
            out[as_text(sg.tensors[i].name)] = name
    return out


def _info(detail: dict[str, Any]) -> TensorInfo:
    """A LiteRT tensor detail as the core's TensorInfo (per-tensor quantization)."""
    scale, zero = detail["quantization"]
    return TensorInfo(
        detail["name"], detail["index"], tuple(detail["shape"]),
        np.dtype(detail["dtype"]).name, float(scale), int(zero),
    )  # fmt: skip


def _to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    # The one quantization rule (TFLite's rounding), as the runtime feeds every frame.
    return quantize(x, _info(detail))


def _dequantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray | None:
    x = np.asarray(x)
    info = _info(detail)
    if x.dtype.kind != "f" and not info.quantized:
        return None  # per-channel (weights) or unquantized integers: not an activation
    return dequantize(x, info).astype(np.float64)


def label_maps(
    frames: Sequence[np.ndarray],
    backend: Backend,
    meta: ModelMetadata,
    progress: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    """(H, W) label maps of raw frames, through the Segmenter `run` uses: uint8 classes, or
    int32 object ids for an instance model."""
    segmenter = Segmenter(backend, meta)
    out = []
    for frame in frames:
        out.append(segmenter.labels(frame))
        if progress:
            progress()
    return out


def overlap(
    predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray], meta: ModelMetadata
) -> Overlap:
    """Dice/IoU pooled over all pixels, averaged over foreground classes; for an instance
    model, of the foreground (any object id) of both."""
    if meta.instances is not None:
        predicted = [(np.asarray(p) > 0).view(np.uint8) for p in predicted]
        reference = [(np.asarray(r) > 0).view(np.uint8) for r in reference]
        return Overlap(*foreground_overlap(predicted, reference, 1))
    return Overlap(*foreground_overlap(predicted, reference, meta.num_classes))
