"""Blend photometry of the deblending study (Hemmati et al. 2022, sec. 3.4 and Fig 7), as plain functions.

Three runs (:data:`RUNS`), each fitting every blend with all its detected objects at once:

* ``lo_at_lo``: low-resolution (HSC-like) images at the peaks found on the low-resolution images;
* ``lo_at_gan``: the same low-resolution images at the peaks found on the SR-GAN images, mapped to low-resolution
  pixels (:meth:`~workflow_scripts.imaging.degrade.RebinGeometry.to_low`): the paper's point is that better positions give
  better photometry of the *same* data;
* ``hi_at_hi``: the high-resolution (HST-like) images at their own peaks: the reference.

Each detected object is matched to the true galaxies (Hungarian, within ``match_radius_arcsec`` of the position
used); the *dominant source* of a blend is its brighter true galaxy, and its measured magnitude is that of the
object matched to it (Fig 7). Statistics of delta-mag = measured - input over the blends where the dominant
source was matched and its fit converged: bias (median) and scatter (normalised median absolute deviation,
1.4826 MAD, robust to the few catastrophic fits), plus mean and standard deviation. The improvement factor of
GAN positions is the ratio low-res / GAN of the scatter and of the absolute bias (paper: > 10x).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.detection import estimate_noise_sigma, match_peaks, truth_positions
from workflow_scripts.imaging.stamps import CutoutSet
from workflow_scripts.photometry import FLAG_NAMES, FitSettings, flux_to_mag, get_engine
from workflow_scripts.photometry.mixtures import PhotometryError
from workflow_scripts.studies.hemmati22.blends import BlendSet
from workflow_scripts.studies.hemmati22.detect import lowres_psf
from workflow_scripts.studies.hemmati22.paper import PAPER_PHOTOMETRY as PAPER
from workflow_scripts.studies.hemmati22.paper import PHOTOMETRY_RUNS as RUNS
from workflow_scripts.studies.hemmati22.paper import RUN_LABELS
from workflow_scripts.studies.hemmati22.tables import read_table, write_table
from workflow_scripts.surveys import Survey

log = logging.getLogger(__name__)

__all__ = [
    "RUNS",
    "RUN_LABELS",
    "PAPER",
    "positions_from_peaks",
    "noise_sigma",
    "blend_photometry",
    "dominant_source",
    "delta_stats",
    "photometry_summary",
    "gp_curves",
    "fit_settings",
    "run_photometry",
    "summarise_runs",
    "write_table",
    "read_table",
]

# RUNS (run -> image grid of the fit, peaks used), RUN_LABELS and PAPER (the paper's > 10x) come from .paper
NMAD = 1.4826


def positions_from_peaks(peaks: pd.DataFrame, method: str, n: int, *, sample: str = "blends",
                         to_low: Any = None) -> list[np.ndarray]:
    """Per stamp the (x, y) peaks of ``method`` in ``sample`` from the detection's peaks table (columns sample,
    method, index, x, y); ``to_low``: a function mapping hi-res (x, y) arrays to low-res pixels (GAN peaks on the
    low-resolution images)."""
    missing = {"sample", "method", "index", "x", "y"} - set(peaks.columns)
    if missing:
        raise PhotometryError(f"the peaks table lacks column(s) {', '.join(sorted(missing))}")
    sel = peaks[(peaks["sample"] == sample) & (peaks["method"] == method)]
    out = [np.zeros((0, 2)) for _ in range(n)]
    for i, grp in sel.groupby("index"):
        if 0 <= int(i) < n:
            xy = grp[["x", "y"]].to_numpy(dtype=np.float64)
            if to_low is not None:
                xy = np.column_stack(to_low(xy[:, 0], xy[:, 1]))
            out[int(i)] = xy
    return out


def noise_sigma(images: np.ndarray) -> np.ndarray:
    """Per-stamp noise sigma (clipped MAD) on the pixels that hold data (finite and not exactly 0: the corners a
    rotation moved in from outside a stamp are 0); NaN for a stamp with no such pixel."""
    arr = np.asarray(images, dtype=np.float64)
    mask = np.isfinite(arr) & (arr != 0)
    sigma = np.full(arr.shape[0], np.nan)
    ok = mask.reshape(arr.shape[0], -1).sum(1) >= 10
    if ok.any():
        sigma[ok] = estimate_noise_sigma(np.where(mask[ok], arr[ok], 0.0), mask=mask[ok])
    return sigma


def blend_photometry(result: pd.DataFrame, truth: pd.DataFrame, *, run: str, band: str, zeropoint: float,
                     radius_px: float, truth_xy: np.ndarray) -> pd.DataFrame:
    """The run's table: the engine's rows with blend ids, magnitudes and the matched true galaxy.

    ``truth_xy``: (N, 2, 2) true positions on the grid of the fit; ``truth``: the blends' truth table (flux_{band}_1,
    flux_{band}_2, mag_{band}_*). Columns added: blend_id, run, positions, mag, mag_err, truth_object (1 or 2,
    0 when unmatched), true_x, true_y, true_flux, true_mag, dominant (matched to the brighter true galaxy)."""
    if run not in RUNS:
        raise PhotometryError(f"unknown photometry run {run!r} (use one of {', '.join(RUNS)})")
    df = result.copy()
    blend_ids = truth["blend_id"].to_numpy() if "blend_id" in truth.columns else np.arange(len(truth))
    df.insert(0, "blend_id", blend_ids[df["stamp"].to_numpy()])
    df.insert(2, "run", run)
    df.insert(3, "positions", RUNS[run][1])
    df["mag"] = flux_to_mag(df["flux"], zeropoint)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["mag_err"] = 2.5 / math.log(10.0) * df["flux_err"].to_numpy() / df["flux"].to_numpy()
    df.loc[~(df["flux"] > 0), "mag_err"] = np.nan
    fluxes = truth[[f"flux_{band}_1", f"flux_{band}_2"]].to_numpy(dtype=np.float64)
    mags = truth[[f"mag_{band}_1", f"mag_{band}_2"]].to_numpy(dtype=np.float64)
    dominant = np.where(np.nan_to_num(fluxes[:, 1], nan=-np.inf) > np.nan_to_num(fluxes[:, 0], nan=-np.inf), 2, 1)
    tobj = np.zeros(len(df), dtype=np.int64)
    for stamp, rows in df.groupby("stamp").groups.items():
        rows = np.asarray(rows)
        rows = rows[df.loc[rows, "object"].to_numpy() >= 0]
        if rows.size == 0:
            continue
        pk = df.loc[rows, ["x_init", "y_init"]].to_numpy(dtype=np.float64)
        good = np.isfinite(pk).all(1)
        m = match_peaks(pk[good], truth_xy[int(stamp)], radius_px)
        for p, t in m.pairs:
            tobj[rows[good][p]] = t + 1
    df["truth_object"] = tobj
    s = df["stamp"].to_numpy()
    j = np.clip(tobj - 1, 0, 1)
    has = tobj > 0
    df["true_x"] = np.where(has, truth_xy[s, j, 0], np.nan)
    df["true_y"] = np.where(has, truth_xy[s, j, 1], np.nan)
    df["true_flux"] = np.where(has, fluxes[s, j], np.nan)
    df["true_mag"] = np.where(has, mags[s, j], np.nan)
    df["dominant"] = has & (tobj == dominant[s])
    return df


def dominant_source(table: pd.DataFrame, truth: pd.DataFrame, band: str) -> pd.DataFrame:
    """One row per blend: input magnitude of the dominant (brighter) true galaxy and what the run measured for it
    (NaN when it was not matched). ``measured`` = matched, converged, finite magnitude."""
    fluxes = truth[[f"flux_{band}_1", f"flux_{band}_2"]].to_numpy(dtype=np.float64)
    mags = truth[[f"mag_{band}_1", f"mag_{band}_2"]].to_numpy(dtype=np.float64)
    dom = np.where(np.nan_to_num(fluxes[:, 1], nan=-np.inf) > np.nan_to_num(fluxes[:, 0], nan=-np.inf), 1, 0)
    n = len(truth)
    out = pd.DataFrame({"blend_id": truth["blend_id"].to_numpy() if "blend_id" in truth.columns else np.arange(n),
                        "input_mag": mags[np.arange(n), dom], "input_flux": fluxes[np.arange(n), dom]})
    if "flux_ratio" in truth.columns:
        out["flux_ratio"] = truth["flux_ratio"].to_numpy()
    d = table[table["dominant"]].drop_duplicates("stamp").set_index("stamp")
    idx = np.arange(n)
    for col, src in (("measured_mag", "mag"), ("measured_flux", "flux"), ("flux_err", "flux_err"),
                     ("chi2_dof", "chi2_dof")):
        out[col] = d[src].reindex(idx).to_numpy(dtype=np.float64)
    out["converged"] = d["converged"].reindex(idx).fillna(False).to_numpy(dtype=bool)
    out["matched"] = np.isin(idx, d.index.to_numpy())
    out["n_objects"] = table.groupby("stamp")["n_objects"].first().reindex(idx).fillna(0).to_numpy(dtype=np.int64)
    out["measured"] = out["matched"] & out["converged"] & np.isfinite(out["measured_mag"])
    out["dmag"] = np.where(out["measured"], out["measured_mag"] - out["input_mag"], np.nan)
    return out


def delta_stats(dom: pd.DataFrame) -> dict[str, Any]:
    """Bias and scatter of delta-mag over the measured dominant sources (see the module docstring)."""
    d = dom.loc[dom["measured"], "dmag"].to_numpy(dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(len(dom))
    stats: dict[str, Any] = {"n_blends": n, "n_measured": int(d.size),
                             "measured_fraction": float(d.size / n) if n else math.nan,
                             "n_unmatched": int((~dom["matched"]).sum()),
                             "n_not_converged": int((dom["matched"] & ~dom["converged"]).sum())}
    if d.size:
        med = float(np.median(d))
        stats.update(bias=med, scatter=float(NMAD * np.median(np.abs(d - med))), mean=float(d.mean()),
                     std=float(d.std(ddof=1)) if d.size > 1 else math.nan,
                     outlier_fraction=float((np.abs(d - med) > 0.5).mean()))
    else:
        stats.update(bias=math.nan, scatter=math.nan, mean=math.nan, std=math.nan, outlier_fraction=math.nan)
    return stats


def _ratio(a: float, b: float) -> float | None:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return float(a / b)


def photometry_summary(dominants: Mapping[str, pd.DataFrame], *, engine: str, model: str,
                       gp: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """photometry.json: per-run statistics, the improvement factor of GAN over low-res positions (scatter and
    absolute bias of delta-mag) and the paper's > 10x."""
    runs = {run: delta_stats(dom) for run, dom in dominants.items()}
    improvement: dict[str, Any] = {}
    if "lo_at_lo" in runs and "lo_at_gan" in runs:
        lo, gan = runs["lo_at_lo"], runs["lo_at_gan"]
        improvement = {"scatter": _ratio(lo["scatter"], gan["scatter"]),
                       "bias": _ratio(abs(lo["bias"]), abs(gan["bias"])),
                       "std": _ratio(lo["std"], gan["std"])}
        improvement["meets_paper"] = bool(improvement["scatter"] is not None and improvement["bias"] is not None
                                          and min(improvement["scatter"], improvement["bias"])
                                          > PAPER["improvement_factor_min"])
        improvement["lo_at_gan_measured"] = gan["n_measured"]
    out: dict[str, Any] = {"study": "hemmati22", "engine": engine, "model": model, "statistic": "dmag = measured - input mag of "
           "the dominant source; bias = median, scatter = 1.4826 MAD", "paper": dict(PAPER),
           "ours": {"improvement_factor": improvement, "runs": runs}}
    if gp is not None:
        out["gp"] = dict(gp)
    return _finite_or_none(out)


