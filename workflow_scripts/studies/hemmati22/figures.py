"""Figures of the deblending study (Hemmati et al. 2022, ApJ): plain functions of arrays and DataFrames.

Every function validates its inputs (one-line :class:`~workflow_scripts.plotting.overview.FigureError`), draws
with the Agg backend, writes ``out_png`` (and ``out_pdf`` when given) atomically and returns the PNG path.

Display conventions
-------------------
* Images arrive in physical units, *flux per pixel*. Before display every image is divided by its pixel area
  (flux per arcsec^2), so a flux-conserving low-resolution image (9x larger pixels) and its high-resolution
  original have the same surface-brightness scale and can share one stretch.
* One asinh stretch per object: the high-resolution, low-resolution and GAN images of one galaxy or blend use
  the same interval and stretch (grey: :class:`astropy.visualization.AsinhStretch`; colour:
  :func:`astropy.visualization.make_lupton_rgb` with one ``minimum``/``stretch``/``Q``). The stretch is linear up
  to about ``3 sigma`` of the high-resolution noise and saturates at the brightest pixels of the three images.
* Axes are in arcsec from the stamp centre. Pixel centres are at integers, 0-based, ``(x, y) = (column, row)``
  (the package convention); the 21-pixel low-resolution grid shares its centre with the 64-pixel cutout
  (:mod:`workflow_scripts.imaging.degrade`), so position ``x`` on an ``n``-pixel grid of scale ``s`` is shown at
  ``(x - (n - 1) / 2) * s`` arcsec and the low-resolution image keeps its own pixel grid over (nearly) the same
  sky (21 x 0.18" = 3.78" against 64 x 0.06" = 3.84"); all panels of a figure share the same axis limits.

Functions: :func:`fig2_dcgan_samples`, :func:`fig3_superresolution`, :func:`fig4_blends_with_peaks`,
:func:`fig5_detection_fraction`, :func:`fig8_multiband`, :func:`fig9_one_vs_seven`, :func:`loss_curves`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from astropy.visualization import AsinhStretch, ImageNormalize, ManualInterval, make_lupton_rgb  # noqa: E402
from matplotlib.colors import AsinhNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from workflow_scripts.plotting.save import FigureError, save_figure  # noqa: E402
from workflow_scripts.studies.hemmati22.paper import (FIG5_PARAMETERS, METHOD_COLOURS, METHOD_LABELS,  # noqa: E402
                                                      PAPER, PARAMETER_LABELS)

__all__ = [
    "FigureError",
    "fig2_dcgan_samples",
    "fig3_superresolution",
    "fig4_blends_with_peaks",
    "fig5_detection_fraction",
    "fig8_multiband",
    "fig9_one_vs_seven",
    "loss_curves",
    "display_norm",
    "lupton_parameters",
    "PARAMETERS",
    "PARAMETER_LABELS",
    "METHOD_COLOURS",
    "METHOD_LABELS",
    "PAPER_DETECTION_FRACTION",
    "BINNED_COLUMNS",
]

#: the four blend parameters of fig. 5, in the paper's order; headline blend detection fractions of the paper
#: (sec. 4): both from :mod:`.paper`, as are the labels and colours
PARAMETERS = FIG5_PARAMETERS
PAPER_DETECTION_FRACTION = PAPER["detection_fraction"]
#: columns of a binned detection-fraction table (long format: one row per bin and method)
BINNED_COLUMNS = ("centre", "left", "right", "count", "method", "fraction", "ci_low", "ci_high")

STAMP_KINDS = ("hi", "lo", "gan")
STAMP_TITLES = {"hi": "high-res (HST)", "lo": "low-res (HSC-like)", "gan": "GAN"}
TRUTH_STYLE = {"marker": "o", "s": 170, "facecolors": "none", "edgecolors": "cyan", "linewidths": 1.6}
PEAK_STYLE = {"marker": "x", "s": 70, "c": "orangered", "linewidths": 2.0}
LINEAR_SIGMAS = 3.0   # the asinh stretch is linear up to this many noise sigmas
SATURATION_PERCENTILE = 99.8
DEFAULT_RGB_BANDS = ("F160W", "F850LP", "F606W")
REFERENCE_ZEROPOINT = 25.0


# ------------------------------------------------------------------------------------------------ helpers
def _stack(a: Any, name: str, ndim: int, tail: tuple[int | None, ...] = ()) -> np.ndarray:
    """``a`` as a float64 array of ``ndim`` dimensions, non-empty, whose trailing axes match ``tail`` (None: any)."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FigureError(f"{name}: not a numeric array ({exc})") from None
    if arr.ndim != ndim:
        raise FigureError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0 or arr.shape[0] == 0:
        raise FigureError(f"{name}: empty array (shape {arr.shape})")
    want = tuple(tail)
    got = arr.shape[ndim - len(want):]
    if any(w is not None and w != g for w, g in zip(want, got)):
        shown = ",".join("*" if w is None else str(w) for w in want)
        raise FigureError(f"{name}: trailing shape must be ({shown}), got shape {arr.shape}")
    if not np.isfinite(arr).any():
        raise FigureError(f"{name}: no finite values")
    return arr


def _square_stack(a: Any, name: str, ndim: int) -> np.ndarray:
    arr = _stack(a, name, ndim)
    if arr.shape[-1] != arr.shape[-2]:
        raise FigureError(f"{name}: images must be square, got shape {arr.shape}")
    return arr


