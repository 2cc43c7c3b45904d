"""Headline metrics of the anomaly study from the SED-error table (:func:`.sed.score_sets`).

The comparison sample of every ranking is the normal validation galaxies brighter than ``sed.bright_mag`` in the
last output band (F444W), against the anomalies brighter than the same limit: fainter objects' SED errors are set by
the noise, not by the prediction. AUCs carry a bootstrap 68 % interval (objects resampled within each class), and
so do the medians of the SED error over the normal galaxies: over a few dozen of them the median moves by a few
hundredths of a magnitude with the sample alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.metrics import bootstrap_median, entry, plural_label, ranked_auc
from workflow_scripts.studies.pearce_casey23.paper import GOALS, PAPER_STATEMENTS
from workflow_scripts.studies.pearce_casey23.sed import auc

#: bootstrap draws of the AUC intervals
N_BOOTSTRAP = 500
METHODS = ("cgan", "baseline")
#: the cGAN with its bias on the training cutouts taken out (when the table has it)
CALIBRATED = "cgan_calibrated"
#: ours: the baseline's regressor on the noise-free truth magnitudes (embedded data; :mod:`.sed`)
TRUTH = "truth_photometry"
#: the detectors' names in the scorecard's side-by-side table of anomaly detectors
SIDE_NAMES = {"cgan": "cGAN LW SED error", "baseline": "photometry-only baseline LW SED error",
              CALIBRATED: "cGAN LW SED error, bias-calibrated",
              TRUTH: "photometry-only LW SED error at infinite S/N (truth magnitudes), ours"}
#: ours, beyond the paper: colour structure inside the aperture (:mod:`.sed`, "core excess"), column -> name
CORE_DETECTORS = {"cgan_core_excess": "cGAN LW core excess, true - predicted, ours",
                  "gradient_core_excess": "LW - SW core share, no learning, ours"}
#: their headline entry ids, per class
CORE_ENTRIES = {"cgan_core_excess": "core", "gradient_core_excess": "gradient"}


def normal_label(table: pd.DataFrame) -> np.ndarray:
    """Rows counted as normal galaxies: ``normal`` on embedded data, anything not an anomaly on real data."""
    lab = table["label"].astype(str)
    if (lab == "normal").any():
        return (lab == "normal").to_numpy()
    return (~lab.isin(("ero", "merger", "star"))).to_numpy()


def groups(table: pd.DataFrame, study: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The comparison sample: bright normal validation galaxies, bright EROs, bright mergers."""
    band = study["output_bands"][-1]
    bright = (table[f"mag_{band}"].to_numpy(float) < study["sed"]["bright_mag"])
    val = table["set"].eq("validation").to_numpy()
    return {"normal": table[val & bright & normal_label(table)],
            "ero": table[~val & bright & table["label"].eq("ero").to_numpy()],
            "merger": table[~val & bright & table["label"].eq("merger").to_numpy()]}


