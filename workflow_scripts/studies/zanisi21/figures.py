"""Figures of the likelihood-ratio study: the held-out galaxies of highest and lowest likelihood (Fig 1), pixel-wise
log-likelihood and LLR maps (Fig 2), LLR and raw log-likelihood distributions per data set (Fig 3), and the
matched-bin mean LLR differences with bootstrap errors (Fig 4); ours: the anomaly study's mergers and EROs scored by
the same likelihoods (Fig 5: ROC curves and LLR distributions)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.metrics import plural_label as plural, roc_auc, roc_points
from workflow_scripts.plotting.save import FigureError, plt, save_figure
from workflow_scripts.studies.zanisi21.paper import COLOURS, LABELS
from workflow_scripts.studies.zanisi21.scoring import Scores

#: galaxies per row of Fig 1 and rows of Fig 2
FIG1_N = 6
FIG2_N = 4


def _image(ax: plt.Axes, img: np.ndarray, title: str, **kw: object) -> None:
    im = ax.imshow(img, origin="lower", **kw)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def fig1_examples(scores: Scores, out_png: str | Path, out_pdf: str | Path | None) -> None:
    """Held-out real galaxies of highest and lowest log p (real model), with log p and LLR in nats."""
    t = scores.table
    if len(t) < 2:
        raise FigureError("fig1: fewer than two scored stamps")
    order = np.argsort(t["logp_real"].to_numpy())
    n = min(FIG1_N, len(t) // 2)
    rows = {"highest log p": order[::-1][:n], "lowest log p": order[:n]}
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.8), squeeze=False)
    for r, (name, idx) in enumerate(rows.items()):
        for c, i in enumerate(idx):
            _image(axes[r, c], scores.images[i], f"log p {t['logp_real'].iloc[i]:.0f}\nLLR {t['llr'].iloc[i]:.0f}",
                   cmap="gray", vmin=-0.1, vmax=1.0)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("held-out galaxies by likelihood under the real PixelCNN (nats; model-space pixels)", fontsize=8)
    save_figure(fig, out_png, out_pdf)


def fig2_pixel_maps(scores: Scores, out_png: str | Path, out_pdf: str | Path | None) -> None:
    """For the brightest held-out galaxies: image, log p real, log p archetype, LLR, LLR (Ren+19), LLR of the shared
    model (when scored), source pixels."""
    t = scores.table
    if not len(t):
        raise FigureError("fig2: no scored stamp")
    idx = np.argsort(-scores.images.reshape(len(t), -1).sum(1))[:FIG2_N]
    ratios = [("LLR", scores.llr("llr")), ("LLR (Ren+19 bg)", scores.llr("llr_perturbed"))]
    if {"shared_real", "shared_archetype"} <= set(scores.logp):
        ratios.append(("LLR (shared model)", scores.llr("llr_shared")))
    cols = ["image", "log p real", "log p archetype", *(name for name, _ in ratios), "source pixels"]
    fig, axes = plt.subplots(len(idx), len(cols), figsize=(1.75 * len(cols), 1.8 * len(idx) + 0.4), squeeze=False)
    for r, i in enumerate(idx):
        lim = float(np.percentile(np.abs(np.concatenate([m[i].ravel() for _, m in ratios])), 99)) or 1.0
        lo = float(min(scores.logp["real"][i].min(), scores.logp["archetype"][i].min()))
        panels = [(scores.images[i], dict(cmap="gray", vmin=-0.1, vmax=1.0)),
                  (scores.logp["real"][i], dict(cmap="viridis", vmin=lo, vmax=0)),
                  (scores.logp["archetype"][i], dict(cmap="viridis", vmin=lo, vmax=0)),
                  *((m[i], dict(cmap="RdBu_r", vmin=-lim, vmax=lim)) for _, m in ratios),
                  (scores.source[i].astype(float), dict(cmap="gray", vmin=0, vmax=1))]
        for c, (img, kw) in enumerate(panels):
            im = _image(axes[r, c], img, cols[c] if r == 0 else "", **kw)
            if c in (2, 2 + len(ratios)):
                fig.colorbar(im, ax=axes[r, c], fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        axes[r, 0].set_ylabel(f"LLR {t['llr'].iloc[i]:.0f}\nbg {t['bg_share_llr'].iloc[i]:.0%}", fontsize=7)
    fig.suptitle("pixel-wise log-likelihoods (nats) and their ratio: the background cancels, detail remains",
                 fontsize=8)
    save_figure(fig, out_png, out_pdf)


def fig3_distributions(tables: Mapping[str, pd.DataFrame], aucs: Mapping[str, float], out_png: str | Path,
                       out_pdf: str | Path | None) -> None:
    """Histograms of LLR, LLR (Ren+19), the shared model's LLR (when scored) and log p (real model) per data set."""
    cols = [("llr", "LLR = log p_real - log p_archetype", "llr"),
            ("llr_perturbed", "LLR, Ren+19 background model", "llr_perturbed"),
            ("llr_shared", "LLR, one shared conditional model", "llr_shared"),
            ("logp_real", "log p_real (raw likelihood)", "likelihood")]
    cols = [c for c in cols if all(c[0] in t.columns for t in tables.values())]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.7 * len(cols), 3.4), layout="constrained")
    for ax, (col, title, key) in zip(axes, cols):
        vals = np.concatenate([t[col].to_numpy(float) for t in tables.values()])
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            raise FigureError(f"fig3: no finite {col}")
        bins = np.linspace(*np.percentile(vals, [0.5, 99.5]), 40)
        for name, t in tables.items():
            ax.hist(t[col], bins=bins, histtype="step", density=True, color=COLOURS.get(name, None),
                    label=f"{LABELS.get(name, name)} ({len(t)})")
        ax.set_xlabel(f"{title} (nats)", fontsize=8)
        ax.set_title(f"AUC comparison vs real: {aucs.get(key, float('nan')):.2f}", fontsize=8)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    save_figure(fig, out_png, out_pdf)


