"""Figures of the deep-field study: training evolution at fixed noise (Fig 1), generated vs real colour images with
the catalogue mock beside them (Fig 2), real and generated thumbnails shuffled with a key (Fig 3), magnitude
histograms per band with KS p-values (Fig 4) and, ours, number counts, colours and sizes (Fig 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.visualization import make_lupton_rgb

from workflow_scripts.io import atomic_path
from workflow_scripts.plotting.save import FigureError, plt, save_figure
from workflow_scripts.studies.smith_geach19.paper import COLOURS, PAPER_KS_P


def rgb(cube: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """(3, H, W), bluest band first -> Lupton RGB, the stretch set from ``ref`` (so real and generated match)."""
    ref = cube if ref is None else ref
    v = ref.mean(axis=0)
    med = float(np.median(v))
    sigma = float(1.4826 * np.median(np.abs(v - med))) or 1e-3
    q = 8.0
    return make_lupton_rgb(cube[2] - med, cube[1] - med, cube[0] - med, minimum=-sigma, stretch=20 * sigma, Q=q)


def fig1_evolution(images: Sequence[np.ndarray], labels: Sequence[str], out_png: str | Path,
                   out_pdf: str | Path | None) -> None:
    if not images:
        raise FigureError("fig1: no snapshot image")
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.7), squeeze=False)
    for ax, img, lab in zip(axes[0], images, labels):
        ax.imshow(rgb(img, images[-1]), origin="lower")
        ax.set_title(lab, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("the same noise through the generator's snapshots", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


def fig2_fields(real: np.ndarray, generated: np.ndarray, pixel_scale: float, out_png: str | Path,
                out_pdf: str | Path | None, mock: np.ndarray | None = None, zoom: int = 128) -> None:
    """Real, generated and (when given) catalogue-mock fields side by side (one stretch), with a zoom of each
    centre."""
    panels = [("real", real), ("generated", generated)]
    if mock is not None:
        panels.append(("catalogue mock (baseline)", mock))
    fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 8.4))
    for col, (name, cube) in enumerate(panels):
        ax = axes[0, col]
        ax.imshow(rgb(cube, real), origin="lower")
        ax.set_title(f"{name}, {cube.shape[-1] * pixel_scale / 60:.1f}′ wide", fontsize=9)
        c, h = cube.shape[-1] // 2, zoom // 2
        ax.add_patch(plt.Rectangle((c - h, c - h), zoom, zoom, fill=False, color="w", lw=0.8))
        axes[1, col].imshow(rgb(cube[:, c - h:c + h, c - h:c + h], real[:, :zoom, :zoom]), origin="lower")
        axes[1, col].set_title(f"zoom {zoom * pixel_scale:.1f}″", fontsize=8)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


def fig4_magnitudes(catalogs: Mapping[str, pd.DataFrame], comparison: Mapping, mock: Mapping,
                    bands: Sequence[str], out_png: str | Path, out_pdf: str | Path | None) -> None:
    """Magnitude histograms per band of ``catalogs`` (real, generated, catalogue mock), KS p of the generator and
    of the mock against the real field in each title."""
    lim = comparison["mag_limit"]
    fig, axes = plt.subplots(1, len(bands), figsize=(3.6 * len(bands), 3.4), squeeze=False)
    bins = np.arange(18.0, lim + 0.25, 0.5)
    for ax, b in zip(axes[0], bands):
        for name, cat in catalogs.items():
            m = cat[f"mag_{b}"].to_numpy(float)
            m = m[np.isfinite(m) & (m < lim)]
            ax.hist(m, bins=bins, histtype="step", density=True, color=COLOURS[name], label=f"{name} ({m.size})")
        paper = PAPER_KS_P.get(b)
        ax.set_title(f"{b}: KS p generated {comparison['bands'][b]['ks_p']:.2g}"
                     + (f" (paper {paper})" if paper is not None else "")
                     + f"\nmock {mock['bands'][b]['ks_p']:.2g}", fontsize=8)
        ax.set_xlabel(f"{b} [AB mag]")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("density")
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


def fig5_counts_colours_sizes(catalogs: Mapping[str, pd.DataFrame], areas_arcmin2: Mapping[str, float],
                              bands: Sequence[str], mag_limit: float, out_png: str | Path,
                              out_pdf: str | Path | None) -> None:
    """Ours, the rest of the paper's validation as pictures: number counts per arcmin^2 per 0.5 mag in the reddest
    band (Poisson errors), the bluest - reddest colour and the half-light radius of the sources brighter than
    ``mag_limit``, for each catalogue (real, generated, catalogue mock); medians in the legends."""
    blue, red = bands[0], bands[-1]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    bins = np.arange(18.0, mag_limit + 0.25, 0.5)
    for name, cat in catalogs.items():
        m = cat[f"mag_{red}"].to_numpy(float)
        sel = np.isfinite(m) & (m < mag_limit)
        n, _ = np.histogram(m[sel], bins=bins)
        area = float(areas_arcmin2[name])
        mid = 0.5 * (bins[1:] + bins[:-1])
        ok = n > 0
        axes[0].errorbar(mid[ok], n[ok] / area, yerr=np.sqrt(n[ok]) / area, color=COLOURS[name], marker="o", ms=3,
                         lw=1, capsize=2, label=f"{name} ({sel.sum() / area:.0f} per arcmin²)")
        colour = (cat[f"mag_{blue}"] - cat[f"mag_{red}"]).to_numpy(float)[sel]
        colour = colour[np.isfinite(colour)]
        axes[1].hist(colour, bins=np.arange(-1.5, 2.51, 0.1), histtype="step", density=True, color=COLOURS[name],
                     label=f"{name}: median {np.median(colour):.2f}" if colour.size else name)
        size = cat["r_half_arcsec"].to_numpy(float)[sel]
        size = size[np.isfinite(size) & (size > 0)]
        axes[2].hist(size, bins=np.geomspace(0.03, 2.0, 30), histtype="step", density=True, color=COLOURS[name],
                     label=f"{name}: median {np.median(size):.3f}″" if size.size else name)
    axes[0].set_yscale("log")
    axes[0].set_xlabel(f"{red} [AB mag]")
    axes[0].set_ylabel("sources per arcmin² per 0.5 mag")
    axes[1].set_xlabel(f"{blue} − {red} [mag], {red} < {mag_limit:g}")
    axes[2].set_xscale("log")
    axes[2].set_xlabel(f"half-light radius [arcsec], {red} < {mag_limit:g}")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)


def fig3_thumbnails(real: Sequence[np.ndarray], generated: Sequence[np.ndarray], seed: int, out_png: str | Path,
                    out_pdf: str | Path | None, out_key: str | Path, title: str) -> None:
    """Fig 3: real and generated thumbnails (3, s, s) shuffled on one grid; which is which goes to ``out_key``
    (a text file: row, column, real | generated), so a reader can test their eye before looking."""
    items = [("real", t) for t in real] + [("generated", t) for t in generated]
    if not items:
        raise FigureError("fig3: no thumbnail to show")
    order = np.random.default_rng(seed).permutation(len(items))
    cols = 10
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows + 0.5), squeeze=False)
    key = ["# row column kind (Fig 3 of the deep-field study; rows and columns from 0, top left)"]
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(items):
            ax.axis("off")
            continue
        kind, thumb = items[order[k]]
        ax.imshow(rgb(thumb), origin="lower")
        key.append(f"{k // cols} {k % cols} {kind}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, out_pdf)
    with atomic_path(out_key) as tmp:
        tmp.write_text("\n".join(key) + "\n")


__all__ = ["fig1_evolution", "fig2_fields", "fig3_thumbnails", "fig4_magnitudes", "fig5_counts_colours_sizes", "rgb"]