def _finite_or_none(obj: Any) -> Any:
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def gp_curves(mag: Any, dmag: Any, *, grid: np.ndarray | None = None, max_points: int = 1000, seed: int = 0,
              restarts: int = 2, clip_nmad: float = 5.0,
              min_length_scale: float = 0.3) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Gaussian-process regression of delta-mag on input magnitude (scikit-learn, ConstantKernel x RBF +
    WhiteKernel, normalised targets): the mean and the predictive standard deviation (the white noise included)
    on ``grid``. Points further than ``clip_nmad`` NMAD from the median are left out (counted in the info), at
    most ``max_points`` (a random subset, seeded) enter the fit, and the RBF length scale is at least
    ``min_length_scale`` mag (a trend with magnitude, not the scatter of single blends)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    x = np.asarray(mag, dtype=np.float64)
    y = np.asarray(dmag, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n_outliers = 0
    if y.size:
        med = np.median(y)
        nmad = NMAD * np.median(np.abs(y - med))
        keep = np.abs(y - med) <= max(clip_nmad * nmad, 0.1)   # catastrophic fits would drive the noise term
        n_outliers = int((~keep).sum())
        x, y = x[keep], y[keep]
    if grid is None:
        lo, hi = (np.percentile(x, [1, 99]) if x.size else (20.0, 25.0))
        grid = np.linspace(lo, hi, 100)
    if x.size < 5 or np.ptp(x) == 0:
        empty = pd.DataFrame({"mag": grid, "mean": np.nan, "std": np.nan})
        return empty, {"n_points": int(x.size), "n_outliers": n_outliers, "kernel": None}
    rng = np.random.default_rng(seed)
    if x.size > max_points:
        keep = rng.choice(x.size, max_points, replace=False)
        x, y = x[keep], y[keep]
    spread = float(np.ptp(x))
    lmin = min(min_length_scale, spread)
    kernel = (ConstantKernel(1.0, (1e-5, 1e3)) * RBF(length_scale=max(spread / 3, lmin),
                                                       length_scale_bounds=(lmin, max(10 * spread, lmin * 1.01)))
              + WhiteKernel(noise_level=0.1, noise_level_bounds=(1e-6, 1e2)))
    gpr = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=restarts,
                                   random_state=seed)
    with warnings.catch_warnings():  # a flat relation drives the constant to its bound: a valid outcome
        warnings.simplefilter("ignore", ConvergenceWarning)
        gpr.fit(x[:, None], y)
    mean, std = gpr.predict(np.asarray(grid)[:, None], return_std=True)
    return (pd.DataFrame({"mag": grid, "mean": mean, "std": std}),
            {"n_points": int(x.size), "n_outliers": n_outliers, "kernel": str(gpr.kernel_),
             "log_marginal_likelihood": float(gpr.log_marginal_likelihood_value_)})



