"""pix2pix from the short- to the long-wavelength bands (Pearce-Casey+23 sec. 3), trained through the shared loop.

* Scaling: one invertible per-band asinh stretch (:class:`~workflow_scripts.imaging.scaling.AsinhScaling`, fitted
  on the training cutouts) for the input bands and one for the output bands, so that the training data lie in
  [-1, 1], the range of the generator's tanh. (The authors' code fitted bounds on log10 pixel values and applied
  them to linear data without clipping: not copied.)
* Model: :class:`~workflow_scripts.models.pix2pix.UNetGenerator` (any cutout size; ``resize`` > 0 resizes the
  cutouts first, the paper's 90 -> 256) against a :class:`~workflow_scripts.models.pix2pix.PatchDiscriminator` that
  sees input and output (``conditional``; the authors' saw the output only), with the
  :class:`~workflow_scripts.train.objectives.gan.ConditionalGAN` objective (BCE-with-logits + ``l1_weight`` x L1;
  its generator step is not detached, so the adversarial gradient reaches the generator).
* Output (``model.reference_band``, ours; null: the paper's direct prediction): every LW band predicted relative to
  the reddest SW band, the generator starting as a copy of it (:func:`reference_index`).
* Prediction (``test_time_dihedral``, ours; 1: the paper's single pass): the mean of the predictions of the 8
  rotated and flipped copies of each input, each turned back (EDSR's "self-ensemble"), at 8x the inference cost.
* Learning rates (``model.lr_schedule``, ours: ``linear``, pix2pix's decay to 0 over the second half of the run;
  ``constant``: the paper, which gives no schedule), applied by the shared loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workflow_scripts.imaging.augment import augment
from workflow_scripts.imaging.scaling import AsinhScaling
from workflow_scripts.imaging.stamps import CutoutSet
from workflow_scripts.imaging.test_time import dihedral_mean
from workflow_scripts.models.pix2pix import PatchDiscriminator, UNetGenerator
from workflow_scripts.train.inference import generate, load_model
from workflow_scripts.train.loop import TrainConfig, TrainResult, train
from workflow_scripts.train.objectives.gan import ConditionalGAN

log = logging.getLogger(__name__)

#: PatchGAN depth (n_layers 3: the 70 x 70 px receptive field of pix2pix and of the authors' code)
PATCH_LAYERS = 3


def split_bands(cs: CutoutSet, input_bands: Sequence[str], output_bands: Sequence[str]) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """(input cube, output cube) of a cutout set, bands in the given order."""
    sw = cs.cube[:, [cs.band_index(b) for b in input_bands]]
    lw = cs.cube[:, [cs.band_index(b) for b in output_bands]]
    return np.ascontiguousarray(sw), np.ascontiguousarray(lw)


def fit_scalings(sw: np.ndarray, lw: np.ndarray) -> dict[str, AsinhScaling]:
    return {"input": AsinhScaling.fit(sw, per_band=True), "output": AsinhScaling.fit(lw, per_band=True)}


def scalings_to_dict(scalings: Mapping[str, AsinhScaling], input_bands: Sequence[str],
                     output_bands: Sequence[str], resize: int) -> dict[str, Any]:
    return {"input_bands": list(input_bands), "output_bands": list(output_bands), "resize": int(resize),
            **{k: v.to_dict() for k, v in scalings.items()}}


def scalings_from_dict(d: Mapping[str, Any]) -> dict[str, AsinhScaling]:
    return {k: AsinhScaling.from_dict(d[k]) for k in ("input", "output")}


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if size <= 0 or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def to_model_space(cube: np.ndarray, scaling: AsinhScaling, resize: int = 0) -> torch.Tensor:
    """Scaled (and resized) float32 tensor of a physical-unit cube."""
    t = torch.from_numpy(np.ascontiguousarray(scaling.forward(cube), dtype=np.float32))
    return _resize(t, resize)


def reference_index(model: Mapping[str, Any], input_bands: Sequence[str]) -> int | None:
    """The input band every output is predicted relative to (``model.reference_band``; None: the paper's direct
    prediction)."""
    band = model.get("reference_band")
    return None if band is None else list(input_bands).index(band)


def build_objective(model: Mapping[str, Any], n_in: int, n_out: int, reference: int | None = None) -> ConditionalGAN:
    generator = UNetGenerator(in_channels=n_in, out_channels=n_out, base=model["base"], depth=model["depth"],
                              dropout=model["dropout"], n_dropout=model["n_dropout"], reference=reference)
    discriminator = PatchDiscriminator(image_channels=n_out, condition_channels=n_in, base=model["base"],
                                       n_layers=PATCH_LAYERS, conditional=model["conditional"])
    return ConditionalGAN(generator, discriminator, adversarial_gradient=model.get("adversarial_gradient", True))


def train_config(model: Mapping[str, Any], seed: int, device: str) -> TrainConfig:
    return TrainConfig(epochs=model["epochs"], batch_size=model["batch_size"], lr_g=model["lr_g"],
                       lr_d=model["lr_d"], betas=(model["beta1"], 0.999), l1_weight=model["l1_weight"], seed=seed,
                       device=device, lr_schedule=model.get("lr_schedule", "constant"))


def train_pix2pix(model: Mapping[str, Any], sw: np.ndarray, lw: np.ndarray, scalings: Mapping[str, AsinhScaling],
                  *, copies: int, seed: int, device: str, out_dir: str | Path, progress: bool = True,
                  reference: int | None = None) -> TrainResult:
    """Train on ``copies`` dihedral copies of the (input, output) training cubes (physical units); ``reference``:
    see :func:`reference_index`."""
    sw_a, lw_a = augment([sw, lw], copies)
    resize = int(model["resize"])
    data = (to_model_space(sw_a, scalings["input"], resize), to_model_space(lw_a, scalings["output"], resize))
    objective = build_objective(model, sw.shape[1], lw.shape[1], reference)
    log.info("pix2pix: %d training pairs (%d cutouts x %d), %d -> %d bands, %d px, base %d, depth %d, device %s",
             len(sw_a), len(sw), copies, sw.shape[1], lw.shape[1], data[0].shape[-1], model["base"],
             model["depth"], device)
    return train(objective, data, train_config(model, seed, device), out_dir, progress=progress)


def predict(generator_path: str | Path, sw: np.ndarray, scalings: Mapping[str, AsinhScaling], *, resize: int = 0,
            device: str = "auto", batch_size: int = 64, dihedral: int = 1) -> np.ndarray:
    """Predicted output bands (physical units, the cutouts' size) of input cubes (physical units).

    ``dihedral`` > 1 (``test_time_dihedral``, ours): the mean in flux of the predictions of that many dihedral
    transforms of each input, each transformed back (:func:`~workflow_scripts.imaging.test_time.dihedral_mean`)."""
    generator = load_model(generator_path, device)
    size = sw.shape[-1]

    def one_pass(cube: np.ndarray) -> np.ndarray:
        out = torch.from_numpy(generate(generator, to_model_space(cube, scalings["input"], resize),
                                        batch_size=batch_size))
        out = _resize(out, size) if resize else out
        return scalings["output"].inverse(np.clip(out.numpy(), -1.0, 1.0)).astype(np.float32)

    return dihedral_mean(one_pass, sw, dihedral)


__all__ = ["build_objective", "fit_scalings", "predict", "reference_index", "scalings_from_dict", "scalings_to_dict",
           "split_bands", "to_model_space", "train_pix2pix"]
