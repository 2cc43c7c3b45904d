"""The DCGAN's images from noise as a sample file (Fig 2), apart from :mod:`.samples` (which runs without torch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.imaging.scaling import AsinhScaling
from workflow_scripts.imaging.stamps import CutoutSet
from workflow_scripts.studies.hemmati22.gans import dcgan_samples

log = logging.getLogger(__name__)


def dcgan_sample_set(generator_path: str | Path, train: CutoutSet, scaling: Mapping[str, Any], n_samples: int,
                     seed: int, device: str) -> CutoutSet:
    """DCGAN images from noise in physical units (Fig 2), as many as asked and at most as many as the training
    cutouts they are shown beside; the bands, zeropoints, pixel scale and unit of the training cutouts.

    ``scaling``: the model's scaling.json (bands, and the hi-res asinh scaling its outputs are inverted with);
    the latent vectors come from ``seed``, so the same seed draws the same images."""
    bands = list(scaling["bands"])
    n = min(train.n, int(n_samples))
    cube = dcgan_samples(generator_path, n, seed, AsinhScaling.from_dict(scaling["hi"]), device)
    log.info("%d DCGAN samples of shape %s (bands %s)", n, cube.shape[1:], ",".join(bands))
    return CutoutSet(cube=cube, bands=bands, table=pd.DataFrame({"sample": np.arange(n)}),
                     pixel_scale=train.pixel_scale, zeropoints=[train.zeropoints[train.band_index(b)] for b in bands],
                     bunit=train.bunit)
