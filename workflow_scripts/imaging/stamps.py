"""Multi-band cutouts of catalogue galaxies from the boundary mosaics, in one FITS file per set.

* :mod:`workflow_scripts.imaging.split`: regions of the sky whose cutouts cannot overlap.
* :func:`extract_cutouts`: ``size`` x ``size`` cutouts of every band, placed with the WCS, in a
  :class:`CutoutSet`; cutouts that leave the mosaic or contain NaNs / no-data pixels are dropped and counted.
* :func:`write_cutouts` / :func:`read_cutouts`: one FITS file per set (primary = cube, ``CATALOG`` and
  ``REJECTED`` binary tables), written atomically with provenance.

Sub-pixel convention
--------------------
Pixel coordinates are 0-based with pixel centres at integers (astropy ``origin=0``). A galaxy at mosaic pixel
position ``(x, y)`` (from its RA/Dec through the WCS) is cut by exact integer slicing: the cutout's first pixel is
``x0 = floor(x - (size - 1) / 2 + 1/2)`` (same for y), so the cutout is ``data[y0:y0 + size, x0:x0 + size]``, no
resampling. The galaxy then sits at ``(xc, yc) = (x - x0, y - y0)`` inside the cutout, within half a pixel of
the geometric centre ``(size - 1) / 2`` (31.5 for 64 px). ``xc``/``yc`` are recorded in the table and every later
step (rotation, blending, truth positions) starts from them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table
from tqdm.auto import tqdm

from workflow_scripts.errors import BoundaryError, PipelineError
from workflow_scripts.io import Mosaic, atomic_path, provenance_header

log = logging.getLogger(__name__)
#: cutout side in pixels (Hemmati+22: 64 x 64 at 0.06"/px)
CUTOUT_SIZE = 64
#: flag bits of rejected cutouts: beyond the mosaic edge / NaN or inf pixels / no-data pixels (rms <= 0 or
#: non-finite, or too many exact zeros, the way real mosaics mark no coverage)
FLAG_EDGE = 1
FLAG_NAN = 2
FLAG_NODATA = 4
FLAG_NAMES = {FLAG_EDGE: "edge", FLAG_NAN: "nan", FLAG_NODATA: "nodata"}
#: fraction of exactly-zero pixels in a band above which a cutout counts as outside the coverage (real HST
#: drizzled mosaics hold 0 where no exposure fell; a noisy image essentially never holds an exact 0)
ZERO_FRACTION_MAX = 0.01
#: galaxies per vectorised extraction batch (bounds the fancy-index arrays to ~35 MB)
EXTRACT_BATCH = 512
#: bands must agree on a galaxy's pixel position to this many pixels (they must share one grid)
GRID_TOLERANCE_PX = 0.01


class CutoutError(PipelineError):
    """Bad input to the selection / split / cutout steps (empty catalogue, missing columns, impossible size)."""


# -------------------------------------------------------------------------------------------- selection
def _require(catalog: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(catalog, pd.DataFrame):
        raise CutoutError(f"{what}: expected a pandas DataFrame, got {type(catalog).__name__}")
    if len(catalog) == 0:
        raise CutoutError(f"{what}: the catalogue is empty")
    missing = [c for c in columns if c not in catalog.columns]
    if missing:
        raise CutoutError(f"{what}: the catalogue lacks columns {', '.join(missing)}")


# --------------------------------------------------------------------------------------------- cutouts
@dataclass
class CutoutSet:
    """Cutouts of one set of galaxies in every band (see the module docstring for the pixel convention).

    ``cube``: float32 (N, n_bands, size, size) in the mosaics' native units; ``table``: one row per cutout (the
    catalogue's columns plus x, y (mosaic pixels), x0, y0 (mosaic pixel of the cutout's [0, 0]), xc, yc (galaxy
    in the cutout), flag (0 for kept cutouts)); ``rejected``: id, ra, dec, x, y, flag of the dropped ones;
    ``zeropoints``: AB zeropoint of the image unit per band; ``summary``: counts.
    """

    cube: np.ndarray
    bands: list[str]
    table: pd.DataFrame
    pixel_scale: float
    zeropoints: list[float]
    bunit: str = ""
    rejected: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["id", "ra", "dec", "x", "y",
                                                                                  "flag"]))
    summary: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cube.ndim != 4 or self.cube.shape[1] != len(self.bands) or self.cube.shape[0] != len(self.table):
            raise CutoutError(f"inconsistent CutoutSet: cube {self.cube.shape}, {len(self.bands)} bands, "
                              f"{len(self.table)} table rows")

    @property
    def n(self) -> int:
        return int(self.cube.shape[0])

    @property
    def size(self) -> int:
        return int(self.cube.shape[-1])

    def band_index(self, band: str) -> int:
        try:
            return self.bands.index(band)
        except ValueError:
            raise CutoutError(f"band {band!r} is not in this cutout set ({', '.join(self.bands)})") from None


def cutout_origin(x: Any, y: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer mosaic pixel ``(x0, y0)`` of the first pixel of the ``size``-pixel cutout around ``(x, y)``."""
    off = (size - 1) / 2.0
    return (np.floor(np.asarray(x, float) - off + 0.5).astype(np.int64),
            np.floor(np.asarray(y, float) - off + 0.5).astype(np.int64))


