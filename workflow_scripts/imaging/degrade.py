"""Degrade high-resolution (HST) cutouts to ground-based (Subaru HSC-like) quality, Hemmati et al. 2022 sec. 2.

Three steps, each a plain function, vectorised over a cube ``(N, n_bands, H, W)`` of cutouts:

1. **PSF matching.** :func:`matching_kernel` builds, with :func:`photutils.psf_matching.make_kernel`, the kernel that
   turns the measured (empirical) survey PSF into the target PSF, both sampled on the high-resolution grid.
   Both PSFs are *effective* PSFs (optics convolved with the pixel response): the empirical PSF of
   :mod:`workflow_scripts.data.psf` already is one, and the target is drawn with GalSim's default pixel-integrated
   method on the high-resolution pixels. The target profile is a Moffat with slope :data:`TARGET_MOFFAT_BETA`
   (= 3; the real HSC i PSF is close to a Moffat, Bosch et al. 2018) or a Gaussian (``profile="gaussian"``), of
   FWHM ``target_fwhm_arcsec`` (0.6" for HSC, from the survey description).
2. **Flux-conserving rebinning** (:func:`rebin_flux`): an exact area-overlap linear operator ``R`` of shape
   ``(n_out, n_in)``, ``R[i, j]`` = fraction of high-resolution pixel ``j`` that lies inside low-resolution pixel
   ``i``; ``low = R @ X @ R.T``. Because the high-resolution pixels already integrate the light, summing them
   over a low-resolution pixel gives the light that falls in it: the result is the target effective PSF
   sampled on the low-resolution grid (up to a small extra blur where a low-resolution pixel edge cuts a
   high-resolution pixel in two, see :class:`RebinGeometry`).
3. **Noise** (:func:`add_noise`): white Gaussian noise of the per-pixel sigma implied by the target survey's
   5-sigma depth (:func:`noise_sigma`), expressed in the *high-resolution band's* image units (its AB zeropoint),
   so low- and high-resolution fluxes stay directly comparable (a galaxy's low-resolution pixels sum to its
   high-resolution flux).

Geometry and pixel coordinates
------------------------------
All pixel coordinates in this package are 0-based with pixel *centres* at integers (the numpy/astropy
``origin=0`` convention): pixel ``j`` covers ``[j - 0.5, j + 0.5]``. The low-resolution grid is centred on the
high-resolution cutout: the centre of the ``n_out``-pixel grid, ``(n_out - 1) / 2``, falls on the centre of the
``n_in``-pixel cutout, ``(n_in - 1) / 2``, and one low-resolution pixel spans ``factor`` high-resolution pixels.
For 64 -> 21 at factor 3 the low-resolution grid covers high-resolution coordinates ``[0, 63]``: half of the
first and half of the last high-resolution row and column fall outside it (light there is not kept).
:func:`hires_to_lowres` / :func:`lowres_to_hires` map positions between the grids:
``x_lo = (x_hi - (n_in - 1) / 2) / factor + (n_out - 1) / 2``.

Noise budget
------------
The high-resolution image's own noise survives the convolution and rebinning (as correlated noise):
:func:`residual_sigma` propagates a white per-pixel sigma through the kernel and the rebinning. At GOODS-S depth
it is ~1/5 of the HSC sigma in F775W and ~1/2 in F160W (measured on the embedded field). By default, like the
paper, the full target sigma is added; give ``hires_sigma`` to :func:`degrade` to add only the quadrature
difference, so the *total* per-pixel noise equals the target's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

# galsim, photutils and scipy.signal are imported in the functions that use them: together ~3 s per process, paid
# by every job that imports this module only for its geometry or to read stamps (figures, inference, detection)

from workflow_scripts.errors import PipelineError
from workflow_scripts.surveys import Survey
from workflow_scripts.imaging.stamps import nonfinite_stamps

log = logging.getLogger(__name__)

__all__ = [
    "DegradeError",
    "TARGET_MOFFAT_BETA",
    "KERNEL_SIZE",
    "DEFAULT_WINDOW_BETA",
    "target_psf_image",
    "matching_kernel",
    "RebinGeometry",
    "rebin_matrix",
    "rebin_flux",
    "hires_to_lowres",
    "lowres_to_hires",
    "noise_sigma",
    "add_noise",
    "residual_sigma",
    "integer_factor",
    "degrade",
]

#: Moffat slope of the target (HSC-like) PSF; HSC PSFs are close to Moffat beta ~ 3 (Bosch et al. 2018, PASJ 70, S5)
TARGET_MOFFAT_BETA = 3.0
#: side (hi-res pixels, odd) of the matching kernel: 63 px = 3.8" covers a 64-px cutout, ~6 FWHM of a 0.6" PSF
KERNEL_SIZE = 63
#: TopHatWindow diameter (fraction of the kernel array) on the Fourier ratio; a 0.6" target carries < 1e-4 of its
#: power beyond it at 0.06"/px, so it only removes the noise of an empirical PSF (photutils' own example value)
DEFAULT_WINDOW_BETA = 0.35
#: regularisation of the Fourier ratio (photutils default: frequencies where |S| < 1e-4 max|S| are dropped)
KERNEL_REGULARIZATION = 1e-4
#: a source PSF whose sum differs from 1 by more than this is refused (it must be normalised)
PSF_SUM_TOLERANCE = 1e-3
#: cutouts per FFT batch in :func:`degrade` (bounds memory: 128 x 7 bands x 126 x 64 complex64 ~ 60 MB per array)
DEFAULT_BATCH = 128
#: the low-/high-resolution pixel-scale ratio must be this close to an integer to be treated as one
FACTOR_INTEGER_TOLERANCE = 1e-6

PROFILES = ("moffat", "gaussian")


class DegradeError(PipelineError):
    """Bad input to the degradation (PSF not normalised, wrong shapes, impossible geometry)."""


# ------------------------------------------------------------------------------------------- PSF matching
def _target_profile(fwhm_arcsec: float, profile: str, beta: float) -> Any:
    import galsim

    if profile == "moffat":
        return galsim.Moffat(beta=beta, fwhm=fwhm_arcsec)
    if profile == "gaussian":
        return galsim.Gaussian(fwhm=fwhm_arcsec)
    raise DegradeError(f"unknown target PSF profile {profile!r} (use one of {', '.join(PROFILES)})")


def target_psf_image(fwhm_arcsec: float, pixel_scale: float, size: int, *, profile: str = "moffat",
                     beta: float = TARGET_MOFFAT_BETA) -> np.ndarray:
    """Target effective PSF (pixel-integrated) on a ``size`` x ``size`` grid of ``pixel_scale``, centred, sum 1."""
    if fwhm_arcsec <= 0 or pixel_scale <= 0:
        raise DegradeError(f"target FWHM ({fwhm_arcsec}) and pixel scale ({pixel_scale}) must be positive")
    img = _target_profile(fwhm_arcsec, profile, beta).drawImage(nx=size, ny=size, scale=pixel_scale).array
    img = np.asarray(img, dtype=np.float64)
    return img / img.sum()


def _check_psf(psf: Any, name: str = "source PSF") -> np.ndarray:
    arr = np.asarray(psf, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] % 2 == 0:
        raise DegradeError(f"the {name} must be a square 2-D array with an odd side, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DegradeError(f"the {name} has NaN or infinite pixels")
    total = float(arr.sum())
    if abs(total - 1.0) > PSF_SUM_TOLERANCE:
        raise DegradeError(f"the {name} is not normalised: it sums to {total:.6g}, expected 1 "
                           f"(tolerance {PSF_SUM_TOLERANCE:g}); divide it by its sum first")
    return arr


def _fit_to_size(psf: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (or centre-crop and renormalise) an odd square PSF to ``size`` x ``size``."""
    n = psf.shape[0]
    if n == size:
        return psf
    if n < size:
        pad = (size - n) // 2
        return np.pad(psf, pad)
    cut = (n - size) // 2
    out = psf[cut:cut + size, cut:cut + size]
    return out / out.sum()


