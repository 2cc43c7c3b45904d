"""The GAN training loop: outputs, determinism, exact resume after SIGTERM / crash, signals, L1 term, inference.

Everything runs on CPU with tiny networks (base 4-8) and 32-48 images, a few seconds per test.
"""

from __future__ import annotations

import csv
import json
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
import torch.nn.functional as F

from workflow_scripts.errors import ConfigError
from workflow_scripts.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    SRDiscriminator,
    SRGenerator,
)
from workflow_scripts.train import (
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    GENERATOR_NAME,
    PREEMPTED_EXIT_CODE,
    ConditionalTask,
    NoiseToImageTask,
    Preempted,
    TrainConfig,
    csv_columns,
    epoch_batches,
    generate,
    load_generator,
    noise,
    train,
)

REPO = Path(__file__).resolve().parents[1]
LOSS_KEYS = ("loss_d", "loss_g", "loss_g_adv", "loss_l1", "d_real", "d_fake")


def sr_data(n: int = 32, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable low -> high mapping: the target is the bilinear upsampling of the input."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 21, 21, generator=g) * 2 - 1
    y = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, y


def sr_task(channels: int = 1, base: int = 4, conditional: bool = True) -> ConditionalTask:
    return ConditionalTask(SRGenerator(channels, base=base), SRDiscriminator(channels, base=base,
                                                                            conditional=conditional))


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 8, "seed": 7, **kw})


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"parameters differ: {different}"


def no_temporaries(out: Path) -> bool:
    return not [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# --------------------------------------------------------------------------------------------- outputs
def test_training_writes_all_outputs(tmp_path):
    x, y = sr_data(32)
    task = sr_task()
    res = train(task, (x, y), cfg(epochs=2), tmp_path, progress=True)
    assert res.completed and not res.preempted and res.epochs_done == 2
    assert res.global_step == 2 * 4 and res.start_epoch == 0 and not res.resumed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "generator.pt", "losses.csv",
                                                          "losses.png"]
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert tuple(rows[0]) == csv_columns(task) == ("epoch", "steps", "images", *LOSS_KEYS, "seconds", "images_per_s")
    assert all(np.isfinite(float(r[k])) for r in rows for k in LOSS_KEYS)
    assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step_in_epoch"] == 0 and len(ckpt["history"]) == 2
    assert ckpt["version"] == CHECKPOINT_VERSION == 2 and ckpt["objective"] == "conditional"
    for key in ("modules", "optimizers", "scalers"):  # state by the objective's module names
        assert set(ckpt[key]) == {"generator", "discriminator"}, key
    assert ckpt["ema"] == {} and "rng" in ckpt
    assert_same_weights(ckpt["modules"]["generator"]["state_dict"], params(task.generator))

    g = load_generator(res.generator_path, device="cpu")
    assert isinstance(g, SRGenerator) and not g.training
    assert_same_weights(params(g), params(task.generator))
    out = generate(g, x[:10].numpy(), batch_size=4)
    assert isinstance(out, np.ndarray) and out.shape == (10, 1, 64, 64) and out.dtype == np.float32
    whole = generate(g, x[:10], batch_size=64)
    np.testing.assert_allclose(out, whole, atol=1e-6)
    spec = json.loads(torch.load(res.generator_path, weights_only=True)["arch_json"])
    assert spec == {"name": "SRGenerator", "arch": {"channels": 1, "base": 4, "upsample": "transposed"}}


def test_dcgan_task_7_bands(tmp_path):
    images = torch.rand(32, 7, 64, 64) * 2 - 1
    task = NoiseToImageTask(DCGANGenerator(nz=8, channels=7, base=4), DCGANDiscriminator(7, base=4))
    res = train(task, images, cfg(epochs=1), tmp_path, progress=False)
    assert res.completed and res.history[0]["loss_l1"] == 0.0
    g = load_generator(tmp_path / GENERATOR_NAME, device="cpu")
    samples = generate(g, noise(5, 8, seed=1))
    assert samples.shape == (5, 7, 64, 64) and np.abs(samples).max() <= 1


