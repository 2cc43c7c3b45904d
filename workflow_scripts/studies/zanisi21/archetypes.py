"""Smooth single-Sersic "archetypes" of the likelihood-ratio study: each real galaxy stamp gets a twin with the same
global properties (flux, size, Sersic index, axis ratio, orientation, centre) and no fine detail, drawn into a real
blank-sky stamp so that both PixelCNNs see the same background (Zanisi et al. 2021).

* :func:`fit_sersic`: statmorph (PSF-convolved single Sersic, plus Gini, M20 and CAS) on the segment of the central
  source of each stamp, the other segments masked; one table row per stamp, unusable fits flagged with a reason.
* :func:`render_archetypes`: GalSim Sersic profiles of the usable rows, convolved with the native-pixel PSF and
  added to blank-sky stamps.
* :func:`blank_sky_stamps`: stamps of a mosaic that contain no detected source (nor no-data pixels).

Conventions (fit and rendering use the same ones, checked end to end by the tests):

* Pixel coordinates are 0-based with pixel centres at integers: ``x`` the column index, ``y`` the row index of
  ``stamp[y, x]`` (statmorph's, sep's and astropy's ``origin=0``). ``sersic_xc``, ``sersic_yc`` are in this frame.
* ``sersic_theta`` (radians, in [0, pi)) is the angle of the major axis from the +x axis towards +y (counter-
  clockwise on an image shown with ``origin="lower"``): astropy's ``Sersic2D`` convention, which statmorph fits.
  GalSim's ``shear(beta=...)`` measures the same angle in the same frame (``image.array[y, x]``), so ``beta =
  sersic_theta``. This is a pixel-frame angle, not an astronomical position angle (no WCS is involved).
* ``sersic_rhalf`` is statmorph's ``r_eff``: the half-light *semi-major axis* of the elliptical profile (pixels;
  ``sersic_rhalf_arcsec`` the same in arcsec). GalSim's ``half_light_radius`` is that of the round profile before
  ``shear(q=...)``, which preserves area, so GalSim needs the circularised radius ``hlr_arcsec = r_eff * sqrt(q)``.
* ``q = 1 - sersic_ellip`` (b / a). ``flux`` is the total (untruncated) flux of the fitted Sersic model,
  ``2 pi q r_eff^2 I_e n e^{b_n} Gamma(2n) / b_n^{2n}`` with ``I_e = sersic_amplitude`` (the surface brightness at
  ``r_eff`` per pixel), in the image unit; GalSim draws the same total flux.
* The PSF is a native-pixel image of the effective PSF (it includes the pixel response), with an odd side, centred on
  its central pixel, normalised here to sum 1. statmorph convolves the Sersic sampled at pixel centres with it;
  GalSim convolves the continuous profile with its interpolation and samples at pixel centres (``no_pixel``).

Known bias: statmorph evaluates the Sersic profile at pixel centres (no integration over the pixel), so cuspy, small
profiles (n >~ 3 with r_eff <~ 5 px) come out with n a few to ~10 % high and flux a few % high.

statmorph's MID statistics (a basin-hopping search, ~75 % of its run time) are not needed here; by default they are
skipped (``all_statistics=False``) by a subclass that evaluates only the quantities this table holds. Measured on one
core, 64 x 64 stamps with a 25 x 25 PSF: 0.15-0.3 s per stamp (0.2-0.6 s with ``all_statistics=True``; the
rest of the time is statmorph's asymmetry-centre search and Petrosian radii, the Sersic fit itself ~0.02 s).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from typing import Any

import galsim
import numpy as np
import pandas as pd
import sep
import statmorph
from astropy.stats import sigma_clipped_stats
from scipy import ndimage
from scipy.special import gamma, gammaincinv
from tqdm.auto import tqdm

from workflow_scripts.detection.sources import PIXSTACK, SUB_OBJECT_LIMIT, measure_background, native
from workflow_scripts.errors import PipelineError
from workflow_scripts.imaging.augment import dihedral
from workflow_scripts.imaging.render import RenderError, normalised_psf, psf_profile

log = logging.getLogger(__name__)

#: GalSim's Sersic profiles are defined for 0.3 <= n <= 6.2
GALSIM_N_RANGE = (0.3, 6.2)


class ArchetypeError(PipelineError):
    """Archetypes cannot be made from what was given (no usable fit, no blank sky, a bad PSF ...)."""


def _where(source: str) -> str:
    return f"{source}: " if source else ""


# ------------------------------------------------------------------------------------------------- PSF
def _normalised_psf(psf: np.ndarray, source: str) -> np.ndarray:
    try:
        return normalised_psf(psf, source)
    except RenderError as exc:
        raise ArchetypeError(str(exc)) from None


# ------------------------------------------------------------------------------------------------- fit
def sersic_total_flux(amplitude: Any, r_eff: Any, n: Any, ellip: Any) -> np.ndarray:
    """Total flux of astropy's ``Sersic2D(amplitude, r_eff, n, ellip)`` integrated to infinity (pixel units:
    ``amplitude`` per pixel, ``r_eff`` in pixels): ``2 pi (1 - ellip) r_eff^2 I_e n e^{b_n} Gamma(2n) / b_n^{2n}``."""
    a, r, nn, e = (np.asarray(v, dtype=np.float64) for v in (amplitude, r_eff, n, ellip))
    with np.errstate(all="ignore"):
        bn = gammaincinv(2.0 * nn, 0.5)
        return 2.0 * np.pi * (1.0 - e) * r * r * a * nn * np.exp(bn) * gamma(2.0 * nn) / bn ** (2.0 * nn)


#: the statmorph quantities this module reports (and those the Sersic fit's initial guess needs)
_CORE_QUANTITIES = ("xc_centroid", "yc_centroid", "xc_asymmetry", "yc_asymmetry", "ellipticity_asymmetry",
                    "orientation_asymmetry", "rpetro_circ", "rpetro_ellip", "rhalf_ellip", "r20", "r80", "gini",
                    "m20", "concentration", "asymmetry", "smoothness", "sersic_amplitude", "sersic_rhalf",
                    "sersic_n", "sersic_xc", "sersic_yc", "sersic_ellip", "sersic_theta", "sersic_chi2_dof",
                    "sky_mean", "sky_sigma")


class _CoreMorphology(statmorph.SourceMorphology):
    """statmorph's SourceMorphology evaluating only :data:`_CORE_QUANTITIES` (no MID statistics, which cost most of
    the time). Relies on statmorph 0.7's lazy-property design (``_calculate_morphology``), pinned in the project."""

    def _calculate_morphology(self) -> None:
        for q in _CORE_QUANTITIES:
            _ = self[q]


