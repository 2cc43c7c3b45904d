"""A Gaussian mixture fitted to a PSF image, for analytic convolution with the galaxy mixtures.

The PSF images of this pipeline are *effective* PSFs (optics convolved with the pixel response: the photutils
EPSF of :mod:`workflow_scripts.data.psf`, or a GalSim ``drawImage`` of the target PSF). The mixture is therefore fitted
to the values at the pixel centres, with no further pixel integration, and a galaxy mixture convolved with it and
evaluated at pixel centres is the pixel-integrated galaxy image (exactly, up to the quality of the PSF fit). An
oversampled EPSF (``oversampling`` > 1, values per native pixel) constrains the mixture between native pixel
centres too, which matters for undersampled PSFs (HST: FWHM ~1.5 px).

Model: ``n_gauss`` Gaussians with one common centre, each with its own amplitude (> 0) and covariance
(log-Cholesky parameters, so every covariance stays positive definite), least squares on the pixel values
(:func:`scipy.optimize.least_squares`, a few starting points, the best kept). The centre is recorded in
:attr:`PSFMixture.centre` and dropped from the mixture used for fitting galaxies (a constant sub-pixel offset
of the PSF moves every fitted position by the same amount and changes no flux).

Normalisation: the amplitudes are kept as fitted, *not* rescaled to sum 1 (ngmix rescales its PSF mixtures).
A few Gaussians cannot follow a Moffat's wings, so the fitted mixture misses part of the wing light that the PSF
image holds (3 Gaussians on a beta = 3 Moffat: amplitudes sum ~0.994 on a stamp holding 99.98 % of the light).
Rescaling would move that light into the core, where the fit to a galaxy weighs it most, and bias every flux
low by the same amount; as fitted, fluxes of GalSim galaxies come out within 0.1 % (tested against truth in
``tests/test_photometry_truth.py``). Either way a flux is only as right as the PSF image's own normalisation:
a PSF stamp that cuts off x % of the light (normalised to sum 1 within the stamp) makes every flux x % low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from workflow_scripts.photometry.mixtures import GaussianMixture, PhotometryError

__all__ = ["PSFMixture", "fit_psf_mixture", "DEFAULT_PSF_NGAUSS"]

#: Gaussians of the PSF mixture: 3 model a Moffat (beta = 3) core and wings to ~1e-3 of the peak
DEFAULT_PSF_NGAUSS = 3
#: starting widths (multiples of the PSF's half-light sigma) and amplitudes of the components, per mixture size
_START_SCALES = {1: ([1.0],), 2: ([0.8, 1.8], [0.6, 1.3]), 3: ([0.6, 1.0, 2.0], [0.5, 1.1, 2.6], [0.7, 1.4, 3.2]),
                 4: ([0.5, 0.9, 1.6, 3.0], [0.6, 1.1, 2.0, 4.0]), 5: ([0.4, 0.7, 1.1, 1.9, 3.5],)}


@dataclass
class PSFMixture:
    """Fitted PSF: a centred :class:`GaussianMixture` (amplitudes as fitted, see the module notes), the fitted
    centre offset from the image's central pixel (x, y, native px), and the largest absolute residual relative to
    the PSF's peak."""

    mixture: GaussianMixture
    centre: np.ndarray
    max_residual: float
    rms_residual: float

    @property
    def n(self) -> int:
        return self.mixture.n

    @property
    def T(self) -> float:
        return self.mixture.T

    @property
    def amp(self) -> np.ndarray:
        return self.mixture.amp

    @property
    def cov(self) -> np.ndarray:
        return self.mixture.cov


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] % 2 == 0 or img.shape[1] % 2 == 0:
        raise PhotometryError(f"the PSF image must be 2-D with odd sides (centred on its central pixel), got "
                              f"shape {img.shape}")
    if not np.isfinite(img).all():
        raise PhotometryError("the PSF image has NaN or infinite pixels")
    if img.sum() <= 0 or img.max() <= 0:
        raise PhotometryError("the PSF image must have a positive sum")
    return img


