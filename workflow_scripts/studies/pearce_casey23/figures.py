"""Figures of the anomaly study (Pearce-Casey+23 Fig 1a-1e) and a ROC figure of both detectors.

Images are shown as Lupton et al. (2004) RGB composites of three bands (astropy ``make_lupton_rgb``), the input
(SW) and output (LW) triplets each with one stretch over the panels of an object so that predicted and true LW
images are comparable by eye.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.visualization import make_lupton_rgb

from workflow_scripts.metrics import plural_label
from workflow_scripts.plotting.save import FigureError, plt, save_figure
from workflow_scripts.studies.pearce_casey23.paper import COLOURS
from workflow_scripts.studies.pearce_casey23.sed import floored_mag, roc_curve

#: wavelength (micron) of a NIRCam band name such as F277W
def band_micron(band: str) -> float:
    digits = "".join(c for c in band if c.isdigit())
    return int(digits) / 100.0 if digits else float("nan")


def _robust_sigma(img: np.ndarray) -> float:
    v = img[np.isfinite(img)]
    mad = np.median(np.abs(v - np.median(v))) if v.size else 0.0
    return float(1.4826 * mad) if mad > 0 else float(np.std(v) or 1.0)


def rgb(cube: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """(3, H, W) -> RGB with a Lupton stretch set from ``ref`` (default: the cube): reddest band in red."""
    ref = cube if ref is None else ref
    sigma = np.mean([_robust_sigma(ref[i]) for i in range(3)])
    peak = float(np.percentile(ref.sum(axis=0), 99.7)) / 3.0
    q = float(np.clip(np.arcsinh(max(peak, 3 * sigma) / (3 * sigma)), 0.5, 10.0))
    return make_lupton_rgb(cube[2], cube[1], cube[0], minimum=-sigma, stretch=3 * sigma * q, Q=q)


def _panels(rows: Sequence[tuple[str, Sequence[np.ndarray]]], titles: Sequence[str], out_png: str | Path,
            out_pdf: str | Path | None, suptitle: str) -> None:
    n, m = len(rows), len(titles)
    if n == 0:
        raise FigureError(f"{suptitle}: no object to show")
    fig, axes = plt.subplots(n, m, figsize=(2.1 * m, 2.1 * n + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


def object_panels(sw: np.ndarray, lw_pred: np.ndarray, lw_true: np.ndarray, labels: Sequence[str],
                  in_bands: Sequence[str], out_bands: Sequence[str], out_png: str | Path,
                  out_pdf: str | Path | None, title: str) -> None:
    """Fig 1b / 1d: per object SW input, predicted LW, true LW and the residual (true - predicted, reddest band)."""
    rows = []
    for i, lab in enumerate(labels):
        resid = lw_true[i, -1] - lw_pred[i, -1]
        s = 5 * _robust_sigma(lw_true[i, -1])
        res_rgb = plt.get_cmap("RdBu_r")(np.clip(0.5 + resid / (2 * s), 0, 1))[..., :3]
        rows.append((lab, [rgb(sw[i]), rgb(lw_pred[i], lw_true[i]), rgb(lw_true[i]), res_rgb]))
    titles = [f"input {'/'.join(in_bands)}", f"predicted {'/'.join(out_bands)}", f"true {'/'.join(out_bands)}",
              f"true - predicted {out_bands[-1]} (±5σ)"]
    _panels(rows, titles, out_png, out_pdf, title)


def sed_panel(row: pd.Series, in_bands: Sequence[str], out_bands: Sequence[str], zeropoints: Mapping[str, float],
              out_png: str | Path, out_pdf: str | Path | None, title: str) -> None:
    """Fig 1c / 1e: one object's SED: measured in all bands, cGAN and baseline predictions in the output bands."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    bands = list(in_bands) + list(out_bands)
    lam = np.array([band_micron(b) for b in bands])
    mag = np.array([floored_mag(row[f"flux_{b}"], row[f"fluxerr_{b}"], zeropoints[b]) for b in bands])
    merr = np.array([1.0857 * row[f"fluxerr_{b}"] / max(row[f"flux_{b}"], row[f"fluxerr_{b}"]) for b in bands])
    ax.errorbar(lam, mag, yerr=merr, fmt="o-", color=COLOURS["true"], label="measured (aperture)")
    lam_out = lam[len(in_bands):]
    for key, label, col in (("pred_flux", "cGAN", "cgan"), ("baseline_flux", "photometric baseline", "baseline")):
        pm = [floored_mag(row[f"{key}_{b}"], row[f"fluxerr_{b}"], zeropoints[b]) for b in out_bands]
        ax.plot(lam_out, pm, "s--", color=COLOURS[col], label=f"{label} (SED error {row[f'{col}_sed_error']:.2f})")
    ax.invert_yaxis()
    ax.set_xlabel("wavelength [µm]")
    ax.set_ylabel("aperture AB mag")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