def compute_metrics(table: pd.DataFrame, study: Mapping[str, Any], seed: int) -> dict[str, Any]:
    g = groups(table, study)
    bright = study["sed"]["bright_mag"]
    band = study["output_bands"][-1]
    detail: dict[str, Any] = {"n": {k: int(len(v)) for k, v in g.items()}, "bright_mag": bright, "band": band}
    methods = [m for m in (*METHODS, CALIBRATED, TRUTH) if f"{m}_sed_error" in table.columns]
    for m in methods:
        col = f"{m}_sed_error"
        detail[m] = {"sed_error_median": {k: _median(v[col]) for k, v in g.items()}, "auc": {}, "auc_chi2": {},
                     "sed_error_median_interval_68": list(bootstrap_median(g["normal"][col], seed, N_BOOTSTRAP))}
        for cls in ("ero", "merger"):
            # with the normal galaxies re-weighted to the class's magnitudes (as the likelihood study's detectors)
            r = ranked_auc(g[cls][col].to_numpy(), g["normal"][col].to_numpy(), g[cls][f"mag_{band}"],
                           g["normal"][f"mag_{band}"], seed, N_BOOTSTRAP)
            detail[m]["auc"][cls] = {k: r[k] for k in ("auc", "p16", "p84", "mag_matched")}
            if f"{m}_chi2" in table.columns:
                detail[m]["auc_chi2"][cls] = auc(g[cls][f"{m}_chi2"].to_numpy(),
                                                 g["normal"][f"{m}_chi2"].to_numpy())
        per_band = {}
        for b in study["output_bands"]:
            v = g["normal"][f"{m}_dmag_{b}"].to_numpy(float)
            per_band[b] = {"median_abs": _median(np.abs(v)), "median": _median(v)}
        detail[m]["validation_dmag"] = per_band
    cg, bl = detail["cgan"], detail["baseline"]
    sed_med = cg["sed_error_median"]["normal"]
    ero_med = cg["sed_error_median"]["ero"]
    m_auc, e_auc = cg["auc"]["merger"]["auc"], cg["auc"]["ero"]["auc"]
    b_m_auc, b_e_auc = bl["auc"]["merger"]["auc"], bl["auc"]["ero"]["auc"]

    def holds(ok: bool, value: Any) -> bool | None:
        return None if value is None or not np.isfinite(value) else bool(ok)

    def interval(m: str) -> str:
        lo, hi = detail[m]["sed_error_median_interval_68"]
        return f" (68 % bootstrap interval {lo:.3f}-{hi:.3f})" if np.isfinite(lo) else ""

    entries = [
        entry("sed_error_median", f"median LW SED error (mean |dmag| over {', '.join(study['output_bands'])}), "
              f"the {len(g['normal'])} normal validation galaxies with {band} < {bright:g}{interval('cgan')}",
              PAPER_STATEMENTS["sed_error_median"], sed_med, "mag", f"<= {GOALS['sed_error_median']}",
              holds(sed_med is not None and sed_med <= GOALS["sed_error_median"], sed_med)),
        entry("ero_sed_error_median", f"median LW SED error of the EROs with {band} < {bright:g}",
              PAPER_STATEMENTS["ero_sed_error_median"], ero_med, "mag", None, None),
        entry("merger_auc", "ROC AUC of the cGAN SED error, mergers vs normal validation galaxies",
              PAPER_STATEMENTS["merger_auc"], m_auc, "", f">= {GOALS['merger_auc']}",
              holds(m_auc >= GOALS["merger_auc"], m_auc)),
        entry("ero_auc", "ROC AUC of the cGAN SED error, EROs vs normal validation galaxies",
              PAPER_STATEMENTS["ero_auc"], e_auc, "", f"<= {GOALS['ero_auc']}",
              holds(e_auc <= GOALS["ero_auc"], e_auc)),
        entry("baseline_merger_auc", "the same AUC for the photometry-only baseline (SW magnitudes -> LW)", None,
              b_m_auc, "", None, None),
        entry("baseline_ero_auc", "the same ERO AUC for the photometry-only baseline", None, b_e_auc, "", None,
              None),
        entry("baseline_sed_error_median", f"median LW SED error of the baseline, same galaxies{interval('baseline')}",
              None, bl["sed_error_median"]["normal"], "mag", None, None),
    ]
    if CALIBRATED in detail:
        ca = detail[CALIBRATED]
        entries += [
            entry("sed_error_median_calibrated", "median LW SED error of the same galaxies after the cGAN's own bias "
                  f"(median dmag by magnitude on its training cutouts) is taken out: ours, beyond the paper"
                  f"{interval(CALIBRATED)}", None,
                  ca["sed_error_median"]["normal"], "mag", None, None),
            entry("merger_auc_calibrated", "the merger AUC of the bias-calibrated cGAN SED error", None,
                  ca["auc"]["merger"]["auc"], "", None, None)]
    if "noise_sed_error" in table.columns:
        noise = _median(g["normal"]["noise_sed_error"])
        detail["noise_sed_error_median"] = noise
        entries.append(entry("noise_sed_error_median", "ours, the noise floor: median LW SED error that the "
                             "catalogue's flux errors alone give a perfect prediction, the same galaxies", None,
                             noise, "mag", None, None))
    if TRUTH in detail:
        tr = detail[TRUTH]
        what = ("ours, the floor (embedded data): the baseline's regressor fitted to the noise-free truth magnitudes "
                "of the normal training galaxies")
        entries += [
            entry("truth_photometry_sed_error_median", f"{what}, median LW SED error of the same galaxies: what "
                  "the population's SED degeneracies (redshift, template, dust) leave to any prediction from SW "
                  "photometry", None, tr["sed_error_median"]["normal"], "mag", None, None),
            *(entry(f"truth_photometry_{cls}_auc", f"{what}, ROC AUC of its SED error, {plural_label(cls)} vs "
                    f"normal validation galaxies: is their total SED anomalous? (68 % bootstrap interval "
                    f"{tr['auc'][cls]['p16']:.2f}-{tr['auc'][cls]['p84']:.2f})", None, tr["auc"][cls]["auc"], "",
                    None, None) for cls in ("merger", "ero"))]
    scored = (f"{len(g['normal'])} normal validation galaxies, {len(g['merger'])} mergers, {len(g['ero'])} EROs; "
              f"{band} < {bright:g}")
    side = [{"detector": SIDE_NAMES[m] + " (high flags)", "scored": scored,
             **{f"{cls}_auc": detail[m]["auc"][cls]["auc"] for cls in ("merger", "ero")},
             **{f"{cls}_auc_mag_matched": detail[m]["auc"][cls]["mag_matched"] for cls in ("merger", "ero")}}
            for m in methods]
    core = core_metrics(g, band, seed, scored)
    entries += core.pop("entries")
    side += core.pop("side_by_side")
    if core:
        detail["core"] = core
    return {"study": "pearce_casey23", "entries": entries, "side_by_side": {"anomalies": side}, **detail}