def _same_length(n: int, **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if len(arr) != n:
            raise FigureError(f"{name}: {len(arr)} entries, expected {n} (one per object, like the first input)")


def _positive(value: float, name: str) -> float:
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise FigureError(f"{name} must be a positive number, got {value!r}")
    return v


def _robust_sigma(img: np.ndarray) -> float:
    v = np.asarray(img, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    med = np.median(v)
    s = 1.4826 * float(np.median(np.abs(v - med)))
    if s > 0:
        return s
    s = float(np.std(v))
    return s if s > 0 else 1.0


def _clean(img: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _half_width(n: int, scale: float) -> float:
    return 0.5 * n * scale


def _extent(n: int, scale: float) -> tuple[float, float, float, float]:
    h = _half_width(n, scale)
    return (-h, h, -h, h)


def _to_arcsec(xy: np.ndarray, n: int, scale: float) -> np.ndarray:
    """Pixel positions (x, y), 0-based, centres at integers -> arcsec from the centre of an ``n``-pixel grid."""
    return (np.asarray(xy, dtype=np.float64) - 0.5 * (n - 1)) * scale


def display_norm(images: Sequence[np.ndarray], reference: np.ndarray, *,
                 linear_sigmas: float = LINEAR_SIGMAS) -> ImageNormalize:
    """One asinh normalisation for several images of the same object (surface-brightness units).

    Lower limit ``-2 sigma`` of the ``reference`` (high-resolution) noise; upper limit the largest
    :data:`SATURATION_PERCENTILE` percentile over ``images``; linear below about ``linear_sigmas`` sigma.
    """
    ref = _clean(reference)
    sigma = _robust_sigma(ref)
    base = float(np.median(ref))
    vmin = base - 2.0 * sigma
    vmax = max(float(np.percentile(_clean(im), SATURATION_PERCENTILE)) for im in images)
    if not vmax > vmin + 5.0 * sigma:
        vmax = vmin + 10.0 * sigma
    a = float(np.clip(linear_sigmas * sigma / (vmax - vmin), 1e-3, 0.5))
    return ImageNormalize(vmin=vmin, vmax=vmax, interval=ManualInterval(vmin, vmax), stretch=AsinhStretch(a=a),
                          clip=True)


def lupton_parameters(intensity: np.ndarray, *, linear_sigmas: float = LINEAR_SIGMAS) -> dict[str, float]:
    """``minimum``, ``stretch`` and ``Q`` of :func:`~astropy.visualization.make_lupton_rgb` for one object.

    ``intensity``: the mean of the three (scaled, surface-brightness) channels of the high-resolution image.
    Lupton's ``f(I) = asinh(Q I / stretch) / Q`` is linear up to ``I = stretch / Q``, set to ``linear_sigmas``
    noise sigmas, and reaches 1 at ``I = stretch sinh(Q) / Q``, set to the brightest pixels:
    ``Q = asinh(I_max / (linear_sigmas sigma))``.
    """
    img = _clean(intensity)
    sigma = _robust_sigma(img)
    base = float(np.median(img))
    i_max = float(np.percentile(img, SATURATION_PERCENTILE)) - base
    knee = linear_sigmas * sigma
    q = float(np.clip(np.arcsinh(max(i_max, knee) / knee), 0.5, 12.0))
    return {"minimum": base - 0.5 * sigma, "stretch": q * knee, "Q": q}


def _style_axis(ax: plt.Axes, half: float, *, left: bool, bottom: bool, background: str | None = "black") -> None:
    if background:  # the 21 x 0.18" grid is 0.06" narrower than the 64 x 0.06" one: no white frame around it
        ax.set_facecolor(background)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7, direction="in", color="0.7", length=3)
    if not left:
        ax.set_yticklabels([])
    else:
        ax.set_ylabel("\u0394y [arcsec]", fontsize=8)
    if not bottom:
        ax.set_xticklabels([])
    else:
        ax.set_xlabel("\u0394x [arcsec]", fontsize=8)


def _row_labels(row_labels: Sequence[str] | None, n: int, prefix: str) -> list[str]:
    if row_labels is None:
        return [f"{prefix} {k + 1}" for k in range(n)]
    labels = [str(s) for s in row_labels]
    if len(labels) != n:
        raise FigureError(f"row_labels: {len(labels)} labels for {n} rows")
    return labels


def _points(a: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FigureError(f"{name}: not a numeric array of (x, y) positions ({exc})") from None
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise FigureError(f"{name}: expected (k, 2) positions (x, y), got shape {arr.shape}")
    return arr


def _check_peaks(peaks: Any, n: int) -> dict[str, list[np.ndarray]]:
    if not isinstance(peaks, Mapping):
        raise FigureError(f"peaks must be a dict with keys {list(STAMP_KINDS)}, got {type(peaks).__name__}")
    missing = [k for k in STAMP_KINDS if k not in peaks]
    if missing:
        raise FigureError(f"peaks: missing key(s) {missing}; expected {list(STAMP_KINDS)}")
    out: dict[str, list[np.ndarray]] = {}
    for kind in STAMP_KINDS:
        lst = peaks[kind]
        if isinstance(lst, np.ndarray) and lst.dtype != object and lst.ndim == 3:
            lst = list(lst)
        try:
            lst = list(lst)
        except TypeError:
            raise FigureError(f"peaks[{kind!r}]: expected a list of (k, 2) arrays, one per blend") from None
        if len(lst) != n:
            raise FigureError(f"peaks[{kind!r}]: {len(lst)} entries, expected {n} (one per blend)")
        out[kind] = [_points(p, f"peaks[{kind!r}][{j}]") for j, p in enumerate(lst)]
    return out


def _truth(a: Any, name: str, n: int) -> np.ndarray:
    arr = _stack(a, name, 3, (None, 2))
    _same_length(n, **{name: arr})
    return arr


def _marker_legend(fig: plt.Figure, y: float) -> None:
    handles = [
        Line2D([], [], ls="none", marker="o", markerfacecolor="none", markeredgecolor="cyan", markersize=10,
               markeredgewidth=1.6, label="true centres"),
        Line2D([], [], ls="none", marker="x", color="orangered", markersize=8, markeredgewidth=2.0,
               label="detected peaks"),
    ]
    leg = fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=True, bbox_to_anchor=(0.5, y))
    leg.get_frame().set_facecolor("0.25")
    for text in leg.get_texts():
        text.set_color("white")


def _draw_markers(ax: plt.Axes, truth_xy: np.ndarray, peaks_xy: np.ndarray, n: int, scale: float) -> None:
    t = _to_arcsec(truth_xy, n, scale)
    ax.scatter(t[:, 0], t[:, 1], zorder=3, **TRUTH_STYLE)
    if len(peaks_xy):
        p = _to_arcsec(peaks_xy, n, scale)
        ax.scatter(p[:, 0], p[:, 1], zorder=4, **PEAK_STYLE)
    k = len(peaks_xy)
    ax.text(0.04, 0.96, f"{k} peak{'s' if k != 1 else ''}", transform=ax.transAxes, ha="left", va="top",
            fontsize=8, color="white", bbox={"facecolor": "black", "alpha": 0.45, "lw": 0, "pad": 1.5})


# ---------------------------------------------------------------------------------------------- figure 2
def fig2_dcgan_samples(real: Any, generated: Any, out_png: str | Path, out_pdf: str | Path | None = None, *,
                       ncols: int = 8, dpi: int = 150) -> Path:
    """Real galaxies (left grid) beside DCGAN samples (right grid), ``(n, 64, 64)`` each.

    Every stamp gets its own asinh stretch (:func:`display_norm` of the stamp alone: galaxies span orders of
    magnitude in brightness), the same rule for real and generated stamps so the two grids are comparable.
    """
    real = _square_stack(real, "real", 3)
    generated = _square_stack(generated, "generated", 3)
    if real.shape[1:] != generated.shape[1:]:
        raise FigureError(f"real {real.shape[1:]} and generated {generated.shape[1:]} stamps differ in size")
    ncols = int(ncols)
    if ncols < 1:
        raise FigureError(f"ncols must be >= 1, got {ncols}")
    n_max = max(len(real), len(generated))
    ncols = min(ncols, n_max)
    nrows = math.ceil(n_max / ncols)

    cell = 0.85
    fig = plt.figure(figsize=(2 * ncols * cell + 0.6, nrows * cell + 0.75))
    outer = fig.add_gridspec(1, 2, left=0.01, right=0.99, bottom=0.02, top=1 - 0.55 / (nrows * cell + 0.75),
                             wspace=0.04)
    for g, (stack, title) in enumerate(((real, f"real galaxies (HST, {len(real)})"),
                                        (generated, f"DCGAN samples ({len(generated)})"))):
        inner = outer[0, g].subgridspec(nrows, ncols, wspace=0.03, hspace=0.03)
        axes = [fig.add_subplot(inner[r, c]) for r in range(nrows) for c in range(ncols)]
        for k, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(stack):
                img = _clean(stack[k])
                ax.imshow(img, origin="lower", cmap="gray", norm=display_norm([img], img), interpolation="nearest")
            else:
                ax.axis("off")
        # title centred above this grid
        box = outer[0, g].get_position(fig)
        fig.text(0.5 * (box.x0 + box.x1), box.y1 + 0.12 / (nrows * cell + 0.75), title, ha="center",
                 va="bottom", fontsize=12)
    return save_figure(fig, out_png, out_pdf, dpi)


# ---------------------------------------------------------------------------------------------- figure 3
def fig3_superresolution(hi: Any, lo: Any, gan: Any, out_png: str | Path, out_pdf: str | Path | None = None, *,
                         pixel_scale_hi: float = 0.06, pixel_scale_lo: float = 0.18,
                         row_labels: Sequence[str] | None = None, dpi: int = 150) -> Path:
    """Super-resolution of test galaxies: rows = galaxies; columns high-res | low-res | GAN | GAN - high-res.

    ``hi``, ``gan``: ``(n, N, N)`` on the high-resolution grid; ``lo``: ``(n, m, m)``; flux per pixel. The three
    image columns of a row share one asinh stretch in surface brightness; the residual (flux per high-res pixel)
    uses a diverging colormap symmetric about 0 with one colourbar for all rows (asinh-scaled, linear within
    ``3 sigma`` of the high-resolution noise).
    """
    hi = _square_stack(hi, "hi", 3)
    lo = _square_stack(lo, "lo", 3)
    gan = _square_stack(gan, "gan", 3)
    n = len(hi)
    _same_length(n, lo=lo, gan=gan)
    if gan.shape != hi.shape:
        raise FigureError(f"gan {gan.shape} must have the shape of hi {hi.shape} (same grid)")
    s_hi = _positive(pixel_scale_hi, "pixel_scale_hi")
    s_lo = _positive(pixel_scale_lo, "pixel_scale_lo")
    labels = _row_labels(row_labels, n, "galaxy")
    n_hi, n_lo = hi.shape[-1], lo.shape[-1]
    half = max(_half_width(n_hi, s_hi), _half_width(n_lo, s_lo))

    resid = _clean(gan) - _clean(hi)
    sig_hi = float(np.median([_robust_sigma(_clean(h)) for h in hi]))
    vres = float(np.percentile(np.abs(resid), 99.5))
    vres = max(vres, 5.0 * sig_hi, 1e-30)
    rnorm = AsinhNorm(linear_width=LINEAR_SIGMAS * sig_hi, vmin=-vres, vmax=vres)

    cell = 1.75
    fig = plt.figure(figsize=(4 * cell + 1.6, n * cell + 0.75))
    grid = fig.add_gridspec(n, 5, width_ratios=[1, 1, 1, 1, 0.07], left=0.1, right=0.9,
                            bottom=0.45 / (n * cell + 0.75), top=1 - 0.4 / (n * cell + 0.75), wspace=0.06,
                            hspace=0.06)
    titles = [STAMP_TITLES["hi"], STAMP_TITLES["lo"], STAMP_TITLES["gan"], "GAN \u2212 high-res"]
    im_res = None
    for r in range(n):
        sb = [_clean(hi[r]) / s_hi**2, _clean(lo[r]) / s_lo**2, _clean(gan[r]) / s_hi**2]
        norm = display_norm(sb, sb[0])
        for c in range(4):
            ax = fig.add_subplot(grid[r, c])
            if c < 3:
                ext = _extent(n_lo, s_lo) if c == 1 else _extent(n_hi, s_hi)
                ax.imshow(sb[c], origin="lower", cmap="gray", norm=norm, extent=ext, interpolation="nearest")
            else:
                im_res = ax.imshow(resid[r], origin="lower", cmap="RdBu_r", norm=rnorm, extent=_extent(n_hi, s_hi),
                                   interpolation="nearest")
            _style_axis(ax, half, left=c == 0, bottom=r == n - 1, background="black" if c < 3 else None)
            if c == 0:
                ax.set_ylabel(f"{labels[r]}\n\u0394y [arcsec]", fontsize=8)
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
    cax = fig.add_subplot(grid[:, 4])
    cb = fig.colorbar(im_res, cax=cax)
    cb.set_label(f"GAN \u2212 high-res [image units per {s_hi:g}\u2033 pixel]", fontsize=9)
    cb.ax.tick_params(labelsize=7)
    return save_figure(fig, out_png, out_pdf, dpi)


# ---------------------------------------------------------------------------------------------- figure 4
def _blend_inputs(hi: Any, lo: Any, gan: Any, truth_hi: Any, truth_lo: Any, peaks: Any, nd: int,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, list[np.ndarray]]]:
    hi = _square_stack(hi, "hi", nd)
    lo = _square_stack(lo, "lo", nd)
    gan = _square_stack(gan, "gan", nd)
    n = len(hi)
    _same_length(n, lo=lo, gan=gan)
    if gan.shape != hi.shape:
        raise FigureError(f"gan {gan.shape} must have the shape of hi {hi.shape} (same grid)")
    if nd == 4 and lo.shape[1] != hi.shape[1]:
        raise FigureError(f"lo has {lo.shape[1]} bands, hi has {hi.shape[1]}")
    t_hi = _truth(truth_hi, "truth_hi", n)
    t_lo = _truth(truth_lo, "truth_lo", n)
    if t_hi.shape != t_lo.shape:
        raise FigureError(f"truth_hi {t_hi.shape} and truth_lo {t_lo.shape} differ in shape")
    return hi, lo, gan, t_hi, t_lo, _check_peaks(peaks, n)


def fig4_blends_with_peaks(hi: Any, lo: Any, gan: Any, truth_hi: Any, truth_lo: Any, peaks: Mapping[str, Any],
                           out_png: str | Path, out_pdf: str | Path | None = None, *,
                           pixel_scale_hi: float = 0.06, pixel_scale_lo: float = 0.18,
                           row_labels: Sequence[str] | None = None, dpi: int = 150) -> Path:
    """Blends (rows) seen in high-res | low-res | GAN with true centres (open circles) and found peaks (crosses).

    ``hi``, ``gan``: ``(n, N, N)``; ``lo``: ``(n, m, m)``; ``truth_hi``: ``(n, 2, 2)`` = (blend, galaxy, x/y) in
    high-res pixels, ``truth_lo`` the same in low-res pixels; ``peaks``: ``{'hi', 'lo', 'gan'}`` -> list of ``n``
    ``(k, 2)`` arrays of (x, y) in the pixels of that image (GAN peaks on the high-res grid).
    """
    hi, lo, gan, t_hi, t_lo, pk = _blend_inputs(hi, lo, gan, truth_hi, truth_lo, peaks, 3)
    s_hi = _positive(pixel_scale_hi, "pixel_scale_hi")
    s_lo = _positive(pixel_scale_lo, "pixel_scale_lo")
    n = len(hi)
    labels = _row_labels(row_labels, n, "blend")
    n_hi, n_lo = hi.shape[-1], lo.shape[-1]
    half = max(_half_width(n_hi, s_hi), _half_width(n_lo, s_lo))

    cell = 2.3
    height = n * cell + 1.0
    fig = plt.figure(figsize=(3 * cell + 0.9, height))
    grid = fig.add_gridspec(n, 3, left=0.13, right=0.98, bottom=0.85 / height, top=1 - 0.35 / height,
                            wspace=0.05, hspace=0.05)
    for r in range(n):
        sb = {"hi": _clean(hi[r]) / s_hi**2, "lo": _clean(lo[r]) / s_lo**2, "gan": _clean(gan[r]) / s_hi**2}
        norm = display_norm(list(sb.values()), sb["hi"])
        for c, kind in enumerate(STAMP_KINDS):
            ax = fig.add_subplot(grid[r, c])
            npx, scale = (n_lo, s_lo) if kind == "lo" else (n_hi, s_hi)
            ax.imshow(sb[kind], origin="lower", cmap="gray", norm=norm, extent=_extent(npx, scale),
                      interpolation="nearest")
            _draw_markers(ax, t_lo[r] if kind == "lo" else t_hi[r], pk[kind][r], npx, scale)
            _style_axis(ax, half, left=c == 0, bottom=r == n - 1)
            if c == 0:
                ax.set_ylabel(f"{labels[r]}\n\u0394y [arcsec]", fontsize=8)
            if r == 0:
                ax.set_title(STAMP_TITLES[kind], fontsize=10)
    _marker_legend(fig, 0.01)
    return save_figure(fig, out_png, out_pdf, dpi)


# ---------------------------------------------------------------------------------------------- figure 5
def _check_binned(df: Any, name: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise FigureError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in BINNED_COLUMNS if c not in df.columns]
    if missing:
        raise FigureError(f"{name}: missing column(s) {missing}; need {list(BINNED_COLUMNS)}")
    if len(df) == 0:
        raise FigureError(f"{name}: empty table")
    out = df.copy()
    for col in BINNED_COLUMNS:
        if col != "method":
            out[col] = pd.to_numeric(out[col], errors="coerce")
    out["method"] = out["method"].astype(str)
    if not np.isfinite(out[["left", "right"]].to_numpy(dtype=np.float64)).all():
        raise FigureError(f"{name}: bin edges left/right must be finite")
    if (out["right"] <= out["left"]).any():
        raise FigureError(f"{name}: every bin needs right > left")
    return out


def _method_order(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHOD_COLOURS if m in methods]
    return known + sorted(m for m in set(methods) if m not in known)


def _fraction_curve(ax: plt.Axes, rows: pd.DataFrame, colour: str, label: str, *, band: bool = True,
                    lw: float = 1.8, ls: str = "-", alpha: float = 1.0, marker: str | None = "o") -> None:
    rows = rows.sort_values("centre")
    x = rows["centre"].to_numpy(dtype=np.float64)
    y = rows["fraction"].to_numpy(dtype=np.float64)
    if band:
        ax.fill_between(x, rows["ci_low"].to_numpy(dtype=np.float64), rows["ci_high"].to_numpy(dtype=np.float64),
                        color=colour, alpha=0.18, lw=0)
    ax.plot(x, y, color=colour, lw=lw, ls=ls, alpha=alpha, marker=marker, ms=3.5, label=label)


def _counts(ax: plt.Axes, df: pd.DataFrame, **kw: Any) -> None:
    bins = df.groupby(["left", "right"], sort=True)["count"].max().reset_index()
    ax.bar(bins["left"], bins["count"], width=bins["right"] - bins["left"], align="edge", **kw)


def _label(key: str, labels: Mapping[str, str] | None, default: Mapping[str, str]) -> str:
    if labels and key in labels:
        return str(labels[key])
    return str(default.get(key, key))


def fig5_detection_fraction(binned: Mapping[str, Any], out_png: str | Path, out_pdf: str | Path | None = None, *,
                            labels: Mapping[str, str] | None = None,
                            reference: Mapping[str, float] | None = None,
                            as_coded: Mapping[str, Any] | None = None, dpi: int = 150) -> Path:
    """Blend detection fraction against the blend parameters (one column each) with counts per bin below.

    ``binned``: parameter name -> long-format table with :data:`BINNED_COLUMNS` (one row per bin and method,
    method in ``hi``/``lo``/``gan``). Columns follow :data:`PARAMETERS` order for the parameters present, then
    any others. ``labels`` overrides display names, keyed by parameter (x-axis label) or by method (legend).
    ``reference``: method -> fraction drawn as a faint dotted horizontal line (e.g.
    :data:`PAPER_DETECTION_FRACTION`). ``as_coded``: the same tables for the protocol "as coded", drawn dashed in
    the same colours (no interval band) over the parameters they share with ``binned``. The counts row shows, per
    bin, the number of blends (largest count over the methods).
    """
    if not isinstance(binned, Mapping) or not binned:
        raise FigureError("fig5: no binned tables given (expected a dict parameter -> DataFrame)")
    tables = {str(k): _check_binned(v, f"binned[{k!r}]") for k, v in binned.items()}
    if as_coded is not None and not isinstance(as_coded, Mapping):
        raise FigureError(f"fig5: as_coded must be a dict parameter -> DataFrame, got {type(as_coded).__name__}")
    coded = {str(k): _check_binned(v, f"as_coded[{k!r}]") for k, v in (as_coded or {}).items()}
    params = [p for p in PARAMETERS if p in tables] + [p for p in tables if p not in PARAMETERS]
    ref = _check_reference(reference)

    ncols = len(params)
    width = 3.6 * ncols + 0.6
    fig = plt.figure(figsize=(width, 5.4))
    grid = fig.add_gridspec(2, ncols, height_ratios=[3, 1.1], left=0.75 / width, right=1 - 0.12 / width,
                            bottom=0.11, top=0.9, hspace=0.06, wspace=0.12)
    handles: dict[str, Any] = {}
    for c, p in enumerate(params):
        df = tables[p]
        ax = fig.add_subplot(grid[0, c])
        ax_n = fig.add_subplot(grid[1, c], sharex=ax)
        colours = {}
        for m in _method_order(list(df["method"].unique())):
            colours[m] = METHOD_COLOURS.get(m, f"C{len(handles) % 10}")
            _fraction_curve(ax, df[df["method"] == m], colours[m], _label(m, labels, METHOD_LABELS))
            if m in ref:
                ax.axhline(ref[m], color=colours[m], lw=1.0, ls=":", alpha=0.5, zorder=0)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
        if p in coded:
            for m in _method_order(list(coded[p]["method"].unique())):
                _fraction_curve(ax, coded[p][coded[p]["method"] == m], colours.get(m, "0.4"), "_nolegend_",
                                band=False, lw=1.3, ls="--", marker=None)
        _counts(ax_n, df, color="0.6", edgecolor="0.3", lw=0.6)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(float(df["left"].min()), float(df["right"].max()))
        ax.grid(alpha=0.25)
        ax.tick_params(labelbottom=False, labelsize=8)
        ax_n.tick_params(labelsize=8)
        ax_n.set_xlabel(_label(p, labels, PARAMETER_LABELS), fontsize=11)
        if c == 0:
            ax.set_ylabel("blend detection fraction", fontsize=10)
            ax_n.set_ylabel("N blends", fontsize=10)
        else:
            ax.tick_params(labelleft=False)
    extra = [Line2D([], [], color="0.4", ls=":", lw=1.0, alpha=0.7, label="paper (headline)")] if ref else []
    if coded:
        extra = [Line2D([], [], color="0.4", ls="-", lw=1.8, label="ours (as described)"),
                 Line2D([], [], color="0.4", ls="--", lw=1.3, label="as the authors' code did"), *extra]
    fig.legend(handles=list(handles.values()) + extra, labels=list(handles) + [e.get_label() for e in extra],
               loc="upper center", ncol=len(handles) + len(extra), fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, 0.995))
    return save_figure(fig, out_png, out_pdf, dpi)


