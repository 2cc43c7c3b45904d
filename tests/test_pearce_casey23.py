"""The anomaly study (Pearce-Casey+23) against known truth: sep detection and aperture photometry of GalSim sources
of known flux, truth labels, the sky split, the scaling round trip, SED errors, the photometric baseline, the AUC,
the metrics file, and the errors bad inputs raise."""

from __future__ import annotations

import copy

import galsim
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from workflow_scripts.config import load_config, validate_config
from workflow_scripts.detection.sources import DetectionError, aperture_fluxes, detect_sources
from workflow_scripts.errors import ConfigError, PipelineError
from workflow_scripts.imaging.split import cutout_gap_arcsec
from workflow_scripts.imaging.stamps import CutoutSet, read_cutouts, write_cutouts
from workflow_scripts.io import Mosaic, provenance
from workflow_scripts.metrics import validate_metrics
from workflow_scripts.studies.pearce_casey23 import catalog as pc_catalog, cgan, samples, sed
from workflow_scripts.studies.pearce_casey23.metrics import compute_metrics

SCALE = 0.03
NPIX = 512
ZP = 28.08652
SIGMA = 0.002  # per-pixel noise (image unit)
BANDS = ["F115W", "F150W", "F200W", "F277W", "F356W", "F444W"]
STUDY = load_config()["pearce_casey23"]


def make_wcs(npix: int = NPIX) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [214.9, 52.9]
    wcs.wcs.crpix = [npix / 2 + 0.5, npix / 2 + 0.5]
    wcs.wcs.cdelt = [-SCALE / 3600, SCALE / 3600]
    return wcs


def mosaic(data: np.ndarray, band: str, wcs: WCS, rms: float = SIGMA) -> Mosaic:
    hdr = fits.Header({"FILTER": band, "PHOTZP": ZP, "BUNIT": "MJy/sr", "TELESCOP": "JWST", "INSTRUME": "NIRCAM"})
    return Mosaic(data=data.astype(np.float32), wcs=wcs, header=hdr, rms=np.full(data.shape, rms, np.float32))


@pytest.fixture(scope="module")
def field():
    """Point-like and small exponential sources of known flux on a grid (no blending), white noise."""
    rng = np.random.default_rng(3)
    psf = galsim.Moffat(beta=3.0, fwhm=0.145)
    xs, ys = np.meshgrid(np.arange(48, NPIX - 40, 52), np.arange(48, NPIX - 40, 52))
    xs = xs.ravel() + rng.uniform(-0.5, 0.5, xs.size)
    ys = ys.ravel() + rng.uniform(-0.5, 0.5, ys.size)
    flux = 10 ** rng.uniform(-0.3, 1.0, xs.size)  # S/N in a 10 px aperture ~ 14-300
    img = galsim.ImageF(NPIX, NPIX, scale=SCALE)
    for x, y, f in zip(xs, ys, flux):
        gal = galsim.Convolve(galsim.Exponential(half_light_radius=0.03, flux=f), psf)
        gal.drawImage(img, center=galsim.PositionD(x + 1, y + 1), add_to_image=True, method="auto")
    noiseless = img.array.copy()
    noisy = noiseless + rng.normal(0, SIGMA, noiseless.shape)
    return {"x": xs, "y": ys, "flux": flux, "noiseless": noiseless, "noisy": noisy, "wcs": make_wcs()}


def test_detection_finds_every_injected_source_and_apertures_measure_their_flux(field):
    table, bkg = detect_sources(field["noisy"].astype(">f4"), np.full((NPIX, NPIX), SIGMA, ">f4"),  # FITS order
                                thresh_sigma=2.0, minarea=5)
    assert bkg.global_rms == pytest.approx(SIGMA, rel=0.1)
    d = np.hypot(table["x"].to_numpy()[:, None] - field["x"], table["y"].to_numpy()[:, None] - field["y"])
    found = d.min(axis=0) < 1.0
    assert found.all(), f"{(~found).sum()} of {found.size} injected sources missed"
    # photometry at the true positions: the noiseless image's aperture flux within 3 sigma of the noise
    true_ap, _, _ = aperture_fluxes(field["noiseless"], np.ones((NPIX, NPIX)), field["x"], field["y"], 10)
    flux, err, _ = aperture_fluxes(field["noisy"], np.full((NPIX, NPIX), SIGMA), field["x"], field["y"], 10)
    assert err == pytest.approx(SIGMA * np.sqrt(np.pi * 100), rel=0.02)
    pull = (flux - true_ap) / err
    assert np.abs(pull).max() < 4 and abs(np.mean(pull)) < 0.5
    # a 0.3" aperture holds most of the light of these compact sources (Moffat beta 3 wings hold the rest)
    assert np.median(true_ap / field["flux"]) == pytest.approx(0.93, abs=0.05)


