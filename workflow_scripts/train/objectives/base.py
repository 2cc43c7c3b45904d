"""What a training objective is: the modules it trains, how their optimisers are built from the
:class:`~workflow_scripts.train.loop.TrainConfig`, and one optimisation step. Everything else (seeding, data order,
checkpoints, resume, signals, AMP, DDP, EMA, loss files) belongs to the loop, which keeps modules, optimisers,
grad scalers and weight averages in dicts under the names the objective gives its modules.

A step receives the batch and a :class:`StepContext`. It must call the modules of ``ctx.modules`` (with several
processes those are DistributedDataParallel replicas; calling a module of ``objective.modules`` directly would skip
the gradient averaging), run its forward passes under ``ctx.autocast()`` and update through ``ctx.optimise(name,
loss)`` (zero grad, scaled backward, step, scaler update). ``ctx.frozen(name)`` stops weight gradients of a module
for a pass whose gradients flow through it to another one (a GAN's generator step through the discriminator);
inside it the module can be called any number of times, on any input (a relativistic discriminator's D(real) in the
generator step). Random draws must come from the global torch RNG (checkpointed) in a fixed order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from workflow_scripts.models import architecture
from workflow_scripts.models.dcgan import after_init

if TYPE_CHECKING:  # the loop imports the objectives; its config is only a type here
    from workflow_scripts.train.checkpoint import Legacy
    from workflow_scripts.train.loop import TrainConfig


def module_fingerprint(module: nn.Module) -> dict[str, Any]:
    """The architecture of a module (class name and constructor arguments where it records them in ``.arch``; its
    parameter and buffer shapes otherwise), for the checkpoint fingerprint."""
    try:
        return architecture(module)
    except TypeError:
        return {"name": type(module).__qualname__,
                "shapes": {k: list(v.shape) for k, v in module.state_dict().items()}}


@dataclass
class StepContext:
    """What one optimisation step gets from the loop besides the batch."""

    device: torch.device
    #: mixed precision (cuda only)
    amp: bool
    #: the run's options (an objective reads its own, e.g. ``l1_weight``)
    config: TrainConfig
    #: the objective's modules by name, as the step must call them (DDP replicas with several processes)
    modules: Mapping[str, nn.Module]
    optimizers: Mapping[str, torch.optim.Optimizer]
    scalers: Mapping[str, torch.amp.GradScaler]
    #: trainable parameters of each module, listed once (``frozen`` toggles them every step)
    parameters: Mapping[str, Sequence[nn.Parameter]] = field(default_factory=dict)

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device.type, enabled=self.amp)

    def optimise(self, name: str, loss: torch.Tensor) -> None:
        """One update of the optimiser ``name`` on ``loss``, through that optimiser's grad scaler."""
        opt, scaler = self.optimizers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    @contextmanager
    def frozen(self, *names: str) -> Iterator[None]:
        """No weight gradients for these modules inside the block (gradients still flow through them)."""
        params = [p for n in names for p in self.parameters[n]]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)


class Objective(ABC):
    """One way of training: the modules, their optimisers, one step. Subclasses set the class attributes."""

    #: recorded in the checkpoint fingerprint and the model file's meta
    name: ClassVar[str] = "objective"
    #: the per-step values ``step`` returns; losses.csv holds their means over each epoch, in this order
    loss_columns: ClassVar[tuple[str, ...]] = ()
    #: curves of losses.png: label -> loss column
    plot_columns: ClassVar[Mapping[str, str]] = {}
    #: loss columns shown on the progress bar
    progress_columns: ClassVar[tuple[str, ...]] = ()
    #: the module written at the end of training (its weight average when ``ema_decay`` > 0)
    export: ClassVar[str] = "model"
    #: file name of the exported module in the output directory
    export_file: ClassVar[str] = "model.pt"

    @property
    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The trained modules by name; this order is that of initialisation and of optimiser creation."""

    @abstractmethod
    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per name (built after the modules are on the training device)."""

    @abstractmethod
    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch``; returns a value for each of :attr:`loss_columns`."""

    def check(self, cfg: TrainConfig) -> None:
        """Refuse options that do not apply to this objective (a ConfigError naming the option)."""

    def reset_parameters(self) -> None:
        """Re-initialise every module after seeding (``cfg.reinit``): the default calls each submodule's own
        ``reset_parameters``, so two runs with the same seed start from the same weights, then the
        ``reset_after_init`` of those that have one (a starting point set after initialisation, as
        :func:`workflow_scripts.models.init_weights` does for the GANs)."""
        for module in self.modules.values():
            for sub in module.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
            after_init(module)

    def config_fingerprint(self, cfg: TrainConfig) -> dict[str, Any]:
        """The options of ``cfg`` this objective reads that change the trained weights (learning rates ...)."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this set-up besides the config and the data: the objective and its architectures."""
        return {"objective": self.name, "modules": {k: module_fingerprint(m) for k, m in self.modules.items()}}

    def legacy(self, cfg: TrainConfig, dataset: Mapping[str, Any]) -> Legacy | None:
        """How to resume a version-1 checkpoint (the GAN-only loop's): its fingerprint for this set-up and a
        function mapping its keys to version 2; None: such a file is refused."""
        return None


__all__ = ["Objective", "StepContext", "module_fingerprint"]
