"""Every objective through the one loop: GAN noise-to-image, GAN conditional (L1 + ambient noise), likelihood.

For each: a real SIGTERM to a training subprocess in the middle of an epoch, then a rerun, gives bit for bit the
model and losses of an uninterrupted run; two gloo processes under torchrun follow one process. Plus the
likelihood objective's losses, the versioned checkpoint (version-1 GAN files resume, others are refused naming
the file), and the interface's promises (modules by name, a custom objective whose generator step calls D(real)).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workflow_scripts.errors import ConfigError, PipelineError
from workflow_scripts.models import SRDiscriminator, SRGenerator, register_model
from workflow_scripts.train import (
    CHECKPOINT_NAME,
    LikelihoodObjective,
    StepContext,
    TrainConfig,
    epoch_batches,
    load_model,
    train,
)
from workflow_scripts.train.checkpoint import V1_FORMAT, seed_everything
from workflow_scripts.train.loop import _dataset_fingerprint
from workflow_scripts.train.objectives import ConditionalGAN

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "images_per_s")
#: the interrupted runs stop after this many steps: mid-epoch 2 (4 steps per epoch)
STOP_AT = 6
STEPS_PER_EPOCH = 4


@register_model
class PixelGaussian(nn.Module):
    """A per-pixel Gaussian density: learnable mean and log-sigma per pixel; forward gives log p(x) in nats per
    image (the likelihood objective's default convention)."""

    def __init__(self, channels: int = 1, size: int = 8) -> None:
        super().__init__()
        self.arch = {"channels": channels, "size": size}
        self.mean = nn.Parameter(torch.zeros(channels, size, size))
        self.log_sigma = nn.Parameter(torch.zeros(channels, size, size))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.mean.normal_(0.0, 0.1)
            self.log_sigma.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) * torch.exp(-self.log_sigma)
        logp = -0.5 * z**2 - self.log_sigma - 0.5 * math.log(2 * math.pi)
        return logp.flatten(1).sum(1)


#: one training process (plain python or a torchrun worker): objective KIND, 3 epochs of 4 steps; with PAUSE it
#: stops at step STOP_AT and waits there for the test's signal (the test then deletes the ready file)
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys, time
    from pathlib import Path
    import torch
    import torch.nn.functional as F
    from workflow_scripts.models import DCGANDiscriminator, DCGANGenerator, SRDiscriminator, SRGenerator
    from workflow_scripts.train import (AsinhNoise, ConditionalGAN, LikelihoodObjective, NoiseToImageGAN,
                                        TrainConfig, distributed, train)
    from tests.test_objectives import PixelGaussian

    kind, out, report, pause_at = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    ctx = distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    if kind == "dcgan":
        blobs = torch.linspace(-1, 1, 64)
        data = (blobs[None, None, :, None] * blobs[None, None, None, :] * torch.rand(32, 1, 1, 1, generator=g))
        objective = NoiseToImageGAN(DCGANGenerator(nz=8, channels=1, base=4), DCGANDiscriminator(1, base=4))
        cfg = dict(lr_g=2e-3, lr_d=2e-3)
    elif kind == "srgan":
        x = torch.rand(32, 1, 21, 21, generator=g) * 2 - 1
        data = (x, F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))
        objective = ConditionalGAN(SRGenerator(1, base=4), SRDiscriminator(1, base=4),
                                   observe=AsinhNoise([0.05], [0.1], [3.0]))
        cfg = dict(lr_g=2e-3, l1_weight=20.0)
    else:
        data = 0.3 + 0.2 * torch.randn(32, 1, 8, 8, generator=g)
        objective = LikelihoodObjective(PixelGaussian(1, 8))
        cfg = dict(lr=0.05)

    def pause(info):
        if info.global_step == pause_at and ctx.is_main:
            ready = out.parent / (out.name + ".ready")
            ready.write_text(str(info.global_step))
            deadline = time.monotonic() + 120
            while ready.exists() and time.monotonic() < deadline:  # the signal arrives while we wait here
                time.sleep(0.01)

    res = train(objective, data, TrainConfig(epochs=3, batch_size=8, seed=5, **cfg), out, progress=False,
                callback=pause if pause_at else None)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                     for m in objective.modules.values() for p in m.parameters())).hexdigest()
    digests = ctx.gather(digest)
    if ctx.is_main:
        report.write_text(json.dumps({
            "completed": res.completed, "preempted": res.preempted, "signal": res.signal, "resumed": res.resumed,
            "start": [res.start_epoch, res.start_step], "global_step": res.global_step, "history": res.history,
            "model": str(res.model_path), "digests": digests, "world_size": ctx.world_size}))
    distributed.exit_worker(75 if res.preempted else 0)
