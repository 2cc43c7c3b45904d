"""Recovery without flags: after a run is killed mid-job, the README's command run again (after the `--unlock` the
README gives for the stale lock a kill leaves) finishes the work: the workflow profile's rerun-incomplete remakes the
files the killed job left, instead of stopping with IncompleteFilesException."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REPO, SNAKEMAKE
from .test_workflow import CI

TARGET = "results/data/xdf/hudf/psf/F775W.json"


@pytest.mark.slow
def test_run_again_after_a_kill_finishes_without_flags(tmp_path: Path):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1", TARGET,
           "--configfile", CI]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    field = tmp_path / "data/ci/xdf/hudf"
    deadline = time.monotonic() + 120
    while not list(field.glob("*.fits")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)  # the simulator writes its files one by one: stop it when some are there
    assert first.poll() is None, "the simulation finished before it could be interrupted"
    os.killpg(first.pid, signal.SIGKILL)  # no clean-up at all: the worst case of Ctrl-C, a kill or a lost node
    first.communicate(timeout=120)
    assert not (tmp_path / TARGET).exists()
    unlock = subprocess.run([*cmd, "--unlock"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-2000:]

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "IncompleteFilesException" not in again.stderr
    assert (tmp_path / TARGET).exists()