_FIT_COLUMNS = ["sersic_n", "sersic_rhalf", "sersic_rhalf_arcsec", "hlr_arcsec", "sersic_ellip", "q",
                "sersic_theta", "sersic_amplitude", "flux", "sersic_xc", "sersic_yc", "sersic_chi2_dof", "gini",
                "m20", "concentration", "asymmetry", "smoothness"]


def _rms_for(rms: Any, i: int, shape: tuple[int, int], n: int, source: str) -> np.ndarray | None:
    if rms is None:
        return None
    r = np.asarray(rms, dtype=np.float64)
    if r.ndim == 0:
        return np.full(shape, float(r))
    if r.shape == shape:
        return r
    if r.shape == (n, *shape):
        return r[i]
    raise ArchetypeError(f"{_where(source)}rms must be a scalar, an {shape[0]} x {shape[1]} map or a cube of "
                         f"{n} such maps, got shape {r.shape}")


def _central_label(seg: np.ndarray, max_offset: float) -> tuple[int, float]:
    """The label of the segment nearest the stamp centre (0 if none within ``max_offset`` px) and its distance."""
    h, w = seg.shape
    yy, xx = np.nonzero(seg)
    if yy.size == 0:
        return 0, np.inf
    d = np.hypot(xx - (w - 1) / 2.0, yy - (h - 1) / 2.0)
    labels = seg[yy, xx]
    best = np.full(int(labels.max()) + 1, np.inf)
    np.minimum.at(best, labels, d)
    lab = int(np.argmin(best))
    dist = float(best[lab])
    return (lab, dist) if dist <= max_offset else (0, dist)


