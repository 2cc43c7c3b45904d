"""Shared fixtures: the repository, the configuration, and one end-to-end run of the ci preset."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from workflow_scripts.config import lineage_hash, load_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The tests that read the ci run, then the SLURM module, go first, in their order. Under pytest-xdist
    (``make test``: ``-n 2 --dist load``) the first chunk of consecutive tests goes to one worker, so that worker
    runs the ci preset at once and then these tests, while the other runs everything else; one SLURM cluster. (The
    ci run's lock keeps any other split correct, only slower.) Without xdist only the order changes."""
    serial = [it for it in items if "ci_run" in getattr(it, "fixturenames", ()) or it.path.name == "test_slurm.py"]
    ids = {id(it) for it in serial}
    items[:] = serial + [it for it in items if id(it) not in ids]


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


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive lock on ``lock`` (created if missing) across processes: the pytest-xdist workers."""
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> Path:
    """Run `all` on the ci preset once per test session; return the working directory it wrote.

    Under pytest-xdist (``make test`` runs 2 workers) the run is shared: the first worker to ask runs it in the
    session's common temporary folder while the others wait on a lock, then all read the same files (tests copy or
    hard-link them, never write into them). A failed run fails every test that asks, with its log."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder all workers of this session share
    workdir, done, failed = root / "ci_run", root / "ci_run.ok", root / "ci_run.failed"
    with _exclusive(root / "ci_run.lock"):
        if failed.exists():
            pytest.fail(failed.read_text())
        if not done.exists():
            workdir.mkdir(exist_ok=True)
            result = run_snakemake("--cores", "2", "all", "--configfile", str(REPO / "presets" / "ci.yaml"),
                                   workdir=workdir)
            if result.returncode != 0:
                failed.write_text(f"ci preset run failed:\n{result.stdout[-5000:]}\n{result.stderr[-8000:]}")
                pytest.fail(failed.read_text())
            done.touch()
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
