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

from workflow_scripts.detection import estimate_noise_sigma, match_peaks
from workflow_scripts.io import atomic_path
from workflow_scripts.photometry import flux_to_mag
from workflow_scripts.photometry.mixtures import PhotometryError

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
    "write_table",
]

#: run -> (image grid the fit is done on, peaks used: "lo", "gan" or "hi")
RUNS: dict[str, tuple[str, str]] = {"lo_at_lo": ("lowres", "lo"), "lo_at_gan": ("lowres", "gan"),
                                    "hi_at_hi": ("hires", "hi")}
RUN_LABELS = {"lo_at_lo": "low-res positions", "lo_at_gan": "GAN positions", "hi_at_hi": "high-res (reference)"}
#: Hemmati+22: photometry at GAN positions is more than 10x better (scatter and bias of delta-mag) than at low-res
PAPER = {"improvement_factor": ">10", "improvement_factor_min": 10.0}
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


def write_table(path: Any, df: pd.DataFrame, prov: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """Write a Parquet table atomically with provenance (and ``extra`` facts) in its metadata, as the boundary
    catalogues are (:func:`workflow_scripts.io.read_provenance` reads it back)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"genastro.provenance"] = json.dumps(dict(prov), default=str).encode()
    if extra:
        meta[b"genastro.photometry"] = json.dumps(dict(extra), default=str).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