""")

LAUNCHER = textwrap.dedent("""
    import sys
    from workflow_scripts.train import distributed
    nproc, module, *args = sys.argv[1:]
    sys.exit(distributed.launch(int(nproc), module, args))
""")

KINDS = ("dcgan", "srgan", "likelihood")
MODEL_FILE = {"dcgan": "generator.pt", "srgan": "generator.pt", "likelihood": "model.pt"}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("objective_scripts")
    (folder / "objective_worker.py").write_text(SCRIPT)
    (folder / "objective_launcher.py").write_text(LAUNCHER)
    return folder


def env(scripts: Path) -> dict[str, str]:
    plain = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**plain, "PYTHONPATH": f"{REPO}{os.pathsep}{scripts}", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def command(scripts: Path, kind: str, out: Path, pause_at: int = 0, nproc: int = 1) -> list[str]:
    args = [kind, str(out), str(out.with_suffix(".json")), str(pause_at)]
    if nproc == 1:
        return [sys.executable, str(scripts / "objective_worker.py"), *args]
    return [sys.executable, str(scripts / "objective_launcher.py"), str(nproc), "objective_worker", *args]


def run(scripts: Path, kind: str, out: Path, nproc: int = 1) -> dict:
    proc = subprocess.run(command(scripts, kind, out, nproc=nproc), env=env(scripts), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(out.with_suffix(".json").read_text())


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def losses_without_timing(out: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(open(out / "losses.csv"))]


@pytest.fixture(scope="module")
def references(scripts, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """One uninterrupted single-process run of each objective."""
    base = tmp_path_factory.mktemp("objective_refs")
    return {kind: (base / kind, run(scripts, kind, base / kind)) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_mid_epoch_then_rerun_is_bit_identical(scripts, references, tmp_path, kind):
    out = tmp_path / kind
    proc = subprocess.Popen(command(scripts, kind, out, pause_at=STOP_AT), env=env(scripts), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ready = out.parent / (out.name + ".ready")
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not reach the step where it waits for the signal"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # a real signal, in the middle of epoch 2
        ready.unlink()
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, stderr[-3000:]
    first = json.loads(out.with_suffix(".json").read_text())
    assert first["preempted"] and first["signal"] == signal.SIGTERM and first["global_step"] == STOP_AT
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == divmod(STOP_AT, STEPS_PER_EPOCH)
    assert ckpt["version"] == 2 and not (out / MODEL_FILE[kind]).exists()

    second = run(scripts, kind, out)
    assert second["completed"] and second["resumed"]
    assert second["start"] == list(divmod(STOP_AT, STEPS_PER_EPOCH))
    ref_dir, ref = references[kind]
    assert second["digests"] == ref["digests"]  # every trained module, not only the exported one
    saved, expected = model_state(out / MODEL_FILE[kind]), model_state(ref_dir / MODEL_FILE[kind])
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in expected), "resumed weights differ"
    assert losses_without_timing(out) == losses_without_timing(ref_dir)
    assert len(losses_without_timing(out)) == 3


@pytest.mark.distributed
@pytest.mark.parametrize("kind", KINDS)
def test_two_gloo_processes_follow_one(scripts, references, tmp_path, kind):
    out = tmp_path / kind
    two = run(scripts, kind, out, nproc=2)
    ref_dir, one = references[kind]
    assert two["completed"] and two["world_size"] == 2 and two["global_step"] == one["global_step"] == 12
    assert len(set(two["digests"])) == 1, "ranks ended with different weights"
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    model = load_model(out / MODEL_FILE[kind], device="cpu")  # a plain single-process model file
    assert not [k for k in model.state_dict() if k.startswith("module.")]
    columns = [c for c in two["history"][0] if c not in ("epoch", "steps", "images", *TIMING)]
    curve = {n: np.array([[row[c] for c in columns] for row in run_["history"]]) for n, run_ in (("1", one),
                                                                                                ("2", two))}
    if kind == "likelihood":
        # no batch statistics and no noise: the gradient of a sharded batch, averaged, is that of the whole batch
        np.testing.assert_allclose(curve["2"], curve["1"], rtol=1e-4)
        ref = model_state(ref_dir / MODEL_FILE[kind])
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, ref[key], rtol=1e-4, atol=1e-5)
    else:
        # BatchNorm statistics per rank and noise per rank: the same curve, not the same bits (3 epochs of a GAN at
        # a high learning rate: epoch means wander by up to ~30 % between equivalent runs)
        np.testing.assert_allclose(curve["2"], curve["1"], rtol=0.4, atol=0.05)
    first, last = curve["1"][0], curve["1"][-1]
    assert np.abs(last - first).max() > 0.05, "the reference curve does not move: the comparison would be empty"


# ------------------------------------------------------------------------------------------- likelihood
def test_likelihood_reports_nll_in_nats_and_bits_per_dim(tmp_path):
    g = torch.Generator().manual_seed(1)
    data = 0.3 + 0.2 * torch.randn(64, 1, 8, 8, generator=g)
    objective = LikelihoodObjective(PixelGaussian(1, 8))
    steps: list[dict[str, float]] = []
    res = train(objective, data, TrainConfig(epochs=4, batch_size=16, seed=2, lr=0.05), tmp_path, progress=False,
                callback=lambda info: steps.append({k: float(v) for k, v in info.losses.items()}))
    # the first step's NLL is -log p of the first batch under the seeded initial model, in nats per image
    initial = PixelGaussian(1, 8)
    seed_everything(2)
    initial.reset_parameters()
    batch = data[epoch_batches(64, 16, seed=2, epoch=0)[0]]
    normal = torch.distributions.Normal(initial.mean.detach(), initial.log_sigma.detach().exp())
    expected = float(-normal.log_prob(batch).flatten(1).sum(1).mean())
    assert steps[0]["nll"] == pytest.approx(expected, rel=1e-6)
    assert steps[0]["bits_per_dim"] == pytest.approx(expected / (math.log(2) * 64), rel=1e-6)
    assert res.completed and res.model_path == tmp_path / "model.pt"
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert tuple(rows[0]) == ("epoch", "steps", "images", "nll", "bits_per_dim", "seconds", "images_per_s")
    for row in res.history:
        assert row["bits_per_dim"] == pytest.approx(row["nll"] / (math.log(2) * 64), rel=1e-6)  # float32 steps
    nll = [row["nll"] for row in res.history]
    assert all(b < a for a, b in zip(nll, nll[1:])), nll
    # the NLL in nats is that of the model: recompute the last epoch's value from the saved model at the end
    model = load_model(res.model_path, device="cpu")
    assert isinstance(model, PixelGaussian)
    with torch.no_grad():
        final = float(-model(data).mean())
    assert final < nll[0]
    with pytest.raises(ConfigError, match="l1_weight"):
        train(objective, data, TrainConfig(epochs=1, batch_size=16, l1_weight=1.0), tmp_path / "x", progress=False)


def test_likelihood_with_a_log_prob_function(tmp_path):
    """A model that outputs parameters; ``log_prob`` turns them into log p(x) per image (shape checked)."""
    g = torch.Generator().manual_seed(3)
    data = 0.5 + 0.1 * torch.randn(32, 1, 8, 8, generator=g)

    def gaussian(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x - out) ** 2).flatten(1).sum(1)

    class MeanOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.arch: dict = {}
            self.mean = nn.Parameter(torch.zeros(1, 8, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mean.expand_as(x)

    res = train(LikelihoodObjective(MeanOnly(), log_prob=gaussian), data, TrainConfig(epochs=2, batch_size=8,
                lr=0.05, reinit=False), tmp_path / "a", progress=False, resume=False)
    assert res.history[-1]["nll"] < res.history[0]["nll"]

    def wrong(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -((x - out) ** 2)  # per pixel, not per image

    unsaveable = MeanOnly()
    del unsaveable.arch
    with pytest.raises(ConfigError, match=r"MeanOnly.*\.arch"):  # refused before training, not after it
        train(LikelihoodObjective(unsaveable, log_prob=gaussian), data, TrainConfig(epochs=1, batch_size=8),
              tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="one value per image"):
        train(LikelihoodObjective(MeanOnly(), log_prob=wrong), data, TrainConfig(epochs=1, batch_size=8,
              reinit=False), tmp_path / "b", progress=False)


# ----------------------------------------------------------------------------------------- checkpoints
def sr_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 21, 21, generator=g) * 2 - 1
    return x, torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)


def sr_objective() -> ConditionalGAN:
    return ConditionalGAN(SRGenerator(1, base=4), SRDiscriminator(1, base=4))


def as_version_1(state: dict, cfg: TrainConfig, objective: ConditionalGAN, data) -> dict:
    """What the GAN-only loop (checkpoint format 1) wrote for the same run: its key names and its fingerprint."""
    from torch.utils.data import TensorDataset

    v1_config = {k: getattr(cfg, k) for k in ("batch_size", "lr_g", "lr_d", "betas", "l1_weight", "seed",
                                               "deterministic", "drop_last", "reinit")}
    return {
        "format": V1_FORMAT, "version": 1, "pipeline_version": state["pipeline_version"],
        "fingerprint": {"format_version": 1, "config": v1_config, "task": "conditional",
                        "generator": {"name": "SRGenerator", "arch": dict(objective.generator.arch)},
                        "discriminator": {"name": "SRDiscriminator", "arch": dict(objective.discriminator.arch)},
                        "dataset": _dataset_fingerprint(TensorDataset(*data))},
        "config": state["config"],
        "generator": state["modules"]["generator"], "discriminator": state["modules"]["discriminator"],
        "opt_g": state["optimizers"]["generator"], "opt_d": state["optimizers"]["discriminator"],
        "scaler_g": state["scalers"]["generator"], "scaler_d": state["scalers"]["discriminator"],
        **{k: state[k] for k in ("epoch", "step_in_epoch", "global_step", "partial", "rng", "history")},
    }


def test_version_1_gan_checkpoint_resumes_exactly(tmp_path):
    data, cfg = sr_pairs(), TrainConfig(epochs=2, batch_size=8, seed=4)
    straight = sr_objective()
    train(straight, data, cfg, tmp_path / "straight", progress=False)

    def stop(info):
        return info.global_step == 3  # mid-epoch 2

    out = tmp_path / "v1"
    assert not train(sr_objective(), data, cfg, out, progress=False, callback=stop).completed
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    torch.save(as_version_1(state, cfg, sr_objective(), data), out / CHECKPOINT_NAME)
    resumed = sr_objective()
    res = train(resumed, data, cfg, out, progress=False)
    assert res.resumed and (res.start_epoch, res.start_step) == (1, 1)
    for name in ("generator", "discriminator"):
        a, b = straight.modules[name].state_dict(), resumed.modules[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["version"] == 2  # rewritten in the new format

    # a version-1 file of another set-up is kept aside, as any stale checkpoint
    old = as_version_1(state, cfg, sr_objective(), data)
    old["fingerprint"]["config"]["seed"] = 99
    torch.save(old, out / CHECKPOINT_NAME)
    assert not train(sr_objective(), data, cfg, out, progress=False).resumed
    assert len(list(out.glob("checkpoint.*.stale.pt"))) == 1


def test_checkpoints_an_objective_cannot_read_are_refused_naming_the_file(tmp_path):
    data = 0.2 * torch.randn(16, 1, 8, 8)
    cfg = TrainConfig(epochs=1, batch_size=8)
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"format": V1_FORMAT, "version": 1, "fingerprint": {}}, path)
    with pytest.raises(PipelineError, match=rf"{path}: a version-1 GAN checkpoint.*delete it"):
        train(LikelihoodObjective(PixelGaussian(1, 8)), data, cfg, tmp_path, progress=False)
    torch.save({"format": "genastro-training-checkpoint", "version": 3}, path)
    with pytest.raises(PipelineError, match=rf"{path}: checkpoint format version 3"):
        train(LikelihoodObjective(PixelGaussian(1, 8)), data, cfg, tmp_path, progress=False)
    assert path.exists()  # refused, never deleted or overwritten


# ------------------------------------------------------------------------------------------- interface
class RelativisticToy(ConditionalGAN):
    """Not the study's RaGAN: only what its generator step needs from the interface, D(real) with D frozen."""

    name = "relativistic_toy"
    loss_columns = ("loss_d", "loss_g")

    def step(self, batch, ctx: StepContext):
        gen, disc = ctx.modules["generator"], ctx.modules["discriminator"]
        x, real, cond = self.unpack(batch, ctx.device)
        with ctx.autocast():
            fake = gen(x)
            d_real, d_fake = disc(real, cond), disc(fake.detach(), cond)
            loss_d = self.bce(d_real - d_fake.mean(), torch.ones_like(d_real))
        ctx.optimise("discriminator", loss_d)
        with ctx.frozen("discriminator"):
            with ctx.autocast():
                d_real_g, d_fake_g = disc(real, cond), disc(fake, cond)
                loss_g = self.bce(d_fake_g - d_real_g.mean(), torch.ones_like(d_fake_g))
            ctx.optimise("generator", loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}


def test_a_custom_step_calling_d_real_in_the_generator_step(tmp_path):
    data = sr_pairs()
    toy = RelativisticToy(SRGenerator(1, base=4), SRDiscriminator(1, base=4))
    res = train(toy, data, TrainConfig(epochs=1, batch_size=8), tmp_path, progress=False)
    assert res.completed and tuple(res.history[0]) == ("epoch", "steps", "images", "loss_d", "loss_g", *TIMING)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["objective"] == "relativistic_toy"
    assert all(p.requires_grad for p in toy.discriminator.parameters())  # unfrozen after the step

    class Forgetful(RelativisticToy):
        loss_columns = ("loss_d", "loss_g", "d_real")

    with pytest.raises(PipelineError, match="returned no 'd_real'"):
        train(Forgetful(SRGenerator(1, base=4), SRDiscriminator(1, base=4)), data,
              TrainConfig(epochs=1, batch_size=8), tmp_path / "b", progress=False)
