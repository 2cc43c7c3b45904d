"""The likelihood-ratio study's stamps, scaling, perturbation, masks, ratios, AUCs, matched bins, twin and config."""

from __future__ import annotations

import copy

import galsim
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from astropy.io import fits
from astropy.wcs import WCS

from workflow_scripts.config import validate_config
from workflow_scripts.errors import ConfigError
from workflow_scripts.io import Mosaic
from workflow_scripts.models.pixelcnn import marginal_start, quantize
from workflow_scripts.studies.zanisi21.analysis import (background_share, bootstrap_mean_difference, llr_maps,
                                                        matched_bins, ood_auc, source_masks, stamp_noise)
from workflow_scripts.studies.zanisi21.metrics import (anomaly_metrics, auc_ceiling, clump_correlation, clumpy_auc,
                                                       paired_wins)
from workflow_scripts.studies.zanisi21.model import (bits_per_dim, shared_training_data, train_pixelcnn,
                                                    training_data)
from workflow_scripts.studies.zanisi21.samples import FieldData, make_anomaly_sets
from workflow_scripts.studies.zanisi21.stamps import (StampError, StampScaling, dividing_declination, perturb,
                                                      select_galaxies, split_regions, zoom)
from workflow_scripts.studies.zanisi21.twin import twin_survey

from tests.conftest import REPO


def _config() -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if "zanisi21" not in cfg["studies"]:
        cfg["studies"].append("zanisi21")
    return cfg


# ---------------------------------------------------------------------------------------- stamps, scaling
def test_zoom_is_a_block_mean_that_conserves_the_mean_and_refuses_bad_factors():
    rng = np.random.default_rng(0)
    cube = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    z = zoom(cube, 0.5)
    assert z.shape == (3, 1, 4, 4)
    assert z[1, 0, 2, 3] == pytest.approx(cube[1, 0, 4:6, 6:8].mean(), rel=1e-6)
    assert z.mean() == pytest.approx(cube.mean(), abs=1e-6)
    assert zoom(cube, 1.0) is not None and np.array_equal(zoom(cube, 1.0), cube)
    with pytest.raises(StampError, match="1/k"):
        zoom(cube, 0.4)
    with pytest.raises(StampError, match="multiple"):
        zoom(cube[..., :7, :7], 0.5)


def test_scaling_maps_into_the_quantised_grid_and_inverts_within_a_level():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32]
    gal = 50.0 * np.exp(-((xx - 15.5) ** 2 + (yy - 15.5) ** 2) / 18.0)
    cube = (gal[None, None] + rng.normal(scale=0.5, size=(20, 1, 32, 32))).astype(np.float32)
    s = StampScaling.fit(cube, zoom_by=0.5, bits=8)
    y = s.to_model(cube)
    assert y.shape == (20, 1, 16, 16) and y.min() >= -1 and y.max() <= 1
    assert torch.equal(quantize(torch.from_numpy(y), 8), torch.from_numpy(y))   # on the grid already
    back = s.to_physical(y)
    z = zoom(cube, 0.5)
    # rounding to the grid moves y by at most half a level (1/255): x moves by at most dx/dy there
    dxdy = s.asinh.softening * s.asinh.scale * np.cosh(s.asinh.scale * (np.abs(y) + 1.0 / 255))
    assert np.all(np.abs(back - z) <= dxdy / 255 * 1.001)
    again = StampScaling.from_dict(s.to_dict())
    assert np.array_equal(again.to_model(cube), y)


def test_perturbation_replaces_the_configured_fraction_with_grid_levels():
    rng = np.random.default_rng(2)
    x = quantize(torch.rand(50, 1, 16, 16) * 2 - 1, 8).numpy()
    p = perturb(x, 0.2, 8, np.random.default_rng(3))
    changed = (p != x).mean()
    assert 0.2 * (1 - 1 / 256) - 0.02 < changed < 0.2 + 0.02
    assert torch.equal(quantize(torch.from_numpy(p), 8), torch.from_numpy(p))
    assert np.array_equal(perturb(x, 0.2, 8, np.random.default_rng(3)), p)   # seeded: repeatable
    assert np.array_equal(perturb(x, 0.0, 8, rng), x)
    with pytest.raises(StampError, match="mu"):
        perturb(x, 1.5, 8, rng)


