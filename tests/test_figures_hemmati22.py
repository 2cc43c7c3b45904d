"""Figures of the deblending study (workflow_scripts.studies.hemmati22.figures) on synthetic Gaussian blobs and tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from workflow_scripts.studies.hemmati22 import figures as h22
from workflow_scripts.studies.hemmati22.figures import FigureError

N_HI, N_LO, FACTOR = 64, 21, 3
S_HI, S_LO = 0.06, 0.18
PSF_LO_SIGMA = 0.6 / 2.3548  # arcsec
BANDS = ["F435W", "F606W", "F775W", "F814W", "F850LP", "F125W", "F160W"]


# ------------------------------------------------------------------------------------------ synthetic data
def to_low(xy: np.ndarray) -> np.ndarray:
    """High-res pixel -> low-res pixel coordinates (grids share their centre, as in workflow_scripts.imaging.degrade)."""
    return (np.asarray(xy, dtype=float) - (N_HI - 1) / 2) / FACTOR + (N_LO - 1) / 2


def blob(n: int, x: float, y: float, sigma_px: float, flux: float, q: float = 1.0, theta: float = 0.0) -> np.ndarray:
    """Elliptical Gaussian of total ``flux`` on an ``n``-pixel grid (flux per pixel), centre (x, y)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    dx, dy = xx - x, yy - y
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return flux * np.exp(-0.5 * (u**2 + (v / q) ** 2) / sigma_px**2) / (2 * np.pi * sigma_px**2 * q)


def galaxy_pair(rng: np.random.Generator, fluxes: tuple[float, float] = (40.0, 15.0)):
    """Two galaxies: hi-res image, low-res image (0.6" PSF, 3x pixels), a GAN-like image and truth positions."""
    centre = (N_HI - 1) / 2
    sep = rng.uniform(8, 16)
    ang = rng.uniform(0, np.pi)
    xy = np.array([[centre - 0.4 * sep * np.cos(ang), centre - 0.4 * sep * np.sin(ang)],
                   [centre + 0.6 * sep * np.cos(ang), centre + 0.6 * sep * np.sin(ang)]])
    sig = rng.uniform(1.5, 3.5, 2)  # hi-res pixels
    hi = sum(blob(N_HI, *xy[k], sig[k], fluxes[k]) for k in range(2))
    gan = sum(blob(N_HI, *(xy[k] + rng.normal(0, 0.7, 2)), sig[k] * 1.2, fluxes[k]) for k in range(2))
    xy_lo = to_low(xy)
    sig_lo = np.sqrt((sig * S_HI) ** 2 + PSF_LO_SIGMA**2) / S_LO
    lo = sum(blob(N_LO, *xy_lo[k], sig_lo[k], fluxes[k]) for k in range(2))
    return hi, lo, gan, xy, xy_lo


def blends(n: int = 3, seed: int = 1, noise: tuple[float, float] = (0.01, 0.03)):
    rng = np.random.default_rng(seed)
    hi, lo, gan, t_hi, t_lo = (np.array(a) for a in zip(*(galaxy_pair(rng) for _ in range(n))))
    hi = hi + rng.normal(0, noise[0], hi.shape)
    lo = lo + rng.normal(0, noise[1], lo.shape)
    gan = gan + rng.normal(0, noise[0], gan.shape)
    # "found" peaks: both hi-res galaxies, one low-res (unresolved), GAN both plus one spurious peak in blend 0
    peaks = {
        "hi": [t + rng.normal(0, 0.3, t.shape) for t in t_hi],
        "lo": [(0.5 * (t[0] + t[1]))[None, :] for t in t_lo],
        "gan": [t + rng.normal(0, 1.0, t.shape) for t in t_hi],
    }
    peaks["gan"][0] = np.vstack([peaks["gan"][0], [[10.0, 50.0]]])
    peaks["lo"][2] = np.zeros((0, 2))  # nothing found
    return hi, lo, gan, t_hi, t_lo, peaks


