"""Fig 7 of Hemmati et al. (2022): photometry of the dominant source of each blend, low-res vs GAN positions.

Left: measured against input magnitude of the dominant (brighter) galaxy, with the 1 and 2 sigma contours of a
Gaussian kernel density estimate (the levels enclosing 39.3 % and 86.5 % of the points: 1 and 2 sigma of a 2-D
Gaussian) and the 1:1 line. Right: delta-mag = measured - input against input magnitude, with the Gaussian-process
regression of :func:`workflow_scripts.studies.hemmati22.photometry.gp_curves` (mean, and its 1 and 2 sigma predictive bands).
Colours as in the other figures: low-res red, GAN blue, high-res black (dashed: the reference). The text box
gives bias (median) and scatter (NMAD) of delta-mag and the improvement factor beside the paper's > 10x.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402


from workflow_scripts.plotting.save import FigureError, save_figure  # noqa: E402
from workflow_scripts.studies.hemmati22.paper import PAPER_PHOTOMETRY, RUN_COLOURS, RUN_LABELS  # noqa: E402

__all__ = ["AS_CODED_RUNS", "fig7_photometry", "RUN_COLOURS", "RUN_LABELS", "SIGMA_LEVELS"]

#: fractions of a 2-D Gaussian within 1 and 2 sigma
SIGMA_LEVELS = (1 - np.exp(-0.5), 1 - np.exp(-2.0))
#: fewest points for a density contour
MIN_CONTOUR_POINTS = 10


def _check(dominants: Mapping[str, Any], gp: Any) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    if not dominants:
        raise FigureError("fig7: no photometry runs given")
    out = {}
    for run, df in dominants.items():
        if not isinstance(df, pd.DataFrame) or not {"input_mag", "measured_mag", "measured"} <= set(df.columns):
            raise FigureError(f"fig7: run {run!r} needs a table with input_mag, measured_mag, measured")
        out[run] = df
    if not isinstance(gp, pd.DataFrame) or not {"run", "mag", "mean", "std"} <= set(gp.columns):
        raise FigureError("fig7: the GP table needs columns run, mag, mean, std")
    return out, gp


def _contours(ax: plt.Axes, x: np.ndarray, y: np.ndarray, colour: str) -> None:
    if x.size < MIN_CONTOUR_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return
    try:
        kde = gaussian_kde(np.vstack([x, y]))
    except (np.linalg.LinAlgError, ValueError):
        return
    dens = kde(np.vstack([x, y]))
    levels = sorted({float(np.quantile(dens, 1 - p)) for p in SIGMA_LEVELS})
    pad_x, pad_y = 0.1 * np.ptp(x), 0.1 * np.ptp(y)
    gx, gy = np.meshgrid(np.linspace(x.min() - pad_x, x.max() + pad_x, 120),
                         np.linspace(y.min() - pad_y, y.max() + pad_y, 120))
    z = kde(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    if len(levels) == 2 and levels[0] < levels[1]:
        ax.contour(gx, gy, z, levels=levels, colors=colour, linewidths=[1.0, 1.8], linestyles=["--", "-"])


def fig7_photometry(dominants: Mapping[str, Any], gp: Any, out_png: str | Path, out_pdf: str | Path | None = None,
                    *, summary: Mapping[str, Any] | None = None, band: str = "", as_coded: Any = None,
                    as_coded_summary: Mapping[str, Any] | None = None, dpi: int = 150) -> Path:
    """Fig 7 from per-run dominant-source tables (:func:`~workflow_scripts.studies.hemmati22.photometry.dominant_source`) and
    the GP curves (columns run, mag, mean, std); ``summary``: photometry.json for the text box. ``as_coded``: the
    protocol "as coded" (:func:`..as_coded.dominants_on_subset`, with its photometry.json as
    ``as_coded_summary``), drawn in a third panel: |dF/F| of the dominant source on the authors' subset."""
    doms, gp = _check(dominants, gp)
    coded = _check_as_coded(as_coded)
    fig, axes = plt.subplots(1, 3 if coded is not None else 2, figsize=(17.0 if coded is not None else 11.5, 5.0))
    ax1, ax2 = axes[:2]
    if coded is not None:
        _as_coded_panel(axes[2], coded, as_coded_summary or {}, band)
    all_x, all_y = [], []
    order = [r for r in ("hi_at_hi", "lo_at_lo", "lo_at_gan") if r in doms] + \
        [r for r in doms if r not in ("hi_at_hi", "lo_at_lo", "lo_at_gan")]
    for run in order:
        d = doms[run]
        m = d["measured"].to_numpy(dtype=bool)
        x = d.loc[m, "input_mag"].to_numpy(dtype=float)
        y = d.loc[m, "measured_mag"].to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        colour = RUN_COLOURS.get(run, "tab:green")
        label = f"{RUN_LABELS.get(run, run)} ({x.size})"
        ref = run == "hi_at_hi"
        ax1.scatter(x, y, s=5, color=colour, alpha=0.25 if ref else 0.45, lw=0, label=label)
        if not ref:
            _contours(ax1, x, y, colour)
        ax2.scatter(x, y - x, s=5, color=colour, alpha=0.25 if ref else 0.45, lw=0)
        all_x.append(x)
        all_y.append(y)
        g = gp[gp["run"] == run].sort_values("mag")
        if len(g) and np.isfinite(g["mean"]).any():
            gm, mu, sd = g["mag"].to_numpy(), g["mean"].to_numpy(), g["std"].to_numpy()
            ax2.plot(gm, mu, color=colour, lw=2.0, ls="--" if ref else "-", label=f"GP {RUN_LABELS.get(run, run)}")
            if not ref:
                ax2.fill_between(gm, mu - sd, mu + sd, color=colour, alpha=0.25, lw=0)
                ax2.fill_between(gm, mu - 2 * sd, mu + 2 * sd, color=colour, alpha=0.12, lw=0)
    xs = np.concatenate(all_x) if all_x else np.array([])
    if xs.size:
        lo, hi = np.nanpercentile(np.concatenate([xs, np.concatenate(all_y)]), [0.5, 99.5])
        lo, hi = lo - 0.3, hi + 0.3
        ax1.plot([lo, hi], [lo, hi], color="0.4", lw=1.0, label="1:1")
        ax1.set_xlim(lo, hi)
        ax1.set_ylim(lo, hi)
        ax2.set_xlim(lo, hi)
    ax2.axhline(0.0, color="0.4", lw=1.0)
    dm = np.concatenate([y - x for x, y in zip(all_x, all_y)]) if all_x else np.array([0.0])
    if dm.size:
        span = max(0.5, float(np.nanpercentile(np.abs(dm), 98)) * 1.1) if np.isfinite(dm).any() else 1.0
        ax2.set_ylim(-span, span)
    suffix = f" ({band})" if band else ""
    ax1.set_xlabel(f"input magnitude of the dominant source{suffix}")
    ax1.set_ylabel("measured magnitude")
    ax1.set_title("dominant source: measured vs input (1, 2 sigma contours)", fontsize=10)
    ax2.set_xlabel(f"input magnitude{suffix}")
    ax2.set_ylabel("\u0394mag = measured \u2212 input")
    ax2.set_title("\u0394mag with GP regression (1, 2 sigma predictive bands)", fontsize=10)
    ax1.legend(loc="upper left", fontsize=8, markerscale=3)
    ax2.legend(loc="lower left", fontsize=8)
    if summary is not None:
        ax2.text(0.98, 0.98, _summary_text(summary), transform=ax2.transAxes, ha="right", va="top", fontsize=8,
                 multialignment="left",
                 family="monospace", bbox=dict(boxstyle="round", facecolor="white", alpha=0.85))
    fig.tight_layout()
    return save_figure(fig, out_png, out_pdf, dpi)