def test_detection_on_an_empty_image_names_the_file():
    blank = np.random.default_rng(0).normal(0, SIGMA, (128, 128))
    with pytest.raises(DetectionError, match="F277W.fits: no source found"):
        detect_sources(blank, None, thresh_sigma=50.0, minarea=5, what="F277W.fits")


def test_catalogue_labels_from_truth_and_barro_colours(field):
    wcs = field["wcs"]
    # LW bands 4x brighter than SW: every source has F277W - F444W = 0 and a normal SED
    mosaics = {b: mosaic(field["noisy"] * (4 if b in ("F277W", "F356W", "F444W") else 1), b, wcs) for b in BANDS}
    ra, dec = wcs.all_pix2world(field["x"], field["y"], 0)
    truth = pd.DataFrame({"id": np.arange(len(ra)), "ra": ra, "dec": dec,
                          "label": np.where(np.arange(len(ra)) % 5 == 0, "merger", "normal")})
    truth = truth.iloc[1:]  # the first source has no truth entry: its detection is "unmatched"
    cat, summary = pc_catalog.build_catalog(mosaics, STUDY, field="f", field_index=2, truth=truth)
    assert (cat["id"] // pc_catalog.ID_STRIDE == 2).all() and cat["id"].is_unique
    first = np.hypot(cat["x"] - field["x"][0], cat["y"] - field["y"][0]).idxmin()
    assert cat.loc[first, "label"] == "unmatched"
    assert summary["labels"]["merger"] == (np.arange(1, len(ra)) % 5 == 0).sum()
    assert summary["completeness"]["by_label"]["normal"]["found"] == 1.0
    colour = cat["mag_F277W"] - cat["mag_F444W"]
    assert np.nanmedian(np.abs(colour)) < 0.05 and not cat["barro_ero"].any()
    # make F444W 2 mag brighter than F277W: compact, flat in SW -> Barro EROs
    cat2 = cat.copy()
    cat2["mag_F444W"] = cat2["mag_F277W"] - 2.0
    assert pc_catalog.barro_ero(cat2).sum() == (cat2["mag_F444W"] < 28).sum()


def test_split_keeps_cutouts_of_training_and_validation_apart_and_anomalies_out():
    rng = np.random.default_rng(1)
    n = 400
    cat = pd.DataFrame({"id": np.arange(n), "ra": 214.9 + rng.uniform(0, 0.02, n),
                        "dec": 52.9 + rng.uniform(0, 0.02, n),
                        "label": rng.choice(["normal", "normal", "normal", "merger", "ero"], n)})
    parts = samples.split_field(cat, 0.25, 90, SCALE)
    gap = cutout_gap_arcsec(90, SCALE)
    assert parts["train"]["dec"].max() + gap / 3600 <= parts["validation"]["dec"].min() + 1e-12
    assert not parts["train"]["label"].isin(["merger", "ero"]).any()
    assert not parts["validation"]["label"].isin(["merger", "ero"]).any()
    assert set(parts["anomalies"]["label"]) == {"merger", "ero"}
    assert len(parts["anomalies"]) == cat["label"].isin(["merger", "ero"]).sum()


def test_scaling_round_trip_and_training_range():
    rng = np.random.default_rng(2)
    sw = rng.normal(0, SIGMA, (20, 3, 32, 32)).astype(np.float32)
    sw[:, :, 16, 16] += rng.uniform(0.01, 5.0, (20, 3))
    lw = 3 * sw
    sc = cgan.fit_scalings(sw, lw)
    x = cgan.to_model_space(sw, sc["input"]).numpy()
    assert np.abs(x).max() <= 1.0 + 1e-6           # the training data lie in the generator's tanh range
    back = sc["input"].inverse(x)
    assert np.allclose(back, sw, rtol=1e-5, atol=1e-7)
    d = cgan.scalings_to_dict(sc, ["a", "b", "c"], ["d", "e", "f"], 0)
    sc2 = cgan.scalings_from_dict(d)
    assert np.allclose(sc2["output"].forward(lw), sc["output"].forward(lw))


def test_sed_error_of_a_known_offset():
    true = np.full((4, 3), 2.0)
    err = np.full((4, 3), 0.01)
    pred = true * 10 ** (-0.4 * np.array([0.0, 0.1, 0.2, 0.3]))[:, None]
    out = sed.sed_errors(pred, true, err, [ZP] * 3, ["F277W", "F356W", "F444W"])
    assert out["sed_error"].to_numpy() == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=1e-9)
    assert out["dmag_F444W"].to_numpy() == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=1e-9)  # predicted fainter: > 0
    with pytest.raises(PipelineError, match="flux errors"):
        sed.sed_errors(pred, true, np.zeros_like(err), [ZP] * 3, ["F277W", "F356W", "F444W"])


