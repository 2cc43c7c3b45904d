"""Raw archive products -> the data boundary (per-band mosaics, rms maps, source catalogue).

Formats (``surveys.{name}.download.format``):

* ``hst_sci``: HST HLSP science mosaics (XDF, Hubble Legacy Field GOODS-S): the image in the primary HDU in
  electrons/s, the AB zeropoint from PHOTFLAM/PHOTPLAM when the header has them (else the configured one), blank
  (zero) pixels outside the footprint set to NaN, and an rms map measured from the image itself.
* ``jwst_i2d``: CEERS DR0.5 NIRCam i2d mosaics: SCI (extension 1, MJy/sr) with its WCS, ERR as the rms map, the
  configured zeropoint (28.08652 for 0.03"/px in MJy/sr).

The GOODS-S catalogue (Guo et al. 2013 CANDELS multiband, fluxes in uJy) joined with the Santini et al. photo-z
and mass catalogue becomes the boundary catalogue, fluxes in the image units of the mosaics.

Memory: mosaics can be 25k x 25k px (2.5 GB as float32). Inputs are memory-mapped (a ``.gz`` is first
decompressed to a temporary file beside it, since astropy would read a gzipped image whole, twice) and copied
in row blocks, so a band holds at most two full float32 arrays: the image and its rms map.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.stats import SigmaClip
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning
from photutils.background import Background2D, StdBackgroundRMS
from scipy import ndimage

from workflow_scripts.errors import BoundaryError
from workflow_scripts.io import write_catalog, write_mosaic
from workflow_scripts.surveys import Survey

log = logging.getLogger(__name__)

# --- photometric constants
ST_ZEROPOINT = -21.10          # STmag of a flux density of 1 erg/s/cm2/A (HST PHOTZPT)
AB_MINUS_ST = 18.692           # ZP_AB = ZP_ST - 5 log10(PHOTPLAM / A) + 18.692
UJY_AB_ZEROPOINT = 23.9        # AB magnitude of 1 microjansky
# --- catalogue conventions (Guo+13, Santini+15)
STAR_CLASS_MIN = 0.95          # CLASS_STAR above which a source is flagged as a star (Hemmati+22 cut)
MISSING_VALUE = -99.0          # value of a band not observed / a quantity not measured
FLUX_COLUMN_RE = r"^(?:[A-Z0-9]+_)?{band}_FLUX$"   # ACS_F435W_FLUX, WFC3_F160W_FLUX, ...
ID_COLUMNS = ("ID", "SEQ", "NUMBER")
REDSHIFT_COLUMNS = ("ZBEST", "Z_BEST", "ZPHOT", "Z_PHOT", "Z")
FWHM_COLUMNS = {"FWHM_WORLD": 3600.0, "FWHM_ARCSEC": 1.0}   # column -> factor to arcsec
# --- rms map from the image (hst_sci)
RMS_BOX_PX = 256               # Background2D box side: large, so sources are a small fraction of every box
RMS_SIGMA = 3.0                # sigma-clipping threshold that removes sources from the sky statistics
RMS_MAXITERS = 10
RMS_EXCLUDE_PERCENTILE = 50.0  # a box with more blank/clipped pixels than this is filled from its neighbours
RMS_FILTER_SIZE = 3            # median filter (in boxes) of the low-resolution rms mesh
RMS_STRIP_BOXES = 16           # Background2D runs on strips this many boxes tall, bounding its working copies
ROW_BLOCK = 2048               # image rows read and converted at a time
GUNZIP_BUFFER_BYTES = 16 * 2**20  # copy buffer when a .gz raw file is decompressed
MEDIAN_SAMPLE_PIXELS = 10**6    # pixels sampled for the logged median rms
PIXEL_SCALE_TOLERANCE = 0.01   # relative mismatch between WCS and configured pixel scale that is logged


@dataclass(frozen=True)
class NormalisedBand:
    """What normalising one band produced (for the log and the caller's catalogue conversion)."""

    band: str
    zeropoint: float
    zeropoint_source: str      # "PHOTFLAM" (header) or "config"
    shape: tuple[int, int]
    footprint_fraction: float  # fraction of pixels with data
    rms_median: float


# --------------------------------------------------------------------------------------- raw FITS access
@contextlib.contextmanager
def open_raw(path: str | Path) -> Iterator[fits.HDUList]:
    """Open a raw FITS file lazily (read images with ``hdu.section``); a ``.gz`` is decompressed to a temporary
    file next to it first, so that rows can be read without holding the whole file."""
    path = Path(path)
    if not path.exists():
        raise BoundaryError(f"{path}: raw file not found")
    hint = "delete it so that it is downloaded again"
    tmp: Path | None = None
    try:
        try:
            target = path
            if path.name.lower().endswith(".gz"):
                fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".fits", dir=path.parent)
                tmp = target = Path(name)
                with gzip.open(path, "rb") as src, open(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=GUNZIP_BUFFER_BYTES)
            hdul = fits.open(target, memmap=False)
        except (OSError, EOFError, ValueError) as exc:
            raise BoundaryError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc}); {hint}") from None
        try:
            yield hdul
        except (OSError, EOFError) as exc:  # reading the data failed (truncated file)
            raise BoundaryError(f"{path}: cannot read the data ({type(exc).__name__}: {exc}); {hint}") from None
        finally:
            hdul.close()
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _hdu(hdul: fits.HDUList, name: str, index: int, path: Path) -> Any:
    """The extension called ``name``; else the 2-D image HDU at ``index`` (files without EXTNAMEs)."""
    try:
        return hdul[name]
    except KeyError:
        if index < len(hdul) and hdul[index].header.get("NAXIS", 0) == 2:
            return hdul[index]
    raise BoundaryError(f"{path}: no {name} extension")


