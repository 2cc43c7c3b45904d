"""The Spatial-GAN of Smith & Geach 2019 and its relativistic-average packed objective: the generator's exact 16x
upsampling of any noise field and its seamlessness (two overlapping noise fields give the same pixels away from
their borders), the packed discriminator on any size, PacGAN packing by values, the RaSGAN losses against a hand
computation, one step's gradients against a replay, training through the loop (model file rebuilt, stop and resume
bit for bit, also on a real SIGTERM) and the architecture round trip. CPU, one thread, tiny networks except where
the paper's own network is the point.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from workflow_scripts.errors import ConfigError
from workflow_scripts.models import MODELS, SGANDiscriminator, SGANGenerator, architecture, build_model, init_weights
from workflow_scripts.models.sgan import pack
from workflow_scripts.train import CHECKPOINT_NAME, StepContext, TrainConfig, load_model, train
from workflow_scripts.train.objectives import RelativisticPackedGAN, ragan_losses
from workflow_scripts.train.objectives.ragan import PAPER_OPTIONS

TIMING = ("seconds", "images_per_s")


pytestmark = pytest.mark.usefixtures("one_thread_seeded")


def tiny_objective(nz: int = 8) -> RelativisticPackedGAN:
    return RelativisticPackedGAN(SGANGenerator(nz=nz, channels=3, filters=(8, 8, 8, 8)),
                                 SGANDiscriminator(channels=3, pack=2, filters=(8, 8, 16, 16)), noise_channels=nz)


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def losses_without_timing(out: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(open(out / "losses.csv"))]


# ------------------------------------------------------------------------------------------------ generator
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (3, 5), (4, 4)])
def test_generator_output_is_exactly_16x_the_noise_field_and_in_0_1(hw):
    g = init_weights(SGANGenerator())  # the paper's network
    assert g.scale == 16 and g.arch == {"nz": 50, "channels": 3, "filters": [256, 128, 64, 32], "output_bias": None}
    assert not [m for m in g.modules() if "Norm" in type(m).__name__]  # no normalisation layers
    h, w = hw
    with torch.no_grad():
        y = g(torch.randn(2, 50, h, w))
    assert y.shape == (2, 3, 16 * h, 16 * w)
    assert float(y.min()) > 0.0 and float(y.max()) < 1.0
    with pytest.raises(ValueError, match=r"expects noise \(B, 50, h, w\)"):
        g(torch.randn(1, 49, h, w))


@pytest.mark.parametrize("scheme", ["glorot", "normal"])
def test_output_bias_starts_the_untrained_generator_at_the_sky(scheme):
    """A deep field's sky is ~0.005 after min-max scaling: with output_bias the untrained generator's median pixel is
    that level in every band (the sigmoid keeps the median of a symmetric ripple around the logit), under both
    initialisations; without it the median is 0.5, ~100x the sky."""
    sky = [0.006, 0.0045, 0.005]
    g = init_weights(SGANGenerator(nz=50, channels=3, filters=(32, 16, 8, 8), output_bias=sky), scheme=scheme)
    plain = init_weights(SGANGenerator(nz=50, channels=3, filters=(32, 16, 8, 8)), scheme=scheme)
    z = torch.randn(2, 50, 6, 6)
    with torch.no_grad():
        out, out_plain = g(z), plain(z)
    median = out.transpose(0, 1).reshape(3, -1).median(dim=1).values
    torch.testing.assert_close(median, torch.tensor(sky), rtol=0.25, atol=0.0)
    assert abs(float(out_plain.median()) - 0.5) < 0.05
    assert build_model(*architecture(g).values()).arch["output_bias"] == sky  # kept with the model file
    for bad in ([0.5, 0.5], [0.0, 0.1, 0.1], [0.2, 1.0, 0.2]):
        with pytest.raises(ValueError, match="output_bias must hold 3 levels in"):
            SGANGenerator(channels=3, output_bias=bad)


def test_glorot_init_is_keras_default_and_normal_is_dcgan():
    """glorot: uniform in +-sqrt(6 / (fan_in + fan_out)) (Keras' default, the authors' code), biases 0; normal:
    N(0, 0.02). Measured on the paper's discriminator's 32 -> 64 convolution (fans 32*16 and 64*16)."""
    d = init_weights(SGANDiscriminator(), scheme="glorot")
    w = d.features[4].weight.detach()
    bound = math.sqrt(6.0 / (32 * 16 + 64 * 16))
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in d.modules() if isinstance(m, torch.nn.Conv2d))
    w = init_weights(SGANDiscriminator(), scheme="normal").features[4].weight.detach()
    assert float(w.std()) == pytest.approx(0.02, rel=0.02)
    with pytest.raises(ValueError, match="scheme must be one of"):
        init_weights(d, scheme="he")
    with pytest.raises(ConfigError, match="init must be one of"):
        RelativisticPackedGAN(SGANGenerator(nz=8, filters=(4,)), SGANDiscriminator(filters=(4,)), 8, init="he")
    obj = RelativisticPackedGAN(SGANGenerator(nz=8, filters=(4,)), SGANDiscriminator(filters=(4,)), 8,
                                init="glorot")
    assert obj.fingerprint()["init"] == "glorot"


def test_generator_is_fully_convolutional_and_seamless_away_from_the_noise_borders(capsys):
    """The image of a crop of a noise field equals the matching part of the image of the whole field, except in
    the margins the generator reports (where the crop's zero padding stands in for the missing noise)."""
    g = init_weights(SGANGenerator(), std=0.05).eval()  # wider than N(0, 0.02): the image has contrast (~0.2 rms)
    before, after = g.margins()
    assert (before, after) == (30, 44)  # asymmetric: the (1, 2) "same" padding of the k4 s1 convolutions
    z = torch.randn(1, 50, 12, 12)
    r0, c0, nr, nc = 2, 3, 8, 6  # the crop: noise rows 2..9, columns 3..8
    with torch.no_grad():
        whole = g(z)
        part = g(z[:, :, r0:r0 + nr, c0:c0 + nc])
    assert whole.shape[-2:] == (192, 192) and part.shape[-2:] == (16 * nr, 16 * nc)  # larger noise, larger image
    same_place = whole[..., 16 * r0:16 * (r0 + nr), 16 * c0:16 * (c0 + nc)]
    diff = (same_place - part).abs().amax(dim=(0, 1))
    inner = diff[before:16 * nr - after, before:16 * nc - after]
    assert inner.shape == (16 * nr - before - after, 16 * nc - before - after) == (54, 22)
    largest = float(inner.max())
    border = diff.clone()
    border[before:16 * nr - after, before:16 * nc - after] = 0
    with capsys.disabled():
        print(f"\n[sgan seamlessness] largest |difference| in the {tuple(inner.shape)} interior: {largest:.3g} "
              f"(image rms {float(part.std()):.3g}; in the margins up to {float(border.max()):.3g})")
    assert largest <= 1e-5
    assert float(border.max()) > 1e-3  # the margins do depend on the missing noise: the comparison is not empty
    # the margins are tight: the first row and column outside the interior already differ
    assert float(diff[before - 1, before:16 * nc - after].max()) > 0
    assert float(diff[before:16 * nr - after, 16 * nc - after].max()) > 0


# -------------------------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (64, 48)])
def test_packed_discriminator_takes_six_channels_at_any_size(hw):
    d = init_weights(SGANDiscriminator())
    assert d.arch == {"channels": 3, "pack": 2, "filters": [32, 64, 128, 256], "negative_slope": 0.1}
    assert d.in_channels == 6
    assert [m.negative_slope for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)] == [0.1] * 4
    logits = d(torch.rand(3, 6, *hw))
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match=r"expects packed images \(B, 6, H, W\)"):
        d(torch.rand(3, 3, *hw))  # unpacked images are refused
    # the paper's text: five convolutions (the list is the constructor's)
    five = SGANDiscriminator(filters=(32, 64, 128, 256, 512))
    assert sum(isinstance(m, torch.nn.Conv2d) for m in five.modules()) == 5
    assert five(torch.rand(2, 6, *hw)).shape == (2,)


