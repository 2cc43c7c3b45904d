"""Test-time dihedral averaging: an image-to-image model's outputs over the 8 rotated and flipped copies of its
input, each turned back and averaged (the "self-ensemble" of Lim et al. 2017, EDSR).

Kept apart from :mod:`~workflow_scripts.imaging.augment` (training copies), so that the trainings importing that
module are not rerun when this one changes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workflow_scripts.imaging.augment import dihedral


def undihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The inverse of :func:`~workflow_scripts.imaging.augment.dihedral` ``k``: ``undihedral(dihedral(x, k), k)``
    is ``x``."""
    y = np.flip(x, axis=-1) if k >= 4 else x
    return np.rot90(y, -(k % 4), axes=(-2, -1))


def dihedral_mean(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, copies: int) -> np.ndarray:
    """Mean over the first ``copies`` dihedral transforms of ``fn(dihedral(x, k))``, each transformed back.

    ``fn`` maps a stack of images to a stack of images of the same height and width (e.g. a generator's input
    bands to its output bands). With ``copies`` 8 the result is equivariant under the whole group even where ``fn``
    is not; with 1 it is ``fn(x)``. Float64 sum, float32 result.
    """
    if copies not in (1, 2, 4, 8):
        raise ValueError(f"dihedral copies must be 1, 2, 4 or 8, got {copies}")
    total: np.ndarray | None = None
    for k in range(copies):
        y = undihedral(np.asarray(fn(np.ascontiguousarray(dihedral(x, k)))), k).astype(np.float64)
        total = y if total is None else total + y
    assert total is not None
    return (total / copies).astype(np.float32)


__all__ = ["dihedral_mean", "undihedral"]
