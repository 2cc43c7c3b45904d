"""Nothing stale: on a finished ci run, a config change or an edit of library code plans exactly the jobs it
affects (dry runs), and a job refuses inputs that come from different runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from astropy.wcs import WCS

from workflow_scripts import io
from workflow_scripts.steps._common import run

from .conftest import REPO, run_snakemake
from .test_workflow import CI, job_counts

STEPS = REPO / "workflow_scripts" / "steps"
#: what the rules need of the repository to run from a copy
REPO_PARTS = ("Snakefile", "config.yaml", "rules", "schemas", "presets", "profiles", "workflow_scripts", "envs")


def planned(workdir: Path, *args: str, overlay: Path | None = None, snakefile_repo: Path = REPO) -> dict[str, int]:
    """Rules (and job counts) a dry run of `all` on the ci preset (plus ``overlay``) would run in ``workdir``."""
    configfiles = [CI, str(overlay)] if overlay else [CI]  # one --configfile with several files: a second flag
    cmd = ["-n", "--cores", "2", "all", *args, "--configfile", *configfiles]  # would replace the first
    if snakefile_repo != REPO:
        cmd = ["-s", str(snakefile_repo / "Snakefile"), *cmd]
    result = run_snakemake(*cmd, workdir=workdir, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    if "Job stats:" not in result.stdout:
        return {}
    counts = job_counts(result.stdout)
    counts.pop("total", None)
    return counts


def test_no_step_reads_the_config_directly():
    """Every config value a rule uses reaches its step through params (so that changing it reruns the job)."""
    offenders = [str(p.relative_to(REPO)) for p in STEPS.rglob("*.py") if "snakemake.config" in p.read_text()]
    assert not offenders, f"steps reading snakemake.config instead of params: {offenders}"


@pytest.mark.slow
def test_a_finished_run_plans_nothing(ci_run: Path):
    assert planned(ci_run) == {}


@pytest.mark.slow
def test_a_new_seed_plans_the_simulators_and_everything_after(ci_run: Path):
    counts = planned(ci_run, "--config", "seed=7")
    fresh = planned(ci_run, "--forceall")
    assert counts == fresh
    assert {"simulate_goodss", "simulate_ceers", "simulate_xdf"} <= counts.keys()


@pytest.mark.slow
def test_survey_overlays_plan_their_simulator_and_only_what_reads_it(ci_run: Path, tmp_path: Path):
    npix = tmp_path / "npix.yaml"
    npix.write_text(yaml.safe_dump({"surveys": {"xdf": {"embedded": {"npix": 384}}}}))
    counts = planned(ci_run, overlay=npix)
    assert counts.get("simulate_xdf") == 1 and counts.get("psf") == 3 and counts.get("overview") == 1
    assert "simulate_goodss" not in counts and not any(r.startswith("hemmati22") for r in counts)

    depth = tmp_path / "depth.yaml"
    depth.write_text(yaml.safe_dump({"surveys": {"goodss": {"bands": {"F160W": {"depth": 27.0}}}}}))
    counts = planned(ci_run, overlay=depth)
    assert counts.get("simulate_goodss") == 1 and "hemmati22_detect" in counts
    assert "simulate_xdf" not in counts and "simulate_ceers" not in counts


@pytest.mark.slow
def test_editing_a_library_function_plans_exactly_the_jobs_that_import_it(ci_run: Path, tmp_path: Path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for part in REPO_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, copy / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, copy / part)
    assert planned(ci_run, snakefile_repo=copy) == {}, "a copy of the unchanged code must plan nothing"

    module = copy / "workflow_scripts" / "studies" / "hemmati22" / "som.py"
    text = module.read_text()
    marker = "def train_som("
    assert marker in text
    module.write_text(text.replace(marker, "# edited by the test\n" + marker, 1))
    counts = planned(ci_run, snakefile_repo=copy)
    # imported by the SOM step and by the figure step (its fig6 loads the SOM): those jobs, and what needs them
    assert {"hemmati22_som", "hemmati22_fig6", "hemmati22_fig2", "hemmati22_fig5"} <= counts.keys()
    untouched = {"simulate_goodss", "simulate_ceers", "simulate_xdf", "psf", "overview", "hemmati22_cutouts",
                 "hemmati22_samples", "hemmati22_train", "hemmati22_infer", "hemmati22_detect",
                 "hemmati22_photometry", "hemmati22_metrics", "hemmati22_dcgan_samples", "scorecard"}
    assert not untouched & counts.keys(), f"jobs that do not import the module were planned: {counts}"


def _fits(path: Path, seed: int, config_hash: str) -> str:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-1.0e-5, 1.0e-5]
    io.write_mosaic(path, np.zeros((8, 8), np.float32), wcs, telescope="HST", instrument="ACS", band="F775W",
                    bunit="electrons/s", zeropoint=25.0, prov=io.provenance(config_hash, seed, "embedded"))
    return str(path)


def test_check_lineage_refuses_mixed_runs_naming_both_files(tmp_path: Path):
    a = _fits(tmp_path / "a.fits", 1, "goodss=aaaa0000")
    b = _fits(tmp_path / "b.fits", 2, "goodss=aaaa0000")
    c = _fits(tmp_path / "c.fits", 1, "goodss=bbbb1111;hsc=cccc2222")
    d = _fits(tmp_path / "d.fits", 1, "goodss=aaaa0000;hsc=cccc2222")
    e = _fits(tmp_path / "e.fits", 1, "xdf=dddd3333")
    io.check_lineage([a, d, e])  # same seed; goodss agrees; xdf shares no survey with the others
    with pytest.raises(io.BoundaryError, match=r"b\.fits has SEED=2 but .*a\.fits has SEED=1"):
        io.check_lineage([a, b])
    with pytest.raises(io.BoundaryError, match=r"c\.fits descends from survey goodss bbbb1111 but .*a\.fits"):
        io.check_lineage([a, c])
    with pytest.raises(io.BoundaryError, match="SEED=1 but this job's config has SEED=7"):
        io.check_lineage([a], {"seed": 7, "config_hash": "goodss=aaaa0000"})


def test_a_step_refuses_inputs_of_two_runs_before_it_starts(tmp_path: Path, capsys):
    files = [_fits(tmp_path / "x.fits", 3, "xdf=00001111"), _fits(tmp_path / "y.fits", 4, "xdf=00001111")]
    called = []
    snakemake = SimpleNamespace(input=files, log=[], rule="test_rule", params=SimpleNamespace())
    with pytest.raises(SystemExit):
        run(lambda sm, log: called.append(1), snakemake)
    assert not called
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "y.fits has SEED=4 but" in err[0] and "x.fits has SEED=3" in err[0]
