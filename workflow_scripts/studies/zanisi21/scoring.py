"""Score one stamp set with the study's PixelCNNs: per-pixel log-likelihoods, LLR maps, source / background
pixels, and a per-image table (what the metrics and figures read)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from workflow_scripts.io import atomic_path, provenance_header
from workflow_scripts.studies.zanisi21.analysis import background_share, llr_maps, source_masks
from workflow_scripts.studies.zanisi21.model import SHARED_CLASSES, bits_per_dim, score_pixels
from workflow_scripts.studies.zanisi21.stamps import StampError, StampScaling, zoom

#: the LLRs of the study: name -> (numerator model, denominator model); the shared model scores each image once per
#: class (``shared_real``, ``shared_archetype``)
RATIOS = {"llr": ("real", "archetype"), "llr_perturbed": ("real", "perturbed"),
          "llr_shared": ("shared_real", "shared_archetype")}


@dataclass
class Scores:
    """Model-space images, per-pixel log-likelihoods per model, source masks, and the per-image table."""

    images: np.ndarray                 # (N, H, W) model space
    logp: dict[str, np.ndarray]        # model -> (N, H, W) nats
    source: np.ndarray                 # (N, H, W) bool
    table: pd.DataFrame

    def llr(self, name: str = "llr") -> np.ndarray:
        num, den = RATIOS[name]
        return llr_maps(self.logp[num], self.logp[den])


def score_set(cube: np.ndarray, table: pd.DataFrame, scaling: StampScaling, models: Mapping[str, str | Path], *,
              masks: Mapping[str, Any], device: str = "auto") -> Scores:
    """Score native stamps ``(N, 1, H, W)`` with every model (name -> model file; ``shared``: the class-conditional
    model, scored under each of its classes)."""
    x = scaling.to_model(cube)
    logp = {}
    for name, path in models.items():
        if name == "shared":
            logp.update({f"shared_{c}": score_pixels(path, x, device=device, label=k)
                         for k, c in enumerate(SHARED_CLASSES)})
        else:
            logp[name] = score_pixels(path, x, device=device)
    source = source_masks(zoom(cube, scaling.zoom)[:, 0], nsigma=masks["nsigma"], minarea=masks["minarea"],
                          grow=masks["grow"])
    background = ~source
    out = table.reset_index(drop=True).copy()
    for name, lp in logp.items():
        out[f"logp_{name}"] = lp.reshape(len(lp), -1).sum(1)
        out[f"bpd_{name}"] = bits_per_dim(lp)
    for name, (num, den) in RATIOS.items():
        if num in logp and den in logp:
            maps = llr_maps(logp[num], logp[den])
            out[name] = maps.reshape(len(maps), -1).sum(1)
            out[f"bg_share_{name}"] = background_share(maps, background)
    if "real" in logp:
        out["bg_share_logp"] = background_share(logp["real"], background)
    out["bg_pixel_fraction"] = background.reshape(len(background), -1).mean(1)
    return Scores(images=x[:, 0], logp=logp, source=source, table=out)


def write_scores(path: str | Path, scores: Scores, prov: Mapping[str, Any]) -> None:
    """Maps as one FITS file: PRIMARY model-space images, LOGP_{MODEL} cubes, SOURCE mask."""
    hdus = [fits.PrimaryHDU(scores.images.astype(np.float32), header=provenance_header(prov))]
    hdus += [fits.ImageHDU(v.astype(np.float32), name=f"LOGP_{k.upper()}") for k, v in scores.logp.items()]
    hdus.append(fits.ImageHDU(scores.source.astype(np.uint8), name="SOURCE"))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def read_score_maps(path: str | Path, table: pd.DataFrame | None = None) -> Scores:
    """Read :func:`write_scores`' file back (``table``: the matching per-image table, if wanted)."""
    try:
        with fits.open(path, memmap=False) as hdul:
            images = np.asarray(hdul[0].data, np.float32)
            logp = {h.name[5:].lower(): np.asarray(h.data, np.float32) for h in hdul[1:] if h.name.startswith("LOGP_")}
            source = np.asarray(hdul["SOURCE"].data).astype(bool)
    except (OSError, KeyError) as exc:
        raise StampError(f"{path}: not a readable score file ({type(exc).__name__}: {exc})") from None
    return Scores(images=images, logp=logp, source=source, table=table if table is not None else pd.DataFrame())


__all__ = ["RATIOS", "Scores", "read_score_maps", "score_set", "write_scores"]
