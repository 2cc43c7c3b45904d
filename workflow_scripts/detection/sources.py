"""Source catalogues of a mosaic with sep (SExtractor as a library): background, detection, circular apertures.

* :func:`measure_background`: sep.Background (mesh ``box`` px, median filter ``filter_size`` meshes) and the
  global background rms;
* :func:`detect_sources`: sep.extract on the background-subtracted image, threshold in units of the global
  background rms (``thresh_sigma``), ``minarea`` connected pixels, sep's multi-threshold deblending;
* :func:`aperture_fluxes`: sep.sum_circle on background-subtracted images with the per-pixel rms map as the error.

sep rejects big-endian arrays (astropy's FITS data): every array is converted to native byte order here.
Pixel coordinates are 0-based with pixel centres at integers (sep's and astropy's ``origin=0``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sep

from workflow_scripts.errors import PipelineError

log = logging.getLogger(__name__)

#: sep's default cap on pixels above threshold; raised for deep mosaics (sep fails with "internal pixel buffer full")
PIXSTACK = 10_000_000
#: sep's cap on sub-objects in deblending
SUB_OBJECT_LIMIT = 4096


class DetectionError(PipelineError):
    """A mosaic in which no source can be found, or inputs sep cannot use."""


def native(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous float32/float64 array in native byte order (sep needs it)."""
    arr = np.ascontiguousarray(a)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float32)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


@dataclass(frozen=True)
class Background:
    """The sep background of one image: its map, its rms map and the global rms (``globalrms``)."""

    level: np.ndarray
    rms: np.ndarray
    global_rms: float


def _mask(image: np.ndarray, rms: np.ndarray | None) -> np.ndarray:
    bad = ~np.isfinite(image)
    if rms is not None:
        bad |= ~(np.isfinite(rms) & (rms > 0))
    return bad


def measure_background(image: np.ndarray, rms: np.ndarray | None = None, *, box: int = 64,
                       filter_size: int = 3) -> Background:
    """sep.Background of ``image`` (no-data pixels, NaN or rms <= 0, masked)."""
    img = native(image).astype(np.float32, copy=False)
    mask = _mask(img, None if rms is None else native(rms))
    img = np.where(mask, 0.0, img).astype(np.float32)
    bkg = sep.Background(img, mask=mask, bw=int(box), bh=int(box), fw=int(filter_size), fh=int(filter_size))
    return Background(level=bkg.back(), rms=bkg.rms(), global_rms=float(bkg.globalrms))


def detect_sources(image: np.ndarray, rms: np.ndarray | None = None, *, thresh_sigma: float = 2.0,
                   minarea: int = 5, deblend_nthresh: int = 32, deblend_cont: float = 0.005,
                   background_box: int = 64, background_filter: int = 3, subtract_background: bool = True,
                   filter_kernel: np.ndarray | None = None, what: str = "image") -> tuple[pd.DataFrame, Background]:
    """Sources of ``image`` above ``thresh_sigma`` times the global background rms, with at least ``minarea``
    pixels; returns the sep object table (x, y, a, b, theta, flux, npix, peak, flag ...) and the background.

    ``filter_kernel``: sep's detection filter (None: sep's default 3x3 pyramid). ``what`` names the image in
    errors (a file name).
    """
    if image.ndim != 2:
        raise DetectionError(f"{what}: detection needs a 2-D image, got shape {image.shape}")
    bkg = measure_background(image, rms, box=background_box, filter_size=background_filter)
    if not np.isfinite(bkg.global_rms) or bkg.global_rms <= 0:
        raise DetectionError(f"{what}: the background rms is {bkg.global_rms} (an empty or constant image?)")
    img = native(image).astype(np.float32, copy=False)
    mask = _mask(img, None if rms is None else native(rms))
    data = img - bkg.level if subtract_background else img
    data = np.where(mask, 0.0, data).astype(np.float32)
    sep.set_extract_pixstack(PIXSTACK)
    sep.set_sub_object_limit(SUB_OBJECT_LIMIT)
    kwargs = {} if filter_kernel is None else {"filter_kernel": native(filter_kernel)}
    objects = sep.extract(data, float(thresh_sigma), err=bkg.global_rms, mask=mask, minarea=int(minarea),
                          deblend_nthresh=int(deblend_nthresh), deblend_cont=float(deblend_cont), **kwargs)
    table = pd.DataFrame({name: objects[name] for name in objects.dtype.names})
    log.info("%s: %d sources above %.2g x %.4g (global rms), minarea %d", what, len(table), thresh_sigma,
             bkg.global_rms, minarea)
    if table.empty:
        raise DetectionError(f"{what}: no source found above {thresh_sigma:g} sigma (global rms "
                             f"{bkg.global_rms:.4g}) with {minarea} pixels; is the image blank or the threshold "
                             "too high?")
    return table, bkg


def aperture_fluxes(image: np.ndarray, rms: np.ndarray, x: np.ndarray, y: np.ndarray, radius_px: float, *,
                    background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Circular aperture fluxes at ``(x, y)`` (sep.sum_circle, exact pixel overlap) and their errors from the rms
    map; returns (flux, flux_err, sep flag). ``background``: a map subtracted first (None: none)."""
    img = native(image).astype(np.float64)
    if background is not None:
        img = img - native(background)
    err = native(rms).astype(np.float64)
    mask = _mask(img, err)
    img = np.where(mask, 0.0, img)
    err = np.where(mask, 0.0, err)
    flux, ferr, flag = sep.sum_circle(img, np.asarray(x, np.float64), np.asarray(y, np.float64), float(radius_px),
                                      err=err, mask=mask, subpix=0)
    return flux, ferr, flag


def ab_magnitude(flux: np.ndarray, zeropoint: float) -> np.ndarray:
    """AB magnitude of fluxes in the image unit whose AB zeropoint is ``zeropoint``; NaN where flux <= 0."""
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, zeropoint - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


__all__ = ["Background", "DetectionError", "aperture_fluxes", "ab_magnitude", "detect_sources",
           "measure_background", "native"]
