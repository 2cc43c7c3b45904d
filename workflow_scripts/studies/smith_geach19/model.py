"""The Spatial-GAN of the deep-field study trained through the shared loop, with its self-ensemble.

Training runs to each snapshot epoch in turn (the loop resumes from its checkpoint when the epoch count grows, so
the result equals one uninterrupted run; a checkpoint already past a snapshot, e.g. a finished run's when the rule
runs again, is set aside by the loop and training starts again) and keeps the generator of the last
``ensemble.members`` snapshots, taken every ``ensemble.every`` epochs (paper: 21 generators, every 10th epoch over
the last 200).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workflow_scripts.models.sgan import SGANDiscriminator, SGANGenerator
from workflow_scripts.studies.smith_geach19.data import CropDataset
from workflow_scripts.train import distributed
from workflow_scripts.train.loop import TrainConfig, TrainResult, train
from workflow_scripts.train.objectives.ragan import RelativisticPackedGAN

log = logging.getLogger(__name__)


def snapshot_epochs(epochs: int, every: int, members: int) -> list[int]:
    """The epochs (1-based, ascending) after which a generator joins the ensemble: the last is ``epochs``."""
    return [epochs - every * k for k in range(members - 1, -1, -1)]


def output_levels(model: Mapping[str, Any], field: np.ndarray) -> list[float] | None:
    """The generator's starting level per band (``model.output_bias``): ``sky``, the median of each band of the
    (normalised) training field, i.e. its sky; ``zero``: None, a zero bias (sigmoid 0.5), as the authors'."""
    if model["output_bias"] == "zero":
        return None
    levels = np.median(field.reshape(field.shape[0], -1), axis=1)
    return [float(v) for v in np.clip(levels, 1e-4, 1 - 1e-4)]  # a finite logit even for a sky clipped at 0


def build_objective(model: Mapping[str, Any], field: np.ndarray) -> RelativisticPackedGAN:
    """The Spatial-GAN pair for a normalised (C, H, W) training field: ``model.init`` and ``model.output_bias``
    choose the starting weights (see :mod:`workflow_scripts.models.sgan`)."""
    channels = field.shape[0]
    gen = SGANGenerator(nz=model["nz"], channels=channels, filters=model["g_filters"],
                        output_bias=output_levels(model, field))
    disc = SGANDiscriminator(channels=channels, pack=2, filters=model["d_filters"])
    return RelativisticPackedGAN(gen, disc, noise_channels=model["nz"], pack=2, init=model["init"])


def train_config(model: Mapping[str, Any], epochs: int, seed: int, device: str) -> TrainConfig:
    """The loop's settings for training the study's ``model`` to ``epochs``."""
    return TrainConfig(epochs=epochs, batch_size=model["batch_size"], lr_g=model["lr_g"], lr_d=model["lr_d"],
                       betas=(model["beta1"], 0.999), seed=seed, device=device)


def snapshot_path(out_dir: str | Path, epoch: int) -> Path:
    """The generator file of the snapshot after ``epoch``."""
    return Path(out_dir) / f"generator_epoch{epoch:04d}.pt"


def train_ensemble(model: Mapping[str, Any], ensemble: Mapping[str, Any], field: np.ndarray, crop_size: int,
                   seed: int, device: str, out_dir: str | Path, progress: bool = True) -> tuple[list[Path],
                                                                                              TrainResult]:
    """Train to every snapshot epoch; returns the snapshot generator files (oldest first) and the last result.

    A pre-empted run returns at once (``result.preempted``, the snapshots taken so far): its checkpoint lets the
    next run resume. Under torchrun every worker calls this; rank 0 writes the snapshots (as it writes every file
    of the loop) before the next training's first collective, so the others never read a half-written one.
    """
    out_dir = Path(out_dir)
    is_main = distributed.current().is_main
    data = CropDataset(field, crop_size, model["crops_per_epoch"], seed)
    snaps: list[Path] = []
    result: TrainResult | None = None
    for epoch in snapshot_epochs(model["epochs"], ensemble["every"], ensemble["members"]):
        result = train(build_objective(model, field), data, train_config(model, epoch, seed, device), out_dir,
                       progress=progress and is_main)
        if not result.completed:
            return snaps, result
        snap = snapshot_path(out_dir, epoch)
        if is_main:
            shutil.copyfile(result.model_path, snap)
            log.info("snapshot after epoch %d: %s (%s)", epoch, snap.name, result.throughput())
        snaps.append(snap)
    assert result is not None
    return snaps, result


__all__ = ["build_objective", "output_levels", "snapshot_epochs", "snapshot_path", "train_config", "train_ensemble"]