def _median(values: Any) -> float | None:
    """Median of the finite values; None when there are none."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def core_metrics(g: Mapping[str, pd.DataFrame], band: str, seed: int, scored: str) -> dict[str, Any]:
    """Ours: the core-excess detectors (:data:`CORE_DETECTORS`, present in the table) ranked as the SED errors are:
    entries ``{merger,ero}_auc_{core,gradient}``, side-by-side rows, and per detector the AUCs."""
    out: dict[str, Any] = {"entries": [], "side_by_side": []}
    for col, name in CORE_DETECTORS.items():
        if col not in g["normal"].columns:
            continue
        row: dict[str, Any] = {"detector": f"{name} (high flags)", "scored": scored}
        out[col] = {}
        for cls in ("merger", "ero"):
            r = ranked_auc(g[cls][col].to_numpy(float), g["normal"][col].to_numpy(float), g[cls][f"mag_{band}"],
                           g["normal"][f"mag_{band}"], seed, N_BOOTSTRAP)
            out[col][cls] = {k: r[k] for k in ("auc", "p16", "p84", "mag_matched")}
            row[f"{cls}_auc"], row[f"{cls}_auc_mag_matched"] = r["auc"], r["mag_matched"]
            what = name.removesuffix(", ours")
            out["entries"].append(entry(
                f"{cls}_auc_{CORE_ENTRIES[col]}", f"ours, beyond the paper: ROC AUC of the {what}, "
                f"{plural_label(cls)} vs normal validation galaxies (68 % bootstrap interval {r['p16']:.2f}-"
                f"{r['p84']:.2f}; {r['mag_matched']:.2f} magnitude-matched)", None, r["auc"], "", None, None))
        out["side_by_side"].append(row)
    return out


__all__ = ["CALIBRATED", "CORE_DETECTORS", "METHODS", "TRUTH", "compute_metrics", "core_metrics", "groups",
           "normal_label"]
