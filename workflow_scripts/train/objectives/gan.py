"""The GAN pair: a generator against a discriminator with the paper's adversarial binary cross-entropy.

* D loss = BCE(D(real), 1) + BCE(D(fake), 0) (summed, as in the DCGAN reference); G loss = BCE(D(G(.)), 1), the
  non-saturating generator loss, plus ``cfg.l1_weight * L1(G(x), y)`` for paired data (``l1_weight = 0``: the
  paper's adversarial-only loss). Losses on discriminator logits with ``BCEWithLogitsLoss`` (sigmoid + BCE,
  numerically stable, AMP-safe).
* What differs between GANs is how a batch becomes (generator input, real image, discriminator condition):
  :class:`NoiseToImageGAN` (DCGAN: images only, N(0, 1) noise in) and :class:`ConditionalGAN` (SR-GAN, pix2pix:
  (input, target) pairs; the discriminator gets the input as its condition, an unconditional one ignores it).
* ``observe`` (conditional, optional; e.g. :class:`AsinhNoise`, AmbientGAN): what the discriminator is shown of
  G(x), the same view for both steps; the L1 term compares the noise-free output with the target.

The discriminator is always called as ``discriminator(image, condition)`` and returns logits. A variant whose
generator step needs more (a relativistic-average GAN's D(real)) overrides :meth:`GANObjective.step`: the
discriminator may be called any number of times inside ``ctx.frozen("discriminator")``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.errors import ConfigError
from workflow_scripts.models import architecture, init_weights
from workflow_scripts.train.objectives.base import Objective, StepContext

if TYPE_CHECKING:
    from workflow_scripts.train.checkpoint import Legacy
    from workflow_scripts.train.loop import TrainConfig

GENERATOR = "generator"
DISCRIMINATOR = "discriminator"


def _first(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class GANObjective(Objective):
    """A generator and a discriminator, each with its Adam optimiser (``lr_g`` / ``lr_d``, ``betas``)."""

    name: ClassVar[str] = "gan"
    #: whether an L1 term between G(input) and the real image makes sense (paired data)
    paired: ClassVar[bool] = False
    loss_columns = ("loss_d", "loss_g", "loss_g_adv", "loss_l1", "d_real", "d_fake")
    plot_columns: ClassVar[Mapping[str, str]] = {"generator": "loss_g", "discriminator": "loss_d"}
    progress_columns = ("loss_d", "loss_g")
    export = GENERATOR
    export_file = "generator.pt"

    #: False: the generator's adversarial term sees a detached fake (a defect of Pearce-Casey+23's code, kept as an
    #: "as coded" option); the term is still logged
    adversarial_gradient: bool = True
    #: the weight initialisation of both networks (:func:`workflow_scripts.models.init_weights`): the DCGAN
    #: N(0, 0.02) unless an objective is told otherwise
    init_scheme: str = "normal"

    def __init__(self, generator: nn.Module, discriminator: nn.Module) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.bce = nn.BCEWithLogitsLoss()

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {GENERATOR: self.generator, DISCRIMINATOR: self.discriminator}

    @abstractmethod
    def unpack(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(generator input, real image, discriminator condition or None)`` on ``device``."""

    def observed(self, fake: torch.Tensor) -> torch.Tensor:
        """What the discriminator is shown of a generated image (default: the image itself)."""
        return fake

    def check(self, cfg: TrainConfig) -> None:
        if cfg.l1_weight > 0 and not self.paired:
            raise ConfigError(f"training: l1_weight applies to paired (conditional) tasks only, not {self.name}")
        if not self.adversarial_gradient and not cfg.l1_weight > 0:
            raise ConfigError("training: without the adversarial gradient the generator learns from the L1 term "
                              "alone, so l1_weight must be > 0")

    def reset_parameters(self) -> None:
        """``init_scheme`` (the DCGAN N(0, 0.02) by default), generator first (the order of the RNG draws is part of
        the result)."""
        init_weights(self.generator, scheme=self.init_scheme)
        init_weights(self.discriminator, scheme=self.init_scheme)

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {GENERATOR: torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas),
                DISCRIMINATOR: torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas)}

    def config_fingerprint(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"lr_g": cfg.lr_g, "lr_d": cfg.lr_d, "betas": cfg.betas, "l1_weight": cfg.l1_weight}

    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        gen, disc = ctx.modules[GENERATOR], ctx.modules[DISCRIMINATOR]
        g_in, real, cond = self.unpack(batch, ctx.device)
        bce = self.bce

        # --- discriminator: maximise log D(real) + log(1 - D(G(.)))
        with ctx.autocast():
            fake = gen(g_in)
            shown = self.observed(fake)  # the same noisy view of G(.) for both steps
            d_real = disc(real, cond)
            d_fake = disc(shown.detach(), cond)
            loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        ctx.optimise(DISCRIMINATOR, loss_d)

        # --- generator: non-saturating loss -log D(G(.)) [+ l1_weight * |G(x) - y|]
        l1_weight = ctx.config.l1_weight
        with ctx.frozen(DISCRIMINATOR):  # no weight gradients for D here (grads still flow through D to G)
            with ctx.autocast():
                # detached (the authors' pix2pix code, `adversarial_gradient=False`): no adversarial gradient
                # reaches G, which is then trained by the L1 term alone
                d_gen = disc(shown if self.adversarial_gradient else shown.detach(), cond)
                loss_adv = bce(d_gen, torch.ones_like(d_gen))
            if self.paired and l1_weight > 0:
                loss_l1 = F.l1_loss(fake.float(), real.float())
                loss_g = loss_adv + l1_weight * loss_l1
            else:
                loss_g = loss_adv
                with torch.no_grad():  # still logged: the pixel error is the diagnostic that matters for SR
                    loss_l1 = (F.l1_loss(fake.float(), real.float()) if self.paired
                               else torch.zeros((), device=ctx.device))
            ctx.optimise(GENERATOR, loss_g)
        with torch.no_grad():
            return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "loss_g_adv": loss_adv.detach(),
                    "loss_l1": loss_l1.detach(), "d_real": torch.sigmoid(d_real.float()).mean(),
                    "d_fake": torch.sigmoid(d_fake.float()).mean()}

    # ------------------------------------------------------------------------ version-1 checkpoints
    def _v1_setup(self) -> dict[str, Any]:
        """The set-up part of a version-1 fingerprint (the GAN-only loop's ``task.fingerprint()``)."""
        return {"task": self.name, "generator": architecture(self.generator),
                "discriminator": architecture(self.discriminator)}

    def legacy(self, cfg: TrainConfig, dataset: Mapping[str, Any]) -> Legacy | None:
        fingerprint = {"format_version": 1, "config": {**cfg.fingerprint(), **self.config_fingerprint(cfg)},
                       **self._v1_setup(), "dataset": dict(dataset)}
        return fingerprint, _upgrade_v1