#: runs of the protocol "as coded" (steps/hemmati22/photometry_as_coded.py): label, colour
AS_CODED_RUNS = {"lo_at_lo": ("low-res peak", "tab:red"), "lo_at_gan": ("GAN peaks", "tab:blue"),
                 "lo_at_truth": ("true centres", "tab:green")}


def _check_as_coded(table: Any) -> pd.DataFrame | None:
    if table is None:
        return None
    need = {"run", "index", "input_mag", "input_flux", "measured_flux", "measured"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise FigureError(f"fig7: the as-coded table needs columns {sorted(need)}")
    return table


def _as_coded_panel(ax: plt.Axes, table: pd.DataFrame, summary: Mapping[str, Any], band: str) -> None:
    """|dF/F| of the dominant source against its input magnitude, one colour per run (every blend the run
    measured), and as dashed lines the medians the summary compares: the low-res peak and the GAN peaks over the
    blends measured in both, the true centres over those measured there and at the low-res peak."""
    t = table.assign(rel=np.abs(table["measured_flux"].to_numpy(float) / table["input_flux"].to_numpy(float) - 1.0),
                     measured=table["measured"].astype(bool))
    rel = t.pivot(index="index", columns="run", values="rel")
    ok = t.pivot(index="index", columns="run", values="measured").fillna(False).astype(bool)
    for run, (label, colour) in AS_CODED_RUNS.items():
        d = t[(t["run"] == run) & t["measured"]]
        if not len(d):
            continue
        ax.scatter(d["input_mag"].to_numpy(float), np.clip(d["rel"].to_numpy(), 1e-3, None), s=14, color=colour,
                   alpha=0.7, lw=0, label=f"{label} ({len(d)})")
        partner = "lo_at_truth" if run == "lo_at_truth" else "lo_at_gan"
        if {"lo_at_lo", partner} <= set(ok.columns) and (both := ok["lo_at_lo"] & ok[partner]).any():
            ax.axhline(float(np.median(rel.loc[both, run])), color=colour, lw=1.2, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel(f"input magnitude of the dominant source{f' ({band})' if band else ''}")
    ax.set_ylabel("|F_measured / F_input \u2212 1|")
    ax.set_title(f"as the authors' code did: {summary.get('n_subset', '?')} blends with 2 hi / 1 lo / 2 GAN peaks",
                 fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    lines = [f"median |dF/F| (dashed), {summary.get('n_measured', '?')} blends:",
             f"low-res peak {_fmt(summary.get('median_abs_dflux_lo_at_lo'))}",
             f"GAN peaks    {_fmt(summary.get('median_abs_dflux_lo_at_gan'))}"
             f"  x{_fmt(summary.get('improvement_factor'), '.1f')}"]
    if summary.get("median_abs_dflux_lo_at_truth") is not None:
        lines.append(f"true centres {_fmt(summary.get('median_abs_dflux_lo_at_truth'))}"
                     f"  x{_fmt(summary.get('improvement_factor_true_positions'), '.1f')}")
    lines.append(f"paper: {PAPER_PHOTOMETRY['improvement_factor']}x")
    ax.text(0.98, 0.98, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=8, family="monospace",
            bbox=dict(boxstyle="round", facecolor="white", alpha=0.85))


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _summary_text(summary: Mapping[str, Any]) -> str:
    ours = summary.get("ours", {})
    lines = ["run        bias   scatter  n"]
    for run, st in ours.get("runs", {}).items():
        lines.append(f"{run:9s} {_fmt(st.get('bias'), '+.3f'):>6s} {_fmt(st.get('scatter')):>7s} {st.get('n_measured', 0):4d}")
    imp = ours.get("improvement_factor", {})
    if imp:
        def times(v: Any) -> str:
            return "n/a" if v is None else f"x{v:.2f}"

        lines.append(f"GAN vs low-res: scatter {times(imp.get('scatter'))}, bias {times(imp.get('bias'))}")
        lines.append(f"paper: {summary.get('paper', PAPER_PHOTOMETRY)['improvement_factor']}x")
    return "\n".join(lines)
