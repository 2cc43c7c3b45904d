"""Detection metrics: binomial (Wilson) intervals, detection fractions in bins, outcome fractions, and precision /
recall against an isolated-galaxy control sample.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri  # the normal quantile (scipy.stats.norm.ppf) without scipy.stats' ~1.5 s import


from workflow_scripts.detection.matching import BLEND_OUTCOMES
from workflow_scripts.detection.peaks import DetectionError

log = logging.getLogger(__name__)
#: confidence of the Wilson binomial intervals: 0.6827, the 1-sigma error bars of detection-fraction plots
DEFAULT_CONFIDENCE = 0.6827


# ------------------------------------------------------------------------------------------------ metrics
def wilson_interval(k: Any, n: Any, confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lower, upper) of a binomial fraction ``k / n`` at ``confidence``; NaN where n = 0."""
    if not 0.0 < confidence < 1.0:
        raise DetectionError(f"confidence must be in (0, 1), got {confidence}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = float(ndtri(0.5 + confidence / 2.0))
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
