"""Colours of simulated sources: galaxy templates, IGM absorption, stellar blackbodies, band integrals.

Every colour is a ratio of mean photon-weighted f_nu in a band to that in the survey's ``mag_band``:
``m_band - m_ref = -2.5 log10(R)``, so the flux of a source in a band (image units) is
``Band.flux(m_ref) * R``. Integration is done here in numpy (no per-galaxy GalSim chromatic draws); the
galaxy colours are precomputed once on a redshift grid per template (:class:`ColourGrid`) and interpolated.

* Galaxy templates: Coleman, Wu & Weedman (1980) E, Sbc, Scd, Im, as extended by Bolzonella+2000 and shipped
  with GalSim (``galsim/share/SEDs/CWW_*_ext.sed``; Angstrom, f_lambda). The files stop at 2.205 um rest; NIRCam
  long-wavelength bands at z < 1.3 need more, so the red end is continued with the power law fitted between
  ``RED_FIT_RANGE_NM`` (a smooth Rayleigh-Jeans-like stellar tail, no PAH or dust emission).
* IGM: Madau (1995, ApJ 441, 18) Lyman-alpha forest only, tau(lambda_obs) = 0.0036 (lambda_obs / 121.567 nm)^3.46
  blueward of Lyman-alpha, and zero flux blueward of the Lyman limit (91.2 nm rest). Higher Lyman-series lines
  are ignored: the break is slightly too soft at z > 4, which is harmless for these studies.
* Bands: GalSim's HST throughput tables (``bandpass`` key, ``galsim/share/bandpasses/{name}.dat``, nm) or a
  top-hat between the ``wavelength`` edges (nm) when no table exists (JWST NIRCam).
* Stars: blackbodies (Planck function) with an effective temperature; no absorption features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from workflow_scripts.data.simulate.dust import CUMULANT_SECOND, calzetti_k
from workflow_scripts.errors import ConfigError
from workflow_scripts.surveys import Band, Survey

# ---------------------------------------------------------------------------------------------- constants
#: CWW templates shipped with GalSim, ordered from red (early type) to blue (irregular); the continuous
#: "type" t in [0, len-1] interpolates between neighbours (Coleman, Wu & Weedman 1980; Bolzonella+2000).
TEMPLATES = ("CWW_E_ext", "CWW_Sbc_ext", "CWW_Scd_ext", "CWW_Im_ext")
#: Redshift grid of the precomputed colours: covers normal galaxies (0-5) and the z 5-7 rare populations.
Z_GRID = np.round(np.arange(0.0, 8.0 + 1e-9, 0.02), 6)
#: Rest-frame range (nm) over which the red end of a template is fitted by a power law for extrapolation.
RED_FIT_RANGE_NM = (1600.0, 2205.0)
#: Extrapolated templates extend to this rest wavelength (nm): F444W red edge (~5 um) observed at z = 0.
RED_EXTEND_NM = 6000.0
#: Wavelength step (nm) of the integration grid; resolves the IGM break at z > 4 (features >~ 10 nm observed).
INTEGRATION_STEP_NM = 1.0
#: Lyman-alpha and Lyman-limit rest wavelengths (nm).
LYA_NM = 121.567
LYLIMIT_NM = 91.18
#: Madau (1995) Lyman-alpha forest effective optical depth: tau = A (lambda_obs / lambda_Lya)^EXP.
MADAU_LYA_AMPLITUDE = 0.0036
MADAU_LYA_EXPONENT = 3.46
#: Physical constants for the Planck function (SI).
H_PLANCK = 6.62607015e-34
C_LIGHT = 2.99792458e8
K_BOLTZMANN = 1.380649e-23


def _share_dir() -> Path:
    import galsim

    return Path(galsim.meta_data.share_dir)


# ------------------------------------------------------------------------------------------------ bands
@dataclass(frozen=True)
class Throughput:
    """A band's total throughput on a uniform wavelength grid (nm)."""

    wave: np.ndarray
    thru: np.ndarray

    @property
    def pivot(self) -> float:
        """Pivot wavelength (nm): sqrt(int T lambda dlambda / int T / lambda dlambda)."""
        num = np.trapezoid(self.thru * self.wave, self.wave)
        den = np.trapezoid(self.thru / self.wave, self.wave)
        return float(np.sqrt(num / den))


@lru_cache(maxsize=64)
def _load_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    path = _share_dir() / "bandpasses" / f"{name}.dat"
    if not path.exists():
        raise ConfigError(f"bandpass {name!r} not found in GalSim's share/bandpasses ({path})")
    data = np.loadtxt(path, comments="#")
    return data[:, 0], data[:, 1]


