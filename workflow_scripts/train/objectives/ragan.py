"""The relativistic-average standard GAN (RaSGAN, Jolicoeur-Martineau 2019) with PacGAN packing, as Smith & Geach
2019 trained their Spatial-GAN (:mod:`workflow_scripts.models.sgan`) on Hubble deep-field crops.

With ``C`` the discriminator's logits (the "critic"), ``x_r`` real and ``x_f`` generated (packed) samples::

    D_R(x_r) = sigmoid(C(x_r) - mean C(x_f))        D_R(x_f) = sigmoid(C(x_f) - mean C(x_r))
    L_D = -E[log D_R(x_r)] - E[log(1 - D_R(x_f))]
    L_G = -E[log D_R(x_f)] - E[log(1 - D_R(x_r))]      (the same with real and fake swapped)

computed by :func:`ragan_losses` as BCE-with-logits on ``C_r - mean C_f`` and ``C_f - mean C_r`` (numerically
stable, AMP-safe). The generator's loss needs C(real) too: it is computed inside ``ctx.frozen("discriminator")``
(gradients reach the generator through ``mean C_f`` and ``C_f``, no weight gradients reach the discriminator).
Both losses depend on logit differences only: a constant added to C changes nothing (the critic's last bias gets
no gradient).

**Packing**: a batch of ``B`` images (``B`` a multiple of ``pack``, i.e. even for PacGAN-2) is shown to the
discriminator as ``B / pack`` samples, images ``2 i`` and ``2 i + 1`` concatenated on the channel axis
(:func:`workflow_scripts.models.sgan.pack`); generated images are packed the same way.

**Noise**: ``z ~ N(0, 1)`` of shape ``(B, noise_channels, H / s, W / s)`` for real images ``(B, C, H, W)``, ``s``
the generator's upsampling (``generator.scale``, 16): the study trains on random crops with a noise field of side
crop / 16. H and W must be multiples of ``s``.

**Order within a step** (one batch per step): the discriminator step first, then the generator step on the *same*
real batch and the *same* generated images (drawn once, before the discriminator update; the generator's graph is
kept for its step, which sees the updated discriminator). The authors' code alternates the other way (one generator
step, then one discriminator step, each on a fresh real batch); over many steps both are the same alternation,
only shifted by half a step, and ours draws one real batch per step, as the loop's data order requires.

Optimisers: Adam for each network, ``lr_g`` / ``lr_d`` / ``betas`` of the :class:`TrainConfig`; the paper's
values are :data:`PAPER_OPTIONS` (2e-4 both, betas (0.5, 0.999)). Weights: ``init="glorot"`` is the authors' code
(Keras' default, Glorot-uniform; the paper does not say), ``"normal"`` the house DCGAN N(0, 0.02).
Loss columns: ``loss_d``, ``loss_g`` (the two losses above), ``d_real`` = mean D_R(x_r) and ``d_fake`` = mean
D_R(x_f), both from the discriminator step (before its update). The generator is exported as ``generator.pt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.errors import ConfigError
from workflow_scripts.models.dcgan import INIT_SCHEMES
from workflow_scripts.models.sgan import NZ, pack as pack_images
from workflow_scripts.train.objectives.base import StepContext
from workflow_scripts.train.objectives.gan import DISCRIMINATOR, GENERATOR, GANObjective, _first

if TYPE_CHECKING:
    from workflow_scripts.train.checkpoint import Legacy
    from workflow_scripts.train.loop import TrainConfig

#: the paper's optimiser settings (TrainConfig keys): Adam 2e-4 for both networks, beta1 0.5
PAPER_OPTIONS: Mapping[str, Any] = {"lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999)}


def ragan_losses(c_real: torch.Tensor, c_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_D, L_G)`` of the relativistic-average standard GAN from critic logits of real and fake samples (any
    shapes; each flattened, the means are over its own elements). Each loss is the sum of two batch means, as in the
    paper's formula (not their average). Computed in float32."""
    c_real, c_fake = c_real.float().flatten(), c_fake.float().flatten()
    rel_real = c_real - c_fake.mean()  # logit of D_R(x_r)
    rel_fake = c_fake - c_real.mean()  # logit of D_R(x_f)
    ones_r, zeros_r = torch.ones_like(rel_real), torch.zeros_like(rel_real)
    ones_f, zeros_f = torch.ones_like(rel_fake), torch.zeros_like(rel_fake)
    bce = F.binary_cross_entropy_with_logits
    loss_d = bce(rel_real, ones_r) + bce(rel_fake, zeros_f)
    loss_g = bce(rel_fake, ones_f) + bce(rel_real, zeros_r)
    return loss_d, loss_g


