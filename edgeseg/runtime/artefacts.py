"""Which artefact runs a stream: the tiled model or a whole-frame sibling built for its size.

`edgeseg convert --frame-size 768x1024` writes, beside each tiled artefact
``model_int8.tflite``, a whole-frame one ``model_int8_768x1024.tflite`` whose static input is
that frame padded up to the model's multiple (``ModelMetadata.frame_size`` records the frame).
`edgeseg run` is given one of them, or the folder holding them, and picks per stream:

- the candidates are the model given and its siblings of the same base (``<base>.<ext>`` and
  ``<base>_<H>x<W>.<ext>``, the same extension), or every artefact of a folder holding one
  base (a folder of several bases is a one-line error naming them);
- for a frame of (H, W), each candidate costs the pixels it feeds the model: one padded input
  when the frame fits it (a frame a little smaller is padded, never resized), else its tiles;
  the cheapest wins, an exact ``frame_size`` match first on a tie. So the whole-frame
  artefact runs when it fits and tiling happens only when it must (a frame of the other
  orientation is a different size, and gets tiles).

Reading a candidate reads only its metadata (the flatbuffer's, or the ONNX model's), never
builds an interpreter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.segmenter import DEFAULT_OVERLAP, plan_frame
from edgeseg.errors import DataError

__all__ = ["Artefact", "Choice", "candidates", "choose", "frame_size_suffix"]

MODEL_SUFFIXES = (".tflite", ".onnx")
_SIZED = re.compile(r"^(?P<base>.+)_(?P<h>\d+)x(?P<w>\d+)$")


def frame_size_suffix(stem: str) -> tuple[str, tuple[int, int] | None]:
    """``"model_int8_768x1024"`` → ``("model_int8", (768, 1024))``; other stems → (stem, None)."""
    m = _SIZED.match(stem)
    if m is None:
        return stem, None
    return m["base"], (int(m["h"]), int(m["w"]))


@dataclass(frozen=True)
class Artefact:
    """One model file and the metadata it carries (None when it has none)."""

    path: Path
    meta: ModelMetadata | None

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """The frame a whole-frame artefact was built for, or None for a tiled one."""
        return None if self.meta is None else self.meta.frame_size


@dataclass(frozen=True)
class Choice:
    """The artefact picked for a frame size: whole frame or ``tiles`` of it, and ``reason``
    ("whole frame 750x1000, padded to 752x1008", or why no whole-frame artefact fits)."""

    artefact: Artefact
    whole_frame: bool
    tiles: int
    reason: str


def _read_meta(path: Path) -> ModelMetadata | None:
    if path.suffix.lower() == ".onnx":
        from edgeseg.runtime.backends import onnx_metadata

        return onnx_metadata(path)
    from edgeseg.core.tflite_file import read_metadata

    return read_metadata(path)


def candidates(model: str | Path) -> list[Artefact]:
    """The model given and its whole-frame (or tiled) siblings; for a folder, its artefacts.

    Raises:
        DataError: a folder with no model, or with several bases (naming them), or a path
            that does not exist.
    """
    path = Path(model)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES
        )
        if not files:
            raise DataError(f"{path} holds no .tflite or .onnx model")
        bases = sorted({(frame_size_suffix(p.stem)[0], p.suffix.lower()) for p in files})
        if len(bases) > 1:
            names = ", ".join(b + s for b, s in bases[:8]) + (", …" if len(bases) > 8 else "")
            raise DataError(
                f"{path} holds several models ({names}); name one, e.g. "
                f"edgeseg run {path / (bases[0][0] + bases[0][1])}"
            )
        return [Artefact(p, _read_meta(p)) for p in files]
    if not path.is_file():
        raise DataError(f"model file not found: {path}")
    base, _ = frame_size_suffix(path.stem)
    suffix = path.suffix.lower()
    found = [path]
    for p in sorted(path.parent.iterdir()):
        if p == path or not p.is_file() or p.suffix.lower() != suffix:
            continue
        other, size = frame_size_suffix(p.stem)
        if other == base and (size is not None or p.stem == base):
            found.append(p)
    result = [Artefact(path, _read_meta(path))]
    for p in found[1:]:
        art = Artefact(p, _read_meta(p))
        # A sibling must be the same model at another size: same metadata but the sizes.
        if _same_model(result[0].meta, art.meta):
            result.append(art)
    return result


def _same_model(a: ModelMetadata | None, b: ModelMetadata | None) -> bool:
    if a is None or b is None:
        return False
    strip = {"input_size": (1, 1), "frame_size": None, "provenance": {}}
    try:
        return a.with_updates(**strip) == b.with_updates(**strip)
    except Exception:  # metadata that cannot be compared is not a sibling
        return False


def _cost(art: Artefact, frame: tuple[int, int], overlap: int) -> tuple[int, bool, int]:
    """(pixels fed to the model, whole frame?, invocations) for ``art`` on ``frame``."""
    meta = art.meta
    assert meta is not None
    ih, iw = meta.input_size
    fh, fw = frame
    if fh <= ih and fw <= iw and meta.output_border == 0:
        return ih * iw, True, 1
    n = plan_frame(frame, meta, overlap).n_tiles
    return n * ih * iw, False, n


def choose(
    arts: list[Artefact], frame: tuple[int, int] | None, overlap: int = DEFAULT_OVERLAP
) -> Choice:
    """The artefact that feeds the model the fewest pixels for ``frame`` (H, W).

    The first candidate (the model given) wins when the frame size is unknown or when none
    of the candidates carries edgeseg metadata.
    """
    first = arts[0]
    usable = [a for a in arts if a.meta is not None]
    if frame is None or not usable:
        return Choice(first, False, 0, "frame size unknown" if frame is None else "no metadata")
    scored = []
    for i, art in enumerate(usable):
        pixels, whole, n = _cost(art, frame, overlap)
        exact = art.frame_size == tuple(frame)
        scored.append((pixels, not exact, i, art, whole, n))
    pixels, _, _, art, whole, n = min(scored, key=lambda s: s[:3])
    fh, fw = frame
    if whole:
        ih, iw = art.meta.input_size if art.meta else frame
        padded = "" if (ih, iw) == (fh, fw) else f", padded to {ih}x{iw}"
        reason = f"whole frame {fh}x{fw}{padded}"
    else:
        sized = sorted({a.frame_size for a in usable if a.frame_size is not None})
        if sized:
            have = ", ".join(f"{h}x{w}" for h, w in sized)
            why = f"no whole-frame artefact fits {fh}x{fw} (have {have})"
        else:
            why = f"no whole-frame artefact; convert with --frame-size {fh}x{fw}"
        reason = why
    return Choice(art, whole, n, reason)
