"""The built-in photometry engine: Gaussian-mixture galaxy models fitted to batches of stamps in torch.

Model
-----
Each object of a stamp is a galaxy mixture of :mod:`.mixtures` (``gauss`` / ``exp`` / ``dev`` / ``bdf``) with
parameters (x, y, g1, g2, T, flux) and, for bdf, the bulge fraction fracdev, convolved analytically with the PSF
mixture of :mod:`.psf_fit` (covariances add) and evaluated at the pixel centres: the PSF mixture is fitted to the
*effective* PSF, so this is the pixel-integrated image. All objects of a stamp are fitted jointly (their model
images add), and all stamps of a batch at once.

Internally the shape is the conformal ellipticity eta (|g| = tanh(|eta| / 2), so |g| < 1 always) and the size is
log T; flux stays linear so that its error comes straight from the covariance. fracdev stays linear too, bounded
to [0, 1] as in ngmix (the authors' code: a flat prior on [0, 1]): a trial step is clipped to the bounds, and a
bulge fraction at a bound whose gradient points outwards is held there for that step (its row and column of the
system are taken out), for the convergence test and for the errors. A logistic fracdev, tried first, needed
over 50 iterations on disks whose fracdev goes to 0, where its curvature vanishes.

Fit
---
Levenberg-Marquardt on chi^2 = sum_pixels ((data - model) / sigma)^2 + sum_priors ((p - mu) / s)^2, with an
analytic Jacobian, one damping factor per stamp, every stamp of the batch advancing together (a stamp that has
converged stops costing work). Priors (:class:`FitSettings`): centre N(peak, ``centre_sigma``) per axis, shape
N(0, 2 atanh(``g_sigma``)) on eta (~N(0, ``g_sigma``) on g for small g), size N(log T_0, ``log_T_sigma``) on
log T, flux N(F_0, ``flux_sigma_rel`` x max(|F_0|, PSF-flux noise)) - weak by default; bdf: fracdev N(0.5,
``fracdev_sigma``) (1 by default: nearly flat on [0, 1], it only keeps the system regular where the data do not
constrain it), and fits start at fracdev 0.5. The start: positions at the
peaks, round, the size T_0 that gives the best chi^2 on a grid of multiples of the PSF's T with the fluxes F_0
solved linearly (all objects of a stamp share the grid value).

Cost: the model of a stamp is a sum over objects and components of exp(quadratic form), built from 1-D row and
column terms plus one outer product per component. Every Jacobian row is a polynomial of degree <= 2 in the
offsets (dx, dy) from the object's centre whose coefficients are sums over the components of G times
per-component factors (the derivatives by the galaxy's second moments, the chain rule to eta and ln T and the
flux folded in): 16 such sums (bdf: 17, the components weighted by the bulge fraction, plus d / dfracdev), one
batched matrix product (16 x components times components x pixels), then a few multiply-adds per pixel. So the
work per pixel and component is a few multiply-adds and one exp, on CPU or GPU.
On stamps of 32 px or more, components that fall below exp(-18) (float32; exp(-30) in float64) of their peak
within a window around the centre covering at most half the stamp are evaluated in that window only and added in.
The large arrays (component values, the 16 sums, the Jacobian) are written into working memory kept for the whole
fit instead of fresh tensors per evaluation (1.2-1.6x faster on 48 and 64 px stamps, measured).

Outputs and failure handling
----------------------------
Flux errors are sqrt of the flux diagonal of the inverse of J^T J + prior precision at the solution (the
posterior covariance for the given noise sigma; not rescaled by chi^2/dof). A fit is ``converged`` when the
Gauss-Newton step that remains at the final parameters moves no object's centre or flux by more than
sqrt(``converged_decrement``) of its standard error (0.1 sigma by default); otherwise it is flagged
:data:`FLAG_NOT_CONVERGED` and still reported. The test is in units of each measured quantity's own error, so it
holds at any S/N and in float32; shape and size are left out on purpose: an unresolved object's ln T drifts down
a valley where chi^2 hardly changes (the whole decrement g^T H^-1 g stays large for many iterations) while its
centre and flux are settled - the fits that a whole-decrement test flagged by the percent on low-res blends.
Pixels that are NaN or infinite get zero weight; a stamp with no usable pixel or a bad noise sigma gives
rows flagged :data:`FLAG_NO_DATA` with NaN values, a stamp without positions one row flagged
:data:`FLAG_NO_OBJECTS`. Nothing raises for bad data: only bad arguments (shapes) raise :class:`PhotometryError`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from workflow_scripts.photometry.mixtures import PhotometryError, profile
from workflow_scripts.photometry.psf_fit import PSFMixture

log = logging.getLogger(__name__)

__all__ = [
    "FitSettings",
    "MixtureEngine",
    "FLAG_NO_DATA",
    "FLAG_NO_OBJECTS",
    "FLAG_NOT_CONVERGED",
    "FLAG_BAD_COVARIANCE",
    "FLAG_NONFINITE",
    "FLAG_BAD_POSITION",
    "FLAG_NAMES",
    "RESULT_COLUMNS",
    "resolve_device",
    "prepare_inputs",
]

#: no usable pixel (all NaN / infinite), or a non-finite or non-positive noise sigma
FLAG_NO_DATA = 1
#: the stamp had no position to fit (one row with object = -1)
FLAG_NO_OBJECTS = 2
#: the fit did not reach the optimum within max_iter (values are the last iterate)
FLAG_NOT_CONVERGED = 4
#: the covariance at the solution is not positive definite (flux_err NaN)
FLAG_BAD_COVARIANCE = 8
#: the fit produced non-finite parameters
FLAG_NONFINITE = 16
#: the given position was NaN (object not fitted)
FLAG_BAD_POSITION = 32
FLAG_NAMES = {FLAG_NO_DATA: "no_data", FLAG_NO_OBJECTS: "no_objects", FLAG_NOT_CONVERGED: "not_converged",
              FLAG_BAD_COVARIANCE: "bad_covariance", FLAG_NONFINITE: "nonfinite", FLAG_BAD_POSITION: "bad_position"}

#: one row per (stamp, object) in every engine's result
RESULT_COLUMNS = ("stamp", "object", "n_objects", "x_init", "y_init", "x", "y", "g1", "g2", "T", "fracdev", "flux",
                  "flux_err", "chi2_dof", "converged", "flags", "n_iter", "engine", "model")

_NPAR = 6  # x, y, eta1, eta2, log T, flux (bdf: a 7th, fracdev)
#: the per-object values of an engine's result (None for stamps not fitted)
_OUT_KEYS = ("x", "y", "g1", "g2", "T", "fracdev", "flux", "flux_err", "chi2_dof", "converged", "flags", "n_iter")
_LAMBDA0 = 1e-3
_LAMBDA_MIN = 1e-9
_LAMBDA_MAX = 1e9
_TINY_ETA = 1e-6
#: ln of the smallest component value computed (exp(-60) ~ 1e-26 of a unit-density peak: no effect on any model)
_LOG_FLOOR = -60.0
#: stamps with a shorter side are evaluated whole (a window around each object would not save work)
_WINDOW_MIN_SIDE = 32


@dataclass
class FitSettings:
    """Settings shared by the engines (priors, iterations) and of the mixture engine (batching, device)."""

    model: str = "exp"
    centre_sigma: float = 0.3         # px, prior around each given position (Hemmati+22 code: 0.3 px)
    g_sigma: float = 0.3              # shape prior width (Hemmati+22 code: GPriorBA(0.3))
    fracdev_sigma: float = 1.0        # bdf: prior width on fracdev around 0.5 (fracdev is bounded to [0, 1])
    log_T_sigma: float = 2.0          # size prior width on ln T around the starting size
    flux_sigma_rel: float = 10.0      # flux prior width relative to max(|F_0|, PSF-flux noise)
    max_iter: int = 50
    tol: float = 1e-3                 # an accepted step that lowers chi^2 by less ends a fit
    converged_decrement: float = 1e-2  # remaining step on each centre and flux below sqrt(this) sigma: converged
    T_grid: tuple[float, ...] = (1 / 8, 1.0, 8.0, 64.0)  # starting sizes, multiples of T_psf
    batch_size: int = 1024            # stamps per batch at most (lowered to fit memory_mb)
    memory_mb: int = 512              # working memory per batch
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    dtype: str = "float32"            # float32 | float64

    def __post_init__(self) -> None:
        profile(self.model)
        for name in ("centre_sigma", "g_sigma", "fracdev_sigma", "log_T_sigma", "flux_sigma_rel", "tol",
                     "converged_decrement"):
            if not getattr(self, name) > 0:
                raise PhotometryError(f"photometry setting {name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.g_sigma < 1:
            raise PhotometryError(f"photometry setting g_sigma must be in (0, 1), got {self.g_sigma}")
        if self.max_iter < 1 or self.batch_size < 1 or self.memory_mb < 1:
            raise PhotometryError("photometry settings max_iter, batch_size and memory_mb must be >= 1")
        if self.dtype not in ("float32", "float64"):
            raise PhotometryError(f"photometry dtype must be float32 or float64, got {self.dtype!r}")
        if not self.T_grid or min(self.T_grid) <= 0:
            raise PhotometryError("photometry T_grid must hold positive multiples of the PSF's T")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: cuda when available, else cpu; an explicit cuda device without CUDA is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise PhotometryError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PhotometryError(f"device {spec!r} requested but CUDA is not available; use auto")
    return dev


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class _Inputs:
    images: np.ndarray            # (N, H, W) float64, non-finite -> 0
    valid: np.ndarray             # (N, H, W) bool
    sigma: np.ndarray             # (N,)
    positions: list[np.ndarray]   # (n_k, 2) per stamp, finite only
    bad_position: list[np.ndarray]  # bool per given position
    given: list[np.ndarray]       # all given positions (n_k, 2)
    stamp_ok: np.ndarray          # (N,) bool: usable pixels and sigma


def prepare_inputs(images: Any, positions: Sequence[Any], noise_sigma: Any) -> _Inputs:
    """Check shapes (raising :class:`PhotometryError` for bad arguments) and mark bad data (never raising)."""
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise PhotometryError(f"expected stamps (N, H, W), got shape {np.shape(images)}")
    n = arr.shape[0]
    if len(positions) != n:
        raise PhotometryError(f"{len(positions)} position lists for {n} stamps")
    sig = np.asarray(noise_sigma, dtype=np.float64)
    if sig.ndim == 0:
        sig = np.full(n, float(sig))
    if sig.shape != (n,):
        raise PhotometryError(f"noise_sigma must be a scalar or one value per stamp ({n}), got shape {sig.shape}")
    valid = np.isfinite(arr)
    if arr.shape[1] * arr.shape[2] == 0:
        valid = np.zeros_like(valid)
    clean = np.where(valid, arr, 0.0)
    given, good, bad = [], [], []
    for p in positions:
        pa = np.asarray(p, dtype=np.float64).reshape(-1, 2) if np.size(p) else np.zeros((0, 2))
        ok = np.isfinite(pa).all(axis=1)
        given.append(pa)
        good.append(pa[ok])
        bad.append(~ok)
    stamp_ok = valid.reshape(n, -1).any(axis=1) & np.isfinite(sig) & (sig > 0)
    return _Inputs(clean, valid, sig, good, bad, given, stamp_ok)


# ------------------------------------------------------------------------------------------------ engine
@dataclass
class _Components:
    amp: torch.Tensor             # (C,) amplitudes
    f: torch.Tensor               # (C,) galaxy variance scales
    cxx: torch.Tensor             # (C,) PSF covariances
    cxy: torch.Tensor
    cyy: torch.Tensor
    bulge: torch.Tensor | None = None  # (C,) 1.0 on bulge (dev) components of a bdf model, else None


@dataclass
class _Chunk:
    idx: np.ndarray               # stamp indexes of the full input
    k: int                        # objects per stamp (padded)


@dataclass
class _State:
    theta: torch.Tensor           # (B, K, npar)
    mu: torch.Tensor              # prior means (B, K, npar)
    prec: torch.Tensor            # prior precisions (B, K, npar)
    chi2: torch.Tensor            # (B,) float64, data + prior
    chi2_data: torch.Tensor       # (B,) float64
    H: torch.Tensor               # (B, P, P) float64, J^T J + prior precision
    g: torch.Tensor               # (B, P) float64, J^T r - prior gradient
    lam: torch.Tensor             # (B,) float64
    done: torch.Tensor            # (B,) bool
    n_iter: torch.Tensor          # (B,) int
    stats: dict[str, Any] = field(default_factory=dict)


class MixtureEngine:
    """Batched joint fits of Gaussian-mixture galaxies (see the module docstring).

    ``psf``: a :class:`~.psf_fit.PSFMixture` (use :func:`~.psf_fit.fit_psf_mixture` on the PSF image).
    """

    name = "mixture"

    def __init__(self, psf: PSFMixture, settings: FitSettings | None = None) -> None:
        self.settings = settings or FitSettings()
        self.psf = psf
        self.device = resolve_device(self.settings.device)
        self.dtype = torch.float32 if self.settings.dtype == "float32" else torch.float64
        prof = profile(self.settings.model)
        self._comps = self._components(prof)
        self.bdf = prof.free_fracdev
        self.npar = _NPAR + int(self.bdf)
        # the start ranks sizes with one Gaussian per PSF component (a few times cheaper than the full profile)
        self._start_comps = self._components(profile("gauss"))
        self.n_components = int(self._comps.amp.numel())
        self.T_psf = float(psf.T)
        self.eta_sigma = 2.0 * math.atanh(self.settings.g_sigma)
        self.last_stats: dict[str, Any] = {}
        self._work: dict[str, torch.Tensor] = {}

    def _components(self, prof: Any) -> _Components:
        """Combined components c = (galaxy i, psf j): amplitude a_i b_j, galaxy scale f_i, PSF covariance C_j. A bdf
        profile's amplitudes are those of its own exp or dev mixture (weighted by the bulge fraction when
        evaluated)."""
        psf = self.psf
        gal_amp = prof.amplitudes(0.0) + prof.amplitudes(1.0) if prof.free_fracdev else prof.amp
        amp = (gal_amp[:, None] * psf.amp[None, :]).ravel()
        cov = np.tile(psf.cov, (prof.n, 1, 1))
        t = lambda a: torch.tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        bulge = t(np.repeat(prof.bulge.astype(np.float64), psf.n)) if prof.free_fracdev else None
        return _Components(t(amp), t(np.repeat(prof.var, psf.n)), t(cov[:, 0, 0]), t(cov[:, 0, 1]), t(cov[:, 1, 1]),
                           bulge)

    # --------------------------------------------------------------------------------------- public API
    def fit(self, images: Any, positions: Sequence[Any], noise_sigma: Any) -> pd.DataFrame:
        """Fit every stamp of ``images`` (N, H, W) at its ``positions`` (per stamp an (n, 2) array of (x, y) in
        pixels, centres at integers) with per-stamp white-noise ``noise_sigma`` (scalar or (N,)); one row per
        (stamp, object), columns :data:`RESULT_COLUMNS`."""
        t0 = time.perf_counter()
        inp = prepare_inputs(images, positions, noise_sigma)
        n = inp.images.shape[0]
        out: dict[str, list[Any]] = {name: [None] * n for name in _OUT_KEYS}
        counts = np.array([len(p) for p in inp.positions])
        fit_idx = np.flatnonzero(inp.stamp_ok & (counts > 0))
        n_obj_fitted = 0
        for chunk in self._chunks(fit_idx, counts, inp.images.shape[1] * inp.images.shape[2]):
            res = self._fit_chunk(inp, chunk)
            for j, s in enumerate(chunk.idx):
                m = counts[s]
                for key in out:
                    out[key][s] = res[key][j][:m] if np.ndim(res[key][j]) else res[key][j]
            n_obj_fitted += int(counts[chunk.idx].sum())
        self._work.clear()                                          # the working memory goes with the fit
        table = self._table(inp, out)
        dt = time.perf_counter() - t0
        self.last_stats = {"seconds": dt, "objects": n_obj_fitted, "stamps": int(fit_idx.size),
                           "objects_per_second": n_obj_fitted / dt if dt > 0 else float("nan"),
                           "device": str(self.device)}
        return table

    def render(self, params: Any, shape: tuple[int, int]) -> np.ndarray:
        """Model images (N, H, W) of objects given as (N, K, 6) parameters (x, y, g1, g2, T, flux), for bdf
        (N, K, 7) with fracdev last; rows whose flux is 0 add nothing (padding)."""
        p = np.asarray(params, dtype=np.float64)
        if p.ndim == 2:
            p = p[:, None]
        if p.shape[-1] != self.npar:
            raise PhotometryError(f"model {self.settings.model!r} takes {self.npar} parameters per object, "
                                  f"got {p.shape[-1]}")
        g1, g2 = p[..., 2], p[..., 3]
        gabs = np.hypot(g1, g2)
        eta_abs = 2.0 * np.arctanh(np.clip(gabs, 0.0, 1 - 1e-12))
        scale = np.where(gabs > 0, eta_abs / np.where(gabs > 0, gabs, 1.0), 2.0)
        cols = [p[..., 0], p[..., 1], g1 * scale, g2 * scale, np.log(p[..., 4]), p[..., 5]]
        if self.bdf:
            cols.append(p[..., 6])
        theta = np.stack(cols, axis=-1)
        th = torch.tensor(theta, dtype=self.dtype, device=self.device)
        px, py = self._grid(shape)
        with torch.no_grad():
            model, _ = self._evaluate(th, torch.ones(th.shape[:2], dtype=torch.bool, device=self.device), px, py,
                                      jacobian=False)
        return model.reshape(-1, *shape).double().cpu().numpy()

    # --------------------------------------------------------------------------------------- batching
    def _chunks(self, idx: np.ndarray, counts: np.ndarray, npix: int) -> list[_Chunk]:
        chunks = []
        for k in sorted(set(counts[idx].tolist())):
            members = idx[counts[idx] == k]
            per_stamp = npix * k * (self.n_components + 17 + 4 + self.npar) * (4 if self.dtype == torch.float32 else 8)
            cap = max(1, min(self.settings.batch_size, int(self.settings.memory_mb * 2**20 // max(per_stamp, 1))))
            for s in range(0, members.size, cap):
                chunks.append(_Chunk(members[s:s + cap], int(k)))
        return chunks

    def _grid(self, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre coordinates of the columns (W,) and rows (H,)."""
        h, w = shape
        return (torch.arange(w, dtype=self.dtype, device=self.device),
                torch.arange(h, dtype=self.dtype, device=self.device))

    # --------------------------------------------------------------------------------------- the model
    def _shape(self, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Distortion e and de/deta from eta (..., 2): e = tanh(|eta|) eta / |eta|."""
        eta1, eta2 = theta[..., 2], theta[..., 3]
        r = torch.sqrt(eta1 * eta1 + eta2 * eta2)
        small = r < _TINY_ETA
        rs = torch.where(small, torch.ones_like(r), r)
        t = torch.tanh(rs)
        ratio = torch.where(small, 1.0 - r * r / 3.0, t / rs)       # tanh(r) / r
        # d ratio / dr / r, finite at r -> 0 (limit -2/3)
        sech2 = 1.0 - t * t
        dratio = torch.where(small, torch.full_like(r, -2.0 / 3.0), (sech2 - t / rs) / (rs * rs))
        e1, e2 = ratio * eta1, ratio * eta2
        de11 = ratio + dratio * eta1 * eta1
        de12 = dratio * eta1 * eta2
        de22 = ratio + dratio * eta2 * eta2
        return e1, e2, de11, de12, de22

    def _evaluate(self, theta: torch.Tensor, omask: torch.Tensor, px: torch.Tensor, py: torch.Tensor, *,
                  jacobian: bool, per_object: bool = False, comps: _Components | None = None,
                  spare_row: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model (B, N) and, when asked, d model / d theta (B, K * npar, N) of parameters theta (B, K, npar) on the
        grid of pixel columns ``px`` (W,) and rows ``py`` (H,), N = H * W; ``per_object``: the unit-flux model of
        each object instead (B, K, N), no Jacobian; ``spare_row``: the Jacobian gets one more row, left for the
        caller to fill (the residual, so that one matrix product gives J J^T and J r)."""
        B, K, _ = theta.shape
        H, W = py.numel(), px.numel()
        x, y = theta[..., 0], theta[..., 1]
        T = torch.exp(theta[..., 4])
        flux = torch.where(omask, theta[..., 5], torch.zeros_like(theta[..., 5]))
        e1, e2, de11, de12, de22 = self._shape(theta)
        cp = comps or self._comps
        half = (0.5 * T)[..., None] * cp.f                          # (B, K, C): f_i T / 2
        sxx = half * (1.0 + e1)[..., None] + cp.cxx
        syy = half * (1.0 - e1)[..., None] + cp.cyy
        sxy = half * e2[..., None] + cp.cxy
        det = sxx * syy - sxy * sxy
        p, q, r = syy / det, -sxy / det, sxx / det                 # inverse covariance
        lognorm = torch.log(cp.amp / (2.0 * math.pi)) - 0.5 * torch.log(det)
        w = dw = None
        if cp.bulge is not None:
            # bdf: component weights 1 - fracdev (disk) and fracdev (bulge), and d w / d fracdev
            fd = theta[..., 6, None]                                                     # (B, K, 1)
            w = cp.bulge * fd + (1.0 - cp.bulge) * (1.0 - fd)                            # (B, K, C)
            dw = (2.0 * cp.bulge - 1.0).expand_as(w)
        dxw = px - x[..., None]                                     # (B, K, W): offsets along a row
        dyh = py - y[..., None]                                     # (B, K, H)
        win = self._window_split(sxx, syy, H, W)
        if win is None:
            G = self._gaussians(lognorm, p, q, r, dxw, dyh, "G")                        # (B, K, C, N)
            Gn = idx = None
        else:
            # components that are negligible (below exp(-window_log) of their peak) beyond a small window around
            # the centre are evaluated only there and scattered into the stamp: most pixels of a large stamp
            # need only the widest components
            wide, narrow, n = win
            x0 = (torch.round(torch.nan_to_num(x)) - n // 2).clamp(0, W - n).to(torch.long)  # window corners
            y0 = (torch.round(torch.nan_to_num(y)) - n // 2).clamp(0, H - n).to(torch.long)
            ar = torch.arange(n, device=px.device)
            xi, yi = x0[..., None] + ar, y0[..., None] + ar                          # (B, K, n)
            idx = (yi[..., :, None] * W + xi[..., None, :]).reshape(B, K, 1, n * n)
            G = self._gaussians(lognorm[..., wide], p[..., wide], q[..., wide], r[..., wide], dxw, dyh, "G")
            Gn = self._gaussians(lognorm[..., narrow], p[..., narrow], q[..., narrow], r[..., narrow],
                                 px[xi] - x[..., None], py[yi] - y[..., None], "Gn")  # (B, K, Cn, n * n)
        if not jacobian:
            unit = self._weighted_sum(G, w if Gn is None or w is None else w[..., wide])   # (B, K, N)
            if Gn is not None:
                unit.scatter_add_(2, idx[:, :, 0], self._weighted_sum(Gn, None if w is None else w[..., narrow]))
            if per_object:
                return unit, None
            return (unit * flux[..., None]).sum(1), None
        # Jacobian rows as sums over the components of G times per-component coefficients (one matrix product):
        # d G / d Sigma_g = f G (w w^T - P) / 2 with w = P delta, the entries (a, b, c) of Sigma_g;
        # per monomial (dx^2, dx dy, dy^2, 1):
        f = cp.f
        fl = flux[..., None]                                                            # (B, K, 1)
        A = (0.5 * f * p * p, f * p * q, 0.5 * f * q * q, -0.5 * f * p)                 # d / d a
        Cc = (0.5 * f * q * q, f * q * r, 0.5 * f * r * r, -0.5 * f * r)                # d / d c
        Bb = (f * p * q, f * (p * r + q * q), f * q * r, -f * q)                        # d / d b
        # chain rule: a = T/2 (1 + e1), b = T/2 e2, c = T/2 (1 - e1); e(eta) for eta1, eta2; a, b, c for ln T
        th = (0.5 * T)[..., None]
        ca, cb, cc = th * (1 + e1)[..., None], th * e2[..., None], th * (1 - e1)[..., None]
        k11, k12, k22 = (th * de11[..., None], th * de12[..., None], th * de22[..., None])
        rows = [omask[..., None].to(G.dtype).expand_as(p), fl * p, fl * q, fl * r]
        rows += [fl * (k11 * (a - c) + k12 * b) for a, b, c in zip(A, Bb, Cc)]        # eta1
        rows += [fl * (k12 * (a - c) + k22 * b) for a, b, c in zip(A, Bb, Cc)]        # eta2
        rows += [fl * (ca * a + cb * b + cc * c) for a, b, c in zip(A, Bb, Cc)]        # ln T
        if w is not None:                                                               # bdf: weights, d / d fracdev
            rows = [row * w for row in rows] + [fl * dw]
        nrow = len(rows)
        coef = torch.stack(rows, dim=-2)                                                # (B, K, 16 or 17, C)
        if Gn is None:
            S = self._matmul("S", coef, G)
        else:
            S = self._matmul("S", coef[..., wide], G)
            S.scatter_add_(3, idx.expand(B, K, nrow, idx.shape[-1]), self._matmul("Sn", coef[..., narrow], Gn))
        S = S.reshape(B, K, nrow, H, W)
        s = S.unbind(2)
        dx = dxw[:, :, None, :]                                                         # (B, K, 1, W)
        dy = dyh[:, :, :, None]                                                         # (B, K, H, 1)
        dxx, dyy = dx * dx, dy * dy
        dxy = dx * dy                                                                   # (B, K, H, W)
        model = (s[0] * flux[..., None, None]).sum(1).reshape(B, -1)
        npar = self.npar
        shape = (B, K * npar + int(spare_row), H * W)
        buf = self._buffer("jac", shape, S)
        buf = torch.empty(shape, dtype=S.dtype, device=S.device) if buf is None else buf
        jac = buf[:, :K * npar].view(B, K, npar, H, W)                                   # rows: parameters
        torch.mul(dx, s[1], out=jac[:, :, 0]).addcmul_(dy, s[2])
        torch.mul(dx, s[2], out=jac[:, :, 1]).addcmul_(dy, s[3])
        for row, first in ((2, 4), (3, 8), (4, 12)):
            torch.mul(dxx, s[first], out=jac[:, :, row]).addcmul_(dxy, s[first + 1]).addcmul_(
                dyy, s[first + 2]).add_(s[first + 3])
        jac[:, :, 5] = s[0]
        if w is not None:
            jac[:, :, 6] = s[16]
        return model, buf

    @staticmethod
    def _weighted_sum(G: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """Sum over the components of G (B, K, C, N), weighted by w (B, K, C) when given."""
        return G.sum(2) if w is None else torch.matmul(w[..., None, :], G)[..., 0, :]

    def _window_split(self, sxx: torch.Tensor, syy: torch.Tensor, H: int,
                      W: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """Components (indexes) to evaluate on the whole stamp and on an n x n window around each centre, or None
        when windows would not pay. A component is ``narrow`` when, for every object of the batch, it falls below
        exp(-window_log) of its peak within the window (window_log: 18 in float32, below its resolution; 30 in
        float64)."""
        if min(H, W) < _WINDOW_MIN_SIDE:
            return None
        level = 18.0 if self.dtype == torch.float32 else 30.0
        # half-width per component: sqrt(2 level var) along each axis, the largest over the batch
        half = torch.sqrt(2.0 * level * torch.maximum(sxx, syy).reshape(-1, sxx.shape[-1]).amax(0))
        need = 2.0 * torch.ceil(half + 0.5) + 1.0                  # window side per component (NaN: not narrow)
        narrow = (need <= min(H, W)) & (need * need <= 0.5 * H * W)       # the window saves half the stamp
        if not bool(narrow.any()):
            return None
        n = int(need[narrow].max())
        wide = torch.nonzero(~narrow).flatten()
        return wide, torch.nonzero(narrow).flatten(), n

    def _buffer(self, name: str, shape: tuple[int, ...], *inputs: torch.Tensor) -> torch.Tensor | None:
        """Working memory ``shape`` (dtype and device of the first input) kept between evaluations (fresh tensors
        of tens of MB per evaluation cost about a third of a fit, measured); None where autograd records any of
        ``inputs`` (out= does not differentiate). The batch shrinks as stamps converge: the leading elements of
        the kept block serve."""
        if any(t.requires_grad for t in inputs):
            return None
        like = inputs[0]
        n = math.prod(shape)
        buf = self._work.get(name)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(n, dtype=like.dtype, device=like.device)
            self._work[name] = buf
        return buf[:n].view(shape)

    def _matmul(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` (batched) written into the working buffer ``name``."""
        out = self._buffer(name, (*a.shape[:-1], b.shape[-1]), a, b)
        return torch.matmul(a, b) if out is None else torch.matmul(a, b, out=out)

    def _gaussians(self, lognorm: torch.Tensor, p: torch.Tensor, q: torch.Tensor, r: torch.Tensor,
                   dxw: torch.Tensor, dyh: torch.Tensor, name: str) -> torch.Tensor:
        """Component values (B, K, C, H * W) on the grid of column offsets dxw (B, K, W) and row offsets dyh
        (B, K, H): ln G = ln norm - (p dx^2 + 2 q dx dy + r dy^2) / 2, from the 1-D row and column terms and the
        per-object product dx dy; exp of arguments below ~-87 (float32 underflow) takes a slow path: clamp
        first. Written into the working buffer ``name`` (valid until the next evaluation)."""
        B, K, C = p.shape
        H, W = dyh.shape[-1], dxw.shape[-1]
        ax = lognorm[..., None] - 0.5 * p[..., None] * (dxw * dxw)[:, :, None, :]      # (B, K, C, W)
        ay = -0.5 * r[..., None] * (dyh * dyh)[:, :, None, :]                           # (B, K, C, H)
        dxdy = dyh[..., :, None] * dxw[..., None, :]                                    # (B, K, H, W)
        out = self._buffer(name, (B, K, C, H, W), ax, ay)
        if out is None:
            G = ax[..., None, :] + ay[..., None]
        else:
            G = torch.add(ax[..., None, :], ay[..., None], out=out)
        G.addcmul_((-q)[..., None, None], dxdy[:, :, None]).clamp_min_(_LOG_FLOOR).exp_()
        return G.view(B, K, C, H * W)

    def _templates(self, theta: torch.Tensor, omask: torch.Tensor, px: torch.Tensor, py: torch.Tensor,
                   comps: _Components | None = None) -> torch.Tensor:
        """Unit-flux model images (B, K, N) of each object."""
        unit, _ = self._evaluate(theta, omask, px, py, jacobian=False, per_object=True, comps=comps)
        return unit * omask[..., None]

    # --------------------------------------------------------------------------------------- the fit
    def _fit_chunk(self, inp: _Inputs, chunk: _Chunk) -> dict[str, list[Any]]:
        st = self.settings
        dev, dt = self.device, self.dtype
        B, K = chunk.idx.size, chunk.k
        H_, W_ = inp.images.shape[1:]
        px, py = self._grid((H_, W_))
        data = torch.tensor(inp.images[chunk.idx].reshape(B, -1), dtype=dt, device=dev)
        sig = torch.tensor(inp.sigma[chunk.idx], dtype=dt, device=dev)
        sw = torch.tensor(inp.valid[chunk.idx].reshape(B, -1), dtype=dt, device=dev) / sig[:, None]
        pos = torch.tensor(np.stack([inp.positions[s] for s in chunk.idx]), dtype=dt, device=dev)  # (B, K, 2)
        omask = torch.ones((B, K), dtype=torch.bool, device=dev)
        n_valid = torch.tensor(inp.valid[chunk.idx].reshape(B, -1).sum(1), dtype=torch.float64, device=dev)

        theta = torch.zeros((B, K, self.npar), dtype=dt, device=dev)
        if self.bdf:
            theta[..., 6] = 0.5
        theta[..., :2] = pos
        theta, f_noise = self._start(theta, omask, data, sw, sig, px, py)
        mu = theta.clone()
        prec = torch.empty_like(theta)
        prec[..., 0:2] = 1.0 / st.centre_sigma**2
        prec[..., 2:4] = 1.0 / self.eta_sigma**2
        prec[..., 4] = 1.0 / st.log_T_sigma**2
        fscale = torch.maximum(theta[..., 5].abs(), f_noise[:, None])
        prec[..., 5] = 1.0 / (st.flux_sigma_rel * fscale) ** 2
        if self.bdf:
            prec[..., 6] = 1.0 / st.fracdev_sigma**2
        state = self._initial_state(theta, mu, prec, omask, data, sw, px, py)
        self._iterate(state, omask, data, sw, px, py)
        return self._results(state, omask, n_valid, K)

    def _start(self, theta: torch.Tensor, omask: torch.Tensor, data: torch.Tensor, sw: torch.Tensor,
               sig: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Round objects at the given positions; the size on the T grid with the best chi^2, fluxes solved
        linearly for each grid value."""
        B, K, _ = theta.shape
        w2 = (sw * sw).double()
        best_chi2 = torch.full((B,), float("inf"), dtype=torch.float64, device=self.device)
        best = theta.clone()
        for mult in self.settings.T_grid:
            th = theta.clone()
            th[..., 4] = math.log(mult * self.T_psf)
            tpl = self._templates(th, omask, px, py, self._start_comps).double()   # (B, K, N)
            A = torch.einsum("bkn,bln,bn->bkl", tpl, tpl, w2)
            b = torch.einsum("bkn,bn,bn->bk", tpl, data.double(), w2)
            ridge = 1e-9 * A.diagonal(dim1=1, dim2=2).abs().amax(1).clamp_min(1e-30)
            A = A + ridge[:, None, None] * torch.eye(K, dtype=A.dtype, device=A.device)
            F = torch.linalg.solve_ex(A, b[..., None])[0][..., 0]
            F = torch.nan_to_num(F)
            resid = (data.double() - (F[..., None] * tpl).sum(1)) * sw.double()
            chi2 = (resid * resid).sum(1)
            better = chi2 < best_chi2
            th[..., 5] = F.to(th.dtype)
            best = torch.where(better[:, None, None], th, best)
            best_chi2 = torch.where(better, chi2, best_chi2)
        # flux of a PSF-like source at 1 sigma: sigma * sqrt(4 pi sigma_psf^2) = sigma * sqrt(2 pi T_psf)
        f_noise = sig * math.sqrt(2.0 * math.pi * self.T_psf)
        return best, f_noise

    def _system(self, theta: torch.Tensor, mu: torch.Tensor, prec: torch.Tensor, omask: torch.Tensor,
                data: torch.Tensor, sw: torch.Tensor, px: torch.Tensor,
                py: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model, Jr = self._evaluate(theta, omask, px, py, jacobian=True, spare_row=True)
        P = Jr.shape[1] - 1
        torch.sub(data, model, out=Jr[:, P])
        Jr.mul_(sw[:, None, :])                                     # (B, P + 1, N): weighted J and residual r
        B = theta.shape[0]
        dp = (theta - mu).reshape(B, -1).double()
        pr = prec.reshape(B, -1).double()
        r = Jr[:, P]
        chi2_data = (r * r).sum(1, dtype=torch.float64)
        chi2 = chi2_data + (dp * dp * pr).sum(1)
        M = torch.bmm(Jr, Jr.transpose(1, 2)).double()              # [[J J^T, J r], [r J^T, r r]]
        H = M[:, :P, :P] + torch.diag_embed(pr)
        g = M[:, :P, P] - pr * dp
        finite = torch.isfinite(chi2) & torch.isfinite(H).all(2).all(1) & torch.isfinite(g).all(1)
        return chi2, chi2_data, H, g, finite

    def _initial_state(self, theta: torch.Tensor, mu: torch.Tensor, prec: torch.Tensor, omask: torch.Tensor,
                       data: torch.Tensor, sw: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> _State:
        chi2, chi2_data, H, g, finite = self._system(theta, mu, prec, omask, data, sw, px, py)
        B = theta.shape[0]
        return _State(theta=theta, mu=mu, prec=prec, chi2=torch.where(finite, chi2, torch.inf), chi2_data=chi2_data,
                      H=H, g=g, lam=torch.full((B,), _LAMBDA0, dtype=torch.float64, device=self.device),
                      done=~finite, n_iter=torch.zeros(B, dtype=torch.long, device=self.device))

    def _iterate(self, st: _State, omask: torch.Tensor, data: torch.Tensor, sw: torch.Tensor, px: torch.Tensor,
                 py: torch.Tensor) -> None:
        tol = self.settings.tol
        for _ in range(self.settings.max_iter):
            act = torch.nonzero(~st.done).flatten()
            if act.numel() == 0:
                break
            H, g = self._hold_at_bounds(st.H[act], st.g[act], st.theta[act])
            lam = st.lam[act]
            diag = H.diagonal(dim1=1, dim2=2)
            Hd = H + torch.diag_embed(lam[:, None] * diag)
            L, info = torch.linalg.cholesky_ex(Hd)
            step = torch.cholesky_solve(g[..., None], L)[..., 0]
            ok_solve = (info == 0) & torch.isfinite(step).all(1)
            step = torch.where(ok_solve[:, None], step, torch.zeros_like(step))
            theta_t = st.theta[act] + step.reshape(-1, *st.theta.shape[1:]).to(st.theta.dtype)
            if self.bdf:
                theta_t[..., 6].clamp_(0.0, 1.0)
            chi2_t, chi2d_t, H_t, g_t, fin_t = self._system(theta_t, st.mu[act], st.prec[act], omask[act], data[act],
                                                           sw[act], px, py)
            better = ok_solve & fin_t & (chi2_t < st.chi2[act])
            gain = st.chi2[act] - chi2_t
            st.n_iter[act] += 1
            # accepted: take the step, relax the damping
            acc = act[better]
            st.theta[acc] = theta_t[better]
            st.chi2[acc], st.chi2_data[acc] = chi2_t[better], chi2d_t[better]
            st.H[acc], st.g[acc] = H_t[better], g_t[better]
            st.lam[acc] = (st.lam[acc] / 10.0).clamp_min(_LAMBDA_MIN)
            # rejected: more damping; a step that cannot lower chi^2 even when tiny ends the fit
            rej = act[~better]
            st.lam[rej] = st.lam[rej] * 10.0
            # an accepted step that gains < tol ends a fit only where centres and fluxes are settled
            small = better & (gain < tol)
            if small.any():
                small[small.clone()] = self._settled(H_t[small], g_t[small], theta_t[small])[0]
            finished = small | (~better & (st.lam[act] > _LAMBDA_MAX))
            st.done[act[finished]] = True

    def _hold_at_bounds(self, H: torch.Tensor, g: torch.Tensor,
                        theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """bdf: the system (H, g) with every bulge fraction that sits at 0 or 1 and whose gradient points outwards
        held fixed (its row and column decoupled, its gradient 0); other models: unchanged."""
        if not self.bdf:
            return H, g
        B = H.shape[0]
        fd = theta[..., 6].reshape(B, -1).double()
        gi = g.reshape(B, -1, self.npar)[..., 6]
        hold = ((fd <= 0.0) & (gi < 0)) | ((fd >= 1.0) & (gi > 0))                  # (B, K)
        if not bool(hold.any()):
            return H, g
        mask = torch.zeros(g.shape, dtype=torch.bool, device=g.device)
        mask.view(B, -1, self.npar)[..., 6] = hold
        keep = (~mask).to(H.dtype)
        diag = H.diagonal(dim1=1, dim2=2)
        H = H * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(torch.where(mask, diag, 0.0))
        return H, g * keep

    def _settled(self, H: torch.Tensor, g: torch.Tensor,
                 theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(settled, cov_ok, cov) of systems H (B, P, P), g (B, P) at parameters theta: the covariance H^-1, and
        whether the remaining Gauss-Newton step H^-1 g moves every centre and flux by less than
        sqrt(converged_decrement) of its standard error (see the module notes); bulge fractions held at a bound
        (:meth:`_hold_at_bounds`) count as fixed."""
        H, g = self._hold_at_bounds(H, g, theta)
        L, info = torch.linalg.cholesky_ex(H)
        cov_ok = info == 0
        eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device).expand_as(H)
        cov = torch.cholesky_solve(eye, L)
        step = torch.cholesky_solve(g[..., None], L)[..., 0]
        var = cov.diagonal(dim1=1, dim2=2)
        z2 = (step * step / var.clamp_min(1e-300)).reshape(H.shape[0], -1, self.npar)[..., [0, 1, 5]]
        z2max = z2.reshape(H.shape[0], -1).amax(1)
        settled = cov_ok & torch.isfinite(z2max) & (var > 0).all(1) & (z2max < self.settings.converged_decrement)
        return settled, cov_ok, cov

    def _results(self, st: _State, omask: torch.Tensor, n_valid: torch.Tensor, K: int) -> dict[str, list[Any]]:
        B = st.theta.shape[0]
        settled, cov_ok, cov = self._settled(st.H, st.g, st.theta)
        theta = st.theta.double()
        e1, e2, *_ = self._shape(theta)
        eta = torch.sqrt(theta[..., 2] ** 2 + theta[..., 3] ** 2)
        gfac = torch.where(eta > _TINY_ETA, torch.tanh(eta / 2.0) / eta.clamp_min(_TINY_ETA),
                           torch.full_like(eta, 0.5))
        g1, g2 = theta[..., 2] * gfac, theta[..., 3] * gfac
        flux_var = cov.diagonal(dim1=1, dim2=2).reshape(B, K, self.npar)[..., 5]
        dof = (n_valid - self.npar * K).clamp_min(1.0)
        chi2_dof = st.chi2_data / dof
        finite_theta = torch.isfinite(theta).all(2).all(1)
        converged = settled & finite_theta
        flags = torch.zeros(B, dtype=torch.long, device=st.H.device)
        flags |= torch.where(converged, 0, FLAG_NOT_CONVERGED)
        flags |= torch.where(cov_ok & (flux_var > 0).all(1), 0, FLAG_BAD_COVARIANCE)
        flags |= torch.where(finite_theta, 0, FLAG_NONFINITE)
        to = lambda t: t.detach().cpu().numpy()  # noqa: E731
        x, y, T, F = to(theta[..., 0]), to(theta[..., 1]), to(torch.exp(theta[..., 4])), to(theta[..., 5])
        fracdev = to(theta[..., 6]) if self.bdf else np.full_like(F, np.nan)
        ferr = to(torch.sqrt(flux_var.clamp_min(0)))
        ferr = np.where(to(cov_ok)[:, None] & (to(flux_var) > 0), ferr, np.nan)
        return {"x": list(x), "y": list(y), "g1": list(to(g1)), "g2": list(to(g2)), "T": list(T),
                "fracdev": list(fracdev), "flux": list(F),
                "flux_err": list(ferr), "chi2_dof": list(to(chi2_dof)), "converged": list(to(converged)),
                "flags": list(to(flags)), "n_iter": list(to(st.n_iter))}

    # --------------------------------------------------------------------------------------- the table
    def _table(self, inp: _Inputs, out: dict[str, list[Any]]) -> pd.DataFrame:
        return build_table(inp, out, engine=self.name, model=self.settings.model)


def build_table(inp: _Inputs, out: dict[str, list[Any]], *, engine: str, model: str) -> pd.DataFrame:
    """One row per (stamp, given position) from per-stamp results (None for stamps not fitted)."""
    rows: dict[str, list[Any]] = {c: [] for c in RESULT_COLUMNS}
    nan = float("nan")
    for s in range(inp.images.shape[0]):
        given, bad = inp.given[s], inp.bad_position[s]
        n_obj = int(len(given))
        if n_obj == 0:
            vals = [(-1, nan, nan)]
        else:
            vals = [(i, given[i, 0], given[i, 1]) for i in range(n_obj)]
        fitted = out["flux"][s] is not None
        j = 0
        for i, x0, y0 in vals:
            rows["stamp"].append(s)
            rows["object"].append(i)
            rows["n_objects"].append(n_obj)
            rows["x_init"].append(x0)
            rows["y_init"].append(y0)
            rows["engine"].append(engine)
            rows["model"].append(model)
            flags = 0
            if not inp.stamp_ok[s]:
                flags |= FLAG_NO_DATA
            if i < 0:
                flags |= FLAG_NO_OBJECTS
            elif bad[i]:
                flags |= FLAG_BAD_POSITION
            if fitted and i >= 0 and not bad[i]:
                for key in ("x", "y", "g1", "g2", "T", "fracdev", "flux", "flux_err"):
                    rows[key].append(float(out[key][s][j]))
                rows["chi2_dof"].append(float(out["chi2_dof"][s]))
                rows["converged"].append(bool(out["converged"][s]))
                rows["n_iter"].append(int(out["n_iter"][s]))
                flags |= int(out["flags"][s])
                j += 1
            else:
                for key in ("x", "y", "g1", "g2", "T", "fracdev", "flux", "flux_err", "chi2_dof"):
                    rows[key].append(nan)
                rows["converged"].append(False)
                rows["n_iter"].append(0)
            rows["flags"].append(flags)
    df = pd.DataFrame(rows)
    return df.astype({"stamp": "int64", "object": "int64", "n_objects": "int64", "converged": "bool",
                      "flags": "int64", "n_iter": "int64"})
