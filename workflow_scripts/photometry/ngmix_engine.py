"""The ngmix engine: the same fits with ngmix's own API (the paper's tool).

ngmix is distributed on conda-forge only (``envs/photometry.yaml``); this module imports it lazily, so the rest of
the package works without it and :func:`ngmix_available` says whether it can be used.

* PSF: ngmix's coelliptical Gaussian-mixture fit (``CoellipFitter`` + ``CoellipPSFGuesser`` in a ``PSFRunner``
  with retries) of the PSF image; the galaxies are convolved with that mixture.
* One object in a stamp: ``ngmix.fitting.Fitter(model, prior)`` with its analytic Jacobian.
* Several objects: all fitted together, as MOF does: one parameter vector of 6 per object (7 for bdf: ngmix
  orders them row, col, g1, g2, T, fracdev, flux), the residual vector is every object's ``PriorSimpleSep`` (bdf:
  ``PriorBDFSep``) terms followed by the pixels of the sum of the objects' convolved ``GMix`` models
  (``GMix.fill_fdiff``), minimised by ngmix's bounded Levenberg-Marquardt (``run_leastsq``).

Priors, as close to the mixture engine's as ngmix offers: ``CenPrior`` (sigma ``centre_sigma``) at each given
position, ``GPriorBA(g_sigma)`` on the shape, a flat prior on T (0.01 T_psf to 10^4 T_psf), a normal prior on the
flux (width ``flux_sigma_rel`` x max(|F_0|, PSF-flux noise)); bdf: a flat prior on fracdev in [0, 1], as the
authors' code had it (the mixture engine bounds fracdev to [0, 1] and adds a weak N(0.5, ``fracdev_sigma``) that
keeps its system regular). Flux errors come from the unscaled covariance (``pars_cov0``), as in the mixture
engine. ngmix parameters are (row, col) = (y, x) with a unit Jacobian at the stamp origin, so positions are pixel
coordinates with centres at integers.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.photometry.mixture_engine import (_OUT_KEYS, FLAG_NONFINITE, FLAG_NOT_CONVERGED, FitSettings,
                                                        build_table, prepare_inputs)
from workflow_scripts.photometry.mixtures import PhotometryError, profile

log = logging.getLogger(__name__)

__all__ = ["NgmixEngine", "ngmix_available", "NGMIX_MISSING"]

NGMIX_MISSING = ("ngmix is not installed: it is distributed on conda-forge only (`conda env create -f "
                 "envs/photometry.yaml`, or run with --use-conda); use photometry.engine: mixture or auto")
#: residual of a pixel or prior term when ngmix refuses the parameters (|g| >= 1, a singular covariance)
_BAD_RESIDUAL = 1e5


def ngmix_available() -> bool:
    return importlib.util.find_spec("ngmix") is not None


def _ngmix() -> Any:
    try:
        import ngmix
    except ImportError:
        raise PhotometryError(NGMIX_MISSING) from None
    return ngmix


class NgmixEngine:
    """Fits with ngmix (see the module docstring). ``psf_image``: the effective PSF, odd sides, centred;
    ``psf_oversampling``: its samples per native pixel; ``psf_ngauss``: Gaussians of ngmix's PSF fit."""

    name = "ngmix"

    def __init__(self, psf_image: np.ndarray, settings: FitSettings | None = None, *, psf_oversampling: int = 1,
                 psf_ngauss: int = 3, seed: int = 0) -> None:
        self.ngmix = _ngmix()
        self.settings = settings or FitSettings()
        self.rng = np.random.RandomState(seed)
        self.psf_gmix, self.psf_obs = self._fit_psf(np.asarray(psf_image, dtype=np.float64), int(psf_oversampling),
                                                    int(psf_ngauss))
        self.T_psf = float(self.psf_gmix.get_T())
        self.bdf = profile(self.settings.model).free_fracdev
        self.npar = 7 if self.bdf else 6              # ngmix: (row, col, g1, g2, T, [fracdev,] flux)
        self.last_stats: dict[str, Any] = {}

    def _fit_psf(self, image: np.ndarray, k: int, ngauss: int) -> tuple[Any, Any]:
        ng = self.ngmix
        img = image / image.sum() * k * k
        cen = (np.array(img.shape) - 1) / 2.0
        jac = ng.DiagonalJacobian(row=cen[0], col=cen[1], scale=1.0 / max(k, 1))
        obs = ng.Observation(img, weight=np.full(img.shape, 1e6), jacobian=jac)
        runner = ng.runners.PSFRunner(fitter=ng.fitting.CoellipFitter(ngauss=ngauss),
                                      guesser=ng.guessers.CoellipPSFGuesser(rng=self.rng, ngauss=ngauss), ntry=5)
        res = runner.go(obs)
        if res["flags"] != 0:
            raise PhotometryError(f"ngmix could not fit the PSF image (flags {res['flags']})")
        gm = res.get_gmix()
        psf_obs = ng.Observation(np.zeros((3, 3)), jacobian=ng.DiagonalJacobian(row=1, col=1, scale=1.0))
        psf_obs.set_gmix(gm)
        return gm, psf_obs

    # --------------------------------------------------------------------------------------- priors
    def _prior(self, x0: float, y0: float, f0: float, f_noise: float) -> Any:
        ng, st = self.ngmix, self.settings
        common = {"cen_prior": ng.priors.CenPrior(y0, x0, st.centre_sigma, st.centre_sigma, rng=self.rng),
                  "g_prior": ng.priors.GPriorBA(st.g_sigma, rng=self.rng),
                  "T_prior": ng.priors.FlatPrior(0.01 * self.T_psf, 1e4 * self.T_psf, rng=self.rng),
                  "F_prior": ng.priors.Normal(f0, st.flux_sigma_rel * max(abs(f0), f_noise), rng=self.rng)}
        if self.bdf:
            return ng.joint_prior.PriorBDFSep(fracdev_prior=ng.priors.FlatPrior(0.0, 1.0, rng=self.rng), **common)
        return ng.joint_prior.PriorSimpleSep(**common)

    def _pars(self, x0: float, y0: float, T: float, flux: float) -> list[float]:
        """ngmix's parameters of a round object (bdf: fracdev 0.5)."""
        return [y0, x0, 0.0, 0.0, T] + ([0.5] if self.bdf else []) + [flux]

    def _guess(self, obs: Any, positions: np.ndarray, sigma: float) -> np.ndarray:
        """Round objects of T = T_psf; fluxes solved linearly for PSF-convolved templates at the positions."""
        ng = self.ngmix
        shape = obs.image.shape
        templates = []
        for x0, y0 in positions:
            gm = ng.GMixModel(self._pars(x0, y0, self.T_psf, 1.0), self.settings.model).convolve(self.psf_gmix)
            templates.append(gm.make_image(shape, jacobian=obs.jacobian).ravel())
        A = np.array(templates)
        w = obs.weight.ravel()
        M = (A * w) @ A.T + 1e-9 * np.eye(len(A))
        f = np.linalg.solve(M, (A * w) @ obs.image.ravel())
        return np.concatenate([self._pars(x0, y0, self.T_psf, f[k]) for k, (x0, y0) in enumerate(positions)])

    # --------------------------------------------------------------------------------------- fitting
    def fit(self, images: Any, positions: Sequence[Any], noise_sigma: Any) -> pd.DataFrame:
        """Same arguments and result as :meth:`MixtureEngine.fit`."""
        t0 = time.perf_counter()
        inp = prepare_inputs(images, positions, noise_sigma)
        n = inp.images.shape[0]
        out: dict[str, list[Any]] = {k: [None] * n for k in _OUT_KEYS}
        n_obj = 0
        for s in range(n):
            pos = inp.positions[s]
            if not inp.stamp_ok[s] or len(pos) == 0:
                continue
            res = self._fit_stamp(inp.images[s], inp.valid[s], float(inp.sigma[s]), pos)
            for key in out:
                out[key][s] = res[key]
            n_obj += len(pos)
        dt = time.perf_counter() - t0
        self.last_stats = {"seconds": dt, "objects": n_obj, "objects_per_second": n_obj / dt if dt > 0 else math.nan,
                           "device": "cpu"}
        return build_table(inp, out, engine=self.name, model=self.settings.model)

    def _fit_stamp(self, image: np.ndarray, valid: np.ndarray, sigma: float, pos: np.ndarray) -> dict[str, Any]:
        ng = self.ngmix
        K = len(pos)
        weight = np.where(valid, 1.0 / sigma**2, 0.0)
        obs = ng.Observation(image, weight=weight, jacobian=ng.DiagonalJacobian(row=0, col=0, scale=1.0),
                             psf=self.psf_obs)
        f_noise = sigma * math.sqrt(2.0 * math.pi * self.T_psf)
        guess = self._guess(obs, pos, sigma)
        npar = self.npar
        priors = [self._prior(x0, y0, guess[npar * k + npar - 1], f_noise) for k, (x0, y0) in enumerate(pos)]
        fit_pars = {"maxfev": 200 * self.settings.max_iter, "ftol": 1e-6, "xtol": 1e-6}
        if K == 1:
            fitter = ng.fitting.Fitter(model=self.settings.model, prior=priors[0], fit_pars=fit_pars)
            res = fitter.go(obs, guess)
            pars, flags, nfev = np.asarray(res["pars"], float), int(res["flags"]), int(res.get("nfev", 0))
            cov = res.get("pars_cov0")
        else:
            pars, cov, flags, nfev = self._joint(obs, priors, guess, fit_pars)
        npix = int(valid.sum())
        chi2 = self._chi2(obs, pars) if np.isfinite(pars).all() else math.nan
        dof = max(npix - npar * K, 1)
        P = pars.reshape(K, npar)
        ferr = np.full(K, math.nan)
        if cov is not None and np.all(np.isfinite(cov)):
            var = np.diag(np.asarray(cov))[npar - 1::npar]
            ferr = np.where(var > 0, np.sqrt(np.abs(var)), math.nan)
        ok = flags == 0 and np.isfinite(pars).all()
        out_flags = (0 if ok else FLAG_NOT_CONVERGED) | (0 if np.isfinite(pars).all() else FLAG_NONFINITE)
        return {"x": P[:, 1], "y": P[:, 0], "g1": P[:, 2], "g2": P[:, 3], "T": P[:, 4],
                "fracdev": P[:, 5] if self.bdf else np.full(K, math.nan), "flux": P[:, npar - 1],
                "flux_err": ferr, "chi2_dof": chi2 / dof, "converged": ok, "flags": out_flags, "n_iter": nfev}

    def _gmix(self, pars: np.ndarray) -> Any:
        ng = self.ngmix
        n = self.npar
        full = [ng.GMixModel(pars[n * k:n * k + n], self.settings.model).convolve(self.psf_gmix).get_full_pars()
                for k in range(len(pars) // n)]
        return ng.GMix(pars=np.concatenate(full))

    def _chi2(self, obs: Any, pars: np.ndarray) -> float:
        try:
            model = self._gmix(pars).make_image(obs.image.shape, jacobian=obs.jacobian)
        except self.ngmix.GMixRangeError:
            return math.nan
        return float((((obs.image - model) ** 2) * obs.weight).sum())

    def _joint(self, obs: Any, priors: list[Any], guess: np.ndarray,
               fit_pars: dict[str, Any]) -> tuple[np.ndarray, Any, int, int]:
        ng = self.ngmix
        n_prior = (self.npar - 1) * len(priors)      # PriorSimpleSep: 5 terms, PriorBDFSep: 6
        size = n_prior + obs.image.size

        def fdiff(pars: np.ndarray) -> np.ndarray:
            out = np.zeros(size)
            try:
                start = 0
                for k, prior in enumerate(priors):
                    start += prior.fill_fdiff(pars[self.npar * k:self.npar * (k + 1)], out[start:])
                self._gmix(pars).fill_fdiff(obs, out, start=n_prior)
            except ng.GMixRangeError:
                out[:] = _BAD_RESIDUAL
            return np.nan_to_num(out, nan=_BAD_RESIDUAL, posinf=_BAD_RESIDUAL, neginf=-_BAD_RESIDUAL)

        res = ng.fitting.leastsqbound.run_leastsq(fdiff, guess=guess, n_prior_pars=n_prior, **fit_pars)
        return np.asarray(res["pars"], float), res.get("pars_cov0"), int(res["flags"]), int(res.get("nfev", 0))
