"""Headline metrics of the deep-field study from the validation comparison and the generation benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workflow_scripts.metrics import entry
from workflow_scripts.studies.smith_geach19.paper import (GOALS, PAPER_KS_P, PAPER_MEDIAN_OFFSET,
                                                          PAPER_REALISATION_SECONDS, PAPER_REALISATION_SIDE)


def _holds(ok: bool, value: float) -> bool | None:
    return None if value is None or not np.isfinite(value) else bool(ok)


def compute_metrics(comparison: Mapping[str, Any], generation: Mapping[str, Any]) -> dict[str, Any]:
    entries = []
    lim = comparison["mag_limit"]
    for b, c in comparison["bands"].items():
        p = c["ks_p"]
        entries.append(entry(f"ks_p_{b}", f"two-sided KS p of the {b} magnitudes, generated vs real, mag < {lim:g}",
                             PAPER_KS_P.get(b), p, "", f"> {GOALS['ks_p_min']}", _holds(p > GOALS["ks_p_min"], p)))
    for b, c in comparison["bands"].items():
        d = c["median_offset"]
        entries.append(entry(f"median_offset_{b}", f"median {b} magnitude, generated - real, mag < {lim:g}",
                             f"within {PAPER_MEDIAN_OFFSET}", d, "mag", f"|x| <= {GOALS['median_offset_max']}",
                             _holds(abs(d) <= GOALS["median_offset_max"], d)))
    r = comparison["counts_ratio"]
    tol = GOALS["counts_ratio_tolerance"]
    entries.append(entry("counts_ratio", "source counts per arcmin^2, generated / real", None, r, "",
                         f"within {tol:.0%} of 1", _holds(abs(r - 1) <= tol, r)))
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
    return {"study": "smith_geach19", "entries": entries, "comparison": dict(comparison),
            "generation": dict(generation)}


__all__ = ["compute_metrics"]
