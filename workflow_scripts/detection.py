"""Peak detection, truth matching and detection metrics of the deblending study (Hemmati et al. 2022, sec. 3).

The authors' code convolves each image with the PSF and keeps the 3 x 3 local maxima above a threshold; a blend
counts as *detected* when both galaxies have a peak within a match radius. This module does the same, batched
over thousands of stamps, and adds the bookkeeping (optimal matching, outcomes, fractions with binomial
intervals, precision / recall against an isolated-galaxy control sample).

Coordinates
-----------
Pixel centres at integers, 0-based, positions as ``(x, y) = (column, row)``: the convention of
:mod:`workflow_scripts.blends` and :mod:`workflow_scripts.degrade`. Peaks found on hi-res and GAN images
(64 x 64, 0.06"/px) are compared with the hi-res truth columns ``x_1, y_1, x_2, y_2``; peaks on low-res images
(21 x 21, 0.18"/px) with ``xlo_1, ylo_1, xlo_2, ylo_2`` (:func:`truth_positions`). A match radius is always in
pixels of the image that was searched.

Detection (:func:`find_peaks`)
------------------------------
1. *Matched filter*: each image is cross-correlated with the PSF (for a point source in white noise the
   S/N-optimal linear filter; identical to the authors' convolution for a symmetric PSF), batched with
   :func:`scipy.signal.fftconvolve` (zero padding outside the stamp).
2. *Threshold in the filtered image's noise*: white noise of per-pixel sigma ``s`` becomes, after filtering with
   a PSF normalised to sum 1, noise of sigma ``s * sqrt(sum(psf**2))`` (:func:`filtered_noise_sigma`; exact for
   white noise away from the stamp edge, where the zero padding lowers it). The image is divided by that number
   (an S/N map) and the threshold is ``threshold_sigma`` in those units. For correlated noise (GAN outputs, or
   low-res noise added before rebinning) this formula is wrong: measure the std of the *filtered* noise
   instead and pass it with ``sigma_is_filtered=True``. The S/N map does not depend on the PSF's normalisation.
3. *Local maxima* with :func:`skimage.feature.peak_local_max` run once on the whole stack with a footprint of
   1 x (2 min_distance + 1)^2 (3 x 3 for ``min_distance=1``: the authors' neighbourhood), so neighbouring images
   never interact; exact ties within a footprint (flat plateaus) keep one pixel. Peaks within ``exclude_border``
   pixels of the edge are dropped (their neighbourhood is truncated).
4. Optional *sub-pixel refinement* (``refine=True``): a least-squares quadratic surface
   ``a + b u + c v + d u^2 + e u v + f v^2`` fitted to the 3 x 3 S/N values around each peak; its stationary point
   is the position when the surface is a maximum (negative-definite Hessian), otherwise each axis falls back to
   the 3-point parabola, or no shift where that is not concave either. Shifts are clipped to +-0.5 px (the peak
   pixel is the maximum of its neighbours, so the maximum lies within it to this order); peaks on the image
   edge are not shifted along that axis.

Matching (:func:`match_peaks`)
------------------------------
Optimal assignment (:func:`scipy.optimize.linear_sum_assignment`) on the peak-truth distance matrix, distances
beyond the radius replaced by a cost larger than any set of allowed pairs: the result has the largest possible
number of matches within the radius and, among those, the smallest total distance. A greedy nearest-neighbour
match can lose a pair when a peak between two galaxies is taken by the wrong one (tested).

Outcomes
--------
Blends (:func:`classify_blends`): ``both`` (both galaxies matched: the blend is detected), ``one``, ``none``;
extra peaks are counted as spurious but do not undo a detection. Isolated galaxies (:func:`classify_isolated`):
``none`` (no peak), ``single`` (one peak), ``multiple`` (more than one peak anywhere in the stamp: the galaxy
would be taken for a blend, a false positive), with ``matched`` saying whether a peak lies within the radius.

Match radius
------------
The authors' code used 5 px on the GAN (and hi-res) images and 10 px on the low-res ones
(:data:`MATCH_RADIUS_PX`). Note that these are not the same angle: 5 hi-res px = 0.3", 10 low-res px = 1.8"
(about half a 21-px stamp). :data:`MATCH_RADIUS_LOWRES_MATCHED_PX` (5/3 px = 0.3") is the radius that compares
like with like; which one is used is a configuration choice, always in pixels of the image searched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.fft import get_workers, set_workers
from scipy.optimize import linear_sum_assignment
from scipy.signal import fftconvolve
from scipy.stats import norm
from skimage.feature import peak_local_max

from .errors import PipelineError

log = logging.getLogger(__name__)

__all__ = [
    "DetectionError",
    "DEFAULT_THRESHOLD_SIGMA",
    "DEFAULT_MIN_DISTANCE",
    "DEFAULT_EXCLUDE_BORDER",
    "DEFAULT_BATCH",
    "DEFAULT_CONFIDENCE",
    "MATCH_RADIUS_PX",
    "MATCH_RADIUS_LOWRES_MATCHED_PX",
    "BLEND_OUTCOMES",
    "ISOLATED_OUTCOMES",
    "filtered_noise_sigma",
    "matched_filter",
    "estimate_noise_sigma",
    "find_peaks",
    "Matching",
    "match_peaks",
    "truth_positions",
    "classify_blends",
    "classify_isolated",
    "wilson_interval",
    "detection_fraction",
    "outcome_fractions",
    "precision_recall",
]

#: detection threshold in sigma of the filtered noise: a 5-sigma peak is ~3e-7 per pixel in Gaussian noise,
#: i.e. < 0.01 false peaks per 64 x 64 stamp (the authors' threshold is not stated; configurable)
DEFAULT_THRESHOLD_SIGMA = 5.0
#: half-size of the local-maximum neighbourhood: 1 gives the 3 x 3 maxima of the authors' code
DEFAULT_MIN_DISTANCE = 1
#: peaks closer than this to the edge are dropped: their 3 x 3 neighbourhood is truncated (skimage's default)
DEFAULT_EXCLUDE_BORDER = 1
#: images per FFT batch: 256 x (64 + 31)^2 complex128 ~ 20 MB per array, far below memory on any laptop
DEFAULT_BATCH = 256
#: confidence of the Wilson binomial intervals: 0.6827, the 1-sigma error bars of detection-fraction plots
DEFAULT_CONFIDENCE = 0.6827
#: match radius (pixels of the image searched) of the authors' code: 5 px on GAN / hi-res images, 10 px on
#: the low-res ones (REFERENCE.md)
MATCH_RADIUS_PX: Mapping[str, float] = {"hires": 5.0, "gan": 5.0, "lowres": 10.0}
#: the low-res radius with the same angle as 5 hi-res px (0.3"): 5 / 3 low-res px
MATCH_RADIUS_LOWRES_MATCHED_PX = 5.0 / 3.0
#: a PSF whose sum is at most this is refused (the matched filter would be meaningless)
MIN_PSF_SUM = 1e-12
#: largest sub-pixel shift of the quadratic refinement (the peak pixel is the maximum of its 3 x 3 neighbourhood)
MAX_REFINE_SHIFT = 0.5

BLEND_OUTCOMES = ("both", "one", "none")
ISOLATED_OUTCOMES = ("single", "multiple", "none")


class DetectionError(PipelineError):
    """Bad input to the detection or its metrics (empty or mis-shaped arrays, bad sigma, mismatched lengths)."""


# ---------------------------------------------------------------------------------------------- inputs
def _as_stack(images: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(images)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3:
        raise DetectionError(f"expected images (N, H, W) or (H, W), got shape {np.shape(images)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DetectionError(f"no images to search (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number):
        raise DetectionError(f"images must be numeric, got dtype {arr.dtype}")
    return arr, single


def _check_psf(psf: Any) -> np.ndarray:
    k = np.asarray(psf, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise DetectionError(f"the PSF must be a 2-D array with odd sides (centred on its central pixel), "
                             f"got shape {k.shape}")
    if not np.isfinite(k).all():
        raise DetectionError("the PSF has NaN or infinite pixels")
    total = float(k.sum())
    if total <= MIN_PSF_SUM:
        raise DetectionError(f"the PSF sums to {total:.3g}: it must be positive (normally 1)")
    return k / total


def _per_image_sigma(noise_sigma: Any, n: int) -> np.ndarray:
    sig = np.asarray(noise_sigma, dtype=np.float64)
    if sig.ndim == 0:
        sig = np.full(n, float(sig))
    elif sig.ndim != 1 or sig.size != n:
        raise DetectionError(f"noise_sigma must be a scalar or one value per image ({n}), got shape {sig.shape}")
    if not (np.isfinite(sig).all() and (sig > 0).all()):
        raise DetectionError("noise_sigma must be finite and > 0 for every image")
    return sig


# ---------------------------------------------------------------------------------------------- filtering
def filtered_noise_sigma(noise_sigma: Any, psf: np.ndarray) -> np.ndarray | float:
    """Std of white noise of per-pixel sigma ``noise_sigma`` after the matched filter with ``psf`` (normalised
    to sum 1 here): ``sigma * sqrt(sum(psf**2))``. Exact for white (uncorrelated) noise, away from the edge."""
    k = _check_psf(psf)
    out = np.asarray(noise_sigma, dtype=np.float64) * math.sqrt(float((k**2).sum()))
    return float(out) if out.ndim == 0 else out


def matched_filter(images: Any, psf: np.ndarray, *, batch_size: int = DEFAULT_BATCH,
                   workers: int | None = None) -> np.ndarray:
    """Cross-correlate each image (N, H, W) or (H, W) with the PSF (normalised to sum 1): same shape, float64,
    zero padding outside the stamp. For a symmetric PSF this is the convolution of the authors' code.
    ``workers``: FFT threads (:func:`scipy.fft.set_workers`; default: scipy's, one), e.g. the rule's threads."""
    arr, single = _as_stack(images)
    if not np.isfinite(arr).all():
        raise DetectionError("the images have NaN or infinite pixels")
    k = _check_psf(psf)[::-1, ::-1][None]  # correlation = convolution with the flipped kernel
    out = np.empty(arr.shape, dtype=np.float64)
    step = max(int(batch_size), 1)
    with set_workers(workers if workers is not None else get_workers()):
        for s in range(0, arr.shape[0], step):
            out[s:s + step] = fftconvolve(arr[s:s + step].astype(np.float64, copy=False), k,
                                          mode="same", axes=(-2, -1))
    return out[0] if single else out


def estimate_noise_sigma(images: Any, *, clip: float = 3.0, iterations: int = 5, mask: Any = None) -> np.ndarray:
    """Per-image robust per-pixel noise sigma: 1.4826 x the median absolute deviation, iteratively clipped at
    ``clip`` sigma so that galaxy pixels drop out. Returns (N,) (a 1-element array for one image). Use it for
    images whose noise level is not known (GAN outputs). ``mask`` (same shape, True = use the pixel) leaves
    out pixels without data, e.g. the empty corners of a rotated stamp."""
    arr, _ = _as_stack(images)
    x = arr.reshape(arr.shape[0], -1).astype(np.float64)
    if not np.isfinite(x).all():
        raise DetectionError("the images have NaN or infinite pixels")
    keep = np.ones_like(x, dtype=bool) if mask is None else np.asarray(mask, bool).reshape(x.shape).copy()
    base = keep.copy()
    sigma = np.full(x.shape[0], np.nan)
    for _ in range(max(int(iterations), 1)):
        xm = np.where(keep, x, np.nan)
        med = np.nanmedian(xm, axis=1)
        sigma = 1.4826 * np.nanmedian(np.abs(xm - med[:, None]), axis=1)
        new_keep = base & (np.abs(x - med[:, None]) <= clip * sigma[:, None])
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return sigma


# ------------------------------------------------------------------------------------------------- peaks
_U, _V = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0])  # u along x (columns), v along y (rows); row-major
_DESIGN = np.column_stack([np.ones(9), _U.ravel(), _V.ravel(), _U.ravel()**2, (_U * _V).ravel(), _V.ravel()**2])
_DESIGN_PINV = np.linalg.pinv(_DESIGN)  # (6, 9): least-squares quadratic surface on a 3 x 3 patch


def _refine(snr: np.ndarray, img: np.ndarray, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel shifts (dx, dy) of peaks at (row, col) of image ``img`` in ``snr`` (see the module docstring)."""
    n, h, w = snr.shape
    padded = np.pad(snr, ((0, 0), (1, 1), (1, 1)), mode="edge")
    dr, dc = np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")
    patch = padded[img[:, None], (row[:, None] + 1 + dr.ravel()[None]), (col[:, None] + 1 + dc.ravel()[None])]
    a, b, c, d, e, f = (_DESIGN_PINV @ patch.T)
    det = 4.0 * d * f - e * e
    concave = (d < 0) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        u2 = np.where(concave, (-2.0 * f * b + e * c) / det, np.nan)
        v2 = np.where(concave, (-2.0 * d * c + e * b) / det, np.nan)
        # 3-point parabola per axis (uses the centre row / column of the patch only)
        fx_m, f0, fx_p = patch[:, 3], patch[:, 4], patch[:, 5]
        fy_m, fy_p = patch[:, 1], patch[:, 7]
        cx = fx_m - 2 * f0 + fx_p
        cy = fy_m - 2 * f0 + fy_p
        u1 = np.where(cx < 0, 0.5 * (fx_m - fx_p) / cx, 0.0)
        v1 = np.where(cy < 0, 0.5 * (fy_m - fy_p) / cy, 0.0)
    u = np.where(np.isfinite(u2), u2, u1)
    v = np.where(np.isfinite(v2), v2, v1)
    u = np.clip(np.nan_to_num(u), -MAX_REFINE_SHIFT, MAX_REFINE_SHIFT)
    v = np.clip(np.nan_to_num(v), -MAX_REFINE_SHIFT, MAX_REFINE_SHIFT)
    u = np.where((col == 0) | (col == w - 1), 0.0, u)
    v = np.where((row == 0) | (row == h - 1), 0.0, v)
    return u, v


def _dedupe_ties(xy: np.ndarray, min_distance: int) -> np.ndarray:
    """Indices of peaks to keep (peaks sorted by decreasing S/N): drop any within Chebyshev distance
    ``min_distance`` of a kept, higher (or equal) one. Only exact ties can trigger this."""
    keep: list[int] = []
    for i in range(len(xy)):
        if all(np.max(np.abs(xy[i] - xy[j])) > min_distance for j in keep):
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def find_peaks(images: Any, psf: np.ndarray, noise_sigma: Any, *, threshold_sigma: float = DEFAULT_THRESHOLD_SIGMA,
               min_distance: int = DEFAULT_MIN_DISTANCE, exclude_border: int = DEFAULT_EXCLUDE_BORDER,
               max_peaks: int | None = None, refine: bool = False, sigma_is_filtered: bool = False,
               return_snr: bool = False, batch_size: int = DEFAULT_BATCH, workers: int | None = None
               ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
    """Peaks of each image of ``images`` (N, H, W) or (H, W), found on the PSF-matched-filtered image.

    ``psf``: 2-D kernel with odd sides, centred (normalised to sum 1 here); ``noise_sigma``: per-pixel sigma of
    the white noise of the images, a scalar or one per image (with ``sigma_is_filtered=True``: the std of the
    *filtered* noise instead, for correlated noise); ``threshold_sigma``: a peak's filtered value must exceed
    this many filtered-noise sigmas; ``min_distance``: half-size of the local-maximum neighbourhood (1 = 3 x 3);
    ``exclude_border``: peaks closer than this to the edge are dropped; ``max_peaks``: keep at most this many
    (the highest) per image; ``refine``: quadratic sub-pixel refinement (module docstring); ``batch_size`` and
    ``workers``: see :func:`matched_filter`.

    Returns one float64 array (k, 2) of ``(x, y)`` = (column, row) per image, highest S/N first (a list of one
    array for a single image); with ``return_snr`` also the peaks' S/N (filtered value / filtered sigma).
    """
    arr, _ = _as_stack(images)
    n, h, w = arr.shape
    if threshold_sigma is None or not math.isfinite(float(threshold_sigma)):
        raise DetectionError(f"threshold_sigma must be a finite number, got {threshold_sigma}")
    if int(min_distance) < 1:
        raise DetectionError(f"min_distance must be >= 1 (1 = 3 x 3 maxima), got {min_distance}")
    if int(exclude_border) < 0:
        raise DetectionError(f"exclude_border must be >= 0, got {exclude_border}")
    if max_peaks is not None and int(max_peaks) < 1:
        raise DetectionError(f"max_peaks must be >= 1 or None, got {max_peaks}")
    md, border = int(min_distance), int(exclude_border)
    sig = _per_image_sigma(noise_sigma, n)
    k = _check_psf(psf)
    sig_f = sig if sigma_is_filtered else sig * math.sqrt(float((k**2).sum()))
    snr = matched_filter(arr, k, batch_size=batch_size, workers=workers)
    snr /= sig_f[:, None, None]

    footprint = np.ones((1, 2 * md + 1, 2 * md + 1), dtype=bool)
    coords = peak_local_max(snr, min_distance=1, threshold_abs=float(threshold_sigma), footprint=footprint,
                            exclude_border=(0, border, border))
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    img, row, col = coords[:, 0], coords[:, 1], coords[:, 2]
    values = snr[img, row, col]
    # group by image, highest S/N first within each image
    order = np.lexsort((-values, img))
    img, row, col, values = img[order], row[order], col[order], values[order]
    x, y = col.astype(np.float64), row.astype(np.float64)
    if refine and img.size:
        du, dv = _refine(snr, img, row, col)
        x, y = x + du, y + dv
    bounds = np.searchsorted(img, np.arange(n + 1))
    peaks: list[np.ndarray] = []
    snrs: list[np.ndarray] = []
    n_ties = 0
    for i in range(n):
        lo, hi = bounds[i], bounds[i + 1]
        xy = np.column_stack([x[lo:hi], y[lo:hi]])
        v = values[lo:hi]
        if hi - lo > 1:
            ij = np.column_stack([col[lo:hi], row[lo:hi]])
            d = np.max(np.abs(ij[:, None] - ij[None]), axis=-1)
            np.fill_diagonal(d, md + 1)
            if (d <= md).any():
                keep = _dedupe_ties(ij, md)
                n_ties += len(xy) - len(keep)
                xy, v = xy[keep], v[keep]
        if max_peaks is not None:
            xy, v = xy[:int(max_peaks)], v[:int(max_peaks)]
        peaks.append(xy)
        snrs.append(v)
    if n_ties:
        log.debug("find_peaks: %d plateau duplicates removed", n_ties)
    return (peaks, snrs) if return_snr else peaks


# ---------------------------------------------------------------------------------------------- matching
@dataclass(frozen=True)
class Matching:
    """Result of :func:`match_peaks`. ``pairs``: (n, 2) int array of (peak index, truth index), sorted by truth
    index; ``distances``: (n,) their distances; ``unmatched_peaks``: indices of peaks without a truth (false
    positives / spurious); ``unmatched_truth``: indices of truths without a peak (missed)."""

    pairs: np.ndarray
    distances: np.ndarray
    unmatched_peaks: np.ndarray
    unmatched_truth: np.ndarray

    @property
    def n_matched(self) -> int:
        return int(self.pairs.shape[0])

    def peak_for_truth(self, j: int) -> int | None:
        """Index of the peak matched to truth ``j``, or None."""
        hit = np.flatnonzero(self.pairs[:, 1] == j)
        return int(self.pairs[hit[0], 0]) if hit.size else None


def _as_points(a: Any, name: str) -> np.ndarray:
    p = np.asarray(a, dtype=np.float64)
    if p.size == 0:
        return np.empty((0, 2))
    if p.ndim == 1 and p.size == 2:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 2:
        raise DetectionError(f"{name} must be (k, 2) positions (x, y), got shape {np.shape(a)}")
    if not np.isfinite(p).all():
        raise DetectionError(f"{name} has NaN or infinite positions")
    return p


def match_peaks(peaks: Any, truth: Any, radius: float) -> Matching:
    """Optimal one-to-one matching of ``peaks`` (k, 2) to ``truth`` (m, 2) positions within ``radius`` (pixels).

    Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`) on the distance matrix; pairs farther
    than ``radius`` are forbidden by a cost larger than the sum of any allowed pairs, so the number of matches
    is maximal and, given that, the total distance minimal. Either list may be empty.
    """
    if radius is None or not math.isfinite(float(radius)) or float(radius) <= 0:
        raise DetectionError(f"the match radius must be a positive number of pixels, got {radius}")
    p, t = _as_points(peaks, "peaks"), _as_points(truth, "truth")
    if len(p) == 0 or len(t) == 0:
        return Matching(np.empty((0, 2), dtype=np.int64), np.empty(0), np.arange(len(p), dtype=np.int64),
                        np.arange(len(t), dtype=np.int64))
    dist = np.hypot(p[:, None, 0] - t[None, :, 0], p[:, None, 1] - t[None, :, 1])
    allowed = dist <= float(radius)
    forbidden_cost = float(radius) * (min(len(p), len(t)) + 1) + 1.0
    cost = np.where(allowed, dist, forbidden_cost)
    pi, ti = linear_sum_assignment(cost)
    ok = allowed[pi, ti]
    pi, ti = pi[ok], ti[ok]
    order = np.argsort(ti, kind="stable")
    pi, ti = pi[order], ti[order]
    pairs = np.column_stack([pi, ti]).astype(np.int64)
    return Matching(pairs=pairs, distances=dist[pi, ti],
                    unmatched_peaks=np.setdiff1d(np.arange(len(p)), pi).astype(np.int64),
                    unmatched_truth=np.setdiff1d(np.arange(len(t)), ti).astype(np.int64))


# ---------------------------------------------------------------------------------------------- outcomes
def truth_positions(truth: pd.DataFrame, grid: str = "hires") -> np.ndarray:
    """True positions from a :mod:`workflow_scripts.blends` truth table: (N, 2, 2) for blends (columns
    ``x_1, y_1, x_2, y_2``, or ``xlo_*``/``ylo_*`` for ``grid="lowres"``), (N, 1, 2) for the isolated sample
    (``x, y`` or ``xlo, ylo``). ``grid``: ``hires`` (also for GAN images) or ``lowres``."""
    if grid not in ("hires", "gan", "lowres"):
        raise DetectionError(f"unknown grid {grid!r} (use hires, gan or lowres)")
    sx, sy = ("xlo", "ylo") if grid == "lowres" else ("x", "y")
    if f"{sx}_1" in truth.columns:
        cols = [f"{sx}_1", f"{sy}_1", f"{sx}_2", f"{sy}_2"]
        m = 2
    elif sx in truth.columns:
        cols = [sx, sy]
        m = 1
    else:
        raise DetectionError(f"the truth table has neither {sx}_1/{sy}_1 (blends) nor {sx}/{sy} (isolated) columns")
    missing = [c for c in cols if c not in truth.columns]
    if missing:
        raise DetectionError(f"the truth table lacks column(s) {', '.join(missing)}")
    return truth[cols].to_numpy(dtype=np.float64).reshape(len(truth), m, 2)


def _check_lists(peaks_list: Sequence[Any], truth_xy: Any, m: int, what: str) -> np.ndarray:
    t = np.asarray(truth_xy, dtype=np.float64)
    if t.ndim == 2 and m == 1 and t.shape[1] == 2:
        t = t[:, None, :]
    if t.ndim != 3 or t.shape[1:] != (m, 2):
        raise DetectionError(f"{what}: truth positions must be (N, {m}, 2), got shape {t.shape}")
    if t.shape[0] == 0:
        raise DetectionError(f"{what}: no images to classify")
    if len(peaks_list) != t.shape[0]:
        raise DetectionError(f"{what}: {len(peaks_list)} peak lists for {t.shape[0]} truth rows")
    if not np.isfinite(t).all():
        raise DetectionError(f"{what}: the truth positions have NaN or infinite values")
    return t


def _classify(peaks_list: Sequence[Any], t: np.ndarray, radius: float) -> dict[str, np.ndarray]:
    n, m = t.shape[0], t.shape[1]
    n_peaks = np.zeros(n, dtype=np.int64)
    n_matched = np.zeros(n, dtype=np.int64)
    matched = np.zeros((n, m), dtype=bool)
    pos = np.full((n, m, 2), np.nan)
    for i in range(n):
        p = _as_points(peaks_list[i], f"peaks of image {i}")
        n_peaks[i] = len(p)
        if len(p) == 0:
            continue
        res = match_peaks(p, t[i], radius)
        n_matched[i] = res.n_matched
        if res.n_matched:
            matched[i, res.pairs[:, 1]] = True
            pos[i, res.pairs[:, 1]] = p[res.pairs[:, 0]]
    return {"n_peaks": n_peaks, "n_matched": n_matched, "matched": matched, "pos": pos,
            "offset": pos - t}


def _position_columns(cols: dict[str, Any], r: dict[str, np.ndarray], suffixes: Sequence[str]) -> None:
    for j, s in enumerate(suffixes):
        cols[f"matched{s}"] = r["matched"][:, j]
        cols[f"x_peak{s}"] = r["pos"][:, j, 0]
        cols[f"y_peak{s}"] = r["pos"][:, j, 1]
        cols[f"dx{s}"] = r["offset"][:, j, 0]
        cols[f"dy{s}"] = r["offset"][:, j, 1]
        cols[f"dist{s}"] = np.hypot(r["offset"][:, j, 0], r["offset"][:, j, 1])


def _id_column(ids: Any, n: int, name: str, message: str) -> dict[str, Any]:
    """The optional first column of a classification table, checked against the number of stamps."""
    if ids is None:
        return {}
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise DetectionError(message.format(ids.size, n))
    return {name: ids}


def classify_blends(peaks_list: Sequence[Any], truth_xy: Any, radius: float, *,
                    ids: Any = None) -> pd.DataFrame:
    """One row per blend: ``n_peaks``, ``n_matched`` (0, 1, 2), ``outcome`` (``both`` / ``one`` / ``none``),
    ``n_spurious`` (peaks matched to neither galaxy), and per galaxy s = 1, 2: ``matched_s``, the matched peak
    ``x_peak_s, y_peak_s`` and its offset from the truth ``dx_s, dy_s, dist_s`` (NaN when unmatched).

    ``peaks_list``: one (k, 2) array of (x, y) per blend (as from :func:`find_peaks`); ``truth_xy``: (N, 2, 2)
    true positions in pixels of the same images (:func:`truth_positions`); ``radius``: match radius in those
    pixels; ``ids``: optional ``blend_id`` column (first)."""
    t = _check_lists(peaks_list, truth_xy, 2, "classify_blends")
    r = _classify(peaks_list, t, radius)
    cols = _id_column(ids, t.shape[0], "blend_id", "classify_blends: {} ids for {} blends")
    cols["n_peaks"] = r["n_peaks"]
    cols["n_matched"] = r["n_matched"]
    cols["outcome"] = np.array(BLEND_OUTCOMES, dtype=object)[2 - r["n_matched"]]
    cols["n_spurious"] = r["n_peaks"] - r["n_matched"]
    _position_columns(cols, r, ("_1", "_2"))
    return pd.DataFrame(cols)


def classify_isolated(peaks_list: Sequence[Any], truth_xy: Any, radius: float, *,
                      ids: Any = None) -> pd.DataFrame:
    """Isolated-galaxy control sample, one row per stamp: ``n_peaks``, ``matched`` (a peak within ``radius`` of
    the galaxy), ``n_spurious`` (peaks not matched to it), ``outcome`` (``none`` / ``single`` / ``multiple``)
    and ``false_positive`` (more than one peak: the galaxy would be taken for a blend), plus the matched peak
    ``x_peak, y_peak`` and offset ``dx, dy, dist``. ``truth_xy``: (N, 1, 2) or (N, 2); ``ids``: optional
    ``iso_id`` column."""
    t = _check_lists(peaks_list, truth_xy, 1, "classify_isolated")
    r = _classify(peaks_list, t, radius)
    cols = _id_column(ids, t.shape[0], "iso_id", "classify_isolated: {} ids for {} galaxies")
    npk = r["n_peaks"]
    cols["n_peaks"] = npk
    cols["n_matched"] = r["n_matched"]
    cols["outcome"] = np.where(npk == 0, "none", np.where(npk == 1, "single", "multiple")).astype(object)
    cols["false_positive"] = npk > 1
    cols["n_spurious"] = npk - r["n_matched"]
    _position_columns(cols, r, ("",))
    return pd.DataFrame(cols)


# ------------------------------------------------------------------------------------------------ metrics
def wilson_interval(k: Any, n: Any, confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lower, upper) of a binomial fraction ``k / n`` at ``confidence``; NaN where n = 0."""
    if not 0.0 < confidence < 1.0:
        raise DetectionError(f"confidence must be in (0, 1), got {confidence}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = float(norm.ppf(0.5 + confidence / 2.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
        lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return lo, hi


def _success(outcomes: Any, success: str | Sequence[str], what: str) -> np.ndarray:
    """Boolean 'detected' array from outcome labels (``success`` label(s)) or from booleans / 0-1 numbers."""
    if isinstance(outcomes, pd.DataFrame):
        if "outcome" not in outcomes.columns:
            raise DetectionError(f"{what}: a DataFrame of outcomes needs an 'outcome' column")
        outcomes = outcomes["outcome"]
    o = np.asarray(outcomes)
    if o.ndim != 1:
        raise DetectionError(f"{what}: outcomes must be 1-D, got shape {o.shape}")
    if o.dtype == bool:
        return o
    if np.issubdtype(o.dtype, np.number):
        if not np.isin(o, (0, 1)).all():
            raise DetectionError(f"{what}: numeric outcomes must be 0 or 1")
        return o.astype(bool)
    labels = {success} if isinstance(success, str) else set(success)
    return np.array([str(v) in labels for v in o], dtype=bool)


def detection_fraction(outcomes: Any, values: Any, bins: int | Sequence[float], *,
                       success: str | Sequence[str] = "both",
                       confidence: float = DEFAULT_CONFIDENCE) -> pd.DataFrame:
    """Fraction of detected blends in bins of ``values`` (e.g. flux ratio, separation / sum of FWHM).

    ``outcomes``: outcome labels (detected = ``success``, default ``both``), booleans, or a
    :func:`classify_blends` DataFrame; ``values``: one number per blend; ``bins``: edges (increasing) or a
    number of equal-width bins over the finite range. Rows with non-finite values or outside the edges are
    dropped (logged). Returns one row per bin: ``bin_lo, bin_hi, bin_centre, count, n_detected, fraction``
    (NaN for an empty bin) and the Wilson interval ``ci_lo, ci_hi`` at ``confidence``. The last bin includes
    its right edge (numpy.histogram's convention), so the counts sum to the rows kept.
    """
    det = _success(outcomes, success, "detection_fraction")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size != det.size:
        raise DetectionError(f"detection_fraction: {v.size} values for {det.size} outcomes")
    if v.size == 0:
        raise DetectionError("detection_fraction: no outcomes")
    finite = np.isfinite(v)
    if (~finite).any():
        log.info("detection_fraction: %d of %d rows with non-finite values dropped", int((~finite).sum()), v.size)
    v, det = v[finite], det[finite]
    if v.size == 0:
        raise DetectionError("detection_fraction: no finite values")
    if np.ndim(bins) == 0:
        nb = int(bins)  # type: ignore[arg-type]
        if nb < 1:
            raise DetectionError(f"detection_fraction: the number of bins must be >= 1, got {bins}")
        lo, hi = float(v.min()), float(v.max())
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, nb + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise DetectionError("detection_fraction: bin edges must be >= 2 finite, strictly increasing numbers")
    inside = (v >= edges[0]) & (v <= edges[-1])
    if (~inside).any():
        log.info("detection_fraction: %d rows outside the bin edges [%g, %g] dropped", int((~inside).sum()),
                 edges[0], edges[-1])
    v, det = v[inside], det[inside]
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, edges.size - 2)
    count = np.bincount(idx, minlength=edges.size - 1)
    n_det = np.bincount(idx, weights=det.astype(np.float64), minlength=edges.size - 1).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(count > 0, n_det / count, np.nan)
    ci_lo, ci_hi = wilson_interval(n_det, count, confidence)
    return pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "bin_centre": 0.5 * (edges[:-1] + edges[1:]),
                         "count": count.astype(np.int64), "n_detected": n_det, "fraction": frac,
                         "ci_lo": ci_lo, "ci_hi": ci_hi})


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b > 0 else None


def outcome_fractions(outcomes: Any, labels: Sequence[str] = BLEND_OUTCOMES, *,
                      confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Fraction of each outcome label (default ``both`` / ``one`` / ``none``) with Wilson intervals, as a
    JSON-ready dict: ``{"n": N, label: {"count", "fraction", "ci_lo", "ci_hi"}, ...}`` (None where N = 0)."""
    if isinstance(outcomes, pd.DataFrame):
        outcomes = outcomes["outcome"]
    o = np.asarray(outcomes).astype(str)
    n = int(o.size)
    out: dict[str, Any] = {"n": n}
    for lab in labels:
        k = int((o == lab).sum())
        lo, hi = wilson_interval(k, n, confidence)
        out[lab] = {"count": k, "fraction": _ratio(k, n),
                    "ci_lo": float(lo) if n else None, "ci_hi": float(hi) if n else None}
    out["confidence"] = float(confidence)
    return out


def precision_recall(blend_outcomes: Any, isolated_outcomes: Any, *,
                     confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Blend detection as a binary classifier, positive class 'a blend is detected' (two peaks matched).

    ``blend_outcomes``: labels (positive = ``both``), booleans, or a :func:`classify_blends` DataFrame;
    ``isolated_outcomes``: labels (positive = ``multiple``: more than one peak), booleans, or a
    :func:`classify_isolated` DataFrame. TP = blends detected, FN = blends not, FP = isolated galaxies with
    more than one peak, TN = the other isolated galaxies. Returns a JSON-ready dict: counts, ``precision`` =
    TP / (TP + FP), ``recall`` = TP / (TP + FN), ``f1``, ``false_positive_rate`` = FP / (FP + TN) with Wilson
    intervals on recall and the false-positive rate; None where a ratio is undefined. Precision depends on
    the ratio of blends to isolated galaxies in the two samples.
    """
    if isinstance(isolated_outcomes, pd.DataFrame) and "false_positive" in isolated_outcomes.columns:
        isolated_outcomes = isolated_outcomes["false_positive"].to_numpy(dtype=bool)
    pos_b = _success(blend_outcomes, "both", "precision_recall (blends)")
    pos_i = _success(isolated_outcomes, "multiple", "precision_recall (isolated)")
    if pos_b.size == 0 and pos_i.size == 0:
        raise DetectionError("precision_recall: no outcomes")
    tp, fn = int(pos_b.sum()), int((~pos_b).sum())
    fp, tn = int(pos_i.sum()), int((~pos_i).sum())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    fpr = _ratio(fp, fp + tn)
    r_lo, r_hi = wilson_interval(tp, tp + fn, confidence)
    f_lo, f_hi = wilson_interval(fp, fp + tn, confidence)

    def _f(x: Any) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {"n_blends": tp + fn, "n_isolated": fp + tn, "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "precision": precision, "recall": recall, "f1": f1, "false_positive_rate": fpr,
            "recall_ci": [_f(r_lo), _f(r_hi)], "false_positive_rate_ci": [_f(f_lo), _f(f_hi)],
            "confidence": float(confidence)}