def _celestial_wcs(header: fits.Header, path: Path, pixel_scale: float) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except (ValueError, KeyError, MemoryError) as exc:
            raise BoundaryError(f"{path}: the WCS cannot be read ({exc})") from None
    if wcs.naxis != 2 or not wcs.has_celestial:
        raise BoundaryError(f"{path}: no 2-D celestial WCS in the image header")
    scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)
    if abs(scale / pixel_scale - 1.0) > PIXEL_SCALE_TOLERANCE:
        log.warning("%s: WCS pixel scale %.4f\" differs from the configured %.4f\"", path, scale, pixel_scale)
    return wcs


def _shape(hdu: Any, path: Path) -> tuple[int, int]:
    shape = tuple(hdu.shape) if hdu.header.get("NAXIS", 0) else ()
    if len(shape) != 2:
        raise BoundaryError(f"{path}: expected a 2-D image in HDU {hdu.name or 0}, got shape {shape}")
    return shape  # type: ignore[return-value]


def _read_rows(hdu: Any, r0: int, r1: int, path: Path) -> np.ndarray:
    try:
        return hdu.section[r0:r1, :]
    except (OSError, EOFError, ValueError) as exc:  # astropy's reshape fails on a truncated data unit
        raise BoundaryError(f"{path}: cannot read rows {r0}-{r1} of HDU {hdu.name or 0} ({exc}); the file "
                            "may be truncated, delete it so that it is downloaded again") from None


def _copy_float32(hdu: Any, path: Path, *, weight: Any | None = None,
                  footprint: np.ndarray | None = None) -> np.ndarray:
    """Native float32 copy of an image HDU read in row blocks (``section``); blank pixels become NaN.

    Blank: non-finite, exactly zero (drizzle's fill outside the footprint), zero in the ``weight`` HDU, or
    NaN in ``footprint`` (an image whose blanks an rms map shares).
    """
    shape = _shape(hdu, path)
    if weight is not None and _shape(weight, path) != shape:
        raise BoundaryError(f"{path}: weight shape {weight.shape} differs from the image's {shape}")
    out = np.empty(shape, dtype=np.float32)
    for r0 in range(0, shape[0], ROW_BLOCK):
        r1 = min(r0 + ROW_BLOCK, shape[0])
        block = out[r0:r1]
        block[...] = _read_rows(hdu, r0, r1, path)
        blank = ~np.isfinite(block) | (block == 0)
        if weight is not None:
            blank |= ~(_read_rows(weight, r0, r1, path) > 0)
        if footprint is not None:
            blank |= ~np.isfinite(footprint[r0:r1])
        block[blank] = np.nan
    return out


