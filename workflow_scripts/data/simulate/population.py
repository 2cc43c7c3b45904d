"""The normal galaxy and star populations of an embedded survey.

Galaxies are bulge (de Vaucouleurs, n = 4) + disk (exponential, n = 1) profiles that share their half-light
radius, axis ratio and position angle, so the composite's half-light radius is exactly ``truth_hlr`` (the
circularised radius sqrt(a b) of the intrinsic, pre-PSF light). The light-weighted Sersic index recorded as
``truth_sersic_n`` is 1 + 3 B/T. Everything is drawn from one numpy Generator, in a fixed order.

Scaling relations (all constants below carry their source):

* magnitudes in the survey's ``mag_band`` follow a broken power law dN/dm, normalised at AB = 25;
* redshifts follow p(z) ~ z^2 exp[-(z/z0)^1.5] (Smail+1995 form) whose median rises with magnitude;
* half-light radii follow a luminosity-size relation that shrinks with redshift as (1+z)^-0.75 for disks and
  (1+z)^-1.48 for spheroids (van der Wel+2014), with 0.2 dex log-normal scatter;
* colours interpolate between CWW templates (:mod:`.seds`), redder for bulge-dominated galaxies.

Star-forming clumps (optional, the survey's ``embedded.clumps`` block, :class:`ClumpConfig`): in a share of
the galaxies (``share``, drawn per galaxy), a fraction f of each disk's light (f uniform in ``fraction``) is moved from the smooth exponential into n point-like knots (n
integer uniform in ``n_knots``) placed by :class:`galsim.RandomKnots` along the same exponential (same half-light
radius), sheared with the galaxy's q and beta like the disk; the total flux is unchanged (:func:`bulge_disk_parts`
returns the smooth part and the knot table, which the renderer draws as point sources). The knots are achromatic
like the rest of the profile (one profile scaled per band): real clumps are bluer than their disks (Guo+2015,
2018; Wuyts+2012), here their share is the same in every band. Clump parameters come from their own random
stream (:func:`draw_knots`), never from the population's, so switching clumps on or off changes nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import galsim
import numpy as np
from scipy.special import gammainc, gammaincinv

from workflow_scripts.errors import ConfigError

# --------------------------------------------------------------------------------------- number counts
#: Reference magnitude and differential counts there (per deg^2 per mag): Windhorst+2011 (ApJS 193, 27) find
#: ~1e5 galaxies /deg^2/mag at AB = 25 from 0.6 to 1.6 um (their Fig. 11); JWST 2-4 um counts are similar
#: (Windhorst+2023, AJ 165, 13).
COUNTS_REF_MAG = 25.0
COUNTS_AT_REF = 1.0e5
#: Logarithmic slope d log10 N / dm brighter than the reference (Metcalfe+2001, Windhorst+2011: ~0.3) ...
COUNTS_SLOPE_BRIGHT = 0.30
#: ... and fainter, where the counts flatten (Windhorst+2011 faint-end slopes 0.2-0.25 dex/mag).
COUNTS_SLOPE_FAINT = 0.22
#: Brightest simulated galaxy (AB, mag_band); a 2-4 arcmin^2 field holds ~0 galaxies brighter than this.
MAG_BRIGHT = 17.0

# ------------------------------------------------------------------------------------------ redshifts
#: Median redshift vs magnitude: ~1.0 at AB 23 rising ~0.25 per mag (CANDELS photo-z, Dahlen+2013;
#: 3D-HST, Skelton+2014), clipped to a sensible range.
ZMED_REF_MAG = 23.0
ZMED_AT_REF = 1.0
ZMED_SLOPE = 0.25
ZMED_RANGE = (0.3, 3.0)
#: Shape of p(z) ~ z^ZDIST_ALPHA exp[-(z/z0)^ZDIST_BETA] (Smail+1995; Baugh & Efstathiou 1993 form).
ZDIST_ALPHA = 2.0
ZDIST_BETA = 1.5
#: Redshift range of normal galaxies (the brief: 0-5; z > 0 keeps distance moduli finite).
Z_RANGE = (0.05, 5.0)

# ------------------------------------------------------------------------------------------------ sizes
#: Reference absolute magnitude (~L*) for the size-luminosity relation.
SIZE_REF_ABSMAG = -21.0
#: Half-light radius (kpc) of an L* disk / spheroid at z = 0: van der Wel+2014 (ApJ 788, 28) give ~7 / 4 kpc
#: at M* = 5e10 Msun and z = 0.25; L* galaxies are somewhat smaller.
SIZE_REF_KPC_DISK = 5.0
SIZE_REF_KPC_BULGE = 3.0
#: r ~ L^slope: late types R ~ M*^0.22 (van der Wel+2014); spheroids steeper (we adopt 0.4 for L <~ L*).
SIZE_LUM_SLOPE_DISK = 0.22
SIZE_LUM_SLOPE_BULGE = 0.40
#: Redshift evolution r ~ (1+z)^-slope (van der Wel+2014: 0.75 late types, 1.48 early types).
SIZE_Z_SLOPE_DISK = 0.75
SIZE_Z_SLOPE_BULGE = 1.48
#: Log-normal scatter of sizes at fixed luminosity and redshift (dex; van der Wel+2014: 0.16-0.2).
SIZE_SCATTER_DEX = 0.20
#: Clip of half-light radii (arcsec): below ~1/6 pixel a galaxy is a point source; 2" is the largest disk
#: in a few-arcmin field.
HLR_RANGE_ARCSEC = (0.01, 2.0)

# --------------------------------------------------------------------------------- morphology, colours
#: Bulge-to-total flux ratio ~ Beta(a, b): mean 0.3, most faint galaxies disk-dominated (CANDELS
#: bulge-disk decompositions, Lang+2014; Dimauro+2018).
BT_BETA = (0.6, 1.4)
#: Components below this flux fraction are dropped (saves one profile per galaxy).
BT_MIN_COMPONENT = 0.01
#: Axis ratio q = Q_MIN + (1 - Q_MIN) Beta(a + a_bulge B/T, b): disks peak at q ~ 0.6, spheroids rounder
#: (van der Wel+2014b, ApJL 792, L6).
Q_MIN = 0.15
Q_BETA = (2.0, 1.5)
Q_BETA_BULGE_BOOST = 3.0
#: de Vaucouleurs bulges are truncated at this many half-light radii (GREAT3 used 4.5; the half-light radius
#: given is that of the truncated profile).
BULGE_TRUNC_HLR = 5.0
#: Template type t (0 = E ... 3 = Im) = TYPE_MAX (1 - B/T) + TYPE_Z_SLOPE z + N(0, TYPE_SCATTER): bulges
#: red, disks blue, galaxies bluer at high z (younger populations).
TYPE_MAX = 3.0
TYPE_Z_SLOPE = 0.3
TYPE_SCATTER = 0.6

# ------------------------------------------------------------------------------------------------ stars
#: Stellar effective temperatures (K), uniform: K to A dwarfs dominate faint high-latitude star counts.
STAR_TEFF_RANGE = (3500.0, 9000.0)

# ---------------------------------------------------------------------------------------- cosmology grid
#: Redshift grid for distance moduli and angular scales (Planck 2018 flat LCDM via astropy).
COSMO_Z_GRID = np.linspace(0.01, 8.0, 800)


@dataclass
class GalaxyDraw:
    """Intrinsic parameters of drawn galaxies (arrays of equal length)."""

    mag: np.ndarray          # AB in mag_band
    z: np.ndarray
    hlr: np.ndarray          # arcsec, circularised
    bulge_frac: np.ndarray
    q: np.ndarray
    beta: np.ndarray         # degrees, from +x towards +y (pixel axes)
    ttype: np.ndarray        # continuous CWW template type

    def __len__(self) -> int:
        return len(self.mag)


# ------------------------------------------------------------------------------------- number counts
def _segment_integral(m1: float, m2: float, slope: float) -> float:
    if m2 <= m1:
        return 0.0
    a = slope * np.log(10.0)
    return COUNTS_AT_REF / a * (10 ** (slope * (m2 - COUNTS_REF_MAG)) - 10 ** (slope * (m1 - COUNTS_REF_MAG)))


def _segments(m_bright: float, m_faint: float) -> list[tuple[float, float, float]]:
    ref = COUNTS_REF_MAG
    return [(m_bright, min(m_faint, ref), COUNTS_SLOPE_BRIGHT), (max(m_bright, ref), m_faint, COUNTS_SLOPE_FAINT)]


def surface_density(m_bright: float, m_faint: float) -> float:
    """Galaxies per deg^2 with m_bright <= m < m_faint in the mag_band."""
    return sum(_segment_integral(a, b, s) for a, b, s in _segments(m_bright, m_faint))


def draw_magnitudes(rng: np.random.Generator, area_deg2: float, m_faint: float,
                    m_bright: float = MAG_BRIGHT) -> np.ndarray:
    """Poisson number of galaxies over ``area_deg2`` with magnitudes from the broken power law."""
    segs = _segments(m_bright, m_faint)
    weights = np.array([_segment_integral(a, b, s) for a, b, s in segs])
    n = int(rng.poisson(area_deg2 * weights.sum()))
    which = rng.choice(len(segs), size=n, p=weights / weights.sum())
    u = rng.random(n)
    mags = np.empty(n)
    for k, (m1, m2, slope) in enumerate(segs):
        sel = which == k
        lo, hi = 10 ** (slope * (m1 - COUNTS_REF_MAG)), 10 ** (slope * (m2 - COUNTS_REF_MAG))
        mags[sel] = COUNTS_REF_MAG + np.log10(lo + u[sel] * (hi - lo)) / slope
    return mags


# ------------------------------------------------------------------------------------------ redshifts
def median_redshift(mag: np.ndarray) -> np.ndarray:
    return np.clip(ZMED_AT_REF + ZMED_SLOPE * (np.asarray(mag) - ZMED_REF_MAG), *ZMED_RANGE)


def draw_redshifts(rng: np.random.Generator, mag: np.ndarray,
                   z_range: tuple[float, float] = Z_RANGE) -> np.ndarray:
    """Redshifts from p(z) ~ z^2 exp[-(z/z0)^1.5], median set by magnitude, truncated to ``z_range``.

    With u = (z/z0)^beta, u ~ Gamma((alpha+1)/beta); the truncated draw is an inverse-CDF draw between the
    CDF values of the range limits.
    """
    mag = np.asarray(mag, dtype=float)
    shape = (ZDIST_ALPHA + 1.0) / ZDIST_BETA
    z_med = median_redshift(mag)
    z0 = z_med / gammaincinv(shape, 0.5) ** (1.0 / ZDIST_BETA)
    c_lo = gammainc(shape, (z_range[0] / z0) ** ZDIST_BETA)
    c_hi = gammainc(shape, (z_range[1] / z0) ** ZDIST_BETA)
    u = c_lo + rng.random(len(mag)) * (c_hi - c_lo)
    z = z0 * gammaincinv(shape, u) ** (1.0 / ZDIST_BETA)
    return np.clip(z, *z_range)


# ------------------------------------------------------------------------------------------------ sizes
class Cosmology:
    """Distance modulus and kpc per arcsec on a grid (Planck 2018), interpolated."""

    def __init__(self) -> None:
        from astropy.cosmology import Planck18

        self.z = COSMO_Z_GRID
        self.distmod = Planck18.distmod(self.z).value
        self.kpc_per_arcsec = Planck18.kpc_proper_per_arcmin(self.z).value / 60.0

    def absolute_mag(self, mag: np.ndarray, z: np.ndarray) -> np.ndarray:
        """M = m - DM(z) + 2.5 log10(1+z): flat-f_nu K-correction (colour terms ignored)."""
        return mag - np.interp(z, self.z, self.distmod) + 2.5 * np.log10(1.0 + z)

    def arcsec(self, kpc: np.ndarray, z: np.ndarray) -> np.ndarray:
        return kpc / np.interp(z, self.z, self.kpc_per_arcsec)


def draw_sizes(rng: np.random.Generator, cosmo: Cosmology, mag: np.ndarray, z: np.ndarray,
               bulge_frac: np.ndarray) -> np.ndarray:
    """Half-light radii (arcsec) from the luminosity-size-redshift relation with log-normal scatter."""
    lum = 10 ** (-0.4 * (cosmo.absolute_mag(mag, z) - SIZE_REF_ABSMAG))
    bt = np.asarray(bulge_frac)
    r_ref = SIZE_REF_KPC_DISK + (SIZE_REF_KPC_BULGE - SIZE_REF_KPC_DISK) * bt
    lum_slope = SIZE_LUM_SLOPE_DISK + (SIZE_LUM_SLOPE_BULGE - SIZE_LUM_SLOPE_DISK) * bt
    z_slope = SIZE_Z_SLOPE_DISK + (SIZE_Z_SLOPE_BULGE - SIZE_Z_SLOPE_DISK) * bt
    r_kpc = r_ref * lum**lum_slope * (1.0 + z) ** (-z_slope)
    r_kpc = r_kpc * 10 ** (SIZE_SCATTER_DEX * rng.standard_normal(len(r_kpc)))
    return np.clip(cosmo.arcsec(r_kpc, z), *HLR_RANGE_ARCSEC)


# ------------------------------------------------------------------------------------------- galaxies
def draw_galaxies(rng: np.random.Generator, cosmo: Cosmology, mag: np.ndarray,
                  z: np.ndarray | None = None) -> GalaxyDraw:
    """Intrinsic parameters of galaxies with given magnitudes (redshifts drawn unless given)."""
    mag = np.asarray(mag, dtype=float)
    n = len(mag)
    if z is None:
        z = draw_redshifts(rng, mag)
    bt = rng.beta(*BT_BETA, size=n)
    hlr = draw_sizes(rng, cosmo, mag, z, bt)
    q = Q_MIN + (1.0 - Q_MIN) * rng.beta(Q_BETA[0] + Q_BETA_BULGE_BOOST * bt, Q_BETA[1])
    beta = rng.uniform(0.0, 180.0, size=n)
    ttype = np.clip(TYPE_MAX * (1.0 - bt) + TYPE_Z_SLOPE * z + TYPE_SCATTER * rng.standard_normal(n), 0.0, TYPE_MAX)
    return GalaxyDraw(mag=mag, z=np.asarray(z, dtype=float), hlr=hlr, bulge_frac=bt, q=q, beta=beta, ttype=ttype)


def sersic_index(bulge_frac: np.ndarray) -> np.ndarray:
    """Light-weighted Sersic index of a bulge (n=4) + disk (n=1) galaxy."""
    return 1.0 + 3.0 * np.asarray(bulge_frac)


# ---------------------------------------------------------------------------------------------- clumps
@dataclass(frozen=True)
class ClumpConfig:
    """The ``embedded.clumps`` block: share of the disk light in knots and the number of knots (ranges)."""

    fraction: tuple[float, float]     # of the disk flux, uniform
    n_knots: tuple[int, int]          # integer uniform, both ends included
    share: float = 1.0                # of the normal galaxies that are clumpy (merger bodies always are)

    @classmethod
    def from_embedded(cls, emb: Mapping[str, Any], where: str = "embedded") -> "ClumpConfig | None":
        """The clump settings of an ``embedded`` block; None when ``clumps`` is absent or null (no clumps)."""
        spec = emb.get("clumps")
        if spec is None:
            return None
        lo, hi = (float(v) for v in spec["fraction"])
        nlo, nhi = (int(v) for v in spec["n_knots"])
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"{where}.clumps.fraction must be [low, high] with 0 <= low <= high <= 1, "
                              f"got {list(spec['fraction'])}")
        if not 1 <= nlo <= nhi:
            raise ConfigError(f"{where}.clumps.n_knots must be [low, high] with 1 <= low <= high, "
                              f"got {list(spec['n_knots'])}")
        share = float(spec.get("share", 1.0))
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{where}.clumps.share must be within [0, 1], got {spec['share']}")
        return cls(fraction=(lo, hi), n_knots=(nlo, nhi), share=share)


@dataclass
class KnotDraw:
    """Clump parameters of n galaxies (arrays of equal length); disk_frac 0 = no knots."""

    disk_frac: np.ndarray      # share of the disk flux in knots
    n_knots: np.ndarray        # int
    seed: np.ndarray           # int, seed of the galsim.BaseDeviate that places the knots

    def __len__(self) -> int:
        return len(self.disk_frac)

    def params(self, i: int) -> dict[str, Any]:
        """Keyword arguments of :func:`bulge_disk_parts` for galaxy ``i``."""
        return {"knot_frac": float(self.disk_frac[i]), "n_knots": int(self.n_knots[i]), "knot_seed": int(self.seed[i])}


def no_knots(n: int) -> KnotDraw:
    return KnotDraw(disk_frac=np.zeros(n), n_knots=np.zeros(n, dtype=np.int64), seed=np.zeros(n, dtype=np.int64))


def draw_knots(rng: np.random.Generator | None, n: int, spec: ClumpConfig | None, *,
               all_clumpy: bool = False) -> KnotDraw:
    """Clump parameters of ``n`` galaxies from the clump stream ``rng`` (nothing drawn when ``spec`` is None).

    Drawn for every galaxy, whether it has a disk or not, so that the stream's use depends on ``n`` only. With
    ``spec.share`` below 1 (and not ``all_clumpy``) a galaxy is clumpy with that probability, drawn after the
    other parameters (``share`` 1 uses the stream exactly as before it existed); the others get no knots.
    """
    if spec is None or n == 0:
        return no_knots(n)
    if rng is None:
        raise ValueError("clumps are configured but no clump random stream was given")
    frac = rng.uniform(*spec.fraction, size=n)
    n_knots = rng.integers(spec.n_knots[0], spec.n_knots[1] + 1, size=n)
    seed = rng.integers(1, 2**31 - 1, size=n)
    if spec.share < 1.0 and not all_clumpy:
        frac = np.where(rng.uniform(size=n) < spec.share, frac, 0.0)
    return KnotDraw(disk_frac=frac, n_knots=n_knots.astype(np.int64), seed=seed.astype(np.int64))


def _has_bulge(bulge_frac: float) -> bool:
    return bool(bulge_frac > BT_MIN_COMPONENT)


def _has_disk(bulge_frac: float) -> bool:
    return bool(bulge_frac < 1.0 - BT_MIN_COMPONENT)


#: An empty knot table: (n, 3) rows of x, y (arcsec from the profile centre, pixel axes) and flux.
NO_KNOTS = np.zeros((0, 3))


def disk_knot_positions(hlr: float, q: float, beta_deg: float, n_knots: int, seed: int) -> np.ndarray:
    """(n, 2) knot offsets (arcsec): :class:`galsim.RandomKnots` following the sheared exponential disk."""
    disk = galsim.Exponential(half_light_radius=hlr).shear(q=q, beta=beta_deg * galsim.degrees)
    knots = galsim.RandomKnots(int(n_knots), profile=disk, rng=galsim.BaseDeviate(int(seed)))
    return np.asarray(knots.points, dtype=float).reshape(-1, 2)


def bulge_disk_parts(hlr: float, bulge_frac: float, q: float, beta_deg: float, knot_frac: float = 0.0,
                     n_knots: int = 0, knot_seed: int = 0) -> tuple[galsim.GSObject, np.ndarray]:
    """The unit-flux bulge + disk profile as its smooth part and its star-forming knots.

    Without knots (``knot_frac`` or ``n_knots`` 0, or no disk component) the smooth part is the whole unit-flux
    profile and the knot table is empty. Otherwise a share ``knot_frac`` of the disk flux is taken out of the
    exponential and put in ``n_knots`` equal point sources placed by :func:`disk_knot_positions` (seeded by
    ``knot_seed``): the smooth part's flux plus the knots' (column 2 of the (n, 3) table: x, y in arcsec, flux)
    is 1. Achromatic: the same profile is scaled per band (real clumps are bluer than their disks; here their
    share is the same in every band).
    """
    parts = []
    if not (knot_frac > 0 and n_knots > 0 and _has_disk(bulge_frac)):
        if _has_bulge(bulge_frac):
            parts.append(galsim.DeVaucouleurs(half_light_radius=hlr, trunc=BULGE_TRUNC_HLR * hlr, flux=bulge_frac))
        if _has_disk(bulge_frac):
            parts.append(galsim.Exponential(half_light_radius=hlr, flux=1.0 - bulge_frac))
        prof = parts[0] if len(parts) == 1 else galsim.Add(parts)
        return prof.withFlux(1.0).shear(q=q, beta=beta_deg * galsim.degrees), NO_KNOTS
    disk = 1.0 - bulge_frac
    total = disk + (bulge_frac if _has_bulge(bulge_frac) else 0.0)
    if _has_bulge(bulge_frac):
        parts.append(galsim.DeVaucouleurs(half_light_radius=hlr, trunc=BULGE_TRUNC_HLR * hlr,
                                          flux=bulge_frac / total))
    if knot_frac < 1.0:
        parts.append(galsim.Exponential(half_light_radius=hlr, flux=disk * (1.0 - knot_frac) / total))
    if not parts:   # a pure disk entirely in knots: a zero-flux smooth part keeps the interface
        parts.append(galsim.Exponential(half_light_radius=hlr, flux=0.0))
    prof = parts[0] if len(parts) == 1 else galsim.Add(parts)
    xy = disk_knot_positions(hlr, q, beta_deg, n_knots, knot_seed)
    knots = np.column_stack([xy, np.full(len(xy), disk * knot_frac / total / len(xy))])
    return prof.shear(q=q, beta=beta_deg * galsim.degrees), knots


def knots_profile(knots: np.ndarray) -> galsim.GSObject | None:
    """The knots of a (n, 3) table as one GalSim profile (shifted delta functions); None when empty."""
    if not len(knots):
        return None
    deltas = [galsim.DeltaFunction(flux=float(f)).shift(float(x), float(y)) for x, y, f in knots]
    return deltas[0] if len(deltas) == 1 else galsim.Add(deltas)


def bulge_disk_profile(hlr: float, bulge_frac: float, q: float, beta_deg: float, knot_frac: float = 0.0,
                       n_knots: int = 0, knot_seed: int = 0) -> galsim.GSObject:
    """Unit-flux bulge + disk profile centred at the origin (arcsec), knots included (:func:`bulge_disk_parts`).

    The renderer draws the smooth part by FFT and the knots as point sources (see
    :mod:`workflow_scripts.data.simulate.field`); this single object is the same light for other uses.
    """
    smooth, knots = bulge_disk_parts(hlr, bulge_frac, q, beta_deg, knot_frac, n_knots, knot_seed)
    extra = knots_profile(knots)
    return smooth if extra is None else galsim.Add([smooth, extra])


def galaxy_extent(hlr: np.ndarray, q: np.ndarray, hlr_factor: float) -> np.ndarray:
    """Radius (arcsec) along the major axis holding the galaxy's light for stamp sizing."""
    return hlr_factor * np.asarray(hlr) / np.sqrt(np.asarray(q))


def draw_star_teff(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(*STAR_TEFF_RANGE, size=n)