def _fit_one(img: np.ndarray, rms_map: np.ndarray | None, psf: np.ndarray, *, gain: float | None,
             threshold: float, minarea: int, deblend_cont: float, max_offset: float, min_snr: float,
             all_statistics: bool) -> dict[str, Any]:
    """statmorph on the central segment of one stamp; a dict of measurements, or ``reason`` when it failed."""
    finite = np.isfinite(img)
    if finite.mean() < 0.5:
        return {"reason": f"only {finite.mean():.0%} of the pixels are finite"}
    data = np.where(finite, img, 0.0)
    if rms_map is None:
        _, _, std = sigma_clipped_stats(data[finite], sigma=3.0, maxiters=10)
        rms_map = np.full(img.shape, float(std))
    good = finite & np.isfinite(rms_map) & (rms_map > 0)
    if not good.any():
        return {"reason": "no pixel has a positive finite rms"}
    err = np.where(good, rms_map, np.nanmedian(np.where(good, rms_map, np.nan))).astype(np.float32)
    d32 = native(data.astype(np.float32))
    try:
        _, seg = sep.extract(d32, float(threshold), err=native(err), mask=~good, minarea=int(minarea),
                             deblend_cont=float(deblend_cont), filter_type="conv", segmentation_map=True)
    except Exception as exc:  # noqa: BLE001 (sep raises plain Exceptions)
        return {"reason": f"segmentation failed: {exc}"}
    lab, dist = _central_label(seg, max_offset)
    if lab == 0:
        what = "no segment" if not np.isfinite(dist) else f"the nearest segment is {dist:.1f} px away"
        return {"reason": f"no central source ({what}; at most {max_offset:g} px from the centre above "
                          f"{threshold:g} sigma)"}
    central = seg == lab
    snr = float(np.sum(data[central]) / np.sqrt(np.sum(err[central].astype(np.float64) ** 2)))
    if not snr >= min_snr:
        return {"reason": f"central segment S/N {snr:.1f} < {min_snr:g}", "segment_snr": snr}
    mask = (~good) | ((seg > 0) & ~central)
    weight = np.where(good, rms_map, 0.0)
    if gain is not None:
        weight = np.where(good, np.sqrt(weight ** 2 + np.clip(data, 0.0, None) / float(gain)), 0.0)
    cls = statmorph.SourceMorphology if all_statistics else _CoreMorphology
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = cls(data, central.astype(np.int32), 1, mask=mask, weightmap=weight, psf=psf)
        except Exception as exc:  # noqa: BLE001 (statmorph and astropy raise many kinds)
            return {"reason": f"statmorph failed: {type(exc).__name__}: {exc}", "segment_snr": snr}
    notes = "; ".join(sorted({str(w.message) for w in caught}))[:500]
    out: dict[str, Any] = {"segment_snr": snr, "flag": int(m.flag), "flag_sersic": int(m.flag_sersic),
                           "notes": notes}
    if m.flag == 4:
        out["reason"] = f"statmorph flag 4 (catastrophic): {notes}"
        return out
    for key in ("sersic_n", "sersic_rhalf", "sersic_ellip", "sersic_theta", "sersic_amplitude", "sersic_xc",
                "sersic_yc", "sersic_chi2_dof", "gini", "m20", "concentration", "asymmetry", "smoothness"):
        out[key] = float(m[key])
    return out


