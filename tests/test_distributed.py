"""Data-parallel training (torchrun, DistributedDataParallel) with 2 CPU processes on the gloo backend.

* the loss curve of 2 processes follows that of 1 process with the same global batch, and the checkpoint and
  generator it writes load with the normal single-process code; all ranks end with the same weights;
* SIGTERM to the launcher reaches every worker through torchrun: all ranks stop at the same step, rank 0 writes
  the checkpoint, and a new 2-process run resumes to exactly the weights of an uninterrupted one;
* the rule `hemmati22_train` relaunches itself under torchrun when the config asks for 2 processes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from workflow_scripts.errors import ConfigError
from workflow_scripts.models import SRGenerator
from workflow_scripts.train import (
    CHECKPOINT_NAME,
    GENERATOR_NAME,
    PREEMPTED_EXIT_CODE,
    distributed,
    generate,
    load_generator,
)

from .conftest import REPO, run_snakemake

pytestmark = pytest.mark.distributed

#: one worker: a small SR-GAN on a learnable mapping (target = bilinear upsampling of the input), with an L1 term so
#: that the loss curve has a shape (the pixel error falls), 8 global batches of 8 per epoch
WORKER = textwrap.dedent("""
    import hashlib, json, sys
    import torch
    import torch.nn.functional as F
    from workflow_scripts.train import distributed
    from workflow_scripts.models import SRDiscriminator, SRGenerator
    from workflow_scripts.train import ConditionalGAN, TrainConfig, train

    out, epochs, report = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 21, 21, generator=g) * 2 - 1
    y = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    task = ConditionalGAN(SRGenerator(1, base=4), SRDiscriminator(1, base=4))
    res = train(task, (x, y), TrainConfig(epochs=epochs, batch_size=8, seed=3, lr_g=2e-3, l1_weight=20.0), out,
                progress=False)
    # parameters: identical on every rank (DDP averages the gradients); BatchNorm running statistics are those of
    # rank 0 (DDP broadcasts them before each forward pass), which is what rank 0 saves
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in task.generator.parameters())).hexdigest()
    digests = ctx.gather(digest)
    if ctx.is_main:
        with open(report, "w") as fh:
            json.dump({"completed": res.completed, "preempted": res.preempted, "signal": res.signal,
                       "world_size": ctx.world_size, "start": [res.start_epoch, res.start_step],
                       "global_step": res.global_step, "resumed": res.resumed, "digests": digests,
                       "history": res.history}, fh)
    distributed.exit_worker(75 if res.preempted else 0)
""")

#: the launcher, as a rule adapter uses it: torchrun with N workers, signals forwarded
LAUNCHER = textwrap.dedent("""
    import sys
    from workflow_scripts.train import distributed
    nproc, script, *args = sys.argv[1:]
    sys.exit(distributed.launch(int(nproc), script, args))