def _positions(mosaics: Mapping[str, Mosaic], ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bands = list(mosaics)
    first = mosaics[bands[0]]
    x, y = first.wcs.celestial.all_world2pix(ra, dec, 0)
    for b in bands[1:]:
        m = mosaics[b]
        if m.data.shape != first.data.shape:
            raise CutoutError(f"band {b} has shape {m.data.shape} but {bands[0]} has {first.data.shape}: the bands "
                              "must share one pixel grid")
        xb, yb = m.wcs.celestial.all_world2pix(ra, dec, 0)
        ok = np.isfinite(x) & np.isfinite(xb)
        if ok.any() and max(np.abs(xb - x)[ok].max(), np.abs(yb - y)[ok].max()) > GRID_TOLERANCE_PX:
            raise CutoutError(f"band {b} puts galaxies at other pixels than band {bands[0]}: the bands must share "
                              "one pixel grid (resample them first)")
    return np.asarray(x, float), np.asarray(y, float)


def extract_cutouts(mosaics: Mapping[str, Mosaic], catalog: pd.DataFrame, size: int = CUTOUT_SIZE, *,
                    progress: bool = True) -> CutoutSet:
    """``size`` x ``size`` cutouts of every band around every catalogue galaxy (integer slicing, no resampling).

    Cutouts that leave the mosaic (``FLAG_EDGE``), hold NaN/inf pixels (``FLAG_NAN``) or no-data pixels
    (``FLAG_NODATA``: rms <= 0 or non-finite, or more than ``ZERO_FRACTION_MAX`` exact zeros) in any band are
    dropped and listed in ``rejected``; ``summary`` counts them.
    """
    if not mosaics:
        raise CutoutError("extract_cutouts: no mosaic given")
    _require(catalog, ("id", "ra", "dec"), "extract_cutouts")
    if size < 1:
        raise CutoutError(f"extract_cutouts: the cutout size must be positive, got {size}")
    bands = list(mosaics)
    ny, nx = mosaics[bands[0]].data.shape
    if size > min(ny, nx):
        raise CutoutError(f"extract_cutouts: cutout size {size} px is larger than the mosaic ({ny} x {nx} px)")
    ra, dec = catalog["ra"].to_numpy(float), catalog["dec"].to_numpy(float)
    x, y = _positions(mosaics, ra, dec)
    finite = np.isfinite(x) & np.isfinite(y)
    x0, y0 = cutout_origin(np.where(finite, x, 0.0), np.where(finite, y, 0.0), size)
    flag = np.zeros(len(catalog), dtype=np.int16)
    flag[~finite | (x0 < 0) | (y0 < 0) | (x0 + size > nx) | (y0 + size > ny)] |= FLAG_EDGE
    inside = np.flatnonzero(flag == 0)
    cube = np.empty((inside.size, len(bands), size, size), dtype=np.float32)
    iy, ix = np.arange(size)[None, :, None], np.arange(size)[None, None, :]
    starts = range(0, inside.size, EXTRACT_BATCH)
    for s in tqdm(starts, disable=not progress, desc="cutouts", unit="batch", mininterval=2.0):
        idx = inside[s:s + EXTRACT_BATCH]
        rows, cols = y0[idx, None, None] + iy, x0[idx, None, None] + ix
        for bi, b in enumerate(bands):
            m = mosaics[b]
            stamps = np.asarray(m.data, dtype=np.float32)[rows, cols]
            cube[s:s + idx.size, bi] = stamps
            # one pass each: a sum is NaN/inf as soon as one pixel is
            flag[idx[~np.isfinite(stamps.sum(axis=(1, 2), dtype=np.float64))]] |= FLAG_NAN
            nodata = np.count_nonzero(stamps == 0, axis=(1, 2)) > ZERO_FRACTION_MAX * size * size
            if m.rms is not None:
                r = np.asarray(m.rms)[rows, cols]
                nodata |= ~(r.min(axis=(1, 2)) > 0) | ~np.isfinite(r.max(axis=(1, 2)))
            flag[idx[nodata]] |= FLAG_NODATA
    keep_in = flag[inside] == 0
    cube = cube[keep_in]
    kept = inside[keep_in]
    table = catalog.iloc[kept].reset_index(drop=True).copy()
    table["x"], table["y"] = x[kept], y[kept]
    table["x0"], table["y0"] = x0[kept], y0[kept]
    table["xc"], table["yc"] = x[kept] - x0[kept], y[kept] - y0[kept]
    table["flag"] = np.zeros(kept.size, dtype=np.int16)
    bad = np.flatnonzero(flag != 0)
    rejected = pd.DataFrame({"id": catalog["id"].to_numpy()[bad], "ra": ra[bad], "dec": dec[bad],
                             "x": x[bad], "y": y[bad], "flag": flag[bad]})
    summary = {"n_input": int(len(catalog)), "n_kept": int(kept.size),
               **{f"n_{name}": int(((flag & bit) != 0).sum()) for bit, name in FLAG_NAMES.items()}}
    if bad.size:
        log.warning("extract_cutouts: dropped %d of %d cutouts (%s)", bad.size, len(catalog),
                    ", ".join(f"{summary[f'n_{name}']} {name}" for name in FLAG_NAMES.values()))
    first = mosaics[bands[0]]
    return CutoutSet(cube=cube, bands=bands, table=table, pixel_scale=first.pixel_scale,
                     zeropoints=[mosaics[b].zeropoint for b in bands], bunit=str(first.header.get("BUNIT", "")),
                     rejected=rejected, summary=summary)


# ------------------------------------------------------------------------------------------------ files
def dataframe_to_hdu(df: pd.DataFrame, name: str) -> fits.BinTableHDU:
    """A DataFrame as a FITS binary table named ``name`` (strings as fixed-width text)."""
    out = {}
    for col in df.columns:
        values = df[col]
        if values.dtype == object or isinstance(values.dtype, pd.StringDtype) or str(values.dtype) == "str":
            out[col] = np.asarray(values.astype(str).to_numpy(), dtype=str)
        elif isinstance(values.dtype, pd.CategoricalDtype):
            out[col] = np.asarray(values.astype(str).to_numpy(), dtype=str)
        else:
            out[col] = values.to_numpy()
    hdu = fits.table_to_hdu(Table(out, names=list(df.columns)) if len(df.columns) else Table())
    hdu.name = name
    return hdu


def hdu_to_dataframe(hdu: fits.BinTableHDU) -> pd.DataFrame:
    """Inverse of :func:`dataframe_to_hdu` (native byte order, str columns)."""
    tab = Table.read(hdu)
    cols = {}
    for name in tab.colnames:
        arr = np.asarray(tab[name])
        if arr.dtype.kind == "S":
            arr = arr.astype(str)
        if arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        cols[name] = arr
    return pd.DataFrame(cols, columns=tab.colnames)


def stamp_header(prov: Mapping[str, Any], bands: Sequence[str], zeropoints: Sequence[float], pixel_scale: float,
                 bunit: str) -> fits.Header:
    """Header of a stamp cube (N, n_bands, n, n): provenance, band order, AB zeropoint per band, pixel scale."""
    hdr = provenance_header(prov)
    hdr["BANDS"] = (",".join(bands), "cube axis 1")
    hdr["PIXSCALE"] = (float(pixel_scale), "arcsec / pixel")
    hdr["BUNIT"] = bunit
    for i, zp in enumerate(zeropoints):
        hdr[f"PHOTZP{i + 1}"] = (float(zp) if np.isfinite(zp) else "nan", f"AB zeropoint of band {bands[i]}")
    return hdr


def parse_stamp_header(hdr: fits.Header) -> tuple[list[str], list[float], float, str]:
    """Bands, zeropoints, pixel scale and unit from a :func:`stamp_header` (KeyError if one is missing)."""
    bands = str(hdr["BANDS"]).split(",")
    zps = [float(hdr[f"PHOTZP{i + 1}"]) for i in range(len(bands))]
    return bands, zps, float(hdr["PIXSCALE"]), str(hdr.get("BUNIT", ""))


def concat_cutouts(sets: Sequence[CutoutSet]) -> CutoutSet:
    """One :class:`CutoutSet` of several with the same bands, size, zeropoints and pixel scale (e.g. one per field);
    tables and rejected lists are stacked, summary counts added."""
    if not sets:
        raise CutoutError("concat_cutouts: no cutout set given")
    first = sets[0]
    for cs in sets[1:]:
        if cs.bands != first.bands or cs.size != first.size or cs.zeropoints != first.zeropoints \
                or abs(cs.pixel_scale - first.pixel_scale) > 1e-6 * first.pixel_scale:
            raise CutoutError("concat_cutouts: the sets differ in bands, size, zeropoints or pixel scale")
    if len(sets) == 1:
        return first
    summary: dict[str, int] = {}
    for cs in sets:
        for k, v in cs.summary.items():
            summary[k] = summary.get(k, 0) + int(v)
    return CutoutSet(cube=np.concatenate([cs.cube for cs in sets]), bands=list(first.bands),
                     table=pd.concat([cs.table for cs in sets], ignore_index=True), pixel_scale=first.pixel_scale,
                     zeropoints=list(first.zeropoints), bunit=first.bunit,
                     rejected=pd.concat([cs.rejected for cs in sets], ignore_index=True), summary=summary)


def write_cutouts(path: str | Path, cutouts: CutoutSet, prov: Mapping[str, Any]) -> None:
    """Write a :class:`CutoutSet` to one FITS file atomically (primary: cube; CATALOG and REJECTED tables)."""
    hdr = stamp_header(prov, cutouts.bands, cutouts.zeropoints, cutouts.pixel_scale, cutouts.bunit)
    for key, value in cutouts.summary.items():
        hdr[f"N{key[2:].upper()[:7]}" if key.startswith("n_") else key[:8].upper()] = (int(value), key)
    hdr["XCCONV"] = ("0-based, pixel centres at integers", "xc, yc")
    primary = fits.PrimaryHDU(data=np.asarray(cutouts.cube, dtype=np.float32), header=hdr)
    hdul = fits.HDUList([primary, dataframe_to_hdu(cutouts.table, "CATALOG"),
                         dataframe_to_hdu(cutouts.rejected, "REJECTED")])
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True)


