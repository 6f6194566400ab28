"""Which student fits the budget: candidates, their int8 whole-frame artefacts and latencies.

Latency does not depend on the weights, so every candidate is judged untrained: built
(:func:`~edgeseg.model.unet.build_unet`), rebuilt at the padded frame size
(:func:`~edgeseg.convert.frames.plan_frames`) and converted by the recipe ``edgeseg convert``
would use (``int8``, or the device profile's) with ranges calibrated on tiles of the user's
frames (:func:`~edgeseg.convert.tflite.convert` with a
:class:`~edgeseg.convert.tflite.FrameTarget`). Then either

* **measured**: :func:`~edgeseg.bench.latency.measure_in_subprocess` (``edgeseg bench``'s
  measurement, each model in its own process) on one runtime, the one ``--backend auto``
  picks for the teacher's artefact at that frame size
  (:func:`~edgeseg.runtime.selection.choose_runtime`), with every core; or
* **predicted** (``--device``): multiply-accumulates of the converted graph
  (:func:`~edgeseg.core.macs.tflite_macs`) over the profile's measured ``int8_gmacs``.

Per architecture the widths are tried from the widest down; the first that fits is that
architecture's best, and narrower ones are not converted. The chosen student is the fitting
candidate with the most multiply-accumulates (the most capacity the budget allows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.macs import tflite_macs
from edgeseg.core.metadata import ModelMetadata
from edgeseg.errors import ModelError
from edgeseg.model.unet import UNetConfig, build_unet

__all__ = [
    "WIDTHS",
    "Candidate",
    "Latency",
    "LatencyJudge",
    "convert_at_frame",
    "keras_macs",
    "student_configs",
    "teacher_unet",
]

#: Width multipliers tried, of the teacher's first-level filters, widest first.
WIDTHS = (1.0, 0.75, 0.5, 0.375, 0.25, 0.125)


@dataclass(frozen=True)
class Latency:
    """One artefact's cost: int8 whole-frame milliseconds, measured or predicted."""

    ms: float
    how: str  # "measured" or "predicted"
    macs: int
    params: int
    runtime: str | None = None  # the runtime measured on
    convert_s: float = 0.0
    measure_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Candidate:
    """A student that was tried: its U-Net and latency (None: not reached in time)."""

    unet: UNetConfig
    latency: Latency | None
    fits: bool
    note: str = ""
    artefact: Path | None = None  # its int8 whole-frame artefact (scratch)

    @property
    def label(self) -> str:
        u = self.unet
        return f"{u.arch} width {u.width:g} ({u.top_filters} filters, depth {u.depth})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.unet.arch,
            "width": self.unet.width,
            "top_filters": self.unet.top_filters,
            "depth": self.unet.depth,
            "latency": self.latency.to_dict() if self.latency else None,
            "fits": self.fits,
            "note": self.note,
        }


def teacher_unet(keras_model: Any, meta: ModelMetadata) -> tuple[int, int, str]:
    """(first-level filters, depth, decoder) of the teacher: from its provenance when edgeseg
    trained it, else read from its layers (first convolution's filters, total downsampling)."""
    unet = (meta.provenance or {}).get("unet") or {}
    if {"base_filters", "depth"} <= set(unet):
        top = max(1, round(unet["base_filters"] * float(unet.get("width", 1.0))))
        return top, int(unet["depth"]), str(unet.get("decoder", "transpose"))
    from edgeseg.model.reshape import downsampling

    convs = [
        layer
        for layer in keras_model.layers
        if type(layer).__name__ in ("Conv2D", "SeparableConv2D") and layer.filters > 1
    ]
    top = int(convs[0].filters) if convs else 16
    fy, fx = downsampling(keras_model)
    depth = max(1, min(6, int(np.log2(max(1, min(fy, fx))) + 0.5)))
    ups = [layer for layer in keras_model.layers if type(layer).__name__ == "UpSampling2D"]
    return top, depth, "upsample" if ups else "transpose"


