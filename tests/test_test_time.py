"""Test-time dihedral averaging (workflow_scripts.imaging.test_time): the inverse transforms, and the mean over them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from workflow_scripts.imaging.augment import dihedral
from workflow_scripts.imaging.test_time import dihedral_mean, undihedral


def _images(seed=0, shape=(2, 3, 12, 12)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_undihedral_inverts_each_of_the_eight_transforms():
    x = _images()
    seen = set()
    for k in range(8):
        y = dihedral(x, k)
        assert np.array_equal(undihedral(y, k), x)
        seen.add(y.tobytes())
    assert len(seen) == 8  # eight different images: the whole group


def test_dihedral_mean_of_a_symmetric_filter_is_the_filter():
    x = _images(1)

    def blur(a):  # a 3x3 box with mirrored edges commutes with every rotation and flip
        return ndimage.uniform_filter(a, size=(1, 1, 3, 3), mode="reflect")

    for copies in (1, 2, 4, 8):
        assert np.allclose(dihedral_mean(blur, x, copies), blur(x), atol=1e-6)


def test_dihedral_mean_of_a_one_pixel_shift_is_the_four_neighbour_mean():
    """A model that is not equivariant (it shifts everything 1 px to the right, wrapping round): over the 8
    transforms the shift points right, left, up and down twice each, so the mean is the mean of the 4 neighbours,
    and the result commutes with every transform of the input."""
    x = _images(2)

    def shift(a):
        return np.roll(a, 1, axis=-1)

    want = (np.roll(x, 1, -1) + np.roll(x, -1, -1) + np.roll(x, 1, -2) + np.roll(x, -1, -2)) / 4
    got = dihedral_mean(shift, x, 8)
    assert np.allclose(got, want, atol=1e-6)
    for j in range(8):
        assert np.allclose(dihedral_mean(shift, dihedral(x, j), 8), dihedral(got, j), atol=1e-6)
    # the 4 rotations alone: the same four directions once each
    assert np.allclose(dihedral_mean(shift, x, 4), want, atol=1e-6)
    assert np.array_equal(dihedral_mean(shift, x, 1), shift(x))


def test_dihedral_mean_refuses_other_copy_counts():
    with pytest.raises(ValueError, match="dihedral copies must be 1, 2, 4 or 8, got 3"):
        dihedral_mean(lambda a: a, _images(), 3)
