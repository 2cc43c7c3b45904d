"""Pearce-Casey et al. 2023: the one home of the paper's statements, labels and colours the study's metrics and
figures share."""

from __future__ import annotations

#: what the paper says about each headline quantity (it gives no numbers for them: Fig 1 shows distributions and
#: examples). Goals come from our issue: the demo must meet them.
PAPER_STATEMENTS = {
    "sed_error_median": "Fig 1a: most validation galaxies have small LW SED errors",
    "ero_sed_error_median": "Fig 1b/c: EROs are predicted well",
    "merger_auc": "Fig 1d/e: a merger is predicted badly (anomaly)",
    "ero_auc": "EROs are not flagged",
}
GOALS = {"sed_error_median": 0.15, "merger_auc": 0.8, "ero_auc": 0.65}
#: object labels of the embedded truth (normal galaxies, stars, the two anomalies) and of unmatched detections
LABELS = ("normal", "star", "ero", "merger", "unmatched")
ANOMALIES = ("ero", "merger")
#: colours shared by the figures
COLOURS = {"normal": "0.5", "ero": "tab:red", "merger": "tab:blue", "cgan": "tab:purple", "baseline": "tab:green",
           "true": "k", "predicted": "tab:orange"}
#: Barro et al. 2023's ERO selection (applied to our own photometry where no truth labels exist)
BARRO_ERO = {"red_colour_min": 1.5, "f444w_max": 28.0, "blue_colour_max_abs": 0.5}
