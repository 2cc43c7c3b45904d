"""The workflow as users drive it: dry runs of the paper preset, single targets, and a real ci-preset run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from workflow_scripts import io
from workflow_scripts.config import lineage_hash, load_config
from workflow_scripts.data.psf import measure_fwhm
from workflow_scripts.surveys import surveys_from_config

from .conftest import REPO, run_snakemake

PAPER = str(REPO / "presets" / "paper.yaml")
CI = str(REPO / "presets" / "ci.yaml")


def job_counts(stdout: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table of a dry run into {rule: count}."""
    counts = {}
    table = stdout.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def test_paper_preset_dry_run_builds_the_real_data_dag(tmp_path):
    result = run_snakemake("-n", "--cores", "8", "all", "--configfile", PAPER, workdir=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # 7 GOODS-S mosaics + Guo+13 catalogue + photo-z catalogue, 6 CEERS bands, 3 XDF bands
    assert counts["download"] == 7 + 2 + 6 + 3
    assert counts["normalise_goodss"] == counts["normalise_ceers"] == counts["normalise_xdf"] == 1
    assert counts["psf"] == 7 + 6 + 3
    assert "simulate_goodss" not in counts
    # the anomaly study reads the downloaded CEERS boundary like the embedded one: 6 matched bands, 1 pointing
    assert counts["pearce_casey23_match"] == 6 and counts["pearce_casey23_catalog"] == 1
    assert counts["pearce_casey23_train"] == 1 and counts["pearce_casey23_predict"] == 3
    assert counts["smith_geach19_train"] == counts["smith_geach19_fields"] == 1   # from the downloaded XDF
    # the likelihood-ratio study: real GOODS-S against its embedded simulation without clumps, three PixelCNNs and
    # ours, the shared one conditioned on the set
    assert counts["zanisi21_twin"] == 1 and counts["zanisi21_train"] == 4 and counts["zanisi21_score"] == 3
    # the deblending study's protocol "as coded" beside ours: the authors' low-res images and their detector
    assert counts["hemmati22_lowres_as_coded"] == counts["hemmati22_detect_as_coded"] == 1
    assert not (tmp_path / "data").exists(), "a dry run must not create data"


def planned_jobs(stdout: str) -> list[dict[str, object]]:
    """The jobs of a dry run's listing that show their details (rule, threads: 1 when not shown, priority: 0 when
    not shown); jobs with a ``message`` (simulations, figures) are listed by their message only."""
    jobs: list[dict[str, object]] = []
    for line in stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append({"rule": match.group(1), "threads": 1, "priority": 0})
        elif jobs and (match := re.match(r"^\s+(threads|priority): (\d+)$", line)):
            jobs[-1][match.group(1)] = int(match.group(2))
    return jobs


def test_demo_on_two_cores_plans_one_thread_per_job_and_the_psfs_first(tmp_path):
    """On 2 cores a 2-thread job starts only when both cores are idle, i.e. behind every 1-thread job: the demo's
    photometry once waited until its 30th minute. And every study needs the PSFs, so they are scheduled first."""
    result = run_snakemake("-n", "--cores", "2", "all", workdir=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result.stdout)
    rules = {j["rule"] for j in jobs}
    assert {"hemmati22_photometry", "pearce_casey23_predict", "zanisi21_score", "hemmati22_train"} <= rules, rules
    assert [j["rule"] for j in jobs if j["threads"] != 1] == []
    psf = {j["priority"] for j in jobs if j["rule"] == "psf"}
    assert len(psf) == 1 and min(psf) > max(j["priority"] for j in jobs if j["rule"] != "psf")
    train = {j["rule"]: j["priority"] for j in jobs if j["rule"].endswith("_train")}
    assert train["hemmati22_train"] > max(v for k, v in train.items() if k != "hemmati22_train")
    # then the trainings with the longer tails (prediction, a field and its catalogue), the PixelCNNs last
    assert min(train["pearce_casey23_train"], train["smith_geach19_train"]) > train["zanisi21_train"]


def test_one_target_runs_only_its_upstream_rules(tmp_path):
    result = run_snakemake("-n", "--cores", "2", "results/data/xdf/hudf/psf/F775W.json", "--configfile", CI,
                           workdir=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {"psf": 1, "simulate_xdf": 1, "total": 2}


@pytest.mark.slow
def test_ci_preset_end_to_end(ci_run: Path):
    config = load_config(CI)
    surveys = surveys_from_config(config)
    for survey in surveys.values():
        expected_hash = lineage_hash(config, [survey.name])  # CFGHASH: the survey description and the seed
        for field in survey.fields:
            assert (ci_run / f"results/figures/data/{survey.name}_{field}_overview.png").stat().st_size > 10_000
            catalog_file = io.catalog_path(ci_run / config["data_dir"], survey.name, field)
            catalog = io.read_catalog(catalog_file)
            assert io.read_provenance(catalog_file)["config_hash"] == expected_hash
            for band in survey.bands:
                mosaic = io.read_mosaic(io.band_path(ci_run / config["data_dir"], survey.name, field, band))
                assert mosaic.data.shape == (survey.embedded["npix"],) * 2
                assert mosaic.pixel_scale == pytest.approx(survey.pixel_scale, rel=1e-6)
                assert mosaic.zeropoint == survey.band(band).zeropoint
                assert mosaic.header["CFGHASH"] == expected_hash
                assert mosaic.header["SEED"] == config["seed"]
                assert np.isfinite(mosaic.data).all()
            assert catalog["star"].sum() >= config["psf"]["min_stars"]
    # every rule left a log and a benchmark
    assert list((ci_run / "results/logs").rglob("*.log"))
    assert list((ci_run / "results/benchmarks").rglob("*.tsv"))


@pytest.mark.slow
def test_ci_psfs_match_the_true_psfs(ci_run: Path):
    """The EPSF measured from the stars of each embedded mosaic has the FWHM of the true (pixel-convolved) PSF."""
    config = load_config(CI)
    for survey in surveys_from_config(config).values():
        for field in survey.fields:
            for band in survey.bands:
                summary = json.loads((ci_run / f"results/data/{survey.name}/{field}/psf/{band}.json").read_text())
                assert summary["n_stars"] >= config["psf"]["min_stars"]
                true_psf = fits.getdata(ci_run / config["data_dir"] / survey.name / field / "truth" / f"psf_{band}.fits")
                true_fwhm = measure_fwhm(true_psf) * survey.pixel_scale
                assert summary["fwhm_arcsec"] == pytest.approx(true_fwhm, rel=0.05), (survey.name, band)


@pytest.mark.slow
def test_truncated_mosaic_fails_its_job_clearly_and_leaves_no_output(ci_run: Path, tmp_path: Path):
    shutil.copytree(ci_run / "data", tmp_path / "data")
    mosaic = tmp_path / "data/ci/xdf/hudf/F775W.fits"
    raw = mosaic.read_bytes()
    mosaic.write_bytes(raw[: len(raw) // 3])
    target = "results/data/xdf/hudf/psf/F775W.json"
    result = run_snakemake("--cores", "1", target, "--configfile", CI, workdir=tmp_path, timeout=300)
    assert result.returncode != 0
    log = (tmp_path / "results/logs/psf/xdf_hudf_F775W.log").read_text()
    assert "F775W.fits: not a readable FITS file" in log and "truncated" in log
    assert not (tmp_path / target).exists()
    assert not (tmp_path / "results/data/xdf/hudf/psf/F775W.fits").exists()


def test_one_figure_runs_only_its_upstream_rules(tmp_path):
    result = run_snakemake("-n", "--cores", "2", "hemmati22_fig5", "--configfile", CI, workdir=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # Fig 5 needs the GOODS-S field and its PSFs, the samples, the SR-GANs and detection; nothing of CEERS/XDF,
    # no DCGAN, no overview figure
    n_srgan = sum(spec["kind"] == "srgan" for spec in load_config(CI)["hemmati22"]["models"].values())
    assert counts["simulate_goodss"] == 1 and counts["psf"] == 7
    assert counts["hemmati22_train"] == n_srgan and counts["hemmati22_infer"] == 2 * n_srgan
    assert not {"simulate_ceers", "simulate_xdf", "overview", "hemmati22_fig4"} & set(counts)


@pytest.mark.slow
def test_ci_deblending_study_end_to_end(ci_run: Path):
    config = load_config(CI)
    study = config["hemmati22"]
    metrics = json.loads((ci_run / "results/hemmati22/metrics.json").read_text())
    from workflow_scripts.metrics import validate_metrics
    validate_metrics(metrics, "results/hemmati22/metrics.json")   # the shared schema: {study, entries, ...}
    entries = {e["id"]: e for e in metrics["entries"]}
    assert metrics["study"] == "hemmati22" and {
        "detection_fraction_hi", "detection_fraction_lo", "detection_fraction_gan", "detection_fraction_gan7",
        "false_positive_rate_gan", "photometry_improvement"} <= set(entries)
    assert entries["detection_fraction_hi"]["paper"] == 0.80 and entries["photometry_improvement"]["paper"] == ">10x"
    assert entries["detection_fraction_hi"]["ours"] == metrics["by_method"]["hi"]["detection_fraction"]
    assert metrics["n_blends"] == study["n_blends"] and metrics["n_isolated"] == study["n_isolated"]
    assert metrics["paper"]["detection_fraction"] == {"hi": 0.80, "lo": 0.10, "gan": 0.50}
    ours = metrics["by_method"]
    assert set(ours) == {"hi", "lo", "hi7", "lo7", *[m for m, s in study["models"].items() if s["kind"] == "srgan"]}
    # resolution matters: HST-like images separate far more blends than HSC-like ones (Hemmati+22: 80 vs 10 %)
    assert ours["hi"]["detection_fraction"] > ours["lo"]["detection_fraction"] + 0.3
    # single smooth galaxies are not split into two (paper: ~1 % false positives); a galaxy with star-forming clumps
    # (surveys.goodss.embedded.clumps) may be: its clumps are real peaks (the share is reported in the README)
    import pandas as pd
    from workflow_scripts.studies.hemmati22.blends import read_blends
    iso = read_blends(ci_run / "results/hemmati22/isolated_hi.fits").truth
    catalog = pd.read_parquet(ci_run / "data/ci/goodss/goodss/catalog.parquet")
    clumpy = iso.merge(catalog[["id", "truth_clump_frac"]], on="id", how="left")["truth_clump_frac"].to_numpy() > 0
    fp = pd.read_parquet(ci_run / "results/hemmati22/detections_isolated.parquet")["false_positive_hi"].to_numpy()
    assert (~clumpy).sum() >= 20 and fp[~clumpy].mean() < 0.05
    assert ours["hi"]["false_positive_rate"] == pytest.approx(fp.mean())
    # the protocol "as coded" beside ours: its entries, its low-res images (the same blends), both samples scored
    coded = metrics["as_coded"]
    assert {"detection_fraction_hi_as_coded", "detection_fraction_lo_as_coded", "detection_fraction_gan_as_coded",
            "false_positive_rate_gan_as_coded", "photometry_improvement_as_coded",
            "photometry_improvement_as_coded_true_positions"} <= set(entries)
    assert coded["photometry"]["n_subset"] >= coded["photometry"]["n_measured"] >= 0
    assert "a third" in entries["photometry_improvement_as_coded"]["what"] and "photom.py" in coded["photometry"]["psf"]
    dom = pd.read_parquet(ci_run / "results/hemmati22/as_coded/photometry_dominant.parquet")
    assert len(dom) == 3 * coded["photometry"]["n_subset"]        # three runs of the subset, for Fig 7
    binned = pd.read_parquet(ci_run / "results/hemmati22/as_coded/detection_fraction.parquet")
    assert {"hi", "lo"} <= set(binned["method"]) and set(binned["parameter"]) == set(
        pd.read_parquet(ci_run / "results/hemmati22/detection_fraction.parquet")["parameter"])
    assert entries["detection_fraction_lo_as_coded"]["ours"] == coded["by_method"]["lo"]["detection_fraction"]
    one_band = [m for m, s in study["models"].items() if s["kind"] == "srgan" and s["bands"] == "one"]
    assert set(coded["by_method"]) == {"hi", "lo", *one_band}
    assert coded["n_blends"] == study["n_blends"] and coded["n_isolated"] == study["n_isolated"]
    from workflow_scripts.imaging.stamps import read_cutouts
    lo_coded = read_cutouts(ci_run / "results/hemmati22/as_coded/blends_lo.fits")
    lo_ours = read_cutouts(ci_run / "results/hemmati22/blends_lo.fits")
    assert lo_coded.cube.shape[0] == lo_ours.cube.shape[0] and lo_coded.bands == [study["band"]]
    # the authors' low-res blends are sharper than HSC's: their peaks stand higher above the mean
    b = lo_ours.bands.index(study["band"])
    assert lo_coded.cube[:, 0].max(axis=(-2, -1)).mean() > lo_ours.cube[:, b].max(axis=(-2, -1)).mean()
    for name in ("fig2_dcgan_samples", "fig3_superresolution", "fig4_blends_peaks", "fig5_detection_fraction",
                 "fig6_som", "fig8_multiband_peaks", "fig9_one_vs_seven_bands"):
        for ext in ("png", "pdf"):
            assert (ci_run / f"results/figures/hemmati22/{name}.{ext}").stat().st_size > 5_000
    for model in study["models"]:
        losses = (ci_run / f"results/hemmati22/models/{model}/losses.csv").read_text().splitlines()
        assert len(losses) == 1 + study["models"][model]["epochs"]


@pytest.mark.slow
def test_ci_blend_photometry_end_to_end(ci_run: Path):
    import pandas as pd

    from workflow_scripts.photometry import RESULT_COLUMNS

    config = load_config(CI)
    n_blends = config["hemmati22"]["n_blends"]
    for run in ("lo_at_lo", "lo_at_gan", "hi_at_hi"):
        path = ci_run / f"results/hemmati22/photometry/{run}.parquet"
        table = pd.read_parquet(path)
        assert set(RESULT_COLUMNS) | {"blend_id", "mag", "truth_object", "true_flux", "dominant"} <= set(table.columns)
        assert set(table["blend_id"]) == set(range(n_blends))          # every blend has a row, flagged or fitted
        assert (table["run"] == run).all()
        assert io.read_provenance(path)["config_hash"] == lineage_hash(config, ["goodss", "hsc"])
        objects = table[table["object"] >= 0]
        assert (table.loc[table["object"] < 0, "flags"] > 0).all()      # no position: a flagged row
        if run != "lo_at_gan":                                           # (the ci GANs are barely trained)
            assert len(objects) >= n_blends * 0.9
            assert objects["converged"].mean() > 0.8
            ok = objects[objects["converged"]]
            assert (ok["flux"] > 0).mean() > 0.9 and (ok["flux_err"] > 0).all()
            assert ok["chi2_dof"].between(0.3, 5).mean() > 0.9
    metrics = json.loads((ci_run / "results/hemmati22/metrics.json").read_text())
    phot = metrics["photometry"]
    assert phot["paper"]["improvement_factor_min"] == 10
    runs = phot["ours"]["runs"]
    assert set(runs) == {"lo_at_lo", "lo_at_gan", "hi_at_hi"}
    # the hi-res reference recovers the dominant galaxy's magnitude; low-res positions merge blends: brighter
    assert runs["hi_at_hi"]["measured_fraction"] > 0.7 and abs(runs["hi_at_hi"]["bias"]) < 0.15
    assert runs["lo_at_lo"]["measured_fraction"] > 0.7 and runs["lo_at_lo"]["bias"] < runs["hi_at_hi"]["bias"]
    for ext in ("png", "pdf"):
        assert (ci_run / f"results/figures/hemmati22/fig7_photometry.{ext}").stat().st_size > 5_000


def test_ci_anomaly_study_end_to_end(ci_run: Path):
    config = load_config(CI)
    study = config["pearce_casey23"]
    base = ci_run / "results/pearce_casey23"
    metrics = json.loads((base / "metrics.json").read_text())
    from workflow_scripts.metrics import validate_metrics
    validate_metrics(metrics, "results/pearce_casey23/metrics.json")
    entries = {e["id"]: e for e in metrics["entries"]}
    assert metrics["study"] == "pearce_casey23" and {
        "sed_error_median", "ero_sed_error_median", "merger_auc", "ero_auc", "baseline_merger_auc",
        "sed_error_median_calibrated", "merger_auc_calibrated"} <= set(entries)
    # the catalogue was made by sep on the matched detection band and carries the embedded truth labels
    field = study["fields"][0]
    cat = io.read_catalog(base / field / "catalog.parquet")
    assert {"normal", "merger", "ero", "star"} <= set(cat["label"])
    for band in study["input_bands"] + study["output_bands"]:
        matched = io.read_mosaic(ci_run / config["data_dir"] / "derived/pearce_casey23" / field / f"{band}.fits")
        assert matched.header["PSFMATCH"] == study["psf_target"] and matched.header["BKGSUB"]
    # three disjoint cutout sets; no anomaly in training; the SED table scores validation + anomalies
    from workflow_scripts.imaging.stamps import read_cutouts
    sets = {s: read_cutouts(base / f"cutouts_{s}.fits") for s in ("train", "validation", "anomalies")}
    assert all(cs.size == study["cutout_size"] and len(cs.bands) == 6 for cs in sets.values())
    assert not sets["train"].table["label"].isin(["ero", "merger"]).any()
    assert set(sets["anomalies"].table["label"]) <= {"ero", "merger"}
    ids = [set(cs.table["id"]) for cs in sets.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2])
    table = __import__("pandas").read_parquet(base / "sed_errors.parquet")
    assert len(table) == sets["validation"].n + sets["anomalies"].n
    assert np.isfinite(table[["cgan_sed_error", "baseline_sed_error", "cgan_calibrated_sed_error"]].to_numpy()).all()
    assert read_cutouts(base / "predicted_train.fits").n == sets["train"].n   # the cGAN's bias is measured there
    losses = (base / "model/losses.csv").read_text().splitlines()
    assert len(losses) == 1 + study["model"]["epochs"]
    for name in ("fig1a_sed_error", "fig1b_eros", "fig1c_ero_sed", "fig1d_mergers", "fig1e_merger_sed", "roc"):
        for ext in ("png", "pdf"):
            assert (ci_run / f"results/figures/pearce_casey23/{name}.{ext}").stat().st_size > 5_000


def test_ci_deep_field_study_end_to_end(ci_run: Path):
    config = load_config(CI)
    study = config["smith_geach19"]
    base = ci_run / "results/smith_geach19"
    metrics = json.loads((base / "metrics.json").read_text())
    from workflow_scripts.metrics import validate_metrics
    validate_metrics(metrics, "results/smith_geach19/metrics.json")
    entries = {e["id"]: e for e in metrics["entries"]}
    assert {f"ks_p_{b}" for b in study["bands"]} | {"counts_ratio", "seamless_max_abs_diff",
                                                    "tessellation_peak_rss_mb", "realisation_seconds"} <= set(entries)
    assert entries["seamless_max_abs_diff"]["ours"] < 1e-5            # tiled == one-shot over the interior
    ensemble = json.loads((base / "model/ensemble.json").read_text())["snapshots"]
    assert len(ensemble) == study["ensemble"]["members"]
    survey = surveys_from_config(config)[study["survey"]]
    for r in range(study["realisations"]):
        for band in study["bands"]:
            path = ci_run / config["data_dir"] / "derived/smith_geach19/fields" / f"r{r}_{band}.fits"
            with fits.open(path) as hdul:
                hdr = hdul[0].header
                assert hdul[0].data.shape == (study["field_size"],) * 2 and np.isfinite(hdul[0].data).all()
                assert hdr["FILTER"] == band and hdr["PHOTZP"] == survey.band(band).zeropoint and hdr["CTYPE1"]
    real = __import__("pandas").read_parquet(base / "catalog_real.parquet")
    assert len(real) > 20 and {f"mag_{b}" for b in study["bands"]} <= set(real.columns)
    # the catalogue mock: as many fields as realisations, drawn from the real catalogue, extracted the same way
    mock = __import__("pandas").read_parquet(base / "catalog_mock.parquet")
    assert set(mock["realisation"]) == set(range(study["realisations"]))
    assert 0.5 < entries["mock_counts_ratio"]["ours"] < 1.5 and 0 <= entries["null_ks_p_min"]["ours"] <= 1
    with fits.open(ci_run / config["data_dir"] / "derived/smith_geach19/mock" / f"r0_{study['bands'][0]}.fits") as hdul:
        assert hdul[0].data.shape == (study["field_size"],) * 2 and "mock" in hdul[0].header.comments["GENERATD"]
    key = (base / "fig3_key.txt").read_text().splitlines()[1:]  # row column kind, one per thumbnail
    assert key and {line.split()[2] for line in key} <= {"real", "generated"}
    for name in ("fig1_training_evolution", "fig2_generated_vs_real", "fig3_thumbnails", "fig4_magnitudes",
                 "fig5_counts_colours_sizes"):
        for ext in ("png", "pdf"):
            assert (ci_run / f"results/figures/smith_geach19/{name}.{ext}").stat().st_size > 5_000


@pytest.mark.slow
def test_ci_likelihood_ratio_study_end_to_end(ci_run: Path):
    config = load_config(CI)
    study = config["zanisi21"]
    base = ci_run / "results/zanisi21"
    metrics = json.loads((base / "metrics.json").read_text())
    from workflow_scripts.imaging.stamps import read_cutouts
    from workflow_scripts.metrics import validate_metrics
    validate_metrics(metrics, "results/zanisi21/metrics.json")
    entries = {e["id"]: e for e in metrics["entries"]}
    assert {"bits_per_dim_real", "bits_per_dim_archetype", "llr_auc_smooth_vs_real", "likelihood_auc_smooth_vs_real",
            "background_llr_fraction"} <= set(entries)
    assert 0 < entries["bits_per_dim_real"]["ours"] < study["model"]["bits"] + 2
    assert 0 <= entries["background_llr_fraction"]["ours"] <= 1
    # the twin is the same galaxies: paired by id, cut at the same positions, without clumps
    real = read_cutouts(base / "stamps_real_test.fits")
    twin = read_cutouts(base / "stamps_other.fits")
    assert real.table["id"].tolist() == twin.table["id"].tolist()
    assert np.allclose(real.table["x"], twin.table["x"])
    assert (twin.table["truth_clump_frac"] == 0).all() and (real.table["truth_clump_frac"] > 0).any()
    # only the galaxies with clumps differ from their twins: the AUC's ceiling, and the paired sign test over them
    share = float(np.mean(real.table["truth_clump_frac"] > 0))
    assert entries["llr_auc_ceiling"]["ours"] == pytest.approx(0.5 + share / 2)
    assert 0 <= entries["llr_paired_wins_clumpy"]["ours"] <= 1
    arche = read_cutouts(base / "stamps_archetype_train.fits")
    summary = json.loads((base / "archetypes.json").read_text())
    assert arche.n == summary["train"]["archetypes"] == summary["train"]["galaxies"] - summary["train"]["fit_failed"]
    scores = __import__("pandas").read_parquet(base / "scores_real_test.parquet")
    assert len(scores) == real.n and np.isfinite(scores[["logp_real", "logp_archetype", "llr"]].to_numpy()).all()
    assert np.allclose(scores["llr"], scores["logp_real"] - scores["logp_archetype"], rtol=1e-4, atol=1e-2)
    # ours: one PixelCNN conditioned on the set, scored under both classes, judged like the paper's LLR
    assert study["shared_model"]
    assert np.allclose(scores["llr_shared"], scores["logp_shared_real"] - scores["logp_shared_archetype"],
                       rtol=1e-4, atol=1e-2)
    assert (scores["llr_shared"] != 0).any()   # trained: the classes no longer score alike
    assert {"llr_shared_auc_smooth_vs_real", "llr_shared_background_fraction", "llr_shared_paired_wins_clumpy",
            "bits_per_dim_shared"} <= set(entries)
    from workflow_scripts.train.inference import load_model
    assert load_model(base / "model_shared/model.pt", device="cpu").n_classes == 2
    with fits.open(base / "scores_real_test.fits") as hdul:
        side = study["stamp_size"] * study["zoom"]
        assert hdul["LOGP_REAL"].data.shape == (real.n, side, side) and hdul["SOURCE"].data.any()
    for name in ("fig1_likelihood_examples", "fig2_pixel_maps", "fig3_distributions", "fig4_matched_bins"):
        for ext in ("png", "pdf"):
            assert (ci_run / f"results/figures/zanisi21/{name}.{ext}").stat().st_size > 5_000