def test_training_data_augments_and_perturbs_only_the_background_model():
    rng = np.random.default_rng(4)
    cube = rng.normal(size=(6, 1, 16, 16)).astype(np.float32) + 5.0
    s = StampScaling.fit(cube, zoom_by=1.0, bits=8)
    real = training_data("real", cube, s, copies=4, mu=0.2, seed=0)
    bg = training_data("perturbed", cube, s, copies=4, mu=0.2, seed=0)
    assert real.shape == bg.shape == (24, 1, 16, 16)
    assert np.array_equal(real[6:12], np.rot90(real[:6], 1, axes=(-2, -1)))
    assert 0.1 < (real != bg).mean() < 0.3
    with pytest.raises(StampError, match="unknown model"):
        training_data("other", cube, s, copies=1, mu=0.2, seed=0)
    with pytest.raises(StampError, match="shared_training_data"):
        training_data("shared", cube, s, copies=1, mu=0.2, seed=0)


def test_the_shared_model_trains_on_real_stamps_and_archetypes_with_their_labels():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(6, 1, 16, 16)).astype(np.float32) + 5.0
    arch = rng.normal(size=(4, 1, 16, 16)).astype(np.float32) + 5.0
    s = StampScaling.fit(real, zoom_by=1.0, bits=8)
    x, y = shared_training_data({"archetype": arch, "real": real}, s, copies=2)
    assert x.shape == (20, 1, 16, 16) and y.tolist() == [0] * 12 + [1] * 8   # real is class 0 whatever the order
    assert np.array_equal(x[:12], training_data("real", real, s, copies=2, mu=0.2, seed=0))
    assert np.array_equal(x[12:], training_data("archetype", arch, s, copies=2, mu=0.2, seed=0))
    with pytest.raises(StampError, match="archetype"):
        shared_training_data({"real": real}, s, copies=2)


def test_the_shared_model_is_scored_under_each_class_and_judged_like_the_two_model_llr(tmp_path):
    from workflow_scripts.models.pixelcnn import PixelCNN
    from workflow_scripts.studies.zanisi21.metrics import shared_entries
    from workflow_scripts.studies.zanisi21.scoring import score_set
    from workflow_scripts.train.inference import save_model
    rng = np.random.default_rng(6)
    cube = rng.normal(0, 1, size=(5, 1, 16, 16)).astype(np.float32)
    cube[:, :, 6:10, 6:10] += 20.0
    s = StampScaling.fit(cube, zoom_by=0.5, bits=8)
    torch.manual_seed(0)
    paths = {k: save_model(PixelCNN(filters=4, n_resnet=1, n_mix=2, n_classes=n).eval(), tmp_path / f"{k}.pt")
             for k, n in (("real", 0), ("archetype", 0), ("shared", 2))}
    masks = {"nsigma": 2.0, "minarea": 2, "grow": 0}
    table = pd.DataFrame({"id": np.arange(5)})
    sc = score_set(cube, table, s, paths, masks=masks, device="cpu")
    assert {"shared_real", "shared_archetype", "real", "archetype"} == set(sc.logp)
    t = sc.table
    # untrained, the class vectors are zero: the two classes score alike and the shared LLR is exactly zero
    assert np.array_equal(t["llr_shared"], np.zeros(5)) and np.allclose(t["logp_shared_real"], t["logp_shared_archetype"])
    assert not np.allclose(t["llr"], 0)
    net = PixelCNN(filters=4, n_resnet=1, n_mix=2, n_classes=2).eval()
    with torch.no_grad():
        for block in net.up_ul:
            block.label.weight[1].normal_(0, 0.5)
    save_model(net, paths["shared"])
    t = score_set(cube, table, s, paths, masks=masks, device="cpu").table
    assert np.allclose(t["llr_shared"], t["logp_shared_real"] - t["logp_shared_archetype"], atol=1e-3)
    assert (t["llr_shared"] != 0).all() and t["bg_share_llr_shared"].between(0, 1).all()

    # the metrics: the paired test, the AUCs and the background share of the shared LLR, with the goals of the paper's
    n = 200
    frac = np.where(rng.uniform(size=n) < 0.3, 0.1, 0.0)
    base = rng.normal(0, 1, n)
    real = pd.DataFrame({"id": np.arange(n), "llr_shared": base + 5 * (frac > 0), "truth_clump_frac": frac,
                         "bg_share_llr_shared": 0.05, "bpd_shared_real": 4.0, "bpd_shared_archetype": 4.2})
    twin = pd.DataFrame({"id": np.arange(n), "llr_shared": base})
    arch = pd.DataFrame({"bpd_shared_archetype": [3.0, 3.0]})
    out = shared_entries(real, twin, arch, "the twin")
    e = {x["id"]: x for x in out["entries"]}
    assert e["bits_per_dim_shared"]["ours"] == pytest.approx(3.5)
    assert e["llr_shared_paired_wins_clumpy"]["ours"] == 1.0 and e["llr_shared_paired_wins_clumpy"]["holds"]
    assert e["llr_shared_auc_clumpy_vs_twin"]["ours"] > 0.99 and e["llr_shared_auc_clumpy_vs_twin"]["holds"]
    assert e["llr_shared_background_fraction"]["holds"] and e["llr_shared_clump_rank_correlation"]["ours"] > 0
    assert e["llr_shared_auc_smooth_vs_real"]["ours"] == pytest.approx(0.5 + np.mean(frac > 0) / 2, abs=0.02)


