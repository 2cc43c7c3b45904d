"""The one schema of a study's ``results/{study}/metrics.json``, shared by every study and by the scorecard.

A metrics file is ``{"study": name, "entries": [entry, ...], ...free detail...}``. Each headline *entry* puts our
number beside the paper's::

    {"id": "detection_fraction_hi", "what": "blends with both galaxies found, hi-res images",
     "paper": 0.80, "ours": 0.65, "unit": "fraction", "goal": "> gan > lo", "holds": true}

``paper`` is the paper's number, or a string where the paper gives none (">10x"), or None where it has nothing to
compare with; ``ours`` our number (None where it could not be measured, e.g. no blend was fitted); ``unit`` a
short word ("fraction", "x", "" for a pure number); ``goal`` a short plain statement of what must hold, or None;
``holds`` whether it does: a bool, or None when there is no goal (or nothing was measured to judge it by).
:func:`entry` builds and checks one entry; :func:`validate_metrics` checks a whole file's object, so that a study
writing a malformed file fails at once with one line naming it, not the scorecard later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from workflow_scripts.errors import PipelineError

__all__ = ["ENTRY_FIELDS", "MAG_MATCH_WIDTH", "MetricsError", "bootstrap_auc", "bootstrap_median", "entry",
           "check_entry", "matched_auc", "plural_label", "ranked_auc", "roc_auc", "roc_points", "singular_label",
           "validate_metrics"]

#: the fields of a headline entry, in the order they are written
ENTRY_FIELDS = ("id", "what", "paper", "ours", "unit", "goal", "holds")


class MetricsError(PipelineError):
    """A metrics entry or file does not follow the shared schema."""


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _finite_or_none(value: Any) -> Any:
    """Our number as plain JSON: a float (or int), None for NaN / inf (strict JSON has no NaN)."""
    if value is None or not _number(value):
        return value
    value = int(value) if isinstance(value, (int, np.integer)) else float(value)
    return value if math.isfinite(value) else None


def _problem(e: Any) -> str | None:
    """What is wrong with one entry, or None when it follows the schema."""
    if not isinstance(e, Mapping):
        return f"an entry must be an object, got {type(e).__name__}"
    missing = [k for k in ENTRY_FIELDS if k not in e]
    extra = sorted(set(e) - set(ENTRY_FIELDS))
    name = e.get("id", "?")
    if missing or extra:
        return (f"entry {name!r}: " + (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and extra else "") + (f"unknown {', '.join(extra)}" if extra else ""))
    if not isinstance(e["id"], str) or not e["id"] or not e["id"].isidentifier():
        return f"entry id {e['id']!r} must be a non-empty identifier (letters, digits, _)"
    if not isinstance(e["what"], str) or not e["what"]:
        return f"entry {name!r}: 'what' must be a non-empty string"
    if e["paper"] is not None and not (_number(e["paper"]) or isinstance(e["paper"], str)):
        return f"entry {name!r}: 'paper' must be a number, a string or null, got {type(e['paper']).__name__}"
    if e["ours"] is not None and not _number(e["ours"]):
        return f"entry {name!r}: 'ours' must be a number or null, got {type(e['ours']).__name__}"
    if _number(e["ours"]) and not math.isfinite(float(e["ours"])):
        return f"entry {name!r}: 'ours' must be finite or null, got {e['ours']}"
    if not isinstance(e["unit"], str):
        return f"entry {name!r}: 'unit' must be a string (\"\" for a pure number)"
    if e["goal"] is not None and (not isinstance(e["goal"], str) or not e["goal"]):
        return f"entry {name!r}: 'goal' must be a non-empty string or null"
    if e["holds"] is not None and not isinstance(e["holds"], bool):
        return f"entry {name!r}: 'holds' must be true, false or null, got {e['holds']!r}"
    if e["goal"] is None and e["holds"] is not None:
        return f"entry {name!r}: 'holds' must be null when there is no goal"
    return None


def entry(id: str, what: str, paper: float | str | None, ours: float | None, unit: str, goal: str | None,
          holds: bool | None) -> dict[str, Any]:
    """One headline entry (see the module docstring), checked; ``ours`` NaN becomes None, numpy scalars plain."""
    if isinstance(holds, np.bool_):
        holds = bool(holds)
    e = {"id": id, "what": what, "paper": _finite_or_none(paper), "ours": _finite_or_none(ours), "unit": unit,
         "goal": goal, "holds": holds}
    problem = _problem(e)
    if problem:
        raise MetricsError(f"metrics {problem}")
    return e


def check_entry(e: Any) -> None:
    """Raise a one-line :class:`MetricsError` if ``e`` is not a valid entry."""
    problem = _problem(e)
    if problem:
        raise MetricsError(f"metrics {problem}")


def validate_metrics(obj: Any, path: str | Path) -> None:
    """Check a metrics file's object: a ``study`` name, an ``entries`` list of valid entries with distinct ids.

    Raises one :class:`MetricsError` line naming ``path`` and the first problem found."""
    if not isinstance(obj, Mapping):
        raise MetricsError(f"{path}: a metrics file must hold a JSON object, got {type(obj).__name__}")
    if not isinstance(obj.get("study"), str) or not obj["study"]:
        raise MetricsError(f"{path}: no 'study' name")
    entries = obj.get("entries")
    if not isinstance(entries, list):
        raise MetricsError(f"{path}: 'entries' must be a list of headline entries")
    seen: set[str] = set()
    for e in entries:
        problem = _problem(e)
        if problem:
            raise MetricsError(f"{path}: {problem}")
        if e["id"] in seen:
            raise MetricsError(f"{path}: entry id {e['id']!r} appears twice")
        seen.add(e["id"])


# ------------------------------------------------------------------------------------------- detectors
#: magnitude bins (mag) of every study's magnitude-matched AUCs (:func:`matched_auc`), so that they compare alike
MAG_MATCH_WIDTH = 0.5


def _two_classes(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    return pos[np.isfinite(pos)], neg[np.isfinite(neg)]


def roc_auc(pos: Any, neg: Any) -> float:
    """ROC AUC of a score that is higher for the positives (anomalies) than the negatives; NaN if either class is
    empty (non-finite scores dropped). Ties count one half."""
    from sklearn.metrics import roc_auc_score

    pos, neg = _two_classes(pos, neg)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg]))


def matched_auc(pos: Any, pos_x: Any, neg: Any, neg_x: Any, width: float) -> tuple[float, int, int]:
    """:func:`roc_auc` with the negatives re-weighted to the positives' distribution of a nuisance quantity ``x``
    (e.g. magnitude) in bins of ``width``: in each bin the negatives share the positives' count; objects in a bin
    the other class does not reach are left out. Returns the AUC and how many positives and negatives were
    compared (NaN, 0, 0 when no bin holds both)."""
    from sklearn.metrics import roc_auc_score

    pos, pos_x, neg, neg_x = (np.asarray(a, float) for a in (pos, pos_x, neg, neg_x))
    keep_p, keep_n = np.isfinite(pos) & np.isfinite(pos_x), np.isfinite(neg) & np.isfinite(neg_x)
    pos, pos_x, neg, neg_x = pos[keep_p], pos_x[keep_p], neg[keep_n], neg_x[keep_n]
    if not pos.size or not neg.size:
        return float("nan"), 0, 0
    lo = np.floor(min(pos_x.min(), neg_x.min()) / width) * width
    ip, ineg = (((x - lo) // width).astype(int) for x in (pos_x, neg_x))
    n_bins = int(max(ip.max(), ineg.max())) + 1
    cp, cn = np.bincount(ip, minlength=n_bins), np.bincount(ineg, minlength=n_bins)
    both = (cp > 0) & (cn > 0)
    use_p, use_n = both[ip], both[ineg]
    if not use_p.any():
        return float("nan"), 0, 0
    w_n = cp[ineg[use_n]] / cn[ineg[use_n]]
    y = np.r_[np.ones(int(use_p.sum())), np.zeros(int(use_n.sum()))]
    auc = roc_auc_score(y, np.r_[pos[use_p], neg[use_n]], sample_weight=np.r_[np.ones(int(use_p.sum())), w_n])
    return float(auc), int(use_p.sum()), int(use_n.sum())


def bootstrap_auc(pos: Any, neg: Any, seed: int, n: int = 500) -> tuple[float, float]:
    """16th and 84th percentiles of :func:`roc_auc` over ``n`` bootstrap resamples of both classes (NaN, NaN when
    a class is empty)."""
    pos, neg = _two_classes(pos, neg)
    if pos.size == 0 or neg.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [roc_auc(rng.choice(pos, pos.size), rng.choice(neg, neg.size)) for _ in range(n)]
    lo, hi = np.nanpercentile(draws, [16, 84])
    return float(lo), float(hi)


def bootstrap_median(values: Any, seed: int, n: int = 500) -> tuple[float, float]:
    """16th and 84th percentiles of the median of the finite ``values`` over ``n`` bootstrap resamples (NaN, NaN
    when there are none): how far a headline median over a few dozen objects could move with another sample."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(np.median(rng.choice(v, (n, v.size)), axis=1), [16, 84])
    return float(lo), float(hi)


