"""What each artefact cost: size, ops, agreement with the float model, accuracy against truth.

Every artefact segments the same held-out frames as the float Keras model (tiled exactly as
the runtime tiles them). Agreement is the Dice/IoU between the artefact's masks and the float
model's masks, pooled over all held-out pixels (mean over foreground classes); when the
held-out frames have ground truth, both the float model and the artefact are scored against
it, and the change is reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeseg.metrics import foreground_overlap
from edgeseg.model.metadata import ModelMetadata
from edgeseg.model.predict import segment


@dataclass(frozen=True)
class Overlap:
    """Pooled Dice and IoU over foreground classes (the mean over classes 1..K-1)."""

    dice: float
    iou: float


@dataclass(frozen=True)
class ArtefactReport:
    recipe: str
    path: str
    size_bytes: int
    size_ratio: float  # to the fp32 TFLite artefact
    ops: dict[str, int]
    agreement: Overlap  # with the float model's masks
    truth: Overlap | None  # against ground truth, when the held-out frames have masks
    gate: float | None  # minimum agreement Dice required, None when ungated
    equalization: dict[str, Any] | None = None
    seconds: float = 0.0
    input_type: str = "float32"

    @property
    def passed(self) -> bool:
        return self.gate is None or self.agreement.dice >= self.gate


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for a, src in zip(d["artefacts"], self.artefacts, strict=True):
            a["passed"] = src.passed
            if self.float_truth and src.truth:
                a["truth_dice_change"] = src.truth.dice - self.float_truth.dice
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
            lines.append(
                f"Calibration: {c.get('n')} tiles from {c.get('source')} "
                f"(sha256 {str(c.get('sha256'))[:12]})"
            )
        if ft:
            lines.append(f"Float model vs truth: Dice {ft.dice:.4f}, IoU {ft.iou:.4f}")
        lines += [
            "",
            "| artefact | size | vs fp32 | agreement Dice | agreement IoU | Dice vs truth "
            "| change vs float | gate | verdict |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for a in self.artefacts:
            truth = f"{a.truth.dice:.4f}" if a.truth else "–"
            change = f"{a.truth.dice - ft.dice:+.4f}" if (a.truth and ft) else "–"
            gate = f"{a.gate:.2f}" if a.gate is not None else "–"
            verdict = "pass" if a.passed else "**FAIL**"
            lines.append(
                f"| {a.recipe} | {a.size_bytes / 1024:.0f} KiB | {a.size_ratio:.2f}x "
                f"| {a.agreement.dice:.4f} | {a.agreement.iou:.4f} | {truth} | {change} "
                f"| {gate} | {verdict} |"
            )
        lines += ["", "## Ops", ""]
        for a in self.artefacts:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(a.ops.items()))
            lines.append(f"- {a.recipe} ({a.input_type} I/O): {ops}")
        eq = [a for a in self.artefacts if a.equalization]
        if eq:
            lines += ["", "## Range equalization", ""]
            for a in eq:
                scal = a.equalization.get("scalings", [])
                lines.append(
                    f"- {a.recipe}: {len(scal)} skip(s) rescaled"
                    + "".join(f"; {s['layer']} ×{s['factor']:.3g}" for s in scal)
                )
                lines += [f"  - left unchanged: {r}" for r in a.equalization.get("skipped", [])]
        return "\n".join(lines) + "\n"


def label_maps(
    frames: Sequence[np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
    meta: ModelMetadata,
    progress: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    """uint8 (H, W) label maps of raw frames, tiled as the runtime tiles them."""
    out = []
    for frame in frames:
        out.append(segment(frame, predict, meta))
        if progress:
            progress()
    return out


def overlap(
    predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray], meta: ModelMetadata
) -> Overlap:
    """Dice/IoU pooled over all pixels, averaged over foreground classes."""
    return Overlap(*foreground_overlap(predicted, reference, meta.num_classes))
