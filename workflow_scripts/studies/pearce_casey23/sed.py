"""The SED error of a prediction and the anomaly ranking (Pearce-Casey+23 sec. 4), for the cGAN and for a
photometry-only baseline.

* Aperture photometry of the predicted output bands at each cutout's source position (``xc``, ``yc``), with the
  catalogue's aperture (sep.sum_circle, the same radius): the true fluxes and their errors are the catalogue's,
  measured on the same pixels.
* Per band ``delta_mag = m_pred - m_true`` with each flux floored at its 1-sigma error (faint sources keep a finite
  magnitude); the **SED error** is the mean of ``|delta_mag|`` over the output bands; ``chi2`` is the mean of
  ``((f_pred - f_true) / err)^2``.
* Baseline: the output-band magnitudes predicted from the input-band magnitudes alone (scikit-learn gradient
  boosting or kNN, one regressor per output band for its colour against the reddest input band, trained on the
  training set's catalogue photometry), scored the same way. Does the pixel-level cGAN find mergers better than
  photometry alone?
* Calibrated cGAN (ours, beyond the paper): the cGAN's own magnitude-dependent bias, measured on its training
  cutouts (median ``delta_mag`` per output band in bins of that band's observed magnitude, :func:`fit_bias`), is
  taken out of its predictions (:func:`calibrate`); scored as ``cgan_calibrated_*``. Only normal galaxies (no
  anomaly is ever in training) set the correction, so it cannot learn what an anomaly looks like.
* Core excess (ours, beyond the paper): the aperture SED error sees only the total flux in the aperture, so colour
  *structure* inside it (a red core in a bluer galaxy) is invisible to it. Per band the core fraction
  ``c = F(r < core_radius_px) / F(r < aperture_radius_px)`` (sep.sum_circle at the source position, the
  PSF-matched cutouts); ``cgan_core_excess`` = mean over the output bands of ``c_true - c_predicted`` (the cGAN,
  asked to draw the LW light from the SW morphology, misses a core that only the LW bands have), and, the baseline
  without learning, ``gradient_core_excess`` = mean ``c_true`` over the output bands - mean ``c_true`` over the
  input bands (the same colour gradient measured directly).
* Photometry at infinite S/N (ours; embedded data only, where the catalogue carries the truth): the baseline's
  regressor fitted to the noise-free total magnitudes (``truth_mag_*``) of the normal training galaxies and applied
  to every object's, scored as ``truth_photometry_*`` (``dmag`` and ``sed_error``, no chi2: there is no noise).
  Its error on normal galaxies is what the population's own SED degeneracies (redshift, template, dust) leave to
  any prediction from the input bands' photometry; its AUCs say whether an anomaly's *total* SED is anomalous.
* The noise floor: ``noise_sed_error``, the SED error a perfect prediction would still show from the catalogue's
  flux errors alone (:func:`noise_sed_error`), on real data too.
* Ranking: ROC AUC of a score separating an anomaly class (mergers, EROs) from the normal validation galaxies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.detection.sources import aperture_fluxes
from workflow_scripts.errors import StudyError
from workflow_scripts.imaging.stamps import CutoutSet
from workflow_scripts.metrics import roc_auc as auc  # noqa: F401  (the study's name for it)
from workflow_scripts.metrics import roc_points as roc_curve  # noqa: F401

log = logging.getLogger(__name__)


def stamp_fluxes(cube: np.ndarray, xc: np.ndarray, yc: np.ndarray, radius_px: float) -> np.ndarray:
    """Aperture fluxes (N, bands) of stamps ``cube`` (N, bands, H, W) at each stamp's ``(xc, yc)``."""
    n, nb = cube.shape[:2]
    out = np.empty((n, nb))
    ones = np.ones(cube.shape[-2:], dtype=np.float64)
    for i in range(n):
        for b in range(nb):
            f, _, _ = aperture_fluxes(cube[i, b], ones, np.array([xc[i]]), np.array([yc[i]]), radius_px)
            out[i, b] = f[0]
    return out