def test_sr_7_bands_unconditional(tmp_path):
    x, y = sr_data(16, channels=7)
    res = train(sr_task(channels=7, conditional=False), (x.numpy(), y.numpy()), cfg(epochs=1), tmp_path,
                progress=False)
    assert res.completed and res.epochs_done == 1


# ----------------------------------------------------------------------------------------- determinism
def test_same_seed_same_weights_and_data_order(tmp_path):
    x, y = sr_data(16)
    runs = []
    for i, seed in enumerate((3, 3, 4)):
        torch.manual_seed(100 + i)  # the caller's RNG state must not matter
        task = sr_task()
        res = train(task, (x, y), cfg(epochs=2, seed=seed), tmp_path / str(i), progress=False)
        runs.append((params(task.generator), res.history))
    assert_same_weights(runs[0][0], runs[1][0])
    assert [r["loss_g"] for r in runs[0][1]] == [r["loss_g"] for r in runs[1][1]]
    assert any(not torch.equal(runs[0][0][k], runs[2][0][k]) for k in runs[0][0])
    # data order is a pure function of (seed, epoch), all examples once per epoch
    a = epoch_batches(32, 8, seed=3, epoch=5)
    assert a == epoch_batches(32, 8, seed=3, epoch=5)
    assert a != epoch_batches(32, 8, seed=3, epoch=6) and a != epoch_batches(32, 8, seed=4, epoch=5)
    assert sorted(i for b in a for i in b) == list(range(32))
    assert [len(b) for b in epoch_batches(30, 8, 0, 0)] == [8, 8, 8]


def test_global_flags_and_signal_handlers_restored(tmp_path):
    def mine(signum, frame):  # pragma: no cover - never called
        pass

    previous = signal.signal(signal.SIGUSR1, mine)
    try:
        assert not torch.are_deterministic_algorithms_enabled()
        train(sr_task(), sr_data(16), cfg(epochs=1), tmp_path, progress=False)
        assert signal.getsignal(signal.SIGUSR1) is mine
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        signal.signal(signal.SIGUSR1, previous)


# ---------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run (4 steps per epoch), time-based mid-epoch checkpoints switched on: they must
    not perturb the result either."""
    out = tmp_path_factory.mktemp("reference")
    task = sr_task()
    res = train(task, sr_data(32), cfg(checkpoint_every_seconds=1e-9), out, progress=False)
    assert res.completed
    return params(task.generator), params(task.discriminator), res.history


def _losses(history):
    return [[row[k] for k in ("epoch", *LOSS_KEYS)] for row in history]


@pytest.mark.parametrize("stop_at, sig", [(6, signal.SIGTERM), (4, signal.SIGUSR1), (9, signal.SIGTERM)],
                         ids=["sigterm-mid-epoch-2", "sigusr1-at-epoch-end", "sigterm-mid-epoch-3"])
def test_resume_after_signal_is_bit_identical(tmp_path, reference, stop_at, sig):
    data = sr_data(32)

    def send_signal(info):
        if info.global_step == stop_at:
            os.kill(os.getpid(), sig)  # a real signal through the real handler, in the middle of training

    first = train(sr_task(), data, cfg(), tmp_path, progress=False, callback=send_signal)
    assert not first.completed and first.preempted and first.signal == sig
    assert first.generator_path is None and not (tmp_path / GENERATOR_NAME).exists()
    assert first.global_step == stop_at
    with pytest.raises(Preempted) as exc:
        first.raise_if_preempted()
    assert exc.value.exit_code == PREEMPTED_EXIT_CODE
    assert no_temporaries(tmp_path)
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == divmod(stop_at, 4)

    task = sr_task()  # a fresh process would build fresh networks
    second = train(task, data, cfg(), tmp_path, progress=False)
    assert second.completed and second.resumed
    assert (second.start_epoch, second.start_step) == divmod(stop_at, 4)
    assert second.global_step == 12
    ref_g, ref_d, ref_hist = reference
    assert_same_weights(params(task.generator), ref_g)
    assert_same_weights(params(task.discriminator), ref_d)
    assert _losses(second.history) == _losses(ref_hist)
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


class PairDataset(torch.utils.data.Dataset):
    """A plain map-style dataset (not a TensorDataset): goes through the DataLoader path."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("workers", [0, 1], ids=["map-style-dataset", "loader-worker-process"])
