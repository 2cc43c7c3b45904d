"""The study's detection policy: peaks on hi-res, low-res and GAN stamps (matched filter, own noise with an optional
floor, prominence, companion search region), matched to the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.imaging.degrade import target_psf_image
from workflow_scripts.detection import (classify_blends, classify_isolated, find_peaks,
                                        truth_positions)
from workflow_scripts.surveys import Survey

from workflow_scripts.detection import detection_stack, filtered_snr, prominent, within

log = logging.getLogger(__name__)
#: PSF stamp of the low-resolution (target) images, in target pixels: +-3 FWHM of a 0.6" PSF at 0.18"/px
LOWRES_PSF_SIZE = 21


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