def core_fractions(cube: np.ndarray, xc: np.ndarray, yc: np.ndarray, core_px: float,
                   radius_px: float) -> np.ndarray:
    """(N, bands) share of each band's aperture flux (radius ``radius_px``) inside ``core_px`` of ``(xc, yc)``;
    NaN where the aperture flux is not positive."""
    if not 0 < core_px < radius_px:
        raise StudyError(f"the core radius ({core_px} px) must be positive and inside the aperture ({radius_px} px)")
    inner, outer = stamp_fluxes(cube, xc, yc, core_px), stamp_fluxes(cube, xc, yc, radius_px)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(outer > 0, inner / outer, np.nan)


def core_scores(true_cube: np.ndarray, pred_cube: np.ndarray, xc: np.ndarray, yc: np.ndarray,
                input_index: Sequence[int], output_index: Sequence[int], core_px: float,
                radius_px: float) -> pd.DataFrame:
    """``cgan_core_excess`` and ``gradient_core_excess`` per object (see the module docstring): ``true_cube`` holds
    every band (indices ``input_index``, ``output_index``), ``pred_cube`` the predicted output bands in order."""
    c_true = core_fractions(true_cube, xc, yc, core_px, radius_px)
    c_pred = core_fractions(pred_cube, xc, yc, core_px, radius_px)
    out_true, in_true = c_true[:, list(output_index)], c_true[:, list(input_index)]
    return pd.DataFrame({"cgan_core_excess": np.mean(out_true - c_pred, axis=1),
                         "gradient_core_excess": out_true.mean(axis=1) - in_true.mean(axis=1)})


