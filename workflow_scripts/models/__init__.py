"""Network architectures (plain :class:`torch.nn.Module` classes, no training code).

Every model records the keyword arguments it was built with in ``model.arch`` (a JSON-able dict), so a checkpoint
holds ``(class name, arch, state_dict)`` and :func:`build_model` rebuilds the network for inference.

Conventions shared by all discriminators: ``forward(image, condition=None)`` returning logits (no sigmoid; train
with ``BCEWithLogitsLoss``). The DCGAN and SR discriminators return one logit per image, shape ``(B,)``;
the pix2pix PatchGAN a map of patch logits ``(B, 1, h, w)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from workflow_scripts.models.dcgan import DCGANDiscriminator, DCGANGenerator, discriminator_body, init_weights
from workflow_scripts.models.pix2pix import PatchDiscriminator, UNetGenerator
from workflow_scripts.models.pixelcnn import PixelCNN
from workflow_scripts.models.sgan import SGANDiscriminator, SGANGenerator
from workflow_scripts.models.srgan import LOWRES_SIZE, SRDiscriminator, SRGenerator

#: models that :func:`build_model` can rebuild from their name
MODELS: dict[str, type[nn.Module]] = {
    "DCGANGenerator": DCGANGenerator,
    "DCGANDiscriminator": DCGANDiscriminator,
    "SRGenerator": SRGenerator,
    "SRDiscriminator": SRDiscriminator,
    "UNetGenerator": UNetGenerator,
    "PatchDiscriminator": PatchDiscriminator,
    "PixelCNN": PixelCNN,
    "SGANGenerator": SGANGenerator,
    "SGANDiscriminator": SGANDiscriminator,
}


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Make ``cls`` rebuildable by :func:`build_model` (usable as a class decorator by later model modules)."""
    MODELS[cls.__name__] = cls
    return cls


def architecture(model: nn.Module) -> dict[str, Any]:
    """``{"name": class name, "arch": constructor kwargs}`` of a model built by this package."""
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict):
        raise TypeError(f"{type(model).__name__} does not record its constructor arguments in `.arch`")
    return {"name": type(model).__name__, "arch": dict(arch)}


def build_model(name: str, arch: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild a model from its class name and constructor kwargs (see :func:`architecture`)."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
    return cls(**(arch or {}))


__all__ = [
    "LOWRES_SIZE",
    "MODELS",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "PatchDiscriminator",
    "PixelCNN",
    "SGANDiscriminator",
    "SGANGenerator",
    "SRDiscriminator",
    "SRGenerator",
    "UNetGenerator",
    "architecture",
    "build_model",
    "discriminator_body",
    "init_weights",
    "register_model",
]
