"""DCGAN (Radford et al. 2016) generator and discriminator for 64x64 images, as used by Hemmati et al. 2022.

Architectures only (plain :class:`torch.nn.Module`); training lives in :mod:`workflow_scripts.train.loop`.

Discriminators return **logits** (no final sigmoid). Training uses :class:`torch.nn.BCEWithLogitsLoss`, which is the
same binary cross-entropy minimax loss as the paper's ``sigmoid`` + ``BCE`` but computed with the log-sum-exp trick
(numerically stable) and allowed under ``torch.autocast`` (plain ``BCELoss`` on fp16 probabilities is not).
``torch.sigmoid(logits)`` gives the paper's D(x) probabilities.

Every model keeps the keyword arguments it was built with in ``self.arch`` (JSON-able), so a saved state dict can be
rebuilt with :func:`workflow_scripts.models.build_model`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: slope of the LeakyReLU in every discriminator (DCGAN, the paper's code)
LEAKY_SLOPE = 0.2
#: side of the images every network here works on (the paper's 64x64 HST cutouts)
IMAGE_SIZE = 64


#: the weight initialisations :func:`init_weights` knows
INIT_SCHEMES = ("normal", "glorot")


def init_weights(module: nn.Module, std: float = 0.02, scheme: str = "normal") -> nn.Module:
    """Initialise every layer of ``module``, recursively; biases 0 in both schemes.

    * ``normal`` (DCGAN, Radford et al. 2016): conv / transposed-conv / linear weights ~ N(0, std); normalisation
      layers (BatchNorm, InstanceNorm, GroupNorm with affine parameters) weight ~ N(1, std).
    * ``glorot``: Keras' default (Glorot-uniform kernels, U(-a, a) with a = sqrt(6 / (fan_in + fan_out))),
      normalisation weights 1: what models written in Keras started from without saying so (Smith & Geach's code).

    Uses the global torch RNG (seed it first). Then every submodule with a ``reset_after_init()`` method gets it
    called (e.g. a residual branch that must start at zero). Returns ``module`` for chaining.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init_weights: scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    conv_like = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                 nn.Linear)
    norm_like = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)
    for m in module.modules():
        if isinstance(m, conv_like):
            if scheme == "glorot":
                nn.init.xavier_uniform_(m.weight)  # symmetric in fan_in and fan_out: the same for transposed convs
            else:
                nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norm_like):
            if getattr(m, "weight", None) is not None:
                if scheme == "glorot":
                    nn.init.ones_(m.weight)
                else:
                    nn.init.normal_(m.weight, 1.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return after_init(module)


def after_init(module: nn.Module) -> nn.Module:
    """Call ``reset_after_init()`` on every submodule that has one (a starting point a model sets after its weights
    are initialised, e.g. an output layer at zero); returns ``module``."""
    for m in module.modules():
        hook = getattr(m, "reset_after_init", None)
        if callable(hook):
            hook()
    return module


class DCGANGenerator(nn.Module):
    """Noise ``(B, nz, 1, 1)`` (or ``(B, nz)``) -> image ``(B, channels, 64, 64)`` in [-1, 1] (tanh).

    Transposed convolutions, out = (in - 1) * stride - 2 * padding + kernel::

        nz     -> 8*base  k4 s1 p0: 1  -> 4     BN ReLU
        8*base -> 4*base  k4 s2 p1: 4  -> 8     BN ReLU
        4*base -> 2*base  k4 s2 p1: 8  -> 16    BN ReLU
        2*base ->   base  k4 s2 p1: 16 -> 32    BN ReLU
          base -> channels k4 s2 p1: 32 -> 64   tanh
    """

    def __init__(self, nz: int = 100, channels: int = 1, base: int = 64) -> None:
        super().__init__()
        self.arch: dict[str, Any] = {"nz": int(nz), "channels": int(channels), "base": int(base)}
        self.nz = int(nz)
        b = int(base)

        def up(cin: int, cout: int, stride: int, pad: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.net = nn.Sequential(
            *up(self.nz, 8 * b, 1, 0),
            *up(8 * b, 4 * b, 2, 1),
            *up(4 * b, 2 * b, 2, 1),
            *up(2 * b, b, 2, 1),
            nn.ConvTranspose2d(b, int(channels), 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.net(z)


def discriminator_body(in_channels: int, base: int = 64) -> nn.Sequential:
    """The paper's DCGAN discriminator for 64x64 inputs, ending in one logit per image ``(B, 1, 1, 1)``.

    Convolutions, out = floor((in + 2 * padding - kernel) / stride) + 1::

        in_channels -> base    k4 s2 p1: 64 -> 32   LeakyReLU(0.2)   (no BN on the first layer)
        base        -> 2*base  k4 s2 p1: 32 -> 16   BN LeakyReLU(0.2)
        2*base      -> 4*base  k4 s2 p1: 16 -> 8    BN LeakyReLU(0.2)
        4*base      -> 8*base  k4 s2 p1: 8  -> 4    BN LeakyReLU(0.2)
        8*base      -> 1       k4 s1 p0: 4  -> 1    (logit; the paper's sigmoid is folded into the loss)
    """
    b = int(base)

    def down(cin: int, cout: int, bn: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
        return layers

    return nn.Sequential(
        *down(int(in_channels), b, bn=False),
        *down(b, 2 * b, bn=True),
        *down(2 * b, 4 * b, bn=True),
        *down(4 * b, 8 * b, bn=True),
        nn.Conv2d(8 * b, 1, 4, 1, 0, bias=False),
    )


class DCGANDiscriminator(nn.Module):
    """Image ``(B, channels, 64, 64)`` -> one real/fake **logit per image**, shape ``(B,)``."""

    def __init__(self, channels: int = 1, base: int = 64) -> None:
        super().__init__()
        self.arch: dict[str, Any] = {"channels": int(channels), "base": int(base)}
        self.net = discriminator_body(int(channels), int(base))

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``condition`` is accepted and ignored so that every discriminator has the same call signature."""
        _check_size(image, IMAGE_SIZE, "DCGANDiscriminator")
        return self.net(image).flatten(1).squeeze(1)


def _check_size(image: torch.Tensor, size: int, who: str) -> None:
    if image.dim() != 4 or tuple(image.shape[-2:]) != (size, size):
        raise ValueError(f"{who} expects (B, C, {size}, {size}) images, got shape {tuple(image.shape)}")