def fit_sersic(stamps: np.ndarray, psf: np.ndarray, *, pixel_scale: float, rms: Any = None,
               gain: float | None = None, segmap_threshold: float = 1.5, segmap_minarea: int = 5,
               deblend_cont: float = 0.005, max_center_offset: float | None = None, min_snr: float = 10.0,
               n_bounds: tuple[float, float] = (0.2, 8.0), q_min: float = 0.05, all_statistics: bool = False,
               progress: bool = False, source: str = "") -> pd.DataFrame:
    """PSF-convolved single-Sersic fits (statmorph) of the central source of each stamp of ``stamps`` (N, H, W).

    ``stamps``: background-subtracted native-pixel stamps centred on their galaxy; ``psf``: native-pixel effective
    PSF (odd sides; normalised here); ``pixel_scale``: arcsec per pixel; ``rms``: the noise (a scalar, an H x W map
    or an (N, H, W) cube; None: a 3-sigma-clipped std of each stamp), the fit's weight map, plus the source's
    Poisson term where ``gain`` (electrons per image unit) is given. Segmentation: sep at ``segmap_threshold`` x
    rms, ``segmap_minarea`` pixels, sep's deblending; the central source is the segment nearest the centre, within
    ``max_center_offset`` px (None: a tenth of the stamp side, at least 3 px) and with S/N >= ``min_snr``; other
    segments and non-finite pixels are masked.

    Returns one row per stamp (index = stamp index): ``sersic_n``, ``sersic_rhalf`` (px, semi-major axis),
    ``sersic_rhalf_arcsec``, ``hlr_arcsec`` (circularised, GalSim's ``half_light_radius``), ``sersic_ellip``,
    ``q``, ``sersic_theta`` (rad), ``sersic_amplitude``, ``flux`` (total model flux, image unit), ``sersic_xc``,
    ``sersic_yc`` (px), ``sersic_chi2_dof``, ``gini``, ``m20``, ``concentration``, ``asymmetry``, ``smoothness``,
    ``flag``, ``flag_sersic`` (statmorph; -1 where statmorph did not run), ``segment_snr``, ``ok``, ``reason``
    (why not ok; "" when ok), ``notes`` (statmorph's warnings), ``fit_seconds``. ``ok``: flag_sersic 0, statmorph
    flag < 4, every value finite, ``n_bounds[0] <= n <= n_bounds[1]``, ``0 < r_eff < 2 max(H, W)``,
    ``q >= q_min``, centre inside the stamp, flux > 0. Raises :class:`ArchetypeError` (naming ``source``) when
    no stamp gives a usable fit. Conventions: see the module docstring.
    """
    cube = np.asarray(stamps, dtype=np.float64)
    if cube.ndim == 2:
        cube = cube[None]
    if cube.ndim != 3 or cube.shape[0] == 0:
        raise ArchetypeError(f"{_where(source)}stamps must be a non-empty (N, H, W) cube, got shape "
                             f"{np.shape(stamps)}")
    if not pixel_scale > 0:
        raise ArchetypeError(f"{_where(source)}pixel_scale must be positive, got {pixel_scale}")
    p = _normalised_psf(psf, source)
    n_stamps, h, w = cube.shape
    offset = max(3.0, 0.1 * min(h, w)) if max_center_offset is None else float(max_center_offset)
    rows = []
    for i in tqdm(range(n_stamps), disable=not progress, desc="sersic fits", unit="stamp", mininterval=2.0):
        t0 = time.perf_counter()
        r = _fit_one(cube[i], _rms_for(rms, i, (h, w), n_stamps, source), p, gain=gain,
                     threshold=segmap_threshold, minarea=segmap_minarea, deblend_cont=deblend_cont,
                     max_offset=offset, min_snr=min_snr, all_statistics=all_statistics)
        r["fit_seconds"] = time.perf_counter() - t0
        rows.append(r)
    table = pd.DataFrame(rows, index=pd.RangeIndex(n_stamps, name="stamp"))
    for col in _FIT_COLUMNS + ["segment_snr"]:
        if col not in table:
            table[col] = np.nan
    for col, fill in (("flag", -1), ("flag_sersic", -1)):
        table[col] = table[col].fillna(fill).astype(int) if col in table else fill
    for col in ("reason", "notes"):
        table[col] = table[col].fillna("").astype(str) if col in table else ""
    table["q"] = 1.0 - table["sersic_ellip"]
    table["sersic_rhalf_arcsec"] = table["sersic_rhalf"] * pixel_scale
    with np.errstate(invalid="ignore"):
        table["hlr_arcsec"] = table["sersic_rhalf"] * np.sqrt(table["q"]) * pixel_scale
    table["flux"] = sersic_total_flux(table["sersic_amplitude"], table["sersic_rhalf"], table["sersic_n"],
                                      table["sersic_ellip"])
    _judge(table, n_bounds=n_bounds, q_min=q_min, h=h, w=w)
    cols = _FIT_COLUMNS + ["flag", "flag_sersic", "segment_snr", "ok", "reason", "notes", "fit_seconds"]
    table = table[cols]
    n_bad = int((~table["ok"]).sum())
    if n_bad:
        reasons = Counter(s.split(" (")[0].split(":")[0] for s in table.loc[~table["ok"], "reason"])
        log.warning("%s%d of %d Sersic fits unusable: %s", _where(source), n_bad, n_stamps,
                    ", ".join(f"{k} x{v}" for k, v in reasons.most_common()))
    log.info("%s%d stamps fitted in %.1f s (%.3f s per stamp)", _where(source), n_stamps,
             table["fit_seconds"].sum(), table["fit_seconds"].mean())
    if n_bad == n_stamps:
        first = table["reason"].iloc[0]
        raise ArchetypeError(f"{_where(source)}none of the {n_stamps} stamps gives a usable Sersic fit "
                             f"(first: {first})")
    return table


