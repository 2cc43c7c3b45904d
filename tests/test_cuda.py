"""The GPU paths, run where a GPU is: every objective (and the class-conditional PixelCNN) trains on it with mixed
output, a run stopped mid-epoch resumes there, the photometry engine fits the same fluxes as on CPU, the
Spatial-GAN's tiled field is seamless there and equals the CPU's, the PixelCNN's log-likelihoods equal the CPU's.

Skipped without CUDA (CI and the development machines have none); ``scripts/device/session.sh`` runs them on a
lent GPU. ``GENASTRO_TEST_DEVICE=cpu`` runs the same code paths on CPU against CPU (a check of the tests
themselves, without mixed precision). Comparisons with the CPU switch TF32 off (cuDNN's default for convolutions
keeps 10 mantissa bits); the pipeline's own GPU runs keep torch's defaults, and the seamlessness test prints what
TF32 does to it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workflow_scripts.models import (DCGANDiscriminator, DCGANGenerator, PatchDiscriminator, PixelCNN,
                                     SGANDiscriminator, SGANGenerator, SRDiscriminator, SRGenerator, UNetGenerator,
                                     init_weights)
from workflow_scripts.models.pixelcnn import quantize
from workflow_scripts.photometry.mixture_engine import FitSettings, MixtureEngine
from workflow_scripts.photometry.mixtures import galaxy_mixture, render_mixture
from workflow_scripts.photometry.psf_fit import fit_psf_mixture
from workflow_scripts.studies.smith_geach19.tessellate import noise_for_field, one_shot, tessellate
from workflow_scripts.train import (ConditionalGAN, ConditionalTask, LikelihoodObjective, NoiseToImageTask,
                                    TrainConfig, load_model, train)
from workflow_scripts.train.objectives import RelativisticPackedGAN

DEVICE = os.environ.get("GENASTRO_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")

pytestmark = pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(),
                                reason="no CUDA device (GENASTRO_TEST_DEVICE=cpu runs these paths on CPU)")


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for convolutions and matrix products (restored after): fp32 on the GPU is then fp32."""
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- every objective trains there
def _dcgan() -> tuple[object, object, torch.Tensor]:
    data = torch.rand(32, 3, 64, 64, generator=_gen(0)) * 2 - 1
    return NoiseToImageTask(DCGANGenerator(nz=8, channels=3, base=8), DCGANDiscriminator(3, base=8)), data, \
        torch.randn(4, 8, 1, 1, generator=_gen(1))


def _srgan() -> tuple[object, object, torch.Tensor]:
    x = torch.rand(32, 1, 21, 21, generator=_gen(0)) * 2 - 1
    y = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False).clamp(-1, 1)
    return ConditionalTask(SRGenerator(1, base=8), SRDiscriminator(1, base=8)), (x, y), x[:4]


def _pix2pix() -> tuple[object, object, torch.Tensor]:
    x = torch.rand(32, 3, 90, 90, generator=_gen(0)) * 2 - 1
    y = (0.5 * x + 0.1 * torch.rand(x.shape, generator=_gen(1))).clamp(-1, 1)
    g = init_weights(UNetGenerator(3, 3, base=8, depth=5))
    d = init_weights(PatchDiscriminator(3, 3, base=8, conditional=True))
    return ConditionalGAN(g, d), (x, y), x[:4]


def _sgan() -> tuple[object, object, torch.Tensor]:
    data = torch.rand(32, 3, 64, 64, generator=_gen(0))
    obj = RelativisticPackedGAN(SGANGenerator(nz=8, channels=3, filters=(16, 16, 8, 8)),
                                SGANDiscriminator(channels=3, pack=2, filters=(8, 16, 16, 16)), noise_channels=8)
    return obj, data, torch.randn(1, 8, 6, 6, generator=_gen(1))


def _pixelcnn() -> tuple[object, object, torch.Tensor]:
    data = quantize(torch.rand(64, 1, 16, 16, generator=_gen(0)) * 2 - 1, 8)
    model = PixelCNN(filters=16, n_resnet=1, n_mix=3)
    return LikelihoodObjective(model, log_prob=model.params_log_prob), data, data[:4]