def test_stamp_fluxes_equal_mosaic_apertures(field):
    x0, y0 = int(field["x"][5]) - 45, int(field["y"][5]) - 45
    stamp = field["noisy"][y0:y0 + 90, x0:x0 + 90][None, None]
    f = sed.stamp_fluxes(stamp, np.array([field["x"][5] - x0]), np.array([field["y"][5] - y0]), 10)
    ref, _, _ = aperture_fluxes(field["noisy"], np.ones((NPIX, NPIX)), field["x"][5:6], field["y"][5:6], 10)
    assert f[0, 0] == pytest.approx(ref[0], rel=1e-9)


@pytest.mark.parametrize("kind", ["gradient_boosting", "knn"])
def test_baseline_learns_a_colour_relation_and_misses_an_unseen_one(kind):
    rng = np.random.default_rng(4)
    n = 600
    inb, outb = ["F115W", "F150W", "F200W"], ["F277W", "F356W", "F444W"]
    zps = {b: ZP for b in inb + outb}
    m = rng.uniform(22, 26, n)
    slope = rng.uniform(-0.3, 0.3, n)  # SED slope: visible in the SW colours, continued into the LW bands
    table = pd.DataFrame({"id": np.arange(n)})
    for i, b in enumerate(inb + outb):
        table[f"flux_{b}"] = 10 ** (-0.4 * (m + slope * i - ZP))
        table[f"fluxerr_{b}"] = 1e-4 * table[f"flux_{b}"]
    train, test = table.iloc[:500], table.iloc[500:]
    models = sed.fit_baseline(train, inb, outb, zps, {"kind": kind, "n_neighbors": 10}, seed=0)
    pred = sed.baseline_fluxes(models, test, inb, outb, zps)
    true = test[[f"flux_{b}" for b in outb]].to_numpy()
    err = test[[f"fluxerr_{b}" for b in outb]].to_numpy()
    normal = sed.sed_errors(pred, true, err, [ZP] * 3, outb)["sed_error"]
    assert normal.median() < 0.1
    red = test.copy()  # an ERO-like LW excess that no SW colour announces
    for b in outb:
        red[f"flux_{b}"] *= 10 ** (0.4 * 1.5)
    red_true = red[[f"flux_{b}" for b in outb]].to_numpy()
    anomalous = sed.sed_errors(pred, red_true, err, [ZP] * 3, outb)["sed_error"]
    assert sed.auc(anomalous.to_numpy(), normal.to_numpy()) > 0.99


def _truth_table(rng, n, label="normal"):
    """Truth magnitudes of galaxies whose SED is a power law: its slope shows in the SW colours and continues into
    the LW bands, so the LW magnitudes follow from the SW ones exactly."""
    m, slope = rng.uniform(22, 26, n), rng.uniform(-0.3, 0.3, n)
    table = pd.DataFrame({"id": np.arange(n), "label": label})
    for i, b in enumerate(["F115W", "F150W", "F200W", "F277W", "F356W", "F444W"]):
        table[f"truth_mag_{b}"] = m + slope * i
    return table