def floored_mag(flux: np.ndarray, err: np.ndarray, zeropoint: float | np.ndarray) -> np.ndarray:
    """AB magnitude of ``max(flux, err)`` (a source below 1 sigma counts as a 1-sigma source)."""
    f = np.maximum(np.asarray(flux, float), np.asarray(err, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(zeropoint) - 2.5 * np.log10(f)


def noise_sed_error(true: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Per object the SED error that the observation's noise alone gives a perfect prediction: the mean over the
    bands of E|dmag| = 2.5 / ln 10 x sqrt(2 / pi) x err / flux (Gaussian flux errors, small; flux floored at 1
    sigma, as :func:`floored_mag`)."""
    rel = np.asarray(err, float) / np.maximum(np.asarray(true, float), np.asarray(err, float))
    return (2.5 / np.log(10.0) * np.sqrt(2.0 / np.pi) * rel).mean(axis=1)


def sed_errors(pred: np.ndarray, true: np.ndarray, err: np.ndarray, zeropoints: Sequence[float],
               bands: Sequence[str]) -> pd.DataFrame:
    """Per object: ``dmag_{b}`` per band, ``sed_error`` (mean |dmag|, mag) and ``chi2`` (mean over bands)."""
    zp = np.asarray(zeropoints, float)[None, :]
    if not (np.asarray(err) > 0).all():
        raise StudyError("SED error: some flux errors are not > 0 (aperture on no-data pixels?)")
    dmag = floored_mag(pred, err, zp) - floored_mag(true, err, zp)
    out = pd.DataFrame({f"dmag_{b}": dmag[:, i] for i, b in enumerate(bands)})
    out["sed_error"] = np.abs(dmag).mean(axis=1)
    out["chi2"] = (((pred - true) / err) ** 2).mean(axis=1)
    return out


# ------------------------------------------------------------------------------------------------ calibration
#: magnitude bins of the bias calibration (width) and the fewest objects a bin needs to be used
BIAS_BIN_MAG = 0.5
BIAS_MIN_COUNT = 5


def fit_bias(mag: np.ndarray, dmag: np.ndarray, *, bin_mag: float = BIAS_BIN_MAG,
             min_count: int = BIAS_MIN_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """``(centres, medians)``: the median of ``dmag`` in bins of ``mag`` (width ``bin_mag``) that hold at least
    ``min_count`` finite objects; the bias at any magnitude is interpolated between them (:func:`bias_at`).
    Both arrays are empty when no bin qualifies (then the bias is 0)."""
    mag, dmag = np.asarray(mag, float), np.asarray(dmag, float)
    ok = np.isfinite(mag) & np.isfinite(dmag)
    if not ok.any():
        return np.zeros(0), np.zeros(0)
    lo = np.floor(mag[ok].min() / bin_mag) * bin_mag
    edges = np.arange(lo, mag[ok].max() + bin_mag, bin_mag)
    idx = np.digitize(mag[ok], edges) - 1
    centres, medians = [], []
    for k in range(len(edges)):
        sel = idx == k
        if sel.sum() >= min_count:
            centres.append(float(np.median(mag[ok][sel])))
            medians.append(float(np.median(dmag[ok][sel])))
    return np.asarray(centres), np.asarray(medians)


def bias_at(table: tuple[np.ndarray, np.ndarray], mag: np.ndarray) -> np.ndarray:
    """The fitted bias at ``mag`` (interpolated, constant beyond the end bins; 0 without a table; 0 for NaN)."""
    centres, medians = table
    mag = np.asarray(mag, float)
    if not len(centres):
        return np.zeros_like(mag)
    return np.where(np.isfinite(mag), np.interp(np.nan_to_num(mag), centres, medians), 0.0)


def calibrate(pred: np.ndarray, true: np.ndarray, err: np.ndarray, zeropoints: Sequence[float],
              tables: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Predicted fluxes (N, bands) with each band's bias (``tables``, one per band, by the observed floored
    magnitude) taken out: ``m_pred - bias(m_obs)``."""
    out = np.array(pred, dtype=float, copy=True)
    for i, (zp, tab) in enumerate(zip(zeropoints, tables)):
        out[:, i] *= 10 ** (0.4 * bias_at(tab, floored_mag(true[:, i], err[:, i], zp)))
    return out


# ------------------------------------------------------------------------------------------------ baseline
def _features(table: pd.DataFrame, bands: Sequence[str], zeropoints: Sequence[float]) -> np.ndarray:
    """Floored magnitudes of ``bands`` and their adjacent colours."""
    return _with_colours(np.stack([floored_mag(table[f"flux_{b}"].to_numpy(float),
                                               table[f"fluxerr_{b}"].to_numpy(float), zp)
                                   for b, zp in zip(bands, zeropoints)], axis=1))


def _with_colours(mags: np.ndarray) -> np.ndarray:
    """``(N, bands)`` magnitudes followed by their adjacent colours: the regressors' features."""
    return np.concatenate([mags, mags[:, :-1] - mags[:, 1:]], axis=1)


def _predict_mags(models: Sequence[Any], x: np.ndarray, n_inputs: int) -> np.ndarray:
    """``(N, output bands)`` magnitudes from the regressors' colours against the reddest input band (feature
    ``n_inputs - 1`` of ``x``)."""
    return np.stack([m.predict(x) for m in models], axis=1) + x[:, n_inputs - 1, None]


def _regressor(cfg: Mapping[str, Any], n_train: int, seed: int) -> Any:
    """The baseline's regressor (``cfg['kind']``: gradient_boosting | knn), unfitted."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if cfg["kind"] == "knn":
        k = min(int(cfg.get("n_neighbors", 15)), n_train)
        return make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=k, weights="distance"))
    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, min_samples_leaf=10, random_state=seed)


def fit_baseline(train: pd.DataFrame, input_bands: Sequence[str], output_bands: Sequence[str],
                 zeropoints: Mapping[str, float], cfg: Mapping[str, Any], seed: int) -> list[Any]:
    """One regressor per output band: its colour against the reddest input band (floored magnitudes) from the input
    bands' magnitudes and colours. A colour, not the magnitude itself: the SED's shape does not depend on the
    brightness, and trees cannot learn the identity a magnitude target asks of them (on the demo's training set
    the magnitude target's validation error was 0.21 mag against 0.195 for the colour)."""
    x = _features(train, input_bands, [zeropoints[b] for b in input_bands])
    ref = x[:, len(input_bands) - 1]
    models = []
    for b in output_bands:
        y = floored_mag(train[f"flux_{b}"].to_numpy(float), train[f"fluxerr_{b}"].to_numpy(float), zeropoints[b])
        models.append(_regressor(cfg, len(train), seed).fit(x, y - ref))
    return models


def baseline_fluxes(models: Sequence[Any], table: pd.DataFrame, input_bands: Sequence[str],
                    output_bands: Sequence[str], zeropoints: Mapping[str, float]) -> np.ndarray:
    """Predicted output-band fluxes (N, bands) of the rows of ``table``."""
    x = _features(table, input_bands, [zeropoints[b] for b in input_bands])
    mags = _predict_mags(models, x, len(input_bands))
    zp = np.array([zeropoints[b] for b in output_bands])[None, :]
    return 10 ** (-0.4 * (mags - zp))


# ------------------------------------------------------------------------------ photometry at infinite S/N
#: the fewest normal training galaxies with truth magnitudes the truth regressor is fitted on
TRUTH_MIN_TRAIN = 20


def _truth_features(table: pd.DataFrame, bands: Sequence[str]) -> np.ndarray | None:
    """Truth magnitudes of ``bands`` and their adjacent colours; None when the table has no truth columns."""
    cols = [f"truth_mag_{b}" for b in bands]
    if not all(c in table.columns for c in cols):
        return None
    return _with_colours(table[cols].to_numpy(float))


def fit_truth_photometry(train: pd.DataFrame, input_bands: Sequence[str], output_bands: Sequence[str],
                         cfg: Mapping[str, Any], seed: int) -> list[Any] | None:
    """The baseline's regressors fitted to the noise-free truth magnitudes of the normal training galaxies: one per
    output band, its truth colour against the reddest input band from the input bands' truth magnitudes and
    colours. None without truth (real data) or with fewer than :data:`TRUTH_MIN_TRAIN` such galaxies."""
    x, y = _truth_features(train, input_bands), _truth_features(train, output_bands)
    if x is None or y is None or "label" not in train.columns:
        return None
    ok = train["label"].eq("normal").to_numpy() & np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    if ok.sum() < TRUTH_MIN_TRAIN:
        log.warning("photometry at infinite S/N skipped: %d normal training galaxies have truth magnitudes "
                    "(fewer than %d)", ok.sum(), TRUTH_MIN_TRAIN)
        return None
    ref = x[ok, len(input_bands) - 1]
    return [_regressor(cfg, int(ok.sum()), seed).fit(x[ok], y[ok, i] - ref) for i in range(len(output_bands))]


def truth_photometry_errors(models: Sequence[Any], table: pd.DataFrame, input_bands: Sequence[str],
                            output_bands: Sequence[str]) -> pd.DataFrame:
    """``dmag_{b}`` (predicted - true truth magnitude) and ``sed_error`` (mean |dmag|) of every row of ``table``
    from :func:`fit_truth_photometry`'s regressors; NaN where an object has no truth (unmatched detections)."""
    x = _truth_features(table, input_bands)
    true = table[[f"truth_mag_{b}" for b in output_bands]].to_numpy(float)
    dmag = np.full(true.shape, np.nan)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(true).all(axis=1)
    if ok.any():
        dmag[ok] = _predict_mags(models, x[ok], len(input_bands)) - true[ok]
    out = pd.DataFrame({f"dmag_{b}": dmag[:, i] for i, b in enumerate(output_bands)})
    out["sed_error"] = np.abs(dmag).mean(axis=1)
    return out


def _photometry(name: str, true_cs: CutoutSet, pred_cs: CutoutSet, outb: Sequence[str],
                radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true, err, predicted) aperture fluxes (N, bands) of one set and its prediction."""
    table = true_cs.table
    if pred_cs.n != true_cs.n or not np.array_equal(pred_cs.table["id"].to_numpy(), table["id"].to_numpy()):
        raise StudyError(f"the predicted {name} cutouts do not match the {name} set (remake the prediction)")
    true = np.stack([table[f"flux_{b}"].to_numpy(float) for b in outb], axis=1)
    err = np.stack([table[f"fluxerr_{b}"].to_numpy(float) for b in outb], axis=1)
    pred = stamp_fluxes(pred_cs.cube, table["xc"].to_numpy(float), table["yc"].to_numpy(float), radius)
    return true, err, pred


def bias_tables(train: CutoutSet, train_pred: CutoutSet, outb: Sequence[str], zeropoints: Sequence[float],
                radius: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per output band the cGAN's bias on its training cutouts (stars left out) by the band's observed magnitude."""
    true, err, pred = _photometry("train", train, train_pred, outb, radius)
    keep = ~train.table["label"].astype(str).eq("star").to_numpy() if "label" in train.table else np.ones(train.n, bool)
    dmag = sed_errors(pred, true, err, zeropoints, outb)
    return [fit_bias(floored_mag(true[keep, i], err[keep, i], zp), dmag[f"dmag_{b}"].to_numpy()[keep])
            for i, (b, zp) in enumerate(zip(outb, zeropoints))]


def score_sets(study: Mapping[str, Any], train: CutoutSet, sets: Mapping[str, tuple[CutoutSet, CutoutSet]],
               seed: int, train_pred: CutoutSet | None = None) -> pd.DataFrame:
    """SED errors of the cGAN and of the baseline for every object of ``sets`` (name -> (true cutouts, predicted
    cutouts)): one row per object with ``set``, its catalogue columns, ``cgan_*`` and ``baseline_*`` scores; with
    ``train_pred`` (the cGAN's prediction of the training cutouts) also ``cgan_calibrated_*``."""
    inb, outb = list(study["input_bands"]), list(study["output_bands"])
    zps = {b: train.zeropoints[train.band_index(b)] for b in inb + outb}
    zp_out = [zps[b] for b in outb]
    models = fit_baseline(train.table, inb, outb, zps, study["baseline"], seed)
    truth_models = fit_truth_photometry(train.table, inb, outb, study["baseline"], seed)
    radius = float(study["aperture_radius_px"])
    core = study.get("core_radius_px")
    tables = bias_tables(train, train_pred, outb, zp_out, radius) if train_pred is not None else None
    if tables is not None:
        log.info("cGAN bias on its training cutouts (median dmag by magnitude): %s",
                 {b: dict(zip(np.round(c, 2).tolist(), np.round(m, 3).tolist())) for b, (c, m) in zip(outb, tables)})
    rows = []
    for name, (true_cs, pred_cs) in sets.items():
        table = true_cs.table
        true, err, pred = _photometry(name, true_cs, pred_cs, outb, radius)
        base = baseline_fluxes(models, table, inb, outb, zps)
        cg = sed_errors(pred, true, err, zp_out, outb).add_prefix("cgan_")
        cg["noise_sed_error"] = noise_sed_error(true, err)
        bl = sed_errors(base, true, err, zp_out, outb).add_prefix("baseline_")
        if tables is not None:
            cal = sed_errors(calibrate(pred, true, err, zp_out, tables), true, err, zp_out, outb)
            bl = pd.concat([bl, cal.add_prefix("cgan_calibrated_")], axis=1)
        if truth_models is not None:
            tp = truth_photometry_errors(truth_models, table, inb, outb).add_prefix("truth_photometry_")
            bl = pd.concat([bl, tp], axis=1)
        keep = [c for c in table.columns if c in ("id", "field", "label", "ra", "dec", "x", "y", "xc", "yc")
                or c.startswith(("mag_", "flux_", "fluxerr_", "truth_mag_")) or c in ("barro_ero", "pair_id")]
        parts = [table[keep].reset_index(drop=True), cg, bl]
        if core:
            parts.append(core_scores(true_cs.cube, pred_cs.cube, table["xc"].to_numpy(float),
                                     table["yc"].to_numpy(float), [true_cs.band_index(b) for b in inb],
                                     [true_cs.band_index(b) for b in outb], float(core), radius))
        part = pd.concat(parts, axis=1)
        for i, b in enumerate(outb):
            part[f"pred_flux_{b}"], part[f"baseline_flux_{b}"] = pred[:, i], base[:, i]
        part.insert(0, "set", name)
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


# ------------------------------------------------------------------------------------------------- ranking
__all__ = ["auc", "baseline_fluxes", "bias_at", "bias_tables", "calibrate", "core_fractions", "core_scores",
           "fit_baseline", "fit_bias", "fit_truth_photometry", "floored_mag", "noise_sed_error", "roc_curve",
           "score_sets", "sed_errors", "stamp_fluxes", "truth_photometry_errors"]
