"""The Spatial-GAN of Smith & Geach 2019 ("Generative deep fields: arbitrarily sized, random synthetic astronomical
images through deep learning"; code: Smith42/XDF-GAN): a fully convolutional generator that turns a noise *field*
``(B, nz, h, w)`` into an image ``16 h x 16 w``, so that one trained network paints a deep field of any size, and
a packed (PacGAN-2) discriminator with global average pooling, trained with the relativistic-average standard
GAN loss (:class:`workflow_scripts.train.objectives.ragan.RelativisticPackedGAN`).

Architectures only (plain :class:`torch.nn.Module`). Both networks are as in the authors' code:

* **Generator**: ConvTranspose k4 s2 (256 filters) + ELU; then for 128, 64, 32 filters: ConvTranspose k4 s2 +
  ELU followed by two Conv k4 s1 + ELU; an output ConvTranspose k3 s1 to ``channels`` and a sigmoid (images in
  (0, 1): train on data scaled to [0, 1]). No normalisation layers, no dense layer.
* **Discriminator**: a pair of images concatenated on the channel axis (``pack`` images, ``pack * channels``
  channels in; see :func:`pack`), Conv k4 s2 with 32, 64, 128, 256 filters, each + LeakyReLU(0.1), global average
  pooling, a dense layer to one **logit** (no sigmoid) per packed sample, shape ``(B / pack,)``. The paper's text
  speaks of five convolutions, the code has four: ``filters`` is a constructor argument.

**Padding** (the authors' Keras layers use ``padding="same"``; reproduced exactly, whatever the size):

* ConvTranspose k4 s2, padding 1: out = (in - 1) * 2 - 2 + 4 = 2 in.
* Conv k4 s1: "same" needs 3 pixels of padding per axis, which cannot be split evenly; TensorFlow puts the odd one
  after: zero padding (left 1, right 2, top 1, bottom 2) (:class:`torch.nn.ZeroPad2d`), then a padding-0
  convolution: out = in + 3 - 4 + 1 = in.
* ConvTranspose k3 s1, padding 1: out = in - 1 - 2 + 3 = in.
* Discriminator Conv k4 s2: the same (1, 2, 1, 2) zero padding then padding 0: out = floor((in - 1) / 2) + 1 =
  ceil(in / 2), TensorFlow's "same" (for even sizes identical to padding 1 on both sides: the extra row and column
  are never reached). So any H, W >= 1 works; global pooling makes the logit independent of the size.

So the generator upsamples by exactly ``2 ** len(filters)`` (16 by default): four stride-2 layers, every other layer
keeps the size. Being fully convolutional (and translation equivariant: a shift of the noise by one pixel shifts the
image by 16), two noise fields that agree on a region give images that agree far enough inside that region, which
is what lets the study tile a large field from overlapping pieces.

Weights: the training objective initialises both networks (``init``: the authors' Keras default, Glorot-uniform, or
the house DCGAN N(0, 0.02)). ``output_bias`` (ours, beyond the paper) starts the generator's sigmoid at a given level
per band, e.g. the training field's sky: with a zero bias an untrained generator paints every pixel 0.5, hundreds
of sky sigmas above a deep field's sky (~0.005 after min-max scaling), and its first steps saturate the sigmoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

#: noise channels of the paper's generator
NZ = 50
#: slope of the discriminator's LeakyReLU (the authors' code)
SGAN_LEAKY_SLOPE = 0.1
#: TensorFlow "same" padding of a k4 convolution, (left, right, top, bottom)
SAME_PAD_K4 = (1, 2, 1, 2)


def _filters(filters: Sequence[int], who: str) -> list[int]:
    try:
        out = [int(f) for f in filters]
    except (TypeError, ValueError):
        raise ValueError(f"{who}: filters must be a sequence of positive integers, got {filters!r}") from None
    if not out or any(f < 1 for f in out):
        raise ValueError(f"{who}: filters must be a non-empty sequence of positive integers, got {filters!r}")
    return out


def pack(images: torch.Tensor, n: int = 2) -> torch.Tensor:
    """PacGAN packing: ``(B, C, H, W)`` -> ``(B / n, n C, H, W)``, packed sample ``i`` being images ``n i, ...,
    n i + n - 1`` concatenated on the channel axis (in that order). ``B`` must be a multiple of ``n``."""
    n = int(n)
    if n < 1:
        raise ValueError(f"pack: n must be >= 1, got {n}")
    if images.dim() != 4:
        raise ValueError(f"pack: expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if b % n:
        raise ValueError(f"pack: a batch of {b} images cannot be packed in groups of {n}; the batch size must be a "
                         f"multiple of {n}" + (" (even)" if n == 2 else ""))
    # consecutive images are consecutive in memory: a reshape puts images n i .. n i + n - 1 side by side on channels
    return images.reshape(b // n, n * c, h, w)


class SGANGenerator(nn.Module):
    """Noise ``(B, nz, h, w)`` -> image ``(B, channels, s h, s w)`` in (0, 1), ``s = 2 ** len(filters)`` (16).

    ``filters[0]``: the first ConvTranspose k4 s2 + ELU; each further ``f``: ConvTranspose k4 s2 + ELU, then two
    Conv k4 s1 (zero padding (1, 2, 1, 2), see the module docstring) + ELU; then ConvTranspose k3 s1 p1 to
    ``channels`` and sigmoid. Any h, w >= 1.

    ``output_bias``: one level in (0, 1) per channel, or None; after initialisation (:meth:`reset_after_init`) the
    output layer's bias is its logit, so that the untrained generator paints that level (plus its weights' ripple).
    """

    def __init__(self, nz: int = NZ, channels: int = 3, filters: Sequence[int] = (256, 128, 64, 32),
                 output_bias: Sequence[float] | None = None) -> None:
        super().__init__()
        fs = _filters(filters, "SGANGenerator")
        if int(nz) < 1 or int(channels) < 1:
            raise ValueError(f"SGANGenerator: nz and channels must be >= 1, got {nz}, {channels}")
        bias = None
        if output_bias is not None:
            bias = [float(v) for v in output_bias]
            if len(bias) != int(channels) or not all(0.0 < v < 1.0 for v in bias):
                raise ValueError(f"SGANGenerator: output_bias must hold {channels} levels in (0, 1) (the sigmoid's "
                                 f"range), got {output_bias!r}")
        self.arch: dict[str, Any] = {"nz": int(nz), "channels": int(channels), "filters": fs, "output_bias": bias}
        self.nz = int(nz)
        #: upsampling factor: output side = scale * noise side
        self.scale = 2 ** len(fs)

        layers: list[nn.Module] = [nn.ConvTranspose2d(self.nz, fs[0], 4, 2, 1), nn.ELU()]
        cin = fs[0]
        for f in fs[1:]:
            layers += [nn.ConvTranspose2d(cin, f, 4, 2, 1), nn.ELU()]
            for _ in range(2):
                layers += [nn.ZeroPad2d(SAME_PAD_K4), nn.Conv2d(f, f, 4, 1, 0), nn.ELU()]
            cin = f
        layers += [nn.ConvTranspose2d(cin, int(channels), 3, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def reset_after_init(self) -> None:
        """With ``output_bias``: the output layer's bias is set to its logit (called by ``init_weights``)."""
        bias = self.arch.get("output_bias")
        if bias is not None:
            last = self.net[-2]  # the output ConvTranspose, before the sigmoid
            with torch.no_grad():
                last.bias.copy_(torch.logit(torch.tensor(bias, dtype=last.bias.dtype)))

    def margins(self) -> tuple[int, int]:
        """``(before, after)``: how many output pixels at the start (top / left) and at the end (bottom / right) of
        each axis depend on noise outside the field given (the networks' zero padding stands in for it there). The
        rest, output pixels ``[before, scale * n - after)`` of an ``n``-pixel noise axis, equals the same pixels of
        the image of any larger noise field containing this one (at the matching offset, ``scale`` per noise pixel).

        Follows the layers: a pixel is exact when every input it reads is. Conv (kernel k, stride s, left padding
        p) maps an exact input interval [L, R) to [ceil((L + p) / s), floor((R - k + p) / s) + 1); ConvTranspose
        (k, s, padding p) to [(L - 1) s - p + k, R s - p). Default network: (30, 44) (the padding is asymmetric).
        """
        n = 64  # any noise size large enough for the interval not to vanish; the margins do not depend on it
        lo, hi, pad_left = 0, n, 0
        for m in self.net:
            if isinstance(m, nn.ZeroPad2d):
                pad_left = int(m.padding[0])
            elif isinstance(m, nn.Conv2d):
                k, s = int(m.kernel_size[0]), int(m.stride[0])
                p = pad_left + int(m.padding[0])  # type: ignore[index]
                lo, hi, pad_left = -(-(lo + p) // s), (hi - k + p) // s + 1, 0
            elif isinstance(m, nn.ConvTranspose2d):
                k, s, p = int(m.kernel_size[0]), int(m.stride[0]), int(m.padding[0])  # type: ignore[index]
                lo, hi = (lo - 1) * s - p + k, hi * s - p
        return lo, self.scale * n - hi

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 4 or z.shape[1] != self.nz:
            raise ValueError(f"SGANGenerator expects noise (B, {self.nz}, h, w), got shape {tuple(z.shape)}")
        return self.net(z)


class SGANDiscriminator(nn.Module):
    """Packed images ``(B', pack * channels, H, W)`` (see :func:`pack`) -> one **logit** per packed sample, ``(B',)``.

    Conv k4 s2 (zero padding (1, 2, 1, 2): TensorFlow's "same") + LeakyReLU(``negative_slope``) for each of
    ``filters``, global average pooling, Linear(filters[-1], 1). Any H, W >= 1 (16 and more in practice).

    The dense layer keeps its bias (Keras' default, as in the authors' code) although the relativistic-average loss
    only sees logit differences, so that bias never receives a gradient there.
    """

    def __init__(self, channels: int = 3, pack: int = 2, filters: Sequence[int] = (32, 64, 128, 256),
                 negative_slope: float = SGAN_LEAKY_SLOPE) -> None:
        super().__init__()
        fs = _filters(filters, "SGANDiscriminator")
        if int(channels) < 1 or int(pack) < 1:
            raise ValueError(f"SGANDiscriminator: channels and pack must be >= 1, got {channels}, {pack}")
        self.arch: dict[str, Any] = {"channels": int(channels), "pack": int(pack), "filters": fs,
                                     "negative_slope": float(negative_slope)}
        self.pack = int(pack)
        self.in_channels = int(channels) * self.pack
        layers: list[nn.Module] = []
        cin = self.in_channels
        for f in fs:
            layers += [nn.ZeroPad2d(SAME_PAD_K4), nn.Conv2d(cin, f, 4, 2, 0),
                       nn.LeakyReLU(float(negative_slope), inplace=True)]
            cin = f
        self.features = nn.Sequential(*layers)
        self.dense = nn.Linear(cin, 1)

    def forward(self, packed: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``condition`` is accepted and ignored so that every discriminator has the same call signature."""
        if packed.dim() != 4 or packed.shape[1] != self.in_channels:
            raise ValueError(f"SGANDiscriminator expects packed images (B, {self.in_channels}, H, W) "
                             f"({self.pack} images of {self.in_channels // self.pack} channels; see pack()), got "
                             f"shape {tuple(packed.shape)}")
        h = self.features(packed).mean(dim=(2, 3))  # global average pooling
        return self.dense(h).squeeze(1)


__all__ = ["NZ", "SAME_PAD_K4", "SGANDiscriminator", "SGANGenerator", "SGAN_LEAKY_SLOPE", "pack"]
