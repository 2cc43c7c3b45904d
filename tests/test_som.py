"""Self-organising map of the blend parameters (workflow_scripts.studies.hemmati22.som) on synthetic blends with known outcomes."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.studies.hemmati22 import som as S
from workflow_scripts.errors import PipelineError

ITER = 4000  # enough for a 32 x 24 map on 1500 rows to order (the test's own speed budget)


def synthetic(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Blend parameters with the truth table's column names; 'separation' drives the outcome."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"sep_over_fwhm_sum": rng.uniform(0.0, 2.0, n), "flux_ratio": rng.uniform(0.0, 1.0, n),
                         "fwhm_sum": rng.uniform(0.2, 1.0, n), "dz": rng.exponential(0.5, n),
                         "blend_id": np.arange(n)})


@pytest.fixture(scope="module")
def trained():
    feats = synthetic()
    som, scaler = S.train_som(feats, seed=3, iterations=ITER)
    return feats, som, scaler


def test_shapes_and_feature_names(trained):
    feats, som, scaler = trained
    assert som.get_weights().shape == (32, 24, 4)
    assert list(scaler.feature_names_in_) == list(S.SOM_FEATURES)  # blend_id is not a feature
    assert S.codebook(som, scaler).shape == (32, 24, 4)
    counts = S.cell_counts(som, scaler, feats)
    assert counts.shape == (32, 24) and counts.sum() == len(feats)
    means = S.cell_means(som, scaler, feats, {"hi": feats["sep_over_fwhm_sum"] > 1.0})
    assert means["hi"].shape == (32, 24)
    w = S.winners(som, scaler, feats)
    assert w.shape == (len(feats), 2) and w[:, 0].max() < 32 and w[:, 1].max() < 24


def test_determinism():
    feats = synthetic(400)
    for init in ("pca", "random"):
        a, _ = S.train_som(feats, seed=11, iterations=500, init=init)
        b, _ = S.train_som(feats, seed=11, iterations=500, init=init)
        c, _ = S.train_som(feats, seed=12, iterations=500, init=init)
        np.testing.assert_array_equal(a.get_weights(), b.get_weights())
        assert not np.array_equal(a.get_weights(), c.get_weights())


def test_cell_means_follow_the_driving_feature(trained):
    feats, som, scaler = trained
    detected = feats["sep_over_fwhm_sum"].to_numpy() > 1.0
    unrelated = np.random.default_rng(1).random(len(feats)) < 0.5
    means = S.cell_means(som, scaler, feats, {"hi": detected, "noise": unrelated})
    sep_map = S.codebook(som, scaler)[..., 0]
    ok = np.isfinite(means["hi"])
    r = np.corrcoef(means["hi"][ok], sep_map[ok])[0, 1]
    assert r > 0.8
    # cells whose codebook separation is clearly on one side hold (almost) only that outcome
    assert np.nanmean(means["hi"][sep_map > 1.3]) > 0.9
    assert np.nanmean(means["hi"][sep_map < 0.7]) < 0.1
    # an outcome unrelated to the features does not correlate
    ok2 = np.isfinite(means["noise"])
    assert abs(np.corrcoef(means["noise"][ok2], sep_map[ok2])[0, 1]) < 0.3
    # the codebook is in the original units
    assert 0.0 <= sep_map.min() and sep_map.max() <= 2.0


def test_empty_cells_are_nan(trained):
    feats, som, scaler = trained
    few = feats.iloc[:40]
    counts = S.cell_counts(som, scaler, few)
    means = S.cell_means(som, scaler, few, {"hi": np.ones(40, dtype=bool)})["hi"]
    assert (counts == 0).sum() > 0
    assert np.isnan(means[counts == 0]).all()
    np.testing.assert_array_equal(means[counts > 0], 1.0)


def test_nan_rows_dropped_with_a_logged_count(trained, caplog):
    feats, som, scaler = trained
    bad = feats.copy()
    bad.loc[[0, 5, 9], "dz"] = np.nan
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.studies.hemmati22.som"):
        means = S.cell_means(som, scaler, bad, {"hi": np.ones(len(bad))})
        s2, _ = S.train_som(bad, seed=0, iterations=200)
    assert "3 of 1500 rows" in caplog.text
    assert np.nansum(S.cell_counts(som, scaler, bad)) == len(bad) - 3
    assert np.isfinite(means["hi"]).any()
    w = S.winners(som, scaler, bad)
    assert (w[[0, 5, 9]] == -1).all() and (w[1] >= 0).all()
    assert np.isfinite(s2.get_weights()).all()


def test_array_input_and_errors(trained):
    feats, som, scaler = trained
    arr = feats[list(S.SOM_FEATURES)].to_numpy()
    np.testing.assert_array_equal(S.cell_counts(som, scaler, arr), S.cell_counts(som, scaler, feats))
    with pytest.raises(S.SOMError, match="values for"):
        S.cell_means(som, scaler, feats, {"hi": np.ones(10)})
    with pytest.raises(S.SOMError, match="no rows"):
        S.train_som(np.empty((0, 4)))
    with pytest.raises(S.SOMError, match="lacks column"):
        S.train_som(feats, feature_names=["sep_over_fwhm_sum", "nope"])
    with pytest.raises(S.SOMError, match="trained on 4"):
        S.cell_counts(som, scaler, arr[:, :3])
    with pytest.raises(PipelineError, match="every row"):
        S.train_som(np.full((5, 4), np.nan))


def test_plot_som_writes_png_and_pdf(trained, tmp_path):
    feats, som, scaler = trained
    sep = feats["sep_over_fwhm_sum"].to_numpy()
    outcomes = {"hi": sep > 0.5, "lo": sep > 1.5, "GAN": sep > 1.0}
    fig = S.plot_som(som, scaler, feats, outcomes, tmp_path / "fig" / "som.png")
    assert (tmp_path / "fig" / "som.png").stat().st_size > 10_000
    assert (tmp_path / "fig" / "som.pdf").stat().st_size > 10_000
    assert len([ax for ax in fig.axes if ax.get_images()]) == 3 + 1 + 4


def test_saved_map_gives_the_same_cells_and_figure_inputs(trained, tmp_path):
    """The rule hemmati22_som keeps the map; Fig 6 reads it back: same winners, counts, means and codebook."""
    feats, som, scaler = trained
    path = tmp_path / "som.npz"
    S.save_som(path, som, scaler, {"seed": 3, "provenance": {"seed": 3}})
    som2, scaler2, info = S.load_som(path)
    assert info == {"seed": 3, "provenance": {"seed": 3}}
    assert list(scaler2.feature_names_in_) == list(S.SOM_FEATURES)
    assert np.array_equal(S.winners(som, scaler, feats), S.winners(som2, scaler2, feats))
    assert np.array_equal(S.codebook(som, scaler), S.codebook(som2, scaler2))
    outcome = {"hi": feats["sep_over_fwhm_sum"].to_numpy() > 1.0}
    np.testing.assert_array_equal(S.cell_means(som, scaler, feats, outcome)["hi"],
                                  S.cell_means(som2, scaler2, feats, outcome)["hi"])
    cells = S.cell_table(som2, scaler2, feats.assign(dz=feats["dz"].where(feats.index != 5)), feats["blend_id"])
    assert list(cells.columns) == ["id", "som_i", "som_j", "cell"] and len(cells) == len(feats)
    assert cells.loc[5, ["som_i", "som_j", "cell"]].tolist() == [-1, -1, -1]          # a NaN feature: no cell
    ok = cells.drop(index=5)
    assert (ok["cell"] == ok["som_i"] * 24 + ok["som_j"]).all() and ok["som_i"].between(0, 31).all()


def test_loading_a_bad_som_file_names_it(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(S.SOMError, match="bad.npz"):
        S.load_som(bad)
    with pytest.raises(S.SOMError, match="missing.npz"):
        S.load_som(tmp_path / "missing.npz")
