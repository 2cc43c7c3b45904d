"""Galaxy stamps of the likelihood-ratio study: selection from the boundary catalogue, background-subtracted
cutouts of one band, the held-out split by position, the zoom, and the one invertible scaling into the PixelCNN's
quantised [-1, 1] pixels.

* **Selection**: catalogue galaxies (``star`` false where the column exists) with a finite ``mag_{band}`` in
  ``[mag_min, mag_max)``; nothing else is read from the catalogue, so a downloaded catalogue works alike.
* **Cutouts**: ``size`` x ``size`` native pixels around each galaxy (:func:`~workflow_scripts.imaging.stamps.
  extract_cutouts`: cutouts off the mosaic or with no-data pixels are dropped and counted), from the mosaic minus
  its sep background (real mosaics keep a residual sky; the embedded ones have none and lose nothing).
* **Split**: the ``validation_fraction`` of galaxies furthest north are held out, a cutout's width from the
  training ones (:func:`~workflow_scripts.imaging.split.split_by_declination`); the dividing declination is
  returned so that a comparison set of the same sky (the clump-free twin) is split at the same place.
* **Zoom**: block averages of ``1 / zoom`` x ``1 / zoom`` pixels (the paper's 64^2 -> 32^2 with ``zoom`` 0.5;
  flux-conserving where scipy's spline zoom of the authors' code is not: a block mean has no ringing).
* **Scaling**: ``asinh(x / softening) / scale`` (:class:`~workflow_scripts.imaging.scaling.AsinhScaling`, softening
  3 x the noise, scale set by the brightest training pixel), clipped to [-1, 1] and quantised to ``2**bits``
  levels (:func:`~workflow_scripts.models.pixelcnn.quantize`). One scaling, fitted on the real training stamps,
  maps every set (real, archetypes, twin), so their likelihoods are densities of the same variable. The authors'
  code: ``clip(asinh(counts / 1000), max 1)`` on SDSS counts, a continuous Gaussian likelihood.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from astropy.io import fits

from workflow_scripts.detection.sources import measure_background
from workflow_scripts.errors import PipelineError
from workflow_scripts.imaging.augment import dihedral
from workflow_scripts.imaging.scaling import AsinhScaling
from workflow_scripts.imaging.split import cutout_gap_arcsec
from workflow_scripts.imaging.stamps import CutoutSet, extract_cutouts
from workflow_scripts.io import Mosaic, atomic_path, provenance_header
from workflow_scripts.models.pixelcnn import n_levels, quantize

log = logging.getLogger(__name__)


class StampError(PipelineError):
    """Stamps of the likelihood-ratio study cannot be made from what was given."""


# -------------------------------------------------------------------------------------------- selection
def select_galaxies(catalog: pd.DataFrame, band: str, mag_max: float, mag_min: float = -np.inf, *,
                    source: str = "catalogue") -> pd.DataFrame:
    """Galaxies (not stars) with ``mag_min <= mag_{band} < mag_max``; ``source`` names the file in errors."""
    col = f"mag_{band}"
    missing = [c for c in ("id", "ra", "dec", col) if c not in catalog.columns]
    if missing:
        raise StampError(f"{source}: the catalogue lacks columns {', '.join(missing)}")
    mag = catalog[col].to_numpy(float)
    keep = np.isfinite(mag) & (mag < mag_max) & (mag >= mag_min)
    if "star" in catalog.columns:
        keep &= ~catalog["star"].to_numpy(bool)
    out = catalog.loc[keep].reset_index(drop=True)
    if out.empty:
        raise StampError(f"{source}: no galaxy with {mag_min:g} <= {col} < {mag_max:g} (of {len(catalog)} rows)")
    return out


def subtract_background(mosaic: Mosaic, box: int = 64, filter_size: int = 3) -> Mosaic:
    """The mosaic minus its sep background map (a copy; no-data pixels stay as they were)."""
    bkg = measure_background(mosaic.data, mosaic.rms, box=box, filter_size=filter_size)
    data = np.asarray(mosaic.data, dtype=np.float32) - bkg.level.astype(np.float32)
    return Mosaic(data=data, wcs=mosaic.wcs, header=mosaic.header, rms=mosaic.rms)


def galaxy_stamps(mosaic: Mosaic, band: str, catalog: pd.DataFrame, size: int, *, source: str = "mosaic",
                  progress: bool = False) -> CutoutSet:
    """``size`` x ``size`` cutouts of one band around the catalogue's galaxies (one-band :class:`CutoutSet`)."""
    cs = extract_cutouts({band: mosaic}, catalog, size, progress=progress)
    if cs.n == 0:
        raise StampError(f"{source}: none of the {len(catalog)} selected galaxies has a whole {size} px "
                         f"stamp on the mosaic ({cs.summary})")
    return cs


# ---------------------------------------------------------------------------------------------- split
def dividing_declination(dec: np.ndarray, validation_fraction: float) -> float:
    """The declination north of which the ``validation_fraction`` of galaxies lie."""
    if not 0.0 < validation_fraction < 1.0:
        raise StampError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    return float(np.quantile(np.asarray(dec, float), 1.0 - validation_fraction))