def _pixelcnn_conditional() -> tuple[object, object, torch.Tensor]:
    """The likelihood-ratio study's shared model: one PixelCNN conditioned on the set, on (images, labels)."""
    data = quantize(torch.rand(64, 1, 16, 16, generator=_gen(0)) * 2 - 1, 8)
    labels = torch.arange(64) % 2
    model = PixelCNN(filters=16, n_resnet=1, n_mix=3, n_classes=2)
    return LikelihoodObjective(model, log_prob=model.params_log_prob, conditional=True), (data, labels), data[:4]


OBJECTIVES: dict[str, Callable[[], tuple[object, object, torch.Tensor]]] = {
    "dcgan": _dcgan, "srgan": _srgan, "pix2pix": _pix2pix, "sgan": _sgan, "pixelcnn": _pixelcnn,
    "pixelcnn_conditional": _pixelcnn_conditional}


#: the objectives with an L1 term (paired input and target)
PAIRED = ("srgan", "pix2pix")


def _config(name: str, **kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, seed=3, device=DEVICE, lr=1e-3, betas=(0.5, 0.999),
                l1_weight=10.0 if name in PAIRED else 0.0)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_trains_on_the_device_and_its_model_gives_the_cpu_output(tmp_path, name):
    objective, data, probe = OBJECTIVES[name]()
    res = train(objective, data, _config(name), tmp_path, progress=False)
    assert res.completed and res.epochs_done == 2 and res.model_path.exists()
    losses = {k: v for row in res.history for k, v in row.items() if k.startswith(("loss", "nll", "bits"))}
    assert losses and all(math.isfinite(v) for v in losses.values()), res.history
    print(f"\n[{DEVICE} {name}] {res.throughput()}; last epoch {res.history[-1]}")
    with exact_fp32(), torch.no_grad():
        on_cpu, on_dev = load_model(res.model_path, "cpu"), load_model(res.model_path, DEVICE)
        if name.startswith("pixelcnn"):
            y = 1 if name == "pixelcnn_conditional" else None   # the class the trained model is scored under
            a, b = on_cpu.log_prob_pixels(probe, y), on_dev.log_prob_pixels(probe.to(DEVICE), y).cpu()
            tol = 1e-3  # nats per pixel
        else:
            a, b = on_cpu(probe), on_dev(probe.to(DEVICE)).cpu()
            tol = 1e-4  # outputs in [-1, 1] or [0, 1]
    assert a.shape == b.shape
    diff = float((a - b).abs().max())
    print(f"[{DEVICE} {name}] largest |{DEVICE} - cpu| of the trained model's output: {diff:.3g}")
    assert diff <= tol


def test_a_run_stopped_mid_epoch_resumes_on_the_device(tmp_path):
    """The loop's resume on the GPU: the second run starts at the checkpoint's step and ends where an uninterrupted
    run ends (bitwise equality is promised on CPU only: the largest difference is printed)."""
    cfg = _config("pix2pix", epochs=3)
    straight, data, _ = _pix2pix()
    assert train(straight, data, cfg, tmp_path / "straight", progress=False).completed
    first_obj, _, _ = _pix2pix()
    first = train(first_obj, data, cfg, tmp_path / "stopped", progress=False,
                  callback=lambda info: info.global_step == 6)  # mid-epoch 2 of 4 steps each
    assert first.preempted and not first.completed and first.global_step == 6
    resumed, _, _ = _pix2pix()
    second = train(resumed, data, cfg, tmp_path / "stopped", progress=False)
    assert second.completed and second.resumed and (second.start_epoch, second.start_step) == (1, 2)
    a, b = straight.modules["generator"].state_dict(), resumed.modules["generator"].state_dict()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    print(f"\n[{DEVICE} resume] largest weight difference, resumed vs uninterrupted: {worst:.3g}")
    assert worst <= 1e-4