def test_noise_floor_matches_noisy_photometry():
    rng = np.random.default_rng(10)
    snr = np.array([[5.0, 10.0, 40.0], [20.0, 20.0, 20.0]])
    true, err = np.full(snr.shape, 100.0), 100.0 / snr
    draws = true[None] + err[None] * rng.normal(size=(20000, *snr.shape))  # a perfect prediction, observed
    dmag = np.abs(-2.5 * np.log10(np.maximum(draws, err[None]) / true[None])).mean(axis=2).mean(axis=0)
    floor = sed.noise_sed_error(true, err)
    assert floor[1] == pytest.approx(1.0857 * np.sqrt(2 / np.pi) / 20, rel=1e-3)
    assert floor == pytest.approx(dmag, rel=0.06)  # the small-error approximation, even at S/N 5


def test_photometry_at_infinite_sn_learns_the_population_and_flags_an_unseen_sed():
    inb, outb = ["F115W", "F150W", "F200W"], ["F277W", "F356W", "F444W"]
    rng = np.random.default_rng(8)
    train = pd.concat([_truth_table(rng, 400), _truth_table(rng, 50, "star").assign(truth_mag_F444W=30.0)],
                      ignore_index=True)  # stars (here absurd) are not the population: left out of the fit
    models = sed.fit_truth_photometry(train, inb, outb, {"kind": "gradient_boosting"}, seed=0)
    test = _truth_table(rng, 100)
    normal = sed.truth_photometry_errors(models, test, inb, outb)
    assert normal["sed_error"].median() < 0.05
    red = test.copy()  # the same SW light, every LW band 1 mag brighter: an SED the population never has
    for b in outb:
        red[f"truth_mag_{b}"] -= 1.0
    out = sed.truth_photometry_errors(models, red, inb, outb)
    assert out["sed_error"].median() == pytest.approx(1.0, abs=0.05)
    assert (out["dmag_F444W"] > 0.9).all()  # predicted fainter than it is
    assert sed.auc(out["sed_error"].to_numpy(), normal["sed_error"].to_numpy()) == 1.0
    test.loc[3, "truth_mag_F150W"] = np.nan  # an unmatched detection: no truth, no score
    assert np.isnan(sed.truth_photometry_errors(models, test, inb, outb)["sed_error"][3])
    # real data (no truth columns) and too few normal galaxies: no floor
    assert sed.fit_truth_photometry(train.drop(columns="truth_mag_F277W"), inb, outb,
                                    {"kind": "gradient_boosting"}, 0) is None
    assert sed.fit_truth_photometry(_truth_table(rng, sed.TRUTH_MIN_TRAIN - 1), inb, outb, {"kind": "knn"}, 0) is None


def test_auc_known_cases():
    assert sed.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert sed.auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert sed.auc(np.ones(5), np.ones(5)) == 0.5
    assert np.isnan(sed.auc(np.array([]), np.ones(3)))


def _table(rng, n_norm=60, n_merger=20, n_ero=10):
    rows = []
    for label, n, err, s in (("normal", n_norm, 0.05, "validation"), ("merger", n_merger, 0.5, "anomalies"),
                             ("ero", n_ero, 0.05, "anomalies")):
        for _ in range(n):
            e = abs(rng.normal(err, 0.02))
            rows.append({"set": s, "label": label, "mag_F444W": rng.uniform(22, 25.9), "cgan_sed_error": e,
                         "cgan_chi2": e * 100, "baseline_sed_error": abs(rng.normal(0.1, 0.05)),
                         "baseline_chi2": 1.0, **{f"{m}_dmag_{b}": e for m in ("cgan", "baseline")
                                                  for b in ("F277W", "F356W", "F444W")}})
    return pd.DataFrame(rows)