def _check_reference(reference: Mapping[str, float] | None) -> dict[str, float]:
    if reference is None:
        return {}
    if not isinstance(reference, Mapping):
        raise FigureError(f"reference must be a dict method -> fraction, got {type(reference).__name__}")
    out = {}
    for k, v in reference.items():
        f = float(v)
        if not 0.0 <= f <= 1.0:
            raise FigureError(f"reference[{k!r}] = {v!r} is not a fraction in [0, 1]")
        out[str(k)] = f
    return out


# ---------------------------------------------------------------------------------------------- figure 8
def _band_indexes(rgb_bands: Sequence[Any], bands: Sequence[str], n_bands: int) -> list[int]:
    if len(rgb_bands) != 3:
        raise FigureError(f"rgb_bands: need 3 bands (red, green, blue), got {len(rgb_bands)}")
    out = []
    for b in rgb_bands:
        if isinstance(b, (int, np.integer)) and not isinstance(b, bool):
            if not 0 <= int(b) < n_bands:
                raise FigureError(f"rgb_bands: index {b} out of range for {n_bands} bands")
            out.append(int(b))
        elif str(b) in bands:
            out.append(list(bands).index(str(b)))
        else:
            raise FigureError(f"rgb_bands: band {b!r} not in bands {list(bands)}")
    return out


