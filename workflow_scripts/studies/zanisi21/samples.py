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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.imaging.stamps import CutoutSet, concat_cutouts
from workflow_scripts.io import Mosaic, read_catalog, read_mosaic
from workflow_scripts.studies.zanisi21.archetypes import blank_sky_stamps
from workflow_scripts.studies.zanisi21.stamps import (StampError, dividing_declination, galaxy_stamps,
                                                      select_galaxies, split_regions, stamp_gap_arcsec, subset,
                                                      subtract_background)

log = logging.getLogger(__name__)

#: the stamp sets this module makes
SETS = ("real_train", "real_test", "other")
#: the stamp sets :func:`make_anomaly_sets` makes
ANOMALY_SETS = ("real_train", "real_test", "anomalies")
#: the catalogue label of ordinary galaxies (every other label is an anomaly)
NORMAL_LABEL = "normal"
#: independent random stream (with the config seed) of the blank-sky positions
SKY_STREAM = 11


@dataclass
class FieldData:
    """One field's mosaic of the study's band, its catalogue, and the file names for messages."""

    mosaic: Mosaic
    catalog: pd.DataFrame
    image_file: str
    catalog_file: str


def read_fields(names: Sequence[str], images: Sequence[str], rms: Sequence[str],
                catalogs: Sequence[str]) -> dict[str, FieldData]:
    """``{field: FieldData}`` from the boundary files of one band, field by field."""
    return {f: FieldData(mosaic=read_mosaic(i, r), catalog=read_catalog(c), image_file=str(i), catalog_file=str(c))
            for f, i, r, c in zip(names, images, rms, catalogs)}


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
    sky = _blank_sky(real, subtracted, {"train": sets["real_train"].n, "test": sets["real_test"].n}, study, seed,
                     summary)
    summary["counts"] = {k: cs.n for k, cs in sets.items()}
    log.info("stamps: %s", summary["counts"])
    return sets, sky, summary


def _blank_sky(real: Mapping[str, FieldData], subtracted: Mapping[str, Mosaic], n_need: Mapping[str, int],
               study: Mapping[str, Any], seed: int, summary: dict[str, Any]) -> dict[str, np.ndarray]:
    """Blank-sky cubes ``{"train", "test"}`` of ``n_need`` stamps each, shared out over the fields in proportion to
    their galaxies; what each field gave goes into ``summary["sky"]``."""
    rng = np.random.default_rng([int(seed), SKY_STREAM])
    skies: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    arch, size, names = study["archetypes"], int(study["stamp_size"]), list(real)
    for i, (name, fd) in enumerate(real.items()):
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
    return {k: np.concatenate(v).astype(np.float32) for k, v in skies.items()}


def make_anomaly_sets(fields: Mapping[str, FieldData], study: Mapping[str, Any], *, normal: str = NORMAL_LABEL,
                      seed: int) -> tuple[dict[str, CutoutSet], dict[str, np.ndarray], dict[str, Any]]:
    """Stamp sets (``ANOMALY_SETS``) of a survey whose catalogue labels its objects (``label``: the anomaly study's
    embedded CEERS field: normal, merger, ero): the ``normal`` galaxies split by position as in :func:`make_sets`
    (training south, held out north), every galaxy of another label, wherever it lies, in ``anomalies`` (no model
    trains on it); blank sky for the archetypes; a summary with the counts per label.

    ``study`` is the study's block with ``band`` and ``sample`` of this survey.
    """
    size = int(study["stamp_size"])
    train, test, anomalies, summary = [], [], [], {"fields": {}}
    subtracted = {}
    for name, fd in fields.items():
        if "label" not in fd.catalog.columns:
            raise StampError(f"{fd.catalog_file}: no 'label' column: the anomaly stamps need a catalogue that says "
                             "what each object is (the embedded CEERS field's does; a downloaded one does not)")
        cs, subtracted[name] = _field_stamps(fd, study)
        cs.table["field"] = name
        labels = cs.table["label"].astype(str).to_numpy()
        is_normal = labels == normal
        gap = stamp_gap_arcsec(size, cs.pixel_scale, fd.mosaic.wcs)
        d0 = dividing_declination(cs.table.loc[is_normal, "dec"].to_numpy(float), study["validation_fraction"])
        is_train, is_test = split_regions(cs.table, d0, gap)
        train.append(subset(cs, is_normal & is_train))
        test.append(subset(cs, is_normal & is_test))
        anomalies.append(subset(cs, ~is_normal))
        summary["fields"][name] = {"stamps": cs.n, "train": int((is_normal & is_train).sum()),
                                   "test": int((is_normal & is_test).sum()),
                                   "labels": pd.Series(labels).value_counts().to_dict(), "dec_split": d0,
                                   "gap_arcsec": gap}
    sets = {"real_train": concat_cutouts(train), "real_test": concat_cutouts(test),
            "anomalies": concat_cutouts(anomalies)}
    for k, cs in sets.items():
        if cs.n == 0:
            raise StampError(f"the {k} anomaly stamp set is empty ({summary}); widen zanisi21.anomalies.sample")
    sky = _blank_sky(fields, subtracted, {"train": sets["real_train"].n, "test": sets["real_test"].n}, study, seed,
                     summary)
    summary["counts"] = {k: cs.n for k, cs in sets.items()}
    summary["anomaly_labels"] = sets["anomalies"].table["label"].astype(str).value_counts().to_dict()
    log.info("anomaly stamps: %s; anomalies by label %s", summary["counts"], summary["anomaly_labels"])
    return sets, sky, summary


__all__ = ["ANOMALY_SETS", "FieldData", "NORMAL_LABEL", "SETS", "make_anomaly_sets", "make_sets", "read_fields"]
