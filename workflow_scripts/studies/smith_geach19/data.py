"""Training data of the deep-field study (Smith & Geach 2019, and the authors' preprocessing).

* :func:`preprocess`: the mosaics of the three bands stacked, optionally rotated (the real XDF by 43.25 deg) and
  cropped to a box (``[2080:5320]^2`` on the real XDF) to drop the empty border; each band clipped at its
  ``clip_percentile`` (99.99) and min-max normalised to [0, 1]. The :class:`Normalisation` is stored with the
  training field and the model, so generated images come back in the survey's units and zeropoints.
* ``stretch`` (ours, beyond the paper): ``linear`` is the paper's min-max. It leaves the sky at ~0.005 with a noise
  of ~0.0013, where the generator's sigmoid has a slope of ~0.005, so the generator's gradients are ~50x smaller
  than at mid-range and nearly every pixel it must learn sits there. ``asinh`` first maps each band to
  ``asinh((x - sky) / (softening * noise))`` (sky: the band's median; noise: 1.4826 x its MAD), then min-max
  normalises that: the sky lands at ~0.2, its noise spans a visible range and the sources keep their order.
  The map is exact both ways (:meth:`Normalisation.inverse`), so generated fields still come back in the
  survey's units.
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


#: the stretches of :func:`preprocess` (see the module docstring)
STRETCHES = ("linear", "asinh")


@dataclass(frozen=True)
class Normalisation:
    """Per-band ``x_norm = (s(clip(x, lo, hi)) - s(lo)) / (s(hi) - s(lo))`` with ``s`` the identity (``linear``) or
    ``asinh((x - sky) / soft)`` (``asinh``); :meth:`inverse` maps [0, 1] back to the unit."""

    bands: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    stretch: str = "linear"
    sky: tuple[float, ...] | None = None
    soft: tuple[float, ...] | None = None

    def forward(self, x: np.ndarray, clip: bool = True) -> np.ndarray:
        """(C, H, W) or (N, C, H, W) in the survey's unit to the training scale (``clip``: to [lo, hi] first)."""
        lo, hi, sky, soft = self._arrays(x.ndim)
        s_lo, s_hi = self._s(lo, sky, soft), self._s(hi, sky, soft)
        x = np.clip(x, lo, hi) if clip else x
        return ((self._s(x, sky, soft) - s_lo) / (s_hi - s_lo)).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """(C, H, W) or (N, C, H, W) on the training scale back to the survey's unit."""
        lo, hi, sky, soft = self._arrays(y.ndim)
        s_lo, s_hi = self._s(lo, sky, soft), self._s(hi, sky, soft)
        s = np.asarray(y, np.float64) * (s_hi - s_lo) + s_lo
        return (s if self.stretch == "linear" else sky + soft * np.sinh(s)).astype(np.float32)

    def inverse_band(self, band: int, tile: np.ndarray) -> np.ndarray:
        """One band's (H, W) tile on the training scale back to the survey's unit."""
        one = Normalisation((self.bands[band],), (self.lo[band],), (self.hi[band],), self.stretch,
                            None if self.sky is None else (self.sky[band],),
                            None if self.soft is None else (self.soft[band],))
        return one.inverse(np.asarray(tile)[None])[0]

    def _s(self, x: Any, sky: np.ndarray, soft: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x if self.stretch == "linear" else np.arcsinh((x - sky) / soft)

    def _arrays(self, ndim: int) -> tuple[np.ndarray, ...]:
        shape = (len(self.bands),) + (1,) * 2
        n = len(self.bands)
        out = [np.asarray(v if v is not None else [0.0] * n, np.float64).reshape(shape)
               for v in (self.lo, self.hi, self.sky, self.soft if self.soft is not None else [1.0] * n)]
        return tuple(a[None] for a in out) if ndim == 4 else tuple(out)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"bands": list(self.bands), "lo": list(self.lo), "hi": list(self.hi),
                             "stretch": self.stretch}
        if self.stretch != "linear":
            d.update(sky=list(self.sky or ()), soft=list(self.soft or ()))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalisation:
        def floats(key: str) -> tuple[float, ...] | None:
            return tuple(float(v) for v in d[key]) if d.get(key) is not None else None

        return cls(tuple(d["bands"]), floats("lo") or (), floats("hi") or (), str(d.get("stretch", "linear")),
                   floats("sky"), floats("soft"))


def read_real_field(path: str | Path, meta: Mapping[str, Any]) -> np.ndarray:
    """The training field written by the prepare rule, back in the survey's units: the real field as the generator
    was taught it (clipped at the normalisation's bounds); ``meta`` is the field's JSON (its ``normalisation``)."""
    return Normalisation.from_dict(meta["normalisation"]).inverse(np.asarray(fits.getdata(path), np.float32))


def preprocess(images: Sequence[np.ndarray], bands: Sequence[str], *, rotate_deg: float = 0.0,
               crop: Sequence[int] | None = None, clip_percentile: float = 99.99, stretch: str = "linear",
               softening: float = 1.0) -> tuple[np.ndarray, Normalisation]:
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
    if stretch not in STRETCHES:
        raise StudyError(f"unknown stretch {stretch!r}: one of {', '.join(STRETCHES)}")
    sky = soft = None
    if stretch == "asinh":
        sky = tuple(float(np.median(b)) for b in cube)
        noise = [1.4826 * float(np.median(np.abs(b - m))) for b, m in zip(cube, sky)]
        if not all(v > 0 for v in noise) or softening <= 0:
            raise StudyError("asinh stretch: a band has no measurable sky noise (MAD 0) or softening <= 0")
        soft = tuple(softening * v for v in noise)
    norm = Normalisation(tuple(bands), lo, hi, stretch, sky, soft)
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


__all__ = ["STRETCHES", "CropDataset", "Normalisation", "preprocess", "read_real_field"]
