"""The study's three cutout sets (Pearce-Casey+23 sec. 2): 90x90 cutouts in every band around the catalogue
sources brighter than ``sample.mag_max``, split by position on the sky.

* training: the southern part of each field (``1 - validation_fraction`` of its sources), no anomalies;
* validation: the northern part, one cutout width away (:func:`~workflow_scripts.imaging.split.split_by_declination`
  with :func:`~workflow_scripts.imaging.split.cutout_gap_arcsec`), so no galaxy's pixels are in both; no anomalies;
* anomalies: every ERO and merger of the fields (never seen in training), wherever it lies.

Cutouts that leave a mosaic or hold no-data pixels are dropped and counted (:func:`extract_cutouts`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.errors import StudyError
from workflow_scripts.imaging.split import cutout_gap_arcsec, split_by_declination
from workflow_scripts.imaging.stamps import CutoutSet, concat_cutouts, extract_cutouts
from workflow_scripts.io import Mosaic
from workflow_scripts.studies.pearce_casey23.paper import ANOMALIES

log = logging.getLogger(__name__)

SETS = ("train", "validation", "anomalies")


def select_sample(cat: pd.DataFrame, mag_band: str, mag_max: float) -> pd.DataFrame:
    """Sources with a finite aperture magnitude brighter than ``mag_max`` in ``mag_band``."""
    mag = cat[f"mag_{mag_band}"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(mag) & (mag < mag_max)
    return cat.loc[keep].reset_index(drop=True)


def split_field(cat: pd.DataFrame, validation_fraction: float, size: int, pixel_scale: float,
                wcs: Any = None) -> dict[str, pd.DataFrame]:
    """The three sets of one field's sample (see the module docstring)."""
    anomalous = cat["label"].isin(ANOMALIES).to_numpy()
    anomalies = cat.loc[anomalous].reset_index(drop=True)
    rest = cat.loc[~anomalous].reset_index(drop=True)
    gap = cutout_gap_arcsec(size, pixel_scale, wcs)
    train, validation = split_by_declination(rest, 1.0 - validation_fraction, gap)
    return {"train": train, "validation": validation, "anomalies": anomalies}


def make_sets(mosaics: Mapping[str, Mapping[str, Mosaic]], catalogs: Mapping[str, pd.DataFrame],
              study: Mapping[str, Any], bands: Sequence[str],
              progress: bool = True) -> tuple[dict[str, CutoutSet], dict[str, Any]]:
    """Cutouts of every set over all fields (``mosaics[field][band]``, ``catalogs[field]``), bands in ``bands``."""
    size = int(study["cutout_size"])
    per_set: dict[str, list[CutoutSet]] = {s: [] for s in SETS}
    summary: dict[str, Any] = {"fields": {}}
    for field, cat in catalogs.items():
        fm = {b: mosaics[field][b] for b in bands}
        first = next(iter(fm.values()))
        sample = select_sample(cat, study["sample"]["mag_band"], study["sample"]["mag_max"])
        parts = split_field(sample, study["validation_fraction"], size, first.pixel_scale, first.wcs)
        fsum: dict[str, Any] = {"detections": int(len(cat)), "sample": int(len(sample))}
        for name, part in parts.items():
            if part.empty:
                fsum[name] = {"n_input": 0, "n_kept": 0}
                continue
            cs = extract_cutouts(fm, part, size, progress=progress)
            per_set[name].append(cs)
            fsum[name] = cs.summary
        summary["fields"][field] = fsum
    sets = {}
    for name in SETS:
        if not per_set[name]:
            if name == "anomalies":
                raise StudyError("no ERO or merger in the sample: the anomaly ranking needs some (on real data "
                                 "EROs come from Barro et al.'s colours; check the catalogue's barro_ero column)")
            raise StudyError(f"the {name} set is empty: enlarge the field or change pearce_casey23.sample")
        sets[name] = concat_cutouts(per_set[name])
    for name in ("train", "validation"):
        if sets[name].n < 2:
            raise StudyError(f"only {sets[name].n} usable {name} cutouts: enlarge the field or relax "
                             "pearce_casey23.sample.mag_max")
    summary["n"] = {name: sets[name].n for name in SETS}
    summary["anomaly_labels"] = {k: int(v) for k, v in sets["anomalies"].table["label"].value_counts().items()}
    log.info("cutouts: %s", ", ".join(f"{k} {v}" for k, v in summary["n"].items()))
    return sets, summary


__all__ = ["SETS", "make_sets", "select_sample", "split_field"]
