"""PSF matching of mosaics to the PSF of the broadest band (every JWST NIRCam band to F444W, Pearce-Casey et al.
2023, before detection and photometry), from the empirical PSFs of :mod:`workflow_scripts.data.psf`.

Three plain functions:

1. :func:`matching_kernel_to` builds, with :func:`photutils.psf_matching.make_kernel`, the kernel ``k`` (odd
   square, sum 1) with ``source * k ~= target`` from two native-pixel PSF stamps of the same pixel scale, e.g.
   :attr:`workflow_scripts.data.psf.EPSFResult.psf` of a band and of F444W (:func:`kernel_between` does it for two
   :class:`~workflow_scripts.data.psf.EPSFResult`). Both are *effective* PSFs (optics convolved with the pixel),
   which is what a star looks like in the mosaic, so the kernel acts on mosaic pixels directly. The stamps are
   zero-padded to a common odd size (the larger one by default), their peak put on the central pixel and
   normalised to sum 1. A source broader than the target cannot be sharpened: :class:`PSFMatchError` naming both
   FWHMs. A source of the target's FWHM (within :data:`SAME_FWHM_TOLERANCE`, e.g. the target band itself) gets
   the delta kernel, so that band is left untouched.
2. :func:`match_image` convolves an image with the kernel (overlap-add FFT, float32) and propagates its rms map:
   for independent pixel noise the matched variance is ``conv(rms**2, k**2)``. The matched noise is correlated
   from pixel to pixel: the per-pixel rms is right, but the error of a sum over N pixels is no longer
   ``sqrt(N) * rms`` (:func:`noise_gain` gives ``sqrt(sum k**2)``, the rms ratio for uniform white noise).
3. :func:`match_mosaic` does it for a :class:`~workflow_scripts.io.Mosaic` and records the matching in the header
   (PSFMATCH, PSFFWHM, PSFKSIZE, PSFKGAIN); WCS, PHOTZP, BUNIT, FILTER and every other key are kept.

Window
------
The Fourier ratio ``T / S`` is tapered by :func:`default_window`, a
:class:`~photutils.psf_matching.SplitCosineBellWindow` scaled to the *target* PSF: 1 up to
``WINDOW_FLAT / FWHM_target`` cycles per pixel, a cosine down to 0 at ``WINDOW_ZERO / FWHM_target``. For F444W at
0.03"/px (effective FWHM ~4.9 px) that is flat to 0.20 cycles/px, where a Moffat target's OTF is still ~3 % of its
peak (cutting there would broaden the matched PSF), and zero from 0.29 cycles/px, beyond an Airy F444W's
diffraction cut-off (D / lambda = 0.21 cycles/px) and where a Moffat's OTF is < 0.3 %: there the ratio only carries
the noise of an empirical PSF divided by a small source OTF. Measured on GalSim NIRCam-like PSFs
(tests/test_psf_matching.py): matched FWHM 0-1 % above F444W's for true and noisy PSFs (the taper costs ~1 % on a
Moffat, nothing on an Airy disc); photutils' own example window (TopHat 0.35, the degradation's default) broadens
it by 10 % and a Hann window by 9 %; with stamps of 3e-4 noise per pixel no window (a Tukey taper reaching Nyquist)
lets the stamp noise through: 9x (3x) the matched noise of F356W, against up to +25 % with this one.

Stamp size
----------
The kernel only knows the PSFs inside their stamps. With the EPSF's 25 px (0.75") the F444W light beyond the stamp
(1.3 % of a Moffat(3)'s flux, ~8 % of an Airy disc's) is not reproduced: a matched star keeps its total flux but
holds it closer in, +0.4-0.9 % (Moffat) and +1.4-5 % (Airy, F356W-F115W) in a 0.15" aperture against the true
F444W star. Stamps holding the whole PSF (the simulator's truth PSFs, 59 px for F444W) bring this to -0.2 %.
Measured stamps larger than 25 px do not cure it on a field with few stars: their outer wings are noisy (on the
demo's CEERS field, 41 px stamps bring three bands within 0.4 % and put two 2-2.6 % off). :func:`with_moffat_wings`
instead extends each measured stamp with the wings of a circular Moffat fitted to it (inside the stamp the
measured PSF, scaled down by the Moffat's share beyond the stamp; outside, the Moffat), so the kernel can carry
light out to the larger stamp (``pearce_casey23.psf_wings``).

Bad pixels
----------
Non-finite image pixels and pixels whose rms is non-finite or <= 0 (how drizzled mosaics mark no coverage, as in
:func:`workflow_scripts.data.psf.prepare_image`) are bad. They are set to 0 before the convolution, and every
output pixel whose kernel footprint puts more than ``max_lost_weight`` (default 1e-3) of the kernel's absolute
weight on bad pixels or beyond the image edge is **NaN** in the matched image and rms (bad pixels themselves
always are). So NaNs never spread beyond the kernel footprint (half a kernel side), and a valid matched pixel
misses at most 0.1 % of the kernel. The delta kernel returns exact copies of the inputs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from workflow_scripts.data.psf import EPSFResult, PSFError, fit_moffat, measure_fwhm
from workflow_scripts.errors import PipelineError
from workflow_scripts.imaging.degrade import _fit_to_size
from workflow_scripts.io import Mosaic

# photutils and scipy.signal are imported in the functions that use them (~3 s per process, as in .degrade)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_LOST_WEIGHT",
    "REGULARIZATION",
    "SAME_FWHM_TOLERANCE",
    "WINDOW_FLAT",
    "WINDOW_ZERO",
    "PSFMatchError",
    "default_window",
    "delta_kernel",
    "with_moffat_wings",
    "is_delta_kernel",
    "kernel_between",
    "match_image",
    "match_mosaic",
    "matching_kernel_to",
    "noise_gain",
    "prepare_psf",
]

#: the window is 1 up to WINDOW_FLAT / FWHM_target cycles per pixel (target OTF ~3 % of its peak for a Moffat)
WINDOW_FLAT = 1.0
#: ... and 0 from WINDOW_ZERO / FWHM_target cycles per pixel (past an Airy's cut-off, a Moffat's OTF < 0.3 %: only
#: the noise of an empirical PSF is left there)
WINDOW_ZERO = 1.4
#: photutils' default: Fourier frequencies where |S| < 1e-4 max|S| are dropped from the ratio
REGULARIZATION = 1e-4
#: a source PSF whose FWHM is within this fraction of the target's is the target PSF (delta kernel); a broader
#: one is refused
SAME_FWHM_TOLERANCE = 0.01
#: output pixels whose kernel footprint puts more than this fraction of the kernel's |weight| on bad pixels or
#: beyond the image edge are NaN
MAX_LOST_WEIGHT = 1e-3
#: a kernel whose sum differs from 1 by more than this is refused (it would change the fluxes)
KERNEL_SUM_TOLERANCE = 1e-3


class PSFMatchError(PipelineError):
    """PSF matching is impossible or its inputs are bad (a source PSF broader than the target, bad stamps)."""


# ---------------------------------------------------------------------------------------------- kernels
def default_window(target_fwhm_px: float, size: int) -> Any:
    """The default window for a target PSF of ``target_fwhm_px`` (native pixels) on a ``size``-pixel kernel.

    A :class:`~photutils.psf_matching.SplitCosineBellWindow`, 1 below ``WINDOW_FLAT / target_fwhm_px`` and 0 above
    ``WINDOW_ZERO / target_fwhm_px`` cycles/px (see the module docstring). photutils measures the window radius in
    units of ``(size - 1) / 2`` frequency samples of ``1 / size`` cycles/px each. ``None`` (no window) when the
    target is so sharp that the flat part already reaches the Nyquist frequency.
    """
    if not (target_fwhm_px > 0) or size < 3:
        raise PSFMatchError(f"bad window inputs: target FWHM {target_fwhm_px} px, kernel size {size}")
    to_fraction = 2.0 * size / (size - 1.0)  # cycles/px -> photutils' fraction of the maximum radius
    beta = WINDOW_FLAT / target_fwhm_px * to_fraction
    if beta >= 1.0:
        return None
    from photutils.psf_matching import SplitCosineBellWindow

    alpha = min(WINDOW_ZERO / target_fwhm_px * to_fraction, 1.0) - beta
    return SplitCosineBellWindow(alpha=alpha, beta=beta)


def prepare_psf(psf: Any, name: str = "PSF") -> np.ndarray:
    """A PSF stamp as float64, checked (2-D, square, odd side, finite, positive sum), its brightest pixel moved
    onto the central pixel by a whole-pixel shift if it is elsewhere, normalised to sum 1."""
    arr = np.array(psf, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] % 2 == 0 or arr.shape[0] < 3:
        raise PSFMatchError(f"the {name} must be a square 2-D stamp with an odd side >= 3, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise PSFMatchError(f"the {name} has NaN or infinite pixels")
    total = float(arr.sum())
    if not total > 0:
        raise PSFMatchError(f"the {name} has no positive flux (sum {total:.4g})")
    c = arr.shape[0] // 2
    py, px = np.unravel_index(int(np.argmax(arr)), arr.shape)
    if (py, px) != (c, c):
        dy, dx = c - int(py), c - int(px)
        log.warning("%s: peak at (%d, %d), not on the central pixel (%d, %d): shifted by (%d, %d) px",
                    name, px, py, c, c, dx, dy)
        shifted = np.zeros_like(arr)
        n = arr.shape[0]
        src = (slice(max(0, -dy), min(n, n - dy)), slice(max(0, -dx), min(n, n - dx)))
        dst = (slice(max(0, dy), min(n, n + dy)), slice(max(0, dx), min(n, n + dx)))
        shifted[dst] = arr[src]
        arr = shifted
    return arr / arr.sum()


def with_moffat_wings(psf: Any, size: int, name: str = "PSF") -> np.ndarray:
    """A measured PSF stamp extended to ``size`` x ``size`` (odd, >= its side) with the wings of a circular Moffat
    fitted to it: inside the stamp the measured PSF times ``1 - f``, outside the Moffat, where ``f`` is the
    Moffat's share of the light beyond the stamp; sum 1. (Written here: photutils has no PSF extrapolation.)"""
    arr = prepare_psf(psf, name)
    n = arr.shape[0]
    if size % 2 == 0 or size < n:
        raise PSFMatchError(f"the {name} ({n} px) can only be extended to an odd size >= {n}, got {size}")
    if size == n:
        return arr
    try:
        gamma, alpha = fit_moffat(arr)
    except PSFError as exc:
        raise PSFMatchError(f"cannot fit a Moffat to the {name}: {exc}") from None
    if alpha <= 1.0:
        raise PSFMatchError(f"the {name}'s Moffat fit has alpha {alpha:.2f} <= 1 (infinite flux): no wings to add")
    c = size // 2
    yy, xx = np.mgrid[:size, :size].astype(np.float64) - c
    # per-pixel share of the total light of a unit-amplitude Moffat, whose integral is pi gamma^2 / (alpha - 1)
    moffat = (1.0 + (xx**2 + yy**2) / gamma**2) ** -alpha * (alpha - 1.0) / (math.pi * gamma**2)
    inside = (slice(c - n // 2, c + n // 2 + 1),) * 2
    out = moffat.copy()
    out[inside] = arr * float(moffat[inside].sum())  # the Moffat's share inside the stamp, 1 - f
    return out / out.sum()


def delta_kernel(size: int = 1) -> np.ndarray:
    """The identity kernel: 1 on the central pixel of a ``size`` x ``size`` (odd) array."""
    if size < 1 or size % 2 == 0:
        raise PSFMatchError(f"a kernel side must be odd and >= 1, got {size}")
    k = np.zeros((size, size), dtype=np.float64)
    k[size // 2, size // 2] = 1.0
    return k


def is_delta_kernel(kernel: np.ndarray, atol: float = 1e-12) -> bool:
    """Whether ``kernel`` is the identity (1 at the centre, 0 elsewhere, to ``atol``)."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        return False
    return bool(np.allclose(k, delta_kernel(k.shape[0]), rtol=0.0, atol=atol))


def _fmt_fwhm(fwhm_px: float, pixel_scale: float | None) -> str:
    return f"{fwhm_px * pixel_scale:.4f}\" = {fwhm_px:.3f} px" if pixel_scale else f"{fwhm_px:.3f} px"


def matching_kernel_to(source_psf: np.ndarray, target_psf: np.ndarray, *, window: Any = "default",
                       size: int | None = None, regularization: float = REGULARIZATION,
                       pixel_scale: float | None = None, same_tolerance: float = SAME_FWHM_TOLERANCE,
                       source_name: str = "source PSF", target_name: str = "target PSF") -> np.ndarray:
    """Kernel ``k`` (odd square, sum 1, float64) with ``source_psf * k ~= target_psf``.

    ``source_psf``, ``target_psf``: native-pixel effective PSF stamps (square, odd side, peak on the central
    pixel), of the same pixel scale; each is normalised to sum 1 and zero-padded (or centre-cropped) to ``size``
    (default: the larger side), which is the kernel's side. ``window``: ``"default"`` (:func:`default_window` for
    the target's FWHM), ``None`` for none, or any photutils window. ``pixel_scale`` (arcsec/px) only makes the
    messages give arcsec too; ``source_name`` / ``target_name`` name the PSFs in them (e.g. the bands).

    FWHMs are measured by :func:`workflow_scripts.data.psf.measure_fwhm` (Moffat fit). Raises
    :class:`PSFMatchError` naming both FWHMs when the source is broader than the target by more than
    ``same_tolerance``; returns the delta kernel when they agree within it (or the stamps are identical).
    """
    src = prepare_psf(source_psf, source_name)
    tgt = prepare_psf(target_psf, target_name)
    n = int(size) if size is not None else max(src.shape[0], tgt.shape[0])
    if n % 2 == 0 or n < 3:
        raise PSFMatchError(f"the kernel size must be odd and >= 3, got {n}")
    src, tgt = _fit_to_size(src, n), _fit_to_size(tgt, n)
    if np.allclose(src, tgt, rtol=0.0, atol=1e-12):
        return delta_kernel(n)
    try:
        fwhm_s, fwhm_t = measure_fwhm(src), measure_fwhm(tgt)
    except PSFError as exc:
        raise PSFMatchError(f"cannot measure the FWHM of the {source_name} or {target_name}: {exc}") from None
    if fwhm_s > fwhm_t * (1.0 + same_tolerance):
        raise PSFMatchError(
            f"the {source_name} (FWHM {_fmt_fwhm(fwhm_s, pixel_scale)}) is broader than the {target_name} (FWHM "
            f"{_fmt_fwhm(fwhm_t, pixel_scale)}): a band cannot be sharpened; match to the broadest band")
    if fwhm_s >= fwhm_t * (1.0 - same_tolerance):
        log.info("%s and %s have the same FWHM (%s vs %s, within %.0f %%): delta kernel", source_name, target_name,
                 _fmt_fwhm(fwhm_s, pixel_scale), _fmt_fwhm(fwhm_t, pixel_scale), 100 * same_tolerance)
        return delta_kernel(n)
    from photutils.psf_matching import make_kernel

    win = default_window(fwhm_t, n) if isinstance(window, str) and window == "default" else window
    try:
        kernel = make_kernel(src, tgt, window=win, regularization=regularization)
    except ValueError as exc:
        raise PSFMatchError(f"photutils could not build the kernel from the {source_name} to the {target_name}: "
                            f"{exc}") from None
    kernel = np.asarray(kernel, dtype=np.float64)
    if not np.isfinite(kernel).all():
        raise PSFMatchError(f"the kernel from the {source_name} to the {target_name} has non-finite values")
    return kernel / kernel.sum()


def kernel_between(source: EPSFResult, target: EPSFResult, **kwargs: Any) -> np.ndarray:
    """:func:`matching_kernel_to` for two empirical PSFs (their native stamps; pixel scales must agree)."""
    if not math.isclose(source.pixel_scale, target.pixel_scale, rel_tol=1e-6):
        raise PSFMatchError(f"band {source.band} ({source.pixel_scale}\"/px) and band {target.band} "
                            f"({target.pixel_scale}\"/px) are on different pixel scales: resample them first")
    kwargs.setdefault("pixel_scale", source.pixel_scale)
    kwargs.setdefault("source_name", f"{source.band} PSF")
    kwargs.setdefault("target_name", f"{target.band} PSF")
    return matching_kernel_to(source.psf, target.psf, **kwargs)


def _check_kernel(kernel: Any) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise PSFMatchError(f"the kernel must be a square 2-D array with an odd side, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise PSFMatchError("the kernel has NaN or infinite values")
    total = float(k.sum())
    if abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
        raise PSFMatchError(f"the kernel sums to {total:.6g}, not 1 (tolerance {KERNEL_SUM_TOLERANCE:g}): it would "
                            "change the fluxes")
    return k


def noise_gain(kernel: np.ndarray) -> float:
    """``sqrt(sum k**2)``: matched / original per-pixel rms for uniform white noise."""
    return float(np.sqrt((np.asarray(kernel, dtype=np.float64) ** 2).sum()))


# ----------------------------------------------------------------------------------------------- images
def match_image(image: np.ndarray, rms: np.ndarray | None, kernel: np.ndarray, *,
                max_lost_weight: float = MAX_LOST_WEIGHT) -> tuple[np.ndarray, np.ndarray | None]:
    """PSF-match an image and its rms map: ``(conv(image, k), sqrt(conv(rms**2, k**2)))``, float32, same shape.

    ``rms`` may be None (then None comes back). Bad pixels (non-finite image, rms non-finite or <= 0) count as 0;
    output pixels that take more than ``max_lost_weight`` of the kernel's absolute weight from bad pixels or from
    beyond the image edge are NaN in both outputs, and so are the bad pixels (see the module docstring). The
    delta kernel returns float32 copies of the inputs unchanged.
    """
    k = _check_kernel(kernel)
    img = np.asarray(image)
    if img.ndim != 2:
        raise PSFMatchError(f"the image must be 2-D, got shape {img.shape}")
    if rms is not None and np.shape(rms) != img.shape:
        raise PSFMatchError(f"rms map shape {np.shape(rms)} differs from image shape {img.shape}")
    if not 1e-5 <= max_lost_weight < 1:  # below ~1e-5 the float32 FFT's rounding would decide
        raise PSFMatchError(f"max_lost_weight must be in [1e-5, 1), got {max_lost_weight}")
    if is_delta_kernel(k):
        return (np.array(img, dtype=np.float32, copy=True),
                None if rms is None else np.array(rms, dtype=np.float32, copy=True))

    from scipy.signal import oaconvolve

    data = np.asarray(img, dtype=np.float32)
    good = np.isfinite(data)
    if rms is not None:
        noise = np.asarray(rms, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            good &= np.isfinite(noise) & (noise > 0)
    k32 = k.astype(np.float32)
    out = oaconvolve(np.where(good, data, np.float32(0.0)), k32, mode="same").astype(np.float32, copy=False)
    kabs = np.abs(k)
    covered = oaconvolve(good.astype(np.float32), (kabs / kabs.sum()).astype(np.float32), mode="same")
    bad_out = ~good | (covered < np.float32(1.0 - max_lost_weight))
    out[bad_out] = np.nan
    rms_out = None
    if rms is not None:
        var = oaconvolve(np.where(good, noise * noise, np.float32(0.0)), (k * k).astype(np.float32), mode="same")
        rms_out = np.sqrt(np.clip(var, 0.0, None)).astype(np.float32, copy=False)
        rms_out[bad_out] = np.nan
    n_bad_in, n_bad_out = int((~good).sum()), int(bad_out.sum())
    if n_bad_out:
        log.info("PSF matching: %d bad input pixels -> %d NaN output pixels (kernel %d px)", n_bad_in, n_bad_out,
                 k.shape[0])
    return out, rms_out


def match_mosaic(mosaic: Mosaic, kernel: np.ndarray, target_band: str, target_fwhm_arcsec: float, *,
                 max_lost_weight: float = MAX_LOST_WEIGHT) -> Mosaic:
    """A new :class:`~workflow_scripts.io.Mosaic`: image and rms matched with ``kernel`` (:func:`match_image`).

    The header is a copy of the input's (WCS, PHOTZP, BUNIT, FILTER, provenance kept) plus PSFMATCH (the target
    band), PSFFWHM (its FWHM, arcsec), PSFKSIZE (kernel side, px) and PSFKGAIN (:func:`noise_gain`). A mosaic
    that already has PSFMATCH is refused unless the kernel is the delta. The input mosaic is not modified.
    """
    if not target_fwhm_arcsec > 0:
        raise PSFMatchError(f"the target FWHM must be positive, got {target_fwhm_arcsec}")
    band = str(mosaic.header.get("FILTER", "?"))
    k = _check_kernel(kernel)
    done = mosaic.header.get("PSFMATCH")
    if done is not None and not is_delta_kernel(k):
        raise PSFMatchError(f"band {band} is already PSF-matched to {done}: match the original mosaic to "
                            f"{target_band} instead (convolving twice would over-blur it)")
    data, rms = match_image(mosaic.data, mosaic.rms, k, max_lost_weight=max_lost_weight)
    header = mosaic.header.copy()
    header["PSFMATCH"] = (str(target_band), "PSF matched to this band")
    header["PSFFWHM"] = (float(target_fwhm_arcsec), "arcsec, FWHM of the matched PSF")
    header["PSFKSIZE"] = (int(k.shape[0]), "px, side of the PSF-matching kernel")
    header["PSFKGAIN"] = (round(noise_gain(k), 6), "white-noise rms gain of the kernel, sqrt(sum k^2)")
    log.info("band %s matched to %s (FWHM %.4g\"), kernel %d px, noise gain %.3f", band, target_band,
             target_fwhm_arcsec, k.shape[0], noise_gain(k))
    return Mosaic(data=data, wcs=mosaic.wcs.deepcopy(), header=header, rms=rms)
