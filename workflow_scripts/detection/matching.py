"""Matching peaks to true positions (optimal assignment within a radius) and the outcome of each stamp: blends
(both / one / none found) and isolated galaxies (single / multiple / none).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


from workflow_scripts.detection.peaks import DetectionError

log = logging.getLogger(__name__)
#: match radius (pixels of the image searched) of the authors' code: 5 px on GAN / hi-res images, 10 px on
#: the low-res ones (REFERENCE.md)
MATCH_RADIUS_PX: Mapping[str, float] = {"hires": 5.0, "gan": 5.0, "lowres": 10.0}
#: the low-res radius with the same angle as 5 hi-res px (0.3"): 5 / 3 low-res px
MATCH_RADIUS_LOWRES_MATCHED_PX = 5.0 / 3.0

BLEND_OUTCOMES = ("both", "one", "none")
ISOLATED_OUTCOMES = ("single", "multiple", "none")


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
    """True positions from a :mod:`workflow_scripts.studies.hemmati22.blends` truth table: (N, 2, 2) for blends (columns
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
