"""Train the three PyTorch U-Net families of issue 22 briefly on ISBI 2012 and export them as
users do (``torch.onnx.export``, NCHW, logits, dynamic H/W), for `benchmarks/torch_models.py`.

Needs torch (and segmentation_models_pytorch, monai for those two families), which edgeseg
never installs: run it with a scratch environment's interpreter, e.g.

    python3.11 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch segmentation-models-pytorch monai onnx onnxscript pillow
    /tmp/torchenv/bin/python benchmarks/torch_train.py --out /tmp/torch-unets --minutes 4

Families (each trained on ISBI slices 0-23, membranes as foreground, random 256² crops with
flips; slices 24-29 are held out):

- ``milesial``: milesial/Pytorch-UNet's architecture written out here (DoubleConv with
  BatchNorm, MaxPool, bilinear ``align_corners=True`` upsampling, 1x1 head), 1 channel,
  pixels scaled to [0, 1], one logit; exported at opset 18 (onnx2tf 1.x's Resize trap);
- ``smp``: ``segmentation_models_pytorch.Unet("resnet18")`` (no pretrained weights: no
  internet), 3 channels (the gray slice repeated), ImageNet normalization, one logit;
  opset 17;
- ``monai``: ``monai.networks.nets.BasicUNet`` (InstanceNorm, LeakyReLU, ConvTranspose),
  3 channels scaled to [0, 1], 2 classes (softmax); opset 18.

Each writes ``NAME.onnx``, ``NAME.edgeseg.json``-free (the flags go on the command line, as a
new user's would) and ``NAME.json`` with the flags `edgeseg convert` needs, the torch
version, the training minutes, steps and the held-out Dice of PyTorch itself. With
``--pt2`` it also saves ``NAME.pt2`` (``torch.export``) for `edgeseg convert NAME.pt2`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "isbi2012"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MilesialUNet(nn.Module):
    """milesial/Pytorch-UNet's UNet(bilinear=True), widths from ``base``."""

    def __init__(self, channels: int = 1, classes: int = 1, base: int = 16, depth: int = 4):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        widths[-1] //= 2  # bilinear: the bottom halves, as in the original
        self.inc = DoubleConv(channels, widths[0])
        self.downs = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        ups = []
        for i in range(depth, 0, -1):
            skip = widths[i - 1]
            below = widths[i] if i == depth else widths[i] // 2
            out = skip // 2 if i > 1 else skip
            ups.append(DoubleConv(below + skip, out))
        self.ups = nn.ModuleList(ups)
        self.outc = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.ups:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
            y = up(torch.cat([skips.pop(), y], dim=1))
        return self.outc(y)


def build(name: str, base: int, depth: int = 4) -> tuple[nn.Module, dict]:
    """The module and what `edgeseg convert` must be told about it (``depth``: milesial's)."""
    if name == "milesial":
        return MilesialUNet(1, 1, base=base, depth=depth), {
            "channels": 1, "classes": 1, "opset": 18, "flags": ["--activation", "logits"],
        }  # fmt: skip
    if name == "smp":
        import segmentation_models_pytorch as smp

        model = smp.Unet(
            "resnet18", encoder_weights=None, in_channels=3, classes=1,
            decoder_channels=(128, 64, 32, 16, base),
        )  # fmt: skip
        return model, {
            "channels": 3, "classes": 1, "opset": 17, "imagenet": True,
            "flags": ["--activation", "logits", "--normalization", "imagenet",
                      "--channel-order", "RGB"],
        }  # fmt: skip
    if name == "monai":
        from monai.networks.nets import BasicUNet

        feats = (base, base, 2 * base, 4 * base, 8 * base, base)
        model = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=feats)
        return model, {
            "channels": 3, "classes": 2, "opset": 18,
            "flags": ["--activation", "logits", "--channel-order", "RGB"],
        }  # fmt: skip
    raise SystemExit(f"unknown family {name}")


