"""Per-band empirical PSF from the stars of a mosaic (photutils EPSF), one code path for real and embedded data.

The stars are found in the image itself, not in a catalogue, so the same code serves GOODS-S (which has one),
CEERS and the XDF (which do not) and the embedded GalSim surveys:

1. :func:`classify_sources` detects every source with sep on the background-subtracted image and decides, for each,
   whether it is a usable PSF star (and if not, why not). :func:`find_stars` keeps the usable ones.
2. :func:`build_epsf` cuts stamps around the stars and runs :class:`photutils.psf.EPSFBuilder`
   (Anderson & King 2000) to get the *effective* PSF (optics convolved with the pixel response), oversampled.
3. :func:`estimate_psf` does both and raises :class:`PSFError` naming the band when too few stars survive.

Conventions
-----------
- ``EPSFResult.epsf`` is the oversampled effective PSF, normalised the photutils :class:`~photutils.psf.ImagePSF`
  way: ``epsf.sum() == oversampling**2``, i.e. it sums to 1 when sampled on the native pixel grid.
- ``EPSFResult.psf`` is the native-grid PSF: the effective PSF sampled at native pixel centres for a star centred on
  the central pixel of a ``stamp_size`` x ``stamp_size`` stamp (it is the image such a star would make, noise
  free), normalised to sum 1.
- FWHM (:func:`measure_fwhm`) is that of a circular 2-D Moffat profile (``astropy.modeling.functional_models.
  Moffat2D``, centre, amplitude, core width gamma and slope alpha free) least-squares fitted to the image values at
  their pixel centres: FWHM = 2 gamma sqrt(2^(1/alpha) - 1). On the native grid this is the FWHM of the effective
  PSF (it includes the pixel response); on the oversampled grid the fit uses coordinates in native pixels, so both
  numbers are in the same unit. All FWHM in results and files are in arcsec.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sep
from astropy.io import fits
from astropy.modeling import fitting
from astropy.modeling.functional_models import Moffat2D
from astropy.nddata import NDData, StdDevUncertainty
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from workflow_scripts.errors import BoundaryError, PipelineError
from workflow_scripts.io import Mosaic, atomic_path, provenance_header

__all__ = [
    "PSFError",
    "EPSFResult",
    "prepare_image",
    "classify_sources",
    "find_stars",
    "build_epsf",
    "estimate_psf",
    "fit_moffat",
    "measure_fwhm",
    "native_from_oversampled",
    "write_psf",
    "write_psf_summary",
    "psf_summary",
    "read_psf",
]

FWHM_METHOD = "Moffat2D fit"  # circular Moffat least-squares fit, see measure_fwhm


class PSFError(PipelineError):
    """The PSF of a band cannot be estimated (too few usable stars, or the EPSF build failed)."""


def _serial_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread: the EPSF fits solve thousands of tiny least-squares problems, where threaded
    BLAS only adds overhead, and its spinning threads slow the build ~10x on a busy node (measured 4 s vs 33-64 s
    for 40 stars next to a multi-threaded torch job on 2 cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ------------------------------------------------------------------------------------------------ results
@dataclass
class EPSFResult:
    """An empirical PSF of one band (see the module docstring for the normalisations)."""

    band: str
    epsf: np.ndarray                # oversampled effective PSF, sum == oversampling**2
    oversampling: int
    psf: np.ndarray                 # native grid, stamp_size x stamp_size, sum 1, centred on the central pixel
    pixel_scale: float              # arcsec per native pixel
    n_stars: int                    # stars that went into the EPSF
    n_candidates: int               # sources detected in the image
    fwhm: float                     # arcsec, Moffat fit of the native-grid effective PSF
    fwhm_oversampled: float         # arcsec, Moffat fit of the oversampled EPSF
    fwhm_guess: float | None = None  # arcsec, the configured (expected) FWHM
    iterations: int = 0
    converged: bool = False
    center_shift: float = float("nan")  # native px, largest star-centre move in the last iteration
    stars: pd.DataFrame = field(default_factory=pd.DataFrame)  # the stars used (x, y, flux, snr, r50, ...)

    @property
    def stamp_size(self) -> int:
        return int(self.psf.shape[0])

    def model(self) -> Any:
        """The EPSF as a photutils :class:`~photutils.psf.ImagePSF` (flux 1), e.g. for PSF photometry."""
        from photutils.psf import ImagePSF

        return ImagePSF(self.epsf, oversampling=self.oversampling)


# ----------------------------------------------------------------------------------------- image preparing
def prepare_image(mosaic: Mosaic, *, bkg_box: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background-subtracted image, 1-sigma noise map and bad-pixel mask of a mosaic.

    Bad pixels are non-finite image values, and (when the mosaic has an rms map) non-finite or non-positive rms,
    which is how drizzled mosaics mark pixels without coverage. Without an rms map the noise is sep's global rms.
    The background is sep's mesh background (``bkg_box`` pixels, 3x3 median filter), which removes sky residuals
    and smooth gradients but not the stars themselves.
    """
    # float32 in native byte order (sep rejects big-endian), so a 25k-pixel real mosaic stays affordable
    data = np.ascontiguousarray(mosaic.data, dtype=np.float32)
    bad = ~np.isfinite(data)
    rms = None
    if mosaic.rms is not None:
        rms = np.ascontiguousarray(mosaic.rms, dtype=np.float32)
        if rms.shape != data.shape:
            raise BoundaryError(f"rms map shape {rms.shape} differs from image shape {data.shape}")
        bad |= ~np.isfinite(rms) | (rms <= 0)
    if bad.all():
        raise BoundaryError("every pixel of the mosaic is NaN or has no valid rms")
    data = np.where(bad, np.float32(0.0), data)
    box = int(max(8, min(bkg_box, min(data.shape) // 4)))
    bkg = sep.Background(data, mask=bad, bw=box, bh=box, fw=3, fh=3)
    bkg.subfrom(data)  # in place
    data[bad] = 0.0
    if rms is None:
        rms = np.full(data.shape, float(bkg.globalrms), dtype=np.float32)
    rms = np.where(bad, np.float32(np.inf), rms)
    return data, rms, bad


# -------------------------------------------------------------------------------------------- star finding
def classify_sources(
    mosaic: Mosaic,
    rms: np.ndarray | None = None,
    *,
    pixel_scale: float,
    psf_fwhm_guess: float,
    stamp_size: int,
    snr_min: float,
    detect_thresh: float = 3.0,
    minarea: int = 5,
    max_ellipticity: float = 0.2,
    locus_width: float = 0.1,
    locus_max_halfwidth: float = 0.2,
    saturation: float | None = None,
    bkg_box: int = 64,
) -> pd.DataFrame:
    """Detect every source in the mosaic and say which are usable PSF stars.

    Returns one row per detection: ``x, y`` (0-based pixel centre, windowed), ``flux`` and ``flux_err`` (circular
    aperture of radius max(2 px, 1 FWHM)), ``snr``, ``peak`` (raw image value), ``r50`` (half-light radius in
    pixels within ``stamp_size/2``), ``ellipticity`` (1 - b/a), ``star`` (bool) and ``reject`` (the first cut that
    failed, '' for stars). ``rms`` overrides the mosaic's rms map. Cuts, in order:

    - ``flags``: sep flagged the object (truncated at the image edge, aperture hitting masked pixels, no
      half-light radius): its measurements are not trustworthy.
    - ``edge``: its stamp would leave the image or contain NaN / no-coverage pixels: the EPSF needs complete stamps.
    - ``saturated``: peak at or above ``saturation`` (default: header SATURATE): a clipped core is not the PSF.
    - ``snr``: aperture S/N below ``snr_min``: noisy stars add noise to the EPSF and scatter the size locus.
    - ``neighbour``: another detection's centre lies within the stamp (plus one FWHM): its light would be
      stacked into the PSF wings.
    - ``elongated``: ellipticity above ``max_ellipticity``: stars are round; elongated compact sources are close
      pairs, edge-on galaxies or artefacts.
    - ``size``: half-light radius off the stellar locus, the tight clump of the smallest bright objects (found as
      the smallest-radius dense clump in log r50, then sigma-clipped with a half-width of at most
      ``locus_max_halfwidth`` in ln r50): larger objects are galaxies or saturated cores, smaller ones cosmic rays
      and hot pixels.
    """
    if stamp_size % 2 == 0 or stamp_size < 5:
        raise PSFError(f"stamp_size must be odd and >= 5, got {stamp_size}")
    sub, noise, bad = prepare_image(mosaic, bkg_box=bkg_box)
    if rms is not None:
        noise = np.where(bad, np.float32(np.inf), np.ascontiguousarray(rms, dtype=np.float32))
        bad = bad | ~np.isfinite(noise) | (noise <= 0)
    fwhm_px = psf_fwhm_guess / pixel_scale
    half = stamp_size // 2

    err = np.where(bad, np.float32(0.0), noise)  # sep ignores masked pixels; keep the error array finite
    sep.set_extract_pixstack(int(min(max(300_000, sub.size // 20), 20_000_000)))
    sep.set_sub_object_limit(4096)
    objs = sep.extract(sub, detect_thresh, err=err, mask=bad, minarea=minarea,
                       deblend_nthresh=32, deblend_cont=0.005, clean=True)
    columns = ["x", "y", "flux", "flux_err", "snr", "peak", "r50", "ellipticity", "star", "reject"]
    if len(objs) == 0:
        return pd.DataFrame(columns=columns)

    x0 = np.asarray(objs["x"], dtype=np.float64)
    y0 = np.asarray(objs["y"], dtype=np.float64)
    sig = np.full(x0.shape, max(fwhm_px, 1.0) / 2.3548)
    x, y, _ = sep.winpos(sub, x0, y0, sig, mask=bad)
    moved = ~np.isfinite(x) | ~np.isfinite(y) | (np.hypot(x - x0, y - y0) > max(1.0, fwhm_px))
    x = np.where(moved, x0, x)
    y = np.where(moved, y0, y)

    r_ap = max(2.0, fwhm_px)
    flux, flux_err, aflag = sep.sum_circle(sub, x, y, r_ap, err=err, mask=bad, subpix=5)
    r50, rflag = sep.flux_radius(sub, x, y, np.full(x.shape, float(half)), 0.5, mask=bad, subpix=5)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(flux_err > 0, flux / flux_err, 0.0)
        ell = 1.0 - np.asarray(objs["b"]) / np.asarray(objs["a"])
    ny, nx = sub.shape
    xi = np.rint(x).astype(int)
    yi = np.rint(y).astype(int)
    raw = np.asarray(mosaic.data)
    peak = np.array([raw[j, i] if 0 <= j < ny and 0 <= i < nx else np.nan for i, j in zip(xi, yi)], dtype=float)

    reject = np.full(len(objs), "", dtype=object)

    def cut(mask: np.ndarray, why: str) -> None:
        reject[(reject == "") & mask] = why

    cut((np.asarray(objs["flag"]) & (sep.OBJ_TRUNC | sep.APER_HASMASKED | sep.OBJ_SINGU)) != 0, "flags")
    cut((aflag & sep.APER_HASMASKED) != 0, "flags")
    cut((rflag != 0) | ~(r50 > 0), "flags")  # no half-light radius could be measured
    # the stamp (same centre rounding as photutils.extract_stars) must lie inside the image and be all valid
    inside = (xi - half >= 0) & (xi + half < nx) & (yi - half >= 0) & (yi + half < ny)
    has_bad = np.array([not ok or bool(bad[j - half:j + half + 1, i - half:i + half + 1].any())
                        for ok, i, j in zip(inside, xi, yi)], dtype=bool)
    cut(has_bad, "edge")
    if saturation is None and "SATURATE" in mosaic.header:
        saturation = float(mosaic.header["SATURATE"])
    if saturation is not None:
        cut(~(peak < saturation), "saturated")
    cut(~(snr >= snr_min), "snr")
    # isolation: any other detection whose centre falls within the stamp grown by one FWHM
    reach = half + max(1.0, fwhm_px)
    todo = np.flatnonzero(reject == "")
    if len(todo):
        from scipy.spatial import cKDTree

        tree = cKDTree(np.column_stack([x0, y0]))
        for k in todo:
            near = tree.query_ball_point([x[k], y[k]], r=reach, p=np.inf)
            if len(near) > 1:
                reject[k] = "neighbour"
    cut(~(ell <= max_ellipticity), "elongated")
    pool = np.flatnonzero(reject == "")
    on_locus = _stellar_locus(np.asarray(r50)[pool], locus_width, locus_max_halfwidth)
    reject[pool[~on_locus]] = "size"

    return pd.DataFrame({
        "x": x, "y": y, "flux": flux, "flux_err": flux_err, "snr": snr, "peak": peak,
        "r50": r50, "ellipticity": ell, "star": reject == "", "reject": reject.astype(str),
    })


def _stellar_locus(r50: np.ndarray, width: float, max_halfwidth: float) -> np.ndarray:
    """Which sizes belong to the stellar locus: the smallest-radius dense clump in ln r50, sigma-clipped.

    Stars are the smallest resolved objects and, being all the same shape, form a tight clump; galaxies spread
    over larger radii. A clump counts as dense with at least min(5, densest count) members within +-``width``.
    """
    n = len(r50)
    if n == 0:
        return np.zeros(0, dtype=bool)
    logr = np.log(r50)
    counts = (np.abs(logr[:, None] - logr[None, :]) < width).sum(axis=1)
    need = max(3, min(5, int(counts.max())))
    if counts.max() < 3:
        return np.zeros(n, dtype=bool)
    dense = np.flatnonzero(counts >= need)
    centre = logr[dense[np.argmin(logr[dense])]]
    # walk to the clump's middle, then clip around it with a robust width
    for _ in range(20):
        sel = np.abs(logr - centre) < width
        new = float(np.median(logr[sel]))
        if abs(new - centre) < 1e-4:
            break
        centre = new
    halfwidth = width
    for _ in range(10):
        sel = np.abs(logr - centre) <= halfwidth
        centre = float(np.median(logr[sel]))
        mad = 1.4826 * float(np.median(np.abs(logr[sel] - centre)))
        new = min(max(3.0 * mad, 0.05), max_halfwidth)
        if abs(new - halfwidth) < 1e-4:
            break
        halfwidth = new
    return np.abs(logr - centre) <= halfwidth


def find_stars(
    mosaic: Mosaic,
    rms: np.ndarray | None = None,
    *,
    pixel_scale: float,
    psf_fwhm_guess: float,
    stamp_size: int,
    snr_min: float,
    max_stars: int | None = 300,
    **kwargs: Any,
) -> pd.DataFrame:
    """Usable PSF stars of a mosaic (see :func:`classify_sources` for the cuts), brightest first.

    At most ``max_stars`` are kept: the EPSF cost grows with the number of stars and a few hundred already beat
    down its noise. Extra keyword arguments go to :func:`classify_sources`.
    """
    table = classify_sources(mosaic, rms, pixel_scale=pixel_scale, psf_fwhm_guess=psf_fwhm_guess,
                             stamp_size=stamp_size, snr_min=snr_min, **kwargs)
    stars = table[table["star"]].sort_values("flux", ascending=False)
    if max_stars is not None:
        stars = stars.head(max_stars)
    stars = stars.reset_index(drop=True)
    stars.attrs["n_detected"] = len(table)
    stars.attrs["rejected"] = {k: int(v) for k, v in table.loc[~table["star"], "reject"].value_counts().items()}
    return stars


# ------------------------------------------------------------------------------------------------- EPSF
def _odd_at_least(value: float, minimum: int) -> int:
    n = max(minimum, int(math.ceil(value)))
    return n if n % 2 else n + 1


def native_from_oversampled(epsf: np.ndarray, oversampling: int, stamp_size: int) -> np.ndarray:
    """Sample an oversampled EPSF at native pixel centres around its central pixel; return it normalised to 1.

    The EPSF already contains the pixel response, so sampling (not integrating) gives the image of a star
    centred on the stamp's central pixel.
    """
    ny, nx = epsf.shape
    cy, cx = (ny - 1) // 2, (nx - 1) // 2
    half = stamp_size // 2
    if cy - half * oversampling < 0 or cx - half * oversampling < 0:
        raise PSFError(f"an EPSF of shape {epsf.shape} at oversampling {oversampling} cannot fill a "
                       f"{stamp_size}-pixel native stamp")
    iy = cy + oversampling * np.arange(-half, half + 1)
    ix = cx + oversampling * np.arange(-half, half + 1)
    native = np.asarray(epsf, dtype=np.float64)[np.ix_(iy, ix)]
    total = native.sum()
    if not np.isfinite(total) or total <= 0:
        raise PSFError("the EPSF sampled on the native grid has no positive flux")
    return native / total


def fit_moffat(image: np.ndarray, *, oversampling: int = 1) -> tuple[float, float]:
    """``(gamma, alpha)`` of a circular 2-D Moffat, ``A (1 + r^2 / gamma^2)^-alpha``, least-squares fitted to a
    centred PSF image (``gamma`` in native pixels; ``oversampling`` as in :func:`measure_fwhm`)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or not np.isfinite(img).all() or img.max() <= 0:
        raise PSFError("cannot fit an empty or non-finite PSF image")
    ny, nx = img.shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    xx = (xx - (nx - 1) / 2.0) / oversampling
    yy = (yy - (ny - 1) / 2.0) / oversampling
    peak = float(img.max())
    # initial width from the area above half maximum (equivalent-circle diameter), in native pixels
    area = max(float((img >= 0.5 * peak).sum()) / oversampling**2, 0.5)
    fwhm0 = max(2.0 * math.sqrt(area / math.pi), 0.5)
    alpha0 = 3.0
    gamma0 = fwhm0 / (2.0 * math.sqrt(2.0 ** (1.0 / alpha0) - 1.0))
    model = Moffat2D(amplitude=peak, x_0=0.0, y_0=0.0, gamma=gamma0, alpha=alpha0)
    model.gamma.bounds = (1e-3, None)
    model.alpha.bounds = (0.3, 50.0)
    fitter = fitting.TRFLSQFitter()
    with warnings.catch_warnings(), _serial_blas():
        warnings.simplefilter("ignore", AstropyUserWarning)
        fit = fitter(model, xx, yy, img, maxiter=500)
    gamma, alpha = abs(float(fit.gamma.value)), float(fit.alpha.value)
    if not (np.isfinite(gamma) and np.isfinite(alpha) and gamma > 0):
        raise PSFError("the Moffat fit of the PSF did not converge")
    return gamma, alpha


def measure_fwhm(image: np.ndarray, *, oversampling: int = 1) -> float:
    """FWHM, in native pixels, of a centred PSF image by a circular 2-D Moffat fit (see the module docstring).

    ``oversampling`` > 1 means ``image`` is sampled that many times per native pixel; coordinates are divided by it
    so the answer is in native pixels either way.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or not np.isfinite(img).all() or img.max() <= 0:
        raise PSFError("cannot measure the FWHM of an empty or non-finite PSF image")
    gamma, alpha = fit_moffat(img, oversampling=oversampling)
    fwhm = 2.0 * gamma * math.sqrt(2.0 ** (1.0 / alpha) - 1.0)
    if not np.isfinite(fwhm) or fwhm <= 0:
        raise PSFError("the Moffat fit of the PSF did not converge")
    return fwhm


def build_epsf(
    mosaic: Mosaic,
    stars: pd.DataFrame | Table,
    *,
    stamp_size: int,
    oversampling: int,
    max_iters: int,
    pixel_scale: float | None = None,
    fwhm_guess: float | None = None,
    bkg_box: int = 64,
    smoothing_kernel: str | np.ndarray | None = "quartic",
    center_accuracy: float = 0.002,
) -> EPSFResult:
    """Build the effective PSF of a mosaic from star positions (``x``, ``y`` 0-based pixel columns).

    ``stars`` may be the output of :func:`find_stars` or :func:`classify_sources` (then rows with ``star`` False are
    ignored). The stamps are cut from the same background-subtracted image the stars were found on, weighted by
    the rms map. ``pixel_scale`` defaults to the WCS's; ``fwhm_guess`` (arcsec) sets the fitting box and is
    recorded in the result. The build stops after ``max_iters`` iterations or once no star centre moves by more
    than ``center_accuracy`` native pixels (0.002 px is far below the EPSF's 1/oversampling sampling; photutils'
    default 0.001 px is rarely reached on noisy stars and only costs iterations). ``smoothing_kernel`` is
    photutils' (Anderson & King's quartic by default). Raises :class:`PSFError` if the EPSF cannot be built.
    """
    from photutils.psf import EPSFBuilder, extract_stars

    band = str(mosaic.header.get("FILTER", "?"))
    if stamp_size % 2 == 0:
        raise PSFError(f"band {band}: stamp_size must be odd, got {stamp_size}")
    if isinstance(stars, Table):
        stars = stars.to_pandas()
    n_detected = int(stars.attrs.get("n_detected", len(stars)))
    if "star" in stars.columns:
        stars = stars[stars["star"].astype(bool)]
    stars = stars.reset_index(drop=True)
    if len(stars) == 0:
        raise PSFError(f"band {band}: no stars to build the EPSF from")
    scale = float(pixel_scale) if pixel_scale else mosaic.pixel_scale
    fwhm_px = fwhm_guess / scale if fwhm_guess else 2.0

    sub, noise, bad = prepare_image(mosaic, bkg_box=bkg_box)
    nd = NDData(sub, mask=bad, uncertainty=StdDevUncertainty(noise))  # noise is inf on bad pixels
    cat = Table({"x": np.asarray(stars["x"], float), "y": np.asarray(stars["y"], float),
                 "id": np.arange(1, len(stars) + 1)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        cutouts = extract_stars(nd, cat, size=stamp_size)
    if len(cutouts) == 0:
        raise PSFError(f"band {band}: no star stamp lies wholly inside the image")

    box = _odd_at_least(1.5 * fwhm_px, 5)
    box = min(box, stamp_size)
    builder = EPSFBuilder(oversampling=oversampling, maxiters=max_iters, progress_bar=False,
                          smoothing_kernel=smoothing_kernel, recentering_boxsize=box, fit_shape=box,
                          center_accuracy=center_accuracy)
    try:
        with warnings.catch_warnings(), _serial_blas():
            warnings.simplefilter("ignore", AstropyUserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            built = builder(cutouts)
    except (ValueError, RuntimeError) as exc:
        raise PSFError(f"band {band}: the EPSF build failed ({exc})") from None

    epsf = np.asarray(built.epsf.data, dtype=np.float64)
    if not np.isfinite(epsf).all():
        raise PSFError(f"band {band}: the EPSF has non-finite values")
    epsf = epsf * (oversampling**2 / epsf.sum())
    native = native_from_oversampled(epsf, oversampling, stamp_size)
    # the stars that went in, with their EPSF-fitted centres (cutouts carry the catalogue row as id_label)
    excluded = set(int(i) for i in built.excluded_star_indices)
    fitted = list(built.fitted_stars.all_stars)
    rows = [int(s.id_label) - 1 for k, s in enumerate(fitted) if k not in excluded]
    centres = np.array([s.center for k, s in enumerate(fitted) if k not in excluded], dtype=float).reshape(-1, 2)
    kept = stars.iloc[rows].assign(x_fit=centres[:, 0], y_fit=centres[:, 1])
    used = len(rows)
    return EPSFResult(
        band=band,
        epsf=epsf,
        oversampling=int(oversampling),
        psf=native,
        pixel_scale=scale,
        n_stars=int(used),
        n_candidates=n_detected,
        fwhm=measure_fwhm(native) * scale,
        fwhm_oversampled=measure_fwhm(epsf, oversampling=oversampling) * scale,
        fwhm_guess=fwhm_guess,
        iterations=int(built.iterations),
        converged=bool(built.converged),
        center_shift=float(built.final_center_accuracy),
        stars=kept.reset_index(drop=True),
    )


def estimate_psf(
    mosaic: Mosaic,
    *,
    psf_fwhm_guess: float,
    stamp_size: int,
    oversampling: int,
    min_stars: int,
    snr_min: float,
    max_iters: int,
    pixel_scale: float | None = None,
    **find_kwargs: Any,
) -> EPSFResult:
    """Find the stars of a mosaic and build its EPSF; :class:`PSFError` naming the band if too few stars.

    ``pixel_scale`` (arcsec/px) defaults to the mosaic WCS's; ``psf_fwhm_guess`` (arcsec, the survey's configured
    FWHM) only sets aperture and box sizes. Extra keyword arguments go to :func:`find_stars`.
    """
    band = str(mosaic.header.get("FILTER", "?"))
    scale = float(pixel_scale) if pixel_scale else mosaic.pixel_scale
    stars = find_stars(mosaic, pixel_scale=scale, psf_fwhm_guess=psf_fwhm_guess, stamp_size=stamp_size,
                       snr_min=snr_min, **find_kwargs)
    if len(stars) < min_stars:
        rejected = ", ".join(f"{n} {why}" for why, n in sorted(stars.attrs.get("rejected", {}).items(),
                                                                key=lambda kv: -kv[1]))
        raise PSFError(
            f"band {band}: only {len(stars)} usable PSF stars (need psf.min_stars = {min_stars}) among "
            f"{stars.attrs.get('n_detected', 0)} detections (rejected: {rejected or 'none'}); lower "
            f"psf.star_snr_min (now {snr_min:g}) or psf.min_stars, or check the mosaic")
    result = build_epsf(mosaic, stars, stamp_size=stamp_size, oversampling=oversampling, max_iters=max_iters,
                        pixel_scale=scale, fwhm_guess=psf_fwhm_guess)
    if result.n_stars < min_stars:
        raise PSFError(f"band {band}: only {result.n_stars} stars survived the EPSF fit "
                       f"(need psf.min_stars = {min_stars})")
    return result


# ------------------------------------------------------------------------------------------------- files
def psf_summary(result: EPSFResult, meta: Mapping[str, Any] | None = None,
                prov: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Small JSON-able summary of an EPSF (what the overview figure and the metrics read)."""
    out: dict[str, Any] = dict(meta or {})
    out.update({
        "band": result.band,
        "fwhm_arcsec": round(result.fwhm, 5),
        "fwhm_oversampled_arcsec": round(result.fwhm_oversampled, 5),
        "fwhm_configured_arcsec": result.fwhm_guess,
        "fwhm_method": FWHM_METHOD,
        "n_stars": result.n_stars,
        "n_detections": result.n_candidates,
        "stamp_size": result.stamp_size,
        "oversampling": result.oversampling,
        "pixel_scale": result.pixel_scale,
        "iterations": result.iterations,
        "converged": result.converged,
        "center_shift_px": round(result.center_shift, 5) if np.isfinite(result.center_shift) else None,
    })
    if prov is not None:
        out["provenance"] = dict(prov)
    return out


def write_psf(path: str | Path, result: EPSFResult, header_meta: Mapping[str, Any] | None,
              prov: Mapping[str, Any]) -> None:
    """Write a PSF FITS file atomically.

    Primary HDU: the native-grid PSF (sum 1) with FWHM (arcsec), FWHMOS, FWHMCFG, NSTARS, NDETECT, PIXSCALE,
    OVERSAMP and provenance keys, plus ``header_meta`` (e.g. TELESCOP, INSTRUME, FILTER, SURVEY, FIELD).
    Extension 'EPSF': the oversampled EPSF (sum OVERSAMP**2). Extension 'STARS': the stars used.
    """
    hdr = fits.Header()
    for key, value in (header_meta or {}).items():
        hdr[key] = value
    hdr.setdefault("FILTER", result.band)
    hdr["PSFTYPE"] = ("EPSF", "photutils effective PSF of mosaic stars")
    hdr["PIXSCALE"] = (result.pixel_scale, "arcsec per pixel")
    hdr["OVERSAMP"] = (result.oversampling, "oversampling of the EPSF extension")
    hdr["FWHM"] = (round(result.fwhm, 6), "arcsec, native-grid effective PSF")
    hdr["FWHMOS"] = (round(result.fwhm_oversampled, 6), "arcsec, oversampled EPSF")
    if result.fwhm_guess is not None:
        hdr["FWHMCFG"] = (float(result.fwhm_guess), "arcsec, configured FWHM")
    hdr["FWHMMETH"] = (FWHM_METHOD, "FWHM method")
    hdr["NSTARS"] = (result.n_stars, "stars in the EPSF")
    hdr["NDETECT"] = (result.n_candidates, "sources detected in the mosaic")
    hdr["NITER"] = (result.iterations, "EPSF build iterations")
    hdr["CONVERGD"] = (result.converged, "EPSF star centres converged")
    if np.isfinite(result.center_shift):
        hdr["CENSHIFT"] = (round(result.center_shift, 6), "px, last star-centre move")
    hdr["PSFNORM"] = ("sum=1", "primary image normalisation")
    hdr.update(provenance_header(prov))
    primary = fits.PrimaryHDU(data=result.psf.astype(np.float32), header=hdr)
    ehdr = fits.Header()
    ehdr["OVERSAMP"] = (result.oversampling, "EPSF samples per native pixel")
    ehdr["PIXSCALE"] = (result.pixel_scale / result.oversampling, "arcsec per EPSF sample")
    ehdr["PSFNORM"] = ("sum=OVERSAMP**2", "1 on the native grid (photutils ImagePSF)")
    ehdr["FWHM"] = (round(result.fwhm_oversampled, 6), "arcsec")
    epsf_hdu = fits.ImageHDU(data=result.epsf.astype(np.float32), header=ehdr, name="EPSF")
    cols = [c for c in ("x", "y", "x_fit", "y_fit", "flux", "snr", "r50", "ellipticity") if c in result.stars]
    stars_hdu = fits.BinTableHDU(Table.from_pandas(result.stars[cols].astype(np.float64)) if cols
                                 else Table(), name="STARS")
    with atomic_path(path) as tmp:
        fits.HDUList([primary, epsf_hdu, stars_hdu]).writeto(tmp, overwrite=True)


def write_psf_summary(path: str | Path, result: EPSFResult, meta: Mapping[str, Any] | None = None,
                      prov: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write :func:`psf_summary` as JSON atomically; return it."""
    summary = psf_summary(result, meta, prov)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def read_psf(path: str | Path) -> EPSFResult:
    """Read a file written by :func:`write_psf` back into an :class:`EPSFResult`."""
    path = Path(path)
    if not path.exists():
        raise BoundaryError(f"{path}: PSF file not found")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdr = hdul[0].header.copy()
            psf = np.asarray(hdul[0].data, dtype=np.float64)
            epsf = np.asarray(hdul["EPSF"].data, dtype=np.float64)
            stars = Table(hdul["STARS"].data).to_pandas() if "STARS" in hdul and hdul["STARS"].data is not None \
                else pd.DataFrame()
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise BoundaryError(f"{path}: not a readable PSF file ({type(exc).__name__}: {exc})") from None
    return EPSFResult(
        band=str(hdr.get("FILTER", "?")),
        epsf=epsf,
        oversampling=int(hdr["OVERSAMP"]),
        psf=psf,
        pixel_scale=float(hdr["PIXSCALE"]),
        n_stars=int(hdr.get("NSTARS", 0)),
        n_candidates=int(hdr.get("NDETECT", 0)),
        fwhm=float(hdr["FWHM"]),
        fwhm_oversampled=float(hdr.get("FWHMOS", hdr["FWHM"])),
        fwhm_guess=float(hdr["FWHMCFG"]) if "FWHMCFG" in hdr else None,
        iterations=int(hdr.get("NITER", 0)),
        converged=bool(hdr.get("CONVERGD", False)),
        center_shift=float(hdr.get("CENSHIFT", float("nan"))),
        stars=stars,
    )
