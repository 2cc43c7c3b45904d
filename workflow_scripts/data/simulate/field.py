"""One embedded field: population, rendering, noise, catalogue, and the boundary files.

:func:`simulate_field` is the one generic machinery used for every embedded survey; what differs between
GOODS-S, CEERS and the XDF is data (the :class:`~workflow_scripts.surveys.Survey`: bands, pixel scale, PSF,
depth, and its ``embedded`` block of sizes, rare-population counts and star-forming clumps) plus the sky
position in :data:`SKY_CENTRES`. Everything is deterministic from the seed: the same seed gives bit-identical
images and catalogues. Independent random streams (``np.random.default_rng([seed, STREAM_*, ...])``) serve the
population, the clumps, the catalogue errors of each band and the noise of each band, so that

* switching ``embedded.clumps`` on or off changes only the clump light: every object, position, truth flux and
  the noise stay bit-identical (the knot light comes out of the smooth disks, total fluxes are unchanged);
* a survey restricted to a subset of its bands (the same config, fewer ``bands``; the ``mag_band`` must stay)
  gives bit-identical images, truth fluxes and catalogue errors in those bands: colours are per-band ratios to
  the mag_band, and noise and catalogue errors have one stream per band name. One caveat: star placement keeps
  stars half the largest true-PSF stamp from the edges, so the subset must keep the band with the widest PSF
  (the mag_band in every configured survey); CEERS EROs need their four defining bands.

Rendering: each object's achromatic, unit-flux profile is built once; per band it is scaled to that band's
flux, convolved with the band's PSF and drawn (pixel-convolved FFT, :data:`DRAW_METHOD`) on a postage stamp
sized to the object (:data:`STAMP_HLR_FACTOR` half-light radii along the major axis plus the PSF's truncation
radius), which is added into the mosaic over the overlapping bounds. Star-forming knots are point sources: they
are added to their galaxy's stamp from a table of star stamps drawn the same way at 1/:data:`KNOT_PHASES` pixel
offsets (:func:`knot_psf_table`; knot positions snapped to that grid), each normalised to unit sum, which is as
exact as an FFT per knot and far cheaper than GalSim's RandomKnots inside the galaxy's FFT.

Catalogue (the boundary part of it, as in a real survey catalogue):

* ``flux_{band}``, ``fluxerr_{band}``, ``mag_{band}``: the true flux plus a Gaussian error equal to the image
  noise in a circular aperture of radius max(depth_aperture/2, :data:`CATALOG_APERTURE_FWHM` x FWHM) - an
  unbiased stand-in for catalogue photometry whose errors scale with depth and size; mag is NaN for flux <= 0;
* ``z``: the true redshift (a perfect photometric redshift; 0 for stars);
* ``fwhm``: *measured* FWHM (arcsec) of the noiseless, PSF-convolved, pixel-integrated stamp in the
  ``mag_band``, by GalSim's radial-profile ``Image.calculateFWHM`` (like SExtractor's FWHM_IMAGE);
* ``star``: True for stars only.

Truth columns: ``x``, ``y`` (0-based pixel position of the profile centre, numpy/astropy origin 0),
``truth_flux_{band}``, ``truth_mag_{band}``, ``truth_hlr`` (arcsec, circularised, pre-PSF; 0 for point
sources), ``truth_bulge_frac``, ``truth_sersic_n`` (light-weighted, 1 + 3 B/T), ``truth_q``, ``truth_beta``
(degrees from +x towards +y), ``truth_type`` (continuous CWW template type, NaN for stars/EROs),
``truth_teff`` (K, stars), ``truth_tail_frac`` (mergers), ``truth_clump_frac`` (share of the object's total
flux in star-forming knots, the same in every band: 0 for stars, EROs, bulge-only galaxies and when
``embedded.clumps`` is off), ``truth_nucleus_frac`` (share of a merger member's ``mag_band`` flux in its dusty
nucleus, 0 otherwise), ``truth_ebv`` (Calzetti E(B-V)_star of a normal galaxy or merger member, 0 when
``embedded.dust`` is off and for stars and EROs), ``label`` (normal | star | ero | merger) and ``pair_id``
(merger pair number, -1 otherwise).

Clumps (``embedded.clumps: {fraction: [lo, hi], n_knots: [lo, hi], share: s}``, absent or null = none): a share
s of the normal galaxies (default 1) and every body of a merging pair (interactions trigger clumpy star
formation) move a share f ~ U(fraction) of their disk light into n ~ U{n_knots} knots
(:func:`~.population.bulge_disk_parts`), achromatic like the rest of the profile.

Dusty nuclei of merging pairs (``embedded.merger_nucleus``, :mod:`.rare`) are the one chromatic part: such a
member's profile is one per band (a share of the band's flux, rising to the red, in a compact nucleus), drawn
from their own stream, so switching them on changes only the merger members' light distribution.

Dust (``embedded.dust``, :mod:`.dust`): normal galaxies and merger members get a Calzetti E(B-V) from their own
stream; it reddens their colours (renormalised at the mag_band) and changes nothing else.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

import galsim
import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from tqdm.auto import tqdm

from workflow_scripts import io
from workflow_scripts.errors import ConfigError
from workflow_scripts.surveys import Survey
from workflow_scripts.data.simulate.dust import DustConfig, attenuate, draw_ebv
from workflow_scripts.data.simulate.population import (NO_KNOTS, ClumpConfig, Cosmology, bulge_disk_parts,
                                                       draw_galaxies, draw_knots, draw_magnitudes, draw_star_teff,
                                                       galaxy_extent, sersic_index)
from workflow_scripts.data.simulate.psf import (PSF_MOFFAT_BETA, PSF_OVERSAMPLING, PSF_TRUNC_FWHM, draw_psf_native,
                                                draw_psf_oversampled, measured_fwhm, optical_psf, psf_stamp_size)
from workflow_scripts.data.simulate.rare import (NucleusConfig, draw_eros, draw_mergers, ero_profile, nucleus_shares,
                                                 with_nucleus)
from workflow_scripts.data.simulate.seds import ColourGrid, pivot_wavelengths, star_flux_ratios

# ---------------------------------------------------------------------------------------------- constants
#: Sky centres (deg, ICRS) of the real surveys the embedded ones stand in for.
SKY_CENTRES: dict[str, tuple[float, float]] = {
    "goodss": (53.12, -27.80),    # CANDELS GOODS-S (Grogin+2011)
    "ceers": (214.90, 52.90),     # CEERS, EGS (Finkelstein+2023)
    "xdf": (53.16, -27.79),       # Hubble XDF (Illingworth+2013)
}
#: Fields of one survey are laid side by side eastward with this spacing (in field widths): no overlap.
FIELD_SPACING = 1.1
#: Declination band for the hash-derived position of a survey not in SKY_CENTRES (avoid the poles).
FALLBACK_DEC_RANGE = (-60.0, 60.0)
#: Stamp radius: this many half-light radii along the major axis (an exponential holds 99.9 % within 5.5;
#: bulges are truncated at 5) plus the PSF truncation radius.
STAMP_HLR_FACTOR = 6.0
#: Largest stamp half-side (pixels): bounds the FFT cost of the rare very large galaxy.
MAX_STAMP_HALF_PX = 600
#: Stars stay this many pixels further from the edges than half the true-PSF stamp ...
STAR_EDGE_MARGIN_PX = 4
#: ... and at least this many true-PSF stamp sides from each other (isolated EPSF stars).
STAR_MIN_SEPARATION_STAMPS = 1.0
#: Rejection-sampling attempts per star before the separation requirement is dropped for it.
STAR_PLACEMENT_TRIES = 500
#: Catalogue error aperture radius, in FWHM of the object (the depth aperture is the minimum).
CATALOG_APERTURE_FWHM = 1.5
#: Independent random streams derived from the seed (catalogue errors and noise: one sub-stream per band name).
STREAM_POPULATION = 0
STREAM_CATALOG = 1
STREAM_NOISE = 2
STREAM_CLUMPS = 3
STREAM_NUCLEI = 4
STREAM_DUST = 5
#: GalSim draw method: pixel-convolved FFT (what 'auto' picks for these three-fold convolutions; explicit so
#: that no object silently falls back to a slow real-space convolution).
DRAW_METHOD = "fft"
#: Star-forming knots are point sources drawn like stars from a table of PSF stamps at this many sub-pixel
#: offsets per pixel (positions snapped to 1/KNOT_PHASES pixel): as exact as drawing each knot by FFT and ~20x
#: cheaper than GalSim's RandomKnots inside the galaxy's FFT (one k-space phase factor per knot and k-pixel).
KNOT_PHASES = 8
#: Labels of the truth catalogue.
LABELS = ("normal", "star", "ero", "merger")


# ------------------------------------------------------------------------------------------------ seeds
def stable_int(text: str, bits: int = 32) -> int:
    """A platform- and run-independent integer hash of a string (unlike Python's ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "little")


def field_seed(base_seed: int, survey: str, field: str) -> int:
    """Seed of one simulated field from the config seed, the survey and the field name."""
    return stable_int(f"{int(base_seed)}/{survey}/{field}")


# -------------------------------------------------------------------------------------------------- WCS
def field_centre(survey: Survey, field: str) -> tuple[float, float]:
    """Deterministic sky centre (deg) of a field: near the real survey, fields side by side eastward."""
    if field not in survey.fields:
        raise ConfigError(f"field {field!r} is not a field of survey {survey.name} "
                          f"(fields: {', '.join(survey.fields)})")
    if survey.name in SKY_CENTRES:
        ra0, dec0 = SKY_CENTRES[survey.name]
    else:
        # two independent 16-bit fractions of a stable hash of the survey name
        h = stable_int(f"sky/{survey.name}")
        u_ra, u_dec = (h & 0xFFFF) / 0x10000, (h >> 16) / 0x10000
        lo, hi = FALLBACK_DEC_RANGE
        ra0, dec0 = 360.0 * u_ra, lo + u_dec * (hi - lo)
    width_deg = survey.embedded["npix"] * survey.pixel_scale / 3600.0
    index = survey.fields.index(field)
    ra = (ra0 + index * FIELD_SPACING * width_deg / math.cos(math.radians(dec0))) % 360.0
    return ra, dec0


def field_wcs(survey: Survey, field: str) -> WCS:
    """Celestial TAN WCS of an embedded field: north up, east left, centred on :func:`field_centre`."""
    npix = int(survey.embedded["npix"])
    ra, dec = field_centre(survey, field)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]   # FITS 1-based: the image centre
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.cdelt = [-survey.pixel_scale / 3600.0, survey.pixel_scale / 3600.0]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


