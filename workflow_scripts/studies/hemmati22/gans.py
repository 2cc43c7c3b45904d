"""The GANs of the deblending study: a DCGAN from noise and SR-GANs from low-res stamps, trained through the shared loop;
augmentation, scaling, the ambient-noise measurement model, and inference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workflow_scripts.imaging.augment import augment, dihedral  # noqa: F401  (re-exported)
from workflow_scripts.imaging.scaling import AsinhScaling
from workflow_scripts.detection import (estimate_noise_sigma)
from workflow_scripts.models import DCGANDiscriminator, DCGANGenerator, SRDiscriminator, SRGenerator
from workflow_scripts.train.inference import generate, load_model, noise
from workflow_scripts.train.loop import TrainConfig, TrainResult, train
from workflow_scripts.train.objectives.gan import AsinhNoise, ConditionalGAN, NoiseToImageGAN

from workflow_scripts.errors import StudyError

log = logging.getLogger(__name__)

#: latent size of the DCGAN (Radford et al. 2016, as in the paper's code)
DCGAN_NZ = 100


# --------------------------------------------------------------------------------------------- training
def fit_scaling(cube: np.ndarray) -> AsinhScaling:
    """Invertible per-band asinh scaling of a (N, bands, H, W) cube into [-1, 1] (the generator's tanh range)."""
    return AsinhScaling.fit(cube, per_band=True)


def _scale(scaling: AsinhScaling, cube: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(scaling.forward(cube), dtype=np.float32))


def train_config(model: Mapping[str, Any], seed: int, device: str) -> TrainConfig:
    return TrainConfig(epochs=model["epochs"], batch_size=model["batch_size"], lr_g=model["lr_g"],
                       lr_d=model["lr_d"], betas=(model["beta1"], 0.999), l1_weight=model["l1_weight"],
                       ema_decay=model.get("ema_decay", 0.0), seed=seed, device=device)


def train_gan(model: Mapping[str, Any], hi: np.ndarray, lo: np.ndarray | None, scalings: Mapping[str, AsinhScaling],
              seed: int, device: str, out_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train a DCGAN (``kind: dcgan``, hi-res images only) or an SR-GAN (``kind: srgan``, lo -> hi pairs)."""
    channels = hi.shape[1]
    cfg = train_config(model, seed, device)
    if model["kind"] == "dcgan":
        objective: NoiseToImageGAN | ConditionalGAN = NoiseToImageGAN(
            DCGANGenerator(DCGAN_NZ, channels, base=model["base"]), DCGANDiscriminator(channels, base=model["base"]),
            nz=DCGAN_NZ)
        data: Any = _scale(scalings["hi"], hi)
    else:
        if lo is None:
            raise StudyError("an srgan needs the low-resolution training images")
        observe = ambient_noise(hi, scalings["hi"]) if model.get("ambient_noise", False) else None
        objective = ConditionalGAN(SRGenerator(channels, base=model["base"],
                                               upsample=model.get("upsample", "transposed"),
                                               skip=model.get("skip", False),
                                               zero_residual=model.get("zero_residual", False)),
                                   SRDiscriminator(channels, base=model["base"], conditional=True), observe=observe)
        data = (_scale(scalings["lo"], lo), _scale(scalings["hi"], hi))
    return train(objective, data, cfg, out_dir, progress=progress)


def background_sigma(cube: np.ndarray) -> np.ndarray:
    """Per-band per-pixel noise sigma of a (N, bands, H, W) cube: the median over stamps of each stamp's
    clipped-MAD sigma (:func:`estimate_noise_sigma`)."""
    return np.array([float(np.median(estimate_noise_sigma(cube[:, b]))) for b in range(cube.shape[1])])


def ambient_noise(hi: np.ndarray, scaling: AsinhScaling) -> AsinhNoise:
    """The measurement model of ``ambient_noise: true``: white noise of the hi-res training images' sigma, added
    in physical units to the generator's (asinh-scaled) output before the discriminator sees it."""
    sigma = background_sigma(hi)
    bands = hi.shape[1]
    soft = np.broadcast_to(np.atleast_1d(scaling.softening), (bands,))
    scale = np.broadcast_to(np.atleast_1d(scaling.scale), (bands,))
    log.info("ambient noise for the discriminator: sigma %s per pixel", np.array2string(sigma, precision=4))
    return AsinhNoise(sigma, soft, scale)


def super_resolve(generator_path: str | Path, lo: np.ndarray, scalings: Mapping[str, AsinhScaling],
                  device: str = "auto", batch_size: int = 256) -> np.ndarray:
    """GAN hi-res images (physical units) of low-resolution stamps (physical units)."""
    generator = load_model(generator_path, device)
    out = generate(generator, _scale(scalings["lo"], lo), batch_size=batch_size)
    return scalings["hi"].inverse(np.clip(out, -1.0, 1.0)).astype(np.float32)


def dcgan_samples(generator_path: str | Path, n: int, seed: int, scaling: AsinhScaling,
                  device: str = "auto") -> np.ndarray:
    generator = load_model(generator_path, device)
    z = noise(n, DCGAN_NZ, seed)
    out = generate(generator, z, batch_size=n)
    return scaling.inverse(np.clip(out, -1.0, 1.0)).astype(np.float32)
