"""Validation of generated fields by source extraction (Smith & Geach 2019 sec. 5): the same procedure on the real
and on the generated fields, then magnitude distributions, counts, colours and sizes compared.

Procedure: sep on the pixel mean of the bands with a local background (sep.Background), ``thresh_sigma`` x the
local background rms and ``minarea`` connected pixels (paper: SExtractor, 5 px >= 5 sigma); per band Kron fluxes
(SExtractor's MAG_AUTO: 2.5 Kron radii, at least ``min_radius_px``) on the background-subtracted image of the band,
AB magnitudes with the band's zeropoint. Sep's Kron photometry is used because the paper used SExtractor's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sep

from workflow_scripts.detection.sources import DetectionError, ab_magnitude, measure_background, native

log = logging.getLogger(__name__)

#: Kron aperture: k x the Kron radius (SExtractor PHOT_AUTOPARAMS 2.5, 3.5)
KRON_FACTOR = 2.5
#: sub-objects sep may deblend one detection into (its default 1024 overflows on a generated field's big blobs)
SUB_OBJECT_LIMIT = 8192
MIN_KRON_RADIUS = 3.5
#: bootstrap resamples behind the error of a median offset
BOOTSTRAP = 300


def extraction_settings(validation: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`extract` from the study's ``validation`` config block."""
    return {"thresh_sigma": validation["thresh_sigma"], "minarea": validation["minarea"],
            "background_box": validation["background_box"]}


def extract(images: Mapping[str, np.ndarray], zeropoints: Mapping[str, float], pixel_scale: float, *,
            thresh_sigma: float, minarea: int, background_box: int = 64, what: str = "field",
            generated: bool = False) -> pd.DataFrame:
    """Catalogue of a multi-band field: x, y, a, b, kron radius, r_half (arcsec) and mag_{band} per band.

    A field with no source, or one that sep cannot deblend, is a :class:`DetectionError` naming ``what``; except a
    ``generated`` field, whose generator may draw no sources yet (an empty catalogue, with a warning) or a texture
    whose above-threshold pixels join into one object with more peaks than sep can deblend (then extracted
    without deblending, with a warning: its few huge objects fail the comparison, as they should)."""
    bands = list(images)
    subs, rms = {}, {}
    for b in bands:
        bkg = measure_background(images[b], None, box=background_box)
        subs[b] = (native(images[b]).astype(np.float32) - bkg.level).astype(np.float32)
        rms[b] = bkg.rms
    det = np.mean([subs[b] for b in bands], axis=0).astype(np.float32)
    det_rms = np.sqrt(np.mean([rms[b] ** 2 for b in bands], axis=0)) / np.sqrt(len(bands))
    det = np.where(np.isfinite(det), det, 0.0).astype(np.float32)
    # a generated field may put most of its pixels above the threshold (an early generator's texture, with a
    # background rms far below the data's): let sep hold the whole image instead of its 300,000-pixel default
    sep.set_extract_pixstack(max(int(sep.get_extract_pixstack()), int(det.size)))
    sep.set_sub_object_limit(max(int(sep.get_sub_object_limit()), SUB_OBJECT_LIMIT))
    err = det_rms.astype(np.float32)
    try:
        objs = sep.extract(det, float(thresh_sigma), err=err, minarea=int(minarea))
    except Exception as exc:   # sep raises a bare Exception on its internal limits
        if not (generated and "deblending overflow" in str(exc)):
            raise DetectionError(f"{what}: source extraction failed ({exc})") from None
        log.warning("%s: %.0f%% of the pixels lie above %g sigma, joined into objects with more peaks than sep can "
                    "deblend (%d sub-objects): extracted without deblending", what,
                    100 * float(np.mean(det > thresh_sigma * err)), thresh_sigma, sep.get_sub_object_limit())
        objs = sep.extract(det, float(thresh_sigma), err=err, minarea=int(minarea), deblend_nthresh=1)
    if len(objs) == 0:
        msg = f"{what}: no source found at {thresh_sigma} sigma with {minarea} pixels"
        if not generated:
            raise DetectionError(msg)
        log.warning("%s (an empty catalogue)", msg)
        return pd.DataFrame(columns=["x", "y", "a", "b", "theta", "kron_radius", "r_half_arcsec",
                                     *[f"{k}_{b}" for b in bands for k in ("flux", "mag")]], dtype=float)
    x, y, a, b_, th = (objs[k].astype(np.float64) for k in ("x", "y", "a", "b", "theta"))
    # sep returns theta in float32, and float32(pi/2) exceeds pi/2 in float64, which its apertures refuse ("invalid
    # aperture parameters"): a one-pixel-wide line along y (a generator's streak, a detector row) stopped the run
    th = np.clip(th, -np.pi / 2, np.pi / 2)
    kr, _ = sep.kron_radius(det, x, y, a, b_, th, 6.0)
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, MIN_KRON_RADIUS)
    r = np.maximum(KRON_FACTOR * kr, MIN_KRON_RADIUS)
    cat = pd.DataFrame({"x": x, "y": y, "a": a, "b": b_, "theta": th, "kron_radius": kr})
    rh, _ = sep.flux_radius(det, x, y, 6.0 * a, 0.5, normflux=None, subpix=5)
    cat["r_half_arcsec"] = rh * pixel_scale
    for b in bands:
        flux, _, _ = sep.sum_ellipse(subs[b].astype(np.float64), x, y, a, b_, th, r, subpix=1)
        cat[f"flux_{b}"] = flux
        cat[f"mag_{b}"] = ab_magnitude(flux, zeropoints[b])
    return cat


