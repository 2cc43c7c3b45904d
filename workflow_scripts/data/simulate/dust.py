"""Dust attenuation of the embedded galaxies: the Calzetti et al. (2000) starburst law.

The CWW templates carry no dust, so without this no embedded galaxy is redder than the templates allow
(CEERS: none above F277W - F444W = 0.8 at F444W < 26), while real deep NIRCam fields hold dust-reddened
galaxies, up to the "HST-dark" ones (A_V ~ 2-4; Barrufet+2023, Nelson+2023). The ``embedded.dust`` block
(absent or null = none) gives every normal galaxy and merger member a stellar colour excess E(B-V):

* disks hold the dust: E(B-V) = (1 - B/T) x Exponential(``ebv_mean``), typical star-forming galaxies at
  z ~ 1-3 having E(B-V)_star ~ 0.1-0.3 (Reddy+2015, Shivaei+2020);
* a share ``dusty_share`` of them are dusty star-forming galaxies with E(B-V) uniform in ``dusty_ebv``
  (whatever their bulge fraction).

Every band's flux is dimmed by the band-averaged attenuation of the galaxy's own spectrum: with <k> and var(k)
the flux-weighted mean and variance of k(lambda_rest) through the band (precomputed with the colours,
:class:`~.seds.ColourGrid`), A_band = <k> E(B-V) - 0.2 ln(10) var(k) E(B-V)^2, the first two cumulants of
-2.5 log10 <10^(-0.4 k E(B-V))> (within 0.01 mag of integrating the attenuated spectrum for E(B-V) <= 1.2, tested;
the law taken at the band's pivot is off by up to 0.17 mag across a break). The colours are renormalised at the
survey's ``mag_band``: the magnitudes drawn from the number counts are
observed ones, so dust changes colours, never the counts. The draws come from their own random stream, so
switching dust on or off changes nothing else in the field.

Calzetti+2000 (ApJ 533, 682) eq. 4 is two short polynomials in 1/lambda: written here rather than depending on a
package for it. Beyond its 0.12-2.2 um validity it is continued with the same formulae and clipped at zero
(k reaches 0 near 3 um rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workflow_scripts.errors import ConfigError

#: Calzetti+2000 total-to-selective ratio R'_V of the starburst law.
CALZETTI_RV = 4.05
#: Where the law switches from its UV-optical to its optical-NIR polynomial (um).
CALZETTI_SPLIT_UM = 0.63
#: Shortest wavelength (um) at which the law is evaluated: bluer light is attenuated as at this wavelength.
CALZETTI_MIN_UM = 0.09
#: Coefficient of var(k) E(B-V)^2 in a band's attenuation: 0.4 ln(10) / 2 (second cumulant of the log-flux).
CUMULANT_SECOND = 0.2 * np.log(10.0)


def calzetti_k(wave_um: np.ndarray | float) -> np.ndarray:
    """Calzetti+2000 k'(lambda) (A_lambda / E(B-V)_star) at rest wavelengths in micron, clipped at 0."""
    lam = np.maximum(np.asarray(wave_um, dtype=float), CALZETTI_MIN_UM)
    x = 1.0 / lam
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + CALZETTI_RV
    red = 2.659 * (-1.857 + 1.040 * x) + CALZETTI_RV
    return np.clip(np.where(lam < CALZETTI_SPLIT_UM, blue, red), 0.0, None)


@dataclass(frozen=True)
class DustConfig:
    """The ``embedded.dust`` block (see the module docstring)."""

    ebv_mean: float                      # mean of the exponential E(B-V) of a pure disk
    dusty_share: float = 0.0             # share of dusty star-forming galaxies
    dusty_ebv: tuple[float, float] = (0.0, 0.0)   # their E(B-V), uniform

    @classmethod
    def from_embedded(cls, emb: Mapping[str, Any], where: str = "embedded") -> "DustConfig | None":
        """The dust settings of an ``embedded`` block; None when ``dust`` is absent or null."""
        spec = emb.get("dust")
        if spec is None:
            return None
        mean = float(spec["ebv_mean"])
        share = float(spec.get("dusty_share", 0.0))
        lo, hi = (float(v) for v in spec.get("dusty_ebv", (0.0, 0.0)))
        if not mean >= 0:
            raise ConfigError(f"{where}.dust.ebv_mean must be >= 0, got {spec['ebv_mean']}")
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{where}.dust.dusty_share must be within [0, 1], got {spec['dusty_share']}")
        if not 0.0 <= lo <= hi:
            raise ConfigError(f"{where}.dust.dusty_ebv must be [low, high] with 0 <= low <= high, "
                              f"got {list(spec['dusty_ebv'])}")
        if share > 0 and "dusty_ebv" not in spec:
            raise ConfigError(f"{where}.dust.dusty_share > 0 needs dusty_ebv: [low, high]")
        return cls(ebv_mean=mean, dusty_share=share, dusty_ebv=(lo, hi))


def draw_ebv(rng: np.random.Generator | None, bulge_frac: np.ndarray, spec: DustConfig | None) -> np.ndarray:
    """E(B-V)_star of galaxies with bulge fractions ``bulge_frac`` from the dust stream ``rng`` (zeros when
    ``spec`` is None). Three draws per galaxy, whatever the outcome, so the stream's use depends on n only."""
    bt = np.asarray(bulge_frac, dtype=float)
    n = len(bt)
    if spec is None or n == 0:
        return np.zeros(n)
    if rng is None:
        raise ValueError("dust is configured but no dust random stream was given")
    disk = (1.0 - bt) * rng.exponential(spec.ebv_mean, size=n)     # scale 0 draws zeros, and still draws
    dusty = rng.uniform(*spec.dusty_ebv, size=n)
    is_dusty = rng.uniform(size=n) < spec.dusty_share
    return np.where(is_dusty, dusty, disk)


def attenuate(ratios: np.ndarray, attenuation: np.ndarray, ref_index: int) -> np.ndarray:
    """Flux ratios band / mag_band ``(n, n_bands)`` dimmed by ``attenuation`` (mag, same shape), renormalised at
    column ``ref_index`` (the mag_band keeps its flux)."""
    a = np.asarray(attenuation, dtype=float)
    return np.asarray(ratios, dtype=float) * 10.0 ** (-0.4 * (a - a[:, [ref_index]]))