def fig8_multiband(hi7: Any, lo7: Any, gan7: Any, truth_hi: Any, truth_lo: Any, peaks: Mapping[str, Any],
                   bands: Sequence[str], out_png: str | Path, out_pdf: str | Path | None = None, *,
                   rgb_bands: Sequence[Any] = DEFAULT_RGB_BANDS, zeropoints: Sequence[float] | None = None,
                   pixel_scale_hi: float = 0.06, pixel_scale_lo: float = 0.18,
                   row_labels: Sequence[str] | None = None, dpi: int = 150) -> Path:
    """Multi-band blends in colour: like :func:`fig4_blends_with_peaks` on Lupton et al. (2004) composites.

    ``hi7``, ``gan7``: ``(n, B, N, N)``; ``lo7``: ``(n, B, m, m)``; ``bands``: the B band names;
    ``rgb_bands``: red, green, blue as names or indexes. With ``zeropoints`` (AB, one per band) each channel is
    first put on a common f_nu scale, otherwise the images are used as they are. One ``minimum``/``stretch``/``Q``
    (:func:`lupton_parameters` of the high-res image) per blend for its high-res, low-res and GAN composites.
    """
    hi7, lo7, gan7, t_hi, t_lo, pk = _blend_inputs(hi7, lo7, gan7, truth_hi, truth_lo, peaks, 4)
    bands = [str(b) for b in bands]
    n_bands = hi7.shape[1]
    if len(bands) != n_bands:
        raise FigureError(f"bands: {len(bands)} names for {n_bands} image bands")
    idx = _band_indexes(rgb_bands, bands, n_bands)
    if zeropoints is None:
        weights = np.ones(n_bands)
    else:
        zp = np.asarray(zeropoints, dtype=np.float64).ravel()
        if zp.shape != (n_bands,) or not np.isfinite(zp).all():
            raise FigureError(f"zeropoints: need {n_bands} finite values, got {np.asarray(zeropoints).shape}")
        weights = 10.0 ** (-0.4 * (zp - REFERENCE_ZEROPOINT))
    s_hi = _positive(pixel_scale_hi, "pixel_scale_hi")
    s_lo = _positive(pixel_scale_lo, "pixel_scale_lo")
    n = len(hi7)
    labels = _row_labels(row_labels, n, "blend")
    n_hi, n_lo = hi7.shape[-1], lo7.shape[-1]
    half = max(_half_width(n_hi, s_hi), _half_width(n_lo, s_lo))

    def channels(cube: np.ndarray, scale: float) -> list[np.ndarray]:
        return [_clean(cube[i]) * weights[i] / scale**2 for i in idx]

    cell = 2.3
    height = n * cell + 1.0
    fig = plt.figure(figsize=(3 * cell + 0.9, height))
    grid = fig.add_gridspec(n, 3, left=0.13, right=0.98, bottom=0.85 / height, top=1 - 0.35 / height,
                            wspace=0.05, hspace=0.05)
    for r in range(n):
        rgb = {"hi": channels(hi7[r], s_hi), "lo": channels(lo7[r], s_lo), "gan": channels(gan7[r], s_hi)}
        par = lupton_parameters(np.mean(rgb["hi"], axis=0))
        for c, kind in enumerate(STAMP_KINDS):
            ax = fig.add_subplot(grid[r, c])
            npx, scale = (n_lo, s_lo) if kind == "lo" else (n_hi, s_hi)
            image = make_lupton_rgb(*rgb[kind], minimum=par["minimum"], stretch=par["stretch"], Q=par["Q"])
            ax.imshow(image, origin="lower", extent=_extent(npx, scale), interpolation="nearest")
            _draw_markers(ax, t_lo[r] if kind == "lo" else t_hi[r], pk[kind][r], npx, scale)
            _style_axis(ax, half, left=c == 0, bottom=r == n - 1)
            if c == 0:
                ax.set_ylabel(f"{labels[r]}\n\u0394y [arcsec]", fontsize=8)
            if r == 0:
                ax.set_title(STAMP_TITLES[kind] + (" (7-band)" if kind == "gan" else ""), fontsize=10)
    r_b, g_b, b_b = (bands[i] for i in idx)
    _marker_legend(fig, 0.01)
    fig.text(0.985, 0.1 / height, f"R {r_b}  G {g_b}  B {b_b}", ha="right", va="bottom", fontsize=8)
    return save_figure(fig, out_png, out_pdf, dpi)