def _judge(table: pd.DataFrame, *, n_bounds: tuple[float, float], q_min: float, h: int, w: int) -> None:
    """Fill ``ok`` and, for rows that ran but are unusable, ``reason``."""
    ran = table["reason"] == ""
    vals = table[_FIT_COLUMNS[:11]].to_numpy(np.float64)
    checks = [
        (~np.all(np.isfinite(vals), axis=1), "non-finite fit values"),
        (table["flag_sersic"].to_numpy() != 0, "statmorph flag_sersic != 0"),
        (~table["sersic_n"].between(*n_bounds).to_numpy(), f"n outside [{n_bounds[0]:g}, {n_bounds[1]:g}]"),
        (~((table["sersic_rhalf"] > 0) & (table["sersic_rhalf"] < 2 * max(h, w))).to_numpy(),
         "r_eff outside (0, 2 x stamp side)"),
        (~(table["q"] >= q_min).to_numpy(), f"q < {q_min:g}"),
        (~(table["sersic_xc"].between(-0.5, w - 0.5) & table["sersic_yc"].between(-0.5, h - 0.5)).to_numpy(),
         "centre off the stamp"),
        (~(table["flux"] > 0).to_numpy(), "non-positive flux"),
    ]
    reason = table["reason"].to_numpy(object).copy()
    for bad, why in checks:
        hit = ran.to_numpy() & bad & (reason == "")
        reason[hit] = why
    table["reason"] = reason.astype(str)
    table["ok"] = table["reason"] == ""