def student_configs(
    meta: ModelMetadata,
    top: int,
    depth: int,
    decoder: str,
    archs: tuple[str, ...],
    widths: tuple[float, ...] = WIDTHS,
) -> dict[str, list[UNetConfig]]:
    """Per architecture, the students to try, widest first, one per distinct filter count."""
    out: dict[str, list[UNetConfig]] = {}
    step = 2**depth
    # The teacher's tile, rounded down to the student's downsampling (a valid-padding teacher
    # takes odd sizes such as 572; students are same-padding).
    size = tuple(max(step, s // step * step) for s in meta.input_size)
    for arch in archs:
        seen: set[int] = set()
        configs = []
        for w in sorted(widths, reverse=True):
            cfg = UNetConfig(
                input_size=size,
                channels=meta.channels,
                num_classes=meta.num_classes,
                base_filters=top,
                depth=depth,
                decoder=decoder,
                sigmoid_outputs=meta.output_channels
                if meta.num_classes == 1 and meta.output_channels > 1
                else 0,
                arch=arch,
                width=w,
            )
            if cfg.top_filters in seen:
                continue
            seen.add(cfg.top_filters)
            configs.append(cfg)
        out[arch] = configs
    return out


def convert_at_frame(
    keras_model: Any,
    meta: ModelMetadata,
    frame_size: tuple[int, int],
    recipe: Any,
    tiles: np.ndarray,
    out: Path,
) -> tuple[Path, ModelMetadata]:
    """``keras_model`` converted by ``recipe`` at ``frame_size`` (padded to its downsampling),
    int8 ranges from the tile-size ``tiles``, as ``edgeseg convert --frame-size`` builds its
    whole-frame artefact; written to ``out``. A frame that pads to the tile size is the tiled
    artefact itself.

    Raises:
        ModelError: the model cannot be rebuilt at that size (a valid-padding U-Net, a fixed
            SavedModel signature), with the reason.
    """
    from edgeseg.convert.frames import plan_frames
    from edgeseg.convert.tflite import FrameTarget, convert
    from edgeseg.core.tflite_file import embed_metadata
    from edgeseg.model.loading import LoadedModel
    from edgeseg.paths import atomic_write

    shape = tuple(keras_model.inputs[0].shape)
    loaded = LoadedModel(
        path=out,
        format="keras",
        keras_model=keras_model,
        saved_model=None,
        input_shape=shape,
        output_shape=tuple(keras_model.outputs[0].shape),
    )
    plan = plan_frames(loaded, meta, [frame_size])[0]
    if plan.meta is None:
        if plan.input_size != tuple(meta.input_size):
            raise ModelError(f"no whole-frame artefact at {frame_size}: {plan.refused}")
        conv = convert(loaded, meta, recipe, tiles)
        art_meta = meta
    else:
        size = plan.input_size
        from edgeseg.model.reshape import rebuild_keras

        target = FrameTarget(plan.meta, lambda k: rebuild_keras(k, size))
        conv = convert(loaded, meta, recipe, tiles, frame=target)
        art_meta = plan.meta
    atomic_write(out, embed_metadata(conv.tflite, art_meta), durable=False)  # scratch file
    return out, art_meta


class LatencyJudge:
    """Measures or predicts a converted artefact's latency (see the module docstring).

    ``runtime`` is the runtime to measure on (None: choose it, on the first artefact, as
    ``--backend auto`` would); ``gmacs`` the device's int8 GMAC/s (predict instead).
    """

    def __init__(
        self,
        *,
        gmacs: float | None,
        runtime: str | None,
        threads: int | None,
        runs: int,
        frame_size: tuple[int, int],
        say: Callable[[str], None],
    ) -> None:
        self.gmacs = gmacs
        self.runtime = runtime
        self.threads = threads
        self.runs = runs
        self.frame_size = frame_size
        self.say = say
        self.runtime_reason = ""

    def pick_runtime(self, artefact: Path) -> str:
        if self.runtime is None:
            from edgeseg.runtime.selection import choose_runtime

            choice = choose_runtime(artefact, threads=self.threads, frame_size=self.frame_size)
            self.runtime = choice.runtime
            self.runtime_reason = f"--backend auto: {choice.reason}"
            self.say(f"runtime {self.runtime} ({choice.reason})")
        return self.runtime

    def measure(self, artefact: Path, timeout: float | None = None) -> tuple[float, str]:
        """Median milliseconds of ``artefact`` measured here, and the runtime."""
        from edgeseg.bench.latency import BenchConfig, measure_in_subprocess

        runtime = self.pick_runtime(artefact)
        config = BenchConfig(
            model=str(artefact),
            backend=runtime,
            threads=self.threads,
            runs=self.runs,
            warmup=max(2, self.runs // 5),
        )
        result = measure_in_subprocess(config, timeout=timeout)
        return float(result["latency_ms"]["p50"]), runtime

    def judge(
        self, artefact: Path, params: int, convert_s: float, *, timeout: float | None = None
    ) -> Latency:
        macs = tflite_macs(artefact)
        if self.gmacs is not None:
            return Latency(macs / (self.gmacs * 1e9) * 1000.0, "predicted", macs, params,
                           None, convert_s)  # fmt: skip
        t0 = time.perf_counter()
        ms, runtime = self.measure(artefact, timeout)
        return Latency(ms, "measured", macs, params, runtime, convert_s, time.perf_counter() - t0)


def keras_macs(model: Any) -> int:
    """Multiply-accumulates of a built Keras U-Net at its input size, counted as
    :func:`~edgeseg.core.macs.tflite_macs` counts the converted graph (convolutions only)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw * layer.input.shape[-1]
        elif kind == "DepthwiseConv2D":
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw
        elif kind == "Conv2DTranspose":
            _, h, w, c = layer.input.shape
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw * layer.filters
    return int(total)


def build_student(config: UNetConfig, seed: int) -> Any:
    """An untrained student (seeded: the same weights every run)."""
    from edgeseg.optional import keras

    keras().utils.set_random_seed(seed)
    return build_unet(config, name="student")


def try_candidate(
    config: UNetConfig,
    meta: ModelMetadata,
    judge: LatencyJudge,
    frame_size: tuple[int, int],
    recipe: Any,
    tiles: np.ndarray,
    work: Path,
    budget_ms: float,
    seed: int,
) -> Candidate:
    """Build, convert and judge one candidate against the budget."""
    model = build_student(config, seed)
    t0 = time.perf_counter()
    name = f"{config.arch}-{config.top_filters}.tflite"
    art, _ = convert_at_frame(model, student_meta_for(meta, config), frame_size, recipe, tiles,
                              work / name)  # fmt: skip
    lat = judge.judge(art, int(model.count_params()), time.perf_counter() - t0)
    return Candidate(config, lat, lat.ms <= budget_ms, artefact=art)


def student_meta_for(meta: ModelMetadata, config: UNetConfig) -> ModelMetadata:
    """The teacher's metadata for a student of ``config`` (same padding: no output border)."""
    return replace(meta, output_border=0, input_size=tuple(config.input_size))
