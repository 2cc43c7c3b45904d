"""Likelihood ratios, where they come from in a stamp, how well they separate data sets, and the matched-bin
comparison of data sets.

* **LLR** per pixel: ``log p_real(x_i | x_<i) - log p_bg(x_i | x_<i)`` with the archetype model (the paper) or
  Ren et al.'s perturbation model as the background ``bg``; per image: the sum over pixels.
* **Source and background pixels** of a stamp: pixels of the zoomed stamp whose 3 x 3 mean exceeds
  ``nsigma`` x its noise, in connected groups of ``minarea`` or more, grown by ``grow`` pixels, are source
  pixels; the rest is background. The noise is the stamp's own (:func:`stamp_noise`: MAD of its border ring).
  scipy.ndimage on the whole cube at once: a segmentation call per 32^2 stamp would cost more than the scoring.
* **Background share** of a stamp: ``sum_bg |LLR_i| / sum_all |LLR_i|``; for comparison the same share of the raw
  ``|log p_i|`` and the share of pixels that are background.
* **AUC** (scikit-learn ``roc_auc_score``) of flagging a set as out-of-distribution against the held-out real
  galaxies: score ``-LLR`` (a set lacking fine detail has less of what the real model adds to the archetype one)
  and, as the baseline, ``-log p_real`` (the usual likelihood test; 0.5 is chance, < 0.5 means the set looks
  *more* likely, as in Nalisnick et al. 2019 and Ren et al.'s Fashion-MNIST vs MNIST AUROC ~0.1).
* **Matched bins** (the paper's Fig. 6 with TNG against SDSS): the mean LLR of each set in bins of one property
  (magnitude, Sersic half-light radius, Sersic n), the difference and its bootstrap standard error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from workflow_scripts.metrics import roc_auc

#: noise of a 3x3 mean, in units of the pixel noise (independent pixels); block averaging keeps them independent
MEAN3_NOISE = 1.0 / 3.0
#: MAD -> Gaussian sigma
MAD_SIGMA = 1.4826


def llr_maps(logp_real: np.ndarray, logp_background: np.ndarray) -> np.ndarray:
    """Per-pixel log-likelihood ratio (nats) of two ``(N, H, W)`` per-pixel log-likelihood cubes."""
    if logp_real.shape != logp_background.shape:
        raise ValueError(f"llr_maps: shapes differ, {logp_real.shape} and {logp_background.shape}")
    return (np.asarray(logp_real, np.float64) - np.asarray(logp_background, np.float64)).astype(np.float32)


def stamp_noise(cube: np.ndarray) -> np.ndarray:
    """Robust noise of each stamp ``(N, H, W)``: MAD of the border ring (``H // 8`` pixels wide, at least 2), where
    the centred galaxy contributes least, after clipping its pixels above the ring's median + 3 MAD."""
    arr = np.asarray(cube, np.float64)
    w = max(2, arr.shape[-1] // 8)
    ring = np.ones(arr.shape[-2:], bool)
    ring[w:-w, w:-w] = False
    flat = arr[:, ring]
    med = np.median(flat, axis=1, keepdims=True)
    mad = np.median(np.abs(flat - med), axis=1, keepdims=True)
    clipped = np.where(flat < med + 3 * MAD_SIGMA * mad, flat, np.nan)
    med2 = np.nanmedian(clipped, axis=1, keepdims=True)
    return (MAD_SIGMA * np.nanmedian(np.abs(clipped - med2), axis=1)).astype(np.float64)


def source_masks(cube: np.ndarray, *, nsigma: float = 1.5, minarea: int = 4, grow: int = 1) -> np.ndarray:
    """Boolean ``(N, H, W)``: source pixels of each stamp (see the module docstring)."""
    arr = np.asarray(cube, np.float64)
    if arr.ndim == 4:
        arr = arr[:, 0]
    sigma = stamp_noise(arr)
    smooth = ndimage.uniform_filter(arr, size=(1, 3, 3), mode="nearest")
    above = smooth > (nsigma * MEAN3_NOISE * np.maximum(sigma, 1e-30))[:, None, None]
    out = np.zeros_like(above)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # connectivity within each stamp only
    labels, n = ndimage.label(above, structure=structure)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= int(minarea)
        keep[0] = False
        out = keep[labels]
    if grow > 0:
        out = ndimage.binary_dilation(out, structure=structure, iterations=int(grow))
    return out


def background_share(values: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per stamp: the share of ``sum |values|`` in the background pixels."""
    a = np.abs(np.asarray(values, np.float64))
    total = a.reshape(len(a), -1).sum(1)
    bg = (a * background).reshape(len(a), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, bg / total, np.nan)


def ood_auc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """AUC of flagging ``out`` against ``in`` with a score that is higher for out-of-distribution images."""
    return roc_auc(out_scores, in_scores)


def bootstrap_mean_difference(a: np.ndarray, b: np.ndarray, n_boot: int,
                              rng: np.random.Generator) -> tuple[float, float]:
    """``mean(a) - mean(b)`` and its bootstrap standard error (``n_boot`` resamples of each set)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return float("nan"), float("nan")
    d = float(a.mean() - b.mean())
    if n_boot < 2 or (len(a) < 2 and len(b) < 2):
        return d, float("nan")
    ia = rng.integers(0, len(a), size=(n_boot, len(a)))
    ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    return d, float(np.std(a[ia].mean(1) - b[ib].mean(1), ddof=1))


def matched_bins(reference: pd.DataFrame, other: pd.DataFrame, value: str, bins: Mapping[str, Sequence[float]],
                 *, n_boot: int, seed: int, min_count: int = 3) -> pd.DataFrame:
    """Mean ``value`` of each set, their difference (reference - other) and its bootstrap error, in bins of each
    property of ``bins`` (column -> edges). Bins with fewer than ``min_count`` members in a set get NaN."""
    rng = np.random.default_rng(int(seed))
    rows: list[dict[str, Any]] = []
    for prop, edges in bins.items():
        e = np.asarray(edges, float)
        ra, oa = reference[prop].to_numpy(float), other[prop].to_numpy(float)
        for lo, hi in zip(e[:-1], e[1:]):
            a = reference[value].to_numpy(float)[(ra >= lo) & (ra < hi)]
            b = other[value].to_numpy(float)[(oa >= lo) & (oa < hi)]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            ok = len(a) >= min_count and len(b) >= min_count
            d, err = bootstrap_mean_difference(a, b, n_boot, rng) if ok else (float("nan"), float("nan"))
            rows.append({"property": prop, "lo": float(lo), "hi": float(hi), "n_reference": len(a),
                         "n_other": len(b), "mean_reference": float(a.mean()) if len(a) else float("nan"),
                         "mean_other": float(b.mean()) if len(b) else float("nan"), "difference": d, "error": err})
    return pd.DataFrame(rows)


__all__ = ["background_share", "bootstrap_mean_difference", "llr_maps", "matched_bins", "ood_auc",
           "source_masks", "stamp_noise"]
