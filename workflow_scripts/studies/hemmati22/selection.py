"""Galaxy selection of Hemmati et al. 2022 (sec. 2): the paper's cuts, isolation, and a training / blend split by
declination with a gap at least one cutout wide, so that no cutout of one region overlaps one of the other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.io import Mosaic

from workflow_scripts.errors import StudyError
from workflow_scripts.imaging.split import cutout_gap_arcsec, split_by_declination
from workflow_scripts.imaging.stamps import CutoutError, CutoutSet, _require, extract_cutouts

log = logging.getLogger(__name__)

#: faintest galaxy kept, AB mag in MAG_BAND (Hemmati+22: exclude F160W > 25)
MAG_MAX = 25.0
#: band of the magnitude cut (Hemmati+22)
MAG_BAND = "F160W"
#: highest redshift kept (Hemmati+22: exclude z > 5)
Z_MAX = 5.0


def select_galaxies(catalog: pd.DataFrame, *, mag_band: str = MAG_BAND, mag_max: float = MAG_MAX,
                    z_max: float = Z_MAX) -> pd.DataFrame:
    """Rows that are galaxies (``star`` false), ``mag_{mag_band} < mag_max``, ``z < z_max``, finite ra/dec/mag/z.

    Returns a copy with a fresh index; raises :class:`CutoutError` if the catalogue or the selection is empty.
    """
    mag_col = f"mag_{mag_band}"
    _require(catalog, ("id", "ra", "dec", "star", "z", mag_col), "select_galaxies")
    star = catalog["star"].fillna(True).astype(bool).to_numpy()
    ra, dec = catalog["ra"].to_numpy(float), catalog["dec"].to_numpy(float)
    mag, z = catalog[mag_col].to_numpy(float), catalog["z"].to_numpy(float)
    finite = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(mag) & np.isfinite(z)
    with np.errstate(invalid="ignore"):
        keep = ~star & finite & (mag < mag_max) & (z < z_max)
        counts = {"stars": int(star.sum()), "non-finite": int((~finite).sum()),
                  f"{mag_col} >= {mag_max:g}": int((finite & (mag >= mag_max)).sum()),
                  f"z >= {z_max:g}": int((finite & (z >= z_max)).sum())}
    log.info("select_galaxies: %d of %d kept (%s)", int(keep.sum()), len(catalog),
             ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if not keep.any():
        raise CutoutError(f"select_galaxies: no galaxy passes the cuts ({mag_col} < {mag_max:g}, z < {z_max:g}, "
                          f"not a star) among {len(catalog)} sources")
    return catalog.loc[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- cutouts
def prepare_cutouts(mosaics: Mapping[str, Mosaic], catalog: pd.DataFrame, study: Mapping[str, Any],
                    pixel_scale: float) -> tuple[CutoutSet, CutoutSet, dict[str, Any]]:
    """Paper cuts, a declination split with a gap of one cutout, and cutouts of both regions in every band."""
    sel = study["select"]
    galaxies = select_galaxies(catalog, mag_band=sel["mag_band"], mag_max=sel["mag_max"], z_max=sel["z_max"])
    n_selected = len(galaxies)
    galaxies = isolated_only(galaxies, catalog, radius_arcsec=sel["isolation_arcsec"],
                             mag_band=sel["mag_band"], neighbour_mag_max=sel["neighbour_mag_max"])
    any_wcs = next(iter(mosaics.values())).wcs
    gap = cutout_gap_arcsec(study["cutout_size"], pixel_scale, any_wcs)
    train_cat, blend_cat = split_by_declination(galaxies, study["train_fraction"], gap)
    train = extract_cutouts(mosaics, train_cat, study["cutout_size"])
    blend = extract_cutouts(mosaics, blend_cat, study["cutout_size"])
    for name, cs in (("training", train), ("blend", blend)):
        if cs.n < 2:
            raise StudyError(f"only {cs.n} usable {name} cutouts after the cuts ({sel['mag_band']} < "
                             f"{sel['mag_max']}, z < {sel['z_max']}); enlarge the field or relax hemmati22.select")
    summary = {"catalog": int(len(catalog)), "selected": int(n_selected), "isolated": int(len(galaxies)),
               "gap_arcsec": gap,
               "train_region": int(len(train_cat)), "blend_region": int(len(blend_cat)),
               "train_cutouts": train.n, "blend_cutouts": blend.n,
               "train_rejected": train.summary, "blend_rejected": blend.summary}
    return train, blend, summary


def isolated_only(galaxies: pd.DataFrame, catalog: pd.DataFrame, *, radius_arcsec: float, mag_band: str,
                  neighbour_mag_max: float) -> pd.DataFrame:
    """Galaxies with no other catalogue source brighter than ``neighbour_mag_max`` within ``radius_arcsec``.

    The study's blends are two-galaxy blends: a cutout that already holds a detectable neighbour near its
    galaxy would make a three-object "blend" and count the neighbour as a false positive.
    """
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    mags = catalog[f"mag_{mag_band}"].to_numpy(dtype=float)
    bright = catalog[np.isfinite(mags) & (mags < neighbour_mag_max)]
    if len(galaxies) == 0 or len(bright) == 0:
        return galaxies
    gal = SkyCoord(galaxies["ra"].to_numpy() * u.deg, galaxies["dec"].to_numpy() * u.deg)
    nb = SkyCoord(bright["ra"].to_numpy() * u.deg, bright["dec"].to_numpy() * u.deg)
    idx_gal, idx_nb, _, _ = nb.search_around_sky(gal, radius_arcsec * u.arcsec)
    same = galaxies["id"].to_numpy()[idx_gal] == bright["id"].to_numpy()[idx_nb]
    crowded = np.zeros(len(galaxies), bool)
    crowded[idx_gal[~same]] = True
    log.info("isolation: %d of %d selected galaxies have a neighbour (%s < %.1f) within %.2f arcsec; dropped",
             int(crowded.sum()), len(galaxies), mag_band, neighbour_mag_max, radius_arcsec)
    return galaxies[~crowded]