def load(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Slices 0-29 in order (uint8) and their membrane masks (0 in ISBI's labels) as 0/1."""
    from PIL import Image

    def read(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("L"))

    images = np.stack([read(data / "images" / f"{i}.png") for i in range(30)])
    masks = np.stack([read(data / "masks" / f"{i}.png") for i in range(30)])
    return images, (masks == 0).astype(np.float32)


def to_input(gray_u8: np.ndarray, spec: dict) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, C, H, W) float as edgeseg's normalization gives it."""
    x = torch.from_numpy(gray_u8.astype(np.float32) / 255.0)[:, None]
    if spec["channels"] == 3:
        x = x.repeat(1, 3, 1, 1)
        if spec.get("imagenet"):
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            x = (x - mean) / std
    return x


def loss_of(logits: torch.Tensor, target: torch.Tensor, spec: dict) -> torch.Tensor:
    if spec["classes"] == 1:
        prob = torch.sigmoid(logits)
        bce = F.binary_cross_entropy_with_logits(logits, target)
    else:
        bce = F.cross_entropy(logits, target[:, 0].long())
        prob = torch.softmax(logits, 1)[:, 1:2]
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def foreground(logits: torch.Tensor, spec: dict) -> torch.Tensor:
    if spec["classes"] == 1:
        return torch.sigmoid(logits)[:, 0] >= 0.5
    return logits.argmax(1) == 1


def train(name: str, args: argparse.Namespace, out: Path) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, spec = build(name, args.base, args.depth)
    images, masks = load(args.data)
    train_x, train_y = images[:24], masks[:24]
    held_x, held_y = images[24:], masks[24:]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    crop, batch = args.crop, args.batch
    start, steps = time.monotonic(), 0
    model.train()
    while time.monotonic() - start < args.minutes * 60:
        idx = rng.integers(0, len(train_x), batch)
        ys = rng.integers(0, train_x.shape[1] - crop + 1, batch)
        xs = rng.integers(0, train_x.shape[2] - crop + 1, batch)
        at = list(zip(idx, ys, xs, strict=True))
        bx = np.stack([train_x[i, y : y + crop, x : x + crop] for i, y, x in at])
        by = np.stack([train_y[i, y : y + crop, x : x + crop] for i, y, x in at])
        if rng.random() < 0.5:
            bx, by = bx[:, :, ::-1], by[:, :, ::-1]
        if rng.random() < 0.5:
            bx, by = bx[:, ::-1], by[:, ::-1]
        logits = model(to_input(np.ascontiguousarray(bx), spec))
        loss = loss_of(logits, torch.from_numpy(np.ascontiguousarray(by))[:, None], spec)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 25 == 0:
            print(f"{name}: step {steps} loss {loss.item():.3f}", file=sys.stderr, flush=True)
    minutes = (time.monotonic() - start) / 60
    model.eval()
    with torch.no_grad():
        pred = foreground(model(to_input(held_x, spec)), spec).numpy()
    truth = held_y.astype(bool)
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    onnx_path = out / f"{name}.onnx"
    example = to_input(held_x[:1, :256, :256], spec)
    torch.onnx.export(
        model, (example,), str(onnx_path), opset_version=spec["opset"], dynamo=False,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
    )  # fmt: skip
    if args.pt2:
        program = torch.export.export(model, (example,))
        torch.export.save(program, str(out / f"{name}.pt2"))
    record = {
        "family": name,
        "torch": torch.__version__,
        "opset": spec["opset"],
        "channels": spec["channels"],
        "classes": spec["classes"],
        "flags": spec["flags"],
        "minutes": round(minutes, 2),
        "steps": steps,
        "batch": batch,
        "crop": crop,
        "base": args.base,
        "depth": args.depth if name == "milesial" else None,
        "command": " ".join(["benchmarks/torch_train.py", *sys.argv[1:]]),
        "heldout_dice_torch": float(dice),
        "params": sum(p.numel() for p in model.parameters()),
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*", default=["milesial", "smp", "monai"])
    ap.add_argument("--minutes", type=float, default=4.0, help="training minutes per model")
    ap.add_argument("--base", type=int, default=16, help="first level's filters")
    ap.add_argument("--depth", type=int, default=4, help="milesial's levels (4 as published)")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pt2", action="store_true", help="also save a torch.export program")
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        print(f"ISBI 2012 data not found at {args.data}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in args.only:
        print(json.dumps(train(name, args, args.out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
