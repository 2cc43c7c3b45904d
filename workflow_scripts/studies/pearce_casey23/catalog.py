"""The study's mosaics and catalogue (Pearce-Casey+23 sec. 2): every band PSF-matched to the target band's EPSF and
background-subtracted; sep detection on one band; aperture photometry in all bands at the detected positions;
labels from the embedded truth where there is one, Barro et al.'s ERO colours from our own photometry always.

Columns of the catalogue: ``id`` (unique over fields), ``field``, ``x``, ``y`` (mosaic pixels, 0-based), ``ra``,
``dec``, sep's ``a``, ``b``, ``theta``, ``npix``, ``flag``; per band ``flux_{b}``, ``fluxerr_{b}`` (image unit, in
the aperture) and ``mag_{b}`` (AB, NaN where flux <= 0); ``barro_ero`` (bool); ``star`` (embedded truth; False
elsewhere); ``label`` (normal | star | ero | merger | unmatched on embedded data, ``unknown`` elsewhere),
``truth_id``, ``truth_sep_arcsec``, ``truth_mag_{b}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
import astropy.units as u

from workflow_scripts.detection.sources import ab_magnitude, aperture_fluxes, detect_sources, measure_background
from workflow_scripts.errors import StudyError
from workflow_scripts.imaging.psf_matching import match_mosaic, matching_kernel_to, with_moffat_wings
from workflow_scripts.io import Mosaic
from workflow_scripts.studies.pearce_casey23.paper import BARRO_ERO

log = logging.getLogger(__name__)

#: ids of field k start at k * ID_STRIDE, so ids are unique over fields
ID_STRIDE = 1_000_000


# --------------------------------------------------------------------------------------------- matching
def matched_mosaic(mosaic: Mosaic, source_psf: np.ndarray, target_psf: np.ndarray, *, target_band: str,
                   target_fwhm: float, background_box: int, background_filter: int,
                   wing_size: int | None = None) -> tuple[Mosaic, dict[str, Any]]:
    """``mosaic`` convolved to the target PSF (photutils matching kernel between the two measured EPSFs; the target
    band itself is left as it is) with its sep background subtracted; returns it and a summary. ``wing_size``:
    both EPSFs extended to that side with fitted Moffat wings first (:func:`.psf_matching.with_moffat_wings`)."""
    if mosaic.band == target_band:
        matched = mosaic
    else:
        if wing_size:
            source_psf = with_moffat_wings(source_psf, int(wing_size), f"{mosaic.band} PSF")
            target_psf = with_moffat_wings(target_psf, int(wing_size), f"{target_band} PSF")
        kernel = matching_kernel_to(source_psf, target_psf)
        matched = match_mosaic(mosaic, kernel, target_band, target_fwhm)
    bkg = measure_background(matched.data, matched.rms, box=background_box, filter_size=background_filter)
    data = (np.asarray(matched.data, np.float32) - bkg.level).astype(np.float32)
    header = matched.header.copy()
    header["PSFMATCH"] = (target_band, "PSF matched to this band")
    header["BKGSUB"] = (True, "sep.Background subtracted")
    header["BKGBOX"] = (int(background_box), "sep.Background mesh, px")
    out = Mosaic(data=data, wcs=matched.wcs, header=header, rms=matched.rms)
    return out, {"band": mosaic.band, "target": target_band, "background_rms": bkg.global_rms,
                 "background_median": float(np.median(bkg.level))}


# ------------------------------------------------------------------------------------------------ catalogue
def build_catalog(mosaics: Mapping[str, Mosaic], study: Mapping[str, Any], *, field: str, field_index: int,
                  truth: pd.DataFrame | None = None, what: str = "") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Detect on ``study.detection.band``, measure apertures in every band of ``mosaics``, label (see module)."""
    det = study["detection"]
    band = det["band"]
    if band not in mosaics:
        raise StudyError(f"detection band {band} is not among the matched mosaics ({', '.join(mosaics)})")
    m = mosaics[band]
    objects, bkg = detect_sources(m.data, m.rms, thresh_sigma=det["thresh_sigma"], minarea=det["minarea"],
                                  deblend_nthresh=det["deblend_nthresh"], deblend_cont=det["deblend_cont"],
                                  background_box=study["background"]["box"],
                                  background_filter=study["background"]["filter"], what=what or band)
    x, y = objects["x"].to_numpy(float), objects["y"].to_numpy(float)
    ra, dec = m.wcs.celestial.all_pix2world(x, y, 0)
    cat = pd.DataFrame({"id": field_index * ID_STRIDE + np.arange(len(objects), dtype=np.int64),
                        "field": field, "x": x, "y": y, "ra": ra, "dec": dec})
    for col in ("a", "b", "theta", "npix", "flag"):
        cat[col] = objects[col].to_numpy()
    radius = float(study["aperture_radius_px"])
    for b, mb in mosaics.items():
        if mb.rms is None:
            raise StudyError(f"band {b} has no rms map: aperture errors need one")
        flux, err, _ = aperture_fluxes(mb.data, mb.rms, x, y, radius)
        # a matched band's noise is correlated: its per-pixel rms is the input's x PSFKGAIN (sqrt sum k^2), but an
        # aperture much wider than the kernel keeps the input's aperture noise, so the independent-pixel sum of
        # the matched rms underestimates it by that factor
        err = err / float(mb.header.get("PSFKGAIN", 1.0))
        cat[f"flux_{b}"], cat[f"fluxerr_{b}"] = flux, err
        cat[f"mag_{b}"] = ab_magnitude(flux, mb.zeropoint)
    cat["barro_ero"] = barro_ero(cat, psf_fwhm_px=_fwhm_px(m))
    summary = {"field": field, "detections": int(len(cat)), "background_rms": bkg.global_rms}
    if truth is not None:
        cat = label_from_truth(cat, truth, study["truth_match_arcsec"], list(mosaics))
        cat["star"] = cat["label"].eq("star").to_numpy()
        summary["labels"] = {k: int(v) for k, v in cat["label"].value_counts().items()}
        summary["completeness"] = completeness(cat, truth)
    else:
        cat["label"] = np.where(cat["barro_ero"], "ero", "unknown")
        cat["star"] = np.zeros(len(cat), dtype=bool)  # no star/galaxy separation on real data (not needed here)
        summary["labels"] = {k: int(v) for k, v in cat["label"].value_counts().items()}
    return cat, summary


