"""Headline metrics of the likelihood-ratio study and the matched-bin comparison table.

The comparison set is scored against the held-out real galaxies: AUCs of flagging it as out-of-distribution by the
LLR (archetype and Ren+19 denominators) and by the raw likelihood; the share of |LLR| in background pixels; the
bits/dim of each model on held-out data of its own kind; the mean LLR difference in matched bins. With the embedded
twin the galaxies of both sets are the same objects, so the per-galaxy LLR difference is paired and its rank
correlation with the true clump flux (``truth_clump_frac``) says whether the LLR measures what was removed.

Two consequences of the twin are reported beside the AUCs. Only the held-out galaxies that have clumps differ from
their twins (a share ``f`` of them; the others are the same pixels), so no score can flag the twins with an AUC above
``0.5 + f / 2`` (:func:`auc_ceiling`): a pair of identical images is at best a tie. And because a twin shares its
galaxy's noise, size and brightness, the sign of the paired LLR difference (:func:`paired_wins`) tests the clumps
alone, free of the galaxy-to-galaxy spread of the LLR that an AUC between two sets has to overcome.

Beyond the paper (:func:`anomaly_metrics`): the same likelihoods, from PixelCNNs trained on the anomaly study's normal
galaxies, tried as detectors of its mergers and EROs, with the direction fixed in advance (a low score flags, as for
the clump-free set); the rows go to the scorecard beside the cGAN's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr

from workflow_scripts.metrics import entry, plural_label, ranked_auc
from workflow_scripts.studies.zanisi21.analysis import bootstrap_mean_difference, matched_bins, ood_auc
from workflow_scripts.studies.zanisi21.paper import (GOALS, PAPER_BACKGROUND_LLR, PIXELCNNPP_CIFAR10_BPD,
                                                     REN19_AUROC_LIKELIHOOD, REN19_AUROC_RATIO)

#: columns of the matched bins: config name -> column of the scored tables
BIN_COLUMNS = {"mag": "mag", "rhalf_arcsec": "sersic_rhalf_arcsec", "sersic_n": "sersic_n"}


def _finite(v: float) -> bool:
    return v is not None and bool(np.isfinite(v))


def with_morphology(scores: pd.DataFrame, morphology: pd.DataFrame, band: str) -> pd.DataFrame:
    """The scored table with the fitted morphology (by stamp ``id`` and ``field``) and ``mag`` = ``mag_{band}``."""
    keys = [k for k in ("id", "field") if k in scores.columns and k in morphology.columns]
    extra = [c for c in morphology.columns if c not in scores.columns or c in keys]
    out = scores.merge(morphology[extra], on=keys, how="left")
    out["mag"] = out[f"mag_{band}"]
    return out


def clump_correlation(real: pd.DataFrame, other: pd.DataFrame, score: str = "llr") -> dict[str, Any]:
    """Paired (same ``id``) ``score`` difference real - twin vs the true clump flux fraction: Spearman rho, p, n."""
    if "truth_clump_frac" not in real.columns:
        return {"rho": None, "p": None, "n": 0}
    m = real[["id", score, "truth_clump_frac"]].merge(other[["id", score]], on="id", suffixes=("", "_other"))
    d = m[score] - m[f"{score}_other"]
    m, d = m[np.isfinite(d)], d[np.isfinite(d)]
    if len(m) < 3:
        return {"rho": None, "p": None, "n": int(len(m))}
    rho, p = spearmanr(d, m["truth_clump_frac"])
    return {"rho": float(rho), "p": float(p), "n": int(len(m)), "mean_paired_difference": float(d.mean())}


def clumpy_auc(real: pd.DataFrame, other: pd.DataFrame, score: str = "llr") -> dict[str, Any]:
    """AUC of flagging the twins of the held-out galaxies that have clumps (``truth_clump_frac`` > 0) by -``score``,
    against those galaxies: the part of the sets that differs (a galaxy without clumps is its twin, pixel for
    pixel). Embedded truth only: ``auc`` None and ``n`` 0 without the column or without two of each."""
    if "truth_clump_frac" not in real.columns:
        return {"auc": None, "n": 0}
    ids = real.loc[real["truth_clump_frac"].to_numpy(float) > 0, "id"]
    r, o = real[real["id"].isin(ids)], other[other["id"].isin(ids)]
    if len(r) < 2 or len(o) < 2:
        return {"auc": None, "n": int(len(r))}
    return {"auc": float(ood_auc(-r[score], -o[score])), "n": int(len(r))}


def auc_ceiling(real: pd.DataFrame) -> float | None:
    """The largest AUC any score can reach between held-out galaxies and their twins: ``0.5 + f / 2``, ``f`` the
    share with clumps (those without are their twins pixel for pixel: a tie at best). None without the truth."""
    if "truth_clump_frac" not in real.columns or not len(real):
        return None
    f = float(np.mean(real["truth_clump_frac"].to_numpy(float) > 0))
    return 0.5 + f / 2


def paired_wins(real: pd.DataFrame, other: pd.DataFrame, score: str = "llr") -> dict[str, Any]:
    """Over the held-out galaxies with clumps: the fraction whose ``score`` exceeds their own twin's, and the
    one-sided binomial (sign test) p of that many wins against 1/2. ``fraction`` None without the truth."""
    if "truth_clump_frac" not in real.columns:
        return {"fraction": None, "p": None, "n": 0}
    r = real.loc[real["truth_clump_frac"].to_numpy(float) > 0, ["id", score]]
    m = r.merge(other[["id", score]], on="id", suffixes=("", "_other"))
    m = m[np.isfinite(m[score]) & np.isfinite(m[f"{score}_other"])]
    if not len(m):
        return {"fraction": None, "p": None, "n": 0}
    wins = int((m[score] > m[f"{score}_other"]).sum())
    return {"fraction": wins / len(m), "p": float(binomtest(wins, len(m), 0.5, alternative="greater").pvalue),
            "n": int(len(m))}


def compute_metrics(tables: Mapping[str, pd.DataFrame], study: Mapping[str, Any], stamps: Mapping[str, Any],
                    archetypes: Mapping[str, Any], *, seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """``tables``: scored sets ``real_test``, ``other`` (with morphology) and ``archetype_test``."""
    real, other, arch = tables["real_test"], tables["other"], tables["archetype_test"]
    auc_llr = ood_auc(-real["llr"], -other["llr"])
    auc_llr_p = ood_auc(-real["llr_perturbed"], -other["llr_perturbed"])
    auc_lik = ood_auc(-real["logp_real"], -other["logp_real"])
    bg = float(np.nanmean(real["bg_share_llr"]))
    bg_p = float(np.nanmean(real["bg_share_llr_perturbed"]))
    bg_logp = float(np.nanmean(real["bg_share_logp"]))
    bg_pix = float(np.nanmean(real["bg_pixel_fraction"]))
    bpd_real = float(real["bpd_real"].mean())
    bpd_arch = float(arch["bpd_archetype"].mean())
    rng = np.random.default_rng([int(seed), 21])
    diff, err = bootstrap_mean_difference(real["llr"].to_numpy(float), other["llr"].to_numpy(float),
                                          int(study["bootstrap"]), rng)
    bins = {BIN_COLUMNS[k]: v for k, v in study["comparison_bins"].items()}
    table = matched_bins(real, other, "llr", bins, n_boot=int(study["bootstrap"]), seed=seed)
    table["property"] = table["property"].map({v: k for k, v in BIN_COLUMNS.items()})
    ceiling = auc_ceiling(real)
    paired = paired_truth_entries(real, other, "llr")
    clumps, clumpy, wins = paired["clumps"], paired["clumpy"], paired["wins"]
    n_fit = sum(a["galaxies"] for a in archetypes.values())
    n_fail = sum(a["fit_failed"] for a in archetypes.values())
    kind = study["comparison"]["kind"]
    what_other = "the clump-free twin" if kind == "twin" else f"survey {study['comparison'].get('survey')}"
    g_auc, g_bg = GOALS["llr_auc_min"], GOALS["background_fraction_max"]
    entries = [
        entry("bits_per_dim_real", "real PixelCNN on held-out real stamps", f"CIFAR-10: {PIXELCNNPP_CIFAR10_BPD}",
              bpd_real, "bits/dim", None, None),
        entry("bits_per_dim_archetype", "archetype PixelCNN on held-out archetypes", None, bpd_arch, "bits/dim",
              None, None),
        entry("llr_auc_smooth_vs_real", f"AUC of flagging {what_other} by -LLR (archetype denominator) vs held-out "
              "real galaxies" + (f" (no score can exceed {ceiling:.2f} here: see llr_auc_ceiling)"
                                 if ceiling is not None else ""), f"Ren+19: {REN19_AUROC_RATIO}", auc_llr, "",
              f">= {g_auc}", bool(auc_llr >= g_auc) if _finite(auc_llr) else None),
        entry("llr_perturbed_auc_smooth_vs_real", f"the same with Ren+19's perturbation background model "
              f"(mu {study.get('perturbation_mu', '?')})", f"Ren+19: {REN19_AUROC_RATIO}", auc_llr_p, "", None, None),
        entry("likelihood_auc_smooth_vs_real", f"AUC of flagging {what_other} by -log p (real model): the baseline",
              f"Ren+19: {REN19_AUROC_LIKELIHOOD}", auc_lik, "", "below the LLR's",
              bool(auc_lik < auc_llr) if _finite(auc_lik) and _finite(auc_llr) else None),
        entry("background_llr_fraction", "share of |LLR| in background pixels, mean over held-out real stamps",
              PAPER_BACKGROUND_LLR, bg, "fraction", f"<= {g_bg}", bool(bg <= g_bg) if _finite(bg) else None),
        entry("background_logp_fraction", f"the same for |log p| of the real model (background: {bg_pix:.0%} of "
              "the pixels)", None, bg_logp, "fraction", None, None),
        entry("mean_llr_difference", f"mean LLR, held-out real - {what_other}, bootstrap error {err:.2g}", None, diff,
              "nats", "> 0", bool(diff > 0) if _finite(diff) else None),
        entry("sersic_fit_failures", f"statmorph Sersic fits failed (of {n_fit} training and held-out galaxies)",
              None, n_fail / n_fit if n_fit else None, "fraction", None, None),
    ]
    entries += paired["entries"]["rho"]
    if ceiling is not None:
        entries.append(entry("llr_auc_ceiling", "the largest AUC any score can reach between the held-out galaxies "
                             "and their twins: 0.5 + half the share with clumps (the others are their twins pixel "
                             "for pixel)", None, ceiling, "", None, None))
    entries += paired["entries"]["clumpy"] + paired["entries"]["wins"]
    shared = shared_entries(real, other, arch, what_other) if "llr_shared" in real.columns else {}
    entries += shared.pop("entries", [])
    baselines = baseline_entries(real, other, what_other)
    entries += baselines.pop("entries")
    detail = {"aucs": {"llr": auc_llr, "llr_perturbed": auc_llr_p, "likelihood": auc_lik,
                       "llr_clumpy_only": clumpy["auc"], "ceiling": ceiling},
              "background": {"llr": bg, "llr_perturbed": bg_p, "logp": bg_logp, "pixels": bg_pix},
              "bits_per_dim": {"real_on_real": bpd_real, "archetype_on_archetype": bpd_arch,
                               "archetype_on_real": float(real["bpd_archetype"].mean()),
                               "real_on_archetype": float(arch["bpd_real"].mean()),
                               "real_on_other": float(other["bpd_real"].mean())},
              "mean_llr": {k: float(t["llr"].mean()) for k, t in tables.items()},
              "mean_logp_real": {k: float(t["logp_real"].mean()) for k, t in tables.items()},
              "llr_difference": {"mean": diff, "error": err}, "clumps": clumps, "paired_wins": wins,
              "counts": {k: int(len(t)) for k, t in tables.items()}, "stamps": dict(stamps.get("counts", {})),
              "archetypes": dict(archetypes)}
    if shared:
        detail["shared"] = shared
        detail["aucs"]["llr_shared"] = shared["auc"]
    detail["baselines"] = baselines
    detail["side_by_side"] = {"clump-free twin": twin_rows(real, other, what_other)}
    return {"study": "zanisi21", "entries": entries, **detail}, table


#: ours: the referee's baselines without learning, statistics of the statmorph fit that makes the archetypes (native
#: pixels): column -> name. Like the LLR, a low value flags the twin (clumps raise both).
BASELINES = {"sersic_chi2_dof": "chi2/dof of the single-Sersic fit", "smoothness": "CAS smoothness (clumpiness) S"}
#: the headline entry id of each baseline (the others stay in the detail and the side-by-side table)
BASELINE_ENTRY = {"sersic_chi2_dof": "sersic_chi2"}
#: the scores of the side-by-side table of flagging the twin: column -> detector (a low value flags the twin)
TWIN_DETECTORS = {"llr": "PixelCNN LLR, archetype denominator", "llr_perturbed": "PixelCNN LLR, Ren+19 denominator",
                  "llr_shared": "PixelCNN LLR, one model conditioned on the set, ours",
                  "logp_real": "PixelCNN log p of the real-galaxy model",
                  **{k: f"{v}, no learning" for k, v in BASELINES.items()}}


def _fitted(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """``table`` with ``column`` NaN where the statmorph fit is not usable (``ok`` False)."""
    out = table.copy()
    if "ok" in out.columns:
        out[column] = out[column].where(out["ok"].fillna(False).astype(bool))
    return out


def twin_rows(real: pd.DataFrame, other: pd.DataFrame, what_other: str) -> list[dict[str, Any]]:
    """Rows of the scorecard's side-by-side table of flagging ``what_other``: per detector (:data:`TWIN_DETECTORS`
    present in both tables) the AUC over all held-out galaxies, over those with clumps, and the paired wins."""
    rows = []
    for col, name in TWIN_DETECTORS.items():
        if col not in real.columns or col not in other.columns:
            continue
        r, o = (_fitted(real, col), _fitted(other, col)) if col in BASELINES else (real, other)
        n = int(min(np.isfinite(r[col].to_numpy(float)).sum(), np.isfinite(o[col].to_numpy(float)).sum()))
        row = {"detector": f"{name} (low flags)", "scored": f"{n} held-out galaxies and {what_other}",
               "auc": ood_auc(-r[col], -o[col])}
        if "truth_clump_frac" in real.columns:
            row["auc_clumpy_vs_twin"] = clumpy_auc(r, o, col)["auc"]
            row["paired_wins_clumpy"] = paired_wins(r, o, col)["fraction"]
        rows.append(row)
    return rows


def baseline_entries(real: pd.DataFrame, other: pd.DataFrame, what_other: str) -> dict[str, Any]:
    """Ours: the referee's baselines (:data:`BASELINES`) judged as the LLR is; entries for those in
    :data:`BASELINE_ENTRY` (``baseline_{id}_auc_smooth_vs_real``, ``_auc_clumpy_vs_twin``, ``_paired_wins_clumpy``)
    and the numbers of every one."""
    out: dict[str, Any] = {"entries": []}
    for col, name in BASELINES.items():
        if col not in real.columns or col not in other.columns:
            continue
        r, o = _fitted(real, col), _fitted(other, col)
        auc, clumpy, wins = ood_auc(-r[col], -o[col]), clumpy_auc(r, o, col), paired_wins(r, o, col)
        out[col] = {"auc": auc, "auc_clumpy_only": clumpy["auc"], "paired_wins": wins}
        if col not in BASELINE_ENTRY:
            continue
        lead = f"ours, the baseline without learning: the {name} (statmorph, native pixels), "
        key = f"baseline_{BASELINE_ENTRY[col]}"
        out["entries"].append(entry(f"{key}_auc_smooth_vs_real", lead + f"AUC of flagging {what_other} by its low "
                                    "value", None, auc, "", None, None))
        if clumpy["auc"] is not None:
            out["entries"].append(entry(f"{key}_auc_clumpy_vs_twin", lead + f"the AUC over the {clumpy['n']} held-out "
                                        "galaxies with clumps and their twins", None, clumpy["auc"], "", None, None))
        if wins["fraction"] is not None:
            out["entries"].append(entry(f"{key}_paired_wins_clumpy", lead + f"fraction of the {wins['n']} held-out "
                                        f"galaxies with clumps whose value exceeds their own twin's (sign test p "
                                        f"{wins['p']:.2g})", None, wins["fraction"], "fraction", None, None))
    return out


#: the lead of the shared model's entry descriptions
OURS_SHARED = "ours, beyond the paper: one PixelCNN conditioned on the set (real / archetype), "


def paired_truth_entries(real: pd.DataFrame, other: pd.DataFrame, score: str, lead: str = "") -> dict[str, Any]:
    """The entries that use the embedded truth (clump fractions, and twins paired by id) for one LLR column
    ``score``: ``{score}_clump_rank_correlation``, ``{score}_auc_clumpy_vs_twin``, ``{score}_paired_wins_clumpy``
    (``entries``: kind -> a list of zero or one entry, kinds ``rho``, ``clumpy``, ``wins``), and their numbers
    (``clumps``, ``clumpy``, ``wins``). ``lead`` starts each description."""
    clumps, clumpy, wins = (clump_correlation(real, other, score), clumpy_auc(real, other, score),
                            paired_wins(real, other, score))
    g_auc = GOALS["llr_auc_min"]
    out: dict[str, list[dict[str, Any]]] = {"rho": [], "clumpy": [], "wins": []}
    if clumps["rho"] is not None:
        out["rho"].append(entry(f"{score}_clump_rank_correlation", lead + "Spearman rho of the paired LLR difference "
                                f"(real - twin) and the true clump flux fraction ({clumps['n']} galaxies, p "
                                f"{clumps['p']:.2g})", None, clumps["rho"], "", "> 0", bool(clumps["rho"] > 0)))
    if clumpy["auc"] is not None:
        out["clumpy"].append(entry(f"{score}_auc_clumpy_vs_twin", lead + f"the LLR AUC over the {clumpy['n']} "
                                   "held-out galaxies with clumps and their twins (the others equal their twins "
                                   "pixel for pixel)", None, clumpy["auc"], "", f">= {g_auc}",
                                   bool(clumpy["auc"] >= g_auc)))
    if wins["fraction"] is not None:
        out["wins"].append(entry(f"{score}_paired_wins_clumpy", lead + f"fraction of the {wins['n']} held-out "
                                 f"galaxies with clumps whose LLR exceeds their own twin's (sign test p "
                                 f"{wins['p']:.2g})", None, wins["fraction"], "fraction", "> 0.5, sign test p < 0.05",
                                 bool(wins["fraction"] > 0.5 and wins["p"] < 0.05)))
    return {"entries": out, "clumps": clumps, "clumpy": clumpy, "wins": wins}


def shared_entries(real: pd.DataFrame, other: pd.DataFrame, arch: pd.DataFrame, what_other: str) -> dict[str, Any]:
    """The shared (class-conditional) model's LLR, ``llr_shared``, judged as the paper's two-model LLR is: metrics
    entries (``entries``) and the numbers behind them."""
    auc = ood_auc(-real["llr_shared"], -other["llr_shared"])
    bg = float(np.nanmean(real["bg_share_llr_shared"]))
    paired = paired_truth_entries(real, other, "llr_shared", lead=OURS_SHARED)
    clumps, clumpy, wins = paired["clumps"], paired["clumpy"], paired["wins"]
    g_bg = GOALS["background_fraction_max"]
    entries = [
        entry("bits_per_dim_shared", OURS_SHARED + "held-out real stamps as real, held-out archetypes as archetypes",
              None, float(np.mean([real["bpd_shared_real"].mean(), arch["bpd_shared_archetype"].mean()])),
              "bits/dim", None, None),
        entry("llr_shared_auc_smooth_vs_real", OURS_SHARED + f"AUC of flagging {what_other} by -LLR", None, auc, "",
              None, None),
        entry("llr_shared_background_fraction", OURS_SHARED + "share of |LLR| in background pixels",
              PAPER_BACKGROUND_LLR, bg, "fraction", f"<= {g_bg}", bool(bg <= g_bg) if _finite(bg) else None),
        *(e for k in ("clumpy", "wins", "rho") for e in paired["entries"][k]),
    ]
    return {"entries": entries, "auc": auc, "auc_clumpy_only": clumpy["auc"], "background": bg,
            "paired_wins": wins, "clumps": clumps,
            "bits_per_dim": {"real_on_real": float(real["bpd_shared_real"].mean()),
                             "archetype_on_archetype": float(arch["bpd_shared_archetype"].mean()),
                             "archetype_on_real": float(real["bpd_shared_archetype"].mean())},
            "mean_llr": {"real_test": float(real["llr_shared"].mean()), "other": float(other["llr_shared"].mean())}}


#: ours, beyond the paper: the likelihood scores tried as anomaly detectors on the anomaly study's labelled objects
#: (column of the scored tables -> name); a low value flags, as for the clump-free set
ANOMALY_DETECTORS = {"llr": "LLR, archetype denominator", "llr_perturbed": "LLR, Ren+19 perturbation denominator",
                     "logp_real": "log p of the real-galaxy PixelCNN"}
#: the referee's baseline beside them (when the scored sets were fitted): a high chi2/dof of the single-Sersic fit
ANOMALY_BASELINE = "chi2/dof of the single-Sersic fit, no learning"
#: the headline entry id of each detector (the rest stay in the detail and the scorecard's side-by-side table)
ANOMALY_ENTRY = {"llr": "llr", "logp_real": "likelihood", "sersic_chi2_dof": "sersic_chi2"}


def _usable(table: pd.DataFrame, col: str) -> np.ndarray:
    """``table[col]`` as floats; for a fit statistic (:data:`BASELINES`) NaN where the fit is not usable."""
    return (_fitted(table, col) if col in BASELINES else table)[col].to_numpy(float)


def _finite_counts(normal: pd.DataFrame, groups: Mapping[str, pd.DataFrame], col: str) -> dict[str, int]:
    return {k: int(np.isfinite(_usable(t, col)).sum()) for k, t in {"normal": normal, **groups}.items()}


def anomaly_sample(normal: pd.DataFrame, anomalies: pd.DataFrame,
                   settings: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], str]:
    """The scored objects the AUCs compare: normal galaxies, the anomalies by label (sorted), both brighter than
    ``auc_mag_max`` in the block's band (column ``mag`` added), and that selection in words."""
    band, cut = settings["band"], settings.get("auc_mag_max")
    hi = settings["sample"]["mag_max"] if cut is None else min(settings["sample"]["mag_max"], cut)
    normal, anomalies = (t.assign(mag=t[f"mag_{band}"]) for t in (normal, anomalies))
    normal, anomalies = normal[normal["mag"] < hi], anomalies[anomalies["mag"] < hi]
    labels = anomalies["label"].astype(str)
    groups = {lab: anomalies[labels == lab] for lab in sorted(labels.unique())}
    return normal, groups, f"{settings['survey']} {band} {settings['sample']['mag_min']:g} <= mag < {hi:g}"