def test_selection_keeps_galaxies_in_the_magnitude_range_and_names_the_file():
    cat = pd.DataFrame({"id": [1, 2, 3, 4], "ra": [0.0] * 4, "dec": [0.0] * 4, "mag_F814W": [21.0, 24.9, 25.1, np.nan],
                        "star": [False, False, False, False]})
    cat.loc[0, "star"] = True
    out = select_galaxies(cat, "F814W", 25.0, source="cat.parquet")
    assert out["id"].tolist() == [2]
    with pytest.raises(StampError, match="cat.parquet.*lacks columns mag_F160W"):
        select_galaxies(cat, "F160W", 25.0, source="cat.parquet")
    with pytest.raises(StampError, match="cat.parquet: no galaxy"):
        select_galaxies(cat, "F814W", 20.0, source="cat.parquet")


def test_split_holds_out_the_north_with_a_gap():
    dec = np.linspace(-1.0, 1.0, 1001)
    t = pd.DataFrame({"dec": dec})
    d0 = dividing_declination(dec, 0.3)
    train, test = split_regions(t, d0, gap_arcsec=36.0)
    assert test.mean() == pytest.approx(0.3 - 0.005 / 2 * 1000 / 1001, abs=0.01)
    assert dec[train].max() < dec[test].min() - 0.0099
    assert not (train & test).any()


# ------------------------------------------------------------------------------------------ analysis
def test_source_masks_cover_a_galsim_galaxy_and_leave_the_sky():
    rng = np.random.default_rng(5)
    gal = galsim.Convolve(galsim.Exponential(half_light_radius=0.25, flux=400.0), galsim.Gaussian(fwhm=0.1))
    img = gal.drawImage(nx=32, ny=32, scale=0.06).array
    sigma = 0.5
    cube = img[None] + rng.normal(scale=sigma, size=(8, 32, 32))
    noise = stamp_noise(cube)      # MAD of a 448-pixel ring: ~8 % scatter per stamp
    assert noise.mean() == pytest.approx(sigma, rel=0.08) and np.all(np.abs(noise / sigma - 1) < 0.25)
    m = source_masks(cube, nsigma=2.0, minarea=5, grow=1)   # the config's
    assert m[:, 14:18, 14:18].all()                       # the centre is source
    bright = img > 3 * sigma
    assert m[:, bright].mean() > 0.99                     # every pixel above 3 sigma of the noiseless galaxy
    assert m[:, img < 0.01 * sigma].mean() < 0.1          # pure sky is mostly background (noise peaks + growth)
    # the noise of a pure-noise stamp makes few, small false 'sources'
    empty = source_masks(rng.normal(size=(8, 32, 32)), nsigma=2.0, minarea=5, grow=1)
    assert empty.mean() < 0.1


