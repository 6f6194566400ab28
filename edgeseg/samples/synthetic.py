"""Synthetic fluorescence microscopy of cell nuclei with exact ground truth.

Image formation, in order: star-convex nuclei (ellipses with a smooth radial perturbation,
some elongated or irregular, some placed against each other) with per-cell brightness, a
dome-shaped profile and chromatin-like texture → Gaussian PSF blur → out-of-focus haze →
uneven illumination and background → Poisson shot noise and Gaussian read noise → camera gain,
offset and clipping to uint8 or uint16. The mask is the union of the nucleus shapes before
blur and noise. The instance labels (:func:`generate_labelled`, ``labels/`` of
:func:`write_dataset`) give every nucleus its own id; where nuclei overlap, the nucleus drawn
later owns the overlap (so labels > 0 is exactly the mask, and a nucleus mostly covered by
later ones may keep only a sliver, or rarely two pieces). Ids are 1..N in raster order.

Every cell is rendered once as a small blurred "sprite" and added into the frame. Blur is
linear, so this equals blurring the whole frame, and it lets :class:`SyntheticStream` move
cells without re-rendering or re-blurring full frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import ModuleType

import numpy as np

from edgeseg.core.instances import relabel_sequential
from edgeseg.errors import DataError
from edgeseg.optional import cv2 as _cv2
from edgeseg.optional import require
from edgeseg.paths import ensure_writable_dir

# Cell counts in SynthConfig.cells are per this many pixels (256 x 256).
_REFERENCE_AREA = 256 * 256


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic images look. Ranges ``(lo, hi)`` are sampled uniformly per image or cell.

    Intensities are in units of the peak signal of a typical nucleus (``photons`` photoelectrons
    at its centre), so ``background=(0.02, 0.25)`` means 2-25 % of that.
    """

    size: tuple[int, int] = (256, 256)
    """(H, W) in pixels."""
    bit_depth: int = 8
    """8 → uint8 images; 16 → uint16 images using a ``camera_bits`` range inside uint16."""
    channels: int = 1
    """1 → gray (H, W); 3 → RGB (H, W, 3), nuclei in blue, dim cytoplasm haze in red/green."""
    cells: tuple[int, int] = (8, 30)
    """Number of nuclei per 256 x 256 pixels; scaled with the image area."""
    radius: tuple[float, float] = (6.0, 18.0)
    """Mean nucleus radius in pixels."""
    touching: float = 0.3
    """Fraction of nuclei placed against an earlier one (touching or overlapping it)."""
    elongated: float = 0.15
    """Fraction of nuclei with a strongly elongated outline (aspect ratio 1.6-2.6)."""
    irregular: float = 0.15
    """Fraction of nuclei with a strongly perturbed (lobed, dented) outline."""
    dim: float = 0.2
    """Fraction of nuclei at 30-55 % of the typical brightness."""
    out_of_focus: tuple[int, int] = (0, 4)
    """Out-of-focus nuclei (strongly blurred, dim, not in the mask) per 256 x 256 pixels."""
    brightness_spread: float = 0.25
    """Log-normal sigma of the per-nucleus brightness."""
    texture: tuple[float, float] = (0.1, 0.35)
    """Amplitude of the chromatin-like texture inside nuclei, relative to their brightness."""
    blur_sigma: tuple[float, float] = (0.6, 1.8)
    """Gaussian PSF sigma in pixels, one per image."""
    illumination: tuple[float, float] = (0.0, 0.6)
    """Relative drop of the illumination from the brightest to the darkest pixel."""
    background: tuple[float, float] = (0.02, 0.25)
    """Background (autofluorescence) level relative to the peak nucleus signal."""
    background_unevenness: tuple[float, float] = (0.0, 0.6)
    """Relative variation of the background across the image, on top of the illumination."""
    haze: tuple[float, float] = (0.0, 0.15)
    """Out-of-focus glow around nuclei relative to their signal."""
    photons: tuple[float, float] = (60.0, 1500.0)
    """Peak photoelectrons of a typical nucleus (sampled log-uniformly); sets the shot noise."""
    read_noise: tuple[float, float] = (1.0, 4.0)
    """Camera read noise in electrons rms."""
    camera_bits: tuple[int, int] = (12, 14)
    """For 16-bit output: the camera's ADC bits (inclusive range) whose range the values use."""
    exposure: tuple[float, float] = (0.45, 0.9)
    """Brightest noiseless pixel as a fraction of the output (or camera) range."""

    def __post_init__(self) -> None:
        try:
            size = tuple(int(v) for v in self.size)
        except (TypeError, ValueError):
            raise DataError(f"size must be (height, width), got {self.size!r}") from None
        if len(size) != 2 or min(size) < 8:
            raise DataError(f"size must be (height, width) of at least 8 x 8, got {self.size!r}")
        object.__setattr__(self, "size", size)
        if self.bit_depth not in (8, 16):
            raise DataError(f"bit_depth must be 8 or 16, got {self.bit_depth!r}")
        if self.channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {self.channels!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "size" or not isinstance(value, tuple):
                continue
            if len(value) != 2 or not value[0] <= value[1]:
                raise DataError(f"{f.name} must be a range (lo, hi) with lo <= hi, got {value!r}")
            if value[0] < 0:
                raise DataError(f"{f.name} must not be negative, got {value!r}")
        if self.radius[0] < 1.0:
            raise DataError(f"radius must be at least 1 pixel, got {self.radius!r}")
        if self.photons[0] <= 0:
            raise DataError(f"photons must be positive, got {self.photons!r}")
        if self.camera_bits[0] < 8 or self.camera_bits[1] > 16:
            raise DataError(f"camera_bits must lie in 8..16, got {self.camera_bits!r}")
        if (
            self.exposure[1] > 1.0
            or self.illumination[1] >= 1.0
            or self.background_unevenness[1] >= 1.0
        ):
            raise DataError("exposure must be at most 1, illumination and unevenness below 1")
        for name in ("touching", "elongated", "irregular", "dim"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")


# --------------------------------------------------------------------------------------------
# Cells


@dataclass(slots=True)
class _Cell:
    """Shape, brightness and texture of one nucleus (and its cytoplasm), in its own frame."""

    a: float  # semi-axis along the cell's x' axis, pixels
    b: float  # semi-axis along y'
    theta: float  # orientation, radians
    amps: np.ndarray  # radial harmonics 2..5: relative amplitudes
    phases: np.ndarray
    brightness: float
    edge_dim: float  # how much dimmer the rim is than the centre (nuclei are dome-shaped)
    blobs: np.ndarray  # (k, 4): u, v, width, amplitude of texture blobs, in unit-radius coords
    grad: np.ndarray  # (2,) linear brightness gradient across the nucleus
    cyto_scale: float
    cyto_amps: np.ndarray
    cyto_phases: np.ndarray
    cyto_brightness: float
    defocus: float = 0.0  # extra blur sigma of an out-of-focus nucleus; those have no mask

    @property
    def mean_radius(self) -> float:
        return math.sqrt(self.a * self.b)


@dataclass(frozen=True)
class _Sprite:
    """One rendered cell: patches centred on their middle pixel.

    The cytoplasm is smooth, so it is rendered at half resolution, which makes RGB frames
    about four times cheaper to render and compose.
    """

    nuc: np.ndarray  # float32 (n, n), blurred nucleus signal
    mask: np.ndarray | None  # uint8 (n, n), 0/255, unblurred nucleus shape; None: out of focus
    cyto: np.ndarray | None  # float32 (m, m) at half resolution, blurred cytoplasm (RGB only)

    @property
    def half(self) -> int:
        return self.nuc.shape[0] // 2

    @property
    def reach(self) -> int:
        """Distance from the centre beyond which the sprite draws nothing, full-res pixels."""
        return self.half if self.cyto is None else max(self.half, self.cyto.shape[0] + 1)


def _random_cell(rng: np.random.Generator, cfg: SynthConfig) -> _Cell:
    r = rng.uniform(*cfg.radius)
    if rng.random() < cfg.elongated:
        aspect = rng.uniform(1.6, 2.6)
    else:
        aspect = 1.0 + abs(rng.normal(0.0, 0.18))
    irregular = rng.random() < cfg.irregular
    # Higher harmonics get smaller amplitudes so outlines stay smooth (star-convex blobs).
    scale = 0.22 if irregular else 0.07
    amps = rng.uniform(0.0, scale, 4) / np.arange(2, 6) ** (0.6 if irregular else 1.0)
    if cfg.dim > 0 and rng.random() < cfg.dim:
        brightness = rng.uniform(0.3, 0.55)
    else:
        brightness = float(np.exp(rng.normal(0.0, cfg.brightness_spread)))
    tex = rng.uniform(*cfg.texture)
    k = int(rng.integers(3, 9))
    blobs = np.column_stack(
        [
            rng.uniform(-0.7, 0.7, k),
            rng.uniform(-0.7, 0.7, k),
            rng.uniform(0.12, 0.35, k),
            # Mostly bright chromatin clumps, some dark nucleoli.
            tex * rng.choice([1.0, 1.0, -1.0], k) * rng.uniform(0.5, 1.5, k),
        ]
    ).astype(np.float32)
    return _Cell(
        a=r * math.sqrt(aspect),
        b=r / math.sqrt(aspect),
        theta=rng.uniform(0.0, math.pi),
        amps=amps.astype(np.float32),
        phases=rng.uniform(0.0, 2 * math.pi, 4).astype(np.float32),
        brightness=brightness,
        edge_dim=rng.uniform(0.15, 0.45),
        blobs=blobs,
        grad=rng.normal(0.0, 0.5 * tex, 2).astype(np.float32),
        cyto_scale=rng.uniform(1.4, 2.0),
        cyto_amps=(rng.uniform(0.0, 0.15, 4) / np.arange(2, 6) ** 0.5).astype(np.float32),
        cyto_phases=rng.uniform(0.0, 2 * math.pi, 4).astype(np.float32),
        cyto_brightness=rng.uniform(0.4, 1.4),
    )


# Largest extra blur of out-of-focus nuclei, pixels.
_MAX_DEFOCUS = 6.0


def _random_defocused_cell(rng: np.random.Generator, cfg: SynthConfig) -> _Cell:
    """A nucleus in another focal plane: a dim, wide glow that is not part of the mask."""
    cell = _random_cell(rng, cfg)
    cell.defocus = rng.uniform(2.5, _MAX_DEFOCUS)
    cell.brightness *= rng.uniform(0.3, 0.7)
    return cell


def _radial(phi: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """1 + sum_k amps[k] cos((k + 2) phi + phases[k]): the star-convex radius factor."""
    m = np.ones_like(phi)
    for k in range(len(amps)):
        m += amps[k] * np.cos((k + 2) * phi + phases[k])
    return m


def _extent_bound(cfg: SynthConfig) -> float:
    """Upper bound of :func:`_extent` over all cells :func:`_random_cell` can draw."""
    harmonics = 0.22 * float((np.arange(2, 6) ** -0.6).sum())
    ext = cfg.radius[1] * math.sqrt(2.6) * (1.0 + harmonics)
    if cfg.channels == 3:
        ext *= 2.0 * (1.0 + 0.15 * float((np.arange(2, 6) ** -0.5).sum()))
    return ext


def _extent(cell: _Cell, cyto: bool = False) -> float:
    """Upper bound on the distance of the nucleus (or cytoplasm) outline from the centre."""
    ext = max(cell.a, cell.b) * (1.0 + float(np.abs(cell.amps).sum()))
    if cyto:
        ext *= cell.cyto_scale * (1.0 + float(np.abs(cell.cyto_amps).sum()))
    return ext


def _patch_halves(cell: _Cell, sigma: float, cyto_sigma: float) -> tuple[int, int]:
    """Half sizes of the nucleus patch (full res) and the cytoplasm patch (half res)."""
    # OpenCV's float Gaussian kernel reaches 4 sigma; the pad keeps it inside the patch.
    return (
        math.ceil(_extent(cell) + 4.0 * math.hypot(sigma, cell.defocus)) + 2,
        math.ceil((_extent(cell, cyto=True) + 4.0 * cyto_sigma) / 2) + 2,
    )


def _polar(
    cell: _Cell, dy: np.ndarray, dx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit-radius coordinates u, v in the cell's own frame and their polar rho, phi.

    Texture is a function of (u, v), so it rotates and stretches with the cell.
    """
    c, s = np.float32(math.cos(cell.theta)), np.float32(math.sin(cell.theta))
    u = (dx * c + dy * s) * np.float32(1.0 / cell.a)
    v = (dy * c - dx * s) * np.float32(1.0 / cell.b)
    return u, v, np.hypot(u, v), np.arctan2(v, u)


def _render(
    cell: _Cell,
    frac: tuple[float, float],
    cyto_frac: tuple[float, float] | None,
    sigma: float,
    cyto_sigma: float,
    cv2: ModuleType,
) -> _Sprite:
    """Render ``cell`` with its centre ``frac`` (y, x) below/right of the patch's middle pixel.

    ``cyto_frac`` is the same for the half-resolution cytoplasm patch; None: no cytoplasm.
    """
    half, cyto_half = _patch_halves(cell, sigma, cyto_sigma)
    coords = np.arange(-half, half + 1, dtype=np.float32)
    dy = (coords - np.float32(frac[0]))[:, None]
    dx = (coords - np.float32(frac[1]))[None, :]
    u, v, rho, phi = _polar(cell, dy, dx)
    r = rho / _radial(phi, cell.amps, cell.phases)
    inside = r <= 1.0

    tex = 1.0 + cell.grad[0] * u + cell.grad[1] * v
    for bu, bv, bw, amp in cell.blobs:
        tex += amp * np.exp(((u - bu) ** 2 + (v - bv) ** 2) * np.float32(-0.5 / (bw * bw)))
    np.maximum(tex, 0.3, out=tex)
    profile = 1.0 - cell.edge_dim * np.minimum(r, 1.0) ** 3
    nuc = np.where(inside, profile * tex * np.float32(cell.brightness), np.float32(0.0))
    nuc = cv2.GaussianBlur(nuc.astype(np.float32), (0, 0), math.hypot(sigma, cell.defocus))
    if cell.defocus > 0:
        return _Sprite(nuc=nuc, mask=None, cyto=None)
    mask = inside.view(np.uint8) * np.uint8(255)

    cyto = None
    if cyto_frac is not None:
        coords = np.arange(-cyto_half, cyto_half + 1, dtype=np.float32)
        dy = (2.0 * (coords - np.float32(cyto_frac[0])))[:, None]
        dx = (2.0 * (coords - np.float32(cyto_frac[1])))[None, :]
        _, _, rho, phi = _polar(cell, dy, dx)
        rc = rho / (cell.cyto_scale * _radial(phi, cell.cyto_amps, cell.cyto_phases))
        in_nucleus = rho <= _radial(phi, cell.amps, cell.phases)
        # Cytoplasm stain is mostly excluded from the nucleus and fades towards the membrane.
        cy = np.where(rc <= 1.0, 1.0 - 0.5 * rc * rc, 0.0) * np.where(in_nucleus, 0.35, 1.0)
        cy = (cy * cell.cyto_brightness).astype(np.float32)
        cyto = cv2.GaussianBlur(cy, (0, 0), cyto_sigma / 2)
    return _Sprite(nuc=nuc, mask=mask, cyto=cyto)


def _boxes(
    y0: int, x0: int, n: int, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Destination and source slices of an (n, n) patch at top-left (y0, x0), clipped."""
    h, w = shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + n, h), min(x0 + n, w)
    if ys >= ye or xs >= xe:
        return None
    return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))


def _compose(
    sprites: list[_Sprite],
    centres: list[tuple[int, int]],
    cyto_centres: list[tuple[int, int]] | None,
    shape: tuple[int, int],
    cv2: ModuleType,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Add sprites into float32 (H, W) nucleus/cytoplasm planes and OR their uint8 masks.

    ``centres`` are the full-res pixels of the sprites' middle pixels, ``cyto_centres`` the
    half-res ones (None: no cytoplasm). Overlapping nuclei add up, as fluorescence does.
    ``ids``: an int32 (H, W) array of zeros to receive instance ids (sprite order, from 1;
    a later sprite owns the pixels it shares with earlier ones), or None.
    """
    h, w = shape
    nuc = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    for k, (sp, (cy, cx)) in enumerate(zip(sprites, centres, strict=True)):
        boxes = _boxes(cy - sp.half, cx - sp.half, sp.nuc.shape[0], shape)
        if boxes is not None:
            dst, src = boxes
            nuc[dst] += sp.nuc[src]
            if sp.mask is not None:
                m = mask[dst]
                m |= sp.mask[src]
                if ids is not None:
                    ids[dst][sp.mask[src] > 0] = k + 1
    if cyto_centres is None:
        return nuc, None, mask
    small_shape = ((h + 1) // 2, (w + 1) // 2)
    small = np.zeros(small_shape, np.float32)
    for sp, (cy, cx) in zip(sprites, cyto_centres, strict=True):
        if sp.cyto is None:
            continue
        half = sp.cyto.shape[0] // 2
        boxes = _boxes(cy - half, cx - half, sp.cyto.shape[0], small_shape)
        if boxes is not None:
            dst, src = boxes
            small[dst] += sp.cyto[src]
    # Exactly 2x, so half-res pixel j covers full-res pixels 2j and 2j + 1.
    cyto = cv2.resize(small, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)[:h, :w]
    return nuc, cyto, mask


# --------------------------------------------------------------------------------------------
# Optics and camera


@dataclass(frozen=True)
class _Optics:
    """Per-image (or per-stream) microscope and camera parameters.

    Expected photoelectrons in channel c: illum * (nuc_w[c] * nuc + cyto_w[c] * cyto) + bg[c],
    where nuc and cyto are the composed planes (after haze) in units of a typical nucleus.
    """

    sigma: float
    cyto_sigma: float
    haze: float
    illum: np.ndarray  # float32 (H, W) in (0, 1]
    nuc_w: tuple[float, ...]  # photoelectrons per unit of nucleus signal, per channel
    cyto_w: tuple[float, ...]
    bg: tuple[np.ndarray, ...]  # float32 (H, W) background photoelectrons per channel
    read_noise: float
    exposure: float  # brightest noiseless pixel as a fraction of max_adu
    adu_offset: float
    max_adu: int
    dtype: type


def _illumination(
    rng: np.random.Generator, shape: tuple[int, int], drop: float, cv2: ModuleType
) -> np.ndarray:
    """float32 (H, W) field in [1 - drop, 1]: off-centre vignetting plus a smooth random tilt."""
    h, w = shape
    span = float(max(h, w))
    yy = (np.arange(h, dtype=np.float32) - h / 2) / span
    xx = (np.arange(w, dtype=np.float32) - w / 2) / span
    cy, cx = rng.uniform(-0.35, 0.35, 2)
    vignette = (yy[:, None] - cy) ** 2 + (xx[None, :] - cx) ** 2
    coarse = rng.standard_normal((3, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x - x.min()) / max(float(x.max() - x.min()), 1e-6)

    mix = rng.uniform(0.3, 1.0)
    falloff = unit(mix * unit(vignette) + (1.0 - mix) * unit(smooth))
    return (1.0 - drop * falloff).astype(np.float32)


def _draw_optics(rng: np.random.Generator, cfg: SynthConfig, cv2: ModuleType) -> _Optics:
    h, w = cfg.size
    illum = _illumination(rng, (h, w), rng.uniform(*cfg.illumination), cv2)
    lo, hi = cfg.photons
    photons = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    bg = rng.uniform(*cfg.background) * photons
    # Uneven medium / autofluorescence, lit by the same uneven illumination.
    bg_map = illum * _illumination(rng, (h, w), rng.uniform(*cfg.background_unevenness), cv2)
    if cfg.channels == 1:
        nuc_w, cyto_w, bg_w = [1.0], [0.0], [1.0]
    else:
        # RGB order. The nuclear stain is blue (like DAPI/Hoechst) and bleeds a little into
        # the other channels; the cytoplasm stain shows mostly in red/green as a dim haze.
        nuc_w = [rng.uniform(0.0, 0.08), rng.uniform(0.02, 0.15), 1.0]
        cyto_w = [rng.uniform(0.1, 0.35), rng.uniform(0.15, 0.4), rng.uniform(0.0, 0.04)]
        bg_w = list(rng.uniform(0.5, 1.2, 3))
    if cfg.bit_depth == 8:
        max_adu, dtype = 255, np.uint8
        adu_offset = rng.uniform(2.0, 12.0)
    else:
        bits = int(rng.integers(cfg.camera_bits[0], cfg.camera_bits[1] + 1))
        max_adu, dtype = 2**bits - 1, np.uint16
        adu_offset = rng.uniform(0.015, 0.05) * max_adu  # like an sCMOS dark offset
    sigma = rng.uniform(*cfg.blur_sigma)
    return _Optics(
        sigma=sigma,
        cyto_sigma=sigma + rng.uniform(1.5, 3.0),
        haze=rng.uniform(*cfg.haze),
        illum=illum,
        nuc_w=tuple(float(photons * wn) for wn in nuc_w),
        cyto_w=tuple(float(photons * wc) for wc in cyto_w),
        bg=tuple(bg_map * np.float32(bg * wb) for wb in bg_w),
        read_noise=rng.uniform(*cfg.read_noise),
        exposure=rng.uniform(*cfg.exposure),
        adu_offset=adu_offset,
        max_adu=max_adu,
        dtype=dtype,
    )


def _haze(nuc: np.ndarray, cv2: ModuleType) -> np.ndarray:
    """Wide, cheap low-pass of ``nuc`` (about 16 px sigma) via an 8x smaller image."""
    h, w = nuc.shape
    small = cv2.resize(nuc, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    # Linear (not cubic) upsampling cannot overshoot below zero.
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _with_haze(nuc: np.ndarray, optics: _Optics, cv2: ModuleType) -> np.ndarray:
    return cv2.scaleAdd(_haze(nuc, cv2), optics.haze, nuc) if optics.haze > 0 else nuc


def _unlit(
    nuc: np.ndarray, cyto: np.ndarray | None, optics: _Optics, c: int, cv2: ModuleType
) -> np.ndarray:
    """Channel ``c``'s cell signal in photoelectrons before illumination: float32 (H, W)."""
    wn, wc = optics.nuc_w[c], optics.cyto_w[c]
    # One fused pass either way (addWeighted computes a * x + b * y + gamma).
    if cyto is not None and wc > 0:
        return cv2.addWeighted(nuc, wn, cyto, wc, 0.0)
    return cv2.addWeighted(nuc, wn, nuc, 0.0, 0.0)


def _expected_photons(
    nuc: np.ndarray, cyto: np.ndarray | None, optics: _Optics, cv2: ModuleType
) -> list[np.ndarray]:
    """Noise-free photoelectrons per channel: float32 (H, W) planes."""
    nuc = _with_haze(nuc, optics, cv2)
    return [
        cv2.add(cv2.multiply(_unlit(nuc, cyto, optics, c, cv2), optics.illum), optics.bg[c])
        for c in range(len(optics.nuc_w))
    ]


def _adu_gain(planes: list[np.ndarray], optics: _Optics) -> float:
    """ADU per photoelectron so the brightest noiseless pixel lands at ``optics.exposure``."""
    peak = max(float(p.max()) for p in planes)
    return (optics.exposure * optics.max_adu - optics.adu_offset) / max(peak, 1e-3)


def _digitize(
    planes: list[np.ndarray],
    optics: _Optics,
    gain: float,
    rng: np.random.Generator,
    cv2: ModuleType,
) -> np.ndarray:
    """Poisson shot noise, Gaussian read noise, gain, offset, rounding and clipping.

    ``planes`` are expected photoelectrons, float32 (H, W) per channel; returns the image,
    (H, W) or (H, W, 3), of ``optics.dtype``.
    """
    out = []
    for p in planes:
        e = rng.poisson(p).astype(np.float32)
        e += rng.standard_normal(p.shape, dtype=np.float32) * np.float32(optics.read_noise)
        e *= np.float32(gain)
        e += np.float32(optics.adu_offset + 0.5)  # + 0.5: astype truncates, we want rounding
        np.clip(e, 0.0, optics.max_adu, out=e)
        out.append(e.astype(optics.dtype))
    return out[0] if len(out) == 1 else cv2.merge(out)


# --------------------------------------------------------------------------------------------
# Still samples


def _cell_count(
    rng: np.random.Generator, cfg: SynthConfig, per_area: tuple[int, int] | None = None
) -> int:
    """How many cells for an image of ``cfg.size``, given a count range per 256 x 256."""
    lo, hi = cfg.cells if per_area is None else per_area
    scale = cfg.size[0] * cfg.size[1] / _REFERENCE_AREA
    x = rng.uniform(lo * scale, hi * scale)
    # Stochastic rounding keeps the expected count right for small images.
    n = int(x) + int(rng.random() < x - int(x))
    return max(n, 1) if per_area is None and lo >= 1 else n


def _place(
    rng: np.random.Generator, cells: list[_Cell], shape: tuple[int, int], touching: float
) -> list[tuple[float, float]]:
    """Centres (y, x) as floats: some against an earlier cell, the rest spread out."""
    h, w = shape
    centres: list[tuple[float, float]] = []
    for cell in cells:
        r = cell.mean_radius
        if centres and rng.random() < touching:
            j = int(rng.integers(len(centres)))
            # Below ~0.95 of the summed radii they overlap, above they just touch or nearly.
            d = (cells[j].mean_radius + r) * rng.uniform(0.65, 1.02)
            ang = rng.uniform(0.0, 2 * math.pi)
            centres.append((centres[j][0] + d * math.sin(ang), centres[j][1] + d * math.cos(ang)))
            continue
        best, best_gap = (0.0, 0.0), -math.inf
        for _ in range(8):  # best of a few tries keeps unintended overlaps rare
            y, x = rng.uniform(0, h), rng.uniform(0, w)
            gap = min(
                (
                    math.hypot(y - cy, x - cx) / (r + cells[k].mean_radius)
                    for k, (cy, cx) in enumerate(centres)
                ),
                default=math.inf,
            )
            if gap > best_gap:
                best, best_gap = (y, x), gap
            if gap > 1.2:
                break
        centres.append(best)
    return centres


def _as_rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def generate_sample(
    seed: int | np.random.Generator, config: SynthConfig = SynthConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic fluorescence image and its exact nucleus mask.

    Returns ``(image, mask)``: image is uint8 or uint16 (``config.bit_depth``) of shape (H, W)
    for one channel or (H, W, 3) in RGB order for three; mask is uint8 (H, W) with 0 for
    background and 255 for nucleus. The same integer seed gives the same bytes; a Generator
    is used (and advanced) as given.
    """
    image, mask, _ = _sample(seed, config, labels=False)
    return image, mask


def generate_labelled_sample(
    seed: int | np.random.Generator, config: SynthConfig = SynthConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`generate_sample` (the same image and mask for the same seed), plus int32
    (H, W) instance ids 1..N in raster order, 0 background; the nucleus drawn later owns an
    overlap, so ``ids > 0`` equals ``mask > 0``."""
    image, mask, ids = _sample(seed, config, labels=True)
    assert ids is not None
    return image, mask, ids


def _sample(
    seed: int | np.random.Generator, config: SynthConfig, labels: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    cv2 = _cv2()
    rng = _as_rng(seed)
    shape = config.size
    rgb = config.channels == 3
    optics = _draw_optics(rng, config, cv2)
    cells = [_random_cell(rng, config) for _ in range(_cell_count(rng, config))]
    centres = _place(rng, cells, shape, config.touching)
    for _ in range(_cell_count(rng, config, config.out_of_focus)):
        cells.append(_random_defocused_cell(rng, config))
        centres.append((rng.uniform(0, shape[0]), rng.uniform(0, shape[1])))
    sprites, pixels, cyto_pixels = [], [], []
    for cell, (y, x) in zip(cells, centres, strict=True):
        iy, ix = math.floor(y), math.floor(x)
        # Half-res pixel j is centred on full-res coordinate 2j + 0.5.
        cy, cx = (y - 0.5) / 2, (x - 0.5) / 2
        jy, jx = math.floor(cy), math.floor(cx)
        cyto_frac = (cy - jy, cx - jx) if rgb else None
        sprites.append(
            _render(cell, (y - iy, x - ix), cyto_frac, optics.sigma, optics.cyto_sigma, cv2)
        )
        pixels.append((iy, ix))
        cyto_pixels.append((jy, jx))
    ids = np.zeros(shape, np.int32) if labels else None
    nuc, cyto, mask = _compose(sprites, pixels, cyto_pixels if rgb else None, shape, cv2, ids)
    planes = _expected_photons(nuc, cyto, optics, cv2)
    image = _digitize(planes, optics, _adu_gain(planes, optics), rng, cv2)
    return image, mask, None if ids is None else relabel_sequential(ids)


def generate(
    n: int, config: SynthConfig = SynthConfig(), seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n`` samples as from :func:`generate_sample`, lazily.

    Sample ``i`` is ``generate_sample(np.random.default_rng((seed, i)), config)``: it depends
    only on ``(seed, i)``, so ``generate(5)`` starts with the 3 samples of ``generate(3)``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise DataError(f"number of samples must be a non-negative integer, got {n!r}")
    _as_rng(seed)  # validate now, not at the first next()
    return (generate_sample(np.random.default_rng((int(seed), i)), config) for i in range(n))


def generate_labelled(
    n: int, config: SynthConfig = SynthConfig(), seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """As :func:`generate` (the same images and masks), with the instance ids of
    :func:`generate_labelled_sample` as a third element."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise DataError(f"number of samples must be a non-negative integer, got {n!r}")
    _as_rng(seed)
    return (
        generate_labelled_sample(np.random.default_rng((int(seed), i)), config) for i in range(n)
    )


def write_dataset(
    out_dir: str | Path,
    n: int,
    config: SynthConfig = SynthConfig(),
    seed: int = 0,
    fmt: str = "png",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n`` samples of :func:`generate` to ``out_dir/images/`` and ``out_dir/masks/``,
    and their instance labels (uint16, one id per nucleus, see :func:`generate_labelled`) to
    ``out_dir/labels/``.

    Files are named ``0000.png`` … (``.tif`` for ``fmt="tif"``), matched by name; existing
    files of the same names are overwritten. RGB images are stored so that OpenCV reads them
    back as BGR and tifffile as RGB. ``progress(k)`` is called after each of the ``k`` pairs.
    Returns ``Path(out_dir)``.
    """
    cv2 = _cv2()
    fmt = fmt.lower().lstrip(".")
    if fmt not in ("png", "tif", "tiff"):
        raise DataError(f"unknown image format {fmt!r}; use png or tif")
    ext = "png" if fmt == "png" else "tif"
    tifffile = require("tifffile") if ext == "tif" else None
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"number of samples must be at least 1, got {n!r}")
    root = ensure_writable_dir(Path(out_dir), "output path")
    img_dir, mask_dir, label_dir = root / "images", root / "masks", root / "labels"
    for d in (img_dir, mask_dir, label_dir):
        ensure_writable_dir(d, "output path")

    width = max(4, len(str(n - 1)))
    for i, (image, mask, ids) in enumerate(generate_labelled(n, config, seed)):
        name = f"{i:0{width}d}.{ext}"
        ids16 = np.minimum(ids, 65535).astype(np.uint16)
        try:
            if tifffile is not None:
                photometric = "rgb" if image.ndim == 3 else "minisblack"
                tifffile.imwrite(img_dir / name, image, photometric=photometric)
                tifffile.imwrite(mask_dir / name, mask, photometric="minisblack")
                tifffile.imwrite(label_dir / name, ids16, photometric="minisblack")
            else:
                bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
                if not (
                    cv2.imwrite(str(img_dir / name), bgr)
                    and cv2.imwrite(str(mask_dir / name), mask)
                    and cv2.imwrite(str(label_dir / name), ids16)
                ):
                    raise OSError("OpenCV could not write the file")
        except OSError as exc:
            raise DataError(f"cannot write {img_dir / name}: {exc.strerror or exc}") from None
        if progress is not None:
            progress(i + 1)
    return root


# --------------------------------------------------------------------------------------------
# Live stream


@dataclass(slots=True)
class _Mover:
    """A cell in the stream: its shape, position, motion and cached sprite."""

    cell: _Cell
    y: float
    x: float
    vy: float
    vx: float
    base_vy: float
    base_vx: float
    omega: float  # rotation per frame, radians
    base_brightness: float
    changing: bool  # rotates and changes brightness (others only move)
    reach: int  # as _Sprite.reach, known before the first render
    sprite: _Sprite | None = field(default=None)


class SyntheticStream:
    """Endless stream of frames of drifting, slowly changing cells for a ``synthetic://`` source.

    Cells drift with a common velocity plus their own, with a little jitter, rotate and
    change brightness slowly, and re-enter as new cells after leaving at a border, so
    consecutive masks overlap strongly but are not identical. Frames and masks have the types
    of :func:`generate_sample`. Blur, illumination, background and camera gain are fixed per
    stream, like a real microscope; only the noise is new every frame.

    ``size``, ``bit_depth`` and ``channels`` override the corresponding fields of ``config``;
    left as None they come from ``config``, or default to (512, 512), 8 and 1 without one.
    ``speed`` is the typical cell speed in pixels per frame. The same seed gives the same
    sequence of frames.

    Per frame, shot noise uses a Gaussian with the Poisson variance, and the standard normal
    samples are windows at random offsets (and signs) into one precomputed noise field:
    drawing fresh normals would take most of the frame time.
    """

    # Sprites of changing cells are re-rendered every this many frames (staggered over cells)
    # to follow their slow rotation and brightness changes; in between they are only moved.
    # Rendering dominates the frame time otherwise.
    _RERENDER_EVERY = 24
    _CHANGING = 0.5  # fraction of cells that change
    # The noise field is this much larger than a frame in each direction.
    _NOISE_PAD = 64

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        seed: int = 0,
        bit_depth: int | None = None,
        channels: int | None = None,
        config: SynthConfig | None = None,
        speed: float = 0.8,
    ) -> None:
        base = config if config is not None else SynthConfig(size=(512, 512))
        overrides = {
            k: v
            for k, v in (("size", size), ("bit_depth", bit_depth), ("channels", channels))
            if v is not None
        }
        cfg = replace(base, **overrides)
        if not speed >= 0:
            raise DataError(f"speed must be a non-negative number of pixels per frame, got {speed}")
        self.config = cfg
        self._cv2 = cv2 = _cv2()
        self._rng = rng = _as_rng(seed)
        self._rgb = cfg.channels == 3
        self._optics = o = _draw_optics(rng, cfg, cv2)
        self._frame = 0
        self._speed = speed
        h, w = cfg.size
        # Cells wrap around a border wide enough that they vanish fully before re-entering.
        blur = max(math.hypot(o.sigma, _MAX_DEFOCUS), o.cyto_sigma if self._rgb else 0.0)
        self._margin = math.ceil(_extent_bound(cfg) + 4 * blur) + 4
        self._span = (h + 2 * self._margin, w + 2 * self._margin)
        ang = rng.uniform(0.0, 2 * math.pi)
        drift = speed * rng.uniform(0.4, 0.9)
        self._drift = (drift * math.sin(ang), drift * math.cos(ang))
        # Cells live on the whole wrap area; scale their number so the visible density is
        # what the config asks for.
        area = self._span[0] * self._span[1] / (h * w)
        n = round(_cell_count(rng, cfg) * area)
        n_blurred = round(_cell_count(rng, cfg, cfg.out_of_focus) * area)
        self._movers = [
            self._spawn(
                rng.uniform(-self._margin, h + self._margin),
                rng.uniform(-self._margin, w + self._margin),
                defocused=i >= n,
            )
            for i in range(n + n_blurred)
        ]
        self._noise = rng.standard_normal(
            (h + self._NOISE_PAD, w + self._NOISE_PAD), dtype=np.float32
        )
        # The camera gain is set once, from the first frame, like an auto-exposure that settled.
        nuc, cyto, _ = self._compose()
        gain = _adu_gain(_expected_photons(nuc, cyto, o, cv2), o)
        # The camera works in ADU: expected signal A = photons * gain (offset added last),
        # whose shot + read noise variance is gain * A + (gain * read noise)².
        self._illum_adu = o.illum * np.float32(gain)
        self._bg_adu = [bg * np.float32(gain) for bg in o.bg]
        self._gain = float(gain)
        # The tiny constant keeps float rounding from taking a square root of a negative.
        self._var0 = float((gain * o.read_noise) ** 2) + 1e-6

    def _spawn(self, y: float, x: float, defocused: bool) -> _Mover:
        rng, s = self._rng, self._speed
        cell = (_random_defocused_cell if defocused else _random_cell)(rng, self.config)
        vy = self._drift[0] + rng.normal(0.0, 0.35 * s)
        vx = self._drift[1] + rng.normal(0.0, 0.35 * s)
        half, cyto_half = _patch_halves(cell, self._optics.sigma, self._optics.cyto_sigma)
        reach = max(half, 2 * cyto_half + 2) if self._rgb else half
        return _Mover(
            cell=cell,
            y=y,
            x=x,
            vy=vy,
            vx=vx,
            base_vy=vy,
            base_vx=vx,
            omega=rng.normal(0.0, 0.002),
            base_brightness=cell.brightness,
            changing=bool(rng.random() < self._CHANGING),
            reach=reach,
        )

    def _compose(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        h, w = self.config.size
        o = self._optics
        sprites, pixels, cyto_pixels = [], [], []
        for i, m in enumerate(self._movers):
            iy, ix = round(m.y), round(m.x)
            if iy + m.reach < 0 or ix + m.reach < 0 or iy - m.reach >= h or ix - m.reach >= w:
                m.sprite = None  # off-screen: not rendered, and rendered afresh on entry
                continue
            if m.sprite is None or (m.changing and (self._frame + i) % self._RERENDER_EVERY == 0):
                cyto_frac = (0.0, 0.0) if self._rgb else None
                m.sprite = _render(m.cell, (0.0, 0.0), cyto_frac, o.sigma, o.cyto_sigma, self._cv2)
                m.reach = m.sprite.reach
            sprites.append(m.sprite)
            pixels.append((iy, ix))
            # Half-res pixel j is centred on full-res 2j + 0.5; within half a pixel is enough
            # for the smooth cytoplasm.
            cyto_pixels.append((iy // 2, ix // 2))
        return _compose(sprites, pixels, cyto_pixels if self._rgb else None, (h, w), self._cv2)

    def _step(self) -> None:
        rng, s = self._rng, self._speed
        k = len(self._movers)
        jitter = rng.normal(0.0, 0.08 * s, (k, 2))
        twinkle = rng.normal(0.0, 0.01, k)
        lo = -self._margin
        span_y, span_x = self._span
        for i, m in enumerate(self._movers):
            # Mean-reverting jitter: the path wiggles but keeps its heading.
            m.vy = m.base_vy + 0.85 * (m.vy - m.base_vy) + jitter[i, 0]
            m.vx = m.base_vx + 0.85 * (m.vx - m.base_vx) + jitter[i, 1]
            m.y += m.vy
            m.x += m.vx
            if m.changing:
                m.cell.theta += m.omega
                # Mean-reverting, so brightness wanders without drifting off.
                m.cell.brightness *= math.exp(
                    twinkle[i] - 0.05 * math.log(m.cell.brightness / m.base_brightness)
                )
            if not (lo <= m.y < lo + span_y and lo <= m.x < lo + span_x):
                # Out beyond the border: a new cell enters from the opposite side.
                self._movers[i] = self._spawn(
                    (m.y - lo) % span_y + lo, (m.x - lo) % span_x + lo, m.cell.defocus > 0
                )

    def _camera(self, nuc: np.ndarray, cyto: np.ndarray | None) -> np.ndarray:
        """Composed planes → noisy uint8/uint16 frame, with OpenCV passes over whole frames."""
        cv2, o = self._cv2, self._optics
        h, w = nuc.shape
        nuc = _with_haze(nuc, o, cv2)
        depth = cv2.CV_8U if o.dtype is np.uint8 else cv2.CV_16U
        n_ch = len(o.nuc_w)
        offsets = self._rng.integers(0, self._NOISE_PAD + 1, (n_ch, 2))
        signs = np.where(self._rng.random(n_ch) < 0.5, -1.0, 1.0)
        out = []
        for c in range(n_ch):
            signal = cv2.multiply(_unlit(nuc, cyto, o, c, cv2), self._illum_adu)
            cv2.add(signal, self._bg_adu[c], dst=signal)
            noise = cv2.addWeighted(signal, self._gain, signal, 0.0, self._var0)
            cv2.sqrt(noise, dst=noise)
            oy, ox = offsets[c]
            cv2.multiply(noise, self._noise[oy : oy + h, ox : ox + w], dst=noise)
            cv2.scaleAdd(noise, signs[c], signal, dst=signal)
            # OpenCV rounds and saturates when it writes the integer result.
            frame = cv2.add(signal, o.adu_offset, dtype=depth)
            if o.max_adu < np.iinfo(o.dtype).max:
                np.minimum(frame, o.max_adu, out=frame)
            out.append(frame)
        return out[0] if len(out) == 1 else cv2.merge(out)

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The next ``(frame, mask)``: frame uint8/uint16 (H, W) or (H, W, 3) RGB, mask uint8
        (H, W) 0/255. Both are new arrays the caller may keep."""
        nuc, cyto, mask = self._compose()
        frame = self._camera(nuc, cyto)
        self._frame += 1
        self._step()
        return frame, mask

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.read()
