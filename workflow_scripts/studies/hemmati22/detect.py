"""The study's detection policy: peaks on hi-res, low-res and GAN stamps (matched filter, own noise with an optional
floor, prominence, companion search region), matched to the truth.

:func:`detect` runs it on one cube; :func:`detect_samples` on every method's images of the blends and the isolated
control sample (hi-res, low-res and each SR-GAN, with 1 and all bands), as the rule ``hemmati22_detect`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.detection import (classify_blends, classify_isolated, detection_stack, filtered_snr,
                                        find_peaks, prominent, truth_positions, within)
from workflow_scripts.errors import StudyError
from workflow_scripts.imaging.degrade import target_psf_image
from workflow_scripts.imaging.stamps import CutoutSet
from workflow_scripts.studies.hemmati22.blends import BlendSet
from workflow_scripts.studies.hemmati22.paper import BLEND_PARAMETERS
from workflow_scripts.surveys import Survey

log = logging.getLogger(__name__)
#: PSF stamp of the low-resolution (target) images, in target pixels: +-3 FWHM of a 0.6" PSF at 0.18"/px
LOWRES_PSF_SIZE = 21
#: sample name (file and peaks table) -> kind of stamp (:func:`detect`)
SAMPLE_KINDS = {"blends": "blend", "isolated": "isolated"}
#: truth columns copied to a sample's detections table (those present)
TRUTH_COLUMNS = ("blend_id", "iso_id", *BLEND_PARAMETERS, "dmag", "separation_arcsec")
#: band sets of the detection methods: "" (hi, lo) is the study's band, "7" (hi7, lo7) every band of the survey
METHOD_BAND_SETS = (("", "one"), ("7", "all"))


def srgan_models(study: Mapping[str, Any]) -> list[str]:
    """The study's SR-GANs, in config order: the GAN methods of detection (the DCGAN draws from noise)."""
    return [m for m, spec in study["models"].items() if spec["kind"] == "srgan"]


def study_bands(survey: Survey, study: Mapping[str, Any], which: str) -> list[str]:
    """The bands a model or detection uses: ``one`` is the study's band, ``all`` every band of the survey."""
    return [study["band"]] if which == "one" else list(survey.bands)


def search_radius_arcsec(study: Mapping[str, Any], hires_scale: float) -> float:
    """Where a companion can be: the largest blend offset (per axis, so times sqrt 2) plus the match radius."""
    return float(np.sqrt(2.0) * study["max_offset_px"] * hires_scale + study["detection"]["match_radius_arcsec"])


def lowres_psf(target: Survey, target_band: str, profile: str) -> np.ndarray:
    return target_psf_image(target.band(target_band).psf_fwhm, target.pixel_scale, LOWRES_PSF_SIZE, profile=profile)