# ------------------------------------------------------------------------------------------ zeropoints
def hst_zeropoint(header: Mapping[str, Any], default: float) -> tuple[float, str]:
    """AB zeropoint of an HST image in electrons/s from PHOTFLAM/PHOTPLAM, else ``default``; with its source."""
    photflam, photplam = header.get("PHOTFLAM"), header.get("PHOTPLAM")
    try:
        photflam, photplam = float(photflam), float(photplam)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float(default), "config"
    if not (photflam > 0 and photplam > 0):
        return float(default), "config"
    zp = -2.5 * math.log10(photflam) + ST_ZEROPOINT - 5.0 * math.log10(photplam) + AB_MINUS_ST
    return zp, "PHOTFLAM"


# ---------------------------------------------------------------------------------------------- rms map
def _box_centres(start: int, stop: int, box: int) -> list[float]:
    """Centres of the boxes Background2D lays from ``start`` (the last one may be partial)."""
    edges = list(range(start, stop, box)) + [stop]
    return [(a + b - 1) / 2.0 for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _strips(ny: int, height: int, box: int) -> list[tuple[int, int]]:
    starts = list(range(0, ny, height))
    if len(starts) > 1 and ny - starts[-1] < box:  # a remainder shorter than a box joins the strip above
        starts.pop()
    return list(zip(starts, starts[1:] + [ny], strict=True))


def estimate_rms_map(image: np.ndarray, *, box_px: int = RMS_BOX_PX,
                     strip_boxes: int = RMS_STRIP_BOXES) -> np.ndarray:
    """Per-pixel 1-sigma sky noise of ``image`` (NaN = blank), as float32 with the image's blanks.

    The sigma-clipped standard deviation in large boxes (photutils Background2D) is measured strip by strip,
    median-filtered over boxes and interpolated bilinearly between box centres.
    """
    ny, nx = image.shape
    by, bx = min(box_px, ny), min(box_px, nx)
    clip = SigmaClip(sigma=RMS_SIGMA, maxiters=RMS_MAXITERS)
    rows: list[np.ndarray] = []
    centres_y: list[float] = []
    for s0, s1 in _strips(ny, by * strip_boxes, by):
        strip = image[s0:s1]
        n_rows = math.ceil((s1 - s0) / by)
        mesh = np.full((n_rows, math.ceil(nx / bx)), np.nan)
        if np.isfinite(strip).any():
            try:
                with warnings.catch_warnings():  # NaN = blank is how we mark the footprint: expected here
                    warnings.filterwarnings("ignore", message="Input data contains non-finite",
                                            category=AstropyUserWarning)
                    bkg = Background2D(strip, (by, bx), filter_size=1, sigma_clip=clip,
                                       exclude_percentile=RMS_EXCLUDE_PERCENTILE,
                                       bkg_rms_estimator=StdBackgroundRMS())
                    mesh = np.asarray(bkg.background_rms_mesh, dtype=np.float64)
            except ValueError as exc:  # every box of the strip is (almost) blank
                log.debug("rows %d-%d: no sky boxes (%s)", s0, s1, exc)
        rows.append(mesh)
        centres_y += _box_centres(s0, s1, by)
    mesh = np.vstack(rows)
    bad = ~(np.isfinite(mesh) & (mesh > 0))
    if bad.all():
        raise BoundaryError("cannot estimate the noise: no box has enough sky pixels")
    if bad.any():
        nearest = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        mesh = mesh[tuple(nearest)]
    mesh = ndimage.median_filter(mesh, size=RMS_FILTER_SIZE, mode="nearest")
    return _upsample(mesh, np.asarray(centres_y), np.asarray(_box_centres(0, nx, bx)), image)


def _upsample(mesh: np.ndarray, cy: np.ndarray, cx: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a box mesh to the image grid (clamped at the edges), blanks kept."""
    ny, nx = image.shape
    along_x = np.stack([np.interp(np.arange(nx), cx, row) for row in mesh]).astype(np.float32)
    y = np.arange(ny, dtype=np.float64)
    i0 = np.clip(np.searchsorted(cy, y, side="right") - 1, 0, len(cy) - 1)
    i1 = np.minimum(i0 + 1, len(cy) - 1)
    span = cy[i1] - cy[i0]
    w = np.clip(np.where(span > 0, (y - cy[i0]) / np.where(span > 0, span, 1.0), 0.0), 0.0, 1.0).astype(np.float32)
    out = np.empty((ny, nx), dtype=np.float32)
    for r0 in range(0, ny, ROW_BLOCK):
        r1 = min(r0 + ROW_BLOCK, ny)
        wb = w[r0:r1, None]
        block = out[r0:r1]
        block[...] = along_x[i0[r0:r1]] * (1.0 - wb) + along_x[i1[r0:r1]] * wb
        block[~np.isfinite(image[r0:r1])] = np.nan
    return out


# -------------------------------------------------------------------------------------------- mosaics
def _finish(path: Path, out: str | Path, image: np.ndarray, rms: np.ndarray, wcs: WCS, *, survey: Survey,
            band: str, zeropoint: float, zp_source: str, prov: Mapping[str, Any], rms_out: str | Path | None,
            rms_method: str) -> NormalisedBand:
    n_finite = _count_finite(image, path)
    write_mosaic(out, image, wcs, telescope=survey.telescope, instrument=survey.instrument, band=band,
                 bunit=survey.bunit, zeropoint=zeropoint, prov=prov, rms=rms, rms_file=rms_out,
                 extra={"RAWFILE": path.name, "ZPSOURCE": (zp_source, "origin of PHOTZP"),
                        "RMSMETH": (rms_method, "origin of the rms map")})
    result = NormalisedBand(band=band, zeropoint=float(zeropoint), zeropoint_source=zp_source,
                            shape=(int(image.shape[0]), int(image.shape[1])),
                            footprint_fraction=n_finite / image.size, rms_median=_sampled_median(rms))
    log.info("%s %s: %dx%d px, footprint %.1f%%, PHOTZP %.4f (%s), median rms %.3g %s", survey.name, band,
             *result.shape, 100 * result.footprint_fraction, result.zeropoint, zp_source, result.rms_median,
             survey.bunit)
    return result


def _count_finite(image: np.ndarray, path: Path) -> int:
    """Pixels with data (counted in row blocks); BoundaryError when there are none."""
    n = int(sum(np.count_nonzero(np.isfinite(image[r0:r0 + ROW_BLOCK])) for r0 in range(0, image.shape[0], ROW_BLOCK)))
    if n == 0:
        raise BoundaryError(f"{path}: every pixel is blank (zero or NaN)")
    return n


def _sampled_median(values: np.ndarray) -> float:
    """Median of the finite values on a sparse grid (a full nanmedian would copy a 2.5 GB map)."""
    step = max(1, int(math.sqrt(values.size / MEDIAN_SAMPLE_PIXELS)))
    sample = values[::step, ::step]
    sample = sample[np.isfinite(sample)]
    return float(np.median(sample)) if sample.size else math.nan


def normalise_hst_sci(raw: str | Path, out: str | Path, *, survey: Survey, band: str, prov: Mapping[str, Any],
                      rms_out: str | Path | None = None) -> NormalisedBand:
    """HST HLSP science mosaic (primary HDU, electrons/s) -> boundary mosaic + rms map."""
    raw = Path(raw)
    with open_raw(raw) as hdul:
        hdu = hdul[0] if hdul[0].header.get("NAXIS", 0) == 2 else _hdu(hdul, "SCI", 1, raw)
        header = hdu.header.copy()
        wcs = _celestial_wcs(header, raw, survey.pixel_scale)
        zeropoint, zp_source = hst_zeropoint(header, survey.band(band).zeropoint)
        image = _copy_float32(hdu, raw)
    _count_finite(image, raw)
    # HLSP sci files come without a matching noise map (weights are separate files that miss drizzle's
    # correlated noise), so the rms is measured from the sky itself: sigma-clipped std in large boxes.
    rms = estimate_rms_map(image)
    return _finish(raw, out, image, rms, wcs, survey=survey, band=band, zeropoint=zeropoint, zp_source=zp_source,
                   prov=prov, rms_out=rms_out, rms_method="Background2D clipped std")


def normalise_jwst_i2d(raw: str | Path, out: str | Path, *, survey: Survey, band: str, prov: Mapping[str, Any],
                       rms_out: str | Path | None = None) -> NormalisedBand:
    """JWST i2d mosaic (SCI in MJy/sr with its WCS, ERR, WHT) -> boundary mosaic + rms map (ERR)."""
    raw = Path(raw)
    with open_raw(raw) as hdul:
        sci = _hdu(hdul, "SCI", 1, raw)
        err = _hdu(hdul, "ERR", 2, raw)
        try:
            wht = hdul["WHT"]
        except KeyError:
            wht = None
        wcs = _celestial_wcs(sci.header, raw, survey.pixel_scale)
        image = _copy_float32(sci, raw, weight=wht)
        rms = _copy_float32(err, raw, footprint=image)
    if rms.shape != image.shape:
        raise BoundaryError(f"{raw}: ERR shape {rms.shape} differs from SCI {image.shape}")
    return _finish(raw, out, image, rms, wcs, survey=survey, band=band, zeropoint=survey.band(band).zeropoint,
                   zp_source="config", prov=prov, rms_out=rms_out, rms_method="ERR extension")


FORMATS = {"hst_sci": normalise_hst_sci, "jwst_i2d": normalise_jwst_i2d}


def normalise_band(fmt: str, raw: str | Path, out: str | Path, *, survey: Survey, band: str,
                   prov: Mapping[str, Any], rms_out: str | Path | None = None) -> NormalisedBand:
    """Normalise one raw band file of format ``fmt`` (see :data:`FORMATS`) to the boundary."""
    try:
        function = FORMATS[fmt]
    except KeyError:
        raise BoundaryError(f"unknown raw format {fmt!r} (known: {', '.join(FORMATS)})") from None
    return function(raw, out, survey=survey, band=band, prov=prov, rms_out=rms_out)


# ------------------------------------------------------------------------------------------ catalogue
def _read_table(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of the first table HDU of a FITS file, keyed by upper-case name, in native byte order."""
    path = Path(path)
    if not path.exists():
        raise BoundaryError(f"{path}: raw catalogue not found")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None)
            if hdu is None:
                raise BoundaryError(f"{path}: no table HDU")
            return {name.upper(): np.asarray(hdu.data[name]).astype(hdu.data[name].dtype.newbyteorder("="))
                    for name in hdu.columns.names}
    except BoundaryError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise BoundaryError(f"{path}: not a readable FITS table ({exc})") from None


def _first(columns: Mapping[str, np.ndarray], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in columns), None)