def anomaly_metrics(normal: pd.DataFrame, anomalies: pd.DataFrame, settings: Mapping[str, Any], *, seed: int,
                    n_boot: int = 500) -> dict[str, Any]:
    """AUCs of flagging each label of ``anomalies`` (``label``: merger, ero, ...) against the held-out ``normal``
    galaxies by a low score of each of :data:`ANOMALY_DETECTORS`, with 68 % bootstrap intervals, over the objects
    brighter than ``settings["auc_mag_max"]`` in ``settings["band"]`` (the ``zanisi21.anomalies`` block).

    Each AUC also comes with the normal galaxies re-weighted to the label's magnitudes (``mag_matched``, the shared
    bins of ``MAG_MATCH_WIDTH``): what is left once brightness, which the raw likelihood tracks, is taken out.

    Returns ``entries`` (``anomaly_{label}_auc_llr`` and ``_likelihood``), ``side_by_side`` rows (one per
    detector: its AUC per label, for the scorecard to set beside the anomaly study's detectors), ``sample`` (what
    was scored, in words) and the numbers (``auc``, ``n``, ``median_mag``).
    """
    normal, groups, sample = anomaly_sample(normal, anomalies, settings)
    labels = list(groups)
    n = {"normal": int(len(normal)), **{lab: int(len(g)) for lab, g in groups.items()}}
    out: dict[str, Any] = {"n": n, "sample": sample, "auc": {}, "entries": [], "side_by_side": []}
    out["median_mag"] = {k: float(np.nanmedian(t["mag"])) if len(t) else None
                         for k, t in {"normal": normal, **groups}.items()}
    detectors = [(col, f"PixelCNN {name}", -1.0) for col, name in ANOMALY_DETECTORS.items()]
    if "sersic_chi2_dof" in normal.columns and "sersic_chi2_dof" in anomalies.columns:   # the fits' baseline
        detectors.append(("sersic_chi2_dof", ANOMALY_BASELINE, 1.0))
    for col, name, sign in detectors:
        lo_hi = "low" if sign < 0 else "high"
        counts = _finite_counts(normal, groups, col) if sign > 0 else n
        row: dict[str, Any] = {"detector": f"{name} ({lo_hi} flags)",
                               "scored": f"{counts['normal']} held-out normal galaxies, "
                                         + ", ".join(f"{counts[lab]} {plural_label(lab)}" for lab in labels)
                                         + f"; {sample}" + ("; failed fits left out" if sign > 0 else "")}
        for lab, g in groups.items():
            pos, neg = sign * _usable(g, col), sign * _usable(normal, col)
            r = ranked_auc(pos, neg, g["mag"], normal["mag"], seed, n_boot)
            a, p16, p84, matched = r["auc"], r["p16"], r["p84"], r["mag_matched"]
            out["auc"].setdefault(col, {})[lab] = r
            row[f"{lab}_auc"] = a
            row[f"{lab}_auc_mag_matched"] = matched
            if col in ANOMALY_ENTRY:
                out["entries"].append(entry(
                    f"anomaly_{lab}_auc_{ANOMALY_ENTRY[col]}",
                    f"ours, beyond the paper: AUC of flagging the anomaly study's {counts[lab]} {plural_label(lab)} "
                    f"against {counts['normal']} held-out normal galaxies by a {lo_hi} {name.removeprefix('PixelCNN ')}"
                    f" ({sample}; 68 % bootstrap interval {p16:.2f}-{p84:.2f}; {matched:.2f} with the normal "
                    "galaxies re-weighted to their magnitudes); the cGAN's beside it in the scorecard", None, a, "",
                    None, None))
        out["side_by_side"].append(row)
    return out


__all__ = ["ANOMALY_DETECTORS", "BASELINES", "BIN_COLUMNS", "TWIN_DETECTORS", "anomaly_metrics", "anomaly_sample",
           "auc_ceiling", "baseline_entries", "clump_correlation", "clumpy_auc", "compute_metrics",
           "paired_truth_entries", "paired_wins", "shared_entries", "twin_rows", "with_morphology"]
