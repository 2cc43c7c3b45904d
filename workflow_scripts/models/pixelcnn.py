"""A compact PixelCNN++ (Salimans et al. 2017) density model for the likelihood-ratio out-of-distribution study of
Zanisi et al. 2021: an autoregressive model of single-band stamps, log p(x) = sum_i log p(x_i | x_<i) in raster
order, with a discretised logistic mixture per pixel.

Architecture only (plain :class:`torch.nn.Module`); train it with
:class:`workflow_scripts.train.LikelihoodObjective` and ``log_prob=model.params_log_prob`` (forward gives the
mixture parameters, ``params_log_prob`` turns them into nats per image; losses.csv then reports bits/dim).

What is kept from PixelCNN++:

* **two streams of shifted convolutions**: a *down* stream (``u``) whose value at pixel (i, j) sees only the rows
  above (``2x3`` convolutions padded on top and both sides, the input shifted one row down), and a *down-right*
  stream (``ul``) that sees the rows above and the pixels to the left in row i (``2x2`` convolutions padded on top
  and left; initialised from a one-row-down ``1x3`` and a one-column-right ``2x1`` convolution), so the
  parameters predicted at (i, j) depend on pixels before (i, j) in raster order only, without the blind spot of the
  original PixelCNN. The ``ul`` stream gets the ``u`` stream through 1x1 convolutions. A constant channel of ones
  is appended to the input, as in PixelCNN++, so the zero padding marks the image border.
* **gated resnet blocks** with ``concat_elu`` (``elu([x, -x])``): ``h = conv(concat_elu(x)) [+ nin(concat_elu(a))]``,
  ``h = conv(dropout(concat_elu(h)))`` to ``2 x filters``, ``x + h_a * sigmoid(h_b)``; dropout between the two
  convolutions (PixelCNN++: 0.5);
* an **up pass** of ``n_resnet`` blocks per stream, then a **down pass** of ``n_resnet`` blocks per stream that takes
  the up pass's outputs in reverse order as skip connections (``u`` <- ``u_skip``; ``ul`` <- ``[u, ul_skip]``);
* the output ``nin(elu(ul))``: ``3 * n_mix`` maps per channel (mixture logits, means, log scales);
* the **discretised logistic mixture** likelihood over 2**bits levels on [-1, 1], with its edge cases
  (:func:`discretized_logistic_log_prob`).

What is **not** kept (a compact model for 32x32 stamps): the U-Net-style down- and up-sampling of the full
PixelCNN++ (its three resolutions, strided shifted convolutions and transposed convolutions) -- every layer here
works at full resolution (in TensorFlow Probability's terms, ``num_hierarchies=1``); the receptive field therefore
grows by one row (and about one column) per convolution instead of doubling per resolution. Weight normalisation
and its data-dependent initialisation are omitted too (plain PyTorch initialisation).

**Starting point** (``output_start``, ours): with the plain initialisation an untrained PixelCNN predicts an
arbitrary mixture at every pixel, and a short training spends its first epochs learning the pixels' overall level
and noise. Given ``output_start`` (the mixture parameters of one pixel, e.g. :func:`marginal_start`: the training
pixels' histogram fitted by the discretised mixture), the output layer starts with zero weights and that bias, so
the untrained model gives every pixel the data's marginal distribution, and training learns only what the context
adds. On a stamp whose sky is white noise the marginal is already nearly the right conditional for every sky pixel.
(This plays the part of PixelCNN++'s data-dependent initialisation, which is omitted; the same idea as a classifier's
bias set to the log prior, Lin et al. 2017, or Glow's zero-initialised last layers, Kingma & Dhariwal 2018.)

Single-band images need no autoregression over channels. With ``channels > 1`` the channels of one pixel are
modelled as **independent given the previous pixels** (no PixelCNN++ RGB coupling of the means).

**Conditioning on a class** (``n_classes > 0``; not in PixelCNN++, the class-conditional PixelCNN of van den Oord
et al. 2016): a learnt vector per class is added to the gate and value of every gated resnet block
(``h = conv2(...) + V y``), so ``log p(x | y)`` for several data sets comes from one network that shares every
other weight. The vectors start at zero: at initialisation every class has the same likelihood. The
likelihood-ratio study uses it to score ``log p(x | real) - log p(x | archetype)`` with one shared model of the
sky and the noise instead of two independently trained ones.

Defaults: the Zanisi et al. set-up (3 resnet blocks, 64 filters, dropout 0.5) with PixelCNN++'s 5 logistics and
8-bit levels (they replaced the logistic mixture by a continuous Gaussian; we keep PixelCNN++'s likelihood, so
bits/dim are those of a discrete model, comparable to the 2.92 bits/dim of PixelCNN++ on CIFAR-10).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: PixelCNN++'s floor on the log scale of a logistic (scale >= exp(-7) ~ 9e-4)
MIN_LOG_SCALE = -7.0
#: below this bin mass the log of the CDF difference is replaced by the log-density at the bin centre x bin width
TINY_BIN = 1e-5


# ------------------------------------------------------------------------------------------ likelihood
def n_levels(bits: int) -> int:
    """Number of quantisation levels, ``2**bits``."""
    bits = int(bits)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must lie in [1, 16], got {bits}")
    return 2**bits


def quantize(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Map floats (clipped to [-1, 1]) to the nearest of the ``2**bits`` bin centres ``-1 + 2k / (2**bits - 1)``,
    ``k = 0 .. 2**bits - 1`` (PixelCNN++'s grid: ``x / 127.5 - 1`` for 8-bit pixels). Idempotent."""
    top = n_levels(bits) - 1
    k = torch.round((x.clamp(-1.0, 1.0) + 1.0) * (top / 2.0))
    return k * (2.0 / top) - 1.0


