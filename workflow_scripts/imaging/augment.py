"""Dihedral augmentation of stamp cubes: the 8 rotations and flips, the same for aligned arrays (input, target)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 rotations/flips of the last two axes (k = 0 is the identity)."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return np.flip(y, axis=-1) if k >= 4 else y


def augment(arrays: Sequence[np.ndarray], copies: int) -> list[np.ndarray]:
    """``copies`` dihedral copies of every stamp, the same transform for each aligned array (lo and hi).

    Stamps centred on their galaxy stay aligned under rotations (e.g. hi-res 31.5 and lo-res 10 px centres).
    """
    return [np.concatenate([dihedral(a, k) for k in range(copies)]).astype(np.float32) for a in arrays]


__all__ = ["augment", "dihedral"]