def _unpack(q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cx, cy = q[0], q[1]
    amp = np.exp(q[2:2 + n])
    l = q[2 + n:].reshape(n, 3)
    l11, l21, l22 = np.exp(l[:, 0]), l[:, 1], np.exp(l[:, 2])
    cov = np.empty((n, 2, 2))
    cov[:, 0, 0] = l11 * l11
    cov[:, 0, 1] = cov[:, 1, 0] = l11 * l21
    cov[:, 1, 1] = l21 * l21 + l22 * l22
    return np.array([cx, cy]), amp, cov


def _model(q: np.ndarray, n: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    c, amp, cov = _unpack(q, n)
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    ixx, iyy, ixy = cov[:, 1, 1] / det, cov[:, 0, 0] / det, -cov[:, 0, 1] / det
    dx = (xs - c[0])[None, None, :]
    dy = (ys - c[1])[None, :, None]
    q2 = ixx[:, None, None] * dx * dx + 2 * ixy[:, None, None] * dx * dy + iyy[:, None, None] * dy * dy
    return ((amp / (2 * math.pi * np.sqrt(det)))[:, None, None] * np.exp(-0.5 * q2)).sum(0)


def _half_light_sigma(img: np.ndarray, scale: float) -> float:
    """Sigma of the Gaussian with the same area above half maximum (a robust first guess)."""
    area = float((img >= 0.5 * img.max()).sum()) * scale * scale
    fwhm = 2.0 * math.sqrt(area / math.pi)
    return max(fwhm / 2.3548, 0.3)


def fit_psf_mixture(image: np.ndarray, n_gauss: int = DEFAULT_PSF_NGAUSS, *, oversampling: int = 1,
                    normalize: bool = True) -> PSFMixture:
    """Fit ``n_gauss`` co-centred Gaussians to an effective PSF image (odd sides, centred on the central pixel).

    ``oversampling``: samples per native pixel of ``image`` (values per native pixel, as photutils EPSFs; the
    image then sums to ``oversampling**2``). Coordinates and covariances of the result are in native pixels.
    ``normalize``: divide the image by its sum first (the pipeline's PSFs are normalised within their stamp);
    False keeps its values, e.g. a GalSim render whose stamp misses a little of the wings.
    """
    if not 1 <= int(n_gauss) <= 5:
        raise PhotometryError(f"psf n_gauss must be between 1 and 5, got {n_gauss}")
    n = int(n_gauss)
    k = max(int(oversampling), 1)
    img = _check_image(image)
    if normalize:
        img = img / (img.sum() / (k * k))
    h, w = img.shape
    xs = (np.arange(w) - (w - 1) / 2.0) / k
    ys = (np.arange(h) - (h - 1) / 2.0) / k
    s0 = _half_light_sigma(img, 1.0 / k)
    peak = img.max()
    best = None
    for scales in _START_SCALES[n]:
        sig = s0 * np.asarray(scales)
        amp0 = np.full(n, 1.0 / n)
        q0 = np.concatenate([[0.0, 0.0], np.log(amp0),
                             np.column_stack([np.log(sig), np.zeros(n), np.log(sig)]).ravel()])
        try:
            sol = least_squares(lambda q: (_model(q, n, xs, ys) - img).ravel() / peak, q0, method="lm",
                                x_scale="jac", max_nfev=300 * (1 + n), ftol=1e-10, xtol=1e-10, gtol=1e-10)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(sol.cost) and (best is None or sol.cost < best.cost):
            best = sol
    if best is None:
        raise PhotometryError("the PSF mixture fit failed from every starting point")
    centre, amp, cov = _unpack(best.x, n)
    resid = _model(best.x, n, xs, ys) - img
    order = np.argsort(np.trace(cov, axis1=1, axis2=2))
    mix = GaussianMixture(amp[order], np.zeros(2), cov[order])
    return PSFMixture(mixture=mix, centre=centre, max_residual=float(np.abs(resid).max() / peak),
                      rms_residual=float(np.sqrt((resid ** 2).mean()) / peak))
