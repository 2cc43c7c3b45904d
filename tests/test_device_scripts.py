"""The scripts prepared for a lent GPU machine (scripts/device/), on CPU: the Spatial-GAN trained for a time budget
keeps to it and writes only what the device tool can bring back; ``evaluate`` draws exactly the fields of the
pipeline's rule from the same generators, and reports the pipeline's numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from workflow_scripts.config import load_config

from .conftest import REPO

SCRIPT = REPO / "scripts" / "device" / "sgan.py"
CI = str(REPO / "presets" / "ci.yaml")


def run_script(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.parametrize("minutes,epochs", [(0.001, 1), (5.0, 2)], ids=["budget-ends-it", "epochs-end-it"])
def test_train_stops_at_its_budget_and_keeps_the_last_generators(ci_run, tmp_path, minutes, epochs):
    """The ci preset trains 2 epochs: a budget shorter than one epoch stops after the first, a long one at the
    config's epochs. Out: the last ``members`` generators, the losses and the summary, nothing else."""
    out = tmp_path / "out"
    run_script("train", "--field", str(ci_run / "results" / "smith_geach19" / "training_field.fits"), "--preset", CI,
               "--minutes", str(minutes), "--members", "1", "--device", "cpu", "--work", str(tmp_path / "work"),
               "--out", str(out))
    ens = json.loads((out / "ensemble.json").read_text())
    assert ens["epochs"] == epochs and ens["snapshots"] == [f"generator_epoch{epochs:04d}.pt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["ensemble.json", "losses.csv", *ens["snapshots"]])
    assert ens["steps"] == epochs * 4 and ens["device"] == "cpu"  # 32 crops per epoch, batch 8
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + epochs


def test_evaluate_draws_the_pipelines_field_and_gives_its_numbers(ci_run, tmp_path, one_thread_seeded):
    spec = importlib.util.spec_from_file_location("device_sgan", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = load_config(CI)
    study = config["smith_geach19"]
    res = ci_run / "results" / "smith_geach19"
    ens = json.loads((res / "model" / "ensemble.json").read_text())
    meta = json.loads((res / "training_field.json").read_text())
    field = module.draw_field(res / "model" / ens["snapshots"][0], study, config["seed"], 0, meta)
    for i, band in enumerate(study["bands"]):
        written = fits.getdata(ci_run / "data" / "ci" / "derived" / "smith_geach19" / "fields" / f"r0_{band}.fits")
        np.testing.assert_array_equal(field[i], written)

    png = tmp_path / "fields.png"
    out = run_script("evaluate", "--workdir", str(ci_run), "--snapshots", str(res / "model"), "--configfile", CI,
                     "--threads", "1", "--png", str(png)).stdout
    metrics = {e["id"]: e["ours"] for e in json.loads((res / "metrics.json").read_text())["entries"]}
    assert f"counts ratio {metrics['counts_ratio']:.4g} " in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