def band_throughput(band: Band) -> Throughput:
    """The band's throughput: GalSim's table for ``bandpass`` or a top-hat over ``wavelength`` (nm)."""
    if band.bandpass:
        w, t = _load_table(band.bandpass)
        keep = t > 0
        lo, hi = w[keep].min(), w[keep].max()
        wave = np.arange(lo, hi + INTEGRATION_STEP_NM, INTEGRATION_STEP_NM)
        return Throughput(wave, np.interp(wave, w, t, left=0.0, right=0.0))
    if band.wavelength:
        lo, hi = band.wavelength
        wave = np.arange(lo, hi + INTEGRATION_STEP_NM, INTEGRATION_STEP_NM)
        return Throughput(wave, np.ones_like(wave))
    raise ConfigError(f"band {band.name} needs 'bandpass' or 'wavelength' to be simulated")


def mean_fnu(wave_nm: np.ndarray, flam: np.ndarray, band: Throughput) -> np.ndarray:
    """Photon-weighted mean f_nu of spectra through a band (arbitrary common units).

    ``flam`` is f_lambda sampled on ``wave_nm`` (last axis); returns int f_nu T dlnlambda / int T dlnlambda,
    whose ratio between two bands is the AB flux ratio.
    """
    f = np.asarray(flam, dtype=float)
    flat = f.reshape(-1, f.shape[-1])
    on_band = np.stack([np.interp(band.wave, wave_nm, row, left=0.0, right=0.0) for row in flat])
    fnu = on_band * band.wave**2  # f_nu is proportional to f_lambda lambda^2
    weight = band.thru / band.wave
    out = np.trapezoid(fnu * weight, band.wave, axis=-1) / np.trapezoid(weight, band.wave)
    return out.reshape(f.shape[:-1])