# ------------------------------------------------------------------------------------------------ photometry
def test_mixture_fits_on_the_device_equal_the_cpu_fits():
    """Eight blends of two exponential galaxies 12 px apart (the engine's own renders, white noise): float64 fits on the GPU and
    on the CPU give the same fluxes and flags."""
    psf_img = render_mixture(galaxy_mixture("gauss", 12.0, 12.0, 0.0, 0.0, 2 * 1.7 ** 2, 1.0), (25, 25))
    psf = fit_psf_mixture(psf_img, 3)
    rng = np.random.default_rng(0)
    images, positions = [], []
    for _ in range(8):
        pos = np.array([[12.0, 18.0], [24.0, 18.0]]) + rng.uniform(-1, 1, (2, 2))
        img = sum(render_mixture(galaxy_mixture("exp", x, y, 0.1, -0.05, 6.0, f), (36, 36), pixel_variance=1 / 12)
                  for (x, y), f in zip(pos, rng.uniform(200, 600, 2)))
        images.append(img + rng.normal(0, 1.0, img.shape))
        positions.append(pos + rng.normal(0, 0.2, pos.shape))
    images = np.array(images)
    fits = {dev: MixtureEngine(psf, FitSettings(model="exp", device=dev, dtype="float64")).fit(images, positions, 1.0)
            for dev in ("cpu", DEVICE)}
    a, b = fits["cpu"], fits[DEVICE]
    assert len(a) == len(b) == 16 and a["converged"].sum() >= 12
    # float64 on both, but sums in another order: a fit may stop one step earlier or later, so the fluxes are
    # compared with their errors, not bit for bit
    pulls = np.abs(b["flux"].to_numpy() - a["flux"].to_numpy()) / a["flux_err"].to_numpy()
    same_flags = float((a["flags"].to_numpy() == b["flags"].to_numpy()).mean())
    print(f"\n[{DEVICE} photometry] largest flux difference from the CPU: {pulls.max():.3g} sigma; flags equal in "
          f"{same_flags:.0%} of the fits")
    assert pulls.max() <= 0.01 and same_flags >= 0.9


# ------------------------------------------------------------------------------------------------- deep fields
def test_the_tiled_field_is_seamless_on_the_device_and_equals_the_cpu_field():
    g = init_weights(SGANGenerator(nz=16, channels=3, filters=(64, 32, 16, 16)), std=0.1).eval()  # ~0.3 rms
    noise = noise_for_field(7, 16, 256, g.scale, 4)
    out: dict[str, np.ndarray] = {}

    def tiled(device: str) -> np.ndarray:
        img = np.zeros((3, 256, 256), np.float32)

        def put(y0: int, x0: int, t: np.ndarray) -> None:
            img[:, y0:y0 + t.shape[1], x0:x0 + t.shape[2]] = t

        assert tessellate(g, noise, 256, tile_z=4, margin_z=4, write=put, device=device, progress=False) == 16
        return img

    out["default"] = tiled(DEVICE)
    default_seam = float(np.abs(out["default"] - one_shot(g, noise, 256, margin_z=4, device=DEVICE)).max())
    with exact_fp32():
        out["fp32"] = tiled(DEVICE)
        seam = float(np.abs(out["fp32"] - one_shot(g, noise, 256, margin_z=4, device=DEVICE)).max())
        cpu = tiled("cpu")
    vs_cpu = float(np.abs(out["fp32"] - cpu).max())
    print(f"\n[{DEVICE} tessellation] tiled vs one-shot: {seam:.3g} (fp32), {default_seam:.3g} (torch's defaults); "
          f"vs the CPU field {vs_cpu:.3g}; image rms {float(cpu.std()):.3g}")
    assert float(cpu.std()) > 0.1  # the comparison is not between flat images
    assert seam <= 1e-5 and vs_cpu <= 1e-5
    assert default_seam <= 1e-2


# ----------------------------------------------------------------------------------------------- likelihoods
def test_pixelcnn_log_likelihoods_on_the_device_equal_the_cpus():
    torch.manual_seed(0)
    model = PixelCNN(filters=32, n_resnet=2, n_mix=5).eval()
    x = quantize(torch.rand(8, 1, 32, 32, generator=_gen(2)) * 2 - 1, 8)
    with exact_fp32(), torch.no_grad():
        a = model.log_prob_pixels(x)
        b = model.to(DEVICE).log_prob_pixels(x.to(DEVICE)).cpu()
    diff = float((a - b).abs().max())
    print(f"\n[{DEVICE} pixelcnn] largest per-pixel log p difference from the CPU: {diff:.3g} nats")
    assert diff <= 1e-3
