"""Shared fixtures: the repository, the configuration, and one end-to-end run of the ci preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from workflow_scripts.config import lineage_hash, load_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def step_params(config: dict, survey: str, **extra) -> SimpleNamespace:
    """The params a rule of rules/data.smk gives its step for one survey (survey_params, lineage), plus ``extra``."""
    return SimpleNamespace(survey={"name": survey, **config["surveys"][survey]},
                           lineage={"seed": config["seed"], "config_hash": lineage_hash(config, [survey])}, **extra)


@pytest.fixture
def config() -> dict:
    return load_config()


def run_snakemake(*args: str, workdir: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Run the workflow of this repository in `workdir` (outputs land there, the repository stays clean)."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> Path:
    """Run `all` on the ci preset once per test session; return the working directory it wrote."""
    workdir = tmp_path_factory.mktemp("ci_run")
    result = run_snakemake("--cores", "2", "all", "--configfile", str(REPO / "presets" / "ci.yaml"),
                           workdir=workdir)
    if result.returncode != 0:
        pytest.fail(f"ci preset run failed:\n{result.stdout[-5000:]}\n{result.stderr[-8000:]}")
    return workdir


@pytest.fixture
def one_thread_seeded():
    """torch on one thread (tests share 2 cores) with the global RNG seeded; the thread count restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
