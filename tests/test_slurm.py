"""The workflow on a real SLURM cluster: a single-node cluster started by scripts/slurm/cluster.sh (slurmctld, slurmd
and munge from the Debian packages, one pretend GPU), the ci preset driven by the SLURM executor plugin with
profiles/slurm.

* the GPU part of one figure's DAG (Fig 3: SR-GAN training, inference, the figure) runs as SLURM jobs, one per
  rule job, on top of the local ci run's upstream files (data boundary, PSFs, cutouts, samples: CPU jobs that
  would only add minutes of queueing here); the training and inference jobs asked SLURM for a GPU
  (``TresPerJob`` of ``scontrol show job``), the figure did not; every file they wrote equals the local run's;
* a job that fails on SLURM is reported (its SLURM log shown) and resubmitted (``retries``), and succeeds.

Skipped, with the reason, where no cluster can start (not root, packages missing, ports taken).
``.ci/run`` installs the packages when it runs as root. Daemons are stopped by their PIDs in every case.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits

from .conftest import REPO, SNAKEMAKE, run_snakemake

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

CLUSTER = REPO / "scripts" / "slurm" / "cluster.sh"
CI = str(REPO / "presets" / "ci.yaml")
PARTITION = "gpu"
#: the figure whose DAG runs on the cluster, and the rules whose jobs must have asked for a GPU
TARGET = "hemmati22_fig3"
GPU_RULES = {"hemmati22_train", "hemmati22_infer"}
#: options of every SLURM run here: no slurmdbd, so squeue for job states; short polling intervals for a test
SLURM_ARGS = ("--executor", "slurm", "--profile", str(REPO / "profiles" / "slurm"),
              "--slurm-status-command", "squeue", "--slurm-no-account",
              "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
              "--slurm-keep-successful-logs", "--default-resources", "mem_mb=1000", "runtime=30",
              f"slurm_partition='{PARTITION}'")
#: fields that hold wall-clock measurements (training seconds, images/s): the only ones allowed to differ
TIMING_KEYS = {"seconds", "images_per_s"}


def cluster(command: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENASTRO_SLURM_PARTITION": PARTITION}
    return subprocess.run([str(CLUSTER), command], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node SLURM cluster for this module; always stopped afterwards."""
    check = cluster("check", timeout=30)
    if check.returncode == 77:
        pytest.skip(check.stderr.strip().splitlines()[-1])
    cluster("stop", timeout=120)  # leftovers of an interrupted session, if any
    try:
        started = cluster("start", timeout=180)
    except subprocess.TimeoutExpired:
        cluster("stop", timeout=120)
        pytest.skip("the SLURM cluster did not start within 180 s")
    if started.returncode != 0:
        reason = started.stderr.strip()
        if os.environ.get("GENASTRO_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM cluster failed to start:\n{reason}")
        pytest.skip(f"SLURM cluster failed to start: {reason.splitlines()[0] if reason else started.returncode}"
                    if started.returncode != 77 else reason.splitlines()[-1])
    try:
        yield PARTITION
    finally:
        stopped = cluster("stop", timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def slurm_jobs(run_id: str) -> dict[int, dict[str, str]]:
    """SLURM jobs of one Snakemake run (job name = run ID): {jobid: scontrol fields, plus 'rule'}."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-n", run_id, "-o", "%i"], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    jobs = {}
    for jobid in map(int, out):
        text = subprocess.run(["scontrol", "show", "job", "-d", str(jobid)], capture_output=True, text=True,
                              timeout=30, check=True).stdout
        fields = dict(re.findall(r"(\w+)=(\S*)", text))
        fields["rule"] = re.sub(r"^rule_|_wildcards_.*$", "", fields.get("Comment", ""))
        jobs[jobid] = fields
    return jobs


def run_id(stdout_and_err: str) -> str:
    match = re.search(r"SLURM run ID: (\S+)", stdout_and_err)
    assert match, "no SLURM run ID in Snakemake's output"
    return match.group(1)


# ------------------------------------------------------------------------------------------ comparison
def differences(a, b, where: str) -> list[str]:
    """Where two loaded objects (dicts, lists, tensors, arrays, scalars) differ, timing fields aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) - TIMING_KEYS != set(b) - TIMING_KEYS:
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a if k not in TIMING_KEYS for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) else [f"{where}: tensors"]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        nan = a.dtype.kind in "fc" and b.dtype.kind in "fc"
        return [] if a.dtype == b.dtype and np.array_equal(a, b, equal_nan=nan) else [f"{where}: arrays"]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def file_differences(a: Path, b: Path) -> list[str]:
    """FITS: every HDU's header cards and data; Parquet: the table; JSON, CSV, torch files: their content."""
    name = a.name
    if a.suffix == ".fits":
        with fits.open(a) as ha, fits.open(b) as hb:
            if len(ha) != len(hb):
                return [f"{name}: {len(ha)} != {len(hb)} HDUs"]
            out = []
            for i, (x, y) in enumerate(zip(ha, hb, strict=True)):
                out += differences(dict(x.header.items()), dict(y.header.items()), f"{name}[{i}].header")
                if isinstance(x.data, fits.FITS_rec) and isinstance(y.data, fits.FITS_rec):
                    out += differences({c: np.asarray(x.data[c]) for c in x.data.names},
                                       {c: np.asarray(y.data[c]) for c in y.data.names}, f"{name}[{i}]")
                elif x.data is None or y.data is None:
                    out += [] if x.data is None and y.data is None else [f"{name}[{i}]: data"]
                else:
                    out += differences(np.asarray(x.data), np.asarray(y.data), f"{name}[{i}].data")
            return out
    if a.suffix == ".parquet":
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
        except AssertionError as exc:
            return [f"{name}: {str(exc).strip().splitlines()[0]}"]
        return []
    if a.suffix == ".json":
        return differences(json.loads(a.read_text()), json.loads(b.read_text()), name)
    if a.suffix == ".csv":
        with open(a, newline="") as fa, open(b, newline="") as fb:
            return differences(list(csv.DictReader(fa)), list(csv.DictReader(fb)), name)
    if a.suffix == ".pt":
        return differences(torch.load(a, weights_only=True), torch.load(b, weights_only=True), name)
    return [] if a.read_bytes() == b.read_bytes() else [f"{name}: bytes"]


