"""The data boundary: per-band FITS mosaics with a celestial WCS, rms maps and a source catalogue.

Real downloads (after normalisation) and the embedded simulator both write these files through this module,
and every study reads them through it, so nothing downstream knows which produced them.

Layout under ``data_dir``::

    {survey}/{field}/{band}.fits        float32 image in native units; TELESCOP INSTRUME FILTER BUNIT PHOTZP
    {survey}/{field}/{band}.rms.fits    float32 1-sigma noise map, same grid
    {survey}/{field}/catalog.parquet    id ra dec flux_{band} mag_{band} z fwhm star (+ truth_* when simulated)

Every file is written to a temporary name and renamed into place, so a crash never leaves a partial file under
a final name. Every file carries provenance (pipeline version, config hash, seed).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from workflow_scripts import __version__
from workflow_scripts.errors import BoundaryError

REQUIRED_HEADER_KEYS = ("TELESCOP", "INSTRUME", "FILTER", "BUNIT", "PHOTZP")
REQUIRED_CATALOG_COLUMNS = ("id", "ra", "dec", "star")
PROVENANCE_KEYS = {"pipeline_version": "PIPEVER", "config_hash": "CFGHASH", "seed": "SEED", "source": "DATASRC"}


# ----------------------------------------------------------------------------------------------- paths
def band_path(data_dir: str | Path, survey: str, field: str, band: str) -> Path:
    return Path(data_dir) / survey / field / f"{band}.fits"


def rms_path(data_dir: str | Path, survey: str, field: str, band: str) -> Path:
    return Path(data_dir) / survey / field / f"{band}.rms.fits"


def catalog_path(data_dir: str | Path, survey: str, field: str) -> Path:
    return Path(data_dir) / survey / field / "catalog.parquet"


# ------------------------------------------------------------------------------------------ provenance
def provenance(config_hash: str, seed: int | None, source: str) -> dict[str, Any]:
    """Provenance recorded in every boundary and results file."""
    return {"pipeline_version": __version__, "config_hash": config_hash, "seed": seed, "source": source}


def provenance_header(prov: Mapping[str, Any]) -> fits.Header:
    hdr = fits.Header()
    for key, card in PROVENANCE_KEYS.items():
        if key in prov and prov[key] is not None:
            hdr[card] = (prov[key], f"provenance: {key}")
    return hdr


# ---------------------------------------------------------------------------------------- atomic write
def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; outputs are shared like any file we create
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# -------------------------------------------------------------------------------------------- mosaics
@dataclass
class Mosaic:
    """One band of one field: image, noise map and the header facts downstream code needs."""

    data: np.ndarray
    wcs: WCS
    header: fits.Header
    rms: np.ndarray | None = None

    @property
    def band(self) -> str:
        return str(self.header["FILTER"])

    @property
    def zeropoint(self) -> float:
        return float(self.header["PHOTZP"])

    @property
    def pixel_scale(self) -> float:
        """arcsec per pixel from the WCS."""
        return float(np.sqrt(abs(np.linalg.det(self.wcs.celestial.pixel_scale_matrix))) * 3600.0)


def write_mosaic(
    path: str | Path,
    data: np.ndarray,
    wcs: WCS,
    *,
    telescope: str,
    instrument: str,
    band: str,
    bunit: str,
    zeropoint: float,
    prov: Mapping[str, Any],
    rms: np.ndarray | None = None,
    rms_file: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a boundary mosaic (and its rms map) atomically, with the required keys and provenance."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise BoundaryError(f"{path}: a mosaic must be 2-D, got shape {data.shape}")
    if not wcs.has_celestial:
        raise BoundaryError(f"{path}: the WCS has no celestial axes")
    hdr = wcs.to_header(relax=True)
    hdr["TELESCOP"] = telescope
    hdr["INSTRUME"] = instrument
    hdr["FILTER"] = band
    hdr["BUNIT"] = bunit
    hdr["PHOTZP"] = (float(zeropoint), "AB mag of one image unit")
    hdr.update(provenance_header(prov))
    for key, value in (extra or {}).items():
        hdr[key] = value
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data=data, header=hdr).writeto(tmp, overwrite=True)
    if rms is not None:
        if rms.shape != data.shape:
            raise BoundaryError(f"{path}: rms map shape {rms.shape} differs from image shape {data.shape}")
        rms_hdr = hdr.copy()
        rms_hdr["EXTNAME"] = "RMS"
        with atomic_path(rms_file or str(path).replace(".fits", ".rms.fits")) as tmp:
            fits.PrimaryHDU(data=np.asarray(rms, dtype=np.float32), header=rms_hdr).writeto(tmp, overwrite=True)


def _open_image(path: Path) -> tuple[np.ndarray, fits.Header]:
    if not path.exists():
        raise BoundaryError(f"{path}: file not found")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if getattr(h, "data", None) is not None and h.data.ndim == 2), None)
            if hdu is None:
                raise BoundaryError(f"{path}: no 2-D image in any HDU")
            data = np.asarray(hdu.data, dtype=np.float32)
            header = hdu.header.copy()
    except BoundaryError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise BoundaryError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc}); "
                            "it may be truncated, delete it and rerun") from None
    return data, header


def read_mosaic(path: str | Path, rms_file: str | Path | None = None, *, with_rms: bool = True) -> Mosaic:
    """Read and validate a boundary mosaic; raise :class:`BoundaryError` with one clear line if it is bad."""
    path = Path(path)
    data, header = _open_image(path)
    missing = [k for k in REQUIRED_HEADER_KEYS if k not in header]
    if missing:
        raise BoundaryError(f"{path}: header lacks {', '.join(missing)} (not a pipeline boundary mosaic)")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial or not wcs.wcs.ctype[0]:
        raise BoundaryError(f"{path}: no valid celestial WCS (CTYPE/CRVAL/CD keywords missing)")
    if not np.isfinite(data).any():
        raise BoundaryError(f"{path}: every pixel is NaN or infinite (band {header.get('FILTER')})")
    rms = None
    if with_rms:
        rpath = Path(rms_file) if rms_file else path.with_name(path.name.replace(".fits", ".rms.fits"))
        rms, _ = _open_image(rpath)
        if rms.shape != data.shape:
            raise BoundaryError(f"{rpath}: rms map shape {rms.shape} differs from image {data.shape}")
    return Mosaic(data=data, wcs=wcs, header=header, rms=rms)


# ------------------------------------------------------------------------------------------ catalogues
def write_catalog(path: str | Path, catalog: pd.DataFrame, prov: Mapping[str, Any]) -> None:
    """Write a boundary catalogue (Parquet) atomically, with provenance in the file metadata."""
    missing = [c for c in REQUIRED_CATALOG_COLUMNS if c not in catalog.columns]
    if missing:
        raise BoundaryError(f"{path}: catalogue lacks columns {', '.join(missing)}")
    if len(catalog) == 0:
        raise BoundaryError(f"{path}: refusing to write an empty catalogue")
    table = pa.Table.from_pandas(catalog.reset_index(drop=True), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"genastro.provenance"] = json.dumps(dict(prov), default=str).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_catalog(path: str | Path) -> pd.DataFrame:
    """Read and validate a boundary catalogue."""
    path = Path(path)
    if not path.exists():
        raise BoundaryError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise BoundaryError(f"{path}: not a readable Parquet file ({exc})") from None
    df = table.to_pandas()
    missing = [c for c in REQUIRED_CATALOG_COLUMNS if c not in df.columns]
    if missing:
        raise BoundaryError(f"{path}: catalogue lacks columns {', '.join(missing)}")
    if len(df) == 0:
        raise BoundaryError(f"{path}: the catalogue is empty")
    return df


def read_provenance(path: str | Path) -> dict[str, Any]:
    """Provenance of a boundary FITS or Parquet file."""
    path = Path(path)
    if path.suffix == ".parquet":
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(b"genastro.provenance", b"{}"))
    header = fits.getheader(path)
    return {key: header.get(card) for key, card in PROVENANCE_KEYS.items()}


def parse_lineage(config_hash: Any) -> dict[str, str]:
    """``"goodss=1a2b;hsc=5e6f"`` (:func:`workflow_scripts.config.lineage_hash`) -> ``{"goodss": "1a2b", ...}``;
    anything else (no provenance, an older whole-config hash) -> ``{}``."""
    if not isinstance(config_hash, str) or "=" not in config_hash:
        return {}
    return dict(part.split("=", 1) for part in config_hash.split(";") if "=" in part)


#: files whose provenance :func:`check_lineage` reads (FITS headers, Parquet metadata)
LINEAGE_SUFFIXES = (".fits", ".parquet")


def check_lineage(paths: Iterable[str | Path], expected: Mapping[str, Any] | None = None,
                  what: str = "this job's config") -> None:
    """Refuse inputs that descend from different runs: two files (or a file and ``expected``, the job's own
    ``{"seed", "config_hash"}``) that carry different SEEDs, or different hashes for the same survey.

    One :class:`BoundaryError` line naming both files. Files without provenance (JSON, checkpoints) are skipped.
    """
    seen: list[tuple[str, Any, dict[str, str]]] = []
    if expected is not None:
        seen.append((what, expected.get("seed"), parse_lineage(expected.get("config_hash"))))
    for path in paths:
        path = Path(path)
        if path.suffix not in LINEAGE_SUFFIXES or not path.is_file():
            continue
        try:
            prov = read_provenance(path)
        except (OSError, ValueError):
            continue  # unreadable files are the reader's business, with its own error
        if not prov.get("config_hash"):
            continue
        current = (str(path), prov.get("seed"), parse_lineage(prov.get("config_hash")))
        for name, seed, lineage in seen:
            if seed is not None and current[1] is not None and int(seed) != int(current[1]):
                raise BoundaryError(f"{current[0]} has SEED={current[1]} but {name} has SEED={seed}: they come from "
                                    "different runs; rerun the workflow so that both are remade")
            for survey in lineage.keys() & current[2].keys():
                if lineage[survey] != current[2][survey]:
                    raise BoundaryError(f"{current[0]} descends from survey {survey} {current[2][survey]} but {name} "
                                        f"from {lineage[survey]} (CFGHASH): they come from different configurations;"
                                        " rerun the workflow so that both are remade")
        seen.append(current)