def split_regions(table: pd.DataFrame, dec_split: float, gap_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (training: south of ``dec_split - gap/2``; held out: north of ``dec_split + gap/2``)."""
    dec = table["dec"].to_numpy(float)
    half = 0.5 * gap_arcsec / 3600.0
    return dec < dec_split - half, dec > dec_split + half


def stamp_gap_arcsec(size: int, pixel_scale: float, wcs: Any = None) -> float:
    """Declination gap keeping training and held-out stamps from sharing pixels."""
    return cutout_gap_arcsec(size, pixel_scale, wcs)


def subset(cs: CutoutSet, mask: np.ndarray) -> CutoutSet:
    """The stamps of ``cs`` where ``mask`` is true (a new :class:`CutoutSet`)."""
    idx = np.flatnonzero(mask)
    return CutoutSet(cube=np.ascontiguousarray(cs.cube[idx]), bands=list(cs.bands),
                     table=cs.table.iloc[idx].reset_index(drop=True), pixel_scale=cs.pixel_scale,
                     zeropoints=list(cs.zeropoints), bunit=cs.bunit, summary={"n_kept": int(idx.size)})


# ------------------------------------------------------------------------------------------ zoom, scale
def zoom_factor(zoom: float) -> int:
    """Block size of a zoom: ``zoom`` must be 1 / k for an integer k >= 1."""
    k = 1.0 / float(zoom)
    if not (zoom > 0 and abs(k - round(k)) < 1e-9 and round(k) >= 1):
        raise StampError(f"zoom must be 1/k for an integer k (1, 0.5, 0.25 ...), got {zoom}")
    return int(round(k))


def zoom(cube: np.ndarray, factor: float) -> np.ndarray:
    """Block means of ``1/factor`` x ``1/factor`` pixels over the last two axes (sides must divide)."""
    k = zoom_factor(factor)
    arr = np.asarray(cube, dtype=np.float32)
    if k == 1:
        return arr
    h, w = arr.shape[-2:]
    if h % k or w % k:
        raise StampError(f"zoom {factor}: the stamp side {h} x {w} is not a multiple of {k}")
    return arr.reshape(*arr.shape[:-2], h // k, k, w // k, k).mean(axis=(-3, -1), dtype=np.float64).astype(
        np.float32)


@dataclass(frozen=True)
class StampScaling:
    """Native stamps -> the model's quantised pixels: zoom, asinh stretch, clip to [-1, 1], quantise."""

    asinh: AsinhScaling
    zoom: float
    bits: int

    @classmethod
    def fit(cls, cube: np.ndarray, *, zoom_by: float, bits: int) -> "StampScaling":
        """Fit the stretch on zoomed stamps ``(N, 1, H, W)``, one softening and scale for all."""
        n_levels(bits)
        z = zoom(cube, zoom_by)
        return cls(asinh=AsinhScaling.fit(z, per_band=False), zoom=float(zoom_by), bits=int(bits))

    def to_model(self, cube: np.ndarray) -> np.ndarray:
        """float32 ``(N, 1, H * zoom, W * zoom)`` on the quantisation grid of ``bits``."""
        y = np.clip(self.asinh.forward(zoom(cube, self.zoom)), -1.0, 1.0).astype(np.float32)
        return quantize(torch.from_numpy(y), self.bits).numpy()

    def to_physical(self, y: np.ndarray) -> np.ndarray:
        """Model pixels back to zoomed native units (exact below the clip)."""
        return self.asinh.inverse(np.asarray(y, dtype=np.float32))

    def to_dict(self) -> dict[str, Any]:
        return {"asinh": self.asinh.to_dict(), "zoom": self.zoom, "bits": self.bits}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StampScaling":
        return cls(asinh=AsinhScaling.from_dict(d["asinh"]), zoom=float(d["zoom"]), bits=int(d["bits"]))


def augment_dihedral(x: np.ndarray, copies: int) -> np.ndarray:
    """``copies`` (1-8) dihedral copies of every stamp (the paper: random rotations)."""
    if not 1 <= int(copies) <= 8:
        raise StampError(f"augment must lie in 1..8 (dihedral copies), got {copies}")
    return np.concatenate([dihedral(x, k) for k in range(int(copies))]).astype(np.float32)


def perturb(x: np.ndarray, mu: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Ren et al. 2019's background-model inputs: each pixel replaced, with probability ``mu``, by a level drawn
    uniformly from the ``2**bits`` quantisation levels."""
    if not 0.0 <= mu <= 1.0:
        raise StampError(f"perturbation rate mu must lie in [0, 1], got {mu}")
    top = n_levels(bits) - 1
    hit = rng.random(x.shape) < mu
    levels = rng.integers(0, top + 1, size=x.shape).astype(np.float32) * (2.0 / top) - 1.0
    return np.where(hit, levels, x).astype(np.float32)



# --------------------------------------------------------------------------------------------- blank sky
def write_sky(path: Any, sky: Mapping[str, np.ndarray], prov: Mapping[str, Any]) -> None:
    """Blank-sky cubes (one image HDU per part, e.g. TRAIN and TEST) with the provenance header."""
    hdus = [fits.PrimaryHDU(header=provenance_header(prov))]
    hdus += [fits.ImageHDU(np.asarray(v, np.float32), name=k.upper()) for k, v in sky.items()]
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def read_sky(path: Any, part: str) -> np.ndarray:
    """One part of a blank-sky file; errors name the file."""
    try:
        with fits.open(path, memmap=False) as hdul:
            cube = np.asarray(hdul[part.upper()].data, np.float32)
    except (OSError, KeyError) as exc:
        raise StampError(f"{path}: no readable blank-sky cube {part.upper()} ({type(exc).__name__}: {exc})") from None
    if cube.ndim != 3 or cube.shape[0] == 0:
        raise StampError(f"{path}: the blank-sky cube {part.upper()} is empty or not (N, H, W): {cube.shape}")
    if not np.isfinite(cube).all():
        raise StampError(f"{path}: the blank-sky cube {part.upper()} has NaN or infinite pixels")
    return cube


__all__ = ["StampError", "StampScaling", "augment_dihedral", "dividing_declination", "galaxy_stamps", "perturb",
           "read_sky", "select_galaxies", "split_regions", "stamp_gap_arcsec", "subset", "subtract_background",
           "write_sky", "zoom", "zoom_factor"]