#: stamps listed by name in a message about bad pixels
MAX_LISTED_STAMPS = 5


def nonfinite_stamps(cube: np.ndarray) -> str:
    """Where a stamp cube has NaN or infinite pixels, in words (``""`` when it has none): the first stamp
    indexes (axis 0) and their count, for error messages that say which stamps to look at."""
    arr = np.asarray(cube)
    if arr.ndim < 3 or np.isfinite(arr).all():
        return ""
    bad = np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))
    listed = ", ".join(str(i) for i in bad[:MAX_LISTED_STAMPS]) + (", ..." if len(bad) > MAX_LISTED_STAMPS else "")
    return f"{len(bad)} of {arr.shape[0]} stamps have NaN or infinite pixels (stamps {listed})"


def read_cutouts(path: str | Path) -> CutoutSet:
    """Read a file written by :func:`write_cutouts`; raise :class:`BoundaryError` with one line if it is bad."""
    path = Path(path)
    if not path.exists():
        raise BoundaryError(f"{path}: file not found")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdr = hdul[0].header
            cube = np.asarray(hdul[0].data, dtype=np.float32)
            table = hdu_to_dataframe(hdul["CATALOG"])
            rejected = hdu_to_dataframe(hdul["REJECTED"]) if "REJECTED" in hdul else None
            bands, zps, scale, bunit = parse_stamp_header(hdr)
            summary = {f"n_{name}": int(hdr[f"N{name.upper()[:7]}"]) for name in
                       ("input", "kept", *FLAG_NAMES.values()) if f"N{name.upper()[:7]}" in hdr}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise BoundaryError(f"{path}: not a readable cutout file ({type(exc).__name__}: {exc})") from None
    if cube.ndim != 4:
        raise BoundaryError(f"{path}: the cutout cube must be 4-D (N, bands, y, x), got shape {cube.shape}")
    if bad := nonfinite_stamps(cube):
        raise BoundaryError(f"{path}: {bad}; remake it (its rule drops such cutouts)")
    kwargs = {} if rejected is None else {"rejected": rejected}
    return CutoutSet(cube=cube, bands=bands, table=table, pixel_scale=scale, zeropoints=zps, bunit=bunit,
                     summary=summary, **kwargs)
