"""The study's metrics: detection fractions in bins (Fig 5, 9), the summary beside the paper's values, showcase picks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


from workflow_scripts.studies.hemmati22.paper import FIG5_PARAMETERS, PAPER

log = logging.getLogger(__name__)
#: bins of each blend parameter in Fig 5 (equal width between these percentiles of the sample)
N_BINS = 8
BIN_PERCENTILES = (1.0, 99.0)


def methods_of(blends: pd.DataFrame) -> list[str]:
    return [c.removeprefix("outcome_") for c in blends.columns if c.startswith("outcome_")]


def binned_fractions(blends: pd.DataFrame, parameters: Sequence[str] = FIG5_PARAMETERS) -> pd.DataFrame:
    """Detection fraction of every method in bins of every parameter, long format (the figures' input)."""
    from workflow_scripts.detection import detection_fraction

    rows = []
    for param in parameters:
        values = blends[param].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        edges = np.linspace(*np.percentile(finite, BIN_PERCENTILES), N_BINS + 1)
        for method in methods_of(blends):
            df = detection_fraction(blends[f"outcome_{method}"].to_numpy(), values, edges)
            df = df.rename(columns={"bin_lo": "left", "bin_hi": "right", "bin_centre": "centre",
                                    "ci_lo": "ci_low", "ci_hi": "ci_high"})
            df.insert(0, "method", method)
            df.insert(0, "parameter", param)
            rows.append(df)
    return pd.concat(rows, ignore_index=True)


def summarise(blends: pd.DataFrame, isolated: pd.DataFrame, gan_models: Mapping[str, str]) -> dict[str, Any]:
    """metrics.json: our detection fractions, false-positive rates and precision/recall beside the paper's."""
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
    return {"study": "hemmati22", "n_blends": int(len(blends)), "n_isolated": int(len(isolated)),
            "gan_models": dict(gan_models), "paper": PAPER, "ours": headline, "by_method": ours}


def showcase_blends(detections: pd.DataFrame, method: str = "hi", n: int = 3) -> np.ndarray:
    """Indexes of ``n`` blends for the figures: found in hi-res, at low / middle / high separation quantiles."""
    candidates = np.flatnonzero(detections[f"outcome_{method}"].to_numpy() == "both")
    if len(candidates) < n:
        candidates = np.arange(len(detections))
    sep = detections["sep_over_fwhm_sum"].to_numpy()[candidates]
    order = candidates[np.argsort(sep, kind="stable")]
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]