def test_background_share_and_llr_maps():
    a = np.zeros((2, 4, 4))
    b = np.zeros((2, 4, 4))
    a[0, 0, 0], a[0, 1, 1], a[1] = 3.0, -1.0, 1.0
    llr = llr_maps(a, b)
    bg = np.zeros((2, 4, 4), bool)
    bg[:, 1, 1] = True
    share = background_share(llr, bg)
    assert share[0] == pytest.approx(0.25) and share[1] == pytest.approx(1 / 16)
    with pytest.raises(ValueError):
        llr_maps(a, b[:1])


def test_ood_auc_orientation_and_chance():
    rng = np.random.default_rng(6)
    inside, out = rng.normal(0, 1, 2000), rng.normal(2, 1, 2000)
    # the AUC of two unit Gaussians 2 sigma apart is Phi(2 / sqrt 2) = 0.921
    assert ood_auc(inside, out) == pytest.approx(0.921, abs=0.015)
    assert ood_auc(out, inside) == pytest.approx(0.079, abs=0.015)
    assert ood_auc(inside, rng.normal(0, 1, 2000)) == pytest.approx(0.5, abs=0.03)


def test_bootstrap_error_and_matched_bins_recover_known_differences():
    rng = np.random.default_rng(7)
    n = 400
    ref = pd.DataFrame({"llr": rng.normal(10, 5, n), "mag": rng.uniform(20, 24, n)})
    oth = pd.DataFrame({"llr": rng.normal(0, 5, n), "mag": rng.uniform(20, 24, n)})
    ref.loc[ref["mag"] > 22, "llr"] -= 10     # no difference in the faint bin
    d, err = bootstrap_mean_difference(ref["llr"].to_numpy(), oth["llr"].to_numpy(), 200, rng)
    assert err == pytest.approx(5 * np.sqrt(2 / n), rel=0.25)
    t = matched_bins(ref, oth, "llr", {"mag": [20, 22, 24]}, n_boot=100, seed=0)
    assert list(t["n_reference"]) == [int((ref["mag"] < 22).sum()), int((ref["mag"] >= 22).sum())]
    assert t["difference"].iloc[0] == pytest.approx(10, abs=4 * t["error"].iloc[0])
    assert t["difference"].iloc[1] == pytest.approx(0, abs=4 * t["error"].iloc[1])
    empty = matched_bins(ref, oth, "llr", {"mag": [30, 31]}, n_boot=10, seed=0)
    assert np.isnan(empty["difference"].iloc[0])


def test_clump_correlation_is_paired_by_id():
    rng = np.random.default_rng(8)
    frac = rng.uniform(0, 0.3, 200)
    real = pd.DataFrame({"id": np.arange(200), "llr": 100 * frac + rng.normal(0, 2, 200), "truth_clump_frac": frac})
    twin = pd.DataFrame({"id": np.arange(200)[::-1], "llr": rng.normal(0, 2, 200)})
    c = clump_correlation(real, twin)
    assert c["n"] == 200 and c["rho"] > 0.9
    assert clump_correlation(real.drop(columns="truth_clump_frac"), twin)["rho"] is None


def test_clumpy_auc_scores_only_the_galaxies_with_clumps_against_their_twins():
    rng = np.random.default_rng(9)
    n = 300
    frac = np.where(rng.uniform(size=n) < 0.3, rng.uniform(0.05, 0.3, n), 0.0)
    llr = rng.normal(0, 1, n)
    real = pd.DataFrame({"id": np.arange(n), "llr": llr + 20 * frac, "truth_clump_frac": frac})
    twin = pd.DataFrame({"id": np.arange(n), "llr": llr})          # without clumps: the same as the smooth ones
    c = clumpy_auc(real, twin)
    assert c["n"] == int((frac > 0).sum()) and c["auc"] > 0.9
    from workflow_scripts.studies.zanisi21.analysis import ood_auc
    assert ood_auc(-real["llr"], -twin["llr"]) < c["auc"] - 0.2   # diluted by the identical pairs
    assert clumpy_auc(real.drop(columns="truth_clump_frac"), twin)["auc"] is None