def _upgrade_v1(state: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 GAN checkpoint's content under the version-2 names."""
    pairs = ((GENERATOR, "generator", "opt_g", "scaler_g"), (DISCRIMINATOR, "discriminator", "opt_d", "scaler_d"))
    kept = ("epoch", "step_in_epoch", "global_step", "partial", "rng", "history", "rng_ranks", "world_size",
            "config", "pipeline_version")
    return {**{k: state[k] for k in kept if k in state},
            "modules": {name: state[m] for name, m, _, _ in pairs},
            "optimizers": {name: state[o] for name, _, o, _ in pairs},
            "scalers": {name: state.get(s) or {} for name, _, _, s in pairs},
            "ema": {GENERATOR: state["generator_ema"]} if "generator_ema" in state else {}}


class NoiseToImageGAN(GANObjective):
    """DCGAN: the dataset holds real images ``(N, C, H, W)``; the generator maps N(0, 1) noise ``(B, nz, 1, 1)``
    (or ``noise_shape``) to images."""

    name = "noise_to_image"
    paired = False

    def __init__(self, generator: nn.Module, discriminator: nn.Module, nz: int | None = None,
                 noise_shape: Sequence[int] | None = None) -> None:
        super().__init__(generator, discriminator)
        nz = nz if nz is not None else getattr(generator, "nz", None)
        if nz is None and noise_shape is None:
            raise ValueError("NoiseToImageGAN needs the noise dimension `nz` (not found on the generator)")
        self.noise_shape = tuple(int(s) for s in (noise_shape if noise_shape is not None else (nz, 1, 1)))
        self.nz = self.noise_shape[0]

    def unpack(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, None]:
        real = _first(batch).to(device, non_blocking=True)
        z = torch.randn(real.shape[0], *self.noise_shape, device=device)
        return z, real, None

    def fingerprint(self) -> dict[str, Any]:
        out = super().fingerprint()
        if self.noise_shape != (self.nz, 1, 1):  # only when not the DCGAN's, so the usual set-up keeps one name
            out["noise_shape"] = list(self.noise_shape)
        return out

    def legacy(self, cfg: TrainConfig, dataset: Mapping[str, Any]) -> Legacy | None:
        return super().legacy(cfg, dataset) if self.noise_shape == (self.nz, 1, 1) else None


class AsinhNoise(nn.Module):
    """A measurement model for images stored asinh-scaled (``y = asinh(x / softening) / scale``): add white
    Gaussian noise of per-channel sigma ``sigma`` *in physical units* (``x``) and scale back. Differentiable.

    Used as a conditional GAN's ``observe`` (AmbientGAN, Bora et al. 2018): the discriminator judges G(x) plus
    survey-like noise against real, noisy images, so the generator has nothing to gain from drawing noise
    itself and learns the noise-free image, which is what the L1 term asks for too.
    """

    def __init__(self, sigma: Sequence[float], softening: Sequence[float], scale: Sequence[float]) -> None:
        super().__init__()
        values = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (sigma, softening, scale)]
        n = max(v.size for v in values)
        if any(v.size not in (1, n) for v in values) or not all(np.isfinite(v).all() for v in values):
            raise ConfigError(f"AsinhNoise: sigma, softening and scale need 1 or {n} finite values each")
        if (values[0] < 0).any() or (values[1] <= 0).any() or (values[2] <= 0).any():
            raise ConfigError("AsinhNoise: sigma must be >= 0, softening and scale > 0")
        self.spec = {k: [float(x) for x in np.broadcast_to(v, (n,))]
                     for k, v in zip(("sigma", "softening", "scale"), values)}
        for k, v in self.spec.items():
            self.register_buffer(k, torch.tensor(v, dtype=torch.float32)[None, :, None, None], persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        s, c = self.softening.to(y.dtype), self.scale.to(y.dtype)
        x = s * torch.sinh(c * y)
        return torch.asinh((x + self.sigma.to(y.dtype) * torch.randn_like(x)) / s) / c


class ConditionalGAN(GANObjective):
    """SR-GAN (and pix2pix): the dataset holds pairs ``(input, target)``; the generator maps input -> target and the
    discriminator gets the input as its condition.

    ``observe`` (optional, e.g. :class:`AsinhNoise`): applied to the generator's output before the discriminator
    sees it (not before the L1 term, which compares the noise-free output with the target)."""

    name = "conditional"
    paired = True

    def __init__(self, generator: nn.Module, discriminator: nn.Module,
                 observe: nn.Module | Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 adversarial_gradient: bool = True) -> None:
        super().__init__(generator, discriminator)
        self.observe = observe
        self.adversarial_gradient = bool(adversarial_gradient)

    def observed(self, fake: torch.Tensor) -> torch.Tensor:
        if self.observe is None:
            return fake
        observe = self.observe.to(fake.device) if isinstance(self.observe, nn.Module) else self.observe
        return observe(fake)

    def _observe_spec(self) -> dict[str, Any]:
        if self.observe is None:  # only when on, so checkpoints written before the option still resume
            return {}
        return {"observe": {"name": type(self.observe).__name__, **getattr(self.observe, "spec", {})}}

    def fingerprint(self) -> dict[str, Any]:
        detached = {} if self.adversarial_gradient else {"adversarial_gradient": False}  # only when off: old
        return {**super().fingerprint(), **self._observe_spec(), **detached}             # checkpoints resume

    def _v1_setup(self) -> dict[str, Any]:
        return {**super()._v1_setup(), **self._observe_spec()}

    def unpack(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("ConditionalGAN needs a dataset of (input, target) pairs")
        x = batch[0].to(device, non_blocking=True)
        y = batch[1].to(device, non_blocking=True)
        return x, y, x


#: the names of the GAN-only loop ("tasks")
GANTask = GANObjective
NoiseToImageTask = NoiseToImageGAN
ConditionalTask = ConditionalGAN

__all__ = ["AsinhNoise", "ConditionalGAN", "ConditionalTask", "GANObjective", "GANTask", "NoiseToImageGAN",
           "NoiseToImageTask"]