def test_pack_concatenates_images_2i_and_2i_plus_1_on_channels():
    x = torch.arange(6 * 3 * 2 * 2, dtype=torch.float32).reshape(6, 3, 2, 2)
    p = pack(x)
    assert p.shape == (3, 6, 2, 2)
    for i in range(3):
        assert torch.equal(p[i, :3], x[2 * i]) and torch.equal(p[i, 3:], x[2 * i + 1])
    p3 = pack(x, 3)
    assert p3.shape == (2, 9, 2, 2)
    assert torch.equal(p3[1, 3:6], x[4]) and torch.equal(p3[1, 6:], x[5])
    with pytest.raises(ValueError, match=r"batch of 5 images cannot be packed in groups of 2.*multiple of 2"):
        pack(x[:5])
    with pytest.raises(ValueError, match="batch of 1 images"):
        pack(x[:1])


# --------------------------------------------------------------------------------------------------- losses
def test_ragan_losses_match_a_hand_computation():
    cr, cf = [1.5, -0.5, 0.25, 2.0], [-1.0, 0.3, 0.7, -2.5]
    mr, mf = sum(cr) / len(cr), sum(cf) / len(cf)

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    def mean(vs) -> float:
        vs = list(vs)
        return sum(vs) / len(vs)

    d_r = [sig(c - mf) for c in cr]  # D_R(x_r)
    d_f = [sig(c - mr) for c in cf]  # D_R(x_f)
    want_d = -mean(math.log(p) for p in d_r) - mean(math.log(1 - p) for p in d_f)
    want_g = -mean(math.log(p) for p in d_f) - mean(math.log(1 - p) for p in d_r)
    loss_d, loss_g = ragan_losses(torch.tensor(cr), torch.tensor(cf))
    assert loss_d.shape == loss_g.shape == ()
    assert float(loss_d) == pytest.approx(want_d, rel=1e-6)
    assert float(loss_g) == pytest.approx(want_g, rel=1e-6)
    # real and fake swapped: the generator's loss is the critic's loss of the swapped pair
    swapped_d, _ = ragan_losses(torch.tensor(cf), torch.tensor(cr))
    assert float(swapped_d) == pytest.approx(want_g, rel=1e-6)
    # stable at logits where sigmoid saturates in float32: ~0 for the winner, ~ the logit gap for the loser
    big_d, big_g = ragan_losses(torch.tensor([60.0, 60.0]), torch.tensor([-60.0, -60.0]))
    assert float(big_d) == pytest.approx(0.0, abs=1e-6) and float(big_g) == pytest.approx(240.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- step
def test_step_updates_both_networks_with_the_rasgan_gradients():
    objective = tiny_objective()
    objective.reset_parameters()
    g, d = objective.generator, objective.discriminator
    cfg = TrainConfig(batch_size=4, **PAPER_OPTIONS)
    optimizers = objective.optimizers(cfg)
    ctx = StepContext(device=torch.device("cpu"), amp=False, config=cfg, modules=objective.modules,
                      optimizers=optimizers,
                      scalers={k: torch.amp.GradScaler("cpu", enabled=False) for k in optimizers},
                      parameters={k: list(m.parameters()) for k, m in objective.modules.items()})
    real = images(4)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    rng = torch.get_rng_state()
    losses = objective.step((real,), ctx)
    assert set(losses) == set(objective.loss_columns) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert 0 < float(losses["d_real"]) < 1 and 0 < float(losses["d_fake"]) < 1
    for before, after in ((g0, g), (d0, d)):  # every parameter of both networks moved ...
        for (name, p0), p1 in zip(before.named_parameters(), after.parameters()):
            if after is d and name == "dense.bias":  # ... but the critic's last bias: the relativistic losses see
                assert torch.equal(p0, p1) and float(p1.grad.abs().max()) == 0  # C_r - mean C_f only (no shift)
            else:
                assert not torch.equal(p0, p1), name
    assert all(p.requires_grad for p in d.parameters())  # unfrozen after the generator step

    # replay: the same noise (one draw of the global RNG), the critic's loss at the old weights ...
    torch.set_rng_state(rng)
    z = torch.randn(4, 8, 2, 2)
    d_ref = copy.deepcopy(d0)
    loss_d, _ = ragan_losses(d_ref(pack(real)), d_ref(pack(g0(z).detach())))
    loss_d.backward()
    assert float(losses["loss_d"]) == pytest.approx(loss_d.item(), rel=1e-6)
    for (name, p_ref), p in zip(d_ref.named_parameters(), d.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-8, msg=name)  # no G-step leftovers
    # ... and the generator's loss through the updated critic, C(real) included
    g_ref, d1 = copy.deepcopy(g0), copy.deepcopy(d).requires_grad_(False)
    _, loss_g = ragan_losses(d1(pack(real)), d1(pack(g_ref(z))))
    loss_g.backward()
    assert float(losses["loss_g"]) == pytest.approx(loss_g.item(), rel=1e-6)
    assert sum(float(p.grad.abs().sum()) for p in g.parameters()) > 0
    for (name, p_ref), p in zip(g_ref.named_parameters(), g.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-8, msg=name)


def test_objective_refuses_what_it_cannot_train(tmp_path):
    with pytest.raises(ValueError, match="noise_channels=50 but the generator takes 8"):
        RelativisticPackedGAN(SGANGenerator(nz=8, filters=(4,)), SGANDiscriminator(filters=(4,)))
    with pytest.raises(ValueError, match="pack=3 but the discriminator packs 2"):
        RelativisticPackedGAN(SGANGenerator(nz=8, filters=(4,)), SGANDiscriminator(filters=(4,)), 8, pack=3)
    with pytest.raises(ConfigError, match="batch_size must be a multiple of 2, got 3"):
        train(tiny_objective(), images(6), TrainConfig(epochs=1, batch_size=3), tmp_path / "odd", progress=False)
    with pytest.raises(ValueError, match=r"multiples of 16.*got 24 x 24"):
        train(tiny_objective(), images(4, size=24), TrainConfig(epochs=1, batch_size=2), tmp_path / "24",
              progress=False)


# ---------------------------------------------------------------------------------------------------- loop
def test_train_two_epochs_writes_a_generator_that_rebuilds(tmp_path):
    objective = tiny_objective()
    res = train(objective, images(16), TrainConfig(epochs=2, batch_size=8, seed=3, **PAPER_OPTIONS), tmp_path,
                progress=False)
    assert res.completed and res.global_step == 4 and res.model_path == tmp_path / "generator.pt"
    assert tuple(res.history[0]) == ("epoch", "steps", "images", "loss_d", "loss_g", "d_real", "d_fake", *TIMING)
    assert all(math.isfinite(row[k]) for row in res.history for k in ("loss_d", "loss_g", "d_real", "d_fake"))
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["objective"] == "ragan_packed"
    model = load_model(res.model_path, device="cpu")
    assert isinstance(model, SGANGenerator) and architecture(model) == architecture(objective.generator)
    trained = objective.generator.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        y = model(torch.randn(1, 8, 3, 2))
    assert y.shape == (1, 3, 48, 32) and float(y.min()) > 0 and float(y.max()) < 1


@pytest.mark.parametrize("how", ["callback", "sigterm"])
def test_stop_mid_epoch_then_resume_is_bit_identical(tmp_path, how):
    data, cfg = images(12), TrainConfig(epochs=3, batch_size=4, seed=7, **PAPER_OPTIONS)  # 3 steps per epoch
    straight = tiny_objective()
    assert train(straight, data, cfg, tmp_path / "straight", progress=False).completed

    def stop(info):
        if info.global_step != 4:  # mid-epoch 2
            return False
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler only sets a flag
            return False
        return True

    out = tmp_path / how
    first = train(tiny_objective(), data, cfg, out, progress=False, callback=stop)
    assert not first.completed and first.preempted and first.global_step == 4
    assert first.signal == (signal.SIGTERM if how == "sigterm" else -1)
    assert not (out / "generator.pt").exists()
    resumed = tiny_objective()
    second = train(resumed, data, cfg, out, progress=False)
    assert second.completed and second.resumed and (second.start_epoch, second.start_step) == (1, 1)
    for name in ("generator", "discriminator"):
        a, b = straight.modules[name].state_dict(), resumed.modules[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    saved = torch.load(out / "generator.pt", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "straight" / "generator.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    assert losses_without_timing(out) == losses_without_timing(tmp_path / "straight")
    assert len(losses_without_timing(out)) == 3


def test_architecture_round_trip():
    assert MODELS["SGANGenerator"] is SGANGenerator and MODELS["SGANDiscriminator"] is SGANDiscriminator
    for model in (SGANGenerator(nz=12, channels=1, filters=(16, 8, 4)),
                  SGANDiscriminator(channels=1, pack=3, filters=(4, 8, 8, 16, 16), negative_slope=0.2)):
        spec = architecture(model)
        assert json.loads(json.dumps(spec)) == spec  # JSON-able
        rebuilt = build_model(spec["name"], spec["arch"])
        assert architecture(rebuilt) == spec
        a, b = model.state_dict(), rebuilt.state_dict()
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    g = SGANGenerator(nz=12, channels=1, filters=(16, 8, 4))
    assert g.scale == 8 and g(torch.randn(1, 12, 2, 3)).shape == (1, 1, 16, 24)