def split_params(params: torch.Tensor, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, channels * 3 * n_mix, H, W)`` -> logits, means, log scales (floored at ``MIN_LOG_SCALE``), each
    ``(B, channels, n_mix, H, W)``. Per channel the maps are ordered logits, means, log scales."""
    if params.dim() != 4 or params.shape[1] % (3 * channels):
        raise ValueError(f"mixture parameters must be (B, channels * 3 * n_mix, H, W) with channels={channels}, "
                         f"got shape {tuple(params.shape)}")
    b, _, h, w = params.shape
    p = params.reshape(b, channels, 3, -1, h, w)
    return p[:, :, 0], p[:, :, 1], p[:, :, 2].clamp(min=MIN_LOG_SCALE)


def discretized_logistic_log_prob(params: torch.Tensor, x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Log-likelihood in nats of each pixel value of ``x`` under a discretised mixture of logistics (PixelCNN++).

    ``params``: ``(B, C * 3 * n_mix, H, W)`` (per channel: mixture logits, means, log scales), ``x``: ``(B, C, H, W)``
    on the grid of :func:`quantize` (values between bin centres are scored as the bin of half-width
    ``1 / (2**bits - 1)`` around them). Returns ``(B, C, H, W)``.

    Each logistic's mass on a bin is ``sigmoid((x + d - mu) / s) - sigmoid((x - d - mu) / s)``, ``d`` the half bin
    width, except that the first bin (x = -1) integrates from -inf and the last (x = 1) to +inf, so the masses over
    the ``2**bits`` values sum to 1. The middle difference is evaluated on the side of the logistic where both
    sigmoids are small (``sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a)``) so no digits cancel against 1, and
    below a mass of ``TINY_BIN`` (a bin far in a narrow logistic's tail) it is replaced, as in PixelCNN++, by the
    log-density at the bin centre plus ``log(2d)``.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    half = 1.0 / (n_levels(bits) - 1)
    logits, means, log_scales = split_params(params, x.shape[1])
    xe = x.unsqueeze(2)  # (B, C, 1, H, W)
    centred = xe - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centred + half)
    min_in = inv_s * (centred - half)
    log_cdf_plus = plus_in - F.softplus(plus_in)      # log sigmoid(plus_in): the first bin, from -inf
    log_one_minus_cdf_min = -F.softplus(min_in)       # log (1 - sigmoid(min_in)): the last bin, to +inf
    upper = centred > 0  # bin above the mean: use the upper tail, 1 - cdf, where the sigmoids are small
    cdf_delta = torch.where(upper, torch.sigmoid(-min_in) - torch.sigmoid(-plus_in),
                            torch.sigmoid(plus_in) - torch.sigmoid(min_in))
    mid_in = inv_s * centred
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)  # log density of the logistic at x
    log_mid = torch.where(cdf_delta > TINY_BIN, torch.log(cdf_delta.clamp(min=1e-12)),
                          log_pdf_mid + math.log(2.0 * half))
    edge = 1.0 - half  # bins centred beyond +-edge are the first / last
    log_probs = torch.where(xe < -edge, log_cdf_plus, torch.where(xe > edge, log_one_minus_cdf_min, log_mid))
    return torch.logsumexp(log_probs + F.log_softmax(logits, dim=2), dim=2)


# ------------------------------------------------------------------------------------------ layers
def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu([x, -x])`` on the channel axis (PixelCNN++'s non-linearity; doubles the channels)."""
    return F.elu(torch.cat([x, -x], dim=1))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift the map one row down (a zero row on top, the last row dropped)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift the map one column right (a zero column on the left, the last column dropped)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class DownShiftedConv2d(nn.Conv2d):
    """``kh x kw`` convolution padded ``kh - 1`` rows on top and ``(kw - 1) / 2`` columns each side: the output at
    (i, j) sees rows i - kh + 1 .. i, columns j - (kw-1)/2 .. j + (kw-1)/2 (same size as the input)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 3)) -> None:
        kh, kw = kernel
        if kw % 2 != 1:
            raise ValueError(f"DownShiftedConv2d needs an odd kernel width, got {kw}")
        super().__init__(cin, cout, kernel)
        self.pad = ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class DownRightShiftedConv2d(nn.Conv2d):
    """``kh x kw`` convolution padded ``kh - 1`` rows on top and ``kw - 1`` columns on the left: the output at (i, j)
    sees rows i - kh + 1 .. i, columns j - kw + 1 .. j (same size as the input)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 2)) -> None:
        kh, kw = kernel
        super().__init__(cin, cout, kernel)
        self.pad = (kw - 1, 0, kh - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class GatedResnet(nn.Module):
    """PixelCNN++'s gated resnet block on ``filters`` channels with the causal convolution ``conv`` (a class of
    shifted convolution), an optional skip input ``a`` of ``skip_channels`` channels (through a 1x1 convolution)
    and, with ``n_classes > 0``, a class label ``y`` (a learnt vector per class, zero at the start)::

        h = conv(concat_elu(x)) [+ nin(concat_elu(a))]
        h = conv(dropout(concat_elu(h))) [+ V y]  # 2 * filters channels
        x + h[:filters] * sigmoid(h[filters:])
    """

    def __init__(self, filters: int, conv: type[nn.Conv2d], skip_channels: int = 0, dropout: float = 0.5,
                 n_classes: int = 0) -> None:
        super().__init__()
        self.conv1 = conv(2 * filters, filters)
        self.skip = nn.Conv2d(2 * skip_channels, filters, 1) if skip_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(2 * filters, 2 * filters)
        self.label = nn.Embedding(n_classes, 2 * filters) if n_classes else None
        if self.label is not None:
            nn.init.zeros_(self.label.weight)

    def forward(self, x: torch.Tensor, a: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(concat_elu(x))
        if self.skip is not None:
            if a is None:
                raise ValueError("GatedResnet: this block needs its skip input")
            h = h + self.skip(concat_elu(a))
        h = self.conv2(self.dropout(concat_elu(h)))
        if self.label is not None:
            if y is None:
                raise ValueError("GatedResnet: this block is class-conditional and needs the labels y")
            h = h + self.label(y)[:, :, None, None].to(h.dtype)
        value, gate = h.chunk(2, dim=1)
        return x + value * torch.sigmoid(gate)


# ------------------------------------------------------------------------------------------ model
class PixelCNN(nn.Module):
    """Images ``(B, channels, H, W)`` in [-1, 1] -> discretised logistic mixture parameters
    ``(B, channels * 3 * n_mix, H, W)`` (per channel: ``n_mix`` logits, ``n_mix`` means, ``n_mix`` log scales) of
    each pixel given the pixels before it in raster order; any H, W. See the module docstring for the layers.

    :meth:`log_prob` gives nats per image, :meth:`log_prob_pixels` the per-pixel map (for pixel-wise
    likelihood-ratio maps), :meth:`params_log_prob` the ``log_prob`` function of
    :class:`~workflow_scripts.train.LikelihoodObjective`. With ``n_classes > 0`` every call takes the class labels
    ``y`` too (integers ``(B,)`` in ``[0, n_classes)``, or one integer for the whole batch). All three score
    ``quantize(x, bits)``; ``log_prob`` and ``log_prob_pixels`` also feed the quantised image to the network, so
    train on quantised data (``quantize``) for the network to see in training what it is scored on.
    """

    def __init__(self, channels: int = 1, filters: int = 64, n_resnet: int = 3, n_mix: int = 5,
                 dropout: float = 0.5, bits: int = 8, n_classes: int = 0,
                 output_start: list[float] | None = None) -> None:
        super().__init__()
        channels, filters, n_resnet, n_mix, bits = int(channels), int(filters), int(n_resnet), int(n_mix), int(bits)
        n_classes = int(n_classes)
        for name, value in (("channels", channels), ("filters", filters), ("n_resnet", n_resnet), ("n_mix", n_mix)):
            if value < 1:
                raise ValueError(f"PixelCNN: {name} must be >= 1, got {value}")
        if n_classes < 0 or n_classes == 1:
            raise ValueError(f"PixelCNN: n_classes must be 0 (unconditional) or >= 2, got {n_classes}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"PixelCNN: dropout must lie in [0, 1), got {dropout}")
        n_levels(bits)  # validates bits
        self.arch: dict[str, Any] = {"channels": channels, "filters": filters, "n_resnet": n_resnet,
                                     "n_mix": n_mix, "dropout": float(dropout), "bits": bits}
        if n_classes:  # only when set: model files written before the option rebuild unchanged
            self.arch["n_classes"] = n_classes
        if output_start is not None:  # likewise
            start = [float(v) for v in output_start]
            if len(start) != channels * 3 * n_mix or not all(math.isfinite(v) for v in start):
                raise ValueError(f"PixelCNN: output_start must hold channels x 3 x n_mix = {channels * 3 * n_mix} "
                                 f"finite values (per channel: logits, means, log scales), got {len(start)}")
            self.arch["output_start"] = start
        self.channels, self.n_mix, self.bits, self.n_classes = channels, n_mix, bits, n_classes
        cin = channels + 1  # + the channel of ones
        self.u_init = DownShiftedConv2d(cin, filters, (2, 3))
        self.ul_init_down = DownShiftedConv2d(cin, filters, (1, 3))
        self.ul_init_right = DownRightShiftedConv2d(cin, filters, (2, 1))
        p, k = float(dropout), n_classes
        self.up_u = nn.ModuleList(GatedResnet(filters, DownShiftedConv2d, 0, p, k) for _ in range(n_resnet))
        self.up_ul = nn.ModuleList(GatedResnet(filters, DownRightShiftedConv2d, filters, p, k)
                                   for _ in range(n_resnet))
        self.down_u = nn.ModuleList(GatedResnet(filters, DownShiftedConv2d, filters, p, k) for _ in range(n_resnet))
        self.down_ul = nn.ModuleList(GatedResnet(filters, DownRightShiftedConv2d, 2 * filters, p, k)
                                     for _ in range(n_resnet))
        self.out = nn.Conv2d(filters, channels * 3 * n_mix, 1)
        self.reset_after_init()

    def reset_after_init(self) -> None:
        """With ``output_start``: the output layer's weights are zeroed and its bias set to it, so the untrained
        model predicts that mixture at every pixel (called again after every re-initialisation)."""
        start = self.arch.get("output_start")
        if start is not None:
            with torch.no_grad():
                self.out.weight.zero_()
                self.out.bias.copy_(torch.tensor(start, dtype=self.out.bias.dtype))

    def _labels(self, y: torch.Tensor | int | None, x: torch.Tensor) -> torch.Tensor | None:
        if not self.n_classes:
            if y is not None:
                raise ValueError("PixelCNN: this model is unconditional (n_classes 0) and takes no labels")
            return None
        if y is None:
            raise ValueError(f"PixelCNN: this model is conditional on {self.n_classes} classes and needs the labels y")
        y = torch.as_tensor(y, dtype=torch.long, device=x.device)
        if y.dim() == 0:
            y = y.expand(x.shape[0])
        if y.shape != (x.shape[0],):
            raise ValueError(f"PixelCNN: labels must be one per image, shape ({x.shape[0]},), got {tuple(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ValueError(f"PixelCNN: labels must lie in [0, {self.n_classes}), got {int(y.min())}..{int(y.max())}")
        return y

    def forward(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"PixelCNN expects (B, {self.channels}, H, W) images, got shape {tuple(x.shape)}")
        y = self._labels(y, x)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        u = down_shift(self.u_init(x))
        ul = down_shift(self.ul_init_down(x)) + right_shift(self.ul_init_right(x))
        u_skips, ul_skips = [], []
        for block_u, block_ul in zip(self.up_u, self.up_ul):
            u = block_u(u, y=y)
            ul = block_ul(ul, u, y=y)
            u_skips.append(u)
            ul_skips.append(ul)
        for block_u, block_ul in zip(self.down_u, self.down_ul):
            u = block_u(u, u_skips.pop(), y=y)
            ul = block_ul(ul, torch.cat([u, ul_skips.pop()], dim=1), y=y)
        return self.out(F.elu(ul))

    def params_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Nats per image ``(B,)`` of ``quantize(x, bits)`` under the mixture ``params = self(x)`` (the
        ``log_prob`` of :class:`~workflow_scripts.train.LikelihoodObjective`)."""
        return discretized_logistic_log_prob(params.float(), quantize(x, self.bits), self.bits).flatten(1).sum(1)

    def log_prob_pixels(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        """Log-likelihood in nats of each pixel of ``quantize(x, bits)`` given the pixels before it (and the class
        ``y`` of a conditional model), ``(B, H, W)`` (summed over channels)."""
        xq = quantize(x, self.bits)
        return discretized_logistic_log_prob(self(xq, y).float(), xq, self.bits).sum(1)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        """Log-likelihood in nats of each image of ``quantize(x, bits)``, ``(B,)``."""
        return self.log_prob_pixels(x, y).flatten(1).sum(1)

    def bits_per_dim(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        """``-log2 p(x)`` per value of each image, ``(B,)``."""
        return -self.log_prob(x, y) / (math.log(2.0) * x[0].numel())


def marginal_start(x: torch.Tensor | Any, bits: int = 8, n_mix: int = 5, steps: int = 400) -> list[float]:
    """The ``output_start`` of a :class:`PixelCNN` that predicts the marginal distribution of the pixel values of
    ``x`` (``(N, C, H, W)`` in [-1, 1], quantised as the model does): per channel, the discretised logistic mixture
    of ``n_mix`` components fitted by maximum likelihood to the histogram of its ``2**bits`` levels (L-BFGS in
    float64, started from the quantiles; no random numbers, so the same data give the same start). Returns the
    output bias, per channel ``n_mix`` logits, ``n_mix`` means, ``n_mix`` log scales."""
    x = torch.as_tensor(x)
    if x.dim() != 4 or not len(x):
        raise ValueError(f"marginal_start: needs images (N, C, H, W), got shape {tuple(x.shape)}")
    top = n_levels(bits) - 1
    out: list[float] = []
    for c in range(x.shape[1]):
        q = quantize(x[:, c].reshape(-1).float(), bits)
        counts = torch.bincount(torch.round((q + 1.0) * (top / 2.0)).long(), minlength=top + 1).double()
        centres = torch.from_numpy(np.quantile(q.numpy(), (np.arange(n_mix) + 0.5) / n_mix)).double()
        spread = max(float(q.std()) / n_mix, 1.0 / top)
        first = torch.cat([torch.zeros(n_mix, dtype=torch.float64), centres,
                           torch.full((n_mix,), math.log(spread), dtype=torch.float64)])
        out += [float(v) for v in _fit_histogram(counts / counts.sum(), first, bits, steps)]
    return out


def _fit_histogram(freq: torch.Tensor, first: torch.Tensor, bits: int, steps: int) -> torch.Tensor:
    """Mixture parameters (logits, means, log scales) maximising ``sum freq * log p(level)`` over the levels."""
    grid = torch.linspace(-1.0, 1.0, len(freq), dtype=torch.float64).view(1, 1, -1, 1)
    p = first.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        opt.zero_grad()
        lp = discretized_logistic_log_prob(p.view(1, -1, 1, 1).expand(1, -1, len(freq), 1), grid, bits)
        loss = -(freq * lp.view(-1)).sum()
        loss.backward()
        return loss

    opt.step(nll)
    fitted = p.detach()
    k = len(fitted) // 3
    fitted[2 * k:] = fitted[2 * k:].clamp(min=MIN_LOG_SCALE)
    return fitted


@torch.no_grad()
def sample(model: PixelCNN, shape: tuple[int, int, int, int] | tuple[int, int, int],
           generator: torch.Generator | None = None, y: torch.Tensor | int | None = None) -> torch.Tensor:
    """Draw images ``shape = (B, C, H, W)`` (or ``(B, H, W)`` for one channel) from ``model`` pixel by pixel in
    raster order (H x W forward passes, in eval mode; the model's mode is restored). A mixture component is drawn
    from the logits, then a logistic value, clipped to [-1, 1] and quantised: exactly a draw of the discretised
    logistic mixture. Values lie on the grid of :func:`quantize`. Random numbers come from ``generator`` (on the
    model's device) or the global generator; ``y``: the class(es) of a conditional model."""
    if len(shape) == 3:
        shape = (shape[0], 1, shape[1], shape[2])
    b, c, h, w = (int(s) for s in shape)
    if c != model.channels:
        raise ValueError(f"sample: the model has {model.channels} channel(s), asked for {c}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(b, c, h, w, device=device)
        for i in range(h):
            for j in range(w):
                logits, means, log_scales = split_params(model(x, y)[:, :, i:i + 1, j:j + 1], c)
                logits, means, log_scales = logits[..., 0, 0], means[..., 0, 0], log_scales[..., 0, 0]  # (B, C, K)
                u = torch.rand(logits.shape, generator=generator, device=device).clamp(1e-10, 1 - 1e-10)
                k = torch.argmax(logits - torch.log(-torch.log(u)), dim=2, keepdim=True)  # Gumbel-max
                mu = means.gather(2, k)[..., 0]
                s = log_scales.gather(2, k)[..., 0].exp()
                v = torch.rand(mu.shape, generator=generator, device=device).clamp(1e-10, 1 - 1e-10)
                value = mu + s * (torch.log(v) - torch.log1p(-v))
                x[:, :, i, j] = quantize(value, model.bits)
    finally:
        model.train(was_training)
    return x


__all__ = [
    "DownRightShiftedConv2d",
    "DownShiftedConv2d",
    "GatedResnet",
    "PixelCNN",
    "concat_elu",
    "discretized_logistic_log_prob",
    "down_shift",
    "marginal_start",
    "quantize",
    "right_shift",
    "sample",
    "split_params",
]
