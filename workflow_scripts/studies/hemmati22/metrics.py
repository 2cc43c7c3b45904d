"""The study's metrics: detection fractions in bins (Fig 5, 9), the summary beside the paper's values with its
headline entries in the shared schema (:mod:`workflow_scripts.metrics`), showcase picks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


from workflow_scripts.errors import StudyError
from workflow_scripts.metrics import entry
from workflow_scripts.studies.hemmati22.paper import FIG5_PARAMETERS, PAPER, PAPER_PHOTOMETRY

log = logging.getLogger(__name__)
#: bins of each blend parameter in Fig 5 (equal width between these percentiles of the sample)
N_BINS = 8
BIN_PERCENTILES = (1.0, 99.0)
#: goal of the low-res fraction: resolution matters, HST-like images separate far more blends than HSC-like ones
#: (paper 80 vs 10 %); we ask for at least this gap in fraction
RESOLUTION_GAP = 0.3
#: goal of the false-positive rates: single galaxies are rarely split in two (paper ~1 %); we ask for below this
MAX_FALSE_POSITIVE_RATE = 0.05


def methods_of(blends: pd.DataFrame) -> list[str]:
    return [c.removeprefix("outcome_") for c in blends.columns if c.startswith("outcome_")]


def binned_fractions(blends: pd.DataFrame, parameters: Sequence[str] = FIG5_PARAMETERS, *,
                     detected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Detection fraction of every method in bins of every parameter, long format (the figures' input).

    ``detected``: the protocol "as coded" (:func:`..as_coded.detect_as_coded`'s blend table, one row per blend in
    the order of ``blends``): its ``detected_{method}`` booleans replace the ``outcome_{method}`` columns, over
    the same bins, so that both protocols can be drawn side by side."""
    from workflow_scripts.detection import detection_fraction

    if detected is None:
        outcomes = {m: blends[f"outcome_{m}"].to_numpy() for m in methods_of(blends)}
    else:
        if len(detected) != len(blends):
            raise StudyError(f"binned_fractions: {len(detected)} as-coded rows for {len(blends)} blends")
        outcomes = {c.removeprefix("detected_"): detected[c].to_numpy(dtype=bool)
                    for c in detected.columns if c.startswith("detected_")}
    rows = []
    for param in parameters:
        values = blends[param].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        edges = np.linspace(*np.percentile(finite, BIN_PERCENTILES), N_BINS + 1)
        for method, outcome in outcomes.items():
            df = detection_fraction(outcome, values, edges)
            df = df.rename(columns={"bin_lo": "left", "bin_hi": "right", "bin_centre": "centre",
                                    "ci_lo": "ci_low", "ci_hi": "ci_high"})
            df.insert(0, "method", method)
            df.insert(0, "parameter", param)
            rows.append(df)
    return pd.concat(rows, ignore_index=True)