def test_metrics_of_a_known_table():
    table = _table(np.random.default_rng(5))
    metrics = compute_metrics(table, STUDY, seed=1)
    validate_metrics(metrics, "metrics.json")
    e = {x["id"]: x for x in metrics["entries"]}
    assert "truth_photometry_merger_auc" not in e  # no truth (real data): no floor
    assert "noise_sed_error_median" not in e  # a table without the column
    assert e["merger_auc"]["ours"] > 0.99 and e["merger_auc"]["holds"] is True
    assert 0.3 < e["ero_auc"]["ours"] < 0.7 and e["ero_auc"]["holds"] is True
    assert 0.3 < e["baseline_merger_auc"]["ours"] < 0.7
    assert e["sed_error_median"]["ours"] == pytest.approx(0.05, abs=0.01) and e["sed_error_median"]["holds"]
    # the median's interval: 60 galaxies with errors |N(0.05, 0.02)|, standard error 1.25 x 0.02 / sqrt(60)
    lo, hi = metrics["cgan"]["sed_error_median_interval_68"]
    assert lo < e["sed_error_median"]["ours"] < hi and (hi - lo) / 2 == pytest.approx(0.0032, rel=0.4)
    assert f"68 % bootstrap interval {lo:.3f}-{hi:.3f}" in e["sed_error_median"]["what"]
    lo, hi = metrics["cgan"]["auc"]["ero"]["p16"], metrics["cgan"]["auc"]["ero"]["p84"]
    assert lo < e["ero_auc"]["ours"] < hi


def test_metrics_of_the_floor_at_infinite_sn():
    table = _table(np.random.default_rng(5))
    rng = np.random.default_rng(9)
    # mergers with normal total SEDs (as the simulator makes them), EROs far off; an unmatched normal has no truth
    floor = np.where(table["label"].eq("ero"), rng.uniform(1.0, 2.0, len(table)), rng.uniform(0.0, 0.1, len(table)))
    floor[0] = np.nan
    table["truth_photometry_sed_error"] = floor
    table["noise_sed_error"] = 0.02
    for b in ("F277W", "F356W", "F444W"):
        table[f"truth_photometry_dmag_{b}"] = floor
    metrics = compute_metrics(table, STUDY, seed=1)
    validate_metrics(metrics, "metrics.json")
    e = {x["id"]: x for x in metrics["entries"]}
    assert e["truth_photometry_ero_auc"]["ours"] == 1.0
    assert 0.3 < e["truth_photometry_merger_auc"]["ours"] < 0.7
    assert e["truth_photometry_sed_error_median"]["ours"] == pytest.approx(0.05, abs=0.02)
    assert e["merger_auc"]["ours"] > 0.99  # the other detectors are untouched
    assert e["noise_sed_error_median"]["ours"] == pytest.approx(0.02)
    rows = {r["detector"]: r for r in metrics["side_by_side"]["anomalies"]}
    assert rows["photometry-only LW SED error at infinite S/N (truth magnitudes), ours (high flags)"]["ero_auc"] == 1.0


def test_config_checks_name_the_bad_key():
    config = load_config()
    bad = copy.deepcopy(config)
    bad["pearce_casey23"]["output_bands"] = ["F277W", "F356W", "F480M"]
    with pytest.raises(ConfigError, match="pearce_casey23.output_bands = 'F480M' is not a band of ceers"):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["pearce_casey23"]["input_bands"] = ["F115W", "F277W"]
    with pytest.raises(ConfigError, match="F277W is both an input and an output band"):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["pearce_casey23"]["fields"] = ["nircam9"]
    with pytest.raises(ConfigError, match="nircam9"):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["pearce_casey23"]["core_radius_px"] = 12
    with pytest.raises(ConfigError, match="core_radius_px = 12 must be smaller than aperture_radius_px"):
        validate_config(bad)
    for wings in (60, 21):
        bad = copy.deepcopy(config)
        bad["pearce_casey23"]["psf_wings"] = wings
        with pytest.raises(ConfigError, match=f"psf_wings = {wings} must be odd and at least the EPSF stamp of ceers"):
            validate_config(bad)
    bad = copy.deepcopy(config)
    bad["pearce_casey23"]["test_time_dihedral"] = 3
    with pytest.raises(ConfigError, match=r"pearce_casey23.test_time_dihedral = 3 is not one of \[1, 2, 4, 8\]"):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["pearce_casey23"]["model"]["reference_band"] = "F277W"
    with pytest.raises(ConfigError, match="reference_band = 'F277W' is not one of the input_bands"):
        validate_config(bad)
    assert cgan.reference_index(config["pearce_casey23"]["model"], ["F115W", "F150W", "F200W"]) == 2
    assert cgan.reference_index({**config["pearce_casey23"]["model"], "reference_band": None}, ["F115W"]) is None


