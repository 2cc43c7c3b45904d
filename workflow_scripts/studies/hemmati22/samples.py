"""HSC-like low-resolution images of the study's stamps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from workflow_scripts.imaging.degrade import degrade
from workflow_scripts.surveys import Survey

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------- degrading
def degrade_cube(cube: np.ndarray, bands: Sequence[str], psfs: Mapping[str, np.ndarray], target: Survey,
                 target_band: str, hires_scale: float, zeropoints: Sequence[float], profile: str,
                 rng: np.random.Generator) -> np.ndarray:
    """HSC-like images of hi-res stamps: match each band's measured PSF to the target, rebin, add target noise."""
    return degrade(cube, [psfs[b] for b in bands], target, hires_scale, rng, zeropoints=list(zeropoints),
                   target_bands=[target_band] * len(bands), profile=profile)