def matching_kernel(source_psf: np.ndarray, target_fwhm_arcsec: float, pixel_scale: float, *,
                    size: int = KERNEL_SIZE, profile: str = "moffat", beta: float = TARGET_MOFFAT_BETA,
                    window: Any = "default", regularization: float = KERNEL_REGULARIZATION) -> np.ndarray:
    """Kernel (``size`` x ``size``, sum 1) that turns ``source_psf`` into the target PSF, both at ``pixel_scale``.

    ``source_psf``: the measured effective PSF of the high-resolution band (odd square array, sum 1, centred on
    its central pixel), e.g. :attr:`workflow_scripts.data.psf.EPSFResult.psf`; it is zero-padded to ``size``.
    The target is a pixel-integrated Moffat (``beta``) or Gaussian of ``target_fwhm_arcsec`` (see
    :func:`target_psf_image`). ``window``: a photutils window, ``None`` for none, or ``"default"`` for
    ``TopHatWindow(DEFAULT_WINDOW_BETA)``. Computed by :func:`photutils.psf_matching.make_kernel`.
    """
    if size % 2 == 0 or size < 3:
        raise DegradeError(f"the kernel size must be odd and >= 3, got {size}")
    src = _fit_to_size(_check_psf(source_psf), size)
    fwhm_src_px = _fwhm_halfmax(src)
    if target_fwhm_arcsec / pixel_scale <= fwhm_src_px:
        raise DegradeError(f"the target FWHM {target_fwhm_arcsec}\" ({target_fwhm_arcsec / pixel_scale:.2f} px) is "
                           f"not broader than the source PSF (~{fwhm_src_px:.2f} px): nothing to match")
    tgt = target_psf_image(target_fwhm_arcsec, pixel_scale, size, profile=profile, beta=beta)
    from photutils.psf_matching import TopHatWindow, make_kernel

    win = TopHatWindow(DEFAULT_WINDOW_BETA) if isinstance(window, str) and window == "default" else window
    kernel = make_kernel(src, tgt, window=win, regularization=regularization)
    return np.asarray(kernel, dtype=np.float64)


