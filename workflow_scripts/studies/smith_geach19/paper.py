"""Smith & Geach 2019: the one home of the paper's values the study's metrics and figures quote."""

from __future__ import annotations

#: two-sided KS p-values of the magnitude distributions (generated vs real, mag < 28) per band
PAPER_KS_P = {"F606W": 0.16, "F775W": 0.63, "F814W": 0.75}
#: median magnitudes agree within this (mag)
PAPER_MEDIAN_OFFSET = 0.02
#: one 3232^2 x 3 realisation on a Xeon E5-2650 v3 (seconds)
PAPER_REALISATION_SECONDS = 15.0
PAPER_REALISATION_SIDE = 3232
GOALS = {"ks_p_min": 0.05, "median_offset_max": 0.1, "counts_ratio_tolerance": 0.2}
COLOURS = {"real": "k", "generated": "tab:orange", "catalogue mock": "tab:blue"}