""")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp_scripts")
    (folder / "ddp_worker.py").write_text(WORKER)
    (folder / "ddp_launcher.py").write_text(LAUNCHER)
    return folder


def env() -> dict[str, str]:
    # outside SLURM (a launcher inside a SLURM job leaves signal delivery to SLURM)
    plain = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**plain, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def launcher_cmd(scripts: Path, nproc: int, out: Path, epochs: int, report: Path) -> list[str]:
    # torchrun runs a module; the worker file's folder goes on PYTHONPATH through the launcher's environment
    return [sys.executable, str(scripts / "ddp_launcher.py"), str(nproc), "ddp_worker", str(out), str(epochs),
            str(report)]


def run_workers(scripts: Path, nproc: int, out: Path, epochs: int) -> dict:
    report = out.with_suffix(".json")
    if nproc == 1:
        cmd = [sys.executable, str(scripts / "ddp_worker.py"), str(out), str(epochs), str(report)]
    else:
        cmd = launcher_cmd(scripts, nproc, out, epochs, report)
    proc = subprocess.run(cmd, env={**env(), "PYTHONPATH": f"{REPO}{os.pathsep}{scripts}"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(report.read_text())


def curve(history, key):
    return np.array([row[key] for row in history])


@pytest.fixture(scope="module")
def two_process_run(scripts, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp2") / "model"
    return out, run_workers(scripts, 2, out, epochs=4)


def test_two_processes_follow_the_single_process_loss_curve(scripts, two_process_run, tmp_path):
    out, two = two_process_run
    one = run_workers(scripts, 1, tmp_path / "model", epochs=4)
    assert two["completed"] and two["world_size"] == 2 and two["global_step"] == one["global_step"] == 4 * 8
    assert len(set(two["digests"])) == 1, "ranks ended with different weights"
    l1_one, l1_two = curve(one["history"], "loss_l1"), curve(two["history"], "loss_l1")
    # the same shape: the pixel error falls epoch after epoch in both, to about the same level
    assert (np.diff(l1_one) < 0).all() and (np.diff(l1_two) < 0).all(), (l1_one, l1_two)
    assert l1_two[-1] < 0.7 * l1_two[0]
    np.testing.assert_allclose(l1_two, l1_one, rtol=0.15)
    for key in ("loss_d", "loss_g_adv"):
        np.testing.assert_allclose(curve(two["history"], key), curve(one["history"], key), rtol=0.15, err_msg=key)
    rows = list(csv.DictReader(open(out / "losses.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]

    # the checkpoint and the generator are those of a single process: plain state dicts, loadable as usual
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["epoch"] == 4 and ckpt["step_in_epoch"] == 0 and ckpt["world_size"] == 2
    assert len(ckpt["rng_ranks"]) == 2
    assert not [k for k in ckpt["modules"]["generator"]["state_dict"] if k.startswith("module.")]
    gen = load_generator(out / GENERATOR_NAME, device="cpu")
    assert isinstance(gen, SRGenerator)
    for key, value in gen.state_dict().items():
        assert torch.equal(value, ckpt["modules"]["generator"]["state_dict"][key]), key
    images = generate(gen, torch.rand(3, 1, 21, 21) * 2 - 1)
    assert images.shape == (3, 1, 64, 64) and np.isfinite(images).all()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "generator.pt", "losses.csv", "losses.png"]


def test_sigterm_stops_every_rank_and_a_new_run_resumes_exactly(scripts, two_process_run, tmp_path):
    reference_dir, reference = two_process_run
    out, report = tmp_path / "model", tmp_path / "report.json"
    proc = subprocess.Popen(launcher_cmd(scripts, 2, out, 1000, report),
                            env={**env(), "PYTHONPATH": f"{REPO}{os.pathsep}{scripts}"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / CHECKPOINT_NAME).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # to the launcher, as SLURM would: it forwards to torchrun and the workers
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = json.loads(report.read_text())
    assert first["preempted"] and not first["completed"] and first["signal"] == signal.SIGTERM, stderr[-3000:]
    assert len(set(first["digests"])) == 1  # every rank stopped at the same step, with the same weights
    assert stderr.count("signal 15 received") >= 2  # both workers got it
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["global_step"] == first["global_step"] == 8 * ckpt["epoch"] + ckpt["step_in_epoch"]
    assert not (out / GENERATOR_NAME).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary file was left behind"

    if ckpt["epoch"] >= 4:
        pytest.skip("the machine was too slow to stop the run before epoch 4")
    resumed = run_workers(scripts, 2, out, epochs=4)
    assert resumed["completed"] and resumed["resumed"]
    assert resumed["start"] == [ckpt["epoch"], ckpt["step_in_epoch"]]
    assert resumed["digests"] == reference["digests"], "resumed weights differ from an uninterrupted run's"
    saved = torch.load(out / GENERATOR_NAME, weights_only=True)["state_dict"]
    uninterrupted = torch.load(reference_dir / GENERATOR_NAME, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], uninterrupted[k]) for k in uninterrupted)  # running statistics too
    for key in ("loss_d", "loss_g", "loss_l1"):  # epoch means of all-reduced sums: equal to rounding
        np.testing.assert_allclose(curve(resumed["history"], key), curve(reference["history"], key), rtol=1e-12,
                                   err_msg=key)


#: a worker that only joins the group, logs, registers an exit handler and leaves through exit_worker
EXITING_WORKER = textwrap.dedent("""
    import atexit, logging, sys
    from pathlib import Path
    from workflow_scripts.train import distributed
    marker = Path(sys.argv[1])
    ctx = distributed.init_from_env("cpu")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    atexit.register(lambda: (marker.parent / f"atexit_rank{ctx.rank}").write_text("finalised"))
    logging.getLogger("w").info("rank %d of %d leaving", ctx.rank, ctx.world_size)
    distributed.exit_worker(0)
