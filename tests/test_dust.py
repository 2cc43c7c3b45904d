"""Dust in the embedded galaxies (Calzetti+2000), checked against the law's published values and the simulator's truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.data.simulate import simulate_field
from workflow_scripts.data.simulate.dust import DustConfig, attenuate, calzetti_k, draw_ebv
from workflow_scripts.data.simulate.field import colour_grid
from workflow_scripts.data.simulate.seds import (TEMPLATES, ColourGrid, band_throughput, mean_fnu, observed_sed,
                                                 pivot_wavelengths)
from workflow_scripts.errors import ConfigError

from .test_simulate import small_survey


def test_the_calzetti_law_at_its_published_points():
    # R'_V = 4.05 at V (0.55 um); k(0.16 um) = 9.97 and k(2.2 um) = 0.37 from eq. 4 of Calzetti+2000
    assert calzetti_k(0.55) == pytest.approx(4.05, abs=0.01)
    assert calzetti_k(0.16) == pytest.approx(9.97, abs=0.02)
    assert calzetti_k(2.2) == pytest.approx(0.37, abs=0.01)
    # nearly continuous where the two polynomials meet, falling to the red, never negative
    assert abs(calzetti_k(0.6299) - calzetti_k(0.6301)) < 0.03
    lam = np.linspace(0.1, 6.0, 500)
    k = calzetti_k(lam)
    assert (np.diff(k) <= 0).all() and (k >= 0).all() and k[-1] == 0.0


def test_band_attenuation_matches_integrating_the_attenuated_spectrum_through_each_band():
    survey = small_survey("ceers")
    bands = survey.band_names
    grid = ColourGrid(survey, "F444W", z_grid=np.array([0.0, 0.5, 1.0, 2.5, 4.0, 5.0]))
    worst, worst_pivot = 0.0, 0.0
    pivots = np.array([pivot_wavelengths(survey)[b] for b in bands])
    for ti, template in enumerate(TEMPLATES):
        for z in grid.z_grid[1:]:
            wave, flam = observed_sed(template, z)
            k = calzetti_k(wave / 1000.0 / (1.0 + z))
            for ebv in (0.3, 1.2):
                clean = np.array([mean_fnu(wave, flam, band_throughput(survey.band(b))) for b in bands])
                dusty = np.array([mean_fnu(wave, flam * 10.0 ** (-0.4 * k * ebv), band_throughput(survey.band(b)))
                                  for b in bands])
                exact = -2.5 * np.log10(dusty / clean)
                ours = grid.attenuation(np.array([ti]), np.array([z]), np.array([ebv]))[0]
                worst = max(worst, float(np.abs(ours - exact).max()))
                at_pivot = calzetti_k(pivots / 1000.0 / (1.0 + z)) * ebv
                worst_pivot = max(worst_pivot, float(np.abs(at_pivot - exact).max()))
    assert worst < 0.01, f"band attenuation off by {worst:.4f} mag"
    assert worst_pivot > 0.1          # what the two cumulants buy over taking the law at the pivot
    # the colours: attenuate() renormalises at the mag_band
    ratios = grid.flux_ratios(np.array([1.0]), np.array([2.5]))
    att = grid.attenuation(np.array([1.0]), np.array([2.5]), np.array([0.5]))
    out = attenuate(ratios, att, bands.index("F444W"))
    assert out[0, bands.index("F444W")] == pytest.approx(1.0)
    assert np.allclose(-2.5 * np.log10(out / ratios), att - att[:, [bands.index("F444W")]])


def test_ebv_draws_follow_the_config_and_keep_the_stream_use_fixed():
    spec = DustConfig.from_embedded({"dust": {"ebv_mean": 0.2, "dusty_share": 0.1, "dusty_ebv": [0.5, 1.2]}})
    bt = np.random.default_rng(1).uniform(0, 1, 20000)
    ebv = draw_ebv(np.random.default_rng(2), bt, spec)
    dusty = (ebv >= 0.5) & (ebv <= 1.2)
    assert 0.09 < dusty.mean() < 0.13                 # 10 % dusty, plus the exponential tail's few above 0.5
    disk = ~dusty
    # E(B-V) / (1 - B/T) of the others is exponential with the configured mean (the tail above 0.5 excluded)
    scaled = ebv[disk & (bt < 0.5)] / (1 - bt[disk & (bt < 0.5)])
    assert np.median(scaled) == pytest.approx(0.2 * np.log(2), rel=0.1)
    # the stream's use does not depend on the values: with no disk dust the dusty galaxies are the same ones
    none = draw_ebv(np.random.default_rng(2), bt, DustConfig(ebv_mean=0.0, dusty_share=0.1, dusty_ebv=(0.5, 1.2)))
    chosen = none > 0
    assert 0.08 < chosen.mean() < 0.12 and np.array_equal(none[chosen], ebv[chosen])
    # a pure bulge that is not dusty has no dust
    assert (draw_ebv(np.random.default_rng(3), np.ones(50), DustConfig(ebv_mean=0.3)) == 0).all()
    assert (draw_ebv(None, bt[:10], None) == 0).all()
    with pytest.raises(ConfigError, match="dust.dusty_ebv"):
        DustConfig.from_embedded({"dust": {"ebv_mean": 0.1, "dusty_share": 0.1, "dusty_ebv": [1.0, 0.5]}})
    with pytest.raises(ConfigError, match="needs dusty_ebv"):
        DustConfig.from_embedded({"dust": {"ebv_mean": 0.1, "dusty_share": 0.1}})
    assert DustConfig.from_embedded({"dust": None}) is None


@pytest.fixture(scope="module")
def dusty_and_clean():
    kw = dict(npix=384, n_stars=2, n_ero=2, n_merger=2, mag_limit=25.0)
    on = small_survey("ceers", **kw)
    off = small_survey("ceers", dust=None, **kw)
    return on, simulate_field(on, "nircam1", seed=5, progress=False), simulate_field(off, "nircam1", seed=5,
                                                                                      progress=False)


def test_dust_reddens_each_galaxy_by_the_calzetti_law_and_changes_nothing_else(dusty_and_clean):
    survey, a, b = dusty_and_clean
    cat, ref = a.catalog, b.catalog
    assert (ref["truth_ebv"] == 0).all()
    gal = cat.label.isin(["normal", "merger"]).to_numpy()
    assert (cat.loc[gal, "truth_ebv"] > 0).any() and (cat.loc[~gal, "truth_ebv"] == 0).all()
    # the same objects, positions, shapes and mag_band fluxes: the counts are of observed magnitudes
    same = [c for c in cat.columns if c.startswith("truth_") and not c.startswith(("truth_flux_", "truth_mag_"))
            and c != "truth_ebv"] + ["x", "y", "label", "truth_flux_F444W"]
    pd.testing.assert_frame_equal(cat[same], ref[same])
    # stars and EROs keep every colour; a galaxy's colour moves by exactly its Calzetti excess
    for band in survey.band_names:
        assert np.allclose(cat.loc[~gal, f"truth_flux_{band}"], ref.loc[~gal, f"truth_flux_{band}"], rtol=1e-12)
    att = colour_grid(survey, "F444W").attenuation(cat.loc[gal, "truth_type"], cat.loc[gal, "truth_z"],
                                                   cat.loc[gal, "truth_ebv"])
    bands = survey.band_names
    for blue, red in (("F277W", "F444W"), ("F115W", "F200W")):
        shift = ((cat[f"truth_mag_{blue}"] - cat[f"truth_mag_{red}"]) - (ref[f"truth_mag_{blue}"]
                                                                          - ref[f"truth_mag_{red}"]))[gal]
        assert np.allclose(shift, att[:, bands.index(blue)] - att[:, bands.index(red)], atol=1e-9)
        assert (shift >= 0).all()
    # the images: the light removed from the field in a blue band is the truth's (the noise is the same draw;
    # galaxies on the edges have part of their light outside the field, 5 % here)
    for band in ("F115W", "F277W"):
        lost = float((b.images[band].astype(np.float64) - a.images[band]).sum())
        want = float((ref[f"truth_flux_{band}"] - cat[f"truth_flux_{band}"]).sum())
        assert want > 0 and 0.9 * want < lost <= want
    assert np.array_equal(a.images["F444W"], b.images["F444W"])