def multiband_blends(n: int = 3, seed: int = 2):
    """(n, 7, 64, 64) / (n, 7, 21, 21): galaxy 1 red (flux rising with wavelength), galaxy 2 blue."""
    rng = np.random.default_rng(seed)
    slope = np.linspace(-1, 1, len(BANDS))
    hi7, lo7, gan7, t_his, t_los = [], [], [], None, None
    t_his, t_los = [], []
    for j in range(n):
        per_band = []
        for b in range(len(BANDS)):
            pair_rng = np.random.default_rng(seed * 100 + j)  # same geometry in every band
            per_band.append(galaxy_pair(pair_rng, (30.0 * (1 + 0.8 * slope[b]), 12.0 * (1 - 0.8 * slope[b]))))
        hi7.append([p[0] for p in per_band])
        lo7.append([p[1] for p in per_band])
        gan7.append([p[2] for p in per_band])
        t_his.append(per_band[0][3])
        t_los.append(per_band[0][4])
    hi7 = np.array(hi7) + rng.normal(0, 0.01, (n, len(BANDS), N_HI, N_HI))
    lo7 = np.array(lo7) + rng.normal(0, 0.03, (n, len(BANDS), N_LO, N_LO))
    gan7 = np.array(gan7) + rng.normal(0, 0.01, (n, len(BANDS), N_HI, N_HI))
    t_hi, t_lo = np.array(t_his), np.array(t_los)
    peaks = {"hi": list(t_hi), "lo": [t[:1] for t in t_lo], "gan": [t + 0.5 for t in t_hi]}
    return hi7, lo7, gan7, t_hi, t_lo, peaks


def single_galaxies(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, N_HI, N_HI))
    for k in range(n):
        c = (N_HI - 1) / 2 + rng.normal(0, 1.5, 2)
        out[k] = blob(N_HI, *c, rng.uniform(1.5, 6), rng.uniform(5, 200), rng.uniform(0.3, 1), rng.uniform(0, np.pi))
        out[k] += rng.normal(0, 0.01, (N_HI, N_HI))
    return out