# ----------------------------------------------------------------------------------------- colour cache
_COLOUR_CACHE: dict[tuple[Any, ...], ColourGrid] = {}


def colour_grid(survey: Survey, mag_band: str) -> ColourGrid:
    """The survey's template colour grid (cached per band set: it takes ~1 s to build)."""
    key = (mag_band, tuple((b.name, b.bandpass, b.wavelength) for b in survey.bands.values()))
    if key not in _COLOUR_CACHE:
        _COLOUR_CACHE[key] = ColourGrid(survey, mag_band)
    return _COLOUR_CACHE[key]


# ---------------------------------------------------------------------------------------------- result
@dataclass
class SimulatedField:
    """A simulated field: per-band images and noise maps, WCS, catalogue with truth, and the true PSFs."""

    survey: str
    field: str
    seed: int
    images: dict[str, np.ndarray]            # float32, image units of the survey (bunit)
    rms: dict[str, np.ndarray]               # float32, constant = Survey.pixel_noise(band)
    wcs: WCS
    catalog: pd.DataFrame
    psfs: dict[str, np.ndarray]              # effective PSF on the native grid, odd side, sum 1
    psfs_oversampled: dict[str, np.ndarray]  # same, sampled every 1/psf_oversampling native pixel
    psf_oversampling: int = PSF_OVERSAMPLING
    psf_fwhm_measured: dict[str, float] = dc_field(default_factory=dict)   # optical PSF FWHM, arcsec
    timings: dict[str, float] = dc_field(default_factory=dict)

    @property
    def bands(self) -> list[str]:
        return list(self.images)

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.catalog["label"].value_counts().items()}