def _missing_to_nan(values: np.ndarray) -> np.ndarray:
    out = values.astype(np.float64)
    out[~np.isfinite(out) | (out == MISSING_VALUE)] = np.nan
    return out


def ujy_to_image(flux_ujy: np.ndarray, zeropoint: float) -> np.ndarray:
    """uJy -> image units of zeropoint ``zeropoint`` (same as 10**(-0.4 (mag_AB - ZP)), mag_AB = 23.9 - 2.5 log uJy)."""
    return np.asarray(flux_ujy, dtype=np.float64) * 10.0 ** (0.4 * (zeropoint - UJY_AB_ZEROPOINT))


def ujy_to_mag(flux_ujy: np.ndarray) -> np.ndarray:
    """AB magnitude of a flux in uJy; NaN where the flux is not positive."""
    flux = np.asarray(flux_ujy, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, UJY_AB_ZEROPOINT - 2.5 * np.log10(flux), np.nan)


def build_catalog(photometry: str | Path, photoz: str | Path | None, *, survey: Survey,
                  zeropoints: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Boundary catalogue from a CANDELS multiband table (Guo+13) and, optionally, a photo-z table (Santini+15).

    Columns: id, ra, dec, flux_{band} (image units, via ``zeropoints`` or the configured ones), mag_{band},
    z, fwhm (arcsec, NaN when the table has none), star (CLASS_STAR > 0.95), class_star.
    """
    cols = _read_table(photometry)
    missing = [c for c in ("ID", "RA", "DEC", "CLASS_STAR") if c not in cols]
    if missing:
        raise BoundaryError(f"{photometry}: catalogue lacks columns {', '.join(missing)}")
    ids = cols["ID"].astype(np.int64)
    df = pd.DataFrame({"id": ids, "ra": cols["RA"].astype(np.float64), "dec": cols["DEC"].astype(np.float64)})
    zeropoints = dict(zeropoints or {})
    for band in survey.band_names:
        pattern = re.compile(FLUX_COLUMN_RE.format(band=re.escape(band.upper())))
        matches = sorted(c for c in cols if pattern.match(c))
        if not matches:
            log.warning("%s: no flux column for band %s; it is left out of the catalogue", photometry, band)
            continue
        flux_ujy = _missing_to_nan(cols[matches[0]])
        zp = float(zeropoints.get(band, survey.band(band).zeropoint))
        df[f"flux_{band}"] = ujy_to_image(flux_ujy, zp)
        df[f"mag_{band}"] = ujy_to_mag(flux_ujy)
    df["z"] = _redshifts(photoz, ids) if photoz is not None else np.nan
    fwhm_col = _first(cols, tuple(FWHM_COLUMNS))
    df["fwhm"] = _missing_to_nan(cols[fwhm_col]) * FWHM_COLUMNS[fwhm_col] if fwhm_col else np.nan
    class_star = _missing_to_nan(cols["CLASS_STAR"])
    df["star"] = class_star > STAR_CLASS_MIN
    df["class_star"] = class_star
    return df


def _redshifts(photoz: str | Path, ids: np.ndarray) -> np.ndarray:
    """Best redshift per id from the photo-z table: joined on ID, or row by row when it has no ID column."""
    cols = _read_table(photoz)
    zcol = _first(cols, REDSHIFT_COLUMNS)
    if zcol is None:
        raise BoundaryError(f"{photoz}: no redshift column (looked for {', '.join(REDSHIFT_COLUMNS)})")
    z = _missing_to_nan(cols[zcol])
    z[z < 0] = np.nan
    idcol = _first(cols, ID_COLUMNS)
    if idcol is None:
        if len(z) != len(ids):
            raise BoundaryError(f"{photoz}: no ID column and {len(z)} rows for {len(ids)} catalogue sources")
        return z
    lookup = pd.Series(z, index=cols[idcol].astype(np.int64))
    lookup = lookup[~lookup.index.duplicated()]
    return lookup.reindex(ids).to_numpy(dtype=np.float64)


def normalise_catalog(photometry: str | Path, photoz: str | Path | None, out: str | Path, *, survey: Survey,
                      prov: Mapping[str, Any], zeropoints: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Write the boundary catalogue built by :func:`build_catalog`; return it."""
    catalog = build_catalog(photometry, photoz, survey=survey, zeropoints=zeropoints)
    write_catalog(out, catalog, prov)
    log.info("%s: %d sources (%d stars, %d with a redshift)", out, len(catalog), int(catalog["star"].sum()),
             int(np.isfinite(catalog["z"]).sum()))
    return catalog