# ---------------------------------------------------------------------------------------------- render
def render_archetypes(table: pd.DataFrame, psf: np.ndarray, sky: np.ndarray | None, *, pixel_scale: float,
                      shape: tuple[int, int] | None = None, n_range: tuple[float, float] = (0.3, 6.0),
                      progress: bool = False, source: str = "") -> np.ndarray:
    """The Sersic archetypes of the ``ok`` rows of a :func:`fit_sersic` table, in table order, added to sky.

    Each row: ``galsim.Sersic(n clipped to n_range, half_light_radius=hlr_arcsec, flux)``, sheared to ``q`` at
    ``beta = sersic_theta``, centred on (``sersic_xc``, ``sersic_yc``), convolved with the PSF (a native-pixel
    effective PSF, odd sides, normalised to sum 1, as a ``galsim.InterpolatedImage``) and drawn with
    ``method="no_pixel"`` (the effective PSF already holds the pixel) on the stamp grid. ``sky``: an (M, H, W) cube of
    blank-sky stamps with M >= the number of ok rows (the first ones are used, the i-th archetype on ``sky[i]``), or
    None for a zero sky (then ``shape`` = (H, W) is required). Returns float32 (n_ok, H, W).
    """
    need = ["ok", "sersic_n", "hlr_arcsec", "q", "sersic_theta", "flux", "sersic_xc", "sersic_yc"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ArchetypeError(f"{_where(source)}the fit table lacks columns {', '.join(missing)}")
    lo, hi = float(n_range[0]), float(n_range[1])
    if not GALSIM_N_RANGE[0] <= lo <= hi <= GALSIM_N_RANGE[1]:
        raise ArchetypeError(f"{_where(source)}n_range must lie within GalSim's {GALSIM_N_RANGE}, got {n_range}")
    rows = table.loc[table["ok"].to_numpy(bool)]
    if rows.empty:
        raise ArchetypeError(f"{_where(source)}no usable (ok) fit among the {len(table)} rows to render")
    if sky is None:
        if shape is None:
            raise ArchetypeError(f"{_where(source)}give a sky cube or the stamp shape")
        h, w = int(shape[0]), int(shape[1])
        base = np.zeros((len(rows), h, w), dtype=np.float32)
    else:
        s = np.asarray(sky, dtype=np.float32)
        if s.ndim != 3 or s.shape[0] < len(rows):
            raise ArchetypeError(f"{_where(source)}the sky must be an (M, H, W) cube with M >= {len(rows)} (the "
                                 f"usable fits), got shape {s.shape}")
        if s.shape[0] > len(rows):
            log.info("%susing %d of %d sky stamps", _where(source), len(rows), s.shape[0])
        base = s[: len(rows)].copy()
        h, w = base.shape[1:]
    p = _normalised_psf(psf, source)
    psf_obj = psf_profile(p, pixel_scale)
    n_clip = np.clip(rows["sersic_n"].to_numpy(float), lo, hi)
    if np.any(n_clip != rows["sersic_n"].to_numpy(float)):
        log.info("%s%d Sersic indices clipped to [%g, %g]", _where(source),
                 int(np.sum(n_clip != rows["sersic_n"].to_numpy(float))), lo, hi)
    cols = {c: rows[c].to_numpy(float) for c in ("hlr_arcsec", "q", "sersic_theta", "flux", "sersic_xc",
                                                 "sersic_yc")}
    for i in tqdm(range(len(rows)), disable=not progress, desc="archetypes", unit="stamp", mininterval=2.0):
        try:
            gal = galsim.Sersic(n=float(n_clip[i]), half_light_radius=float(cols["hlr_arcsec"][i]),
                                flux=float(cols["flux"][i]))
            gal = gal.shear(q=float(cols["q"][i]), beta=float(cols["sersic_theta"][i]) * galsim.radians)
            img = galsim.ImageF(w, h, scale=float(pixel_scale))
            galsim.Convolve(gal, psf_obj).drawImage(
                image=img, method="no_pixel",
                offset=(float(cols["sersic_xc"][i]) - (w - 1) / 2.0, float(cols["sersic_yc"][i]) - (h - 1) / 2.0))
        except galsim.GalSimError as exc:
            raise ArchetypeError(f"{_where(source)}GalSim cannot draw the archetype of row {rows.index[i]} "
                                 f"(n {n_clip[i]:.3g}, hlr {cols['hlr_arcsec'][i]:.3g}\"): {exc}") from exc
        base[i] += img.array
    return base.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------- blank sky
def _window_sums(mask: np.ndarray, size: int) -> np.ndarray:
    """Number of true pixels in every ``size`` x ``size`` window, indexed by the window's top-left pixel."""
    dtype = np.int32 if mask.size < 2**31 else np.int64
    c = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=dtype)
    np.cumsum(np.cumsum(mask, axis=0, dtype=dtype), axis=1, out=c[1:, 1:])
    return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]