def test_the_auc_ceiling_is_reached_by_a_perfect_score_and_not_exceeded():
    rng = np.random.default_rng(10)
    n = 400
    frac = np.where(rng.uniform(size=n) < 0.3, rng.uniform(0.05, 0.3, n), 0.0)
    llr = rng.normal(0, 1, n)
    twin = pd.DataFrame({"id": np.arange(n), "llr": llr})
    ceiling = auc_ceiling(pd.DataFrame({"truth_clump_frac": frac}))
    assert ceiling == pytest.approx(0.5 + np.mean(frac > 0) / 2)
    from workflow_scripts.studies.zanisi21.analysis import ood_auc
    # a perfect score ranks every clumpy galaxy above every twin; the smooth ones tie with their own twins
    perfect = pd.DataFrame({"id": np.arange(n), "llr": np.where(frac > 0, 100.0, llr), "truth_clump_frac": frac})
    assert ood_auc(-perfect["llr"], -twin["llr"]) == pytest.approx(ceiling, abs=0.02)
    assert auc_ceiling(perfect.drop(columns="truth_clump_frac")) is None


def test_paired_wins_find_a_small_shift_that_the_spread_between_galaxies_hides_from_the_auc():
    rng = np.random.default_rng(11)
    n = 300
    frac = np.where(rng.uniform(size=n) < 0.3, rng.uniform(0.05, 0.3, n), 0.0)
    llr = rng.normal(0, 50, n)                     # galaxy-to-galaxy spread of the LLR
    real = pd.DataFrame({"id": np.arange(n), "llr": llr + (frac > 0) * rng.normal(2, 2, n), "truth_clump_frac": frac})
    twin = pd.DataFrame({"id": np.arange(n)[::-1], "llr": llr[::-1]})   # paired by id, not by row
    w = paired_wins(real, twin)
    assert w["n"] == int((frac > 0).sum())
    assert w["fraction"] > 0.75 and w["p"] < 1e-6
    assert clumpy_auc(real, twin)["auc"] < 0.6
    null = pd.DataFrame({"id": np.arange(n), "llr": llr + rng.normal(0, 2, n), "truth_clump_frac": frac})
    assert paired_wins(null, twin)["p"] > 0.001
    assert paired_wins(real.drop(columns="truth_clump_frac"), twin)["fraction"] is None


def test_the_baselines_are_judged_like_the_llr_and_failed_fits_are_left_out():
    from workflow_scripts.studies.zanisi21.metrics import baseline_entries, twin_rows
    rng = np.random.default_rng(12)
    n = 200
    frac = np.where(rng.uniform(size=n) < 0.3, 0.1, 0.0)
    base = rng.uniform(1.0, 2.0, n)
    ok = rng.uniform(size=n) > 0.1
    real = pd.DataFrame({"id": np.arange(n), "sersic_chi2_dof": base + 1.0 * (frac > 0), "smoothness": base,
                         "llr": base, "truth_clump_frac": frac, "ok": ok})
    real.loc[~ok, "sersic_chi2_dof"] = 100.0            # a failed fit's value is never used
    twin = pd.DataFrame({"id": np.arange(n), "sersic_chi2_dof": base, "smoothness": base, "llr": base, "ok": ok})
    out = baseline_entries(real, twin, "the twin")
    e = {x["id"]: x for x in out["entries"]}
    assert set(e) == {"baseline_sersic_chi2_auc_smooth_vs_real", "baseline_sersic_chi2_auc_clumpy_vs_twin",
                      "baseline_sersic_chi2_paired_wins_clumpy"}
    assert e["baseline_sersic_chi2_paired_wins_clumpy"]["ours"] == 1.0
    assert out["sersic_chi2_dof"]["paired_wins"]["n"] == int(((frac > 0) & ok).sum())
    assert e["baseline_sersic_chi2_auc_clumpy_vs_twin"]["ours"] > 0.99
    assert e["baseline_sersic_chi2_auc_smooth_vs_real"]["ours"] == pytest.approx(
        0.5 + np.mean((frac > 0)[ok]) / 2, abs=0.03)
    assert out["smoothness"]["paired_wins"]["fraction"] == 0.0     # identical: never above its twin
    rows = {r["detector"]: r for r in twin_rows(real, twin, "the twin")}
    assert len(rows) == 3 and rows["PixelCNN LLR, archetype denominator (low flags)"]["auc"] == pytest.approx(0.5)
    assert rows["chi2/dof of the single-Sersic fit, no learning (low flags)"]["paired_wins_clumpy"] == 1.0
    assert rows["chi2/dof of the single-Sersic fit, no learning (low flags)"]["scored"].startswith(f"{ok.sum()} ")


