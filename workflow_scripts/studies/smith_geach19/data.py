"""Training data of the deep-field study (Smith & Geach 2019, and the authors' preprocessing).

* :func:`preprocess`: the mosaics of the three bands stacked, optionally rotated (the real XDF by 43.25 deg) and
  cropped to a box (``[2080:5320]^2`` on the real XDF) to drop the empty border; each band clipped at its
  ``clip_percentile`` (99.99) and min-max normalised to [0, 1]. The :class:`Normalisation` is stored with the
  training field and the model, so generated images come back in the survey's units and zeropoints.
* :class:`CropDataset`: ``n_crops`` crops of ``crop_size`` pixels at positions and flips fixed by the seed, item
  ``i`` always the same array: with the loop's per-epoch shuffle, training and its resume are repeatable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.io import fits
from scipy import ndimage
from torch.utils.data import Dataset

from workflow_scripts.errors import StudyError


@dataclass(frozen=True)
class Normalisation:
    """Per-band ``x_norm = (clip(x, lo, hi) - lo) / (hi - lo)``; :meth:`inverse` maps [0, 1] back to the unit."""

    bands: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def forward(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self._arrays(x.ndim)
        return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        lo, hi = self._arrays(y.ndim)
        return (np.asarray(y, np.float64) * (hi - lo) + lo).astype(np.float32)

    def _arrays(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(self.bands),) + (1,) * 2
        lo, hi = np.asarray(self.lo).reshape(shape), np.asarray(self.hi).reshape(shape)
        if ndim == 4:
            lo, hi = lo[None], hi[None]
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        return {"bands": list(self.bands), "lo": list(self.lo), "hi": list(self.hi)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalisation:
        return cls(tuple(d["bands"]), tuple(float(v) for v in d["lo"]), tuple(float(v) for v in d["hi"]))


def read_real_field(path: str | Path, meta: Mapping[str, Any]) -> np.ndarray:
    """The training field written by the prepare rule, back in the survey's units: the real field as the generator
    was taught it (clipped at the normalisation's bounds); ``meta`` is the field's JSON (its ``normalisation``)."""
    return Normalisation.from_dict(meta["normalisation"]).inverse(np.asarray(fits.getdata(path), np.float32))


def preprocess(images: Sequence[np.ndarray], bands: Sequence[str], *, rotate_deg: float = 0.0,
               crop: Sequence[int] | None = None, clip_percentile: float = 99.99) -> tuple[np.ndarray, Normalisation]:
    """(3, H, W) float32 field in [0, 1] and its normalisation (see the module docstring). NaN pixels (no data)
    are refused: crop them away with ``crop``."""
    cube = np.stack([np.asarray(im, np.float32) for im in images])
    if rotate_deg:
        cube = np.stack([ndimage.rotate(b, rotate_deg, reshape=False, order=1, cval=0.0) for b in cube])
    if crop is not None:
        y0, y1 = int(crop[0]), int(crop[1])
        cube = cube[:, y0:y1, y0:y1]
    if cube.size == 0:
        raise StudyError(f"the crop {crop} leaves no pixels of the {images[0].shape} mosaics")
    if not np.isfinite(cube).all():
        raise StudyError(f"{int((~np.isfinite(cube)).sum())} pixels of the training field are NaN/inf: choose a "
                         "crop inside the coverage")
    lo = tuple(float(np.min(b)) for b in cube)
    hi = tuple(float(np.percentile(b, clip_percentile)) for b in cube)
    if any(h <= lo_ for lo_, h in zip(lo, hi)):
        raise StudyError("a band of the training field is constant: nothing to learn")
    norm = Normalisation(tuple(bands), lo, hi)
    return norm.forward(cube), norm


class CropDataset(Dataset):
    """``n_crops`` square crops (``crop_size``) of a (C, H, W) field with random flips, fixed by ``seed``."""

    def __init__(self, field: np.ndarray, crop_size: int, n_crops: int, seed: int) -> None:
        c, h, w = field.shape
        if crop_size > min(h, w):
            raise StudyError(f"crop_size {crop_size} is larger than the training field ({h} x {w})")
        self.field = torch.from_numpy(np.ascontiguousarray(field, np.float32))
        rng = np.random.default_rng(seed)
        self.y0 = rng.integers(0, h - crop_size + 1, n_crops)
        self.x0 = rng.integers(0, w - crop_size + 1, n_crops)
        self.flip = rng.integers(0, 4, n_crops)  # bit 0: flip x, bit 1: flip y
        self.size, self.seed = int(crop_size), int(seed)

    def __len__(self) -> int:
        return len(self.y0)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = self.size
        crop = self.field[:, self.y0[i]:self.y0[i] + s, self.x0[i]:self.x0[i] + s]
        dims = [d for bit, d in ((1, 2), (2, 1)) if self.flip[i] & bit]
        return torch.flip(crop, dims) if dims else crop.clone()

    def fingerprint(self) -> dict[str, Any]:
        return {"crop_size": self.size, "n_crops": len(self), "seed": self.seed,
                "field_shape": list(self.field.shape), "field_sum": float(self.field.double().sum())}


__all__ = ["CropDataset", "Normalisation", "preprocess", "read_real_field"]