def _median_offset_error(real: np.ndarray, other: np.ndarray, rng: np.random.Generator, n_boot: int) -> float:
    """Bootstrap standard deviation of median(other) - median(real), both samples resampled."""
    if real.size < 2 or other.size < 2:
        return float("nan")
    boot = (np.median(rng.choice(other, (n_boot, other.size)), axis=1)
            - np.median(rng.choice(real, (n_boot, real.size)), axis=1))
    return float(np.std(boot))


def compare(real: pd.DataFrame, generated: pd.DataFrame, bands: Sequence[str], *, mag_limit: float,
            real_area_arcmin2: float, generated_area_arcmin2: float, seed: int = 0,
            n_boot: int = BOOTSTRAP) -> dict[str, Any]:
    """Per band: two-sided KS p of the magnitudes brighter than ``mag_limit``, the median offset (generated -
    real) with its bootstrap error (``n_boot`` resamples of both catalogues, seeded), counts per arcmin^2;
    overall counts ratio (the reddest band's cut), colours (first - last band) and sizes (half-light radii) of the
    sources brighter than the limit in the last band: medians and two-sided KS p (``ks_p_colour``, ``ks_p_r_half``).
    """
    from scipy import stats  # here: ~1.5 s per process, and the catalogue jobs that import this module need no test

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"mag_limit": mag_limit, "bands": {}}
    for b in bands:
        mr = real[f"mag_{b}"].to_numpy(float)
        mg = generated[f"mag_{b}"].to_numpy(float)
        mr, mg = mr[np.isfinite(mr) & (mr < mag_limit)], mg[np.isfinite(mg) & (mg < mag_limit)]
        ks = stats.ks_2samp(mr, mg) if mr.size and mg.size else None
        out["bands"][b] = {
            "n_real": int(mr.size), "n_generated": int(mg.size),
            "ks_p": float(ks.pvalue) if ks else float("nan"), "ks_d": float(ks.statistic) if ks else float("nan"),
            "median_real": float(np.median(mr)) if mr.size else float("nan"),
            "median_generated": float(np.median(mg)) if mg.size else float("nan"),
            "median_offset": float(np.median(mg) - np.median(mr)) if mr.size and mg.size else float("nan"),
            "median_offset_error": _median_offset_error(mr, mg, rng, n_boot),
            "density_real": mr.size / real_area_arcmin2, "density_generated": mg.size / generated_area_arcmin2}
    last = bands[-1]
    dr, dg = out["bands"][last]["density_real"], out["bands"][last]["density_generated"]
    out["counts_ratio"] = float(dg / dr) if dr > 0 else float("nan")
    first = bands[0]
    shape: dict[str, dict[str, np.ndarray]] = {}
    for name, cat in (("real", real), ("generated", generated)):
        sel = np.isfinite(cat[f"mag_{last}"]) & (cat[f"mag_{last}"] < mag_limit)
        col = (cat[f"mag_{first}"] - cat[f"mag_{last}"])[sel].to_numpy(float)
        size = cat["r_half_arcsec"][sel].to_numpy(float)
        shape[name] = {"colour": col[np.isfinite(col)], "r_half": size[np.isfinite(size)]}
        out[f"colour_median_{name}"] = float(np.nanmedian(col)) if sel.any() else float("nan")
        out[f"r_half_median_{name}"] = float(np.median(cat["r_half_arcsec"][sel])) if sel.any() else float("nan")
    # ours, beyond the paper's validation: magnitudes alone can match while the sources are not galaxies
    for key in ("colour", "r_half"):
        a, b = shape["real"][key], shape["generated"][key]
        out[f"ks_p_{key}"] = float(stats.ks_2samp(a, b).pvalue) if a.size and b.size else float("nan")
    return out


def split_halves(catalog: pd.DataFrame, width: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sources of a ``width``-pixel-wide field in its left and right halves (by x): two independent samples of
    one sky, whose comparison shows what the statistics give when nothing differs (the null)."""
    left = catalog["x"].to_numpy(float) < (width - 1) / 2.0
    return catalog.loc[left], catalog.loc[~left]


__all__ = ["BOOTSTRAP", "compare", "extract", "extraction_settings", "split_halves"]
