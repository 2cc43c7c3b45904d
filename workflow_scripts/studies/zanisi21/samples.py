"""The study's stamp sets from the data boundary: real training and held-out galaxies, the comparison set, and
blank sky for the archetypes.

Per field of the study's survey: the mosaic minus its background, the selected galaxies' stamps, split at the
field's dividing declination (:mod:`.stamps`). The comparison set is either the clump-free twin of the same
fields (its galaxies are the real ones without clumps: cut at the held-out real galaxies, by catalogue id) or
every selected galaxy of another survey (or of the simulated twin of a real survey: not paired). Blank-sky
stamps are drawn from the real mosaics for the archetypes of the training and of the held-out galaxies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.imaging.stamps import CutoutSet, concat_cutouts
from workflow_scripts.io import Mosaic
from workflow_scripts.studies.zanisi21.archetypes import blank_sky_stamps
from workflow_scripts.studies.zanisi21.stamps import (StampError, dividing_declination, galaxy_stamps,
                                                      select_galaxies, split_regions, stamp_gap_arcsec, subset,
                                                      subtract_background)

log = logging.getLogger(__name__)

#: the stamp sets this module makes
SETS = ("real_train", "real_test", "other")
#: independent random stream (with the config seed) of the blank-sky positions
SKY_STREAM = 11


@dataclass
class FieldData:
    """One field's mosaic of the study's band, its catalogue, and the file names for messages."""

    mosaic: Mosaic
    catalog: pd.DataFrame
    image_file: str
    catalog_file: str


def _field_stamps(fd: FieldData, study: Mapping[str, Any]) -> tuple[CutoutSet, Mosaic]:
    band = study["band"]
    sel = select_galaxies(fd.catalog, band, study["sample"]["mag_max"], study["sample"]["mag_min"],
                          source=fd.catalog_file)
    bg = study["background"]
    mosaic = subtract_background(fd.mosaic, bg["box"], bg["filter"])
    return galaxy_stamps(mosaic, band, sel, study["stamp_size"], source=fd.image_file), mosaic


def make_sets(real: Mapping[str, FieldData], other: Mapping[str, FieldData], study: Mapping[str, Any], *,
              twin: bool, seed: int) -> tuple[dict[str, CutoutSet], dict[str, np.ndarray], dict[str, Any]]:
    """Stamp sets (``SETS``), blank-sky cubes (``train``, ``test``: one stamp per galaxy of the set) and a summary."""
    size = int(study["stamp_size"])
    train, test, others, summary = [], [], [], {"fields": {}}
    splits, subtracted = {}, {}
    for name, fd in real.items():
        cs, subtracted[name] = _field_stamps(fd, study)
        gap = stamp_gap_arcsec(size, cs.pixel_scale, fd.mosaic.wcs)
        d0 = dividing_declination(cs.table["dec"].to_numpy(float), study["validation_fraction"])
        splits[name] = (d0, gap)
        is_train, is_test = split_regions(cs.table, d0, gap)
        for part, mask in (("train", is_train), ("test", is_test)):
            s = subset(cs, mask)
            s.table["field"] = name
            (train if part == "train" else test).append(s)
        summary["fields"][name] = {"selected": int(cs.summary.get("n_input", cs.n)), "stamps": cs.n,
                                   "train": int(is_train.sum()), "test": int(is_test.sum()),
                                   "in_gap": int(cs.n - is_train.sum() - is_test.sum()), "dec_split": d0,
                                   "gap_arcsec": gap, "dropped": {k: v for k, v in cs.summary.items()
                                                                  if k not in ("n_input", "n_kept")}}
    for name, fd in other.items():
        if twin:
            # the same objects: cut the twin at the held-out real galaxies (its catalogue's measured magnitudes
            # draw other errors, so a selection of its own would differ by a few galaxies at the limit)
            held = test[list(real).index(name)].table
            cat = fd.catalog.set_index("id")
            missing = np.setdiff1d(held["id"].to_numpy(), cat.index.to_numpy())
            if missing.size:
                raise StampError(f"{fd.catalog_file}: {missing.size} held-out galaxies (ids {missing[:5].tolist()}) "
                                 "are not in the twin's catalogue: is it the twin of this field?")
            bg = study["background"]
            cs = galaxy_stamps(subtract_background(fd.mosaic, bg["box"], bg["filter"]), study["band"],
                               cat.loc[held["id"].to_numpy()].reset_index(), size, source=fd.image_file)
        else:
            cs, _ = _field_stamps(fd, study)
        cs.table["field"] = name
        others.append(cs)
        summary.setdefault("other_fields", {})[name] = cs.n
    sets = {"real_train": concat_cutouts(train), "real_test": concat_cutouts(test), "other": concat_cutouts(others)}
    for k, cs in sets.items():
        if cs.n == 0:
            raise StampError(f"the {k} stamp set is empty ({summary}); widen zanisi21.sample or the fields")
    rng = np.random.default_rng([int(seed), SKY_STREAM])
    n_need = {"train": sets["real_train"].n, "test": sets["real_test"].n}
    skies: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    arch = study["archetypes"]
    names = list(real)
    for i, (name, fd) in enumerate(real.items()):
        # blank sky shared out over the fields in proportion to their galaxies
        share = {k: n_need[k] * (i + 1) // len(names) - n_need[k] * i // len(names) for k in n_need}
        total = share["train"] + share["test"]
        if total == 0:
            continue
        cube, info = blank_sky_stamps(subtracted[name].data, fd.mosaic.rms, size, total, rng,
                                      thresh_sigma=arch["sky_thresh_sigma"], grow_px=arch["sky_grow_px"],
                                      source=fd.image_file)
        skies["train"].append(cube[:share["train"]])
        skies["test"].append(cube[share["train"]:])
        summary.setdefault("sky", {})[name] = {k: v for k, v in info.items() if np.isscalar(v)}
    sky = {k: np.concatenate(v).astype(np.float32) for k, v in skies.items()}
    summary["counts"] = {k: cs.n for k, cs in sets.items()}
    log.info("stamps: %s", summary["counts"])
    return sets, sky, summary


__all__ = ["FieldData", "SETS", "make_sets"]
