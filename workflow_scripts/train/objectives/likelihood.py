"""Maximum likelihood for one density model (PixelCNN and the like): minimise the negative log-likelihood.

The model's forward pass gives, for a batch of images ``x`` of shape ``(B, ...)``, either the log-likelihood of
each image in nats, shape ``(B,)`` (the default), or whatever ``log_prob(output, x)`` turns into that (e.g. the
logits of a discretised pixel distribution). The loss is the batch mean of ``-log p(x)``; losses.csv reports it
as ``nll`` (nats per image) and as ``bits_per_dim`` (``nll / (ln 2 * values per image)``), the unit papers quote.

A **class-conditional** model (``conditional=True``) trains on ``(images, labels)`` pairs and is called as
``model(x, labels)``: one network for ``log p(x | class)`` of several data sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from workflow_scripts.errors import ConfigError
from workflow_scripts.train.objectives.base import Objective, StepContext

if TYPE_CHECKING:
    from workflow_scripts.train.loop import TrainConfig

MODEL = "model"

#: ``(model output, images) -> log-likelihood of each image in nats, shape (B,)``
LogProb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class LikelihoodObjective(Objective):
    """One model, Adam (``lr``, ``betas``), NLL in nats. The dataset holds images (a pair's first element), or with
    ``conditional`` ``(images, integer labels)`` pairs."""

    name = "likelihood"
    loss_columns = ("nll", "bits_per_dim")
    plot_columns: ClassVar[Mapping[str, str]] = {"negative log-likelihood (bits/dim)": "bits_per_dim"}
    progress_columns = ("nll", "bits_per_dim")
    export = MODEL
    export_file = "model.pt"

    def __init__(self, model: nn.Module, log_prob: LogProb | None = None, conditional: bool = False) -> None:
        self.model = model
        self.log_prob = log_prob
        self.conditional = bool(conditional)

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {MODEL: self.model}

    def check(self, cfg: TrainConfig) -> None:
        if cfg.l1_weight > 0:
            raise ConfigError(f"training: l1_weight applies to paired GANs only, not {self.name}")

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {MODEL: torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas)}

    def config_fingerprint(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"lr": cfg.lr, "betas": cfg.betas}

    def fingerprint(self) -> dict[str, Any]:
        out = super().fingerprint()
        if self.log_prob is not None:
            out["log_prob"] = getattr(self.log_prob, "__qualname__", type(self.log_prob).__name__)
        if self.conditional:
            out["conditional"] = True
        return out

    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        x = _images(batch).to(ctx.device, non_blocking=True)
        if self.conditional:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ConfigError(f"{self.name}: a conditional model trains on (images, labels) pairs")
            labels = batch[1].to(ctx.device, non_blocking=True)
        with ctx.autocast():
            out = ctx.modules[MODEL](x, labels) if self.conditional else ctx.modules[MODEL](x)
        # the likelihood in float32: a sum over thousands of pixels in fp16 loses the digits that matter
        logp = out.float() if self.log_prob is None else self.log_prob(out.float(), x)
        if logp.shape != (x.shape[0],):
            raise ValueError(f"{self.name}: the log-likelihood must have one value per image, shape "
                             f"({x.shape[0]},), got {tuple(logp.shape)}")
        nll = -logp.mean()
        ctx.optimise(MODEL, nll)
        with torch.no_grad():
            nll = nll.detach()
            return {"nll": nll, "bits_per_dim": nll / (math.log(2.0) * x[0].numel())}


__all__ = ["LikelihoodObjective", "LogProb"]
