"""The invertible asinh stretch (Lupton, Gunn & Szalay 1999) mapping fluxes to ~[-1, 1] for the tanh output of
generators, fitted per band on a stamp cube.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.stats import sigma_clipped_stats


from workflow_scripts.imaging.stamps import CutoutError, nonfinite_stamps

log = logging.getLogger(__name__)
#: asinh softening in units of the background sigma (Lupton+99 use ~ the noise; a few sigma keeps noise linear)
SOFTENING_NSIGMA = 3.0
#: sigma clipping of the background estimate in AsinhScaling.fit (astropy sigma_clipped_stats)
CLIP_NSIGMA = 3.0
CLIP_MAXITERS = 10
#: pixels sampled per band to estimate the background sigma in AsinhScaling.fit
FIT_SAMPLE = 2_000_000


# ---------------------------------------------------------------------------------------------- scaling
def _robust_sigma(values: np.ndarray, rng: np.random.Generator) -> float:
    """Background sigma: iterative 3-sigma clipping (sources are the positive tail) on a random sample."""
    v = values[np.isfinite(values)]
    if v.size > FIT_SAMPLE:
        v = rng.choice(v, FIT_SAMPLE, replace=False)
    if v.size == 0:
        return 0.0
    _, _, std = sigma_clipped_stats(v, sigma=CLIP_NSIGMA, maxiters=CLIP_MAXITERS)
    return float(std)


@dataclass(frozen=True)
class AsinhScaling:
    """Invertible asinh stretch (Lupton, Gunn & Szalay 1999): ``y = asinh(x / softening) / scale``.

    Linear (``y ~ x / (softening * scale)``) for ``|x| << softening``, logarithmic above, odd and strictly
    increasing; ``inverse(y) = softening * sinh(scale * y)``. ``softening`` and ``scale`` are scalars or one value
    per band; per-band values apply along axis -3 of the data (``(..., n_bands, H, W)``). :meth:`fit` picks
    ``softening = SOFTENING_NSIGMA x`` the background sigma and ``scale = asinh(max|x| / softening)``, so the
    fitted data land in [-1, 1] (new data, e.g. blends, may exceed 1 a little).
    """

    softening: float | tuple[float, ...]
    scale: float | tuple[float, ...]

    def __post_init__(self) -> None:
        s, c = np.atleast_1d(self.softening), np.atleast_1d(self.scale)
        if not (np.isfinite(s).all() and (s > 0).all() and np.isfinite(c).all() and (c > 0).all()):
            raise CutoutError(f"AsinhScaling: softening and scale must be finite and > 0, got {self.softening}, "
                              f"{self.scale}")
        if s.size != c.size and 1 not in (s.size, c.size):
            raise CutoutError(f"AsinhScaling: {s.size} softenings for {c.size} scales")

    def _params(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(self.softening, dtype=np.float64)
        c = np.asarray(self.scale, dtype=np.float64)
        if s.ndim or c.ndim:
            if ndim < 3:
                raise CutoutError("per-band AsinhScaling needs data shaped (..., n_bands, H, W)")
            s, c = np.atleast_1d(s)[:, None, None], np.atleast_1d(c)[:, None, None]
        return s, c

    @staticmethod
    def _out_dtype(x: np.ndarray) -> Any:
        return x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64

    def forward(self, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        s, c = self._params(arr.ndim)
        return (np.arcsinh(arr.astype(np.float64) / s) / c).astype(self._out_dtype(arr), copy=False)

    def inverse(self, y: Any) -> np.ndarray:
        arr = np.asarray(y)
        s, c = self._params(arr.ndim)
        return (s * np.sinh(arr.astype(np.float64) * c)).astype(self._out_dtype(arr), copy=False)

    @classmethod
    def fit(cls, cube: Any, *, sigma: float | Sequence[float] | None = None, n_sigma: float = SOFTENING_NSIGMA,
            per_band: bool = True, seed: int = 0) -> "AsinhScaling":
        """Choose the softening from the noise (``n_sigma`` x sigma; sigma from 3-sigma-clipped pixels unless
        given) and the scale so that ``max |x|`` maps to 1. ``per_band``: one pair per band (axis 1 of a
        (N, n_bands, H, W) cube), else one for all."""
        arr = np.asarray(cube)
        if arr.size == 0:
            raise CutoutError("AsinhScaling.fit: empty cube")
        if bad := nonfinite_stamps(arr):
            raise CutoutError(f"AsinhScaling.fit: {bad}")
        rng = np.random.default_rng(seed)
        groups = [arr[:, b] for b in range(arr.shape[1])] if (per_band and arr.ndim == 4) else [arr]
        sig = (np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(groups),)) if sigma is not None
               else np.array([_robust_sigma(g.ravel(), rng) for g in groups]))
        soft, scale = [], []
        for g, sg in zip(groups, sig):
            peak = float(np.abs(g).max())
            if peak == 0:
                raise CutoutError("AsinhScaling.fit: every pixel is 0")
            if not sg > 0:
                sg = 1e-3 * peak
                log.warning("AsinhScaling.fit: no background noise measured; softening set from the peak")
            b = n_sigma * float(sg)
            soft.append(b)
            scale.append(max(float(np.arcsinh(peak / b)), 1e-12))
        if len(groups) == 1:
            return cls(soft[0], scale[0])
        return cls(tuple(soft), tuple(scale))

    def to_dict(self) -> dict[str, Any]:
        return {"softening": np.atleast_1d(self.softening).tolist(), "scale": np.atleast_1d(self.scale).tolist(),
                "per_band": not np.isscalar(self.softening)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AsinhScaling":
        s, c = list(d["softening"]), list(d["scale"])
        if d.get("per_band", len(s) > 1):
            return cls(tuple(float(v) for v in s), tuple(float(v) for v in c))
        return cls(float(s[0]), float(c[0]))