def fig4_matched_bins(comparison: pd.DataFrame, out_png: str | Path, out_pdf: str | Path | None) -> None:
    """Mean LLR difference (real - comparison) per bin of each property, bootstrap standard errors."""
    props = list(dict.fromkeys(comparison["property"]))
    if not props:
        raise FigureError("fig4: the comparison table is empty")
    labels = {"mag": "magnitude", "rhalf_arcsec": "Sersic half-light radius (arcsec)", "sersic_n": "Sersic n"}
    fig, axes = plt.subplots(1, len(props), figsize=(3.6 * len(props), 3.2), squeeze=False)
    for ax, p in zip(axes[0], props):
        t = comparison[comparison["property"] == p]
        mid = 0.5 * (t["lo"] + t["hi"])
        ax.errorbar(mid, t["difference"], yerr=t["error"], xerr=0.5 * (t["hi"] - t["lo"]), fmt="o", color="k")
        for x, y, n in zip(mid, t["difference"], t["n_reference"]):
            if np.isfinite(y):
                ax.annotate(str(int(n)), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel(labels.get(p, p), fontsize=8)
    axes[0, 0].set_ylabel("mean LLR, real - comparison (nats)", fontsize=8)
    fig.suptitle("matched bins: numbers are held-out real galaxies per bin; errors from the bootstrap", fontsize=8)
    save_figure(fig, out_png, out_pdf)


def fig5_anomalies(normal: pd.DataFrame, groups: Mapping[str, pd.DataFrame], detectors: Mapping[str, str],
                   sample: str, out_png: str | Path, out_pdf: str | Path | None) -> None:
    """ROC curves of every detector (a low score flags) for each anomaly label against the normal galaxies, and the
    LLR distributions of all of them."""
    if not len(normal) or not groups:
        raise FigureError(f"fig5: nothing to compare ({len(normal)} normal galaxies, labels {list(groups)})")
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(3.5 * (len(groups) + 1), 3.4), layout="constrained")
    for ax, (lab, g) in zip(axes, groups.items()):
        for col, name in detectors.items():
            fpr, tpr = roc_points(-g[col].to_numpy(float), -normal[col].to_numpy(float))
            ax.plot(fpr, tpr, label=f"{name}: AUC {roc_auc(-g[col], -normal[col]):.2f}")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
        ax.set_xlabel("false positive rate (normal flagged)", fontsize=8)
        ax.set_ylabel(f"true positive rate ({plural(lab)} flagged)", fontsize=8)
        ax.set_title(f"{len(g)} {plural(lab)} vs {len(normal)} normal", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    ax = axes[-1]
    vals = np.concatenate([t["llr"].to_numpy(float) for t in (normal, *groups.values())])
    vals = vals[np.isfinite(vals)]
    bins = np.linspace(*np.percentile(vals, [0.5, 99.5]), 30)
    for name, t in {"normal": normal, **groups}.items():
        ax.hist(t["llr"], bins=bins, histtype="step", density=True,
                label=f"{name if name == 'normal' else plural(name)} ({len(t)})")
    ax.set_xlabel("LLR = log p_real - log p_archetype (nats)", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle(sample, fontsize=8)
    save_figure(fig, out_png, out_pdf)


__all__ = ["fig1_examples", "fig2_pixel_maps", "fig3_distributions", "fig4_matched_bins", "fig5_anomalies"]