class RelativisticPackedGAN(GANObjective):
    """Smith & Geach 2019: a noise-field generator against a packed discriminator, RaSGAN loss (see the module
    docstring). The dataset holds real images ``(N, C, H, W)`` in [0, 1], H and W multiples of the generator's
    ``scale`` (16); the batch size must be a multiple of ``pack``."""

    name = "ragan_packed"
    paired = False
    loss_columns = ("loss_d", "loss_g", "d_real", "d_fake")
    plot_columns: ClassVar[Mapping[str, str]] = {"generator": "loss_g", "discriminator": "loss_d"}
    progress_columns = ("loss_d", "loss_g")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, noise_channels: int = NZ,
                 pack: int = 2, init: str = "normal") -> None:
        super().__init__(generator, discriminator)
        if init not in INIT_SCHEMES:
            raise ConfigError(f"RelativisticPackedGAN: init must be one of {INIT_SCHEMES}, got {init!r}")
        self.init_scheme = init
        self.noise_channels, self.pack = int(noise_channels), int(pack)
        if self.noise_channels < 1 or self.pack < 1:
            raise ValueError(f"RelativisticPackedGAN: noise_channels and pack must be >= 1, got {noise_channels}, "
                             f"{pack}")
        nz = getattr(generator, "nz", None)
        if nz is not None and int(nz) != self.noise_channels:
            raise ValueError(f"RelativisticPackedGAN: noise_channels={self.noise_channels} but the generator takes "
                             f"{nz} noise channels")
        d_pack = getattr(discriminator, "pack", None)
        if d_pack is not None and int(d_pack) != self.pack:
            raise ValueError(f"RelativisticPackedGAN: pack={self.pack} but the discriminator packs {d_pack} images")
        #: upsampling of the generator: noise side = image side / scale
        self.scale = int(getattr(generator, "scale", 16))

    def check(self, cfg: TrainConfig) -> None:
        """Also: every batch a process sees must pack, so batch_size a multiple of ``pack`` x the processes (with
        ``drop_last: false`` a last, smaller batch that does not pack fails at its step)."""
        super().check(cfg)
        from workflow_scripts.train import distributed  # the loop's module; imported late (no import cycle)

        ranks = distributed.current().world_size
        if cfg.batch_size % (self.pack * ranks):
            per = f"{self.pack} x {ranks} processes = {self.pack * ranks}" if ranks > 1 else f"{self.pack}"
            raise ConfigError(f"training: {self.name} packs {self.pack} images per discriminator sample; batch_size "
                              f"must be a multiple of {per}, got {cfg.batch_size}")

    def noise_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(noise_channels, H / scale, W / scale)``: the noise field of an H x W image."""
        if height % self.scale or width % self.scale or height < self.scale or width < self.scale:
            raise ValueError(f"{self.name}: image sides must be positive multiples of {self.scale} (the generator's "
                             f"upsampling), got {height} x {width}")
        return self.noise_channels, height // self.scale, width // self.scale

    def noise(self, real: torch.Tensor) -> torch.Tensor:
        """N(0, 1) noise fields for a batch of real images, from the global torch RNG (one draw)."""
        if real.dim() != 4:
            raise ValueError(f"{self.name}: expects real images (B, C, H, W), got shape {tuple(real.shape)}")
        return torch.randn(real.shape[0], *self.noise_shape(*real.shape[-2:]), device=real.device)

    def unpack(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, None]:
        real = _first(batch).to(device, non_blocking=True)
        return self.noise(real), real, None

    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        gen, disc = ctx.modules[GENERATOR], ctx.modules[DISCRIMINATOR]
        real = _first(batch).to(ctx.device, non_blocking=True)
        real_packed = pack_images(real, self.pack)  # refuses a batch that does not pack, before any random draw
        z = self.noise(real)

        # --- discriminator (critic) step on (C(real), C(G(z)).detach())
        with ctx.autocast():
            fake = gen(z)
            fake_packed = pack_images(fake, self.pack)
            c_real = disc(real_packed)
            c_fake = disc(fake_packed.detach())
            loss_d, _ = ragan_losses(c_real, c_fake)
        ctx.optimise(DISCRIMINATOR, loss_d)

        # --- generator step: real and fake swapped; C(real) with the updated critic, no weight gradients for it
        with ctx.frozen(DISCRIMINATOR):
            with ctx.autocast():
                c_real_g = disc(real_packed)
                c_fake_g = disc(fake_packed)
                _, loss_g = ragan_losses(c_real_g, c_fake_g)
            ctx.optimise(GENERATOR, loss_g)
        with torch.no_grad():
            c_r, c_f = c_real.detach().float(), c_fake.detach().float()
            return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                    "d_real": torch.sigmoid(c_r - c_f.mean()).mean(), "d_fake": torch.sigmoid(c_f - c_r.mean()).mean()}

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "noise_channels": self.noise_channels, "pack": self.pack,
                "init": self.init_scheme}

    def legacy(self, cfg: TrainConfig, dataset: Mapping[str, Any]) -> Legacy | None:
        return None  # newer than the version-1 GAN-only loop: no such checkpoint of it exists


__all__ = ["PAPER_OPTIONS", "RelativisticPackedGAN", "ragan_losses"]
