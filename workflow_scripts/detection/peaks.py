"""Peak detection, truth matching and detection metrics of the deblending study (Hemmati et al. 2022, sec. 3).

The authors' code convolves each image with the PSF and keeps the 3 x 3 local maxima above a threshold; a blend
counts as *detected* when both galaxies have a peak within a match radius. This module does the same, batched
over thousands of stamps, and adds the bookkeeping (optimal matching, outcomes, fractions with binomial
intervals, precision / recall against an isolated-galaxy control sample).

Coordinates
-----------
Pixel centres at integers, 0-based, positions as ``(x, y) = (column, row)``: the convention of
:mod:`workflow_scripts.studies.hemmati22.blends` and :mod:`workflow_scripts.imaging.degrade`. Peaks found on hi-res and GAN images
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
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.fft import get_workers, set_workers
from skimage.feature import peak_local_max

from workflow_scripts.errors import PipelineError

log = logging.getLogger(__name__)

#: detection threshold in sigma of the filtered noise: a 5-sigma peak is ~3e-7 per pixel in Gaussian noise,
#: i.e. < 0.01 false peaks per 64 x 64 stamp (the authors' threshold is not stated; configurable)
DEFAULT_THRESHOLD_SIGMA = 5.0
#: half-size of the local-maximum neighbourhood: 1 gives the 3 x 3 maxima of the authors' code
DEFAULT_MIN_DISTANCE = 1
#: peaks closer than this to the edge are dropped: their 3 x 3 neighbourhood is truncated (skimage's default)
DEFAULT_EXCLUDE_BORDER = 1
#: images per FFT batch: 256 x (64 + 31)^2 complex128 ~ 20 MB per array, far below memory on any laptop
DEFAULT_BATCH = 256
#: a PSF whose sum is at most this is refused (the matched filter would be meaningless)
MIN_PSF_SUM = 1e-12
#: largest sub-pixel shift of the quadratic refinement (the peak pixel is the maximum of its 3 x 3 neighbourhood)
MAX_REFINE_SHIFT = 0.5


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
    from scipy.signal import fftconvolve  # here: ~1.5 s per process, and most importers never filter

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




# -------------------------------------------------------------------------------------------- detection
def detection_stack(cube: np.ndarray, zeropoints: Sequence[float],
                    psfs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One detection image per stamp: the bands summed in the first band's flux units; and the mean PSF."""
    zp = np.asarray(zeropoints, dtype=float)
    weights = 10.0 ** (-0.4 * (zp - zp[0]))          # band b's unit expressed in band 0's unit
    stack = np.tensordot(cube.astype(np.float64), weights, axes=([1], [0])).astype(np.float32)
    size = max(p.shape[0] for p in psfs)
    psf = np.mean([np.pad(p, (size - p.shape[0]) // 2) for p in psfs], axis=0)
    return stack, psf / psf.sum()


def filtered_snr(stack: np.ndarray, psf: np.ndarray,
                 noise_floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Matched-filtered images in units of their own noise, and that noise (per stamp; at least ``noise_floor``).

    The noise is measured on each filtered image (clipped MAD, pixels without data left out) rather than taken
    from the survey: rotated stamps, summed blends, degraded and GAN images all have correlated noise of
    different levels, and a peak must be significant against the noise of the image it is found in.
    """
    filtered = matched_filter(stack, psf)
    sigma_f = estimate_noise_sigma(filtered, mask=stack != 0)
    if noise_floor is not None:
        floor = np.broadcast_to(np.asarray(noise_floor, dtype=np.float64), sigma_f.shape)
        if not (np.isfinite(floor).all() and (floor >= 0).all()):
            raise DetectionError("noise_floor must be finite and >= 0")
        sigma_f = np.maximum(sigma_f, floor)
    return filtered / sigma_f[:, None, None], sigma_f


def within(peaks: Sequence[np.ndarray], centres: np.ndarray, radius: float) -> list[np.ndarray]:
    """Keep the peaks of each stamp within ``radius`` of its centre (x, y)."""
    return [p[np.hypot(p[:, 0] - c[0], p[:, 1] - c[1]) <= radius] if len(p) else p for p, c in zip(peaks, centres)]
