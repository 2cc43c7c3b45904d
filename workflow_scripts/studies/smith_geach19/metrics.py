"""Headline metrics of the deep-field study from the validation comparison and the generation benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workflow_scripts.metrics import entry
from workflow_scripts.studies.smith_geach19.paper import (GOALS, PAPER_KS_P, PAPER_MEDIAN_OFFSET,
                                                          PAPER_REALISATION_SECONDS, PAPER_REALISATION_SIDE)


#: ours, beyond the paper's validation: the sources' shape statistics of :func:`.validation.compare` that get a KS
#: entry (its key, the entry's name, what is compared, the medians' unit)
SHAPE_TESTS = (("r_half", "size", "half-light radii", "″"), ("colour", "colour", "{first} - {last} colours", ""))


def _holds(ok: bool, value: float) -> bool | None:
    return None if value is None or not np.isfinite(value) else bool(ok)


def _error(c: Mapping[str, Any]) -> str:
    e = c.get("median_offset_error", float("nan"))
    return f" (bootstrap error {e:.2f})" if np.isfinite(e) else ""


def compute_metrics(comparison: Mapping[str, Any], generation: Mapping[str, Any], mock: Mapping[str, Any],
                    null: Mapping[str, Any]) -> dict[str, Any]:
    """Entries of the generator against the real field (``comparison``, :func:`.validation.compare`), of the
    catalogue mock against it (``mock``, ours: the baseline) and of the real field's halves against each other
    (``null``: what the statistics give when nothing differs, at this field's size)."""
    entries = []
    lim = comparison["mag_limit"]
    for b, c in comparison["bands"].items():
        p = c["ks_p"]
        entries.append(entry(f"ks_p_{b}", f"two-sided KS p of the {b} magnitudes, generated vs real, mag < {lim:g}",
                             PAPER_KS_P.get(b), p, "", f"> {GOALS['ks_p_min']}", _holds(p > GOALS["ks_p_min"], p)))
    for b, c in comparison["bands"].items():
        d = c["median_offset"]
        entries.append(entry(f"median_offset_{b}", f"median {b} magnitude, generated - real, mag < {lim:g}{_error(c)}",
                             f"within {PAPER_MEDIAN_OFFSET}", d, "mag", f"|x| <= {GOALS['median_offset_max']}",
                             _holds(abs(d) <= GOALS["median_offset_max"], d)))
    r = comparison["counts_ratio"]
    tol = GOALS["counts_ratio_tolerance"]
    entries.append(entry("counts_ratio", "source counts per arcmin^2, generated / real", None, r, "",
                         f"within {tol:.0%} of 1", _holds(abs(r - 1) <= tol, r)))
    bands = list(comparison["bands"])
    for key, name, quantity, unit in SHAPE_TESTS:
        p = comparison.get(f"ks_p_{key}")
        if p is None:  # a comparison written before these tests existed
            continue
        quantity = quantity.format(first=bands[0], last=bands[-1])
        med = (f"medians {comparison[f'{key}_median_generated']:.2f}{unit} / "
               f"{comparison[f'{key}_median_real']:.2f}{unit}")
        entries.append(entry(f"ks_p_{name}", f"ours, beyond the paper's validation: "
                             f"two-sided KS p of the sources' {quantity}, generated vs real, {bands[-1]} < {lim:g} ({med}"
                             f"; the real field's halves: {null.get(f'ks_p_{key}', float('nan')):.2f}): magnitudes "
                             "alone also match texture", None, p, "", f"> {GOALS['ks_p_min']}",
                             _holds(p > GOALS["ks_p_min"], p)))
    s = generation["seamless_max_abs_diff"]
    entries.append(entry("seamless_max_abs_diff", "largest |tiled - one-shot| over the interior (normalised units)",
                         None, s, "", "float rounding (< 1e-5)", _holds(s < 1e-5, s)))
    entries.append(entry("tessellation_peak_rss_mb", f"peak memory of the field job ({generation['field_size']}^2 x "
                         f"{len(comparison['bands'])})", None, generation["peak_rss_mb"], "MB", None, None))
    threads = int(generation["threads"])
    entries.append(entry("realisation_seconds", f"one {PAPER_REALISATION_SIDE}^2 x 3 realisation "
                         f"(paper: Xeon E5-2650 v3; ours: {generation['device']}, {threads} "
                         f"thread{'s' if threads != 1 else ''})",
                         PAPER_REALISATION_SECONDS, generation["realisation_seconds"], "s", None, None))
    what = "the catalogue mock (ours, the baseline without learning: the real field's sources as exponential disks)"
    for b, c in mock["bands"].items():
        entries.append(entry(f"mock_ks_p_{b}", f"{what}: KS p of the {b} magnitudes vs real, mag < {lim:g}", None,
                             c["ks_p"], "", None, None))
    for b, c in mock["bands"].items():
        entries.append(entry(f"mock_median_offset_{b}", f"{what}: median {b} magnitude, mock - real{_error(c)}",
                             None, c["median_offset"], "mag", None, None))
    for key, name, quantity, _ in SHAPE_TESTS:
        if mock.get(f"ks_p_{key}") is not None:
            quantity = quantity.format(first=bands[0], last=bands[-1])
            entries.append(entry(f"mock_ks_p_{name}", f"{what}: KS p of the sources' {quantity} vs real", None,
                                 mock[f"ks_p_{key}"], "", None, None))
    entries.append(entry("mock_counts_ratio", f"{what}: source counts per arcmin^2, mock / real", None,
                         mock["counts_ratio"], "", None, None))
    p_null = [c["ks_p"] for c in null["bands"].values()]
    entries.append(entry("null_ks_p_min", "the null: the smallest KS p over the bands between the real field's "
                         f"left and right halves ({', '.join(f'{p:.2f}' for p in p_null)})", None,
                         float(np.min(p_null)), "", None, None))
    d_null = [c["median_offset"] for c in null["bands"].values()]
    entries.append(entry("null_median_offset_max", "the null: the largest |median offset| over the bands between "
                         f"the real field's halves ({', '.join(f'{d:+.2f}' for d in d_null)} mag): the median "
                         "offsets' noise at this field's size", None, float(np.max(np.abs(d_null))), "mag", None,
                         None))
    return {"study": "smith_geach19", "entries": entries, "comparison": dict(comparison),
            "mock": dict(mock), "null": dict(null), "generation": dict(generation)}


__all__ = ["compute_metrics"]
