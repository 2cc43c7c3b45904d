"""Simulated two-galaxy blends and an isolated-galaxy control sample (Hemmati et al. 2022, sec. 2.2).

Each blend takes two different galaxies of the blend region (:func:`make_blends`): the *primary* is rotated by
an angle drawn from U(0, ``rotation_max_deg``) (180 deg, as in the authors' code) about its own catalogue
position and placed at ``primary_xy`` (default: the geometric centre of the stamp, (n - 1) / 2 = 31.5 for
64 px); the *secondary* is rotated by its own random angle and placed at the primary's position plus an offset
``(dx, dy)`` drawn from U(-max_offset_px, max_offset_px) per axis (sub-pixel; ~15 px = 0.9" in the authors'
code), redrawn while closer than ``min_sep_px``. The two transformed stamps are summed at their natural fluxes.
The same geometric transform is applied to every band of a galaxy.

Resampling
----------
The rotation + shift uses GalSim: the stamp becomes a :class:`galsim.InterpolatedImage` (pixel values as flux
per pixel, quintic interpolant, :data:`INTERPOLANT`) that is shifted, rotated and drawn back onto the same grid
with ``method='no_pixel'`` (the stamp already contains the pixel response; no second pixel convolution).
Rotation and shift preserve area, so the flux of a source well inside the stamp is conserved to the accuracy of
the interpolant (< 1 %, tested; 0.01-0.3 % on HST-like galaxies). The quintic kernel is the GalSim default for
real galaxy images (Bernstein & Gruen 2014) and costs ~0.8 ms per band and galaxy on 64 x 64 stamps.
Light moved beyond the stamp is lost, and areas moved in from outside the input stamp are zero (no noise
there): the same artefacts as in the original study.

Truth
-----
One row per blend: ids and row indices of both galaxies, positions in high-resolution pixels (x_1, y_1, x_2,
y_2, 0-based, centres at integers, the convention of :mod:`workflow_scripts.imaging.stamps`) and low-resolution pixels
(xlo_*, ylo_*, through :class:`workflow_scripts.imaging.degrade.RebinGeometry`), rotation angles, the offset, per-band
catalogue fluxes and magnitudes, the flux ratio (fainter / brighter, in ``ref_band``) and magnitude difference
(|m_1 - m_2|), redshifts and |dz|, FWHM (catalogue ``fwhm`` column in arcsec, or, where it is not finite,
measured on the stamp from the area above half maximum; ``fwhm_source_*`` says which), their sum, the
separation in arcsec and separation / sum of FWHM (the axes of the paper's SOM).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from tqdm.auto import tqdm

from workflow_scripts.imaging.stamps import (CutoutSet, dataframe_to_hdu, hdu_to_dataframe, nonfinite_stamps,
                                             parse_stamp_header, stamp_header)
from workflow_scripts.imaging.degrade import RebinGeometry
from workflow_scripts.errors import BoundaryError, PipelineError
from workflow_scripts.io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "BlendError",
    "BlendSet",
    "MAX_OFFSET_PX",
    "MIN_SEP_PX",
    "ROTATION_MAX_DEG",
    "transform_stamp",
    "measure_fwhm_halfmax",
    "make_blends",
    "make_isolated",
    "write_blends",
    "read_blends",
]

#: largest offset of the secondary per axis, hi-res pixels (authors' code: ~15 px = 0.9" at 0.06"/px)
MAX_OFFSET_PX = 15.0
#: smallest primary-secondary separation, hi-res pixels (the paper imposes none; unresolvable pairs are part
#: of the sample and of its detection fractions)
MIN_SEP_PX = 0.0
#: rotation angles drawn from U(0, ROTATION_MAX_DEG) (authors' code: primary U(0, 180) deg)
ROTATION_MAX_DEG = 180.0
#: GalSim interpolant of the rotation + shift (GalSim's recommended default for real-galaxy images)
INTERPOLANT = "quintic"
#: band of the flux ratio / magnitude difference when present (the paper's single-band study uses F775W)
REF_BAND = "F775W"
#: radius (hi-res pixels) of the disc in which a FWHM is measured when the catalogue has none
FWHM_DISC_PX = 10.0
#: offsets redrawn at most this many times to satisfy min_sep_px
MAX_REDRAWS = 1000


class BlendError(PipelineError):
    """Bad input to the blending (too few galaxies, bad sizes, impossible offsets)."""


@dataclass
class BlendSet:
    """Blended (or isolated) stamps and their truth table.

    ``cube``: float32 (N, n_bands, n, n) hi-res stamps in the cutouts' units; ``truth``: one row per stamp
    (see the module docstring); ``kind``: ``"blend"`` or ``"isolated"``; ``components``: optional float32
    (N, n_components, n_bands, n, n), the transformed single galaxies that were summed; ``geometry``: the hi-res to
    lo-res mapping of the ``xlo``/``ylo`` truth columns.
    """

    cube: np.ndarray
    bands: list[str]
    truth: pd.DataFrame
    pixel_scale: float
    zeropoints: list[float]
    kind: str
    ref_band: str
    geometry: RebinGeometry
    bunit: str = ""
    components: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.cube.ndim != 4 or self.cube.shape[0] != len(self.truth) or self.cube.shape[1] != len(self.bands):
            raise BlendError(f"inconsistent BlendSet: cube {self.cube.shape}, {len(self.truth)} truth rows, "
                             f"{len(self.bands)} bands")

    @property
    def n(self) -> int:
        return int(self.cube.shape[0])


# ------------------------------------------------------------------------------------------- transforms
def transform_stamp(stamps: np.ndarray, angle_deg: float, src_xy: tuple[float, float],
                    dst_xy: tuple[float, float], *, interpolant: str = INTERPOLANT) -> np.ndarray:
    """Rotate every band of ``stamps`` (n_bands, n, n) by ``angle_deg`` (counter-clockwise, x right, y up) about
    ``src_xy`` and move that point to ``dst_xy`` (0-based pixel coordinates); same grid, float32, flux-conserving
    (see the module docstring)."""
    arr = np.asarray(stamps)
    if arr.ndim == 2:
        arr = arr[None]
    nb, ny, nx = arr.shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0  # GalSim puts the profile origin at the image's true centre
    import galsim  # here: most jobs import this module only to read blends (as .degrade does with galsim)

    out = np.empty((nb, ny, nx), dtype=np.float32)
    rot = galsim.Angle(float(angle_deg), galsim.degrees)
    for b in range(nb):
        img = np.ascontiguousarray(arr[b], dtype=np.float64)
        if not img.any():
            out[b] = 0.0
            continue
        ii = galsim.InterpolatedImage(galsim.Image(img, scale=1.0), x_interpolant=interpolant,
                                      calculate_stepk=False, calculate_maxk=False)
        prof = ii.shift(cx - src_xy[0], cy - src_xy[1]).rotate(rot).shift(dst_xy[0] - cx, dst_xy[1] - cy)
        out[b] = prof.drawImage(nx=nx, ny=ny, scale=1.0, method="no_pixel").array
    return out


def measure_fwhm_halfmax(images: np.ndarray, xc: np.ndarray, yc: np.ndarray, pixel_scale: float,
                         radius_px: float = FWHM_DISC_PX) -> np.ndarray:
    """FWHM (arcsec) of the source at (xc, yc) of each image (N, n, n): the diameter of the circle with the area of
    the pixels above half the peak, within ``radius_px`` of the position (a fallback for catalogues without a
    FWHM; includes the PSF and the pixel, as catalogue FWHMs do; within ~6 % of the same quantity measured on a
    finely sampled noiseless image, tested)."""
    imgs = np.asarray(images, dtype=np.float64)
    n = imgs.shape[-1]
    yy, xx = np.mgrid[:n, :n]
    disc = np.hypot(xx[None] - np.asarray(xc)[:, None, None], yy[None] - np.asarray(yc)[:, None, None]) <= radius_px
    vals = np.where(disc, imgs, -np.inf)
    peak = vals.max(axis=(1, 2))
    area = ((vals >= 0.5 * peak[:, None, None]) & disc).sum(axis=(1, 2))
    fwhm = 2.0 * np.sqrt(area / math.pi) * pixel_scale
    return np.where(peak > 0, fwhm, np.nan)


# -------------------------------------------------------------------------------------------- inputs
@dataclass
class _Inputs:
    cube: np.ndarray
    table: pd.DataFrame
    bands: list[str]
    pixel_scale: float
    zeropoints: list[float]
    bunit: str


def _inputs(cutouts: CutoutSet | np.ndarray, table: pd.DataFrame | None, bands: Sequence[str] | None,
            pixel_scale: float | None, zeropoints: Sequence[float] | None) -> _Inputs:
    if isinstance(cutouts, CutoutSet):
        if table is not None and len(table) != cutouts.n:
            raise BlendError(f"the table has {len(table)} rows for {cutouts.n} cutouts")
        return _Inputs(cutouts.cube, cutouts.table if table is None else table, list(cutouts.bands),
                       cutouts.pixel_scale if pixel_scale is None else float(pixel_scale),
                       list(cutouts.zeropoints), cutouts.bunit)
    cube = np.asarray(cutouts)
    if cube.ndim == 3:
        cube = cube[:, None]
    if cube.ndim != 4 or cube.shape[-1] != cube.shape[-2]:
        raise BlendError(f"expected cutouts (N, n_bands, n, n), got shape {np.shape(cutouts)}")
    if table is None or len(table) != cube.shape[0]:
        raise BlendError(f"a table with one row per cutout is required ({cube.shape[0]} cutouts, "
                         f"{0 if table is None else len(table)} rows)")
    if pixel_scale is None:
        raise BlendError("pixel_scale (arcsec / px of the cutouts) is required with a bare cube")
    band_list = list(bands) if bands is not None else [f"band{i}" for i in range(cube.shape[1])]
    if len(band_list) != cube.shape[1]:
        raise BlendError(f"{len(band_list)} band names for a cube with {cube.shape[1]} bands")
    zps = list(zeropoints) if zeropoints is not None else [math.nan] * cube.shape[1]
    return _Inputs(cube, table, band_list, float(pixel_scale), [float(z) for z in zps], "")


def _column(table: pd.DataFrame, name: str, default: float = math.nan) -> np.ndarray:
    if name in table.columns:
        return np.array(pd.to_numeric(table[name], errors="coerce"), dtype=np.float64)  # a writable copy
    return np.full(len(table), default, dtype=np.float64)


def _galaxy_facts(inp: _Inputs, ref_index: int) -> dict[str, np.ndarray]:
    """Per-galaxy columns used by the truth tables (positions in the cutout, fluxes, mags, z, FWHM)."""
    t = inp.table
    n = inp.cube.shape[-1]
    centre = (n - 1) / 2.0
    facts: dict[str, np.ndarray] = {
        "id": t["id"].to_numpy() if "id" in t.columns else np.arange(len(t)),
        "xc": _column(t, "xc", centre), "yc": _column(t, "yc", centre),
        "z": _column(t, "z"),
    }
    for b, zp in zip(inp.bands, inp.zeropoints):
        flux = _column(t, f"flux_{b}")
        mag = _column(t, f"mag_{b}")
        with np.errstate(divide="ignore", invalid="ignore"):
            derived = np.where(flux > 0, zp - 2.5 * np.log10(flux), np.nan)
        facts[f"flux_{b}"] = flux
        facts[f"mag_{b}"] = np.where(np.isfinite(mag), mag, derived)
    fwhm = _column(t, "fwhm")
    missing = ~np.isfinite(fwhm)
    source = np.where(missing, "measured", "catalog")
    if missing.any():
        idx = np.flatnonzero(missing)
        fwhm[idx] = measure_fwhm_halfmax(inp.cube[idx, ref_index], facts["xc"][idx], facts["yc"][idx],
                                         inp.pixel_scale)
    facts["fwhm"], facts["fwhm_source"] = fwhm, source
    if not (np.isfinite(facts["xc"]).all() and np.isfinite(facts["yc"]).all()):
        raise BlendError("the cutout table has non-finite xc / yc positions")
    return facts


def _ref_band(bands: Sequence[str], ref_band: str | None) -> tuple[str, int]:
    ref = ref_band if ref_band is not None else (REF_BAND if REF_BAND in bands else bands[0])
    if ref not in bands:
        raise BlendError(f"reference band {ref!r} is not among the bands ({', '.join(bands)})")
    return ref, list(bands).index(ref)


def _check_common(inp: _Inputs, n: int, what: str, primary_xy: tuple[float, float] | None,
                  geometry: RebinGeometry | None, lowres_factor: float) -> tuple[tuple[float, float], RebinGeometry]:
    if n < 1:
        raise BlendError(f"{what}: the number of stamps must be >= 1, got {n}")
    if inp.cube.shape[0] == 0:
        raise BlendError(f"{what}: no cutouts")
    if not np.isfinite(inp.cube).all():
        raise BlendError(f"{what}: the cutouts have NaN or infinite pixels")
    size = inp.cube.shape[-1]
    centre = (size - 1) / 2.0
    pxy = (centre, centre) if primary_xy is None else (float(primary_xy[0]), float(primary_xy[1]))
    geo = geometry if geometry is not None else RebinGeometry(size, int(math.floor(size / lowres_factor + 1e-9)),
                                                              float(lowres_factor))
    if geo.n_in != size:
        raise BlendError(f"{what}: the low-res geometry is for {geo.n_in}-px stamps, the cutouts have {size} px")
    return pxy, geo


# -------------------------------------------------------------------------------------------- blends
def make_blends(cutouts: CutoutSet | np.ndarray, table: pd.DataFrame | None, n_blends: int,
                rng: np.random.Generator, *, max_offset_px: float = MAX_OFFSET_PX, min_sep_px: float = MIN_SEP_PX,
                rotation_max_deg: float = ROTATION_MAX_DEG, primary_xy: tuple[float, float] | None = None,
                ref_band: str | None = None, bands: Sequence[str] | None = None, pixel_scale: float | None = None,
                zeropoints: Sequence[float] | None = None, geometry: RebinGeometry | None = None,
                lowres_factor: float = 3.0, keep_components: bool = False, progress: bool = True) -> BlendSet:
    """``n_blends`` two-galaxy blends from the cutouts of the blend region (see the module docstring).

    ``cutouts``: a :class:`~workflow_scripts.imaging.stamps.CutoutSet` (``table`` may then be None) or a cube
    (N, n_bands, n, n) with its ``table`` (rows aligned; columns id, xc, yc, z, fwhm, flux_{band}, mag_{band}
    used where present), ``bands`` and ``pixel_scale``. Random draws (pairs, angles, offsets) all come from
    ``rng`` in that order, so the same seed gives identical blends.
    """
    inp = _inputs(cutouts, table, bands, pixel_scale, zeropoints)
    pxy, geo = _check_common(inp, n_blends, "make_blends", primary_xy, geometry, lowres_factor)
    n_gal = inp.cube.shape[0]
    if n_gal < 2:
        raise BlendError(f"make_blends: need at least 2 galaxies to blend, got {n_gal}")
    if max_offset_px < 0 or min_sep_px < 0:
        raise BlendError(f"make_blends: offsets must be >= 0 (max_offset_px={max_offset_px}, "
                         f"min_sep_px={min_sep_px})")
    if min_sep_px > 0 and min_sep_px >= max_offset_px * math.sqrt(2.0):
        raise BlendError(f"make_blends: min_sep_px={min_sep_px} cannot be reached with offsets up to "
                         f"{max_offset_px} px per axis")
    ref, ref_i = _ref_band(inp.bands, ref_band)
    facts = _galaxy_facts(inp, ref_i)

    # random draws, in a fixed order: pairs, angles, offsets
    i1 = rng.integers(0, n_gal, n_blends)
    i2 = rng.integers(0, n_gal - 1, n_blends)
    i2 = i2 + (i2 >= i1)  # never the same galaxy twice in a blend
    rot1 = rng.uniform(0.0, rotation_max_deg, n_blends)
    rot2 = rng.uniform(0.0, rotation_max_deg, n_blends)
    dx = rng.uniform(-max_offset_px, max_offset_px, n_blends)
    dy = rng.uniform(-max_offset_px, max_offset_px, n_blends)
    for _ in range(MAX_REDRAWS):
        close = np.hypot(dx, dy) < min_sep_px
        if not close.any():
            break
        dx[close] = rng.uniform(-max_offset_px, max_offset_px, int(close.sum()))
        dy[close] = rng.uniform(-max_offset_px, max_offset_px, int(close.sum()))
    else:
        raise BlendError("make_blends: could not draw offsets beyond min_sep_px")

    nb, size = inp.cube.shape[1], inp.cube.shape[-1]
    cube = np.empty((n_blends, nb, size, size), dtype=np.float32)
    comps = np.empty((n_blends, 2, nb, size, size), dtype=np.float32) if keep_components else None
    x2, y2 = pxy[0] + dx, pxy[1] + dy
    for k in tqdm(range(n_blends), disable=not progress, desc="blends", unit="blend", mininterval=2.0):
        a, b = i1[k], i2[k]
        g1 = transform_stamp(inp.cube[a], rot1[k], (facts["xc"][a], facts["yc"][a]), pxy)
        g2 = transform_stamp(inp.cube[b], rot2[k], (facts["xc"][b], facts["yc"][b]), (x2[k], y2[k]))
        cube[k] = g1 + g2
        if comps is not None:
            comps[k, 0], comps[k, 1] = g1, g2

    xlo1, ylo1 = geo.to_low(np.full(n_blends, pxy[0]), np.full(n_blends, pxy[1]))
    xlo2, ylo2 = geo.to_low(x2, y2)
    cols: dict[str, Any] = {
        "blend_id": np.arange(n_blends, dtype=np.int64),
        "id_1": facts["id"][i1], "id_2": facts["id"][i2], "idx_1": i1.astype(np.int64), "idx_2": i2.astype(np.int64),
        "x_1": np.full(n_blends, pxy[0]), "y_1": np.full(n_blends, pxy[1]), "x_2": x2, "y_2": y2,
        "xlo_1": xlo1, "ylo_1": ylo1, "xlo_2": xlo2, "ylo_2": ylo2,
        "rot_1": rot1, "rot_2": rot2, "dx": dx, "dy": dy,
    }
    for bnd in inp.bands:
        for s, idx in (("1", i1), ("2", i2)):
            cols[f"flux_{bnd}_{s}"] = facts[f"flux_{bnd}"][idx]
        for s, idx in (("1", i1), ("2", i2)):
            cols[f"mag_{bnd}_{s}"] = facts[f"mag_{bnd}"][idx]
    f1, f2 = facts[f"flux_{ref}"][i1], facts[f"flux_{ref}"][i2]
    m1, m2 = facts[f"mag_{ref}"][i1], facts[f"mag_{ref}"][i2]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["flux_ratio"] = np.minimum(f1, f2) / np.maximum(f1, f2)
    cols["dmag"] = np.abs(m1 - m2)
    cols["z_1"], cols["z_2"] = facts["z"][i1], facts["z"][i2]
    cols["dz"] = np.abs(cols["z_1"] - cols["z_2"])
    cols["fwhm_1"], cols["fwhm_2"] = facts["fwhm"][i1], facts["fwhm"][i2]
    cols["fwhm_source_1"], cols["fwhm_source_2"] = facts["fwhm_source"][i1], facts["fwhm_source"][i2]
    cols["fwhm_sum"] = cols["fwhm_1"] + cols["fwhm_2"]
    cols["separation_arcsec"] = np.hypot(dx, dy) * inp.pixel_scale
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["sep_over_fwhm_sum"] = cols["separation_arcsec"] / cols["fwhm_sum"]
    truth = pd.DataFrame(cols)
    log.info("make_blends: %d blends of %d galaxies (offsets up to %g px, min separation %g px, ref band %s)",
             n_blends, n_gal, max_offset_px, min_sep_px, ref)
    return BlendSet(cube=cube, bands=inp.bands, truth=truth, pixel_scale=inp.pixel_scale,
                    zeropoints=inp.zeropoints, kind="blend", ref_band=ref, geometry=geo, bunit=inp.bunit,
                    components=comps)


def make_isolated(cutouts: CutoutSet | np.ndarray, table: pd.DataFrame | None, n: int, rng: np.random.Generator, *,
                  rotation_max_deg: float = ROTATION_MAX_DEG, primary_xy: tuple[float, float] | None = None,
                  ref_band: str | None = None, bands: Sequence[str] | None = None, pixel_scale: float | None = None,
                  zeropoints: Sequence[float] | None = None, geometry: RebinGeometry | None = None,
                  lowres_factor: float = 3.0, progress: bool = True) -> BlendSet:
    """Single-galaxy control sample: ``n`` galaxies (without replacement while ``n`` <= the number of cutouts),
    each rotated by U(0, ``rotation_max_deg``) about its position and placed at ``primary_xy``, exactly as the
    primaries of :func:`make_blends`. Truth: iso_id, id, idx, x, y, xlo, ylo, rot, per-band flux/mag, z, fwhm."""
    inp = _inputs(cutouts, table, bands, pixel_scale, zeropoints)
    pxy, geo = _check_common(inp, n, "make_isolated", primary_xy, geometry, lowres_factor)
    n_gal = inp.cube.shape[0]
    ref, ref_i = _ref_band(inp.bands, ref_band)
    facts = _galaxy_facts(inp, ref_i)
    if n <= n_gal:
        idx = rng.choice(n_gal, n, replace=False)
    else:
        log.warning("make_isolated: %d stamps from %d galaxies: some galaxies are used more than once", n, n_gal)
        idx = np.concatenate([rng.permutation(n_gal) for _ in range(-(-n // n_gal))])[:n]
    rot = rng.uniform(0.0, rotation_max_deg, n)
    nb, size = inp.cube.shape[1], inp.cube.shape[-1]
    cube = np.empty((n, nb, size, size), dtype=np.float32)
    for k in tqdm(range(n), disable=not progress, desc="isolated", unit="gal", mininterval=2.0):
        g = idx[k]
        cube[k] = transform_stamp(inp.cube[g], rot[k], (facts["xc"][g], facts["yc"][g]), pxy)
    xlo, ylo = geo.to_low(np.full(n, pxy[0]), np.full(n, pxy[1]))
    cols: dict[str, Any] = {"iso_id": np.arange(n, dtype=np.int64), "id": facts["id"][idx],
                            "idx": idx.astype(np.int64), "x": np.full(n, pxy[0]), "y": np.full(n, pxy[1]),
                            "xlo": xlo, "ylo": ylo, "rot": rot}
    for bnd in inp.bands:
        cols[f"flux_{bnd}"] = facts[f"flux_{bnd}"][idx]
    for bnd in inp.bands:
        cols[f"mag_{bnd}"] = facts[f"mag_{bnd}"][idx]
    cols["z"], cols["fwhm"], cols["fwhm_source"] = facts["z"][idx], facts["fwhm"][idx], facts["fwhm_source"][idx]
    return BlendSet(cube=cube, bands=inp.bands, truth=pd.DataFrame(cols), pixel_scale=inp.pixel_scale,
                    zeropoints=inp.zeropoints, kind="isolated", ref_band=ref, geometry=geo, bunit=inp.bunit)


# ---------------------------------------------------------------------------------------------- files
def write_blends(path: str | Path, blendset: BlendSet, prov: Mapping[str, Any]) -> None:
    """One FITS file, written atomically: primary = cube (N, n_bands, n, n), ``TRUTH`` table, and the
    ``COMPONENTS`` cube when kept; header: kind, bands, pixel scale, zeropoints, reference band, lo-res geometry,
    provenance."""
    hdr = stamp_header(prov, blendset.bands, blendset.zeropoints, blendset.pixel_scale, blendset.bunit)
    hdr["KIND"] = (blendset.kind, "blend | isolated")
    hdr["REFBAND"] = (blendset.ref_band, "band of flux_ratio and dmag")
    hdr["LRNIN"] = (blendset.geometry.n_in, "hi-res stamp side (px) of the lo-res mapping")
    hdr["LRNOUT"] = (blendset.geometry.n_out, "lo-res stamp side (px)")
    hdr["LRFACTOR"] = (float(blendset.geometry.factor), "lo-res / hi-res pixel size")
    hdr["XCCONV"] = ("0-based, pixel centres at integers", "positions")
    hdus: list[Any] = [fits.PrimaryHDU(data=np.asarray(blendset.cube, dtype=np.float32), header=hdr),
                       dataframe_to_hdu(blendset.truth, "TRUTH")]
    if blendset.components is not None:
        hdus.append(fits.ImageHDU(data=np.asarray(blendset.components, dtype=np.float32), name="COMPONENTS"))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def read_blends(path: str | Path) -> BlendSet:
    """Read a file written by :func:`write_blends`; raise :class:`BoundaryError` with one line if it is bad."""
    path = Path(path)
    if not path.exists():
        raise BoundaryError(f"{path}: file not found")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdr = hdul[0].header
            cube = np.asarray(hdul[0].data, dtype=np.float32)
            truth = hdu_to_dataframe(hdul["TRUTH"])
            comps = np.asarray(hdul["COMPONENTS"].data, dtype=np.float32) if "COMPONENTS" in hdul else None
            bands, zps, scale, bunit = parse_stamp_header(hdr)
            geo = RebinGeometry(int(hdr["LRNIN"]), int(hdr["LRNOUT"]), float(hdr["LRFACTOR"]))
            bset = BlendSet(cube=cube, bands=bands, truth=truth, pixel_scale=scale, zeropoints=zps,
                            kind=str(hdr["KIND"]), ref_band=str(hdr["REFBAND"]), geometry=geo, bunit=bunit,
                            components=comps)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise BoundaryError(f"{path}: not a readable blend file ({type(exc).__name__}: {exc})") from None
    if bad := nonfinite_stamps(cube):
        raise BoundaryError(f"{path}: {bad}; remake it")
    return bset