# ---------------------------------------------------------------------------------------------- figure 9
def _rename_gan(df: pd.DataFrame, to: str) -> pd.DataFrame:
    out = df.copy()
    out.loc[out["method"] == "gan", "method"] = to
    return out


def fig9_one_vs_seven(binned_1band: Any, binned_7band: Any, out_png: str | Path, out_pdf: str | Path | None = None,
                      *, labels: Mapping[str, str] | None = None, reference: Mapping[str, float] | None = None,
                      xlabel: str = PARAMETER_LABELS["sep_over_fwhm_sum"], dpi: int = 150) -> Path:
    """Detection fraction vs separation / sum FWHM: GAN 1-band against GAN 7-band, high/low-res as thin lines.

    Both tables have :data:`BINNED_COLUMNS`; methods among ``hi``, ``lo``, ``gan1``, ``gan7`` (a plain ``gan`` in
    ``binned_1band`` is read as ``gan1``, in ``binned_7band`` as ``gan7``). High/low-res lines come from the
    1-band table (else the 7-band one); 7-band high/low-res rows that differ from the 1-band ones are drawn
    dashed. The lower panel shows the number of blends per bin of each table.
    """
    one = _rename_gan(_check_binned(binned_1band, "binned_1band"), "gan1")
    seven = _rename_gan(_check_binned(binned_7band, "binned_7band"), "gan7")
    if "gan1" not in set(one["method"]):
        raise FigureError("binned_1band: no GAN rows (method 'gan' or 'gan1')")
    if "gan7" not in set(seven["method"]):
        raise FigureError("binned_7band: no GAN rows (method 'gan' or 'gan7')")
    ref = _check_reference(reference)
    if "gan" in ref:  # e.g. PAPER_DETECTION_FRACTION: the paper's headline GAN number is the 1-band one
        ref.setdefault("gan1", ref.pop("gan"))

    fig = plt.figure(figsize=(6.4, 5.6))
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1.1], left=0.13, right=0.97, bottom=0.1, top=0.97, hspace=0.06)
    ax = fig.add_subplot(grid[0])
    ax_n = fig.add_subplot(grid[1], sharex=ax)
    for m in ("hi", "lo"):
        rows1, rows7 = one[one["method"] == m], seven[seven["method"] == m]
        colour, lab = METHOD_COLOURS[m], _label(m, labels, METHOD_LABELS)
        if len(rows1):
            _fraction_curve(ax, rows1, colour, lab, band=False, lw=1.0, alpha=0.7, marker=None)
            if len(rows7) and not _same_curve(rows1, rows7):
                _fraction_curve(ax, rows7, colour, f"{lab} (7-band)", band=False, lw=1.0, ls="--", alpha=0.7,
                                marker=None)
        elif len(rows7):
            _fraction_curve(ax, rows7, colour, lab, band=False, lw=1.0, alpha=0.7, marker=None)
        if m in ref:
            ax.axhline(ref[m], color=colour, lw=1.0, ls=":", alpha=0.35, zorder=0)
    for m, df in (("gan1", one), ("gan7", seven)):
        _fraction_curve(ax, df[df["method"] == m], METHOD_COLOURS[m], _label(m, labels, METHOD_LABELS))
        if m in ref:
            ax.axhline(ref[m], color=METHOD_COLOURS[m], lw=1.0, ls=":", alpha=0.35, zorder=0)
    ax.set_ylim(-0.02, 1.02)
    left = float(min(one["left"].min(), seven["left"].min()))
    right = float(max(one["right"].max(), seven["right"].max()))
    ax.set_xlim(left, right)
    ax.grid(alpha=0.25)
    ax.set_ylabel("blend detection fraction", fontsize=10)
    ax.tick_params(labelbottom=False, labelsize=8)
    handles, names = ax.get_legend_handles_labels()
    if ref:
        handles.append(Line2D([], [], color="0.4", ls=":", lw=1.0, alpha=0.6))
        names.append("paper (headline)")
    ax.legend(handles, names, fontsize=9, frameon=False, loc="best")
    _counts(ax_n, one, color=METHOD_COLOURS["gan1"], alpha=0.35, lw=0, label="1-band sample")
    if not _same_bins(one, seven):
        _counts(ax_n, seven, facecolor="none", edgecolor=METHOD_COLOURS["gan7"], lw=1.2, label="7-band sample")
        ax_n.legend(fontsize=7, frameon=False, loc="upper right")
    ax_n.set_ylabel("N blends", fontsize=10)
    ax_n.set_xlabel(xlabel, fontsize=11)
    ax_n.tick_params(labelsize=8)
    return save_figure(fig, out_png, out_pdf, dpi)