def test_missing_band_and_nan_cutouts_are_refused_naming_the_file(tmp_path):
    rng = np.random.default_rng(6)
    table = pd.DataFrame({"id": np.arange(4), "ra": np.zeros(4), "dec": np.zeros(4)})
    cube = rng.normal(size=(4, 2, 16, 16)).astype(np.float32)
    cs = CutoutSet(cube=cube, bands=["F115W", "F277W"], table=table, pixel_scale=SCALE, zeropoints=[ZP, ZP])
    with pytest.raises(PipelineError, match="band 'F150W' is not in this cutout set"):
        cgan.split_bands(cs, ["F115W", "F150W"], ["F277W"])
    cube[2, 1, 3, 3] = np.nan
    path = tmp_path / "cutouts_validation.fits"
    write_cutouts(path, CutoutSet(cube=cube, bands=cs.bands, table=table, pixel_scale=SCALE,
                                  zeropoints=[ZP, ZP]), provenance("abc", 1, "embedded"))
    with pytest.raises(PipelineError, match="cutouts_validation.fits: 1 of 4 stamps have NaN"):
        read_cutouts(path)


def test_as_coded_detached_generator_step_gets_no_adversarial_gradient():
    import torch

    from workflow_scripts.train.loop import TrainConfig
    from workflow_scripts.train.objectives.base import StepContext

    torch.manual_seed(0)
    model = {**STUDY["model"], "base": 4, "depth": 3, "n_dropout": 1, "dropout": 0.0}
    grads = {}
    for detached in (False, True):
        torch.manual_seed(0)
        obj = cgan.build_objective({**model, "adversarial_gradient": not detached}, 3, 3)
        obj.reset_parameters()
        cfg = TrainConfig(epochs=1, batch_size=4, l1_weight=100.0, device="cpu")
        obj.check(cfg)
        opts = obj.optimizers(cfg)
        scalers = {k: torch.amp.GradScaler("cpu", enabled=False) for k in opts}
        ctx = StepContext(device=torch.device("cpu"), amp=False, config=cfg, modules=obj.modules, optimizers=opts,
                          scalers=scalers, parameters={k: list(m.parameters()) for k, m in obj.modules.items()})
        x, y = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
        out = obj.step((x, y), ctx)
        grads[detached] = torch.cat([p.grad.flatten() for p in obj.generator.parameters() if p.grad is not None])
        assert torch.isfinite(out["loss_g_adv"])
        if detached:
            assert obj.fingerprint()["adversarial_gradient"] is False
            with pytest.raises(ConfigError, match="l1_weight must be > 0"):
                obj.check(TrainConfig(epochs=1, batch_size=4, l1_weight=0.0))
    # the same weights and batch: the two generator gradients differ by exactly the adversarial term's
    assert not torch.allclose(grads[False], grads[True])