# -------------------------------------------------------------------------------------------- templates
@lru_cache(maxsize=16)
def template_sed(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame template (wavelength nm, f_lambda) extended redward by a fitted power law."""
    path = _share_dir() / "SEDs" / f"{name}.sed"
    data = np.loadtxt(path, comments="#")
    wave = data[:, 0] / 10.0  # Angstrom -> nm
    flam = data[:, 1]
    fit = (wave >= RED_FIT_RANGE_NM[0]) & (wave <= RED_FIT_RANGE_NM[1]) & (flam > 0)
    slope, icpt = np.polyfit(np.log(wave[fit]), np.log(flam[fit]), 1)
    ext = np.arange(wave[-1] + 10.0, RED_EXTEND_NM + 10.0, 10.0)
    wave = np.concatenate([wave, ext])
    flam = np.concatenate([flam, np.exp(icpt + slope * np.log(ext))])
    return wave, flam


def igm_transmission(wave_obs_nm: np.ndarray, z: float) -> np.ndarray:
    """Madau (1995) Lyman-alpha forest transmission, zero below the redshifted Lyman limit."""
    wave = np.asarray(wave_obs_nm, dtype=float)
    trans = np.ones_like(wave)
    if z <= 0:
        return trans
    forest = wave < LYA_NM * (1.0 + z)
    trans[forest] = np.exp(-MADAU_LYA_AMPLITUDE * (wave[forest] / LYA_NM) ** MADAU_LYA_EXPONENT)
    trans[wave < LYLIMIT_NM * (1.0 + z)] = 0.0
    return trans


def observed_sed(name: str, z: float, igm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Template redshifted to ``z`` (observed nm, f_lambda up to a constant), with IGM absorption."""
    wave, flam = template_sed(name)
    wave_obs = wave * (1.0 + z)
    flam_obs = flam / (1.0 + z)
    if igm:
        flam_obs = flam_obs * igm_transmission(wave_obs, z)
    return wave_obs, flam_obs


class ColourGrid:
    """Flux ratios band / mag_band of every template on :data:`Z_GRID`, interpolated per galaxy; with each
    band's flux-weighted mean and variance of the Calzetti k(rest wavelength), for dust (:mod:`.dust`)."""

    def __init__(self, survey: Survey, mag_band: str, templates: tuple[str, ...] = TEMPLATES,
                 z_grid: np.ndarray = Z_GRID) -> None:
        self.bands = survey.band_names
        self.mag_band = mag_band
        self.templates = templates
        self.z_grid = np.asarray(z_grid, dtype=float)
        thr = {b: band_throughput(survey.band(b)) for b in self.bands}
        # ratio[t, z, b]; k_mean, k_var[t, z, b]
        shape = (len(templates), len(self.z_grid), len(self.bands))
        ratio, k_mean, k_var = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for ti, name in enumerate(templates):
            for zi, z in enumerate(self.z_grid):
                wave, flam = observed_sed(name, float(z))
                k = calzetti_k(wave / 1000.0 / (1.0 + z))
                moments = np.array([mean_fnu(wave, flam * k**p, thr[b]) for b in self.bands for p in range(3)])
                fnu, m1, m2 = moments.reshape(len(self.bands), 3).T
                ref = fnu[self.bands.index(mag_band)]
                ratio[ti, zi] = fnu / ref if ref > 0 else 0.0
                with np.errstate(divide="ignore", invalid="ignore"):
                    k_mean[ti, zi] = np.where(fnu > 0, m1 / fnu, 0.0)
                    k_var[ti, zi] = np.where(fnu > 0, np.clip(m2 / fnu - k_mean[ti, zi] ** 2, 0.0, None), 0.0)
        self.ratio, self.k_mean, self.k_var = ratio, k_mean, k_var

    def _interpolate(self, table: np.ndarray, template_type: np.ndarray, z: np.ndarray) -> np.ndarray:
        t = np.clip(np.asarray(template_type, dtype=float), 0.0, len(self.templates) - 1.0)
        z = np.clip(np.asarray(z, dtype=float), self.z_grid[0], self.z_grid[-1])
        zi = np.clip(np.searchsorted(self.z_grid, z, side="right") - 1, 0, len(self.z_grid) - 2)
        zw = (z - self.z_grid[zi]) / (self.z_grid[zi + 1] - self.z_grid[zi])
        ti = np.clip(np.floor(t).astype(int), 0, len(self.templates) - 2)
        tw = t - ti
        out = np.zeros((len(t), len(self.bands)))
        for dt, wt in ((0, 1.0 - tw), (1, tw)):
            for dz, wz in ((0, 1.0 - zw), (1, zw)):
                out += (wt * wz)[:, None] * table[ti + dt, zi + dz]
        return out

    def flux_ratios(self, template_type: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Ratios (n, n_bands) for continuous types t in [0, n_templates-1] and redshifts z.

        Template mixtures are linear in flux normalised at the mag_band, so the ratios interpolate linearly
        between neighbouring templates; redshift interpolation is linear on the grid.
        """
        return self._interpolate(self.ratio, template_type, z)

    def attenuation(self, template_type: np.ndarray, z: np.ndarray, ebv: np.ndarray) -> np.ndarray:
        """Calzetti attenuation (mag, (n, n_bands)) of each band for E(B-V) ``ebv``: the band's flux-weighted
        mean k times E(B-V), less the second cumulant's term (:data:`~.dust.CUMULANT_SECOND` var(k) E(B-V)^2),
        which is exact to third order in E(B-V) k's spread across the band."""
        e = np.asarray(ebv, dtype=float)[:, None]
        return (self._interpolate(self.k_mean, template_type, z) * e
                - CUMULANT_SECOND * self._interpolate(self.k_var, template_type, z) * e**2)


# ------------------------------------------------------------------------------------------------ stars
def blackbody_flam(wave_nm: np.ndarray, teff: float) -> np.ndarray:
    """Planck f_lambda (arbitrary normalisation) at wavelengths in nm."""
    lam = np.asarray(wave_nm, dtype=float) * 1e-9
    x = np.minimum(H_PLANCK * C_LIGHT / (lam * K_BOLTZMANN * teff), 700.0)
    return 1.0 / (lam**5 * np.expm1(x))


def star_flux_ratios(survey: Survey, mag_band: str, teff: np.ndarray) -> np.ndarray:
    """Flux ratios (n, n_bands) band / mag_band of blackbody stars."""
    bands = survey.band_names
    thr = {b: band_throughput(survey.band(b)) for b in bands}
    out = np.zeros((len(teff), len(bands)))
    for i, t in enumerate(np.asarray(teff, dtype=float)):
        fnu = np.array([mean_fnu(thr[b].wave, blackbody_flam(thr[b].wave, t), thr[b]) for b in bands])
        out[i] = fnu / fnu[bands.index(mag_band)]
    return out


def pivot_wavelengths(survey: Survey) -> dict[str, float]:
    """Pivot wavelength (nm) of each band."""
    return {b: band_throughput(survey.band(b)).pivot for b in survey.band_names}