def _same_curve(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    a, b = a.sort_values("centre"), b.sort_values("centre")
    if len(a) != len(b):
        return False
    return bool(np.allclose(a["centre"], b["centre"]) and
                np.allclose(a["fraction"].to_numpy(dtype=np.float64), b["fraction"].to_numpy(dtype=np.float64),
                            equal_nan=True))


def _same_bins(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    ca = a.groupby(["left", "right"], sort=True)["count"].max()
    cb = b.groupby(["left", "right"], sort=True)["count"].max()
    return len(ca) == len(cb) and bool(np.allclose(ca.index.to_frame().to_numpy(), cb.index.to_frame().to_numpy())
                                       and np.allclose(ca.to_numpy(), cb.to_numpy()))


# ---------------------------------------------------------------------------------------------- training
def loss_curves(losses: Any, out_png: str | Path, out_pdf: str | Path | None = None, *, title: str | None = None,
                dpi: int = 120) -> Path:
    """Training diagnostics: D and G losses vs epoch; the L1 term and D(real)/D(fake) in extra panels if present.

    ``losses``: DataFrame with columns ``epoch``, ``loss_d``, ``loss_g`` and optionally ``loss_l1``, ``d_real``,
    ``d_fake`` (e.g. the ``losses.csv`` of :mod:`workflow_scripts.train.loop`). Several rows per epoch (per-step
    logs) are drawn faintly with their per-epoch mean on top.
    """
    if not isinstance(losses, pd.DataFrame):
        raise FigureError(f"losses: expected a pandas DataFrame, got {type(losses).__name__}")
    missing = [c for c in ("epoch", "loss_d", "loss_g") if c not in losses.columns]
    if missing:
        raise FigureError(f"losses: missing column(s) {missing}; need epoch, loss_d, loss_g")
    if len(losses) == 0:
        raise FigureError("losses: empty table")
    cols = [c for c in ("epoch", "loss_d", "loss_g", "loss_l1", "d_real", "d_fake") if c in losses.columns]
    df = losses[cols].apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"]).sort_values("epoch", kind="stable")
    if len(df) == 0:
        raise FigureError("losses: no numeric epoch values")

    def has(c: str) -> bool:
        return c in df.columns and bool(np.isfinite(df[c].to_numpy(dtype=np.float64)).any())

    panels: list[list[tuple[str, str, str]]] = [[("loss_d", "discriminator", "tab:red"),
                                                 ("loss_g", "generator", "tab:blue")]]
    if has("loss_l1"):
        panels.append([("loss_l1", "L1 (pixel) loss", "tab:green")])
    if has("d_real") or has("d_fake"):
        d_out = (("d_real", "D(real)", "black"), ("d_fake", "D(fake)", "tab:orange"))
        panels.append([(c, lab, col) for c, lab, col in d_out if has(c)])
    df = df.reset_index(drop=True)
    per_step = bool(df["epoch"].duplicated().any())
    mean = df.groupby("epoch", sort=True).mean() if per_step else df.set_index("epoch")
    # per-step rows spread over their epoch (the k-th of m rows at epoch + k / m), the epoch mean at the epoch
    groups = df.groupby("epoch", sort=False)["epoch"]
    x_step = df["epoch"] + groups.cumcount() / groups.transform("size")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for col, lab, colour in panel:
            if per_step:
                ax.plot(x_step, df[col], color=colour, alpha=0.25, lw=0.6)
            marker = "o" if len(mean) < 30 else None
            ax.plot(mean.index, mean[col], color=colour, lw=1.6, label=lab, marker=marker, ms=3)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8, frameon=False)
    axes[0][0].set_ylabel("loss")
    if len(panels) > 1 and panels[-1][0][0] in ("d_real", "d_fake"):
        axes[0][-1].set_ylabel("mean discriminator output")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_png, out_pdf, dpi)