def _fwhm_halfmax(psf: np.ndarray) -> float:
    """Rough FWHM (pixels) from the area above half maximum (equivalent-circle diameter)."""
    area = float((psf >= 0.5 * psf.max()).sum())
    return 2.0 * math.sqrt(area / math.pi)


# ---------------------------------------------------------------------------------------------- rebinning
@dataclass(frozen=True)
class RebinGeometry:
    """How an ``n_in``-pixel high-resolution cutout maps onto an ``n_out``-pixel low-resolution grid.

    The two grids share their centre; one low-resolution pixel spans ``factor`` high-resolution pixels. Low-res
    pixel ``i`` covers high-res coordinates ``[c_in + (i - c_out - 1/2) f, c_in + (i - c_out + 1/2) f]`` with
    ``c = (n - 1) / 2``. Where such an edge cuts a high-res pixel (always, for 64 -> 21), that pixel is shared
    between two low-res pixels in proportion to the area: this conserves flux exactly and adds a small blur
    (variance 1/4 hi-res px^2 for factor 3: +0.7 % on the sigma of a 0.6" PSF).
    """

    n_in: int = 64
    n_out: int = 21
    factor: float = 3.0

    def __post_init__(self) -> None:
        if self.n_in < 1 or self.n_out < 1 or self.factor <= 0:
            raise DegradeError(f"bad rebin geometry n_in={self.n_in}, n_out={self.n_out}, factor={self.factor}")
        if self.n_out * self.factor > self.n_in + 1e-9:
            raise DegradeError(f"{self.n_out} low-res pixels of {self.factor} high-res pixels do not fit in a "
                               f"{self.n_in}-pixel cutout")

    @property
    def c_in(self) -> float:
        return (self.n_in - 1) / 2.0

    @property
    def c_out(self) -> float:
        return (self.n_out - 1) / 2.0

    def to_low(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        return ((np.asarray(x, dtype=np.float64) - self.c_in) / self.factor + self.c_out,
                (np.asarray(y, dtype=np.float64) - self.c_in) / self.factor + self.c_out)

    def to_high(self, x_lo: Any, y_lo: Any) -> tuple[np.ndarray, np.ndarray]:
        return ((np.asarray(x_lo, dtype=np.float64) - self.c_out) * self.factor + self.c_in,
                (np.asarray(y_lo, dtype=np.float64) - self.c_out) * self.factor + self.c_in)

    def matrix(self) -> np.ndarray:
        return rebin_matrix(self.n_in, self.factor, self.n_out)


def _geometry(n_in: int, factor: float, n_out: int | None) -> RebinGeometry:
    if n_out is None:
        n_out = int(math.floor(n_in / factor + 1e-9))
    return RebinGeometry(int(n_in), int(n_out), float(factor))


def rebin_matrix(n_in: int = 64, factor: float = 3.0, n_out: int | None = None) -> np.ndarray:
    """Area-overlap operator ``R`` (``n_out`` x ``n_in``): ``R[i, j]`` = fraction of hi-res pixel j in lo-res pixel i.

    ``n_out`` defaults to ``floor(n_in / factor)``; the grids are centred on each other (see :class:`RebinGeometry`).
    """
    geo = RebinGeometry(int(n_in), int(n_out if n_out is not None else math.floor(n_in / factor + 1e-9)),
                        float(factor))
    # pixel edges in hi-res coordinates where hi-res pixel j spans [j - 1/2, j + 1/2]
    lo_edges = geo.c_in + (np.arange(geo.n_out + 1) - geo.c_out - 0.5) * geo.factor
    hi_lo = np.arange(geo.n_in) - 0.5
    hi_hi = hi_lo + 1.0
    overlap = (np.minimum(lo_edges[1:, None], hi_hi[None, :]) - np.maximum(lo_edges[:-1, None], hi_lo[None, :]))
    return np.clip(overlap, 0.0, None)


def rebin_flux(image_stack: np.ndarray, factor: float = 3, out_size: int | None = 21) -> np.ndarray:
    """Flux-conserving rebinning of the last two axes: ``R @ X @ R.T`` (see :func:`rebin_matrix`).

    Works on any stack ``(..., n, n)``; returns ``(..., out_size, out_size)`` in the input's float dtype. The sum is
    conserved exactly over the covered area (for 64 -> 21: all but the outer half-pixel frame).
    """
    x = np.asarray(image_stack)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise DegradeError(f"rebin_flux needs square images in the last two axes, got shape {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    r = rebin_matrix(x.shape[-1], factor, out_size).astype(dtype)
    return np.matmul(np.matmul(r, x.astype(dtype, copy=False)), r.T)


def hires_to_lowres(x: Any, y: Any, *, n_in: int = 64, factor: float = 3.0,
                    n_out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """High-resolution cutout pixel coordinates -> low-resolution ones (0-based, centres at integers)."""
    return _geometry(n_in, factor, n_out).to_low(x, y)


def lowres_to_hires(x_lo: Any, y_lo: Any, *, n_in: int = 64, factor: float = 3.0,
                    n_out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`hires_to_lowres`."""
    return _geometry(n_in, factor, n_out).to_high(x_lo, y_lo)


# ------------------------------------------------------------------------------------------------- noise
def noise_sigma(target: Survey, target_band: str, zeropoint: float) -> float:
    """Per-pixel sigma of the target survey (its depth, pixel scale and depth aperture) in image units of AB
    zeropoint ``zeropoint`` (the high-resolution band's, so low-resolution fluxes stay in its units).

    The depth is converted to flux with ``zeropoint`` instead of the target's own: ``sigma = F_5sigma /
    (5 sqrt(N_aperture))``, ``F = 10^(-0.4 (depth - zeropoint))``, N_aperture in target pixels.
    """
    band = target.band(target_band)
    flux_5sigma = 10.0 ** (-0.4 * (band.depth - float(zeropoint)))
    return flux_5sigma / (5.0 * math.sqrt(target.aperture_pixels()))


def add_noise(lowres: np.ndarray, sigma: float | Sequence[float] | np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """``lowres`` plus white Gaussian noise; ``sigma`` a scalar or one value per band (axis -3). Returns a new array."""
    x = np.asarray(lowres)
    sig = np.asarray(sigma, dtype=np.float64)
    if np.any(~np.isfinite(sig)) or np.any(sig < 0):
        raise DegradeError(f"noise sigma must be finite and >= 0, got {sigma}")
    if sig.ndim == 1:
        if x.ndim < 3 or x.shape[-3] != sig.size:
            raise DegradeError(f"{sig.size} noise sigmas for images of shape {x.shape} (bands on axis -3)")
        sig = sig[:, None, None]
    elif sig.ndim > 1:
        raise DegradeError(f"sigma must be a scalar or a 1-D array (one per band), got shape {sig.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    noise = rng.standard_normal(x.shape, dtype=np.float64 if dtype == np.float64 else np.float32)
    return (x + (noise * sig).astype(dtype, copy=False)).astype(dtype, copy=False)


def residual_sigma(kernel: np.ndarray, hires_sigma: float, geometry: RebinGeometry | None = None) -> float:
    """Per-pixel sigma, after convolution with ``kernel`` and rebinning, of white hi-res noise of ``hires_sigma``.

    A low-resolution pixel is a linear combination of hi-res pixels with weights ``w = (r_i r_i^T) * kernel``
    (``r_i`` the rebin row of the central pixel); its variance is ``hires_sigma**2 * sum(w**2)``.
    """
    geo = geometry or RebinGeometry()
    r = geo.matrix()[geo.n_out // 2]
    from scipy.signal import fftconvolve

    w = fftconvolve(np.outer(r, r), np.asarray(kernel, dtype=np.float64), mode="full")
    return float(hires_sigma) * float(np.sqrt((w**2).sum()))


# --------------------------------------------------------------------------------------------- pipeline
def _as_cube(cube: np.ndarray) -> np.ndarray:
    x = np.asarray(cube)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise DegradeError(f"expected a cube (N, n_bands, n, n) of square cutouts, got shape {np.shape(cube)}")
    if x.shape[0] == 0:
        raise DegradeError("the cube of cutouts is empty")
    return x


def _per_band(value: Any, n_bands: int, name: str) -> list[Any]:
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return [value] * n_bands
    if isinstance(value, np.ndarray) and value.ndim == 3:
        items = list(value)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return [value] * n_bands
    if len(items) == 1:
        return items * n_bands
    if len(items) != n_bands:
        raise DegradeError(f"{len(items)} {name} for a cube with {n_bands} bands")
    return items


def integer_factor(target_scale: float, hires_scale: float) -> float:
    """``target_scale / hires_scale``, snapped to the nearest integer when it is one to rounding error."""
    if target_scale <= 0 or hires_scale <= 0:
        raise DegradeError(f"pixel scales must be positive (target {target_scale}, hi-res {hires_scale})")
    f = target_scale / hires_scale
    if abs(f - round(f)) < FACTOR_INTEGER_TOLERANCE * f:
        f = float(round(f))
    if f < 1:
        raise DegradeError(f"the target pixels ({target_scale}\") are smaller than the hi-res ones ({hires_scale}\")")
    return f


def degrade(cube: np.ndarray, source_psf: np.ndarray | Sequence[np.ndarray], hsc: Survey, hires_scale: float,
            rng: np.random.Generator | None, *, zeropoints: float | Sequence[float],
            target_bands: str | Sequence[str] | None = None, profile: str = "moffat",
            beta: float = TARGET_MOFFAT_BETA, kernel_size: int = KERNEL_SIZE, window: Any = "default",
            noise: bool = True, hires_sigma: float | Sequence[float] | None = None,
            batch_size: int = DEFAULT_BATCH, progress: bool = True,
            return_details: bool = False) -> np.ndarray | tuple[np.ndarray, Mapping[str, Any]]:
    """Degrade hi-res cutouts to the target survey: PSF-match, rebin (flux-conserving), add noise.

    ``cube``: (N, n_bands, n, n) (or (N, n, n)) in the hi-res image units; ``source_psf``: one effective PSF
    (odd square, sum 1, at ``hires_scale``) for all bands or one per band; ``hsc``: the target
    :class:`~workflow_scripts.surveys.Survey` (PSF FWHM, pixel scale, depth); ``zeropoints``: AB zeropoint of
    the cube's units per band (e.g. ``CutoutSet.zeropoints``); ``target_bands``: the target band matched to each
    hi-res band (default: the target's only band; required when it has several). ``rng`` may be None when
    ``noise`` is False. ``hires_sigma`` (per-pixel sigma of the hi-res cutouts, per band or one for all): when
    given, only ``sqrt(sigma_target^2 - residual^2)`` is added (:func:`residual_sigma`), so the total noise is
    the target's; by default the full target sigma is added (as in the paper). Returns the low-resolution cube
    (N, n_bands, m, m), float32, in the hi-res units, with ``m = floor(n / factor)`` and ``factor = hsc.pixel_scale / hires_scale``; with ``return_details`` also a dict
    with the kernels, the per-band target and added sigmas, the geometry and the target bands.
    """
    x = _as_cube(cube)
    n_bands = x.shape[1]
    if bad := nonfinite_stamps(x):
        raise DegradeError(f"degrade: {bad} (cutouts with NaNs must be dropped before)")
    factor = integer_factor(hsc.pixel_scale, hires_scale)
    geo = _geometry(x.shape[-1], factor, None)
    if target_bands is None:
        if len(hsc.bands) == 1:
            tbands = [hsc.band_names[0]] * n_bands
        else:
            raise DegradeError(f"survey {hsc.name} has bands {', '.join(hsc.bands)}: say which one each hi-res band "
                               "is degraded to (target_bands)")
    else:
        tbands = _per_band(target_bands, n_bands, "target bands")
    for b in tbands:
        hsc.band(b)  # raises a ConfigError naming the band if unknown
    psfs = _per_band(np.asarray(source_psf) if isinstance(source_psf, np.ndarray) else source_psf,
                     n_bands, "source PSFs")
    zps = np.atleast_1d(np.asarray(zeropoints, dtype=np.float64))
    if zps.ndim != 1 or zps.size not in (1, n_bands):
        raise DegradeError(f"{zps.size} zeropoints for a cube with {n_bands} bands")
    zps = np.broadcast_to(zps, (n_bands,))
    kernels = np.stack([
        matching_kernel(p, hsc.band(tb).psf_fwhm, hires_scale, size=kernel_size, profile=profile, beta=beta,
                        window=window)
        for p, tb in zip(psfs, tbands)
    ])
    from scipy.signal import fftconvolve

    low = np.empty((x.shape[0], n_bands, geo.n_out, geo.n_out), dtype=np.float32)
    r = geo.matrix().astype(np.float32)
    kb = kernels[None].astype(np.float32)
    starts = range(0, x.shape[0], batch_size)
    for s in tqdm(starts, disable=not progress, desc="degrade", unit="batch", mininterval=2.0):
        conv = fftconvolve(x[s:s + batch_size].astype(np.float32), kb, mode="same", axes=(-2, -1))
        low[s:s + batch_size] = np.matmul(np.matmul(r, conv), r.T)
    sigmas = np.array([noise_sigma(hsc, tb, zp) for tb, zp in zip(tbands, zps)])
    added = sigmas.copy()
    if hires_sigma is not None:
        hs = np.atleast_1d(np.asarray(hires_sigma, dtype=np.float64))
        if hs.ndim != 1 or hs.size not in (1, n_bands) or not (np.isfinite(hs).all() and (hs >= 0).all()):
            raise DegradeError(f"hires_sigma must be >= 0, one value or one per band ({n_bands}), got {hires_sigma}")
        resid = np.array([residual_sigma(k, h, geo) for k, h in zip(kernels, np.broadcast_to(hs, (n_bands,)))])
        if (resid > sigmas).any():
            log.warning("the hi-res noise after degradation (%s) already exceeds the target sigma (%s) in some band",
                        ",".join(f"{v:.4g}" for v in resid), ",".join(f"{v:.4g}" for v in sigmas))
        added = np.sqrt(np.clip(sigmas**2 - resid**2, 0.0, None))
    if noise:
        if rng is None:
            raise DegradeError("noise=True needs a numpy Generator (rng)")
        low = add_noise(low, added, rng)
    log.info("degraded %d cutouts x %d bands: %d -> %d px (factor %g), target FWHM %s\", sigma %s",
             x.shape[0], n_bands, x.shape[-1], geo.n_out, factor,
             ",".join(f"{hsc.band(b).psf_fwhm:g}" for b in tbands), ",".join(f"{s:.4g}" for s in sigmas))
    if return_details:
        return low, {"kernels": kernels, "sigma": sigmas, "sigma_added": added, "geometry": geo,
                     "target_bands": tbands, "factor": factor, "profile": profile, "beta": beta}
    return low
