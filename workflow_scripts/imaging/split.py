"""Splits of a catalogue into regions of the sky whose cutouts cannot overlap (no galaxy's pixels in two sets).

* :func:`cutout_gap_arcsec`: the declination gap two ``size``-pixel cutouts need not to overlap;
* :func:`split_by_declination`: a southern and a northern region at a declination quantile, that gap apart.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.imaging.stamps import CutoutError, _require

log = logging.getLogger(__name__)


def cutout_gap_arcsec(size: int, pixel_scale: float, wcs: Any = None) -> float:
    """Smallest declination gap (arcsec) between galaxy centres for their ``size``-pixel cutouts not to overlap.

    A square cutout spans ``size * pixel_scale * (|cos phi| + |sin phi|)`` in declination, ``phi`` being the
    rotation of the pixel grid from north (0 for a north-up mosaic, read from ``wcs`` when given): each of two
    cutouts reaches half of that from its centre.
    """
    phi = 0.0
    if wcs is not None:
        m = np.asarray(wcs.celestial.pixel_scale_matrix, dtype=np.float64)
        phi = math.atan2(m[1, 0], m[1, 1])  # direction of the pixel y axis on the sky
    return size * pixel_scale * (abs(math.cos(phi)) + abs(math.sin(phi)))


def split_by_declination(catalog: pd.DataFrame, train_fraction: float,
                         gap_arcsec: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into a southern region (training) and a northern one (blends, validation ...), ``gap_arcsec`` apart in declination.

    The dividing declination is the ``train_fraction`` quantile of ``dec``; galaxies within ``gap_arcsec / 2``
    of it are dropped, so every training galaxy is at least ``gap_arcsec`` south of every blend galaxy. Use
    ``gap_arcsec >= cutout_gap_arcsec(size, pixel_scale)`` so cutouts of the two regions cannot overlap.
    """
    _require(catalog, ("id", "dec"), "split_by_declination")
    if not 0.0 < train_fraction < 1.0:
        raise CutoutError(f"split_by_declination: train_fraction must be in (0, 1), got {train_fraction}")
    if not gap_arcsec >= 0.0:
        raise CutoutError(f"split_by_declination: gap_arcsec must be >= 0, got {gap_arcsec}")
    dec = catalog["dec"].to_numpy(float)
    if not np.isfinite(dec).all():
        raise CutoutError("split_by_declination: some declinations are not finite (select the galaxies first)")
    if catalog["id"].duplicated().any():
        raise CutoutError("split_by_declination: the catalogue has duplicate ids")
    d0 = float(np.quantile(dec, train_fraction))
    half = 0.5 * gap_arcsec / 3600.0
    train = catalog.loc[dec < d0 - half].reset_index(drop=True)
    blend = catalog.loc[dec > d0 + half].reset_index(drop=True)
    n_gap = len(catalog) - len(train) - len(blend)
    log.info("split_by_declination: dec_split %.6f deg, gap %.2f\": %d south, %d north, %d dropped in the gap",
             d0, gap_arcsec, len(train), len(blend), n_gap)
    if len(train) == 0 or len(blend) == 0:
        raise CutoutError(f"split_by_declination: a region is empty ({len(train)} south, {len(blend)} north, "
                          f"{n_gap} in the {gap_arcsec}\" gap); change the fraction or the gap")
    return train, blend


__all__ = ["cutout_gap_arcsec", "split_by_declination"]
