"""Self-organising map of the blend parameters (Hemmati et al. 2022, sec. 4, their SOM figure).

The paper maps the blends onto a 32 x 24 SOM trained on four parameters (separation / sum of FWHM, flux ratio,
sum of FWHM, |dz|; ~6 blends per cell for 5000 blends) and colours each cell by the mean detection outcome on
the hi-res, low-res and GAN images, which shows *where* in parameter space each image type fails.

- :func:`train_som` standardises the features (:class:`sklearn.preprocessing.StandardScaler`, so that no
  parameter dominates the Euclidean distance by its units) and trains a :class:`minisom.MiniSom`, reproducibly:
  the initial weights (PCA plane by default, or random samples) and the sample order come from ``seed``.
- :func:`winners` / :func:`cell_counts` / :func:`cell_means` put blends on the map and average outcomes per
  cell (NaN where a cell is empty: an empty cell has no detection fraction, not a zero one).
- :func:`save_som` / :func:`load_som` keep a trained map and its scaler in one ``.npz`` file (the rule
  ``hemmati22_som`` trains once; the figure reads it), :func:`cell_table` gives each blend's cell.
- :func:`codebook` returns each cell's feature values in the original units, drawn by :func:`plot_som` under the
  outcome maps so that a reader can tell what each region of the map means.

Rows with a NaN or infinite feature are dropped (with a logged count) everywhere; their outcomes are ignored.
Map arrays are indexed ``[i, j]`` with ``i`` along the first SOM axis (32) and ``j`` along the second (24).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from minisom import MiniSom
from sklearn.preprocessing import StandardScaler

from workflow_scripts.errors import PipelineError
from workflow_scripts.io import atomic_path
from workflow_scripts.studies.hemmati22.paper import BLEND_PARAMETERS, SOM_FEATURE_LABELS, SOM_SHAPE

log = logging.getLogger(__name__)

__all__ = [
    "SOMError",
    "SOM_FEATURES",
    "SOM_SHAPE",
    "DEFAULT_SIGMA",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_ITERATIONS",
    "train_som",
    "winners",
    "cell_counts",
    "cell_means",
    "codebook",
    "save_som",
    "load_som",
    "cell_table",
    "plot_som",
]

#: the paper's SOM parameters, as named in the blends truth table (:mod:`workflow_scripts.studies.hemmati22.blends`),
#: and its map size (:mod:`.paper`)
SOM_FEATURES = BLEND_PARAMETERS
#: initial neighbourhood width (cells); MiniSom's asymptotic decay halves it by mid-training, ending at a third.
#: ~1/8 of the long side lets the map order globally before it refines locally
DEFAULT_SIGMA = 4.0
#: initial learning rate (MiniSom's default), decaying asymptotically to a third
DEFAULT_LEARNING_RATE = 0.5
#: weight updates: ~4 passes over 5000 blends; 20000 updates of a 768-cell map take ~2 s on one core
DEFAULT_ITERATIONS = 20000
#: initialisations: 'pca' (weights on the plane of the first two principal components: ordered, no randomness)
#: or 'random' (weights = random samples drawn from the seed)
INITS = ("pca", "random")
#: colour of empty (NaN) cells in the figures
EMPTY_COLOUR = "0.85"
#: default titles / labels of the figure's panels
FEATURE_LABELS: Mapping[str, str] = SOM_FEATURE_LABELS


class SOMError(PipelineError):
    """Bad input to the SOM (empty or mis-shaped features, mismatched outcome lengths, bad map shape)."""


# ----------------------------------------------------------------------------------------------- features
def _matrix(features: Any, names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(N, F) float array and its column names; DataFrames give the named columns (default: the paper's four
    when all present, else all columns), arrays are taken as they are."""
    if isinstance(features, pd.DataFrame):
        if names is None:
            names = list(SOM_FEATURES) if all(c in features.columns for c in SOM_FEATURES) else list(features.columns)
        missing = [c for c in names if c not in features.columns]
        if missing:
            raise SOMError(f"the feature table lacks column(s) {', '.join(missing)}")
        try:
            x = features[list(names)].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SOMError(f"the SOM features must be numeric ({exc})") from None
        return x, list(names)
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SOMError(f"the SOM features must be numeric ({exc})") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise SOMError(f"the SOM features must be (N, n_features), got shape {x.shape}")
    if names is None:
        names = list(SOM_FEATURES) if x.shape[1] == len(SOM_FEATURES) else [f"f{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise SOMError(f"{len(names)} feature names for {x.shape[1]} feature columns")
    return x, list(names)


def _finite_rows(x: np.ndarray, what: str) -> np.ndarray:
    if x.shape[0] == 0:
        raise SOMError(f"{what}: no rows")
    ok = np.isfinite(x).all(axis=1)
    if (~ok).any():
        log.warning("%s: %d of %d rows with NaN or infinite features dropped", what, int((~ok).sum()), x.shape[0])
    if not ok.any():
        raise SOMError(f"{what}: every row has a NaN or infinite feature")
    return ok


def _scaled(scaler: StandardScaler, features: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Standardised finite rows and the (N,) mask of rows kept."""
    names = list(getattr(scaler, "feature_names_in_", [])) or None
    x, names = _matrix(features, names if isinstance(features, pd.DataFrame) else None)
    if x.shape[1] != scaler.n_features_in_:
        raise SOMError(f"{what}: {x.shape[1]} features, the SOM was trained on {scaler.n_features_in_}")
    ok = _finite_rows(x, what)
    cols = list(getattr(scaler, "feature_names_in_", names))
    return scaler.transform(pd.DataFrame(x[ok], columns=cols)), ok


# ----------------------------------------------------------------------------------------------- training
def train_som(features: Any, shape: tuple[int, int] = SOM_SHAPE, seed: int = 0,
              iterations: int = DEFAULT_ITERATIONS, sigma: float = DEFAULT_SIGMA,
              learning_rate: float = DEFAULT_LEARNING_RATE, *, init: str = "pca",
              feature_names: Sequence[str] | None = None) -> tuple[MiniSom, StandardScaler]:
    """Train a ``shape`` SOM on standardised ``features`` (N, F): a DataFrame (default columns
    :data:`SOM_FEATURES`) or an array (columns in that order). Deterministic for a given ``seed`` (MiniSom's
    ``random_seed``: random initial weights and the random sample order). Returns the map and the fitted
    scaler (which remembers the feature names)."""
    if len(shape) != 2 or min(int(shape[0]), int(shape[1])) < 2:
        raise SOMError(f"the SOM shape must be two sizes >= 2, got {shape}")
    if int(iterations) < 1 or sigma <= 0 or learning_rate <= 0:
        raise SOMError(f"iterations ({iterations}), sigma ({sigma}) and learning_rate ({learning_rate}) must be > 0")
    if init not in INITS:
        raise SOMError(f"unknown SOM initialisation {init!r} (use one of {', '.join(INITS)})")
    x, names = _matrix(features, feature_names)
    ok = _finite_rows(x, "train_som")
    x = x[ok]
    if x.shape[0] < 2:
        raise SOMError(f"train_som: need at least 2 rows with finite features, got {x.shape[0]}")
    if init == "pca" and x.shape[1] < 2:
        raise SOMError("train_som: the PCA initialisation needs at least 2 features (use init='random')")
    scaler = StandardScaler().fit(pd.DataFrame(x, columns=names))
    data = scaler.transform(pd.DataFrame(x, columns=names))
    som = MiniSom(int(shape[0]), int(shape[1]), data.shape[1], sigma=float(sigma),
                  learning_rate=float(learning_rate), neighborhood_function="gaussian", random_seed=int(seed))
    if init == "pca":
        som.pca_weights_init(data)
    else:
        som.random_weights_init(data)
    som.train(data, int(iterations), random_order=True)
    log.info("train_som: %s map, %d rows x %d features, %d iterations, sigma %g, lr %g, seed %d, "
             "quantisation error %.4f", shape, data.shape[0], data.shape[1], iterations, sigma, learning_rate,
             seed, float(som.quantization_error(data)))
    return som, scaler


# ------------------------------------------------------------------------------------------ map statistics
def _bmu(som: MiniSom, data: np.ndarray) -> np.ndarray:
    """Flat index of the best-matching cell of each row of standardised ``data``."""
    w = som.get_weights().reshape(-1, data.shape[1])
    d2 = (data**2).sum(1)[:, None] - 2.0 * data @ w.T + (w**2).sum(1)[None]
    return np.argmin(d2, axis=1)


def winners(som: MiniSom, scaler: StandardScaler, features: Any) -> np.ndarray:
    """(N, 2) int cell (i, j) of each row; (-1, -1) for rows with a NaN or infinite feature."""
    data, ok = _scaled(scaler, features, "winners")
    shape = som.get_weights().shape[:2]
    out = np.full((ok.size, 2), -1, dtype=np.int64)
    out[ok] = np.column_stack(np.unravel_index(_bmu(som, data), shape))
    return out


def cell_counts(som: MiniSom, scaler: StandardScaler, features: Any) -> np.ndarray:
    """Number of rows (finite features) whose best-matching cell is each cell: int array of the map's shape."""
    data, _ = _scaled(scaler, features, "cell_counts")
    shape = som.get_weights().shape[:2]
    return np.bincount(_bmu(som, data), minlength=shape[0] * shape[1]).reshape(shape)


def cell_means(som: MiniSom, scaler: StandardScaler, features: Any,
               outcomes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Mean of each outcome (booleans or numbers, one per row of ``features``) in each cell: a float array of
    the map's shape per name, NaN for cells with no row (rows with non-finite features or a NaN outcome are
    left out)."""
    if not outcomes:
        raise SOMError("cell_means: no outcomes given")
    data, ok = _scaled(scaler, features, "cell_means")
    shape = som.get_weights().shape[:2]
    cells = _bmu(som, data)
    out: dict[str, np.ndarray] = {}
    for name, values in outcomes.items():
        v = np.asarray(values)
        if v.ndim != 1 or v.size != ok.size:
            raise SOMError(f"cell_means: outcome {name!r} has {v.size} values for {ok.size} feature rows")
        try:
            v = v.astype(np.float64)[ok]
        except (TypeError, ValueError):
            raise SOMError(f"cell_means: outcome {name!r} must be booleans or numbers") from None
        good = np.isfinite(v)
        n = np.bincount(cells[good], minlength=shape[0] * shape[1])
        s = np.bincount(cells[good], weights=v[good], minlength=shape[0] * shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = np.where(n > 0, s / n, np.nan).reshape(shape)
    return out


def codebook(som: MiniSom, scaler: StandardScaler) -> np.ndarray:
    """Each cell's weight vector in the original feature units: (nx, ny, n_features)."""
    w = som.get_weights()
    flat = scaler.inverse_transform(w.reshape(-1, w.shape[-1]))
    return np.asarray(flat).reshape(w.shape)


# ------------------------------------------------------------------------------------------------ the file
def save_som(path: str | Path, som: MiniSom, scaler: StandardScaler, info: Mapping[str, Any]) -> None:
    """Write the map's weights and the fitted scaler to one ``.npz`` file atomically; ``info`` (training settings,
    provenance: JSON-able) is kept beside them and comes back from :func:`load_som`."""
    import json

    names = list(getattr(scaler, "feature_names_in_", [f"f{i}" for i in range(scaler.n_features_in_)]))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, weights=som.get_weights(), mean=scaler.mean_, scale=scaler.scale_, var=scaler.var_,
                     n_samples_seen=np.asarray(scaler.n_samples_seen_), feature_names=np.asarray(names, dtype=str),
                     sigma=np.float64(som._sigma), learning_rate=np.float64(som._learning_rate),
                     info=np.asarray(json.dumps(dict(info), default=str)))


def load_som(path: str | Path) -> tuple[MiniSom, StandardScaler, dict[str, Any]]:
    """The map, the scaler and the ``info`` of a file written by :func:`save_som` (one-line :class:`SOMError`
    naming the file if it is missing or not one). Winners, counts and means equal those of the saved map."""
    import json

    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
        weights = d["weights"]
    except (OSError, ValueError, KeyError) as exc:
        raise SOMError(f"{path}: not a SOM file written by save_som ({exc})") from None
    nx, ny, nf = weights.shape
    som = MiniSom(nx, ny, nf, sigma=float(d["sigma"]), learning_rate=float(d["learning_rate"]),
                  neighborhood_function="gaussian")
    som._weights = weights.astype(np.float64)
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = d["mean"], d["scale"], d["var"]
    scaler.n_samples_seen_ = d["n_samples_seen"].item()
    scaler.n_features_in_ = nf
    scaler.feature_names_in_ = np.asarray([str(n) for n in d["feature_names"]], dtype=object)
    return som, scaler, json.loads(str(d["info"]))


def cell_table(som: MiniSom, scaler: StandardScaler, features: Any, ids: Any) -> pd.DataFrame:
    """Each row's cell: columns id (``ids``, e.g. the blend ids), som_i, som_j (-1 for non-finite features) and
    cell (flat index i * ny + j, -1 likewise)."""
    ij = winners(som, scaler, features)
    ny = som.get_weights().shape[1]
    return pd.DataFrame({"id": np.asarray(ids), "som_i": ij[:, 0], "som_j": ij[:, 1],
                         "cell": np.where(ij[:, 0] >= 0, ij[:, 0] * ny + ij[:, 1], -1)})


# ------------------------------------------------------------------------------------------------- figure
def _show(fig: Figure, ax: Any, arr: np.ndarray, title: str, cmap: str, vmin: float | None = None,
          vmax: float | None = None, label: str = "") -> None:
    import matplotlib as mpl

    cm = mpl.colormaps[cmap].with_extremes(bad=EMPTY_COLOUR)
    im = ax.imshow(np.ma.masked_invalid(arr.T), origin="lower", cmap=cm, vmin=vmin, vmax=vmax,
                   interpolation="nearest", aspect="equal")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=label)


