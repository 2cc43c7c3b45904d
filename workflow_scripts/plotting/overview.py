"""Data overview of one survey field: what the mosaics, PSFs and catalogue look like, on one page.

Left: an asinh (Lupton et al. 2004) false-colour view of the field from three bands spanning the wavelength range
(blue = shortest, red = longest), each band first put on a common f_nu scale with its AB zeropoint so the colours
mean something; a single band is shown as an asinh-stretched grey image. Right, top: the PSF of every band (log
stretch) with its measured FWHM beside the configured one and the 5-sigma depth implied by the rms map beside the
configured depth. Right, bottom: when a catalogue exists, the number counts and the size-magnitude plane (stars
apart); otherwise a table of the bands.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from astropy.visualization import AsinhStretch, ImageNormalize, ManualInterval, make_lupton_rgb  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from workflow_scripts.io import Mosaic  # noqa: E402
from workflow_scripts.plotting.save import FigureError, save_figure  # noqa: E402
from workflow_scripts.surveys import Survey  # noqa: E402

__all__ = ["FigureError", "plot_field_overview", "bin_mosaic", "order_bands", "MAX_DISPLAY_PIXELS"]

MAX_DISPLAY_PIXELS = 1600     # the colour image is block-averaged down to at most this many pixels a side
REFERENCE_ZEROPOINT = 25.0    # common AB zeropoint the bands are scaled to before colour mixing
BIN_KEY = "DISPBIN"           # header key recording the display binning applied by bin_mosaic


Box = tuple[float, float, float, float]  # left, bottom, right, top in figure fractions


def _rect(box: Box) -> tuple[float, float, float, float]:
    left, bottom, right, top = box
    return (left, bottom, right - left, top - bottom)


# ------------------------------------------------------------------------------------------------ helpers
def bin_mosaic(mosaic: Mosaic, factor: int) -> Mosaic:
    """Block-average a mosaic by an integer factor (NaN-aware), with a matching WCS and rms map.

    Used to show large mosaics (a 30k-pixel GOODS-S band) without holding full-resolution copies. The image is
    a block mean (same units per pixel), the rms that of the mean; the header records the binning (``DISPBIN``).
    """
    if factor <= 1:
        return mosaic
    ny, nx = mosaic.data.shape
    ny_b, nx_b = ny // factor, nx // factor
    if ny_b < 1 or nx_b < 1:
        raise FigureError(f"cannot bin a {ny}x{nx} mosaic by {factor}")

    def blocks(a: np.ndarray) -> np.ndarray:
        return np.asarray(a[: ny_b * factor, : nx_b * factor], dtype=np.float64).reshape(ny_b, factor, nx_b, factor)

    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks (no coverage) stay NaN
        data = np.nanmean(blocks(mosaic.data), axis=(1, 3)).astype(np.float32)
        rms = None
        if mosaic.rms is not None:
            r = blocks(mosaic.rms)
            r = np.where(np.isfinite(r) & (r > 0), r, np.nan)
            n = np.isfinite(r).sum(axis=(1, 3))
            rms = (np.sqrt(np.nansum(r**2, axis=(1, 3))) / np.maximum(n, 1)).astype(np.float32)
            rms[n == 0] = np.nan
    wcs = mosaic.wcs[::factor, ::factor]
    header = mosaic.header.copy()
    header[BIN_KEY] = (int(mosaic.header.get(BIN_KEY, 1)) * factor, "display binning of the native pixels")
    return Mosaic(data=data, wcs=wcs, header=header, rms=rms)


def _binning(mosaic: Mosaic) -> int:
    return int(mosaic.header.get(BIN_KEY, 1))


def _native_scale(mosaic: Mosaic) -> float:
    """arcsec per native pixel, also for a mosaic binned by :func:`bin_mosaic`."""
    return mosaic.pixel_scale / _binning(mosaic)


def order_bands(bands: Sequence[str], survey: Survey | None) -> list[str]:
    """Bands in the survey's (wavelength) order; bands the survey does not list go last, in input order."""
    known = [b for b in (survey.band_names if survey else []) if b in bands]
    return known + [b for b in bands if b not in known]