def wilson(k: np.ndarray, n: np.ndarray, z: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    p = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def binned_table(edges: np.ndarray, curves: dict[str, callable], seed: int = 0, n_total: int = 2000) -> pd.DataFrame:
    """Long-format binned detection fractions: for each method, fraction = curve(centre) sampled binomially."""
    rng = np.random.default_rng(seed)
    centre = 0.5 * (edges[:-1] + edges[1:])
    weights = np.exp(-0.5 * ((centre - centre.mean()) / (0.5 * np.ptp(edges))) ** 2)
    counts = rng.multinomial(n_total, weights / weights.sum())
    rows = []
    for method, curve in curves.items():
        k = rng.binomial(counts, np.clip(curve(centre), 0, 1))
        lo, hi = wilson(k.astype(float), counts.astype(float))
        frac = np.where(counts > 0, k / np.maximum(counts, 1), np.nan)
        rows.append(pd.DataFrame({"centre": centre, "left": edges[:-1], "right": edges[1:], "count": counts,
                                  "method": method, "fraction": frac, "ci_low": lo, "ci_high": hi}))
    return pd.concat(rows, ignore_index=True)


def logistic(x0: float, width: float, top: float, bottom: float = 0.0):
    return lambda x: bottom + (top - bottom) / (1 + np.exp(-(x - x0) / width))


def fig5_tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    return {
        "sep_over_fwhm_sum": binned_table(np.linspace(0, 3, 13), {
            "hi": logistic(0.5, 0.1, 0.95), "lo": logistic(1.6, 0.2, 0.6), "gan": logistic(0.9, 0.15, 0.85)}, seed),
        "dmag": binned_table(np.linspace(0, 5, 11), {
            "hi": lambda x: 0.85 - 0.03 * x, "lo": lambda x: 0.2 - 0.03 * x, "gan": lambda x: 0.6 - 0.06 * x},
            seed + 1),
        "fwhm_sum": binned_table(np.linspace(0.2, 2.0, 10), {
            "hi": lambda x: 0.8 + 0 * x, "lo": lambda x: 0.1 + 0.1 * x, "gan": lambda x: 0.5 + 0.1 * x}, seed + 2),
        "dz": binned_table(np.linspace(0, 3, 7), {
            "hi": lambda x: 0.8 + 0 * x, "lo": lambda x: 0.1 + 0 * x, "gan": lambda x: 0.5 + 0 * x}, seed + 3),
    }


def fig9_tables(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    edges = np.linspace(0, 3, 13)
    base = {"hi": logistic(0.5, 0.1, 0.95), "lo": logistic(1.6, 0.2, 0.6)}
    one = binned_table(edges, {**base, "gan": logistic(0.9, 0.15, 0.85)}, seed)
    seven = binned_table(edges, {"gan7": logistic(0.7, 0.12, 0.9)}, seed)
    return one, seven


def loss_table(epochs: int = 40, steps: int = 1, l1: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    e = np.repeat(np.arange(epochs), steps)
    df = pd.DataFrame({"epoch": e, "loss_d": 1.2 * np.exp(-e / 15) + 0.5 + rng.normal(0, 0.03, e.size),
                       "loss_g": 0.7 + 0.8 * (1 - np.exp(-e / 10)) + rng.normal(0, 0.05, e.size),
                       "d_real": 0.5 + 0.3 * (1 - np.exp(-e / 10)), "d_fake": 0.5 - 0.3 * (1 - np.exp(-e / 10))})
    if l1:
        df["loss_l1"] = 0.3 * np.exp(-e / 8) + 0.02
    return df


# ------------------------------------------------------------------------------------------------ checks
def check_png(path: Path, min_side: int = 300) -> np.ndarray:
    path = Path(path)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min(img.shape[:2]) >= min_side and max(img.shape[:2]) <= 5000
    assert img[..., :3].std() > 0.05, "the figure looks blank"
    return img


def check_outputs(out: Path, png: Path, pdf: Path | None) -> np.ndarray:
    assert out == png
    img = check_png(png)
    if pdf is not None:
        assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(png.parent.glob(".*.tmp")), "temporary files left behind"
    return img


# ------------------------------------------------------------------------------------------------ figures
def test_fig2_dcgan_samples(tmp_path):
    png, pdf = tmp_path / "f" / "fig2.png", tmp_path / "f" / "fig2.pdf"
    out = h22.fig2_dcgan_samples(single_galaxies(16, 1), single_galaxies(16, 2), png, pdf, ncols=8)
    img = check_outputs(out, png, pdf)
    assert img.shape[1] > 2 * img.shape[0], "two 8 x 2 grids side by side"


def test_fig2_uneven_counts_and_bad_shapes(tmp_path):
    check_png(h22.fig2_dcgan_samples(single_galaxies(5, 1), single_galaxies(3, 2), tmp_path / "a.png", ncols=4))
    with pytest.raises(FigureError, match="real"):
        h22.fig2_dcgan_samples(np.zeros((0, 64, 64)), single_galaxies(3, 2), tmp_path / "b.png")
    with pytest.raises(FigureError, match="3-D"):
        h22.fig2_dcgan_samples(np.zeros((64, 64)), single_galaxies(3, 2), tmp_path / "b.png")
    with pytest.raises(FigureError, match="differ in size"):
        h22.fig2_dcgan_samples(single_galaxies(3, 1), np.ones((3, 32, 32)), tmp_path / "b.png")
    with pytest.raises(FigureError, match="ncols"):
        h22.fig2_dcgan_samples(single_galaxies(3, 1), single_galaxies(3, 2), tmp_path / "b.png", ncols=0)
    assert not (tmp_path / "b.png").exists()


def test_fig3_superresolution(tmp_path):
    hi, lo, gan, *_ = blends(5, seed=3)
    png, pdf = tmp_path / "fig3.png", tmp_path / "fig3.pdf"
    img = check_outputs(h22.fig3_superresolution(hi, lo, gan, png, pdf), png, pdf)
    assert img.shape[0] > img.shape[1] * 0.9, "five rows of four panels"


def test_fig3_bad_inputs(tmp_path):
    hi, lo, gan, *_ = blends(5, seed=3)
    with pytest.raises(FigureError, match="lo: 4 entries"):
        h22.fig3_superresolution(hi, lo[:4], gan, tmp_path / "x.png")
    with pytest.raises(FigureError, match="gan"):
        h22.fig3_superresolution(hi, lo, gan[:, :32, :32], tmp_path / "x.png")
    with pytest.raises(FigureError, match="square"):
        h22.fig3_superresolution(hi[:, :, :60], lo, gan, tmp_path / "x.png")
    with pytest.raises(FigureError, match="pixel_scale_lo"):
        h22.fig3_superresolution(hi, lo, gan, tmp_path / "x.png", pixel_scale_lo=0)
    with pytest.raises(FigureError, match="no finite"):
        h22.fig3_superresolution(np.full_like(hi, np.nan), lo, gan, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_fig4_blends_with_peaks(tmp_path):
    hi, lo, gan, t_hi, t_lo, peaks = blends(3)
    png, pdf = tmp_path / "fig4.png", tmp_path / "fig4.pdf"
    check_outputs(h22.fig4_blends_with_peaks(hi, lo, gan, t_hi, t_lo, peaks, png, pdf), png, pdf)


def test_fig4_bad_inputs(tmp_path):
    hi, lo, gan, t_hi, t_lo, peaks = blends(3)
    with pytest.raises(FigureError, match="truth_hi"):
        h22.fig4_blends_with_peaks(hi, lo, gan, t_hi[:2], t_lo, peaks, tmp_path / "x.png")
    with pytest.raises(FigureError, match="truth_lo"):
        h22.fig4_blends_with_peaks(hi, lo, gan, t_hi, t_lo[..., :1], peaks, tmp_path / "x.png")
    with pytest.raises(FigureError, match="missing key"):
        h22.fig4_blends_with_peaks(hi, lo, gan, t_hi, t_lo, {"hi": peaks["hi"]}, tmp_path / "x.png")
    with pytest.raises(FigureError, match=r"peaks\['gan'\]: 2 entries"):
        h22.fig4_blends_with_peaks(hi, lo, gan, t_hi, t_lo, {**peaks, "gan": peaks["gan"][:2]}, tmp_path / "x.png")
    bad = {**peaks, "hi": [np.zeros((2, 3))] * 3}
    with pytest.raises(FigureError, match=r"\(k, 2\)"):
        h22.fig4_blends_with_peaks(hi, lo, gan, t_hi, t_lo, bad, tmp_path / "x.png")
    with pytest.raises(FigureError, match="row_labels"):
        h22.fig4_blends_with_peaks(hi, lo, gan, t_hi, t_lo, peaks, tmp_path / "x.png", row_labels=["a"])
    assert not (tmp_path / "x.png").exists()


def test_fig5_detection_fraction(tmp_path):
    png, pdf = tmp_path / "fig5.png", tmp_path / "fig5.pdf"
    out = h22.fig5_detection_fraction(fig5_tables(), png, pdf, reference=h22.PAPER_DETECTION_FRACTION)
    img = check_outputs(out, png, pdf)
    assert img.shape[1] > 2 * img.shape[0], "four columns"


def test_fig5_draws_the_as_coded_protocol_dashed_in_the_method_colours(tmp_path, monkeypatch):
    import matplotlib.colors as mcolors

    tables = fig5_tables()
    coded = {p: t.assign(fraction=np.where(t["method"] == "lo", 0.5, t["fraction"])) for p, t in tables.items()
             if p in ("dmag", "dz")}
    drawn = []
    real_save = h22.save_figure
    monkeypatch.setattr(h22, "save_figure", lambda fig, *a, **k: (drawn.append(fig.axes), real_save(fig, *a, **k))[1])
    out = h22.fig5_detection_fraction(tables, tmp_path / "f5.png", reference=h22.PAPER_DETECTION_FRACTION,
                                      as_coded=coded)
    check_png(out)
    axes = drawn[0]
    curves = [a for a in axes if a.get_ylabel() != "N blends" and a.lines]
    assert len(curves) == 4
    for ax, param in zip(curves, h22.PARAMETERS):
        dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert len(dashed) == (3 if param in coded else 0), param
        for ln in dashed:
            if mcolors.same_color(ln.get_color(), h22.METHOD_COLOURS["lo"]):
                assert np.allclose(ln.get_ydata(), 0.5)
    with pytest.raises(FigureError, match="as_coded must be a dict"):
        h22.fig5_detection_fraction(tables, tmp_path / "x.png", as_coded=[1])
    with pytest.raises(FigureError, match=r"as_coded\['dz'\]: missing column"):
        h22.fig5_detection_fraction(tables, tmp_path / "x.png", as_coded={"dz": tables["dz"].drop(columns="count")})


def test_fig5_subset_labels_and_empty_bins(tmp_path):
    tables = fig5_tables()
    t = tables["dmag"].copy()
    t.loc[t["centre"] > 4, ["count", "fraction", "ci_low", "ci_high"]] = [0, np.nan, np.nan, np.nan]
    out = h22.fig5_detection_fraction({"dmag": t}, tmp_path / "one.png", labels={"dmag": "F775W mag difference",
                                                                                 "gan": "SR-GAN"})
    check_png(out)


def test_fig5_bad_inputs(tmp_path):
    tables = fig5_tables()
    with pytest.raises(FigureError, match="no binned tables"):
        h22.fig5_detection_fraction({}, tmp_path / "x.png")
    with pytest.raises(FigureError, match="missing column"):
        h22.fig5_detection_fraction({"dz": tables["dz"].drop(columns="ci_low")}, tmp_path / "x.png")
    with pytest.raises(FigureError, match="empty table"):
        h22.fig5_detection_fraction({"dz": tables["dz"].iloc[:0]}, tmp_path / "x.png")
    with pytest.raises(FigureError, match="DataFrame"):
        h22.fig5_detection_fraction({"dz": np.zeros(3)}, tmp_path / "x.png")
    with pytest.raises(FigureError, match="reference"):
        h22.fig5_detection_fraction(tables, tmp_path / "x.png", reference={"hi": 80})
    assert not (tmp_path / "x.png").exists()


def test_fig8_multiband(tmp_path):
    hi7, lo7, gan7, t_hi, t_lo, peaks = multiband_blends(3)
    png, pdf = tmp_path / "fig8.png", tmp_path / "fig8.pdf"
    img = check_outputs(h22.fig8_multiband(hi7, lo7, gan7, t_hi, t_lo, peaks, BANDS, png, pdf), png, pdf)
    rgb = img[..., :3]
    assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 0.2).mean() > 0.005, "a colour image, not grey"
    # indexes and zeropoints
    out = h22.fig8_multiband(hi7, lo7, gan7, t_hi, t_lo, peaks, BANDS, tmp_path / "idx.png", rgb_bands=(6, 4, 1),
                             zeropoints=[25.7, 26.5, 25.7, 25.9, 24.9, 26.2, 25.9])
    check_png(out)


def test_fig8_bad_inputs(tmp_path):
    hi7, lo7, gan7, t_hi, t_lo, peaks = multiband_blends(3)
    with pytest.raises(FigureError, match="not in bands"):
        h22.fig8_multiband(hi7, lo7, gan7, t_hi, t_lo, peaks, BANDS, tmp_path / "x.png", rgb_bands=("H", "J", "V"))
    with pytest.raises(FigureError, match="out of range"):
        h22.fig8_multiband(hi7, lo7, gan7, t_hi, t_lo, peaks, BANDS, tmp_path / "x.png", rgb_bands=(7, 1, 0))
    with pytest.raises(FigureError, match="bands: 6 names"):
        h22.fig8_multiband(hi7, lo7, gan7, t_hi, t_lo, peaks, BANDS[:6], tmp_path / "x.png")
    with pytest.raises(FigureError, match="lo has 6 bands"):
        h22.fig8_multiband(hi7, lo7[:, :6], gan7, t_hi, t_lo, peaks, BANDS, tmp_path / "x.png")
    with pytest.raises(FigureError, match="4-D"):
        h22.fig8_multiband(hi7[:, 0], lo7, gan7, t_hi, t_lo, peaks, BANDS, tmp_path / "x.png")
    with pytest.raises(FigureError, match="zeropoints"):
        h22.fig8_multiband(hi7, lo7, gan7, t_hi, t_lo, peaks, BANDS, tmp_path / "x.png", zeropoints=[25.0])
    assert not (tmp_path / "x.png").exists()


def test_fig9_one_vs_seven(tmp_path):
    one, seven = fig9_tables()
    png, pdf = tmp_path / "fig9.png", tmp_path / "fig9.pdf"
    check_outputs(h22.fig9_one_vs_seven(one, seven, png, pdf), png, pdf)
    # explicit gan1 / plain gan in the 7-band table, with its own (different) hi / lo rows
    one2 = one.replace({"method": {"gan": "gan1"}})
    seven2 = pd.concat([seven.replace({"method": {"gan7": "gan"}}),
                        one[one["method"].isin(["hi", "lo"])].assign(fraction=lambda d: d["fraction"] * 0.9)])
    check_png(h22.fig9_one_vs_seven(one2, seven2, tmp_path / "b.png"))


def test_fig9_bad_inputs(tmp_path):
    one, seven = fig9_tables()
    with pytest.raises(FigureError, match="binned_7band: no GAN"):
        h22.fig9_one_vs_seven(one, one[one["method"] != "gan"], tmp_path / "x.png")
    with pytest.raises(FigureError, match="binned_1band: no GAN"):
        h22.fig9_one_vs_seven(one[one["method"] != "gan"], seven, tmp_path / "x.png")
    with pytest.raises(FigureError, match="right > left"):
        h22.fig9_one_vs_seven(one.assign(right=one["left"]), seven, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_loss_curves(tmp_path):
    png, pdf = tmp_path / "loss.png", tmp_path / "loss.pdf"
    img = check_outputs(h22.loss_curves(loss_table(), png, pdf, title="SR-GAN 1-band"), png, pdf)
    assert img.shape[1] > 2 * img.shape[0], "three panels with L1 and D outputs"
    small = h22.loss_curves(loss_table(30, steps=5, l1=False)[["epoch", "loss_d", "loss_g"]], tmp_path / "s.png")
    check_png(small, min_side=200)
    with pytest.raises(FigureError, match="loss_g"):
        h22.loss_curves(loss_table().drop(columns="loss_g"), tmp_path / "x.png")
    with pytest.raises(FigureError, match="empty"):
        h22.loss_curves(loss_table().iloc[:0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_display_norm_is_shared_and_surface_brightness_consistent():
    """A flux-conserving 3x rebin of a smooth image has the same surface brightness; one norm covers both."""
    hi = blob(N_HI, 31.5, 31.5, 6.0, 100.0) + np.random.default_rng(0).normal(0, 0.005, (N_HI, N_HI))
    lo = hi[:63, :63].reshape(21, 3, 21, 3).sum(axis=(1, 3))
    sb_hi, sb_lo = hi / S_HI**2, lo / S_LO**2
    assert sb_lo.max() == pytest.approx(sb_hi.max(), rel=0.05)
    norm = h22.display_norm([sb_hi, sb_lo], sb_hi)
    assert norm.vmin < 0 < norm.vmax
    assert norm(sb_hi.max()) == pytest.approx(1.0, abs=0.02)
    par = h22.lupton_parameters(sb_hi)
    assert par["Q"] > 1 and par["stretch"] > 0


def test_positions_map_to_the_same_sky():
    """A galaxy at hi-res pixel x sits at the same arcsec offset as its low-res counterpart."""
    xy = np.array([[10.0, 50.0], [31.5, 31.5]])
    a_hi = h22._to_arcsec(xy, N_HI, S_HI)
    a_lo = h22._to_arcsec(to_low(xy), N_LO, S_LO)
    np.testing.assert_allclose(a_hi, a_lo, atol=1e-12)
    np.testing.assert_allclose(a_hi[1], [0.0, 0.0], atol=1e-12)


def test_paper_values_labels_and_colours_have_one_home():
    """figures.py, figures_photometry.py, som.py and photometry.py take the paper's values, run names, labels and
    colours from paper.py (the same objects, not copies that could drift)."""
    from workflow_scripts.studies.hemmati22 import figures_photometry as fp
    from workflow_scripts.studies.hemmati22 import paper
    from workflow_scripts.studies.hemmati22 import photometry as phot
    from workflow_scripts.studies.hemmati22 import som

    assert h22.PAPER_DETECTION_FRACTION is paper.PAPER["detection_fraction"]
    assert h22.PARAMETERS is paper.FIG5_PARAMETERS and h22.PARAMETER_LABELS is paper.PARAMETER_LABELS
    assert h22.METHOD_COLOURS is paper.METHOD_COLOURS and h22.METHOD_LABELS is paper.METHOD_LABELS
    assert fp.RUN_COLOURS is paper.RUN_COLOURS and fp.RUN_LABELS is paper.RUN_LABELS is phot.RUN_LABELS
    assert phot.RUNS is paper.PHOTOMETRY_RUNS and phot.PAPER is paper.PAPER_PHOTOMETRY
    assert som.SOM_FEATURES is paper.BLEND_PARAMETERS and som.SOM_SHAPE == paper.SOM_SHAPE == (32, 24)
    assert set(paper.RUN_COLOURS) == set(paper.RUN_LABELS) == set(paper.PHOTOMETRY_RUNS)
