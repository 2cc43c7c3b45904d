"""True PSFs of the embedded surveys.

The optical PSF of a band is a Moffat profile (beta = 3) whose FWHM is exactly the band's configured
``psf_fwhm``; it is truncated far in the wings (:data:`PSF_TRUNC_FWHM`), which keeps FFTs small and does not change
the FWHM. A Moffat with beta ~ 3 is the usual stand-in for a diffraction-limited core plus scattered wings of
HST/JWST PSFs at these samplings (e.g. the CANDELS and JADES simulation papers); the exact Airy rings do not
matter for the studies here.

Two images of each PSF are written next to the mosaics as truth for PSF-estimation tests. Both are the
*effective* PSF (optics convolved with the native pixel, what a star looks like in the mosaic, and what photutils'
EPSFBuilder estimates):

* native: drawn on the native pixel grid, odd side, centred on the central pixel, sum 1;
* oversampled x :data:`PSF_OVERSAMPLING`: the same effective PSF sampled every 1/oversampling native pixels, so
  that every ``oversampling``-th sample starting at the centre reproduces the native image; its values are
  fractions of the flux per *native* pixel (sum ~ oversampling**2).
"""

from __future__ import annotations

import math
import warnings

import galsim
import numpy as np

from workflow_scripts.surveys import Survey

#: Moffat index of the optical PSF (Moffat 1969; beta ~ 2.5-3.5 fits HST/JWST cores and near wings).
PSF_MOFFAT_BETA = 3.0
#: Truncation radius in FWHM: a beta = 3 Moffat holds 99.93 % of its flux within 6 FWHM.
PSF_TRUNC_FWHM = 6.0
#: Smallest side (native pixels, odd) of the written PSF image: the config's EPSF stamp size.
PSF_MIN_STAMP = 25
#: Oversampling of the written oversampled PSF (photutils EPSF convention).
PSF_OVERSAMPLING = 4
#: Numerical FWHM check: sampling (in FWHM), half-width (in FWHM) and sub-pixel offset of the drawn profile;
#: 1/40 FWHM sampling makes the radial-profile estimate accurate to ~0.1 %.
FWHM_MEASURE_SAMPLING = 1.0 / 40.0
FWHM_MEASURE_HALF_WIDTH = 3.0
FWHM_MEASURE_OFFSET = (0.2, 0.33)


def optical_psf(survey: Survey, band: str) -> galsim.GSObject:
    """The band's optical PSF: Moffat(beta=3) with FWHM = psf_fwhm (arcsec), unit flux."""
    fwhm = survey.band(band).psf_fwhm
    return galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=fwhm, trunc=PSF_TRUNC_FWHM * fwhm)


def psf_stamp_size(survey: Survey, band: str) -> int:
    """Odd side (native pixels) of the written PSF image: the whole truncated profile, at least 25 px."""
    radius = PSF_TRUNC_FWHM * survey.psf_fwhm_pixels(band)
    return max(PSF_MIN_STAMP, 2 * math.ceil(radius) + 1)


def draw_psf_native(survey: Survey, band: str) -> np.ndarray:
    """Effective PSF on the native pixel grid (pixel-convolved by FFT like the mosaics' stars, centred, sum 1)."""
    n = psf_stamp_size(survey, band)
    # Exactly how stars are drawn into the mosaics (delta function * PSF, pixel-convolved FFT).
    star = galsim.Convolve(galsim.DeltaFunction(), optical_psf(survey, band))
    img = star.drawImage(nx=n, ny=n, scale=survey.pixel_scale, method="fft")
    arr = img.array.astype(np.float64)
    return (arr / arr.sum()).astype(np.float32)


def draw_psf_oversampled(survey: Survey, band: str, oversampling: int = PSF_OVERSAMPLING) -> np.ndarray:
    """Effective PSF sampled at 1/oversampling native pixels (values = flux fraction per native pixel)."""
    n = psf_stamp_size(survey, band) * oversampling + 1
    scale = survey.pixel_scale
    # FFT (not real space) like the mosaics; GalSim warns that both profiles have hard edges, which is fine:
    # the FFT is done at the oversampled scale, far beyond the pixel's first sinc zero.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", galsim.GalSimWarning)
        eff = galsim.Convolve(optical_psf(survey, band), galsim.Pixel(scale), real_space=False)
        img = eff.drawImage(nx=n, ny=n, scale=scale / oversampling, method="no_pixel")
    # no_pixel gives I(x) * (scale/oversampling)^2; the native-pixel fraction is I(x) * scale^2.
    return (img.array * oversampling**2).astype(np.float32)


def _fwhm_of(profile: galsim.GSObject, sample: float) -> float:
    # Draw the surface brightness finely (no pixel integration) and read the half-maximum radius off the
    # radial profile; the small offset makes radii distinct, as GalSim's own calculateFWHM does.
    n = 2 * math.ceil(FWHM_MEASURE_HALF_WIDTH / FWHM_MEASURE_SAMPLING) + 1
    img = profile.drawImage(nx=n, ny=n, scale=sample, method="sb", dtype=float,
                            offset=galsim.PositionD(*FWHM_MEASURE_OFFSET))
    centre = img.true_center + galsim.PositionD(*FWHM_MEASURE_OFFSET)
    return float(img.calculateFWHM(center=centre, Imax=profile.xValue(galsim.PositionD(0.0, 0.0))))


def measured_fwhm(survey: Survey, band: str, effective: bool = False) -> float:
    """FWHM (arcsec) of the optical PSF (or, with ``effective``, the pixel-convolved one) measured numerically.

    The profile is drawn at 1/:data:`FWHM_MEASURE_SAMPLING` of the configured FWHM and measured with GalSim's
    ``Image.calculateFWHM``; this checks the Moffat scaling independently of its analytic ``fwhm`` attribute.
    """
    fwhm = survey.band(band).psf_fwhm
    profile = optical_psf(survey, band)
    if effective:
        profile = galsim.Convolve(profile, galsim.Pixel(survey.pixel_scale))
    return _fwhm_of(profile, fwhm * FWHM_MEASURE_SAMPLING)