def plot_som(som: MiniSom, scaler: StandardScaler, features: Any, outcomes: Mapping[str, Any],
             path: str | Path | None = None, *, formats: Sequence[str] = ("png", "pdf"),
             titles: Mapping[str, str] | None = None, feature_labels: Mapping[str, str] | None = None,
             dpi: int = 150) -> Figure:
    """Figure of the SOM: top row, one panel per outcome (e.g. hi, lo, GAN) coloured by the mean detection
    fraction per cell (0-1; empty cells grey) and a panel of the counts; bottom row, each feature's codebook
    value across the map (original units). Saved as ``path`` with each suffix of ``formats`` when ``path`` is
    given (its own suffix is replaced). Uses the Agg canvas, no pyplot state; returns the figure."""
    means = cell_means(som, scaler, features, outcomes)
    counts = cell_counts(som, scaler, features).astype(np.float64)
    counts[counts == 0] = np.nan
    book = codebook(som, scaler)
    names = list(getattr(scaler, "feature_names_in_", [f"f{i}" for i in range(book.shape[-1])]))
    labels = {**FEATURE_LABELS, **(feature_labels or {})}
    titles = dict(titles or {})
    ncols = max(len(means) + 1, len(names))
    fig = Figure(figsize=(2.9 * ncols, 5.6), layout="constrained")
    axes = fig.subplots(2, ncols, squeeze=False)
    for k, (name, arr) in enumerate(means.items()):
        _show(fig, axes[0, k], arr, titles.get(name, f"{name}: detection fraction"), "viridis", 0.0, 1.0)
    _show(fig, axes[0, len(means)], counts, titles.get("counts", "blends per cell"), "magma")
    for ax in axes[0, len(means) + 1:]:
        ax.set_axis_off()
    for k, name in enumerate(names):
        _show(fig, axes[1, k], book[..., k], labels.get(name, name), "cividis")
    for ax in axes[1, len(names):]:
        ax.set_axis_off()
    if path is not None:
        base = Path(path)
        base = base.with_suffix("") if base.suffix.lstrip(".") in formats else base
        for fmt in formats:
            with atomic_path(base.parent / f"{base.name}.{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi)
    return fig