def test_bits_per_dim_of_per_pixel_log_likelihoods():
    lp = np.full((3, 4, 4), -np.log(2.0) * 2.5)
    assert bits_per_dim(lp) == pytest.approx(np.full(3, 2.5))


# ---------------------------------------------------------------------------------------- twin, config
def test_twin_survey_keeps_the_band_and_mag_band_and_switches_clumps_off():
    cfg = _config()
    spec = cfg["surveys"]["goodss"]
    tw = twin_survey("goodss", spec, ["F814W"])
    assert tw.band_names == [b for b in spec["bands"] if b in ("F814W", spec["embedded"]["mag_band"])]
    assert tw.embedded["clumps"] is None and tw.source == "embedded" and tw.name == "goodss"
    with pytest.raises(ConfigError, match="no band F999W"):
        twin_survey("goodss", spec, ["F999W"])


# ------------------------------------------------------------------- the anomaly study's objects (ours)
def _labelled_field(tmp_path) -> FieldData:
    """A 512^2 px field of small GalSim exponential galaxies on a 64 px grid (known fluxes, white noise); every fifth
    one a 'merger', every seventh an 'ero', the rest 'normal' (labels spread over the whole field)."""
    npix, scale, zp, sigma = 512, 0.03, 28.0, 0.002
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [214.9, 52.9]
    wcs.wcs.crpix = [npix / 2 + 0.5, npix / 2 + 0.5]
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    xs, ys = (g.ravel().astype(float) for g in np.meshgrid(np.arange(40, npix - 30, 64), np.arange(40, npix - 30, 64)))
    flux = np.full(xs.size, 2.0)
    img = galsim.ImageF(npix, npix, scale=scale)
    for x, y, f in zip(xs, ys, flux):
        galsim.Exponential(half_light_radius=0.06, flux=f).drawImage(
            img, center=galsim.PositionD(x + 1, y + 1), add_to_image=True, method="auto")
    data = img.array + np.random.default_rng(1).normal(0, sigma, img.array.shape)
    hdr = fits.Header({"FILTER": "F444W", "PHOTZP": zp, "BUNIT": "MJy/sr"})
    mosaic = Mosaic(data=data.astype(np.float32), wcs=wcs, header=hdr, rms=np.full(data.shape, sigma, np.float32))
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    i = np.arange(xs.size)
    label = np.where(i % 5 == 0, "merger", np.where(i % 7 == 0, "ero", "normal"))
    cat = pd.DataFrame({"id": i + 1, "ra": ra, "dec": dec, "mag_F444W": zp - 2.5 * np.log10(flux), "label": label})
    return FieldData(mosaic=mosaic, catalog=cat, image_file=str(tmp_path / "F444W.fits"),
                     catalog_file=str(tmp_path / "catalog.parquet"))


ANOMALY_STUDY = {"band": "F444W", "sample": {"mag_min": 18.0, "mag_max": 30.0}, "stamp_size": 32, "zoom": 0.5,
                 "validation_fraction": 0.3, "background": {"box": 64, "filter": 3},
                 "archetypes": {"n_range": [0.3, 6.0], "sky_thresh_sigma": 1.5, "sky_grow_px": 3}}