def _blob_set(mags, lw_excess, label, rng, size=31):
    """Gaussian sources of magnitude ``mags`` (flat SED, the LW bands ``lw_excess`` mag brighter) in six bands."""
    bands = ["F115W", "F150W", "F200W", "F277W", "F356W", "F444W"]
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((xx - size // 2) ** 2 + (yy - size // 2) ** 2) / (2 * 2.0 ** 2))
    blob /= blob.sum()
    flux = 10 ** (-0.4 * (np.asarray(mags)[:, None] - ZP)) * 10 ** (0.4 * np.outer(lw_excess, [0, 0, 0, 1, 1, 1]))
    cube = (flux[:, :, None, None] * blob).astype(np.float32)
    table = pd.DataFrame({"id": np.arange(len(mags)), "label": label, "xc": size // 2, "yc": size // 2})
    for i, b in enumerate(bands):
        table[f"flux_{b}"] = flux[:, i]
        table[f"fluxerr_{b}"] = 1e-3 * flux[:, i]
        table[f"mag_{b}"] = np.asarray(mags) - 2.5 * np.log10(10 ** (0.4 * np.asarray(lw_excess))) * (i >= 3)
    return CutoutSet(cube=cube, bands=bands, table=table, pixel_scale=0.03, zeropoints=[ZP] * 6)


def _biased_prediction(cs, shift=lambda m: np.where(m < 24, 0.6, 0.2)):
    """A "cGAN" that predicts the LW bands of a flat SED, fainter by ``shift(mag)`` mag (brighter: worse)."""
    m = cs.table["mag_F115W"].to_numpy()
    pred = cs.cube[:, :3].copy() * 10 ** (-0.4 * shift(m))[:, None, None, None]
    return CutoutSet(cube=pred, bands=["F277W", "F356W", "F444W"], table=cs.table, pixel_scale=0.03,
                     zeropoints=[ZP] * 3)


def test_calibration_takes_out_the_bias_measured_on_the_training_set():
    rng = np.random.default_rng(12)
    train = _blob_set(rng.uniform(22, 26, 300), np.zeros(300), "normal", rng)
    val = _blob_set(rng.uniform(22, 26, 80), np.zeros(80), "normal", rng)
    anomalies = _blob_set(rng.uniform(22, 26, 40), np.full(40, 0.3), "merger", rng)   # a 0.3 mag LW excess
    study = {**STUDY, "aperture_radius_px": 10, "baseline": {"kind": "knn", "n_neighbors": 10}}
    sets = {"validation": (val, _biased_prediction(val)), "anomalies": (anomalies, _biased_prediction(anomalies))}
    table = sed.score_sets(study, train, sets, seed=0, train_pred=_biased_prediction(train))
    normal = table[table["set"] == "validation"]
    merger = table[table["set"] == "anomalies"]
    assert normal["cgan_sed_error"].median() > 0.15                 # the bias, 0.2-0.6 mag
    assert normal["cgan_calibrated_sed_error"].median() < 0.05       # taken out by the training set's bias
    calibrated = merger["cgan_calibrated_sed_error"].to_numpy(), normal["cgan_calibrated_sed_error"].to_numpy()
    assert sed.auc(*calibrated) > 0.95
    assert sed.auc(merger["cgan_sed_error"].to_numpy(), normal["cgan_sed_error"].to_numpy()) < 0.9
    assert "cgan_calibrated_sed_error" not in sed.score_sets(study, train, sets, seed=0).columns
    # the fitted bias is the median per magnitude bin, constant beyond the ends
    tab = sed.fit_bias(np.array([20.1, 20.2, 20.3, 21.1, 21.2, 21.3]), np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0]),
                       min_count=3)
    assert sed.bias_at(tab, np.array([19.0, 20.2, 21.2, 23.0])) == pytest.approx([1.0, 1.0, 2.0, 2.0])
    assert sed.bias_at(sed.fit_bias(np.array([20.0]), np.array([1.0])), np.array([20.0])) == pytest.approx([0.0])


def _cored_set(n, core_share, label, size=41):
    """Gaussian galaxies (sigma 4 px) alike in every band; the LW bands put ``core_share`` of their flux in a compact
    core (sigma 1 px) at the centre; and the "cGAN" prediction: the LW flux drawn with the SW morphology."""
    bands = ["F115W", "F150W", "F200W", "F277W", "F356W", "F444W"]
    yy, xx = np.mgrid[:size, :size]
    c = size // 2

    def gauss(s):
        g = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * s**2))
        return g / g.sum()
    body, core = gauss(4.0), gauss(1.0)
    lw = (1 - core_share) * body + core_share * core
    cube = np.stack([body, body, body, lw, lw, lw])[None].repeat(n, axis=0).astype(np.float32) * 100.0
    table = pd.DataFrame({"id": np.arange(n), "label": label, "xc": float(c), "yc": float(c),
                          **{f"mag_{b}": 24.0 for b in bands}})
    true = CutoutSet(cube=cube, bands=bands, table=table, pixel_scale=0.03, zeropoints=[ZP] * 6)
    pred = CutoutSet(cube=cube[:, :3].copy(), bands=bands[3:], table=table, pixel_scale=0.03, zeropoints=[ZP] * 3)
    return true, pred


