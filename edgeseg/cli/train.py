"""`edgeseg train`: train a U-Net on a labelled folder or on synthetic microscopy."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import (
    ForegroundOpt,
    err,
    handle_errors,
    out,
    parse_hw_option,
    progress_bar,
    quiet_console,
)


@handle_errors
def train(
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="Folder with images/ and masks/ (or labels/: one id per object), or 'synthetic'.",
    ),
    out_path: Path = typer.Option(Path("unet.keras"), "--out", "-o", help="Model file (.keras)."),
    val: str | None = typer.Option(
        None, "--val", help="Validation folder (images/ + masks/); default: hold out a split."
    ),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", help="Share of images held out (whole groups)."
    ),
    val_groups: str | None = typer.Option(
        None, "--val-groups", help="Comma-separated groups to hold out (e.g. wells: A06,B12)."
    ),
    group_pattern: str | None = typer.Option(
        None,
        "--group-pattern",
        help="Regex whose first group (or match) at the start of a file name is its group; "
        "default: the name before its first '_'.",
    ),
    instances: bool | None = typer.Option(
        None,
        "--instances/--no-instances",
        help="Train on labels/ (one id per object) for touching objects as separate "
        "instances; default: when labels/ is the only target folder.",
    ),
    interior_weight: float = typer.Option(
        1.0, "--interior-weight", help="Instances: loss weight of the interior channel."
    ),
    size: str = typer.Option("256", "--size", help="Model input (tile) size, N or HxW."),
    channels: int = typer.Option(1, "--channels", help="1 (gray) or 3 (RGB)."),
    num_classes: int = typer.Option(
        1, "--num-classes", help="1: binary mask (sigmoid); K >= 2: masks of class indices."
    ),
    class_names: str | None = typer.Option(
        None, "--class-names", help="Comma-separated class names (K names for K classes)."
    ),
    foreground_value: int | None = ForegroundOpt,
    base_filters: int = typer.Option(16, "--base-filters", help="Filters of the first level."),
    depth: int = typer.Option(4, "--depth", help="Number of 2x poolings."),
    decoder: str = typer.Option("transpose", "--decoder", help="transpose or upsample."),
    batch_norm: bool = typer.Option(True, "--batch-norm/--no-batch-norm"),
    dropout: float = typer.Option(0.0, "--dropout", help="Dropout at the bottleneck."),
    padding: str = typer.Option("same", "--padding", help="same, or valid (output shrinks)."),
    normalization: str = typer.Option(
        "percentile", "--normalization", help="percentile, scale or minmax."
    ),
    epochs: int = typer.Option(20, "--epochs", min=1),
    steps_per_epoch: int = typer.Option(50, "--steps-per-epoch", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine decay)."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop after this wall-clock budget (the schedule fits it)."
    ),
    elastic: bool = typer.Option(True, "--elastic/--no-elastic", help="Elastic deformation."),
    synthetic_images: int = typer.Option(
        200, "--synthetic-images", help="Images to generate for --data synthetic."
    ),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Microns per pixel."),
    keep: str = typer.Option(
        "best",
        "--keep",
        help="Keep the best validation epoch, or the last (when --val is a test set).",
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Training compute: auto (bfloat16 where the CPU has it), float32, mixed_bfloat16.",
    ),
    tune_threshold: bool = typer.Option(
        True,
        "--tune-threshold/--no-tune-threshold",
        help="One class: store the threshold with the best Dice on the training images "
        "(never on --val); otherwise 0.5.",
    ),
    seed: int = typer.Option(0, "--seed"),
    arch: str = typer.Option(
        "unet",
        "--arch",
        help="unet; separable (depthwise-separable blocks, MobileNet-style); attention "
        "(attention gates on the skips).",
    ),
    width: float = typer.Option(
        1.0, "--width", help="Width multiplier of every level's filters (e.g. 0.5)."
    ),
) -> None:
    """Train a U-Net (Dice + BCE, augmentation, validation Dice/IoU every epoch).

    With --instances (automatic for a folder with only labels/), the U-Net learns foreground
    and interior (two sigmoid outputs) so touching objects come out as separate instances;
    validation reports AP at IoU 0.5, which picks the best epoch.

    Writes the model and its metadata sidecar <stem>.edgeseg.json, which every later step reads.
    """
    with quiet_console("train", out_path.parent):
        from edgeseg.model.unet import UNetConfig
        from edgeseg.train.augment import AugmentConfig
        from edgeseg.train.trainer import TrainConfig
        from edgeseg.train.trainer import train as run_training

        names = tuple(n.strip() for n in class_names.split(",")) if class_names else None
        unet = UNetConfig(
            input_size=parse_hw_option(size, "--size"),
            channels=channels,
            num_classes=num_classes,
            base_filters=base_filters,
            depth=depth,
            decoder=decoder,
            batch_norm=batch_norm,
            dropout=dropout,
            padding=padding,
            arch=arch,
            width=width,
        )
        config = TrainConfig(
            out=out_path,
            data=data,
            val=val,
            val_fraction=val_fraction,
            unet=unet,
            foreground_value=255 if foreground_value is None else foreground_value,
            class_names=names,
            normalization=normalization,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_minutes=max_minutes,
            seed=seed,
            synthetic_images=synthetic_images,
            augment=AugmentConfig(elastic_prob=0.5 if elastic else 0.0),
            pixel_size_um=pixel_size,
            keep=keep,
            precision=precision,
            tune_threshold=tune_threshold,
            instances=instances,
            interior_weight=interior_weight,
            val_groups=tuple(g for g in val_groups.split(",") if g.strip()) if val_groups else None,
            group_pattern=group_pattern,
        )
        err.print(f"loading data from {data} …")
        with progress_bar() as bar:
            task = bar.add_task("training", total=epochs * steps_per_epoch)

            def on_step(step: int, total: int, loss: float) -> None:
                bar.update(task, completed=step, description=f"training (loss {loss:.3f})")

            def on_epoch(log: object) -> None:
                ap = "" if log.val_ap50 is None else f"val AP50 {log.val_ap50:.4f}  "
                bar.console.print(
                    f"epoch {log.epoch:3d}/{epochs}  loss {log.loss:.4f}  {ap}"
                    f"val Dice {log.val_dice:.4f}  IoU {log.val_iou:.4f}  "
                    f"lr {log.learning_rate:.2e}  {log.seconds:.0f} s",
                    highlight=False,
                )

            def on_message(text: str) -> None:
                bar.console.print(text, highlight=False)

            result = run_training(config, on_epoch=on_epoch, on_step=on_step, on_message=on_message)
        ap = "" if result.val_ap50 is None else f"val AP50 {result.val_ap50:.4f}, "
        out.print(
            f"saved {result.model_path} ({keep} epoch {result.best_epoch}: {ap}val Dice "
            f"{result.val_dice:.4f}, IoU {result.val_iou:.4f}) and {result.metadata_path} "
            f"in {result.seconds / 60:.1f} min",
            highlight=False,
        )
        if result.threshold is not None:
            t = result.threshold
            out.print(
                f"threshold {t.threshold:.2f}: training-image Dice {t.dice:.4f} "
                f"(at 0.50: {t.dice_at_half:.4f})",
                highlight=False,
            )