def _robust_sigma(a: np.ndarray) -> float:
    v = a[np.isfinite(a)]
    if v.size == 0:
        return 1.0
    if v.size > 1_000_000:
        v = v[:: v.size // 1_000_000]
    med = np.median(v)
    s = 1.4826 * float(np.median(np.abs(v - med)))
    return s if s > 0 else float(np.std(v)) or 1.0


def _zeropoint(mosaic: Mosaic, band: str, survey: Survey | None) -> float:
    if "PHOTZP" in mosaic.header:
        return float(mosaic.header["PHOTZP"])
    if survey is not None and band in survey.bands:
        return survey.band(band).zeropoint
    return REFERENCE_ZEROPOINT


def _native_psf(value: Any) -> tuple[np.ndarray, float | None]:
    """A PSF given as an array, or as an object with ``.psf`` (and ``.fwhm`` in arcsec), e.g. an EPSFResult."""
    if hasattr(value, "psf"):
        return np.asarray(value.psf, dtype=np.float64), getattr(value, "fwhm", None)
    return np.asarray(value, dtype=np.float64), None


# ------------------------------------------------------------------------------------------------ panels
def _colour_image(ax: plt.Axes, mosaics: Mapping[str, Mosaic], bands: list[str], survey: Survey | None) -> str:
    """Draw the field; return a caption naming the bands in each channel."""
    first = mosaics[bands[0]]
    factor = max(1, math.ceil(max(first.data.shape) / MAX_DISPLAY_PIXELS))
    same_grid = all(mosaics[b].data.shape == first.data.shape for b in bands)
    if len(bands) >= 3 and same_grid:
        chosen = [bands[-1], bands[len(bands) // 2], bands[0]]  # r, g, b
    elif len(bands) == 2 and same_grid:
        chosen = [bands[1], None, bands[0]]
    else:
        chosen = [bands[-1]]

    planes: dict[str, np.ndarray] = {}
    sigmas: dict[str, float] = {}
    for b in {c for c in chosen if c is not None}:
        m = bin_mosaic(mosaics[b], factor)
        scale = 10.0 ** (-0.4 * (_zeropoint(m, b, survey) - REFERENCE_ZEROPOINT))
        img = np.nan_to_num(np.asarray(m.data, dtype=np.float64) * scale, nan=0.0, posinf=0.0, neginf=0.0)
        planes[b] = img
        sigmas[b] = _robust_sigma(np.where(img != 0, img, np.nan))

    if len(chosen) == 3:
        r_b, g_b, b_b = chosen
        r, b = planes[r_b], planes[b_b]
        g = planes[g_b] if g_b is not None else 0.5 * (r + b)
        sig = float(np.mean([sigmas[c] for c in chosen if c is not None]))
        rgb = make_lupton_rgb(r, g, b, minimum=-0.5 * sig, stretch=25.0 * sig, Q=8)
        ax.imshow(rgb, origin="lower", interpolation="nearest")
        caption = f"R {r_b}   G {g_b or f'({r_b}+{b_b})/2'}   B {b_b}"
    else:
        img, sig = planes[chosen[0]], sigmas[chosen[0]]
        hi = float(np.nanpercentile(img, 99.9))
        norm = ImageNormalize(img, interval=ManualInterval(-2.0 * sig, max(hi, 30.0 * sig)),
                              stretch=AsinhStretch(a=0.05))
        ax.imshow(img, origin="lower", cmap="gray", norm=norm, interpolation="nearest")
        caption = f"{chosen[0]} (asinh)"
    ax.set_xticks([])
    ax.set_yticks([])
    binned = bin_mosaic(first, factor)
    _scale_bar(ax, binned)
    _compass(ax, binned)
    if factor > 1:
        caption += f"   (binned {factor}x{factor} for display)"
    return caption


def _scale_bar(ax: plt.Axes, mosaic: Mosaic) -> None:
    ny, nx = mosaic.data.shape
    scale = mosaic.pixel_scale  # arcsec / displayed pixel
    width_arcsec = nx * scale
    nice = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600]
    length = max([n for n in nice if n <= 0.25 * width_arcsec], default=nice[0])
    px = length / scale
    x0, y0 = 0.05 * nx, 0.05 * ny
    ax.plot([x0, x0 + px], [y0, y0], color="white", lw=2.5, solid_capstyle="butt")
    label = f'{length // 60:g}\u2032' if length >= 60 and length % 60 == 0 else f'{length:g}\u2033'
    ax.text(x0 + px / 2, y0 + 0.015 * ny, label, color="white", ha="center", va="bottom", fontsize=10)


def _compass(ax: plt.Axes, mosaic: Mosaic) -> None:
    """North and East arrows from the WCS, in the top-right corner."""
    try:
        ny, nx = mosaic.data.shape
        celestial = mosaic.wcs.celestial
        cx, cy = 0.88 * nx, 0.85 * ny
        ra, dec = celestial.wcs_pix2world([[cx, cy]], 0)[0]
        step = 1e-3  # deg
        for dra, ddec, name in ((0.0, step, "N"), (step / max(math.cos(math.radians(dec)), 1e-3), 0.0, "E")):
            px, py = celestial.wcs_world2pix([[ra + dra, dec + ddec]], 0)[0]
            vx, vy = px - cx, py - cy
            norm = math.hypot(vx, vy)
            if not np.isfinite(norm) or norm == 0:
                return
            length = 0.07 * min(nx, ny)
            ux, uy = vx / norm * length, vy / norm * length
            ax.annotate("", xy=(cx + ux, cy + uy), xytext=(cx, cy),
                        arrowprops={"arrowstyle": "->", "color": "white", "lw": 1.5})
            ax.text(cx + 1.3 * ux, cy + 1.3 * uy, name, color="white", ha="center", va="center", fontsize=10)
    except (ValueError, TypeError, AttributeError, IndexError):
        return


def _psf_panels(fig: plt.Figure, box: Box, psfs: Mapping[str, Any], bands: list[str],
                mosaics: Mapping[str, Mosaic], survey: Survey | None) -> None:
    from workflow_scripts.data.psf import PSFError, measure_fwhm

    shown = [b for b in bands if b in psfs] + [b for b in psfs if b not in bands]
    if not shown:
        ax = fig.add_axes(_rect(box))
        ax.axis("off")
        ax.text(0.5, 0.5, "no PSF given", ha="center", va="center", transform=ax.transAxes)
        return
    ncols = min(len(shown), 4)
    nrows = math.ceil(len(shown) / ncols)
    left, bottom, right, top = box
    grid = fig.add_gridspec(nrows, ncols, left=left, bottom=bottom, right=right, top=top, wspace=0.06, hspace=0.22)
    for k, band in enumerate(shown):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        psf, fwhm = _native_psf(psfs[band])
        mosaic = mosaics.get(band)
        scale = _native_scale(mosaic) if mosaic is not None else (survey.pixel_scale if survey else float("nan"))
        if fwhm is None:
            try:
                fwhm = measure_fwhm(psf) * scale
            except PSFError:
                fwhm = float("nan")
        peak = float(np.nanmax(psf)) if np.isfinite(psf).any() else 1.0
        floor = _noise_floor(psf / peak)
        show = np.clip(psf / peak, floor, None)
        ax.imshow(show, origin="lower", cmap="magma", norm=LogNorm(vmin=floor, vmax=1.0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        lines = [f'FWHM {fwhm:.3f}\u2033']
        if survey is not None and band in survey.bands:
            lines.append(f'cfg {survey.band(band).psf_fwhm:.3f}\u2033')
            if mosaic is not None and mosaic.rms is not None and np.isfinite(mosaic.rms).any():
                rms = np.asarray(mosaic.rms, dtype=np.float64)
                med = float(np.nanmedian(rms[np.isfinite(rms) & (rms > 0)])) if (rms > 0).any() else float("nan")
                depth = _depth(survey, band, med, mosaic)
                if np.isfinite(depth):
                    lines.append(f"5\u03c3 {depth:.1f} (cfg {survey.band(band).depth:.1f})")
        ax.set_title(band, fontsize=10, pad=3)
        ax.text(0.03, 0.03, "\n".join(lines), transform=ax.transAxes, color="white", fontsize=7.5,
                va="bottom", ha="left")


def _noise_floor(psf: np.ndarray) -> float:
    """Lowest level worth showing of a peak-normalised PSF: 3 sigma of its outer ring, within [1e-4, 1e-2]."""
    ring = np.concatenate([psf[:2].ravel(), psf[-2:].ravel(), psf[2:-2, :2].ravel(), psf[2:-2, -2:].ravel()])
    ring = ring[np.isfinite(ring)]
    if ring.size == 0:
        return 1e-4
    sigma = 1.4826 * float(np.median(np.abs(ring - np.median(ring))))
    return float(np.clip(3.0 * sigma, 1e-4, 1e-2))


def _depth(survey: Survey, band: str, sigma_pixel: float, mosaic: Mosaic) -> float:
    """5-sigma point-source depth implied by a per-pixel sigma, in the survey's depth aperture.

    For a binned mosaic the sigma of a block mean is turned back into a native-pixel sigma first.
    """
    if not np.isfinite(sigma_pixel) or sigma_pixel <= 0:
        return float("nan")
    sigma_pixel = sigma_pixel * _binning(mosaic)
    zp = _zeropoint(mosaic, band, survey)
    radius_px = 0.5 * survey.depth_aperture / _native_scale(mosaic)
    flux = 5.0 * sigma_pixel * math.sqrt(math.pi * radius_px**2)
    return -2.5 * math.log10(flux) + zp


def _mag_column(catalog: pd.DataFrame, bands: list[str], survey: Survey | None) -> str | None:
    preferred = []
    if survey is not None and survey.embedded.get("mag_band"):
        preferred.append(str(survey.embedded["mag_band"]))
    preferred += list(reversed(bands))
    for b in preferred:
        if f"mag_{b}" in catalog.columns:
            return f"mag_{b}"
    return next((c for c in catalog.columns if str(c).startswith("mag_")), None)


def _catalogue_panels(fig: plt.Figure, box: Box, catalog: pd.DataFrame, bands: list[str],
                      survey: Survey | None, psfs: Mapping[str, Any], mosaics: Mapping[str, Mosaic]) -> None:
    left, bottom, right, top = box
    grid = fig.add_gridspec(1, 2, left=left, bottom=bottom, right=right, top=top, wspace=0.42)
    ax_n = fig.add_subplot(grid[0, 0])
    ax_s = fig.add_subplot(grid[0, 1])
    col = _mag_column(catalog, bands, survey)
    if col is None:
        for ax in (ax_n, ax_s):
            ax.axis("off")
        ax_n.text(0.5, 0.5, "catalogue has no mag_<band> column", ha="center", va="center",
                  transform=ax_n.transAxes)
        return
    band = col[len("mag_"):]
    mag = pd.to_numeric(catalog[col], errors="coerce").to_numpy(dtype=np.float64)
    star = catalog["star"].astype(bool).to_numpy() if "star" in catalog.columns else np.zeros(len(mag), bool)
    good = np.isfinite(mag) & (mag > 5) & (mag < 40)
    if good.sum() == 0:
        ax_n.text(0.5, 0.5, f"no valid {col}", ha="center", va="center", transform=ax_n.transAxes)
        return
    lo, hi = math.floor(np.nanmin(mag[good]) * 2) / 2, math.ceil(np.nanmax(mag[good]) * 2) / 2
    bins = np.arange(lo, hi + 0.25, 0.25)
    if len(bins) < 2:
        bins = np.array([lo - 0.25, lo + 0.25])
    ax_n.hist(mag[good & ~star], bins=bins, histtype="stepfilled", color="0.6", label="galaxies")
    if (good & star).any():
        ax_n.hist(mag[good & star], bins=bins, histtype="step", color="C3", lw=1.5, label="stars")
    if np.histogram(mag[good], bins=bins)[0].max() > 30:
        ax_n.set_yscale("log")
    ax_n.set_xlabel(f"{band} [AB mag]")
    ax_n.set_ylabel("N / 0.25 mag")
    if survey is not None and band in survey.bands:
        ax_n.axvline(survey.band(band).depth, color="k", ls="--", lw=1)
        ax_n.text(survey.band(band).depth, 0.97, " 5\u03c3", transform=ax_n.get_xaxis_transform(),
                  va="top", ha="left", fontsize=8)
    ax_n.legend(fontsize=8, frameon=False, loc="upper left")
    ax_n.set_title(f"number counts ({good.sum()} sources)", fontsize=10)

    if "fwhm" in catalog.columns:
        size = pd.to_numeric(catalog["fwhm"], errors="coerce").to_numpy(dtype=np.float64)
        ok = good & np.isfinite(size) & (size > 0)
        ax_s.scatter(mag[ok & ~star], size[ok & ~star], s=3, c="0.4", alpha=0.5, lw=0, label="galaxies")
        ax_s.scatter(mag[ok & star], size[ok & star], s=10, c="C3", marker="*", lw=0, label="stars")
        if ok.any() and np.nanmax(size[ok]) > 10 * np.nanmin(size[ok]):
            ax_s.set_yscale("log")
            ax_s.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax_s.set_xlabel(f"{band} [AB mag]")
        ax_s.set_ylabel("FWHM [arcsec]")
        if band in psfs:
            psf, fwhm = _native_psf(psfs[band])
            if fwhm is None and band in mosaics:
                from workflow_scripts.data.psf import PSFError, measure_fwhm
                try:
                    fwhm = measure_fwhm(psf) * _native_scale(mosaics[band])
                except PSFError:
                    fwhm = None
            if fwhm:
                ax_s.axhline(fwhm, color="C0", ls="--", lw=1)
                ax_s.text(0.98, fwhm, "PSF", color="C0", ha="right", va="bottom", fontsize=8,
                          transform=ax_s.get_yaxis_transform())
        ax_s.legend(fontsize=8, frameon=False, loc="upper left", markerscale=2)
        ax_s.set_title("size\u2013magnitude", fontsize=10)
    else:
        ax_s.axis("off")
        ax_s.text(0.5, 0.5, "catalogue has no fwhm column", ha="center", va="center", transform=ax_s.transAxes)


def _band_table(fig: plt.Figure, box: Box, bands: list[str], survey: Survey | None,
                mosaics: Mapping[str, Mosaic]) -> None:
    ax = fig.add_axes(_rect(box))
    ax.axis("off")
    rows = []
    for b in bands:
        m = mosaics[b]
        ny, nx = m.data.shape
        spec_b = survey.bands.get(b) if survey is not None else None
        f = _binning(m)
        rows.append([b, f"{nx * f}\u00d7{ny * f}", f"{_native_scale(m):.3f}", f"{_zeropoint(m, b, survey):.3f}",
                     f"{spec_b.psf_fwhm:.3f}" if spec_b else "-", f"{spec_b.depth:.1f}" if spec_b else "-"])
    table = ax.table(cellText=rows, colLabels=["band", "pixels", "\u2033/px", "AB zp", "cfg FWHM\u2033", "cfg depth"],
                     loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.2)
    ax.set_title("bands (no catalogue for this survey)", fontsize=10)


# ------------------------------------------------------------------------------------------------- figure
def plot_field_overview(
    mosaics: Mapping[str, Mosaic],
    catalog: pd.DataFrame | None,
    psfs: Mapping[str, Any],
    survey: Survey | None,
    out_png: str | Path,
    out_pdf: str | Path | None = None,
    *,
    field: str | None = None,
    dpi: int = 120,
) -> Path:
    """Draw the overview of one survey field; write ``out_png`` (and ``out_pdf``) atomically; return the PNG path.

    ``mosaics``: band -> :class:`~workflow_scripts.io.Mosaic` (all bands of one field, ideally on one grid);
    ``catalog``: the field's boundary catalogue or None; ``psfs``: band -> native-grid PSF array (or an
    :class:`~workflow_scripts.data.psf.EPSFResult`); ``survey``: its :class:`~workflow_scripts.surveys.Survey`
    (configured FWHM, depth, band order). Raises :class:`FigureError` when there is nothing to draw.
    """
    if not mosaics:
        raise FigureError("overview figure: no band mosaics given (the band dict is empty)")
    for band, m in mosaics.items():
        if not isinstance(m, Mosaic) or np.ndim(m.data) != 2:
            raise FigureError(f"overview figure: band {band} is not a 2-D Mosaic")
    bands = order_bands(list(mosaics), survey)
    has_cat = catalog is not None and len(catalog) > 0

    fig = plt.figure(figsize=(15.0, 7.8))
    # image on the left (square, 7 in), PSFs top right, catalogue bottom right; boxes in figure fractions
    ax_img = fig.add_axes((0.01, 0.03, 0.47, 0.87))
    caption = _colour_image(ax_img, mosaics, bands, survey)
    ax_img.set_title(caption, fontsize=10)
    _psf_panels(fig, (0.51, 0.50, 0.99, 0.89), psfs, bands, mosaics, survey)
    if has_cat:
        _catalogue_panels(fig, (0.555, 0.08, 0.985, 0.41), catalog, bands, survey, psfs, mosaics)
    else:
        _band_table(fig, (0.52, 0.06, 0.98, 0.42), bands, survey, mosaics)
    name = survey.name if survey is not None else "survey"
    what = f"{survey.telescope} {survey.instrument}, " if survey is not None else ""
    fld = f" / {field}" if field else ""
    fig.suptitle(f"{name}{fld}: {what}{len(bands)} band{'s' if len(bands) != 1 else ''}", fontsize=13)

    return save_figure(fig, out_png, out_pdf, dpi)