def test_core_fractions_of_a_gaussian_and_the_core_excess_of_a_red_core():
    true, pred = _cored_set(2, 0.0, "normal")
    frac = sed.core_fractions(true.cube, np.array([20.0, 20.0]), np.array([20.0, 20.0]), 3.3, 10.0)
    want = (1 - np.exp(-3.3**2 / 32)) / (1 - np.exp(-10.0**2 / 32))        # a Gaussian of sigma 4 px
    assert np.allclose(frac, want, rtol=0.01)
    with pytest.raises(PipelineError, match="core radius"):
        sed.core_fractions(true.cube, np.array([20.0]), np.array([20.0]), 10.0, 10.0)
    scores = {}
    for share, label in ((0.0, "normal"), (0.3, "merger")):
        t, p = _cored_set(3, share, label)
        xy = t.table["xc"].to_numpy(float)
        scores[label] = sed.core_scores(t.cube, p.cube, xy, xy, [0, 1, 2], [3, 4, 5], 3.3, 10.0)
    assert np.allclose(scores["normal"].to_numpy(), 0.0, atol=1e-6)          # no colour structure: nothing flagged
    red = scores["merger"]
    # the LW core fraction of the body (sigma 4) plus the core (sigma 1, 30 % of the light), less the body's alone
    def enclosed(r, s):
        return 1 - np.exp(-r**2 / (2 * s**2))
    lw = (0.7 * enclosed(3.3, 4) + 0.3 * enclosed(3.3, 1)) / (0.7 * enclosed(10, 4) + 0.3 * enclosed(10, 1))
    assert np.allclose(red["cgan_core_excess"], lw - want, rtol=0.03)
    assert np.allclose(red["gradient_core_excess"], red["cgan_core_excess"])


def test_the_core_detectors_reach_the_metrics_and_the_side_by_side_table():
    rng = np.random.default_rng(13)
    table = _table(rng)
    n = len(table)
    is_merger = table["label"].eq("merger").to_numpy()
    table["cgan_core_excess"] = rng.normal(0, 0.01, n) + 0.1 * is_merger
    table["gradient_core_excess"] = rng.normal(0, 0.01, n)
    metrics = compute_metrics(table, STUDY, seed=1)
    validate_metrics(metrics, "metrics.json")
    e = {x["id"]: x for x in metrics["entries"]}
    assert e["merger_auc_core"]["ours"] > 0.99 and 0.3 < e["merger_auc_gradient"]["ours"] < 0.7
    assert {"ero_auc_core", "ero_auc_gradient"} <= set(e)
    rows = {r["detector"]: r for r in metrics["side_by_side"]["anomalies"]}
    assert rows["cGAN LW core excess, true - predicted, ours (high flags)"]["merger_auc"] > 0.99
    plain = compute_metrics(_table(np.random.default_rng(13)), STUDY, seed=1)
    assert "merger_auc_core" not in {x["id"] for x in plain["entries"]} and "core" not in plain


def test_predict_with_the_dihedral_mean_turns_with_its_input(tmp_path):
    """``test_time_dihedral``: a (randomly initialised, so not equivariant) U-Net's predictions averaged over the 8
    transforms of each input turn exactly with the input, through the scaling and its inverse; one copy is the
    plain single pass."""
    import torch

    from workflow_scripts.imaging.augment import dihedral
    from workflow_scripts.train.inference import save_model

    torch.manual_seed(1)
    model = {**STUDY["model"], "base": 4, "depth": 3, "n_dropout": 1}
    obj = cgan.build_objective(model, 3, 3)  # direct prediction (a reference band starts as its copy: equivariant)
    obj.reset_parameters()
    path = save_model(obj.generator, tmp_path / "generator.pt")
    rng = np.random.default_rng(3)
    sw = rng.normal(0, SIGMA, (3, 3, 24, 24)).astype(np.float32)
    sw[:, :, 10:13, 14:16] += rng.uniform(0.01, 1.0, (3, 3, 1, 1))  # an off-centre source
    sc = cgan.fit_scalings(sw, 2 * sw)
    single = cgan.predict(path, sw, sc, device="cpu")
    assert np.array_equal(cgan.predict(path, sw, sc, device="cpu", dihedral=1), single)
    mean8 = cgan.predict(path, sw, sc, device="cpu", dihedral=8)
    assert not np.allclose(mean8, single, rtol=1e-3)  # the network alone is not equivariant
    for k in (1, 5):
        turned = cgan.predict(path, np.ascontiguousarray(dihedral(sw, k)), sc, device="cpu", dihedral=8)
        assert np.allclose(turned, dihedral(mean8, k), rtol=1e-5, atol=1e-9)
