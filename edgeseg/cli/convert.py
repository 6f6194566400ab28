"""`edgeseg convert`: fp16 / int8 TFLite artefacts with a parity report for each."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import (
    ActivationOpt,
    ChannelOrderOpt,
    ForegroundOpt,
    InputMaxOpt,
    InputSizeOpt,
    NormalizationOpt,
    ThresholdOpt,
    TrustOpt,
    err,
    handle_errors,
    metadata_flags,
    out,
    quiet_console,
)


@handle_errors
def convert(
    model: Path = typer.Argument(
        ..., help="Model: .keras, legacy .h5, SavedModel folder or .onnx (PyTorch export)."
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the artefacts and report."),
    fp16: bool = typer.Option(False, "--fp16", help="Build the fp16 recipe."),
    int8: bool = typer.Option(False, "--int8", help="Build the int8 recipe (needs --calib)."),
    onnx: bool = typer.Option(
        False, "--onnx", help="Also export ONNX (static batch 1) for TensorRT / onnxruntime."
    ),
    edgetpu: bool = typer.Option(
        False,
        "--edgetpu",
        help="Build the int8-edgetpu recipe for the Coral (uint8 I/O, static shapes), with an "
        "op-by-op preflight; compile it when edgetpu_compiler is on PATH.",
    ),
    recipe: list[str] = typer.Option(
        [], "--recipe", help="Recipe name or .toml file (repeatable): fp32, fp16, int8, …"
    ),
    calib: str | None = typer.Option(
        None,
        "--calib",
        help="Calibration source: image folder, glob, video, TIFF stack, or a set .npz "
        "from `edgeseg calib build`.",
    ),
    val: Path | None = typer.Option(
        None,
        "--val",
        help="Held-out frames for the parity check (images/ + masks/ adds Dice vs truth; "
        "images/ + labels/ with one id per object adds, for an instance model, AP vs truth); "
        "default: a held-out part of --calib never used for calibration.",
    ),
    n: int = typer.Option(200, "--n", "-n", help="Calibration tiles to keep."),
    holdout: float = typer.Option(
        0.2, "--holdout", help="Share of --calib frames held out for parity (without --val)."
    ),
    min_dice_agreement: float | None = typer.Option(
        None,
        "--min-dice-agreement",
        help="int8 gate: minimum Dice between int8 and float masks (recipe default 0.95).",
    ),
    min_ap_agreement: float | None = typer.Option(
        None,
        "--min-ap-agreement",
        help="int8 gate of an instance model: minimum AP@0.5 of its objects, the float "
        "model's objects taken as truth (recipe default 0.95).",
    ),
    keep_float: list[str] = typer.Option(
        [],
        "--keep-float",
        metavar="LAYER",
        help="Keep this layer float in int8 artefacts (repeatable); costs speed, and on the "
        "Edge TPU ends its partition there.",
    ),
    frame_size: list[str] = typer.Option(
        [],
        "--frame-size",
        metavar="HxW|auto",
        help="Also build whole-frame artefacts for camera frames of this size, height first "
        "(repeatable; auto: the size of the --calib frames): <stem>_<recipe>_<H>x<W>.tflite "
        "beside each tiled artefact, run without tiles.",
    ),
    micro: bool = typer.Option(
        False,
        "--micro",
        help="Also write the microcontroller target (TensorFlow Lite Micro): <stem>_micro.tflite "
        "(full int8), <stem>_model_data.cc/.h (a C array) and <stem>_op_resolver.h, with the "
        "tensor arena measured in TFLM and a TFLM row in the parity report (needs --calib).",
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        help="With --micro: a microcontroller profile (cortex-m7, esp32-s3, cortex-m4 or a "
        ".toml) the model's flash and arena must fit; without it the figures are reported.",
    ),
    compiler_timeout: float = typer.Option(
        180.0, "--compiler-timeout", help="Seconds edgetpu_compiler may take (--edgetpu)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="Threads for the parity check."),
    seed: int = typer.Option(0, "--seed"),
    window: str | None = typer.Option(
        None,
        "--window",
        help="DICOM calibration frames: CENTER,WIDTH, file or a preset (ct-soft-tissue, "
        "ct-lung, …); recorded in the model, which `run` then windows with (default: file).",
    ),
    trust_model: bool = TrustOpt,
    input_size: str | None = InputSizeOpt,
    normalization: str | None = NormalizationOpt,
    input_max: float | None = InputMaxOpt,
    threshold: float | None = ThresholdOpt,
    foreground_value: int | None = ForegroundOpt,
    channel_order: str | None = ChannelOrderOpt,
    activation: str | None = ActivationOpt,
    output: str | None = typer.Option(
        None,
        "--output",
        help="ONNX model with several outputs: the one to convert (default: first).",
    ),
) -> None:
    """Convert MODEL to TFLite artefacts <stem>_<recipe>.tflite and prove what each one costs.

    Each artefact embeds the model metadata (so `edgeseg run` needs no flags) and is scored
    against the float model on held-out frames; the parity report is written as JSON and
    Markdown. An int8 artefact below the agreement gate fails the command (the report stays):
    Dice for a semantic model; for an instance model AP@0.5 of its objects against the float
    model's.
    With --edgetpu the report holds the Edge TPU preflight and, when edgetpu_compiler is on
    PATH, its verdict and <stem>_int8-edgetpu_edgetpu.tflite.
    With --frame-size HxW each recipe (and --onnx) also gets a whole-frame artefact for frames
    of that size (padded to the model's multiple), calibrated on whole frames and checked on
    whole held-out frames; what cannot run whole frames keeps its tiled artefact, and the
    report says why.
    With --micro the int8 model is also written for TensorFlow Lite Micro (a C array, its
    header and an op resolver of exactly its ops), its tensor arena measured in TFLM, its
    outputs compared with LiteRT's; --device PROFILE fails (one line) when it does not fit.
    """
    from edgeseg.convert.pipeline import ConvertRequest, convert_model, resolve_recipes

    recipes = resolve_recipes(recipe, fp16=fp16, int8=int8, edgetpu=edgetpu, onnx=onnx, micro=micro)
    request = ConvertRequest(
        model=model,
        recipes=recipes,
        out=out_dir,
        calib=calib,
        val=val,
        n=n,
        holdout=holdout,
        seed=seed,
        min_dice_agreement=min_dice_agreement,
        min_ap_agreement=min_ap_agreement,
        trust_model=trust_model,
        threads=threads,
        keep_float=tuple(keep_float),
        onnx=onnx,
        compiler_timeout=compiler_timeout,
        frame_sizes=tuple(frame_size),
        window=window,
        activation=activation,
        output=output,
        micro=micro,
        micro_device=device,
        flags=metadata_flags(
            input_size, normalization, input_max, threshold, foreground_value, channel_order
        ),
    )
    with quiet_console("convert", out_dir):
        result = convert_model(request, say=lambda msg: err.print(msg, highlight=False))
    out.print(result.report_md.read_text(), highlight=False, markup=False)
    for path in result.artefacts:
        out.print(f"wrote {path}", highlight=False)
    out.print(f"wrote {result.report_json} and {result.report_md}", highlight=False)
    if result.micro is not None:
        m = result.micro
        out.print(
            f"microcontroller: flash {m.flash_bytes} bytes, tensor arena {m.arena.arena_bytes} "
            f"bytes (TFLM ran in {m.arena.used_bytes}); {m.raw.summary()}"
            + (f"; {m.fit.summary()}" if m.fit is not None else ""),
            highlight=False,
        )