def _fwhm_px(m: Mosaic) -> float:
    fwhm = m.header.get("PSFFWHM")
    return float(fwhm) / m.pixel_scale if fwhm else float("nan")


def barro_ero(cat: pd.DataFrame, *, psf_fwhm_px: float = float("nan")) -> np.ndarray:
    """Barro et al. 2023's compact-ERO colours on our aperture magnitudes: F277W - F444W > 1.5, F444W < 28,
    |F150W - F200W| small, and point-like (sep's FWHM ~ 2.35 a below 1.5 x the matched PSF's, when known)."""
    need = [f"mag_{b}" for b in ("F150W", "F200W", "F277W", "F444W")]
    if any(c not in cat for c in need):
        return np.zeros(len(cat), dtype=bool)
    m150, m200, m277, m444 = (cat[c].to_numpy(float) for c in need)
    with np.errstate(invalid="ignore"):
        sel = ((m277 - m444) > BARRO_ERO["red_colour_min"]) & (m444 < BARRO_ERO["f444w_max"]) \
            & (np.abs(m150 - m200) < BARRO_ERO["blue_colour_max_abs"])
        if np.isfinite(psf_fwhm_px):
            sel &= 2.35 * cat["a"].to_numpy(float) < 1.5 * psf_fwhm_px
    return sel


def label_from_truth(cat: pd.DataFrame, truth: pd.DataFrame, radius_arcsec: float,
                     bands: Sequence[str]) -> pd.DataFrame:
    """Each detection takes the label of the nearest true object within ``radius_arcsec`` (``unmatched``
    otherwise); a true object claimed by several detections keeps its label on the nearest only (the others are
    ``unmatched``: deblended fragments)."""
    out = cat.copy()
    if not {"ra", "dec", "label"} <= set(truth.columns):
        raise StudyError("the truth catalogue needs ra, dec and label columns")
    det = SkyCoord(out["ra"].to_numpy(float) * u.deg, out["dec"].to_numpy(float) * u.deg)
    tru = SkyCoord(truth["ra"].to_numpy(float) * u.deg, truth["dec"].to_numpy(float) * u.deg)
    idx, sep2d, _ = det.match_to_catalog_sky(tru)
    dist = sep2d.to_value(u.arcsec)
    ok = dist < radius_arcsec
    # one detection per true object: the nearest
    order = np.argsort(dist)
    claimed: set[int] = set()
    for i in order:
        if not ok[i]:
            break
        if idx[i] in claimed:
            ok[i] = False
        else:
            claimed.add(int(idx[i]))
    labels = truth["label"].astype(str).to_numpy()
    out["label"] = np.where(ok, labels[idx], "unmatched")
    out["truth_id"] = np.where(ok, truth["id"].to_numpy()[idx], -1)
    out["truth_sep_arcsec"] = np.where(ok, dist, np.nan)
    if "pair_id" in truth:
        out["pair_id"] = np.where(ok, truth["pair_id"].to_numpy()[idx], -1)
    for b in bands:
        col = f"truth_mag_{b}"
        if col in truth:
            out[col] = np.where(ok, truth[col].to_numpy(float)[idx], np.nan)
    return out


def completeness(cat: pd.DataFrame, truth: pd.DataFrame, mag_band: str = "F444W",
                 edges: Sequence[float] = (20, 22, 24, 25, 26, 27, 28, 29)) -> dict[str, Any]:
    """Fraction of the true objects (per label and per ``mag_band`` bin) that a detection claimed."""
    truth = truth.reset_index(drop=True)
    found = set(cat.loc[cat["truth_id"] >= 0, "truth_id"].tolist())
    hit = truth["id"].isin(found).to_numpy()
    out: dict[str, Any] = {"by_label": {}}
    for lab, grp in truth.groupby("label"):
        out["by_label"][str(lab)] = {"n": int(len(grp)), "found": float(hit[grp.index].mean())}
    col = f"truth_mag_{mag_band}"
    if col in truth:
        mag = truth[col].to_numpy(float)
        bins = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (mag >= lo) & (mag < hi)
            bins.append({"mag": [lo, hi], "n": int(sel.sum()),
                         "found": float(hit[sel].mean()) if sel.any() else None})
        out["by_mag"] = bins
    return out


__all__ = ["ID_STRIDE", "barro_ero", "build_catalog", "completeness", "label_from_truth", "matched_mosaic"]