def test_anomaly_sets_train_on_normal_galaxies_only_and_score_every_labelled_one(tmp_path):
    fd = _labelled_field(tmp_path)
    sets, sky, summary = make_anomaly_sets({"f": fd}, ANOMALY_STUDY, seed=3)
    cat = fd.catalog
    train, test, anomalies = (sets[k].table for k in ("real_train", "real_test", "anomalies"))
    assert set(train["label"]) == set(test["label"]) == {"normal"}
    # every merger and ERO, wherever it lies (the training region included), and nothing else
    assert sorted(anomalies["id"]) == sorted(cat.loc[cat["label"] != "normal", "id"])
    assert anomalies["dec"].min() < train["dec"].max()
    # held out: the north, a stamp's width from the training galaxies; about the configured share of the normal ones
    assert test["dec"].min() > train["dec"].max()
    n_normal = int((cat["label"] == "normal").sum())
    assert len(train) + len(test) <= n_normal and 0.15 < len(test) / n_normal < 0.45
    assert summary["anomaly_labels"] == {"merger": int((cat["label"] == "merger").sum()),
                                         "ero": int((cat["label"] == "ero").sum())}
    assert sky["train"].shape == (len(train), 32, 32) and sky["test"].shape == (len(test), 32, 32)
    # the stamps are of the galaxies: the flux of a stamp is the galaxy's (exponential, hlr 2 px: all within 16 px)
    assert np.allclose(sets["anomalies"].cube.sum(axis=(1, 2, 3)), 2.0, rtol=0.1)


def test_anomaly_sets_need_a_labelled_catalogue_naming_it(tmp_path):
    fd = _labelled_field(tmp_path)
    fd.catalog = fd.catalog.drop(columns="label")
    with pytest.raises(StampError, match=r"catalog\.parquet: no 'label' column"):
        make_anomaly_sets({"f": fd}, ANOMALY_STUDY, seed=3)


def test_anomaly_aucs_recover_an_injected_separation_in_the_bright_sample():
    """Normal galaxies' scores N(0, 1); mergers' LLR N(-2, 1) (AUC Phi(2 / sqrt 2) = 0.921 for a low LLR flagging),
    EROs drawn as the normal galaxies (AUC 0.5); a faint population beyond auc_mag_max that would spoil both is cut."""
    rng = np.random.default_rng(0)
    n = 4000

    def table(label, llr_mean, mag):
        return pd.DataFrame({"label": label, "llr": rng.normal(llr_mean, 1, n), "llr_perturbed": rng.normal(0, 1, n),
                             "logp_real": rng.normal(0, 1, n), "mag_F444W": mag})

    normal = pd.concat([table("normal", 0.0, 25.0), table("normal", 10.0, 27.5)])
    anomalies = pd.concat([table("merger", -2.0, 25.0), table("ero", 0.0, 25.0), table("merger", 10.0, 27.5)])
    settings = {"survey": "ceers", "band": "F444W", "sample": {"mag_min": 18.0, "mag_max": 28.0}, "auc_mag_max": 26.0}
    found = anomaly_metrics(normal, anomalies, settings, seed=1, n_boot=50)
    assert found["n"] == {"normal": n, "ero": n, "merger": n}
    assert found["auc"]["llr"]["merger"]["auc"] == pytest.approx(0.921, abs=0.01)
    assert found["auc"]["llr"]["ero"]["auc"] == pytest.approx(0.5, abs=0.02)
    assert found["auc"]["logp_real"]["merger"]["auc"] == pytest.approx(0.5, abs=0.02)
    lo, hi = found["auc"]["llr"]["merger"]["p16"], found["auc"]["llr"]["merger"]["p84"]
    assert lo < found["auc"]["llr"]["merger"]["auc"] < hi and hi - lo < 0.02
    ids = [e["id"] for e in found["entries"]]
    assert ids == ["anomaly_ero_auc_llr", "anomaly_merger_auc_llr", "anomaly_ero_auc_likelihood",
                   "anomaly_merger_auc_likelihood"]
    assert [row["merger_auc"] for row in found["side_by_side"]][0] == found["auc"]["llr"]["merger"]["auc"]
    # the same magnitudes on both sides: re-weighting to them changes nothing
    assert found["auc"]["llr"]["merger"]["mag_matched"] == pytest.approx(found["auc"]["llr"]["merger"]["auc"])
    assert found["auc"]["llr"]["merger"]["mag_matched_n"] == [n, n]
    assert "F444W 18 <= mag < 26" in found["sample"]
    # the fits' baseline (a high chi2/dof flags), failed fits left out of both the AUC and the counts
    for t, mean in ((normal, 1.0), (anomalies, 1.0)):
        t["sersic_chi2_dof"] = rng.normal(mean, 0.1, len(t)) + 1.0 * t["label"].eq("merger").to_numpy()
        t["ok"] = rng.uniform(size=len(t)) > 0.2
        t.loc[~t["ok"], "sersic_chi2_dof"] = 1e6
    found = anomaly_metrics(normal, anomalies, settings, seed=1, n_boot=50)
    assert found["auc"]["sersic_chi2_dof"]["merger"]["auc"] > 0.99
    assert found["auc"]["sersic_chi2_dof"]["ero"]["auc"] == pytest.approx(0.5, abs=0.03)
    row = found["side_by_side"][-1]
    assert row["detector"] == "chi2/dof of the single-Sersic fit, no learning (high flags)"
    kept = int(normal.loc[normal["mag_F444W"] < 26, "ok"].sum())
    assert row["scored"].startswith(f"{kept} held-out normal galaxies") and "failed fits left out" in row["scored"]
    assert [e["id"] for e in found["entries"]][-2:] == ["anomaly_ero_auc_sersic_chi2", "anomaly_merger_auc_sersic_chi2"]