def test_dataloader_path_gives_the_same_weights(tmp_path, reference, workers):
    task = sr_task()
    res = train(task, PairDataset(*sr_data(32)), cfg(num_workers=workers), tmp_path, progress=False)
    assert res.completed
    assert_same_weights(params(task.generator), reference[0])


def test_resume_after_crash_and_after_extending_epochs(tmp_path, reference):
    data = sr_data(32)
    # a run that finished after 1 epoch is continued to 3: same result as 3 epochs straight
    one = train(sr_task(), data, cfg(epochs=1), tmp_path, progress=False)
    assert one.completed

    def crash(info):
        if info.global_step == 7:
            raise RuntimeError("node died")

    with pytest.raises(RuntimeError, match="node died"):  # hard crash mid-epoch 2: no checkpoint written then
        train(sr_task(), data, cfg(), tmp_path, progress=False, callback=crash)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    assert no_temporaries(tmp_path)
    task = sr_task()
    res = train(task, data, cfg(), tmp_path, progress=False)
    assert res.resumed and (res.start_epoch, res.start_step) == (1, 0)
    assert_same_weights(params(task.generator), reference[0])
    assert_same_weights(params(task.discriminator), reference[1])
    assert res.throughput().endswith(" images/s") and "nan" not in res.throughput()
    # run again once finished: nothing to train, and the log line says so instead of "nan images/s"
    again = train(sr_task(), data, cfg(), tmp_path, progress=False)
    assert again.resumed and again.throughput() == "nothing left to train (resumed from the checkpoint after epoch 3)"


def test_checkpoint_of_another_setup_is_not_resumed(tmp_path):
    data = sr_data(16)
    train(sr_task(), data, cfg(epochs=1, seed=1), tmp_path, progress=False)
    res = train(sr_task(), data, cfg(epochs=1, seed=2), tmp_path, progress=False)
    assert not res.resumed and res.start_epoch == 0
    res = train(sr_task(), data, cfg(epochs=2, seed=2), tmp_path, progress=False, resume=False)
    assert not res.resumed and res.epochs_done == 2


def test_checkpoint_past_the_epochs_asked_for_is_set_aside_and_the_run_equals_a_fresh_one(tmp_path):
    """Lowering the epochs (or asking for an earlier snapshot) must give that run's weights, not the longer run's."""
    data = sr_data(16)
    fresh = sr_task()
    train(fresh, data, cfg(epochs=1), tmp_path / "fresh", progress=False)
    train(sr_task(), data, cfg(epochs=2), tmp_path / "run", progress=False)
    lowered = sr_task()
    res = train(lowered, data, cfg(epochs=1), tmp_path / "run", progress=False)
    assert not res.resumed and res.epochs_done == 1
    assert_same_weights(params(lowered.generator), params(fresh.generator))
    assert len(list((tmp_path / "run").glob("checkpoint.*.stale.pt"))) == 1   # the longer run's, kept


def test_checkpoint_of_other_training_code_is_not_resumed(tmp_path, monkeypatch):
    """A rule run again after a change to the training code must train, not return the old code's weights."""
    import workflow_scripts.train.loop as loop

    data = sr_data(16)
    train(sr_task(), data, cfg(epochs=1), tmp_path, progress=False)
    assert train(sr_task(), data, cfg(epochs=1), tmp_path, progress=False).resumed
    monkeypatch.setattr(loop, "training_code_version", lambda objective, ds: "changed")
    res = train(sr_task(), data, cfg(epochs=1), tmp_path, progress=False)
    assert not res.resumed and res.epochs_done == 1
    assert loop.training_code_version.__name__ == "<lambda>"


