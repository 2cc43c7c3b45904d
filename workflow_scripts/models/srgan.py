"""Super-resolution GAN of Hemmati et al. 2022: 21x21 low-resolution (HSC-like, 0.18"/px) -> 64x64 high-resolution
(HST, 0.06"/px) images, 1 band or 7 bands (the band count is only the number of channels).

Architectures only. The generator follows the paper's code in spirit (a few conv / transposed-conv layers, BN + ReLU,
LeakyReLU on the first layer, tanh output); the exact layer list below is ours. The discriminator is the paper's
DCGAN discriminator; by default it is **conditional** (it also sees the low-resolution input, upsampled to 64x64 and
concatenated on the channel axis), so it judges whether the high-resolution image is consistent with *this* input and
not only whether it looks like a galaxy. ``conditional=False`` gives the paper's unconditional discriminator.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.models.dcgan import IMAGE_SIZE, LEAKY_SLOPE, _check_size, discriminator_body

#: side of the low-resolution input: 64 px at 0.06"/px resampled to 0.18"/px (bilinear 1/3 in the paper's code)
LOWRES_SIZE = 21


#: upsampling layers of the SR generator: the paper's transposed convolution, or resize + convolution
UPSAMPLE_MODES = ("transposed", "resize")
#: HSC / HST pixel-scale ratio of the study (0.18" / 0.06")
SR_FACTOR = 3


class ResizeConv(nn.Module):
    """Bilinear resize of an n x n map to (factor * n + 1) x (factor * n + 1), then a 3x3 convolution.

    (factor * n + 1) keeps the output size of the transposed convolution (21 -> 64); with align_corners=False the
    centre of the input (10) lands on the centre of the output (31.5).
    """

    def __init__(self, cin: int, cout: int, factor: int) -> None:
        super().__init__()
        self.factor = int(factor)
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.interpolate(x, size=(self.factor * h + 1, self.factor * w + 1), mode="bilinear", align_corners=False)
        return self.conv(x)


class UpsampleSkip(nn.Module):
    """Residual path of the SR generator: bicubic resize n -> (factor * n + 1), then a per-pixel linear map across
    channels (weight ``(c, c)``, bias ``(c,)``), initialised to the identity.

    Plain parameters, not a 1x1 convolution, so the DCGAN initialisation (N(0, 0.02) for every conv) leaves the
    identity start alone.
    """

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.factor = int(factor)
        self.weight = nn.Parameter(torch.eye(int(channels)))
        self.bias = nn.Parameter(torch.zeros(int(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        up = F.interpolate(x, size=(self.factor * h + 1, self.factor * w + 1), mode="bicubic", align_corners=False)
        return torch.einsum("oc,bchw->bohw", self.weight, up) + self.bias[:, None, None]


class SRGenerator(nn.Module):
    """Low-resolution ``(B, channels, 21, 21)`` -> high-resolution ``(B, channels, 64, 64)`` in [-1, 1] (tanh).

    Layer arithmetic (conv: out = (in + 2p - k) / s + 1; transposed conv: out = (in - 1) * s - 2p + k)::

        head    conv       channels -> 2*base  k3 s1 p1: 21 -> 21   LeakyReLU(0.2)  (no BN on the first layer)
        body    conv       2*base   -> 2*base  k3 s1 p1: 21 -> 21   BN ReLU
        up      conv^T     2*base   -> base    k6 s3 p1: (21 - 1) * 3 - 2 + 6 = 64   BN ReLU
        refine  conv       base     -> base    k3 s1 p1: 64 -> 64   BN ReLU
        out     conv       base     -> channels k3 s1 p1: 64 -> 64  tanh

    The single x3 transposed convolution matches the 3x pixel-scale ratio of HSC and HST; its kernel (6) is a
    multiple of its stride (3), which avoids the checkerboard pattern of uneven kernel overlap. The network is fully
    convolutional: an n x n input gives (3n + 1) x (3n + 1).

    ``upsample="resize"`` replaces the transposed convolution by a bilinear resize to (3n + 1) followed by a
    3x3 convolution (Odena et al. 2016): the three output phases of a stride-3 transposed convolution have their
    own weights and show a period-3 grid until training equalises them; a resize has no phases.

    ``skip=True`` (ours, not the paper's) adds a residual path before the tanh (:class:`UpsampleSkip`): the input
    resized bicubically and mixed across channels by a learnt linear map that starts as the identity (the low-
    and high-resolution scalings differ, so the map is learnt). The network then starts from a smooth upsampled
    image and learns only the detail on top, which takes far fewer steps than drawing every galaxy from scratch.
    """

    def __init__(self, channels: int = 1, base: int = 64, upsample: str = "transposed", skip: bool = False,
                 zero_residual: bool = False) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.arch: dict[str, Any] = {"channels": int(channels), "base": int(base), "upsample": upsample}
        if skip:  # recorded only when on, so generators written before the option still load
            self.arch["skip"] = True
        if zero_residual:
            if not skip:
                raise ValueError("zero_residual needs skip=True (it zeroes the learnt branch beside the skip path)")
            self.arch["zero_residual"] = True
        c, b = int(channels), int(base)
        up: nn.Module = (nn.ConvTranspose2d(2 * b, b, 6, 3, 1, bias=False) if upsample == "transposed"
                         else ResizeConv(2 * b, b, SR_FACTOR))
        self.net = nn.Sequential(
            nn.Conv2d(c, 2 * b, 3, 1, 1, bias=True),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(2 * b, 2 * b, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * b),
            nn.ReLU(True),
            up,
            nn.BatchNorm2d(b),
            nn.ReLU(True),
            nn.Conv2d(b, b, 3, 1, 1, bias=False),
            nn.BatchNorm2d(b),
            nn.ReLU(True),
            nn.Conv2d(b, c, 3, 1, 1, bias=True),
        )
        self.skip = UpsampleSkip(c, SR_FACTOR) if skip else None

    def reset_after_init(self) -> None:
        """With ``zero_residual``: the learnt branch's last convolution starts at zero (weights and bias), so the
        untrained generator is exactly the upsampled input and no initial texture has to be trained away."""
        if self.arch.get("zero_residual"):
            last = self.net[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, lowres: torch.Tensor) -> torch.Tensor:
        out = self.net(lowres)
        if self.skip is not None:
            out = out + self.skip(lowres)
        return torch.tanh(out)


class SRDiscriminator(nn.Module):
    """High-resolution image ``(B, channels, 64, 64)`` [+ low-resolution condition ``(B, channels, h, w)``] ->
    one real/fake **logit per image**, shape ``(B,)``.

    ``conditional=True`` (default): the condition is upsampled bilinearly to 64x64 and concatenated with the image
    (2 * channels input channels), then the DCGAN discriminator body (conv 64/128/256/512 x base/64) follows.
    ``conditional=False``: the paper's discriminator, which sees the high-resolution image only; ``condition`` is
    then ignored.
    """

    def __init__(self, channels: int = 1, base: int = 64, conditional: bool = True) -> None:
        super().__init__()
        self.arch: dict[str, Any] = {"channels": int(channels), "base": int(base), "conditional": bool(conditional)}
        self.conditional = bool(conditional)
        in_channels = 2 * int(channels) if self.conditional else int(channels)
        self.net = discriminator_body(in_channels, int(base))

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        _check_size(image, IMAGE_SIZE, "SRDiscriminator")
        if self.conditional:
            if condition is None:
                raise ValueError("a conditional SRDiscriminator needs the low-resolution input as `condition`")
            up = F.interpolate(condition.to(image.dtype), size=image.shape[-2:], mode="bilinear",
                               align_corners=False)
            image = torch.cat([image, up], dim=1)
        return self.net(image).flatten(1).squeeze(1)