def outputs(workdir: Path) -> list[Path]:
    """Data and results files a run wrote (logs and benchmarks aside), relative to its working directory."""
    files = []
    for top in ("data", "results"):
        for path in sorted((workdir / top).rglob("*")):
            rel = path.relative_to(workdir)
            if path.is_file() and not {"logs", "benchmarks"} & set(rel.parts):
                files.append(rel)
    return files


# ------------------------------------------------------------------------------------------------- tests
def copy_run(src: Path, dst: Path) -> None:
    """A finished run's files and Snakemake's metadata about them (mtimes kept), so that dst plans nothing."""
    for top in ("data", "results"):
        shutil.copytree(src / top, dst / top, ignore=shutil.ignore_patterns("logs", "benchmarks"))
    shutil.copytree(src / ".snakemake" / "metadata", dst / ".snakemake" / "metadata")


def test_ci_figure_dag_on_slurm_asks_for_gpus_and_matches_the_local_run(slurm_cluster, request, tmp_path):
    ci_run = request.getfixturevalue("ci_run")
    copy_run(ci_run, tmp_path)
    force = ("--forcerun", "hemmati22_train")          # the training job and everything after it, on SLURM
    dry = run_snakemake("-n", TARGET, *force, "--configfile", CI, workdir=tmp_path, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    n_jobs = int(re.search(r"^total\s+(\d+)$", dry.stdout, re.M).group(1))
    assert n_jobs == 3, dry.stdout[-3000:]            # train, infer, figure: the upstream is the local run's

    started = time.time()
    result = run_snakemake(TARGET, *force, *SLURM_ARGS, "--configfile", CI, workdir=tmp_path, timeout=1200)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    assert len(re.findall(r"has been submitted with SLURM jobid \d+", log)) == n_jobs

    # what SLURM recorded: one completed job per rule job; a GPU for the training and inference jobs only
    jobs = slurm_jobs(run_id(log))
    assert len(jobs) == n_jobs, jobs
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}
    assert {j["rule"] for j in jobs.values()} == GPU_RULES | {TARGET}
    for jobid, job in jobs.items():
        asked = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        if job["rule"] in GPU_RULES:
            assert "gpu:1" in asked and job.get("JOB_GRES") == "gpu:1", (jobid, job)
        else:
            assert "gpu" not in asked, (jobid, job)
    train = next(i for i, j in jobs.items() if j["rule"] == "hemmati22_train")
    slurm_logs = list(tmp_path.glob(f".snakemake/slurm_logs/rule_hemmati22_train/*/{train}.log"))
    assert len(slurm_logs) == 1 and "rule hemmati22_train" in slurm_logs[0].read_text()

    # every file the SLURM jobs wrote equals the local run's (timing fields aside)
    files = [f for f in outputs(tmp_path) if (tmp_path / f).stat().st_mtime >= started]
    assert any(f.suffix == ".pt" for f in files) and any(f.suffix == ".fits" for f in files)
    assert Path("results/figures/hemmati22/fig3_superresolution.png") in files
    problems = []
    for rel in files:
        if rel.suffix in (".png", ".pdf"):  # figures: rendered, not compared pixel by pixel
            assert (tmp_path / rel).stat().st_size > 5_000
        else:
            problems += [f"{rel}: {d}" for d in file_differences(tmp_path / rel, ci_run / rel)]
    assert not problems, "\n".join(problems[:20])


FLAKY = '''
rule all:
    input:
        "done.txt",


rule flaky:
    """Fails on its first attempt (exit 3), succeeds on the second."""
    output:
        "done.txt",
    resources:
        mem_mb=100,
        runtime=5,
        attempt_no=lambda wildcards, attempt: attempt,
    shell:
        "if [ ! -e first_attempt.marker ]; then touch first_attempt.marker; "
        "echo 'failing on purpose' >&2; exit 3; fi; "
        "echo \\"attempt {resources.attempt_no} in SLURM job $SLURM_JOB_ID\\" > {output}"
'''


def test_failed_slurm_job_is_reported_and_retried(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(FLAKY)
    result = subprocess.run([SNAKEMAKE, *SLURM_ARGS, "--retries", "1"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    jobs = slurm_jobs(run_id(log))
    states = [jobs[i]["JobState"] for i in sorted(jobs)]
    assert states == ["FAILED", "COMPLETED"], jobs
    first, second = sorted(jobs)
    assert jobs[first]["ExitCode"].startswith("1:")  # the job step's snakemake reports the rule's failure
    # reported: the plugin names the failed SLURM job and shows its log, which holds the rule's error
    assert f"SLURM-job '{first}' failed" in log and "failing on purpose" in log
    assert "Trying to restart job" in log
    assert (tmp_path / "done.txt").read_text().strip() == f"attempt 2 in SLURM job {second}"