@pytest.mark.parametrize("change, message", [
    (lambda z, c: z.update(band="F999W"), "zanisi21.band"),
    (lambda z, c: z.update(zoom=0.3), "zoom"),
    (lambda z, c: z.update(sample={"mag_min": 25.0, "mag_max": 24.0}), "mag_min"),
    (lambda z, c: z.update(comparison={"kind": "survey"}), "comparison.survey"),
    (lambda z, c: c["surveys"]["goodss"].update(source="download") or c["surveys"]["goodss"].pop("embedded"),
     "no embedded block"),
    (lambda z, c: z["comparison_bins"].update(mag=[24.0, 23.0]), "increasing"),
    (lambda z, c: z["anomalies"].update(band="F814W"), "anomalies.band"),
    (lambda z, c: c["surveys"]["ceers"].update(source="download"), "zanisi21.anomalies: null"),
    (lambda z, c: z["anomalies"].update(fields=["nope"]), "anomalies.fields"),
])
def test_config_checks_name_the_key(change, message):
    cfg = copy.deepcopy(_config())
    validate_config(cfg)
    change(cfg["zanisi21"], cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_each_study_model_starts_at_its_own_training_pixels(tmp_path):
    """``model.output_start: marginal``: the model file carries the start fitted to the images it trained on (the
    shared model: both sets together); ``none``: the plain start."""
    from workflow_scripts.train import load_model

    rng = np.random.default_rng(4)
    sky = (-0.9 + 0.03 * rng.standard_normal((24, 1, 8, 8))).astype(np.float32)
    bright = sky.copy()
    bright[:, :, 3:5, 3:5] += 0.8
    model = {**_config()["zanisi21"]["model"], "filters": 4, "epochs": 1, "batch_size": 8}
    assert model["output_start"] == "marginal"   # the study's default
    starts = {}
    for name, data, labels in (("sky", sky, None), ("bright", bright, None),
                               ("shared", np.concatenate([sky, bright]), np.repeat([0, 1], len(sky)))):
        res = train_pixelcnn(model, data, bits=8, seed=1, device="cpu", out_dir=tmp_path / name, progress=False,
                             labels=labels)
        starts[name] = load_model(res.model_path, device="cpu").arch["output_start"]
        assert starts[name] == pytest.approx(marginal_start(torch.from_numpy(data), 8, model["n_mix"]))
    assert starts["sky"] != pytest.approx(starts["bright"])
    res = train_pixelcnn({**model, "output_start": "none"}, sky, bits=8, seed=1, device="cpu",
                         out_dir=tmp_path / "plain", progress=False)
    assert "output_start" not in load_model(res.model_path, device="cpu").arch