def summarise(blends: pd.DataFrame, isolated: pd.DataFrame, gan_models: Mapping[str, str],
              photometry: Mapping[str, Any] | None = None,
              as_coded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json: the headline entries (:func:`headline_entries`, then :func:`as_coded_entries` when the
    protocol "as coded" ran), then as detail our detection fractions, false-positive rates and precision/recall by
    method beside the paper's, photometry.json and the as-coded summary when given."""
    from workflow_scripts.detection import outcome_fractions, precision_recall

    ours: dict[str, Any] = {}
    for method in methods_of(blends):
        fractions = outcome_fractions(blends[f"outcome_{method}"].to_numpy())
        pr = precision_recall(blends[f"outcome_{method}"].to_numpy(),
                              isolated[f"false_positive_{method}"].to_numpy(dtype=bool))
        ours[method] = {"detection_fraction": fractions["both"]["fraction"],
                        "detection_fraction_ci": [fractions["both"]["ci_lo"], fractions["both"]["ci_hi"]],
                        "one_found": fractions["one"]["fraction"], "none_found": fractions["none"]["fraction"],
                        "false_positive_rate": pr["false_positive_rate"],
                        "precision": pr["precision"], "recall": pr["recall"], "f1": pr["f1"]}
    gan, gan7 = gan_models["gan"], gan_models["gan7"]
    frac = {m: ours[m]["detection_fraction"] for m in ours}
    headline = {
        "detection_fraction": {"hi": frac["hi"], "lo": frac["lo"], "gan": frac[gan]},
        "false_positive_rate": {"hi": ours["hi"]["false_positive_rate"], "lo": ours["lo"]["false_positive_rate"],
                                "gan": ours[gan]["false_positive_rate"]},
        "gan7_minus_gan": frac[gan7] - frac[gan],
        "ordering_hi_gan_lo": bool(frac["hi"] > frac[gan] > frac["lo"]),
    }
    entries = headline_entries(ours, gan_models, photometry)
    if as_coded is not None:
        entries += as_coded_entries(as_coded, gan_models)
    for e in entries:
        log.info("%s: ours %s, paper %s, goal %s: %s", e["id"], e["ours"], e["paper"], e["goal"], e["holds"])
    out = {"study": "hemmati22", "entries": entries,
           "n_blends": int(len(blends)), "n_isolated": int(len(isolated)), "gan_models": dict(gan_models),
           "paper": PAPER, "ours": headline, "by_method": ours}
    if photometry is not None:
        out["photometry"] = dict(photometry)
    if as_coded is not None:
        out["as_coded"] = dict(as_coded)
    return out


#: goal of the as-coded low-res fraction (issue: the paper's ~10 % within 5 %)
AS_CODED_LO_TOLERANCE = 0.05
#: goal of the as-coded photometry improvement (the paper's "> 10x" on the authors' subset; we ask for half)
AS_CODED_PHOTOMETRY_MIN = 5.0


def as_coded_entries(as_coded: Mapping[str, Any], gan_models: Mapping[str, str]) -> list[dict[str, Any]]:
    """Headline entries of the protocol "as coded" (:mod:`.as_coded`): detection fractions of hi-res, low-res and
    the headline GAN (when it is a one-band model), and the GAN's combined false-positive rate."""
    by = as_coded["by_method"]
    paper = PAPER["detection_fraction"]
    gan = gan_models["gan"]
    frac = {m: v["detection_fraction"] for m, v in by.items()}
    found = "blends with exactly two matched peaks, authors' detector"
    lo_ok = abs(frac["lo"] - paper["lo"]) <= AS_CODED_LO_TOLERANCE
    out = [entry("detection_fraction_hi_as_coded", f"{found}, high-res images", paper["hi"], frac["hi"], "fraction",
                 "> lo", frac["hi"] > frac["lo"]),
           entry("detection_fraction_lo_as_coded", f"{found}, low-res images as the authors degraded them (~0.3\" "
                 "effective PSF)", paper["lo"], frac["lo"], "fraction",
                 f"{paper['lo']:.2f} +- {AS_CODED_LO_TOLERANCE:.2f}", lo_ok)]
    if gan in by:
        g = by[gan]
        out += [entry("detection_fraction_gan_as_coded", f"{found}, GAN images ({gan})", paper["gan"],
                      g["detection_fraction"], "fraction", "hi > gan > lo",
                      frac["hi"] > g["detection_fraction"] > frac["lo"]),
                entry("false_positive_rate_gan_as_coded", f"authors' definition: singles with > 1 peak plus blends "
                      f"with 1 peak in hi and lo but > 1 in the GAN ({gan}), over all stamps",
                      PAPER["false_positive_rate"], g["false_positive_rate"], "fraction",
                      f"< {MAX_FALSE_POSITIVE_RATE}", g["false_positive_rate"] < MAX_FALSE_POSITIVE_RATE)]
    phot = as_coded.get("photometry") or {}
    model = phot.get("model")
    model_text = {"bdf": "bdf, bulge + disk with a free bulge fraction, as theirs"}.get(model, model)
    if "improvement_factor" in phot:
        imp = phot["improvement_factor"]
        out.append(entry("photometry_improvement_as_coded", "median |dF/F| of the dominant source, low-res vs GAN "
                         f"positions, on the authors' subset ({phot.get('n_measured', 0)} blends with 2 hi, 1 lo "
                         "and 2 GAN peaks), fitted with their PSF (the target's at a third of the pixel)"
                         + (f" and galaxy model {model_text}" if model else "")
                         + _interval_text(phot.get("improvement_factor_interval_68")),
                         f"{PAPER_PHOTOMETRY['improvement_factor']}x", imp, "x",
                         f">= {AS_CODED_PHOTOMETRY_MIN:g}", None if imp is None else imp >= AS_CODED_PHOTOMETRY_MIN))
    if "improvement_factor_true_positions" in phot:
        out.append(entry("photometry_improvement_as_coded_true_positions", "the same with the two true centres in "
                         "place of the GAN peaks (the most any position finder gives with this fit; "
                         f"{phot.get('n_measured_true_positions', 0)} blends)"
                         + _interval_text(phot.get("improvement_factor_true_positions_interval_68")), None,
                         phot["improvement_factor_true_positions"], "x", None, None))
    return out


def _interval_text(interval: Sequence[float] | None) -> str:
    """`` (68 % bootstrap interval a-b)`` for an entry's text, or nothing."""
    return "" if not interval else f" (68 % bootstrap interval {interval[0]:.1f}-{interval[1]:.1f})"


def photometry_improvement(photometry: Mapping[str, Any] | None) -> float | None:
    """The smaller of the scatter and |bias| improvement factors of GAN over low-res positions (photometry.json;
    the paper's > 10x holds for both), None where either could not be measured."""
    imp = (photometry or {}).get("ours", {}).get("improvement_factor", {})
    factors = [imp.get("scatter"), imp.get("bias")]
    return None if any(f is None for f in factors) else float(min(factors))


def headline_entries(by_method: Mapping[str, Mapping[str, Any]], gan_models: Mapping[str, str],
                     photometry: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The study's headline entries ({id, what, paper, ours, unit, goal, holds}) from the per-method summary of
    :func:`summarise`: detection fractions of hi, lo, the GAN and the 7-band GAN, false positives, photometry."""
    frac = {m: v["detection_fraction"] for m, v in by_method.items()}
    hi, lo, gan, gan7 = frac["hi"], frac["lo"], frac[gan_models["gan"]], frac[gan_models["gan7"]]
    fpr_gan, fpr_hi = (by_method[gan_models["gan"]]["false_positive_rate"], by_method["hi"]["false_positive_rate"])
    paper = PAPER["detection_fraction"]
    improvement = photometry_improvement(photometry)
    found = "blends with both galaxies found"
    return [
        entry("detection_fraction_hi", f"{found}, high-res images", paper["hi"], hi, "fraction", "> gan > lo",
              hi > gan > lo),
        entry("detection_fraction_lo", f"{found}, low-res (HSC-like) images", paper["lo"], lo, "fraction",
              f"< hi - {RESOLUTION_GAP}", lo < hi - RESOLUTION_GAP),
        entry("detection_fraction_gan", f"{found}, GAN images ({gan_models['gan']})", paper["gan"], gan, "fraction",
              "> lo", gan > lo),
        entry("detection_fraction_gan7", f"{found}, 7-band GAN images ({gan_models['gan7']})",
              f"gan + {PAPER['gan7_minus_gan']:.2f}", gan7, "fraction", "> gan", gan7 > gan),
        entry("false_positive_rate_hi", "single galaxies split into two, high-res images",
              PAPER["false_positive_rate"], fpr_hi, "fraction", f"< {MAX_FALSE_POSITIVE_RATE}",
              fpr_hi < MAX_FALSE_POSITIVE_RATE),
        entry("false_positive_rate_gan", f"single galaxies split into two, GAN images ({gan_models['gan']})",
              PAPER["false_positive_rate"], fpr_gan, "fraction", f"< {MAX_FALSE_POSITIVE_RATE}",
              fpr_gan < MAX_FALSE_POSITIVE_RATE),
        entry("photometry_improvement", "dominant source's delta-mag at GAN vs low-res positions: the smaller of "
              "the scatter and |bias| ratios", f"{PAPER_PHOTOMETRY['improvement_factor']}x", improvement, "x",
              f"> {PAPER_PHOTOMETRY['improvement_factor_min']:g}",
              None if improvement is None else improvement > PAPER_PHOTOMETRY["improvement_factor_min"]),
    ]


def showcase_blends(detections: pd.DataFrame, method: str = "hi", n: int = 3) -> np.ndarray:
    """Indexes of ``n`` blends for the figures: found in hi-res, at low / middle / high separation quantiles."""
    candidates = np.flatnonzero(detections[f"outcome_{method}"].to_numpy() == "both")
    if len(candidates) < n:
        candidates = np.arange(len(detections))
    sep = detections["sep_over_fwhm_sum"].to_numpy()[candidates]
    order = candidates[np.argsort(sep, kind="stable")]
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]
