"""Shared by the ISBI 2012 benchmarks: where the data is and the train / held-out split.

Slices 0-23 train (and calibrate), 24-29 are held out; the object is the membrane (mask 0).
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "isbi2012"
TRAIN, HELD_OUT = range(0, 24), range(24, 30)


def split_folder(src: Path, dst: Path, ids: range) -> Path:
    """images/ and masks/ under ``dst`` with links to slices ``ids`` of ``src``."""
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
        for i in ids:
            (dst / sub / f"{i}.png").symlink_to((src / sub / f"{i}.png").resolve())
    return dst


def split(src: Path, root: Path) -> tuple[Path, Path]:
    """(train folder, held-out folder) under ``root``."""
    return split_folder(src, root / "train", TRAIN), split_folder(src, root / "test", HELD_OUT)