# ------------------------------------------------------------------------------------------ population
@dataclass
class _Objects:
    """Every object of a field, in catalogue order (parallel arrays + one profile per object)."""

    table: pd.DataFrame                           # truth parameters (x, y, mag_ref, z, ...)
    ratios: np.ndarray                            # (n, n_bands) flux ratio band / mag_band
    profiles: list[galsim.GSObject | dict[str, galsim.GSObject] | None]   # unit flux less the knots', centred;
    #                                             None = point source; a dict = one per band (dusty nuclei)
    extent: np.ndarray                            # arcsec, radius holding the intrinsic light
    knots: list[np.ndarray]                       # (n, 3) star-forming knots: x, y (arcsec), flux; often empty


def _uniform_positions(rng: np.random.Generator, n: int, npix: int,
                       margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = -0.5 + margin, npix - 0.5 - margin
    if hi <= lo:
        raise ConfigError(f"embedded npix = {npix} is too small for objects needing a {margin:.0f} px margin")
    return rng.uniform(lo, hi, size=n), rng.uniform(lo, hi, size=n)


def _place_stars(rng: np.random.Generator, n: int, npix: int, margin: float,
                 min_sep: float) -> tuple[np.ndarray, np.ndarray]:
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(n):
        for attempt in range(STAR_PLACEMENT_TRIES):
            x, y = _uniform_positions(rng, 1, npix, margin)
            if not xs or np.min(np.hypot(np.array(xs) - x[0], np.array(ys) - y[0])) >= min_sep:
                break
        xs.append(float(x[0]))
        ys.append(float(y[0]))
    return np.array(xs), np.array(ys)


def _frame(kind: str, n: int, **cols: Any) -> pd.DataFrame:
    base = {"label": [kind] * n, "pair_id": np.full(n, -1, dtype=np.int64), "truth_type": np.full(n, np.nan),
            "truth_teff": np.full(n, np.nan), "truth_tail_frac": np.zeros(n), "truth_clump_frac": np.zeros(n),
            "truth_nucleus_frac": np.zeros(n), "truth_ebv": np.zeros(n),
            "truth_bulge_frac": np.zeros(n), "truth_sersic_n": np.ones(n), "truth_q": np.ones(n),
            "truth_beta": np.zeros(n), "truth_hlr": np.zeros(n), "star": np.zeros(n, dtype=bool)}
    base.update(cols)
    return pd.DataFrame(base)


def build_objects(survey: Survey, rng: np.random.Generator, clump_rng: np.random.Generator | None = None,
                  nucleus_rng: np.random.Generator | None = None,
                  dust_rng: np.random.Generator | None = None) -> _Objects:
    """Draw every object of a field (normal galaxies, merging pairs, EROs, stars) with positions.

    ``rng`` is the population stream; star-forming clumps (``embedded.clumps``) come from ``clump_rng`` alone
    (normal galaxies first, then merger members), and the mergers' dusty nuclei (``embedded.merger_nucleus``)
    from ``nucleus_rng``, and dust (``embedded.dust``) from ``dust_rng``, so the population is the same with or
    without them.
    """
    emb = survey.embedded
    clumps = ClumpConfig.from_embedded(emb, f"surveys.{survey.name}.embedded")
    dust = DustConfig.from_embedded(emb, f"surveys.{survey.name}.embedded")
    npix = int(emb["npix"])
    mag_band = emb["mag_band"]
    scale = survey.pixel_scale
    area_deg2 = (npix * scale / 3600.0) ** 2
    grid = colour_grid(survey, mag_band)
    ref_index = survey.band_names.index(mag_band)
    cosmo = Cosmology()
    tables, ratios, profiles, extents, knot_tables = [], [], [], [], []

    # normal galaxies
    mags = draw_magnitudes(rng, area_deg2, float(emb["mag_limit"]))
    gal = draw_galaxies(rng, cosmo, mags)
    x, y = _uniform_positions(rng, len(gal), npix)
    knots = draw_knots(clump_rng, len(gal), clumps)
    parts = [bulge_disk_parts(*p, **knots.params(i))
             for i, p in enumerate(zip(gal.hlr, gal.bulge_frac, gal.q, gal.beta))]
    ebv = draw_ebv(dust_rng, gal.bulge_frac, dust)
    tables.append(_frame("normal", len(gal), x=x, y=y, mag_ref=gal.mag, z=gal.z, truth_hlr=gal.hlr,
                         truth_bulge_frac=gal.bulge_frac, truth_sersic_n=sersic_index(gal.bulge_frac),
                         truth_q=gal.q, truth_beta=gal.beta, truth_type=gal.ttype, truth_ebv=ebv,
                         truth_clump_frac=np.array([float(k[:, 2].sum()) for _, k in parts])))
    ratios.append(attenuate(grid.flux_ratios(gal.ttype, gal.z), grid.attenuation(gal.ttype, gal.z, ebv), ref_index))
    profiles += [prof for prof, _ in parts]
    knot_tables += [k for _, k in parts]
    extents.append(galaxy_extent(gal.hlr, gal.q, STAMP_HLR_FACTOR))

    # merging pairs
    n_merger = int(emb.get("n_merger", 0))
    if n_merger:
        mer = draw_mergers(rng, cosmo, n_merger, float(emb["mag_limit"]), STAMP_HLR_FACTOR,
                           knots=draw_knots(clump_rng, 2 * n_merger, clumps, all_clumpy=True))
        half_sep = np.hypot(mer.dx, mer.dy).max() / scale
        mx, my = _uniform_positions(rng, n_merger, npix, margin=half_sep + 1.0)
        g = mer.gal
        ebv = draw_ebv(dust_rng, g.bulge_frac, dust)
        tables.append(_frame("merger", 2 * n_merger, x=np.repeat(mx, 2) + mer.dx / scale,
                             y=np.repeat(my, 2) + mer.dy / scale, mag_ref=g.mag, z=g.z, truth_hlr=g.hlr,
                             truth_bulge_frac=g.bulge_frac, truth_sersic_n=sersic_index(g.bulge_frac),
                             truth_q=g.q, truth_beta=g.beta, truth_type=g.ttype, truth_tail_frac=mer.tail_frac,
                             truth_clump_frac=mer.clump_frac, pair_id=mer.pair_id, truth_ebv=ebv))
        ratios.append(attenuate(grid.flux_ratios(g.ttype, g.z), grid.attenuation(g.ttype, g.z, ebv), ref_index))
        profiles += _nuclei(survey, mer, tables[-1], nucleus_rng)
        knot_tables += mer.knots
        extents.append(mer.extent)

    # compact extremely red objects
    n_ero = int(emb.get("n_ero", 0))
    if n_ero:
        ero = draw_eros(rng, survey, mag_band, n_ero)
        ex, ey = _uniform_positions(rng, n_ero, npix)
        tables.append(_frame("ero", n_ero, x=ex, y=ey, mag_ref=ero.mag, z=ero.z, truth_hlr=ero.hlr))
        ratios.append(ero.ratios)
        profiles += [ero_profile(h) for h in ero.hlr]
        knot_tables += [NO_KNOTS] * n_ero
        extents.append(galaxy_extent(ero.hlr, np.ones(n_ero), STAMP_HLR_FACTOR))

    # stars: isolated, away from the edges, for PSF estimation downstream
    n_stars = int(emb["n_stars"])
    if n_stars:
        stamp = max(psf_stamp_size(survey, b) for b in survey.band_names)
        sx, sy = _place_stars(rng, n_stars, npix, margin=stamp // 2 + STAR_EDGE_MARGIN_PX,
                              min_sep=STAR_MIN_SEPARATION_STAMPS * stamp)
        smag = rng.uniform(*emb["star_mag_range"], size=n_stars)
        teff = draw_star_teff(rng, n_stars)
        tables.append(_frame("star", n_stars, x=sx, y=sy, mag_ref=smag, z=np.zeros(n_stars), truth_teff=teff,
                             star=np.ones(n_stars, dtype=bool)))
        ratios.append(star_flux_ratios(survey, mag_band, teff))
        profiles += [None] * n_stars
        knot_tables += [NO_KNOTS] * n_stars
        extents.append(np.zeros(n_stars))

    table = pd.concat(tables, ignore_index=True)
    return _Objects(table=table, ratios=np.concatenate(ratios), profiles=profiles, extent=np.concatenate(extents),
                    knots=knot_tables)


def _nuclei(survey: Survey, mer: Any, table: pd.DataFrame,
            nucleus_rng: np.random.Generator | None) -> list[Any]:
    """The merger members' profiles, per band with a dusty nucleus when ``embedded.merger_nucleus`` is set (its
    share of the mag_band flux written to ``table['truth_nucleus_frac']``)."""
    nucleus = NucleusConfig.from_embedded(survey.embedded, f"surveys.{survey.name}.embedded")
    if nucleus is None:
        return list(mer.profiles)
    rng = nucleus_rng if nucleus_rng is not None else np.random.default_rng(0)
    n = len(mer.profiles)
    share = rng.uniform(*nucleus.share, size=n)
    excess = rng.uniform(*nucleus.colour_excess, size=n)
    pivots = pivot_wavelengths(survey)
    bands = survey.band_names
    shares = nucleus_shares(share, excess, [pivots[b] for b in bands], pivots[survey.embedded["mag_band"]])
    table["truth_nucleus_frac"] = shares[:, bands.index(survey.embedded["mag_band"])]
    return [with_nucleus(prof, 1.0 - float(kn[:, 2].sum()) if len(kn) else 1.0, dict(zip(bands, shares[i])),
                         nucleus.hlr_arcsec) for i, (prof, kn) in enumerate(zip(mer.profiles, mer.knots))]


# ------------------------------------------------------------------------------------------- rendering
_KNOT_PSF_CACHE: dict[tuple[str, float, float, int], tuple[int, np.ndarray]] = {}


def knot_psf_table(psf: galsim.GSObject, scale: float, reach: float,
                   phases: int = KNOT_PHASES) -> tuple[int, np.ndarray]:
    """Point sources drawn like the stars, at every 1/``phases`` sub-pixel offset: (half, table).

    ``table[a, b]`` is the (2 half + 1)^2 stamp of a unit-flux point at offset ((b - phases/2), (a - phases/2))
    / phases pixels in (x, y) from the stamp's central pixel (numpy [y, x] order), PSF- and pixel-convolved by
    FFT exactly as a star; each stamp is normalised to sum 1 so that knots move flux without adding any.
    """
    key = (repr(psf), float(scale), float(reach), int(phases))
    if key not in _KNOT_PSF_CACHE:
        half = math.ceil(reach / scale) + 1
        n = 2 * half + 1
        offsets = (np.arange(phases + 1) - phases // 2) / phases
        table = np.empty((phases + 1, phases + 1, n, n))
        star = galsim.Convolve(galsim.DeltaFunction(), psf)
        for a, oy in enumerate(offsets):
            for b, ox in enumerate(offsets):
                img = galsim.ImageD(n, n, xmin=-half, ymin=-half, scale=scale)
                star.drawImage(image=img, center=galsim.PositionD(ox, oy), method=DRAW_METHOD)
                table[a, b] = img.array / img.array.sum()
        _KNOT_PSF_CACHE[key] = (half, table)
    return _KNOT_PSF_CACHE[key]


def _knot_pixels(knots: np.ndarray, x: float, y: float, scale: float,
                 phases: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixel (ix, iy) and sub-pixel phase indices (a for y, b for x) of knots around (x, y)."""
    px = x + knots[:, 0] / scale
    py = y + knots[:, 1] / scale
    ix = np.rint(px).astype(int)
    iy = np.rint(py).astype(int)
    b = np.rint((px - ix) * phases).astype(int) + phases // 2
    a = np.rint((py - iy) * phases).astype(int) + phases // 2
    return ix, iy, a, b


def render(survey: Survey, objs: _Objects, fluxes: np.ndarray, psfs: Mapping[str, galsim.GSObject],
           progress: bool = True, desc: str = "simulate") -> tuple[dict[str, galsim.Image], np.ndarray]:
    """Draw every object into noiseless per-band mosaics; return them and the measured mag_band FWHM."""
    npix = int(survey.embedded["npix"])
    scale = survey.pixel_scale
    bands = survey.band_names
    mag_band = survey.embedded["mag_band"]
    full = {b: galsim.ImageF(npix, npix, xmin=0, ymin=0, scale=scale) for b in bands}
    psf_reach = {b: PSF_TRUNC_FWHM * survey.band(b).psf_fwhm for b in bands}
    fwhm = np.full(len(objs.table), np.nan)
    xs = objs.table["x"].to_numpy()
    ys = objs.table["y"].to_numpy()
    for i in tqdm(range(len(objs.table)), disable=not progress, desc=desc, unit="obj", mininterval=1.0):
        chromatic = objs.profiles[i]
        knots = objs.knots[i]
        pos = galsim.PositionD(xs[i], ys[i])
        ix, iy = int(round(xs[i])), int(round(ys[i]))
        if len(knots):
            kx, ky, ka, kb = _knot_pixels(knots, xs[i], ys[i], scale, KNOT_PHASES)
        for bi, b in enumerate(bands):
            flux = float(fluxes[i, bi])
            if flux <= 0:
                continue
            prof = chromatic[b] if isinstance(chromatic, dict) else chromatic
            # Point sources go through a delta function so that the PSF object (and its cached k-space table
            # of the truncated Moffat) is reused: psf.withFlux() would rebuild it, ~25x slower.
            if prof is None:
                src = galsim.DeltaFunction(flux=flux)
            else:  # with knots the smooth part holds 1 - (knot flux): scale it, do not set it
                src = prof.withScaledFlux(flux) if len(knots) else prof.withFlux(flux)
            obj = galsim.Convolve(src, psfs[b])
            half = min(MAX_STAMP_HALF_PX, math.ceil((objs.extent[i] + psf_reach[b]) / scale) + 1)
            bounds = galsim.BoundsI(ix - half, ix + half, iy - half, iy + half)
            if len(knots):
                khalf, table = knot_psf_table(psfs[b], scale, psf_reach[b])
                # every knot's whole point-source stamp lies in the object's stamp: no knot light is lost
                bounds = bounds + galsim.BoundsI(int(kx.min()) - khalf, int(kx.max()) + khalf,
                                                 int(ky.min()) - khalf, int(ky.max()) + khalf)
            stamp = galsim.ImageF(bounds, scale=scale)
            obj.drawImage(image=stamp, center=pos, method=DRAW_METHOD)
            if len(knots):
                arr = stamp.array
                for k in range(len(knots)):
                    x0, y0 = kx[k] - khalf - bounds.xmin, ky[k] - khalf - bounds.ymin
                    arr[y0:y0 + 2 * khalf + 1, x0:x0 + 2 * khalf + 1] += flux * knots[k, 2] * table[ka[k], kb[k]]
            overlap = bounds & full[b].bounds
            if overlap.isDefined():
                full[b][overlap] += stamp[overlap]
            if b == mag_band:
                fwhm[i] = stamp.calculateFWHM(center=pos)
    return full, fwhm


# ----------------------------------------------------------------------------------------------- field
def simulate_field(survey: Survey, field: str, seed: int, progress: bool = True) -> SimulatedField:
    """Simulate one embedded field of ``survey`` deterministically from ``seed``."""
    if not survey.embedded:
        raise ConfigError(f"surveys.{survey.name}.embedded is required to simulate it")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    emb = survey.embedded
    mag_band = emb["mag_band"]
    survey.band(mag_band)  # validates
    bands = survey.band_names
    wcs = field_wcs(survey, field)

    objs = build_objects(survey, np.random.default_rng([seed, STREAM_POPULATION]),
                         clump_rng=np.random.default_rng([seed, STREAM_CLUMPS]),
                         nucleus_rng=np.random.default_rng([seed, STREAM_NUCLEI]),
                         dust_rng=np.random.default_rng([seed, STREAM_DUST]))
    tab = objs.table
    zps = np.array([survey.band(b).zeropoint for b in bands])
    ref_flux = 10.0 ** (-0.4 * (tab["mag_ref"].to_numpy(dtype=float)[:, None] - zps[None, :]))  # Band.flux
    fluxes = objs.ratios * ref_flux
    timings["population_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    psf_profiles = {b: optical_psf(survey, b) for b in bands}
    full, fwhm_px = render(survey, objs, fluxes, psf_profiles, progress=progress,
                           desc=f"simulate {survey.name}/{field}")
    timings["render_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    images, rms = {}, {}
    for b in bands:
        sigma = survey.pixel_noise(b)
        dev = galsim.BaseDeviate(int(np.random.default_rng([seed, STREAM_NOISE, stable_int(b)]).integers(1, 2**31 - 1)))
        full[b].addNoise(galsim.GaussianNoise(dev, sigma=sigma))
        images[b] = full[b].array
        rms[b] = np.full(images[b].shape, sigma, dtype=np.float32)
    timings["noise_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    catalog = _catalog(survey, tab, fluxes, fwhm_px, wcs, seed)
    psfs = {b: draw_psf_native(survey, b) for b in bands}
    psfs_x4 = {b: draw_psf_oversampled(survey, b) for b in bands}
    fwhm_meas = {b: measured_fwhm(survey, b) for b in bands}
    timings["catalog_psf_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    return SimulatedField(survey=survey.name, field=field, seed=int(seed), images=images, rms=rms, wcs=wcs,
                          catalog=catalog, psfs=psfs, psfs_oversampled=psfs_x4, psf_fwhm_measured=fwhm_meas,
                          timings=timings)


def _catalog(survey: Survey, tab: pd.DataFrame, fluxes: np.ndarray, fwhm: np.ndarray, wcs: WCS,
             seed: int) -> pd.DataFrame:
    bands = survey.band_names
    n = len(tab)
    ra, dec = wcs.wcs_pix2world(tab["x"].to_numpy(), tab["y"].to_numpy(), 0)
    cols: dict[str, Any] = {"id": np.arange(1, n + 1, dtype=np.int64), "ra": ra, "dec": dec}
    measured, errors = {}, {}
    for bi, b in enumerate(bands):
        radius = np.maximum(0.5 * survey.depth_aperture,
                            CATALOG_APERTURE_FWHM * np.fmax(fwhm, survey.band(b).psf_fwhm)) / survey.pixel_scale
        err = survey.pixel_noise(b) * np.sqrt(np.pi) * radius
        errors[b] = err
        rng = np.random.default_rng([seed, STREAM_CATALOG, stable_int(b)])   # per band: subsets draw the same
        measured[b] = fluxes[:, bi] + err * rng.standard_normal(n)
    zp = {b: survey.band(b).zeropoint for b in bands}
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in bands:
            cols[f"flux_{b}"] = measured[b]
        for b in bands:
            cols[f"fluxerr_{b}"] = errors[b]
        for b in bands:
            cols[f"mag_{b}"] = np.where(measured[b] > 0, -2.5 * np.log10(measured[b]) + zp[b], np.nan)
        cols["z"] = tab["z"].to_numpy()
        cols["fwhm"] = fwhm
        cols["star"] = tab["star"].to_numpy(dtype=bool)
        cols["x"] = tab["x"].to_numpy()
        cols["y"] = tab["y"].to_numpy()
        for bi, b in enumerate(bands):
            cols[f"truth_flux_{b}"] = fluxes[:, bi]
        for bi, b in enumerate(bands):
            cols[f"truth_mag_{b}"] = np.where(fluxes[:, bi] > 0, -2.5 * np.log10(fluxes[:, bi]) + zp[b], np.nan)
    for c in ("truth_hlr", "truth_bulge_frac", "truth_sersic_n", "truth_q", "truth_beta", "truth_type",
              "truth_teff", "truth_tail_frac", "truth_clump_frac", "truth_nucleus_frac", "truth_ebv"):
        cols[c] = tab[c].to_numpy(dtype=float)
    cols["truth_z"] = tab["z"].to_numpy()
    cols["label"] = tab["label"].astype(str).to_numpy()
    cols["pair_id"] = tab["pair_id"].to_numpy(dtype=np.int64)
    return pd.DataFrame(cols)


# ------------------------------------------------------------------------------------------------ write
def truth_psf_path(data_dir: str | Path, survey: str, field: str, band: str, oversampled: bool = False) -> Path:
    """``{data_dir}/{survey}/{field}/truth/psf_{band}.fits`` (``psf_{band}_x4.fits`` oversampled)."""
    suffix = f"_x{PSF_OVERSAMPLING}" if oversampled else ""
    return Path(data_dir) / survey / field / "truth" / f"psf_{band}{suffix}.fits"


def write_simulated_field(sim: SimulatedField, survey: Survey, data_dir: str | Path, field: str,
                          prov: Mapping[str, Any]) -> dict[str, Path]:
    """Write the boundary files (mosaics, rms maps, catalogue) and the true PSFs; return the paths."""
    written: dict[str, Path] = {}
    extra = {"SIMSEED": (sim.seed, "seed of this simulated field")}
    for b in sim.bands:
        band = survey.band(b)
        path = io.band_path(data_dir, survey.name, field, b)
        rpath = io.rms_path(data_dir, survey.name, field, b)
        io.write_mosaic(path, sim.images[b], sim.wcs, telescope=survey.telescope, instrument=survey.instrument,
                        band=b, bunit=survey.bunit, zeropoint=band.zeropoint, prov=prov, rms=sim.rms[b],
                        rms_file=rpath, extra=extra)
        written[b] = path
        written[f"{b}.rms"] = rpath
        for oversampled in (False, True):
            arr = sim.psfs_oversampled[b] if oversampled else sim.psfs[b]
            factor = sim.psf_oversampling if oversampled else 1
            hdr = io.provenance_header(prov)
            hdr["FILTER"] = b
            hdr["TELESCOP"] = survey.telescope
            hdr["INSTRUME"] = survey.instrument
            hdr["PIXSCALE"] = (survey.pixel_scale / factor, "arcsec per pixel of this image")
            hdr["OVERSAMP"] = (factor, "samples per native pixel")
            hdr["PSFMODEL"] = ("Moffat", "optical PSF model, convolved with native pixel")
            hdr["MOFFBETA"] = (PSF_MOFFAT_BETA, "Moffat beta")
            hdr["FWHM"] = (band.psf_fwhm, "configured optical FWHM, arcsec")
            hdr["FWHMMEAS"] = (sim.psf_fwhm_measured.get(b, float("nan")), "optical FWHM measured, arcsec")
            hdr["PSFNORM"] = ("PIXFRAC", "values: flux fraction per native pixel")
            hdr["SIMSEED"] = extra["SIMSEED"]
            path = truth_psf_path(data_dir, survey.name, field, b, oversampled)
            with io.atomic_path(path) as tmp:
                fits.PrimaryHDU(data=np.asarray(arr, dtype=np.float32), header=hdr).writeto(tmp, overwrite=True)
            written[f"psf_{b}" + (f"_x{factor}" if oversampled else "")] = path
    cpath = io.catalog_path(data_dir, survey.name, field)
    io.write_catalog(cpath, sim.catalog, {**prov, "field_seed": sim.seed})
    written["catalog"] = cpath
    return written
