"""Model-fitting photometry of blended galaxies: one interface, two engines.

ngmix (Sheldon 2015) is the field's standard and the paper's tool, but it is distributed on conda-forge only, not
on PyPI. So photometry goes through :func:`get_engine`, and ``photometry.engine`` in the config picks

* ``ngmix`` (:class:`~.ngmix_engine.NgmixEngine`): ngmix's own PSF fit and galaxy fits, all objects of a stamp
  jointly;
* ``mixture`` (:class:`~.mixture_engine.MixtureEngine`): ours, the same model family (gauss / exp / dev mixtures of
  Hogg & Lang 2013, parameters centre, g1, g2, T, flux) with an analytic convolution by a fitted PSF mixture, all
  objects of a stamp jointly and all stamps of a batch at once (Levenberg-Marquardt in torch, CPU or GPU);
* ``auto``: ngmix when it can be imported, else mixture.

Both take stamps ``(N, H, W)``, one ``(n_k, 2)`` array of (x, y) positions per stamp (pixels, centres at integers,
0-based; any number of objects per stamp, including none) and the per-stamp noise sigma, and return one row per
(stamp, object) with the columns :data:`RESULT_COLUMNS`. Bad data never raise: NaN / empty stamps, missing
positions, fits that do not converge or fail give rows with ``flags`` set (:data:`FLAG_NAMES`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd

from workflow_scripts.photometry.mixture_engine import (FLAG_BAD_COVARIANCE, FLAG_BAD_POSITION, FLAG_NAMES,
                                                        FLAG_NO_DATA, FLAG_NO_OBJECTS, FLAG_NONFINITE,
                                                        FLAG_NOT_CONVERGED, RESULT_COLUMNS, FitSettings,
                                                        MixtureEngine, resolve_device)
from workflow_scripts.photometry.mixtures import (PROFILES, T_PER_RE2, GaussianMixture, PhotometryError,
                                                  galaxy_mixture, render_mixture, shape_covariance)
from workflow_scripts.photometry.ngmix_engine import NGMIX_MISSING, NgmixEngine, ngmix_available
from workflow_scripts.photometry.psf_fit import DEFAULT_PSF_NGAUSS, PSFMixture, fit_psf_mixture

__all__ = [
    "ENGINES",
    "PhotometryEngine",
    "PhotometryError",
    "FitSettings",
    "MixtureEngine",
    "NgmixEngine",
    "PSFMixture",
    "GaussianMixture",
    "fit_psf_mixture",
    "galaxy_mixture",
    "render_mixture",
    "shape_covariance",
    "get_engine",
    "resolve_engine_name",
    "ngmix_available",
    "resolve_device",
    "flux_to_mag",
    "PROFILES",
    "T_PER_RE2",
    "RESULT_COLUMNS",
    "FLAG_NAMES",
    "FLAG_NO_DATA",
    "FLAG_NO_OBJECTS",
    "FLAG_NOT_CONVERGED",
    "FLAG_BAD_COVARIANCE",
    "FLAG_NONFINITE",
    "FLAG_BAD_POSITION",
    "DEFAULT_PSF_NGAUSS",
    "NGMIX_MISSING",
]

ENGINES = ("auto", "ngmix", "mixture")


class PhotometryEngine(Protocol):
    """What the rules need from an engine."""

    name: str
    settings: FitSettings
    last_stats: dict[str, Any]

    def fit(self, images: Any, positions: Any, noise_sigma: Any) -> pd.DataFrame: ...


def resolve_engine_name(name: str) -> str:
    """``auto`` -> ``ngmix`` when importable, else ``mixture``; ``ngmix`` without ngmix is an error."""
    if name not in ENGINES:
        raise PhotometryError(f"unknown photometry engine {name!r} (use one of {', '.join(ENGINES)})")
    if name == "auto":
        return "ngmix" if ngmix_available() else "mixture"
    if name == "ngmix" and not ngmix_available():
        raise PhotometryError(NGMIX_MISSING)
    return name


def get_engine(name: str, psf_image: np.ndarray, settings: FitSettings | None = None, *, psf_oversampling: int = 1,
               psf_ngauss: int = DEFAULT_PSF_NGAUSS, normalize_psf: bool = True, seed: int = 0) -> PhotometryEngine:
    """The engine ``name`` (auto | ngmix | mixture) for stamps whose effective PSF is ``psf_image`` (odd sides,
    centred; ``psf_oversampling`` samples per native pixel)."""
    settings = settings or FitSettings()
    resolved = resolve_engine_name(name)
    if resolved == "ngmix":
        return NgmixEngine(psf_image, settings, psf_oversampling=psf_oversampling, psf_ngauss=psf_ngauss, seed=seed)
    psf = fit_psf_mixture(psf_image, psf_ngauss, oversampling=psf_oversampling, normalize=normalize_psf)
    return MixtureEngine(psf, settings)


def flux_to_mag(flux: Any, zeropoint: float) -> np.ndarray:
    """AB magnitude of fluxes in image units of AB zeropoint ``zeropoint``; NaN where flux <= 0 or not finite."""
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(f) & (f > 0), zeropoint - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)