def test_training_code_version_follows_the_objectives_and_models_code():
    import inspect

    from workflow_scripts.code_version import imported_files, modules_version
    from workflow_scripts.train.loop import training_code_version

    task = sr_task()
    v = training_code_version(task, torch.utils.data.TensorDataset(*sr_data(4)))
    assert len(v) == 16 and v == training_code_version(sr_task(), torch.utils.data.TensorDataset(*sr_data(8)))
    hashed = set(imported_files(inspect.getsourcefile(sys.modules["workflow_scripts.train.loop"])))
    for obj in (task, task.generator, task.discriminator):   # the step's and the networks' code are in the hash
        assert Path(inspect.getsourcefile(type(obj))).resolve() in hashed
    loop_only = modules_version(["workflow_scripts.train.loop"])
    assert modules_version(["torch.nn", "workflow_scripts.train.loop"]) == loop_only   # other packages do not count


def test_stale_temporary_files_are_cleaned(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    train(sr_task(), sr_data(16), cfg(epochs=1), tmp_path, progress=False)
    assert no_temporaries(tmp_path)


SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.nn.functional as F
    from workflow_scripts.models import SRDiscriminator, SRGenerator
    from workflow_scripts.train import PREEMPTED_EXIT_CODE, ConditionalTask, TrainConfig, train

    out, epochs = sys.argv[1], int(sys.argv[2])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 21, 21, generator=g) * 2 - 1
    y = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    task = ConditionalTask(SRGenerator(1, base=4), SRDiscriminator(1, base=4))
    res = train(task, (x, y), TrainConfig(epochs=epochs, batch_size=8, seed=1), out, progress=False)
    print(json.dumps({"completed": res.completed, "preempted": res.preempted, "signal": res.signal,
                      "start_epoch": res.start_epoch, "start_step": res.start_step, "epochs_done": res.epochs_done}))
    sys.exit(PREEMPTED_EXIT_CODE if res.preempted else 0)