def blank_sky_stamps(image: np.ndarray, rms: np.ndarray | float | None, size: int, n: int,
                     rng: np.random.Generator, *, thresh_sigma: float = 1.5, grow_px: int = 4, minarea: int = 5,
                     max_masked_fraction: float = 0.0, background_box: int = 64, background_filter: int = 3,
                     chunk: int = 4096, source: str = "") -> tuple[np.ndarray, dict[str, Any]]:
    """``n`` stamps of ``size`` x ``size`` pixels of ``image`` that hold no detected source, and an info dict.

    Sources: sep on ``image`` minus its sep background, above ``thresh_sigma`` x ``rms`` (per pixel; a scalar or
    None: the global background rms) with ``minarea`` pixels, segments grown by ``grow_px`` pixels (a square, i.e.
    Chebyshev distance). A stamp may hold at most ``max_masked_fraction`` of source pixels and no NaN or rms <= 0
    pixel. The stamps are cut from ``image`` itself (pass the mosaic the galaxy stamps were cut from, e.g. after
    :func:`~workflow_scripts.studies.zanisi21.stamps.subtract_background`). All valid positions are found at once
    (a summed-area table), then non-overlapping ones are drawn at random (``rng``). When fewer than ``n`` are found,
    the found stamps are reused under the 8 dihedral transforms (then cycled again), and ``info`` says so.

    ``info``: ``n_requested``, ``n_distinct`` (non-overlapping positions found), ``n_valid_positions`` (top-left
    pixels whose window qualifies), ``reused`` (bool), ``repeated`` (bool: more than 8 x n_distinct requested),
    ``origins`` ((n, 2) int: top-left y, x of each stamp's sky), ``transforms`` ((n,) dihedral index), ``message``.
    Raises :class:`ArchetypeError` naming ``source`` when no blank stamp exists.
    """
    img = native(np.asarray(image)).astype(np.float32, copy=False)
    if img.ndim != 2:
        raise ArchetypeError(f"{_where(source)}blank sky needs a 2-D image, got shape {img.shape}")
    size, n = int(size), int(n)
    if size < 1 or n < 1:
        raise ArchetypeError(f"{_where(source)}size and n must be positive, got {size} and {n}")
    if size > min(img.shape):
        raise ArchetypeError(f"{_where(source)}a {size} px stamp does not fit the {img.shape} image")
    if rms is None or np.ndim(rms) == 0:
        rms_map = None
    else:
        rms_map = native(np.asarray(rms)).astype(np.float32, copy=False)
        if rms_map.shape != img.shape:
            raise ArchetypeError(f"{_where(source)}the rms map has shape {rms_map.shape}, the image {img.shape}")
    bad = ~np.isfinite(img)
    if rms_map is not None:
        bad |= ~(np.isfinite(rms_map) & (rms_map > 0))
    bkg = measure_background(img, rms_map, box=background_box, filter_size=background_filter)
    if rms_map is not None:
        err: Any = np.where(bad, 1.0, rms_map).astype(np.float32)
    elif rms is not None:
        err = float(rms)
    else:
        err = float(bkg.global_rms)
    if np.isscalar(err) and not err > 0:
        raise ArchetypeError(f"{_where(source)}the noise level is {err}; cannot detect sources")
    data = np.where(bad, 0.0, img - bkg.level).astype(np.float32)
    sep.set_extract_pixstack(PIXSTACK)
    sep.set_sub_object_limit(SUB_OBJECT_LIMIT)
    try:
        # no deblending (deblend_cont 1): only the union of the segments matters; "conv" filter: the threshold is
        # thresh_sigma x rms per pixel (sep's default "matched" filter with an rms map is ~10x slower and other)
        _, seg = sep.extract(data, float(thresh_sigma), err=err, mask=bad, minarea=int(minarea),
                             deblend_cont=1.0, filter_type="conv", segmentation_map=True)
    except Exception as exc:  # noqa: BLE001 (sep raises plain Exceptions)
        raise ArchetypeError(f"{_where(source)}source detection for blank sky failed: {exc}") from exc
    src = seg > 0
    if grow_px > 0:
        src = ndimage.maximum_filter(src, size=2 * int(grow_px) + 1)
    if max_masked_fraction > 0:
        valid = _window_sums(src, size) <= float(max_masked_fraction) * size * size
        if bad.any():
            valid &= _window_sums(bad, size) == 0
    else:
        valid = _window_sums(src | bad, size) == 0
    ys, xs = np.nonzero(valid)
    n_valid = int(ys.size)
    if n_valid == 0:
        raise ArchetypeError(f"{_where(source)}no blank sky: no {size} x {size} stamp free of sources (detected "
                             f"at {thresh_sigma:g} sigma, grown by {grow_px} px) and of no-data pixels in "
                             f"{source or 'the image'} ({src.mean():.1%} of the pixels are source pixels)")
    # non-overlapping windows, drawn at random: blocked[y, x] once a chosen window overlaps the one at (y, x)
    t_draw = time.perf_counter()
    order = rng.permutation(n_valid)
    blocked = np.zeros(valid.shape, dtype=bool)
    chosen: list[tuple[int, int]] = []
    for start in range(0, n_valid, int(chunk)):
        idx = order[start:start + int(chunk)]
        cand = idx[~blocked[ys[idx], xs[idx]]]
        for k in cand:
            y, x = int(ys[k]), int(xs[k])
            if blocked[y, x]:
                continue
            chosen.append((y, x))
            blocked[max(0, y - size + 1):y + size, max(0, x - size + 1):x + size] = True
            if len(chosen) == n:
                break
        if len(chosen) == n:
            break
    m = len(chosen)
    log.debug("blank sky: %d positions drawn in %.2f s", m, time.perf_counter() - t_draw)
    base = np.stack([img[y:y + size, x:x + size] for y, x in chosen]).astype(np.float32)
    j = np.arange(n)
    transforms = (j // m) % 8
    src_idx = j % m
    stamps = np.stack([dihedral(base[s], int(t)) for s, t in zip(src_idx, transforms)]).astype(np.float32)
    reused = m < n
    repeated = n > 8 * m
    if reused:
        message = (f"{_where(source)}only {m} non-overlapping blank {size} x {size} stamps found for {n} requested; "
                   f"reused under dihedral transforms" + (" and repeated" if repeated else ""))
        log.warning(message)
    else:
        message = f"{_where(source)}{n} distinct blank {size} x {size} stamps ({n_valid} valid positions)"
        log.info(message)
    info = {"n_requested": n, "n_distinct": m, "n_valid_positions": n_valid, "reused": bool(reused),
            "repeated": bool(repeated), "origins": np.asarray([chosen[s] for s in src_idx], dtype=np.int64),
            "transforms": transforms.astype(np.int64), "message": message}
    return stamps, info


__all__ = ["ArchetypeError", "GALSIM_N_RANGE", "blank_sky_stamps", "fit_sersic", "render_archetypes",
           "sersic_total_flux"]
