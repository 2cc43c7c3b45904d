"""Drawing GalSim profiles through a measured effective PSF: archetypes into sky stamps (likelihood ratios),
catalogue mocks into whole fields (deep fields).

The PSF is the native-grid *effective* PSF of :mod:`workflow_scripts.data.psf` (optics convolved with the pixel
response), so profiles convolved with it are drawn with ``method="no_pixel"``: the pixel must not be applied twice.
GalSim does the convolution and the sub-pixel placement exactly (Fourier space), which a pixel-grid convolution of a
drawn galaxy would not for sources smaller than a pixel.
"""

from __future__ import annotations

import logging

import galsim
import numpy as np

from workflow_scripts.detection.sources import native
from workflow_scripts.errors import StudyError

log = logging.getLogger(__name__)


class RenderError(StudyError):
    """A profile cannot be drawn with what was given (a malformed PSF, a stamp that GalSim refuses)."""


def normalised_psf(psf: np.ndarray, what: str = "") -> np.ndarray:
    """``psf`` checked (2-D, odd sides so that it is centred on its central pixel, finite, positive sum) and
    normalised to sum 1; float64. ``what`` (e.g. a file) starts the error messages."""
    where = f"{what}: " if what else ""
    p = np.asarray(native(psf), dtype=np.float64)
    if p.ndim != 2:
        raise RenderError(f"{where}the PSF must be a 2-D image, got shape {p.shape}")
    if p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise RenderError(f"{where}the PSF image must have odd sides (centred on its central pixel), "
                          f"got {p.shape[0]} x {p.shape[1]}")
    total = float(np.sum(p))
    if not np.all(np.isfinite(p)) or total <= 0:
        raise RenderError(f"{where}the PSF image has non-finite pixels or a non-positive sum ({total})")
    if abs(total - 1.0) > 1e-3:
        log.info("%sPSF sums to %.6g; normalised to 1", where, total)
    return p / total


def psf_profile(psf: np.ndarray, pixel_scale: float, what: str = "") -> galsim.InterpolatedImage:
    """The native-grid effective PSF as a GalSim profile of flux 1 (convolve with it, then draw ``no_pixel``)."""
    return galsim.InterpolatedImage(galsim.Image(normalised_psf(psf, what), scale=float(pixel_scale)),
                                    normalization="flux")


def psf_half_light_radius(psf: np.ndarray, pixel_scale: float) -> float:
    """Radius (arcsec) around the central pixel holding half the flux of a native-grid PSF (pixel centres)."""
    p = normalised_psf(psf)
    cy, cx = (p.shape[0] - 1) / 2.0, (p.shape[1] - 1) / 2.0
    yy, xx = np.indices(p.shape)
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(p.ravel()[order])
    return float(r[order][np.searchsorted(cum, 0.5)] * pixel_scale)


def add_profile(image: galsim.Image, profile: galsim.GSObject, x: float, y: float, stamp: int) -> None:
    """Draw ``profile`` (already PSF-convolved, with its flux) on a ``stamp`` x ``stamp`` grid centred at the
    0-based pixel position (``x``, ``y``) of ``image`` and add the part that overlaps it (sources near an edge
    are cut, as a survey cuts them)."""
    try:
        img = profile.drawImage(nx=int(stamp), ny=int(stamp), scale=image.scale, method="no_pixel",
                                center=galsim.PositionD(float(x) + 1.0, float(y) + 1.0))
    except galsim.GalSimError as exc:
        raise RenderError(f"GalSim cannot draw a source at ({x:.1f}, {y:.1f}): {exc}") from exc
    overlap = img.bounds & image.bounds
    if overlap.isDefined():
        image[overlap] += img[overlap]


__all__ = ["RenderError", "add_profile", "normalised_psf", "psf_half_light_radius", "psf_profile"]