def ranked_auc(pos: Any, neg: Any, pos_mag: Any, neg_mag: Any, seed: int, n_boot: int = 500) -> dict[str, Any]:
    """A detector's ranking of ``pos`` above ``neg`` as both anomaly studies report it: ``auc``, its 68 % bootstrap
    interval ``p16``/``p84`` (:func:`bootstrap_auc`), and ``mag_matched`` (:func:`matched_auc` in bins of
    :data:`MAG_MATCH_WIDTH` of the magnitudes) with ``mag_matched_n`` (positives, negatives used)."""
    p16, p84 = bootstrap_auc(pos, neg, seed, n_boot)
    matched, n_pos, n_neg = matched_auc(pos, pos_mag, neg, neg_mag, MAG_MATCH_WIDTH)
    return {"auc": roc_auc(pos, neg), "p16": p16, "p84": p84, "mag_matched": matched, "mag_matched_n": [n_pos, n_neg]}


def singular_label(label: str) -> str:
    """An anomaly label as a noun for text and figures (ero -> ERO, merger -> merger)."""
    return "ERO" if label.lower() == "ero" else label


def plural_label(label: str) -> str:
    """An anomaly label as a plural noun for text and figures (ero -> EROs, merger -> mergers)."""
    return f"{singular_label(label)}s"


def roc_points(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates of the ROC curve of a score that is higher for the positives."""
    from sklearn.metrics import roc_curve

    pos, neg = _two_classes(pos, neg)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg])
    return fpr, tpr