def detect(cube: np.ndarray, truth: pd.DataFrame, *, kind: str, grid: str, zeropoints: Sequence[float],
           psfs: Sequence[np.ndarray], threshold_sigma: float, min_prominence: float,
           radius_px: float, search_radius_px: float,
           noise_floor: np.ndarray | None = None) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Peaks on every stamp and their outcome against the truth (``kind``: blend or isolated).

    Secondary peaks must pass the :func:`prominent` contrast test. Only peaks within ``search_radius_px`` of
    the primary galaxy count: that is where a blend's companion can
    be; further out, the cutouts hold real neighbours, which are neither blends nor false positives.

    ``noise_floor`` (per stamp, filtered-noise sigma): the S/N unit is at least this. GAN images get the
    filtered noise of the hi-res images they imitate: a generator that draws less noise than the survey has
    (or none) must not make its peaks more significant than the data could.
    """
    stack, psf = detection_stack(cube, zeropoints, psfs)
    truth_xy = truth_positions(truth, grid)
    snr, sigma_f = filtered_snr(stack, psf, noise_floor)
    peaks = find_peaks(stack, psf, sigma_f, threshold_sigma=threshold_sigma, sigma_is_filtered=True)
    peaks = within(prominent(peaks, snr, min_prominence), truth_xy[:, 0], search_radius_px)
    if kind == "blend":
        table = classify_blends(peaks, truth_xy, radius_px)
    else:
        table = classify_isolated(peaks, truth_xy, radius_px)
    return table, peaks


# --------------------------------------------------------------------------------------- every method, both samples
@dataclass(frozen=True)
class MethodImages:
    """One detection method's images of a sample: cube (N, bands, n, n), the grid its truth positions are on
    (``hires`` or ``lowres``), AB zeropoint and PSF per band, pixel scale (arcsec) and band names."""

    cube: np.ndarray
    grid: str
    zeropoints: list[float]
    psfs: list[np.ndarray]
    pixel_scale: float
    bands: tuple[str, ...]


def method_images(hi: BlendSet, lo: CutoutSet, gans: Mapping[str, CutoutSet], *, survey: Survey, target: Survey,
                  study: Mapping[str, Any], psfs: Mapping[str, np.ndarray]) -> dict[str, MethodImages]:
    """The images of every method: hi/lo (the study's band), hi7/lo7 (every band), and each GAN in ``gans``.

    ``psfs``: the hi-res PSF per band (native grid); the low-res images get the target survey's PSF in every
    band, and their zeropoints are those of the hi-res stamps (flux-conserving degradation)."""
    lo_psf = lowres_psf(target, study["target"]["band"], study["target"]["profile"])
    images: dict[str, MethodImages] = {}
    for suffix, which in METHOD_BAND_SETS:
        bands = study_bands(survey, study, which)
        idx = [hi.bands.index(b) for b in bands]
        zps = [hi.zeropoints[i] for i in idx]
        images[f"hi{suffix}"] = MethodImages(hi.cube[:, idx], "hires", zps, [psfs[b] for b in bands],
                                             survey.pixel_scale, tuple(bands))
        images[f"lo{suffix}"] = MethodImages(lo.cube[:, idx], "lowres", zps, [lo_psf] * len(bands),
                                             target.pixel_scale, tuple(bands))
    for model, gan in gans.items():
        images[model] = MethodImages(gan.cube, "hires", list(gan.zeropoints), [psfs[b] for b in gan.bands],
                                     survey.pixel_scale, tuple(gan.bands))
    return images


def hi_noise(images: MethodImages) -> np.ndarray:
    """Filtered noise sigma per stamp of hi-res images: the noise floor of GAN images of the same bands."""
    return filtered_snr(*detection_stack(images.cube, images.zeropoints, images.psfs))[1]


def detect_sample(sample: str, hi: BlendSet, lo: CutoutSet, gans: Mapping[str, CutoutSet], *, survey: Survey,
                  target: Survey, study: Mapping[str, Any],
                  psfs: Mapping[str, np.ndarray]) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Peaks of every method on one sample (``blends`` or ``isolated``) and their outcome against the truth.

    Returns the sample's table (one row per stamp: the truth columns of :data:`TRUTH_COLUMNS`, then per method
    ``outcome_{method}``, ``n_peaks_{method}`` and, for the isolated sample, ``false_positive_{method}``) and the
    peaks, one frame (sample, method, index, x, y) per stamp with any. With ``detection.gan_noise_floor`` a GAN's
    S/N unit is at least the filtered noise of the hi-res images of its bands (:func:`detect`)."""
    kind = SAMPLE_KINDS[sample]
    det = study["detection"]
    search = search_radius_arcsec(study, survey.pixel_scale)
    truth = hi.truth
    table = truth[[c for c in truth.columns if c in TRUTH_COLUMNS]].copy()
    images = method_images(hi, lo, gans, survey=survey, target=target, study=study, psfs=psfs)
    floors = {}  # filtered hi-res noise per stamp, by band set: the floor of GAN images of those bands
    if det.get("gan_noise_floor", True):
        floors = {images[m].bands: hi_noise(images[m]) for m in ("hi", "hi7")}
    peak_rows = []
    for method, im in images.items():
        is_gan = method in gans
        floor = floors.get(im.bands) if is_gan else None
        if is_gan and floors and floor is None:
            log.warning("%s: no hi-res images of bands %s, so no noise floor", method, im.bands)
        result, peaks = detect(im.cube, truth, kind=kind, grid=im.grid, zeropoints=im.zeropoints, psfs=im.psfs,
                               threshold_sigma=det["threshold_sigma"], min_prominence=det["min_prominence_sigma"],
                               radius_px=det["match_radius_arcsec"] / im.pixel_scale,
                               search_radius_px=search / im.pixel_scale, noise_floor=floor)
        peak_rows += [pd.DataFrame({"sample": sample, "method": method, "index": i, "x": p[:, 0], "y": p[:, 1]})
                      for i, p in enumerate(peaks) if len(p)]
        table[f"outcome_{method}"] = result["outcome"].to_numpy()
        table[f"n_peaks_{method}"] = result["n_peaks"].to_numpy()
        if kind == "isolated":
            table[f"false_positive_{method}"] = result["false_positive"].to_numpy()
        log.info("%s %s: %s", sample, method, result["outcome"].value_counts().to_dict())
    return table, peak_rows


def detect_samples(samples: Mapping[str, tuple[BlendSet, CutoutSet, Mapping[str, CutoutSet]]], *, survey: Survey,
                   target: Survey, study: Mapping[str, Any],
                   psfs: Mapping[str, np.ndarray]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """:func:`detect_sample` on each sample (name -> hi-res set, low-res set, GAN sets by model): the tables by
    sample and every peak of every sample and method in one table (sample, method, index, x, y)."""
    tables, peak_rows = {}, []
    for sample, (hi, lo, gans) in samples.items():
        tables[sample], rows = detect_sample(sample, hi, lo, gans, survey=survey, target=target, study=study,
                                             psfs=psfs)
        peak_rows += rows
    if not peak_rows:
        raise StudyError("detection: no peak on any stamp of any method (empty or blank images?)")
    return tables, pd.concat(peak_rows, ignore_index=True)
