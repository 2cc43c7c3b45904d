"""pix2pix (Isola et al. 2017) as used by Pearce-Casey et al. 2023: a U-Net generator mapping the JWST NIRCam
short-wavelength bands (F115W, F150W, F200W) of a cutout to its long-wavelength bands (F277W, F356W, F444W), and a
PatchGAN discriminator.

Architectures only (plain :class:`torch.nn.Module`); training is :class:`workflow_scripts.train.ConditionalGAN`
(BCE-with-logits adversarial term + ``l1_weight`` x L1; the paper: 100).

The paper's code, reproduced by the defaults:

* **Generator**: a U-Net with 8 stride-2 downsamplings of 64 base filters (64, 128, 256, 512, 512, 512, 512, 512) on
  the 90x90 cutouts resized to 256x256; encoder Conv k4 s2 + BatchNorm (none on the first) + LeakyReLU(0.2);
  decoder ConvTranspose k4 s2 + BatchNorm + ReLU, each concatenated with the encoder map of its size, dropout 0.5 in
  the three innermost decoder blocks; a last ConvTranspose to the output bands and tanh.
* **Discriminator**: the 70x70 PatchGAN, Conv k4 64-128-256-512 (strides 2, 2, 2, 1; BatchNorm except on the first;
  LeakyReLU 0.2) then a 1-channel Conv k4 s1: one logit per overlapping 70x70 patch.

One defect of that code is **not** reproduced by default: their discriminator saw the generated bands only, never
the short-wavelength input, so it could judge whether an image looks like a long-wavelength galaxy but not whether
it belongs to *this* input. :class:`PatchDiscriminator` is conditional by default (input and output concatenated
on the channel axis, as in pix2pix); ``conditional=False`` gives the authors' output-only discriminator.

Discriminators return **logits** (train with ``BCEWithLogitsLoss``), here a logit *map* ``(B, 1, h, w)``.

**Output relative to an input band** (``reference``, ours; None: the paper's direct prediction). With
``reference = k`` every output band is predicted relative to input band ``k`` (the reddest short-wavelength band):
``y = tanh(out(h) + atanh(x_k))``, and the output layer starts at zero, so the untrained generator copies band
``k`` (in the scaled units) into every output band and learns the colour, not the galaxy. A skip connection like
the residual SR-GANs'; the same reason as the photometric baseline's colour targets (a network, like a tree, learns
an identity slowly).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.models.dcgan import LEAKY_SLOPE

#: kernel of every convolution of both networks (the paper's code)
KERNEL = 4
#: the reference band is clipped to +-this before its atanh (a finite logit at the scaling's ends)
REFERENCE_CLIP = 0.999


class UNetGenerator(nn.Module):
    """Image ``(B, in_channels, H, W)`` -> image ``(B, out_channels, H, W)`` in (-1, 1) (tanh), for **any** H, W.

    Encoder level ``i`` (0-based, ``depth`` levels) has ``min(2**i, max_mult) * base`` channels and halves the size
    (Conv k4 s2 p1, BatchNorm except at level 0, LeakyReLU 0.2). The decoder climbs back level by level
    (ConvTranspose k4 s2 p1 + BatchNorm [+ Dropout] + ReLU, then concatenation with the encoder map of the same
    size); dropout ``dropout`` is in the first ``n_dropout`` decoder blocks (the innermost ones); a last
    ConvTranspose k4 s2 p1 maps to ``out_channels`` at full size, then tanh. Defaults: the paper's network
    (64, 128, 256, 512, 512, 512, 512, 512 filters; decoder 512, 512, 512, 512, 256, 128, 64).

    **Sizes**: ``depth`` halvings need H and W divisible by ``2**depth``. Any other input is padded (reflect, or
    replicate where the input is too small for a reflection of that width) up to the next multiple of
    ``2**depth``, split evenly between both sides, and the output is cropped back to H x W. So a 90x90 cutout
    (our default) runs at depth 8 as a 256x256 map without resizing it, and the paper's 256x256 resized input is
    used as it is.

    ``reference``: None, or the index of the input band that every output is predicted relative to (see the module
    docstring); then the output layer starts at zero.

    Training note: the innermost map is ``H_pad / 2**depth`` pixels wide (1x1 at depth 8 on 256x256) and carries a
    BatchNorm, so in training mode a batch needs more than one image there (the paper trained with batch 16).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base: int = 64, depth: int = 8,
                 dropout: float = 0.5, n_dropout: int = 3, max_mult: int = 8, reference: int | None = None) -> None:
        super().__init__()
        depth, n_dropout, max_mult = int(depth), int(n_dropout), int(max_mult)
        if depth < 1:
            raise ValueError(f"UNetGenerator: depth must be >= 1, got {depth}")
        if not 0 <= n_dropout <= depth - 1:
            raise ValueError(f"UNetGenerator: n_dropout must lie in [0, depth - 1] = [0, {depth - 1}] (the decoder "
                             f"blocks before the output layer), got {n_dropout}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"UNetGenerator: dropout must lie in [0, 1), got {dropout}")
        if int(base) < 1 or max_mult < 1:
            raise ValueError(f"UNetGenerator: base and max_mult must be >= 1, got {base}, {max_mult}")
        self.arch: dict[str, Any] = {"in_channels": int(in_channels), "out_channels": int(out_channels),
                                     "base": int(base), "depth": depth, "dropout": float(dropout),
                                     "n_dropout": n_dropout, "max_mult": max_mult}
        if reference is not None:  # only when set: model files written before the option rebuild unchanged
            if not 0 <= int(reference) < int(in_channels):
                raise ValueError(f"UNetGenerator: reference must index an input band, 0..{int(in_channels) - 1}, "
                                 f"got {reference}")
            self.arch["reference"] = int(reference)
        self.reference = self.arch.get("reference")
        self.depth = depth
        ch = [min(2**i, max_mult) * int(base) for i in range(depth)]
        self.channels = tuple(ch)

        down: list[nn.Module] = []
        cin = int(in_channels)
        for i, cout in enumerate(ch):
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, KERNEL, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
            down.append(nn.Sequential(*layers))
            cin = cout
        self.down = nn.ModuleList(down)

        # decoder block k climbs from level depth-1-k to level depth-2-k; its output is concatenated with the
        # encoder map of level depth-2-k
        up: list[nn.Module] = []
        for k, level in enumerate(range(depth - 2, -1, -1)):
            cin = ch[depth - 1] if k == 0 else 2 * ch[level + 1]
            layers = [nn.ConvTranspose2d(cin, ch[level], KERNEL, 2, 1, bias=False), nn.BatchNorm2d(ch[level])]
            if k < n_dropout and dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            layers.append(nn.ReLU(True))
            up.append(nn.Sequential(*layers))
        self.up = nn.ModuleList(up)
        self.out = nn.ConvTranspose2d(ch[0] if depth == 1 else 2 * ch[0], int(out_channels), KERNEL, 2, 1,
                                      bias=True)
        self.reset_after_init()

    def reset_after_init(self) -> None:
        """With ``reference``: the output layer at zero, so the generator starts as a copy of the reference band
        (called by ``init_weights`` after every initialisation)."""
        if self.reference is not None:
            with torch.no_grad():
                self.out.weight.zero_()
                self.out.bias.zero_()

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` padding that brings an H x W input to multiples of ``2**depth``."""
        m = 2**self.depth
        ph, pw = -height % m, -width % m
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"UNetGenerator expects (B, C, H, W) images, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad = self.padding(h, w)
        if any(pad):
            # reflect needs each pad < the size along its axis; otherwise repeat the edge pixels
            mode = "reflect" if max(pad[:2]) < w and max(pad[2:]) < h else "replicate"
            x = F.pad(x, pad, mode=mode)
        ref = None if self.reference is None else x[:, self.reference:self.reference + 1]
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for k, block in enumerate(self.up):
            x = torch.cat([block(x), skips[-2 - k]], dim=1)
        logit = self.out(x)
        if ref is not None:
            logit = logit + torch.atanh(ref.clamp(-REFERENCE_CLIP, REFERENCE_CLIP))
        y = torch.tanh(logit)
        if any(pad):
            y = y[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]
        return y


def patch_layer_specs(n_layers: int = 3) -> list[tuple[int, int, int]]:
    """``(kernel, stride, padding)`` of the convolutions of a PatchGAN with ``n_layers`` stride-2 layers: those,
    one stride-1 layer, then the 1-channel stride-1 output layer (all k4, padding 1)."""
    if int(n_layers) < 1:
        raise ValueError(f"PatchDiscriminator: n_layers must be >= 1, got {n_layers}")
    return [(KERNEL, 2, 1)] * int(n_layers) + [(KERNEL, 1, 1), (KERNEL, 1, 1)]


def receptive_field(n_layers: int = 3) -> int:
    """Receptive field in pixels of one output logit of a PatchGAN with ``n_layers`` stride-2 layers, from the
    layer specs (:func:`patch_layer_specs`): going from the output back to the input, r <- (r - 1) * stride + kernel.
    70 for ``n_layers=3`` (the paper's 70x70 PatchGAN)."""
    return _receptive_field(patch_layer_specs(n_layers))


def _receptive_field(specs: list[tuple[int, int, int]]) -> int:
    r = 1
    for kernel, stride, _ in reversed(specs):
        r = (r - 1) * stride + kernel
    return r


class PatchDiscriminator(nn.Module):
    """Image ``(B, image_channels, H, W)`` [+ condition ``(B, condition_channels, h, w)``] -> a real/fake **logit
    map** ``(B, 1, H', W')``, one logit per overlapping patch of :meth:`receptive_field` pixels (70 for
    ``n_layers=3``). Train with ``BCEWithLogitsLoss`` against a map of ones / zeros (the mean over patches).

    Layers (k4, padding 1; out = floor((in + 2 - 4) / stride) + 1)::

        in -> base          s2   LeakyReLU(0.2)   (no BN on the first layer)
        base * min(2**n, 8)  s2   BN LeakyReLU(0.2)   for n = 1 .. n_layers - 1
        base * min(2**n_layers, 8)  s1   BN LeakyReLU(0.2)
        -> 1                s1   (logits)

    ``conditional=True`` (default): ``forward(image, condition)`` concatenates ``[condition, image]`` on the channel
    axis (``condition_channels + image_channels`` inputs); a condition of another spatial size is resized
    bilinearly to the image's first. ``conditional=False``: the authors' discriminator, which sees the generated
    (or real) output only; ``condition`` is then ignored.
    """

    def __init__(self, image_channels: int = 3, condition_channels: int = 3, base: int = 64, n_layers: int = 3,
                 conditional: bool = True) -> None:
        super().__init__()
        self.arch: dict[str, Any] = {"image_channels": int(image_channels),
                                     "condition_channels": int(condition_channels), "base": int(base),
                                     "n_layers": int(n_layers), "conditional": bool(conditional)}
        self.conditional = bool(conditional)
        specs = patch_layer_specs(n_layers)
        b = int(base)
        cin = int(image_channels) + (int(condition_channels) if self.conditional else 0)
        layers: list[nn.Module] = []
        for n, (kernel, stride, pad) in enumerate(specs[:-1]):
            cout = b * min(2**n, 8)
            layers.append(nn.Conv2d(cin, cout, kernel, stride, pad, bias=n == 0))
            if n > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
            cin = cout
        kernel, stride, pad = specs[-1]
        layers.append(nn.Conv2d(cin, 1, kernel, stride, pad, bias=True))
        self.net = nn.Sequential(*layers)

    def receptive_field(self) -> int:
        """Receptive field in pixels of one logit, from this network's convolutions."""
        return _receptive_field([(m.kernel_size[0], m.stride[0], m.padding[0]) for m in self.net
                                 if isinstance(m, nn.Conv2d)])

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if image.dim() != 4:
            raise ValueError(f"PatchDiscriminator expects (B, C, H, W) images, got shape {tuple(image.shape)}")
        if self.conditional:
            if condition is None:
                raise ValueError("a conditional PatchDiscriminator needs the generator's input as `condition` "
                                 "(conditional=False gives the authors' output-only discriminator)")
            condition = condition.to(image.dtype)
            if condition.shape[-2:] != image.shape[-2:]:
                condition = F.interpolate(condition, size=image.shape[-2:], mode="bilinear", align_corners=False)
            image = torch.cat([condition, image], dim=1)
        return self.net(image)


__all__ = ["PatchDiscriminator", "UNetGenerator", "patch_layer_specs", "receptive_field"]
