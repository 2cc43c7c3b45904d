"""The study's PixelCNNs, trained through the shared loop, and their per-pixel scores.

Three density models of the same architecture and budget (``model`` config block), each on its own data, and a
fourth beyond the paper (``shared_model``):

* ``real``: the real training stamps (log p(x) = global properties + fine detail + background);
* ``archetype``: the smooth single-Sersic archetypes of the same galaxies in real blank sky (global + background);
* ``perturbed``: Ren et al. 2019's background model, the real stamps with each pixel replaced at random with
  probability ``mu`` by a uniform level (no archetypes needed);
* ``shared``: one class-conditional PixelCNN on the real stamps (class 0) and the archetypes (class 1) together, for
  the same number of epochs (so the cost of the real and archetype models together). Every weight but one vector
  per class and block is shared, so its two likelihoods share one model of the sky and the noise; two separate
  models each learn their own, and their disagreement on the sky is what the paper's LLR maps should not show.

Each is a :class:`~workflow_scripts.models.pixelcnn.PixelCNN` trained with
:class:`~workflow_scripts.train.LikelihoodObjective` (``log_prob=model.params_log_prob``: nats per image of the
quantised pixels; losses.csv reports bits/dim) on ``augment`` dihedral copies of the stamps (the paper: random
rotations). Adam, its rate over the run set by ``model.lr_schedule`` (the demo: constant; the authors' and the
paper preset's: a cosine decay, theirs from 3e-6 over 1e6 steps). With
``model.output_start: marginal`` (ours, the default) each starts at the marginal distribution of its own training
pixels (:func:`~workflow_scripts.models.pixelcnn.marginal_start`; the shared model at that of both sets), so the
demo's few epochs go to what the context adds, not to finding the sky's level and noise; ``none``: the plain start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workflow_scripts.models.pixelcnn import PixelCNN, marginal_start
from workflow_scripts.studies.zanisi21.stamps import StampError, StampScaling, augment_dihedral, perturb
from workflow_scripts.train.inference import load_model, resolve_device
from workflow_scripts.train.loop import TrainConfig, TrainResult, train
from workflow_scripts.train.objectives.likelihood import LikelihoodObjective

log = logging.getLogger(__name__)

#: the density models of the study, in the order figures and tables list them
MODEL_KINDS = ("real", "archetype", "perturbed", "shared")
#: the classes of the shared model, in label order (its scores are named ``shared_{class}``)
SHARED_CLASSES = ("real", "archetype")
#: independent random stream (with the config seed) of the perturbation of the background model's inputs
PERTURB_STREAM = 7


def build_pixelcnn(model: Mapping[str, Any], bits: int, n_classes: int = 0,
                   data: np.ndarray | None = None) -> PixelCNN:
    """The study's PixelCNN; with ``model.output_start: marginal`` it starts at the marginal distribution of the
    pixels of ``data`` (its training images, model space)."""
    start = None
    if model.get("output_start", "none") == "marginal":
        if data is None:
            raise StampError("PixelCNN: output_start 'marginal' needs the training images")
        start = marginal_start(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), bits, model["n_mix"])
    return PixelCNN(channels=1, filters=model["filters"], n_resnet=model["n_resnet"], n_mix=model["n_mix"],
                    dropout=model["dropout"], bits=bits, n_classes=n_classes, output_start=start)


def train_config(model: Mapping[str, Any], seed: int, device: str) -> TrainConfig:
    return TrainConfig(epochs=model["epochs"], batch_size=model["batch_size"], lr=model["lr"],
                       betas=(model["beta1"], model["beta2"]), seed=seed, device=device,
                       lr_schedule=model.get("lr_schedule", "constant"))


def training_data(kind: str, cube: np.ndarray, scaling: StampScaling, *, copies: int, mu: float,
                  seed: int) -> np.ndarray:
    """Model-space training images of one model: the scaled stamps, ``copies`` dihedral copies, and for the
    ``perturbed`` model each copy perturbed independently (a fixed draw: the loop's resume stays bit-exact)."""
    if kind == "shared":
        raise StampError("the shared model trains on real stamps and archetypes together: use shared_training_data")
    if kind not in MODEL_KINDS:
        raise StampError(f"unknown model kind {kind!r} (one of {', '.join(MODEL_KINDS)})")
    x = augment_dihedral(scaling.to_model(cube), copies)
    if kind == "perturbed":
        x = perturb(x, mu, scaling.bits, np.random.default_rng([int(seed), PERTURB_STREAM]))
    return np.ascontiguousarray(x, dtype=np.float32)


def shared_training_data(cubes: Mapping[str, np.ndarray], scaling: StampScaling, *,
                         copies: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared model's training set: the model-space images of every class of :data:`SHARED_CLASSES` (``cubes``:
    class -> native stamps), ``copies`` dihedral copies each, and their integer labels."""
    missing = [c for c in SHARED_CLASSES if c not in cubes]
    if missing:
        raise StampError(f"the shared model needs the stamps of {', '.join(missing)}")
    parts = [training_data(c, cubes[c], scaling, copies=copies, mu=0.0, seed=0) for c in SHARED_CLASSES]
    labels = np.concatenate([np.full(len(x), k, np.int64) for k, x in enumerate(parts)])
    return np.ascontiguousarray(np.concatenate(parts)), labels


def train_pixelcnn(model: Mapping[str, Any], data: np.ndarray, *, bits: int, seed: int, device: str,
                   out_dir: str | Path, progress: bool = True, labels: np.ndarray | None = None) -> TrainResult:
    """Train one PixelCNN on model-space images ``(N, 1, H, W)``; writes ``out_dir/model.pt`` and losses. With
    ``labels`` (integers ``(N,)``) the PixelCNN is conditional on them (one class per distinct label)."""
    n_classes = 0 if labels is None else int(labels.max()) + 1
    if labels is not None and (len(labels) != len(data) or n_classes < 2):
        raise StampError(f"PixelCNN: {len(labels)} labels of {n_classes} classes for {len(data)} images "
                         "(one label per image, at least two classes)")
    net = build_pixelcnn(model, bits, n_classes, data)
    objective = LikelihoodObjective(net, log_prob=net.params_log_prob, conditional=labels is not None)
    log.info("PixelCNN: %d training images %s%s, filters %d, %d resnet blocks, %d logistics, %d bits, device %s",
             len(data), tuple(data.shape[1:]), f" in {n_classes} classes" if n_classes else "", model["filters"],
             model["n_resnet"], model["n_mix"], bits, device)
    dataset = torch.from_numpy(data) if labels is None else (torch.from_numpy(data), torch.from_numpy(labels))
    return train(objective, dataset, train_config(model, seed, device), out_dir, progress=progress)


@torch.no_grad()
def score_pixels(model_path: str | Path, x: np.ndarray, *, device: str = "auto", batch_size: int = 256,
                 label: int | None = None) -> np.ndarray:
    """Per-pixel log-likelihoods in nats ``(N, H, W)`` of model-space images ``(N, 1, H, W)`` (eval mode); ``label``:
    the class to score under, for a conditional model."""
    net = load_model(model_path, device)
    dev = resolve_device(device)
    out = []
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for i in range(0, len(t), batch_size):
        out.append(net.log_prob_pixels(t[i:i + batch_size].to(dev), label).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + tuple(x.shape[-2:]), np.float32)


def bits_per_dim(logp_pixels: np.ndarray) -> np.ndarray:
    """Per-image bits/dim of per-pixel log-likelihoods ``(N, H, W)``."""
    n = logp_pixels.shape[-1] * logp_pixels.shape[-2]
    return -logp_pixels.reshape(len(logp_pixels), -1).sum(1) / (np.log(2.0) * n)


__all__ = ["MODEL_KINDS", "SHARED_CLASSES", "bits_per_dim", "build_pixelcnn", "score_pixels", "shared_training_data",
           "train_config", "train_pixelcnn", "training_data"]