# ------------------------------------------------------------------------------------------- the two steps
def fit_settings(phot: Mapping[str, Any], device: str) -> FitSettings:
    """The engine's settings from the ``photometry`` config block."""
    pri = phot["priors"]
    return FitSettings(model=phot["model"], centre_sigma=pri["centre_sigma_px"], g_sigma=pri["g_sigma"],
                       fracdev_sigma=pri["fracdev_sigma"],
                       log_T_sigma=pri["log_T_sigma"], flux_sigma_rel=pri["flux_sigma_rel"],
                       max_iter=phot["max_iter"], batch_size=phot["batch_size"], memory_mb=phot["memory_mb"],
                       device=device)


def run_photometry(name: str, hi: BlendSet, lo: CutoutSet, peaks: pd.DataFrame, epsf: Any, *, survey: Survey,
                   target: Survey, study: Mapping[str, Any], phot: Mapping[str, Any], device: str,
                   seed: int, psf: tuple[np.ndarray, int] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One photometry run (:data:`RUNS`) of every blend: the run's table (:func:`blend_photometry`) and the facts
    to keep beside it (engine, model, band, zeropoint, pixel scale, the engine's timing).

    ``hi``/``lo``: the blends in hi and low resolution; ``peaks``: the detection's peaks table; ``epsf``: the
    empirical PSF of the study's band (the hi-res fit's PSF; the low-res fits use the target survey's PSF).
    ``psf``: (image, samples per pixel of the fitted grid) to fit with in place of the run's own PSF."""
    if name not in RUNS:
        raise PhotometryError(f"unknown photometry run {name!r} (use one of {', '.join(RUNS)})")
    grid, kind = RUNS[name]
    band = study["band"]
    b = hi.bands.index(band)
    n = hi.n
    if grid == "lowres":
        images = lo.cube[:, lo.bands.index(band)]
        psf_image, oversampling = lowres_psf(target, study["target"]["band"], study["target"]["profile"]), 1
        scale = target.pixel_scale
        method = "lo" if kind == "lo" else study["gan_models"]["gan"]
        positions = positions_from_peaks(peaks, method, n, to_low=hi.geometry.to_low if kind == "gan" else None)
    else:
        images = hi.cube[:, b]
        psf_image, oversampling = epsf.epsf, epsf.oversampling
        scale = survey.pixel_scale
        positions = positions_from_peaks(peaks, "hi", n)
    if psf is not None:
        psf_image, oversampling = np.asarray(psf[0]), int(psf[1])
    sigma = noise_sigma(images)
    engine = get_engine(phot["engine"], psf_image, fit_settings(phot, device), psf_oversampling=oversampling,
                        psf_ngauss=phot["psf_ngauss"], seed=seed)
    psf_info = getattr(engine, "psf", None)
    if psf_info is not None:
        log.info("PSF mixture: %d Gaussians, max residual %.2e of the peak", psf_info.n, psf_info.max_residual)
    log.info("%s: %d blends, %d positions (%s peaks), engine %s, model %s, median sigma %.3g", name, n,
             sum(len(p) for p in positions), kind, engine.name, engine.settings.model, float(np.nanmedian(sigma)))
    # pixels exactly 0 hold no data (the corners a rotation moved in from outside a stamp): weight 0
    data = np.where(images == 0, np.nan, images)
    result = engine.fit(data, positions, sigma)
    log.info("fitted in %.1f s (%.0f objects/s on %s)", engine.last_stats["seconds"],
             engine.last_stats["objects_per_second"], engine.last_stats["device"])
    flags = result["flags"].to_numpy()
    for bit, what in FLAG_NAMES.items():
        if (flags & bit).any():
            log.info("flag %s: %d rows", what, int(((flags & bit) > 0).sum()))
    table = blend_photometry(result, hi.truth, run=name, band=band, zeropoint=hi.zeropoints[b],
                             radius_px=phot["match_radius_arcsec"] / scale, truth_xy=truth_positions(hi.truth, grid))
    log.info("%d rows, %d converged, %d matched to a true galaxy", len(table), int(table["converged"].sum()),
             int((table["truth_object"] > 0).sum()))
    facts = {"run": name, "engine": engine.name, "model": engine.settings.model, "band": band,
             "zeropoint": hi.zeropoints[b], "pixel_scale": scale, **engine.last_stats}
    return table, facts


def summarise_runs(runs: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], truth: pd.DataFrame, band: str, *,
                   gp: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """photometry.json (without provenance), the dominant sources of every run (column ``run``) and the GP curves.

    ``runs``: per run file name its table and facts (:func:`read_table`), in the order of the rule's inputs; a
    run is named by its table's ``run`` column (the file name when the table is empty). ``gp``: the
    ``photometry.gp`` config block (max_points, restarts)."""
    dominants, curves, gp_info = {}, [], {}
    engine = model = None
    for file_name, (table, meta) in runs.items():
        engine, model = meta.get("engine", engine), meta.get("model", model)
        name = str(table["run"].iloc[0]) if len(table) else file_name
        dom = dominant_source(table, truth, band)
        dominants[name] = dom
        m = dom["measured"].to_numpy()
        curve, info = gp_curves(dom.loc[m, "input_mag"], dom.loc[m, "dmag"], max_points=gp["max_points"], seed=seed,
                                restarts=gp["restarts"])
        curve.insert(0, "run", name)
        curves.append(curve)
        gp_info[name] = info
        log.info("%s: %d of %d dominant sources measured; GP %s", name, int(m.sum()), len(dom), info.get("kernel"))
    summary = photometry_summary(dominants, engine=str(engine), model=str(model), gp=gp_info)
    log.info("improvement factor (GAN vs low-res positions): %s; paper %s",
             summary["ours"]["improvement_factor"], summary["paper"]["improvement_factor"])
    dom_all = pd.concat([d.assign(run=r) for r, d in dominants.items()], ignore_index=True)
    return summary, dom_all, pd.concat(curves, ignore_index=True)