""")


def test_sigterm_to_a_training_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-c", SCRIPT, str(tmp_path), "100000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / CHECKPOINT_NAME).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED_EXIT_CODE, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["preempted"] and not report["completed"] and report["signal"] == signal.SIGTERM
    assert "signal 15 received" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "losses.csv", "losses.png"]
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    saved = (ckpt["epoch"], ckpt["step_in_epoch"])
    assert saved >= (1, 0) and ckpt["global_step"] == 4 * saved[0] + saved[1]

    # the rerun continues from the saved position, not from scratch
    rerun = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(saved[0] + 1)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report["completed"] and (report["start_epoch"], report["start_step"]) == saved
    assert report["epochs_done"] == saved[0] + 1
    assert (tmp_path / GENERATOR_NAME).exists() and no_temporaries(tmp_path)


# ------------------------------------------------------------------------------------------------ losses
def test_l1_term_enters_the_generator_loss(tmp_path):
    data = sr_data(16)
    plain = train(sr_task(), data, cfg(epochs=1), tmp_path / "a", progress=False).history[0]
    weighted = train(sr_task(), data, cfg(epochs=1, l1_weight=10.0), tmp_path / "b", progress=False).history[0]
    assert plain["loss_g"] == plain["loss_g_adv"]
    assert plain["loss_l1"] > 0  # logged as a diagnostic even when not trained on
    assert weighted["loss_g"] == pytest.approx(weighted["loss_g_adv"] + 10.0 * weighted["loss_l1"], rel=1e-6)
    # same seed, same first batch: the first steps differ only by the L1 term's gradient
    assert weighted["loss_g"] > plain["loss_g"] + 1.0


def test_l1_weight_lowers_pixel_error(tmp_path):
    """On a learnable mapping (target = upsampled input) the L1 term pulls G(x) towards y within a few epochs,
    while the adversarial loss alone does not (the logged training-mode L1 of the last epoch)."""
    data = sr_data(32)
    l1 = {}
    for w in (0.0, 100.0):
        res = train(sr_task(), data, cfg(epochs=3, lr_g=2e-3, l1_weight=w), tmp_path / str(w), progress=False)
        l1[w] = res.history[-1]["loss_l1"]
    assert l1[100.0] < 0.6 * l1[0.0], l1


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig.from_mapping({"epochs": 2, "learning_rate": 1e-3})
    assert TrainConfig.from_mapping({"betas": [0.5, 0.999]}).betas == (0.5, 0.999)
    images = torch.rand(16, 1, 64, 64)
    task = NoiseToImageTask(DCGANGenerator(nz=4, base=4), DCGANDiscriminator(1, base=4))
    with pytest.raises(ConfigError, match="l1_weight"):
        train(task, images, cfg(l1_weight=1.0), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        train(task, images, cfg(batch_size=64), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="CUDA"):
        if torch.cuda.is_available():
            raise ConfigError("CUDA present: nothing to test")
        train(task, images, cfg(device="cuda"), tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()  # nothing written before the configuration is known to be valid


def test_checkpoint_of_another_setup_is_kept_aside_not_overwritten(tmp_path):
    x, y = sr_data(32)
    train(sr_task(), (x, y), cfg(epochs=1, seed=1), tmp_path, progress=False)
    first = (tmp_path / CHECKPOINT_NAME).read_bytes()
    res = train(sr_task(), (x, y), cfg(epochs=1, seed=2), tmp_path, progress=False)
    assert not res.resumed and res.start_epoch == 0
    kept = list(tmp_path.glob("checkpoint.*.stale.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == first
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() != first


def test_dataset_fingerprint_does_not_depend_on_the_thread_count():
    """A job resumed with another --cpus-per-task must recognise its own checkpoint: torch's parallel sums of a
    (992, 1, 21, 21) tensor differ in the last bit between 1 and 2 threads; the fingerprint must not."""
    from torch.utils.data import TensorDataset

    from workflow_scripts.train.loop import _dataset_fingerprint

    data = TensorDataset(torch.rand(992, 1, 21, 21, generator=torch.Generator().manual_seed(3)))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _dataset_fingerprint(data)
        torch.set_num_threads(2)
        two = _dataset_fingerprint(data)
    finally:
        torch.set_num_threads(before)
    assert one == two


# ------------------------------------------------------------------------------------- weight averaging
def test_weight_average_follows_the_warm_up_recursion():
    """Against the recursion by hand: a_0 = w_0, a_t = a_{t-1} + (1 - min(d, (1+t)/(10+t))) (w_t - a_{t-1});
    BatchNorm running statistics are averaged too and its integer batch count is copied."""
    from workflow_scripts.train import weight_average

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = weight_average(net, 0.9)
    rng = np.random.default_rng(0)
    expected = None
    for t in range(30):
        with torch.no_grad():
            net[0].weight.copy_(torch.as_tensor(rng.normal(size=(2, 3)), dtype=torch.float32))
            net[1].running_mean.fill_(float(t))
            net[1].num_batches_tracked.fill_(t)
        w = net[0].weight.detach().double().clone()
        if expected is None:
            expected, mean = w, torch.tensor(0.0, dtype=torch.float64)
        else:
            k = 1.0 - min(0.9, (1.0 + t) / (10.0 + t))
            expected = expected + k * (w - expected)
            mean = mean + k * (t - mean)
        ema.update_parameters(net)
    torch.testing.assert_close(ema.module[0].weight.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ema.module[1].running_mean.double(), mean.expand(2), rtol=1e-5, atol=1e-5)
    assert int(ema.module[1].num_batches_tracked) == 29
    assert 20.0 < float(mean) < 28.0  # an average over the last ~10 updates, not the last value (29)


def test_ema_generator_is_written_and_resumes_exactly(tmp_path):
    """ema_decay > 0: generator.pt holds the averaged weights (not the last step's), and a run stopped by a
    signal mid-epoch and resumed writes the same averaged generator as an uninterrupted run."""
    data = sr_data(32)
    straight = train(sr_task(), data, cfg(ema_decay=0.8), tmp_path / "a", progress=False)
    ckpt = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)
    saved = torch.load(straight.generator_path, weights_only=True)
    assert saved["meta"]["ema_decay"] == 0.8
    last = ckpt["modules"]["generator"]["state_dict"]
    averaged = {k.removeprefix("module."): v for k, v in ckpt["ema"]["generator"].items() if k.startswith("module.")}
    assert_same_weights(saved["state_dict"], averaged)
    assert any(not torch.equal(saved["state_dict"][k], last[k]) for k in last if last[k].is_floating_point())

    def stop(info):
        if info.global_step == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train(sr_task(), data, cfg(ema_decay=0.8), tmp_path / "b", progress=False, callback=stop)
    assert first.preempted
    second = train(sr_task(), data, cfg(ema_decay=0.8), tmp_path / "b", progress=False)
    assert second.resumed and second.completed
    assert_same_weights(torch.load(second.generator_path, weights_only=True)["state_dict"], saved["state_dict"])
    # the averaged generator loads and runs like any other
    out = generate(load_generator(second.generator_path, "cpu"), data[0][:4])
    assert out.shape == (4, 1, 64, 64) and np.isfinite(out).all()


def test_ema_decay_is_validated_and_changes_the_setup(tmp_path):
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=-0.1)
    assert "ema_decay" not in TrainConfig().fingerprint()  # old checkpoints (no option) still resume
    assert TrainConfig(ema_decay=0.99).fingerprint()["ema_decay"] == 0.99


# ------------------------------------------------------------------------------ ambient noise (AmbientGAN)
def test_asinh_noise_adds_the_physical_sigma_and_passes_gradients():
    """Images stored asinh-scaled: the noise added is white with the given sigma in *physical* units, in each
    channel, whatever the brightness (the scaled-space noise shrinks on bright pixels, as real noise does)."""
    from workflow_scripts.train import AsinhNoise

    torch.manual_seed(0)
    obs = AsinhNoise(sigma=[0.01, 0.05], softening=[0.03, 0.1], scale=[5.0, 4.0])
    soft, scale = torch.tensor([0.03, 0.1])[None, :, None, None], torch.tensor([5.0, 4.0])[None, :, None, None]
    for level in (0.0, 0.5):  # background and bright pixels
        y = torch.full((64, 2, 32, 32), level, requires_grad=True)
        out = obs(y)
        dx = soft * torch.sinh(scale * out) - soft * torch.sinh(scale * y)
        std = dx.detach().std(dim=(0, 2, 3))
        torch.testing.assert_close(std, torch.tensor([0.01, 0.05]), rtol=0.03, atol=0)
        assert abs(float(dx.detach().mean())) < 1e-3
        out.sum().backward()
        assert y.grad is not None and torch.isfinite(y.grad).all() and float(y.grad.abs().min()) > 0
    with pytest.raises(ConfigError, match="AsinhNoise"):
        AsinhNoise(sigma=[-1.0], softening=[1.0], scale=[1.0])
    with pytest.raises(ConfigError, match="AsinhNoise"):
        AsinhNoise(sigma=[1.0, 1.0, 1.0], softening=[1.0, 1.0], scale=[1.0])


def test_discriminator_sees_the_observed_fake_and_l1_the_clean_one(tmp_path):
    """With ``observe``: every fake image shown to D is G(x) plus noise; the L1 term still uses G(x) (the logged
    L1 equals that of the clean output); the set-up is part of the checkpoint fingerprint."""
    from workflow_scripts.train import AsinhNoise

    task = sr_task()
    task = ConditionalTask(task.generator, task.discriminator,
                           observe=AsinhNoise(sigma=[0.5], softening=[1.0], scale=[1.0]))
    shown, made = [], []
    task.discriminator.register_forward_pre_hook(lambda m, args: shown.append(args[0].detach().clone()))
    task.generator.register_forward_hook(lambda m, args, out: made.append(out.detach().clone()))
    train(task, sr_data(8), cfg(epochs=1, batch_size=8), tmp_path / "a", progress=False)
    assert len(made) == 1 and len(shown) == 3          # D(real), D(fake) for D's step, D(fake) for G's step
    real_in, fake_d, fake_g = shown
    assert torch.equal(fake_d, fake_g)                  # one noisy view per step, the same for both losses
    noise = torch.sinh(fake_d) - torch.sinh(made[0])
    assert 0.4 < float(noise.std()) < 0.6
    plain = sr_task()
    assert task.fingerprint()["observe"]["sigma"] == [0.5] and "observe" not in plain.fingerprint()


# ------------------------------------------------------------------------------------ learning-rate schedules
def test_lr_factor_follows_each_schedule_and_refuses_an_unknown_one():
    from workflow_scripts.train import LR_SCHEDULES, lr_factor

    done = np.linspace(0.0, 1.0, 101)[:-1]
    for schedule in LR_SCHEDULES:
        f = np.array([lr_factor(schedule, t) for t in done])
        assert f[0] == 1.0 and (np.diff(f) <= 1e-12).all() and (f >= 0).all(), schedule
    assert lr_factor("constant", 0.9) == 1.0
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5) and lr_factor("cosine", 0.99) < 1e-3
    assert lr_factor("linear", 0.49) == 1.0 and lr_factor("linear", 0.75) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="lr_schedule"):
        lr_factor("step", 0.5)
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(lr_schedule="exponential")


class RateRecordingTask(ConditionalTask):
    """The SR task, recording both optimisers' learning rates at every step (before the step uses them)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.rates = []

    def step(self, batch, ctx):
        self.rates.append((ctx.optimizers["generator"].param_groups[0]["lr"],
                           ctx.optimizers["discriminator"].param_groups[0]["lr"]))
        return super().step(batch, ctx)


def recording_task() -> RateRecordingTask:
    return RateRecordingTask(SRGenerator(1, base=4), SRDiscriminator(1, base=4, conditional=True))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_schedule_sets_every_step_and_a_signal_resume_follows_it_bit_for_bit(tmp_path, schedule, caplog):
    from workflow_scripts.train import lr_factor

    data = sr_data(32)  # 4 steps per epoch, 3 epochs
    straight = recording_task()
    with caplog.at_level("INFO", logger="workflow_scripts.train.loop"):
        res = train(straight, data, cfg(lr_schedule=schedule, lr_g=2e-4, lr_d=1e-4), tmp_path / "a", progress=False)
    assert res.completed and len(straight.rates) == 12
    want = [(2e-4 * lr_factor(schedule, k / 12), 1e-4 * lr_factor(schedule, k / 12)) for k in range(12)]
    np.testing.assert_allclose(straight.rates, want, rtol=1e-12)
    assert straight.rates[-1][0] < 0.3 * 2e-4  # it does decay
    # the epoch lines say where the rate stands, and the model file which schedule trained it
    last = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 3/3")]
    assert last and f"learning rate x{lr_factor(schedule, 11 / 12):.3g} ({schedule})" in last[0]
    assert torch.load(res.generator_path, weights_only=True)["meta"]["lr_schedule"] == schedule

    def stop(info):
        if info.global_step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    first = recording_task()
    assert train(first, data, cfg(lr_schedule=schedule, lr_g=2e-4, lr_d=1e-4), tmp_path / "b", progress=False,
                 callback=stop).preempted
    second = recording_task()
    again = train(second, data, cfg(lr_schedule=schedule, lr_g=2e-4, lr_d=1e-4), tmp_path / "b", progress=False)
    assert again.resumed and again.completed
    assert first.rates + second.rates == straight.rates
    assert_same_weights(params(second.generator), params(straight.generator))
    assert_same_weights(params(second.discriminator), params(straight.discriminator))
    # the constant rate trains other weights (the schedule is not a no-op)
    constant = sr_task()
    train(constant, data, cfg(lr_g=2e-4, lr_d=1e-4), tmp_path / "c", progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(params(constant.generator).values(),
                                                     params(straight.generator).values()))


def test_a_scheduled_run_is_not_extended_from_a_shorter_one(tmp_path):
    """Under a schedule the rate at every step depends on the run's length, so a 1-epoch checkpoint cannot be
    continued into a 2-epoch run: it is set aside and the run equals a fresh one."""
    data = sr_data(16)
    assert "lr_schedule" not in TrainConfig().fingerprint()  # checkpoints written before the option still resume
    train(sr_task(), data, cfg(epochs=1, lr_schedule="cosine"), tmp_path / "run", progress=False)
    longer = sr_task()
    res = train(longer, data, cfg(epochs=2, lr_schedule="cosine"), tmp_path / "run", progress=False)
    assert not res.resumed and res.epochs_done == 2
    fresh = sr_task()
    train(fresh, data, cfg(epochs=2, lr_schedule="cosine"), tmp_path / "fresh", progress=False)
    assert_same_weights(params(longer.generator), params(fresh.generator))