""")


def test_a_worker_leaves_flushed_and_without_finalisation(scripts, tmp_path):
    """exit_worker: a torchrun worker's last log lines reach the job's output, and interpreter finalisation (where
    torch's gloo teardown aborted finished workers) does not run; a single process exits normally."""
    (scripts / "exiting_worker.py").write_text(EXITING_WORKER)
    child_env = {**env(), "PYTHONPATH": f"{REPO}{os.pathsep}{scripts}"}
    marker = tmp_path / "marker"
    proc = subprocess.run([sys.executable, str(scripts / "ddp_launcher.py"), "2", "exiting_worker", str(marker)],
                          env=child_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 of 2 leaving" in proc.stderr and "rank 1 of 2 leaving" in proc.stderr
    assert not list(tmp_path.glob("atexit_rank*")), "a worker ran interpreter finalisation"
    single = subprocess.run([sys.executable, str(scripts / "exiting_worker.py"), str(marker)], env=child_env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "rank 0 of 1 leaving" in single.stderr
    assert (tmp_path / "atexit_rank0").read_text() == "finalised"


def test_processes_per_job():
    assert distributed.processes_for(gpus=0, cuda_devices=0) == 1
    assert distributed.processes_for(gpus=1, cuda_devices=4) == 1
    assert distributed.processes_for(gpus=3, cuda_devices=4) == 3
    assert distributed.processes_for(gpus=3, cuda_devices=2) == 2  # what CUDA sees
    assert distributed.processes_for(gpus=2, cuda_devices=0) == 1  # no CUDA: one CPU process
    assert distributed.processes_for(gpus=0, configured=2, cuda_devices=0) == 2
    with pytest.raises(ConfigError):
        distributed.processes_for(gpus=0, configured=0)
    cmd = distributed.torchrun_command(3, "some.module", ["--spec", "x.json"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=3" in cmd
    assert any(a.startswith("--signals-to-handle=") and "SIGUSR1" in a and "SIGTERM" in a for a in cmd)
    assert cmd[-4:] == ["--module", "some.module", "--spec", "x.json"]
    single = distributed.DistContext()
    assert not single.enabled and single.is_main and single.shard([[3, 1, 2]]) == [[3, 1, 2]]
    two = distributed.DistContext(rank=1, world_size=2, local_rank=1)
    assert two.shard([[5, 6, 7, 8, 9]]) == [[6, 8]]
    assert two.device(torch.device("cuda")) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="batch_size"):
        distributed.DistContext(rank=0, world_size=4).check(batch_size=2)


def _copy_ci_run(ci_run: Path, tmp_path: Path) -> None:
    """The ci run's files in ``tmp_path``: hard links, except logs and benchmarks (jobs rewrite them in place) and
    Snakemake's records, which are copied."""
    def link_or_copy(src: str, dst: str) -> None:
        if {"logs", "benchmarks"} & set(Path(src).relative_to(ci_run).parts):
            shutil.copy2(src, dst)
        else:
            os.link(src, dst)

    for top in ("data", "results"):
        shutil.copytree(ci_run / top, tmp_path / top, copy_function=link_or_copy)
    shutil.copytree(ci_run / ".snakemake", tmp_path / ".snakemake",
                    ignore=shutil.ignore_patterns("conda", "singularity", "log", "slurm_logs"))


def _train_in_two_processes(ci_run: Path, tmp_path: Path, study: str, model_dir: str, target: str,
                            log_file: str) -> str:
    """The ci run's files in ``tmp_path``, ``model_dir`` removed and ``target`` made again by its training rule in 2
    CPU processes (``{study}.resources.processes``): only that job runs (its inputs are up to date), and its log
    shows both ranks. Returns the log."""
    _copy_ci_run(ci_run, tmp_path)
    shutil.rmtree(tmp_path / model_dir)
    (tmp_path / "two_processes.yaml").write_text(f"{study}:\n  resources: {{processes: 2, threads: 2}}\n")
    result = run_snakemake("--cores", "2", target, "--configfile", str(REPO / "presets/ci.yaml"),
                           str(tmp_path / "two_processes.yaml"), workdir=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "1 of 1 steps (100%) done" in result.stderr
    log = (tmp_path / log_file).read_text()
    assert "data-parallel in 2 processes" in log and "rank0/2" in log
    return log


@pytest.mark.slow
def test_training_rule_relaunches_itself_under_torchrun(ci_run: Path, tmp_path: Path):
    model_dir = tmp_path / "results/hemmati22/models/srgan1"
    _train_in_two_processes(ci_run, tmp_path, "hemmati22", "results/hemmati22/models/srgan1",
                            "results/hemmati22/models/srgan1/generator.pt", "results/logs/hemmati22/train_srgan1.log")
    ckpt = torch.load(model_dir / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["world_size"] == 2
    gen = load_generator(model_dir / GENERATOR_NAME, device="cpu")
    assert isinstance(gen, SRGenerator)
    assert json.loads((model_dir / "scaling.json").read_text()) == json.loads(
        (ci_run / "results/hemmati22/models/srgan1/scaling.json").read_text())
    ours = list(csv.DictReader(open(model_dir / "losses.csv")))
    local = list(csv.DictReader(open(ci_run / "results/hemmati22/models/srgan1/losses.csv")))
    assert len(ours) == len(local)
    for key in ("loss_d", "loss_g"):
        assert float(ours[-1][key]) == pytest.approx(float(local[-1][key]), rel=0.25), key
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]
    assert PREEMPTED_EXIT_CODE == 75


@pytest.mark.slow
def test_the_deep_field_training_rule_trains_its_ensemble_in_two_processes(ci_run: Path, tmp_path: Path):
    """The Spatial-GAN's self-ensemble through torchrun: both snapshots written once (rank 0), the checkpoint of a
    two-process run, the ensemble file naming them, and the losses of the single-process ci run within GAN noise."""
    model_dir = tmp_path / "results/smith_geach19/model"
    _train_in_two_processes(ci_run, tmp_path, "smith_geach19", "results/smith_geach19/model",
                            "results/smith_geach19/model/ensemble.json", "results/logs/smith_geach19/train.log")
    ensemble = json.loads((model_dir / "ensemble.json").read_text())
    assert ensemble == {"snapshots": ["generator_epoch0001.pt", "generator_epoch0002.pt"], "processes": 2}
    assert torch.load(model_dir / CHECKPOINT_NAME, weights_only=True)["world_size"] == 2
    for name in ensemble["snapshots"]:
        assert not any(k.startswith("module.") for k in torch.load(model_dir / name, weights_only=True)["state_dict"])
    ours = list(csv.DictReader(open(model_dir / "losses.csv")))
    local = list(csv.DictReader(open(ci_run / "results/smith_geach19/model/losses.csv")))
    assert len(ours) == len(local) == 2
    for key in ("loss_d", "loss_g"):
        assert float(ours[-1][key]) == pytest.approx(float(local[-1][key]), rel=0.25), key


@pytest.mark.slow
def test_the_anomaly_studys_training_rule_trains_pix2pix_in_two_processes(ci_run: Path, tmp_path: Path):
    """pix2pix through torchrun from its rule: the job's spec carries what the launcher needs (its name among it),
    rank 0 writes the generator and the scaling, the checkpoint is a two-process one, and the losses follow the
    single-process ci run's within GAN noise."""
    model_dir = tmp_path / "results/pearce_casey23/model"
    log = _train_in_two_processes(ci_run, tmp_path, "pearce_casey23", "results/pearce_casey23/model",
                                  "results/pearce_casey23/model/generator.pt", "results/logs/pearce_casey23/train.log")
    assert "training pearce_casey23 pix2pix data-parallel in 2 processes" in log
    assert torch.load(model_dir / CHECKPOINT_NAME, weights_only=True)["world_size"] == 2
    assert json.loads((model_dir / "scaling.json").read_text()) == json.loads(
        (ci_run / "results/pearce_casey23/model/scaling.json").read_text())
    ours = list(csv.DictReader(open(model_dir / "losses.csv")))
    local = list(csv.DictReader(open(ci_run / "results/pearce_casey23/model/losses.csv")))
    assert len(ours) == len(local)
    assert float(ours[-1]["loss_l1"]) == pytest.approx(float(local[-1]["loss_l1"]), rel=0.25)
