"""Rare populations with truth labels: compact extremely red objects (EROs) and merging pairs.

EROs follow the selection of Barro et al. (2023, the 37 CEERS EROs that Pearce-Casey+23 used as anomalies):
F277W - F444W > 1.5, F444W < 28, 5 < z < 7, point-like, F150W - F200W ~ 0. Their spectra are described by four
magnitudes at the pivot wavelengths of the F150W, F200W, F277W and F444W bands (a flat-f_nu rest-UV "plateau"
and a steep red rise, the "V shape" of these objects); other bands are interpolated linearly in log wavelength
(flat beyond the end bands). The four bands must exist in the survey when ``n_ero > 0``.

A merging pair is two normal galaxies at one redshift, 0.3-1" apart, each distorted (extra shear and a
lopsided off-centre clump) and carrying a curved tidal tail: a chain of faint, elongated exponential knots
along a circular arc leaving the galaxy away from its companion. The two tails turn in the same sense, as in
a prograde encounter (Toomre & Toomre 1972). Tails share their galaxy's colours. ``truth_hlr``, ``truth_q`` and
``truth_beta`` describe the main body before the tidal distortion; ``truth_flux`` includes the tail, whose
share is ``truth_tail_frac``. With ``embedded.clumps`` the bodies' disks carry star-forming knots like normal
galaxies (:func:`~.population.bulge_disk_profile`; parameters from the clump stream, passed in as ``knots``);
the off-centre tidal clump and the tail knots are part of the merger itself and stay when clumps are off.

Dusty nuclei (``embedded.merger_nucleus``, absent or null = none): interactions drive gas to the centre, where an
obscured starburst makes the nucleus redder than its host (e.g. the red cores of local LIRG mergers). Each member
then puts a share of its light, rising to the red, into a compact exponential nucleus at its centre
(:func:`nucleus_shares`): ``share`` ~ U(range) of the ``mag_band`` flux, and a nucleus redder than its host by
``colour_excess`` ~ U(range) mag between :data:`NUCLEUS_BLUE_NM` (1.15 micron, F115W) and the ``mag_band``, spread
over the bands in proportion to 1/wavelength (an attenuation A ~ 1/lambda; a fixed wavelength, not the bluest band
present, so that a survey restricted to some of its bands draws the same nuclei in those bands). The drawn SED
stays the member's total in every band: the nucleus takes its light from the rest of the member, so the
integrated colours are those of a normal galaxy and only the colour *structure* differs. Its parameters come from
their own random stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import galsim
import numpy as np

from workflow_scripts.errors import ConfigError
from workflow_scripts.surveys import Survey
from workflow_scripts.data.simulate.population import (Cosmology, GalaxyDraw, KnotDraw, bulge_disk_parts,
                                                       draw_galaxies, draw_redshifts, galaxy_extent, no_knots)
from workflow_scripts.data.simulate.seds import pivot_wavelengths

# ------------------------------------------------------------------------------------------------- EROs
#: Bands that define the ERO colours (Barro+2023): the blue pair is flat, the red pair steep.
ERO_BLUE_BANDS = ("F150W", "F200W")
ERO_RED_BANDS = ("F277W", "F444W")
#: F444W magnitude range (Barro+2023 select F444W < 28; their objects are 24-27.5).
ERO_MAG_RANGE = (24.0, 27.5)
#: F277W - F444W colour (selection > 1.5; Barro+2023 colours reach ~2.5).
ERO_RED_COLOUR = (1.6, 2.5)
#: F150W - F200W colour: ~0 (|colour| < 0.2 required; flat f_nu rest-UV).
ERO_BLUE_COLOUR = (-0.15, 0.15)
#: F200W - F277W colour: the floor of the "V" (0-0.5 mag).
ERO_BREAK_COLOUR = (0.0, 0.5)
#: Redshifts (Barro+2023: photometric 5 < z < 7).
ERO_Z_RANGE = (5.0, 7.0)
#: Fraction of EROs drawn as pure point sources; the rest are tiny exponentials (hlr below 0.05").
ERO_POINT_FRACTION = 0.5
ERO_HLR_RANGE = (0.01, 0.045)

# ---------------------------------------------------------------------------------------------- mergers
#: Separation of the two members (arcsec).
MERGER_SEPARATION_ARCSEC = (0.3, 1.0)
#: Primary magnitude = mag_limit - U(range): bright enough that the tidal features are visible.
MERGER_PRIMARY_OFFSET_MAG = (2.0, 5.0)
#: Secondary is fainter than the primary by U(range) mag (major mergers, flux ratio 1:1 to 1:4).
MERGER_SECONDARY_DMAG = (0.0, 1.5)
#: Members are at least this large (arcsec) so that tails are resolved.
MERGER_MIN_HLR_ARCSEC = 0.1
#: Share of a member's light in its tail (Toomre-like tails hold ~10-25 % of the light).
MERGER_TAIL_FRACTION = (0.10, 0.25)
#: Knots per tail, their axis ratio, size relative to the body hlr and brightness decay along the tail.
MERGER_TAIL_KNOTS = 6
MERGER_TAIL_KNOT_Q = 0.3
MERGER_TAIL_KNOT_HLR = 0.45
MERGER_TAIL_DECAY = 1.2
#: Arc radius of the tail in body half-light radii and the angle it sweeps (degrees).
MERGER_TAIL_RADIUS_HLR = (2.0, 3.5)
MERGER_TAIL_SWEEP_DEG = (70.0, 130.0)
#: Tidal distortion of the body: extra reduced shear |g| and an off-centre clump (fraction of the body light,
#: offset and size in body hlr).
MERGER_BODY_SHEAR = (0.1, 0.3)
MERGER_CLUMP_FRACTION = (0.1, 0.2)
MERGER_CLUMP_OFFSET_HLR = 0.7
MERGER_CLUMP_HLR = 0.4


@dataclass
class EroDraw:
    mag: np.ndarray            # in mag_band
    z: np.ndarray
    hlr: np.ndarray            # arcsec; 0 = point source
    ratios: np.ndarray         # (n, n_bands) flux ratio band / mag_band


def draw_eros(rng: np.random.Generator, survey: Survey, mag_band: str, n: int) -> EroDraw:
    """Magnitudes, colours, redshifts and sizes of ``n`` EROs."""
    bands = survey.band_names
    needed = [b for b in (*ERO_BLUE_BANDS, *ERO_RED_BANDS) if b not in bands]
    if n > 0 and needed:
        raise ConfigError(f"surveys.{survey.name}.embedded.n_ero > 0 needs bands {', '.join(needed)} "
                          f"(EROs are defined by F150W-F200W and F277W-F444W colours)")
    piv = pivot_wavelengths(survey)
    m444 = rng.uniform(*ERO_MAG_RANGE, size=n)
    m277 = m444 + rng.uniform(*ERO_RED_COLOUR, size=n)
    m200 = m277 + rng.uniform(*ERO_BREAK_COLOUR, size=n)
    m150 = m200 + rng.uniform(*ERO_BLUE_COLOUR, size=n)
    knots = np.log([piv[b] for b in (*ERO_BLUE_BANDS, *ERO_RED_BANDS)])
    knot_mags = np.stack([m150, m200, m277, m444], axis=1)
    mags = np.stack([np.array([np.interp(np.log(piv[b]), knots, row) for b in bands]) for row in knot_mags]) \
        if n else np.zeros((0, len(bands)))
    ref = mags[:, bands.index(mag_band)] if n else np.zeros(0)
    ratios = 10 ** (-0.4 * (mags - ref[:, None])) if n else np.zeros((0, len(bands)))
    z = rng.uniform(*ERO_Z_RANGE, size=n)
    point = rng.random(n) < ERO_POINT_FRACTION
    hlr = np.where(point, 0.0, rng.uniform(*ERO_HLR_RANGE, size=n))
    return EroDraw(mag=ref, z=z, hlr=hlr, ratios=ratios)


def ero_profile(hlr: float) -> galsim.GSObject | None:
    """Unit-flux ERO profile; None for a point source (drawn as the PSF)."""
    return None if hlr <= 0 else galsim.Exponential(half_light_radius=hlr)


@dataclass
class MergerDraw:
    """Both members of every pair: member k of pair p is row 2p + k."""

    gal: GalaxyDraw            # intrinsic body parameters
    dx: np.ndarray             # offset (arcsec) of the member from the pair midpoint, +x pixel axis
    dy: np.ndarray
    tail_frac: np.ndarray
    profiles: list[galsim.GSObject]   # unit flux with the knots' flux, without them (smooth part)
    extent: np.ndarray         # arcsec, radius holding the body and its tail
    pair_id: np.ndarray
    knots: list[np.ndarray]    # (n, 3) star-forming knots of each member: x, y (arcsec), flux; empty without
    clump_frac: np.ndarray     # share of the member's total flux in those knots (0 without clumps)


def _tail(rng: np.random.Generator, hlr: float, away_deg: float, sense: float) -> tuple[galsim.GSObject, float]:
    """A unit-flux tidal tail leaving the origin towards ``away_deg``, turning by ``sense`` (+1/-1)."""
    radius = rng.uniform(*MERGER_TAIL_RADIUS_HLR) * hlr
    sweep = np.radians(rng.uniform(*MERGER_TAIL_SWEEP_DEG))
    phi0 = np.radians(away_deg)
    k = np.arange(1, MERGER_TAIL_KNOTS + 1)
    theta = sweep * k / MERGER_TAIL_KNOTS
    # circle of radius R starting at the origin with initial tangent phi0
    along, across = radius * np.sin(theta), sense * radius * (1.0 - np.cos(theta))
    px = along * np.cos(phi0) - across * np.sin(phi0)
    py = along * np.sin(phi0) + across * np.cos(phi0)
    weights = np.exp(-MERGER_TAIL_DECAY * k / MERGER_TAIL_KNOTS)
    weights /= weights.sum()
    knot_hlr = MERGER_TAIL_KNOT_HLR * hlr * (1.0 + 0.5 * k / MERGER_TAIL_KNOTS)
    knots = []
    extent = 0.0
    for i in range(MERGER_TAIL_KNOTS):
        tangent = np.degrees(phi0 + sense * theta[i])
        knot = galsim.Exponential(half_light_radius=knot_hlr[i], flux=weights[i])
        knot = knot.shear(q=MERGER_TAIL_KNOT_Q, beta=tangent * galsim.degrees).shift(px[i], py[i])
        knots.append(knot)
        extent = max(extent, float(np.hypot(px[i], py[i])) + 6.0 * knot_hlr[i] / np.sqrt(MERGER_TAIL_KNOT_Q))
    return galsim.Add(knots), extent


def _share(obj: galsim.GSObject, share: float, scaled: bool) -> galsim.GSObject:
    """``obj`` (unit flux) with flux ``share``, or, when ``scaled`` (knots taken out: flux < 1), scaled by it."""
    return obj.withScaledFlux(share) if scaled else obj.withFlux(share)


def draw_mergers(rng: np.random.Generator, cosmo: Cosmology, n_pairs: int, mag_limit: float,
                 body_hlr_factor: float, knots: KnotDraw | None = None) -> MergerDraw:
    """``n_pairs`` merging pairs with their distorted, tailed unit-flux profiles.

    ``knots`` (one row per member, member k of pair p at 2p + k) puts star-forming knots in the bodies' disks;
    it is drawn from the clump stream, so ``rng`` is used exactly as without it.
    """
    if knots is None:
        knots = no_knots(2 * n_pairs)
    if len(knots) != 2 * n_pairs:
        raise ValueError(f"knots for {len(knots)} members given, {2 * n_pairs} needed")
    m1 = mag_limit - rng.uniform(*MERGER_PRIMARY_OFFSET_MAG, size=n_pairs)
    m2 = m1 + rng.uniform(*MERGER_SECONDARY_DMAG, size=n_pairs)
    mags = np.stack([m1, m2], axis=1).ravel()
    z_pair = draw_redshifts(rng, m1)
    gal = draw_galaxies(rng, cosmo, mags, z=np.repeat(z_pair, 2))
    gal.hlr = np.maximum(gal.hlr, MERGER_MIN_HLR_ARCSEC)
    sep = rng.uniform(*MERGER_SEPARATION_ARCSEC, size=n_pairs)
    axis = rng.uniform(0.0, 360.0, size=n_pairs)
    sense = rng.choice([-1.0, 1.0], size=n_pairs)
    dx = np.empty(2 * n_pairs)
    dy = np.empty(2 * n_pairs)
    tail_frac = rng.uniform(*MERGER_TAIL_FRACTION, size=2 * n_pairs)
    profiles: list[galsim.GSObject] = []
    extent = np.empty(2 * n_pairs)
    member_knots: list[np.ndarray] = []
    for p in range(n_pairs):
        for k in range(2):
            i = 2 * p + k
            # member 0 sits on the -axis side, member 1 on the +axis side; each tail leaves away from the other
            sign = -1.0 if k == 0 else 1.0
            away_deg = axis[p] + (180.0 if k == 0 else 0.0)
            dx[i] = sign * 0.5 * sep[p] * np.cos(np.radians(axis[p]))
            dy[i] = sign * 0.5 * sep[p] * np.sin(np.radians(axis[p]))
            hlr = float(gal.hlr[i])
            body, kn = bulge_disk_parts(hlr, float(gal.bulge_frac[i]), float(gal.q[i]), float(gal.beta[i]),
                                        **knots.params(i))
            clump_frac = rng.uniform(*MERGER_CLUMP_FRACTION)
            clump_dir = np.radians(rng.uniform(0.0, 360.0))
            clump = galsim.Exponential(half_light_radius=MERGER_CLUMP_HLR * hlr).shift(
                MERGER_CLUMP_OFFSET_HLR * hlr * np.cos(clump_dir), MERGER_CLUMP_OFFSET_HLR * hlr * np.sin(clump_dir))
            g = rng.uniform(*MERGER_BODY_SHEAR)
            g_beta = rng.uniform(0.0, 180.0)
            tidal = galsim.Shear(g=g, beta=g_beta * galsim.degrees)
            # with knots the body's smooth part holds 1 - (knot flux): its share is scaled, not set; the knots
            # follow the tidal shear (positions x' = M x) and the same flux scalings
            scaled = bool(len(kn))
            body = galsim.Add([_share(body, 1.0 - clump_frac, scaled), clump.withFlux(clump_frac)]).shear(tidal)
            tail, tail_extent = _tail(rng, hlr, away_deg, sense[p])
            profiles.append(galsim.Add([_share(body, 1.0 - tail_frac[i], scaled), tail.withFlux(tail_frac[i])]))
            if scaled:
                kn = np.column_stack([kn[:, :2] @ tidal.getMatrix().T,
                                      kn[:, 2] * (1.0 - clump_frac) * (1.0 - tail_frac[i])])
            member_knots.append(kn)
            body_extent = float(galaxy_extent(hlr, gal.q[i], body_hlr_factor)) * (1.0 + g) / (1.0 - g)
            extent[i] = max(body_extent, tail_extent)
    return MergerDraw(gal=gal, dx=dx, dy=dy, tail_frac=tail_frac, profiles=profiles, extent=extent,
                      pair_id=np.repeat(np.arange(n_pairs), 2), knots=member_knots,
                      clump_frac=np.array([float(k[:, 2].sum()) for k in member_knots]))


# ------------------------------------------------------------------------------------------ dusty nuclei
#: the blue end (nm) of a nucleus' colour excess (the red end is the mag_band)
NUCLEUS_BLUE_NM = 1150.0


@dataclass(frozen=True)
class NucleusConfig:
    """The ``embedded.merger_nucleus`` block (see the module docstring)."""

    share: tuple[float, float]           # of the member's mag_band flux in the nucleus, uniform
    colour_excess: tuple[float, float]   # mag redder than the host, NUCLEUS_BLUE_NM - mag_band, uniform
    hlr_arcsec: float                    # the nucleus' half-light radius (exponential)

    @classmethod
    def from_embedded(cls, emb: Mapping[str, Any], where: str = "embedded") -> "NucleusConfig | None":
        """The dusty-nucleus settings of an ``embedded`` block; None when ``merger_nucleus`` is absent or null."""
        spec = emb.get("merger_nucleus")
        if spec is None:
            return None
        lo, hi = (float(v) for v in spec["share"])
        clo, chi = (float(v) for v in spec["colour_excess"])
        hlr = float(spec["hlr_arcsec"])
        if not 0.0 <= lo <= hi < 1.0:
            raise ConfigError(f"{where}.merger_nucleus.share must be [low, high] with 0 <= low <= high < 1, got "
                              f"{list(spec['share'])}")
        if not 0.0 <= clo <= chi:
            raise ConfigError(f"{where}.merger_nucleus.colour_excess must be [low, high] with 0 <= low <= high, "
                              f"got {list(spec['colour_excess'])}")
        if not hlr > 0:
            raise ConfigError(f"{where}.merger_nucleus.hlr_arcsec must be > 0, got {spec['hlr_arcsec']}")
        return cls(share=(lo, hi), colour_excess=(clo, chi), hlr_arcsec=hlr)


def nucleus_shares(share: np.ndarray, colour_excess: np.ndarray, wavelengths: Sequence[float],
                   ref_wavelength: float, blue_wavelength: float = NUCLEUS_BLUE_NM) -> np.ndarray:
    """``(n, n_bands)`` share of each band's flux in the nucleus, for nuclei holding ``share`` of the flux at
    ``ref_wavelength`` and redder than their host by ``colour_excess`` mag between ``blue_wavelength`` and
    ``ref_wavelength``, in proportion to 1/wavelength (none at and beyond the reference; more below the blue end).

    With q = share / (1 - share) the nucleus-to-host flux ratio at the reference, it is
    q 10^(-0.4 excess w) in a band with weight w = max(0, (1/lambda - 1/lambda_ref) / (1/lambda_blue -
    1/lambda_ref)), and the band's share q_b / (1 + q_b)."""
    share = np.asarray(share, dtype=float)[:, None]
    excess = np.asarray(colour_excess, dtype=float)[:, None]
    inv = 1.0 / np.asarray(wavelengths, dtype=float)
    inv_ref, inv_blue = 1.0 / float(ref_wavelength), 1.0 / float(blue_wavelength)
    if not inv_blue > inv_ref:
        raise ConfigError(f"a dusty nucleus needs its reference band ({ref_wavelength:g} nm) redder than "
                          f"{blue_wavelength:g} nm")
    w = np.clip((inv - inv_ref) / (inv_blue - inv_ref), 0.0, None)
    q = share / (1.0 - share) * 10.0 ** (-0.4 * excess * w[None, :])
    return q / (1.0 + q)


def with_nucleus(profile: galsim.GSObject, smooth_flux: float, shares: Mapping[str, float],
                 hlr: float) -> dict[str, galsim.GSObject]:
    """Per band the member's ``profile`` (flux ``smooth_flux``: 1 less its knots' share) with ``shares[band]`` of
    the band's total flux moved into a centred exponential nucleus; each keeps the flux ``smooth_flux``."""
    nucleus = galsim.Exponential(half_light_radius=hlr)
    out = {}
    for band, d in shares.items():
        d = min(float(d), smooth_flux)
        out[band] = galsim.Add([profile.withScaledFlux((smooth_flux - d) / smooth_flux), nucleus.withFlux(d)])
    return out