def sed_error_distribution(normal: pd.DataFrame, anomalies: Mapping[str, pd.DataFrame], out_bands: Sequence[str],
                           out_png: str | Path, out_pdf: str | Path | None, title: str) -> None:
    """Fig 1a: |true - predicted| magnitude per output band on the validation galaxies (cGAN and baseline), with
    the anomalies' SED errors beside them."""
    n = len(out_bands) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.0), squeeze=False)
    bins = np.linspace(0, 1.5, 31)
    for i, b in enumerate(out_bands):
        ax = axes[0, i]
        for m, lab in (("cgan", "cGAN"), ("baseline", "baseline")):
            v = np.clip(np.abs(normal[f"{m}_dmag_{b}"].to_numpy(float)), 0, bins[-1])
            ax.hist(v, bins=bins, histtype="step", color=COLOURS[m], label=f"{lab}: median {np.median(v):.3f}")
        ax.set_xlabel(f"|Δmag| {b}")
        ax.legend(fontsize=6)
    ax = axes[0, -1]
    for key, df in {"normal": normal, **anomalies}.items():
        if len(df):
            v = np.clip(df["cgan_sed_error"].to_numpy(float), 0, bins[-1])
            name = "normal galaxies" if key == "normal" else plural_label(key)
            ax.hist(v, bins=bins, histtype="step", density=True, color=COLOURS[key], label=f"{name} ({len(df)})")
    ax.set_xlabel(f"cGAN SED error [mag] (last bin: >= {bins[-1]:g})")
    ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


def roc_figure(normal: pd.DataFrame, anomalies: Mapping[str, pd.DataFrame], aucs: Mapping[str, Mapping[str, float]],
               out_png: str | Path, out_pdf: str | Path | None) -> None:
    """ROC curves of the cGAN and the baseline SED errors (solid), and where ``aucs`` has them of the core-excess
    detectors (dashed: the cGAN's core excess, and the LW - SW core share without learning) and of the baseline's
    regressor on the noise-free truth magnitudes (dash-dotted grey: photometry at infinite S/N), per anomaly class
    against the normal galaxies."""
    # each panel's legend in its own blank axes below it: inside, it hid the curves near the diagonal
    fig, axes = plt.subplots(2, len(anomalies), figsize=(3.8 * len(anomalies), 4.8), squeeze=False,
                             height_ratios=(3.5, 1.0))
    curves = [("cgan_sed_error", "cgan", "cGAN SED error", "-"),
              ("baseline_sed_error", "baseline", "photometric baseline", "-"),
              ("cgan_core_excess", "cgan", "cGAN core excess (ours)", "--"),
              ("gradient_core_excess", "baseline", "LW - SW core share (ours)", "--"),
              ("truth_photometry_sed_error", None, "photometry at infinite S/N (truth; ours)", "-.")]
    for ax, lax, (cls, df) in zip(axes[0], axes[1], anomalies.items()):
        for col, colour, lab, style in curves:
            if len(df) and len(normal) and col in aucs and col in df.columns:
                fpr, tpr = roc_curve(df[col].to_numpy(), normal[col].to_numpy())
                ax.plot(fpr, tpr, style, color=COLOURS[colour] if colour else "0.45",
                        label=f"{lab}: AUC {aucs[col][cls]:.2f}")
        ax.plot([0, 1], [0, 1], ":", color="0.6")
        ax.set_xlabel("false-positive rate (normal galaxies)")
        ax.set_ylabel(f"true-positive rate ({plural_label(cls)}, n={len(df)})")
        lax.axis("off")
        lax.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="upper center", frameon=False)
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


__all__ = ["band_micron", "object_panels", "rgb", "roc_figure", "sed_error_distribution", "sed_panel"]
