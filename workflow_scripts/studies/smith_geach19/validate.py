"""Config checks of the deep-field study beyond the schema (run when the study is enabled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow_scripts.errors import ConfigError


def check(config: Mapping[str, Any]) -> None:
    study = config["smith_geach19"]
    surveys = config["surveys"]
    name = study["survey"]
    if name not in surveys or surveys[name].get("source") == "none":
        raise ConfigError(f"config: smith_geach19.survey = {name!r} is not a survey with images ({', '.join(surveys)})")
    survey = surveys[name]
    if study["field"] not in survey["fields"]:
        raise ConfigError(f"config: smith_geach19.field = {study['field']!r} is not a field of {name} "
                          f"({', '.join(survey['fields'])})")
    for band in study["bands"]:
        if band not in survey["bands"]:
            raise ConfigError(f"config: smith_geach19.bands lists {band!r}, not a band of {name} "
                              f"({', '.join(survey['bands'])})")
    scale = 2 ** len(study["model"]["g_filters"])
    if study["crop_size"] % scale:
        raise ConfigError(f"config: smith_geach19.crop_size = {study['crop_size']} must be a multiple of the "
                          f"generator's upsampling ({scale})")
    if study["model"]["batch_size"] % 2:
        raise ConfigError("config: smith_geach19.model.batch_size must be even (the discriminator packs pairs)")
    ens = study["ensemble"]
    if ens["every"] * (ens["members"] - 1) >= study["model"]["epochs"]:
        raise ConfigError(f"config: smith_geach19.ensemble: {ens['members']} snapshots every {ens['every']} epochs "
                          f"do not fit in {study['model']['epochs']} epochs")
    if study["field_size"] % scale:
        raise ConfigError(f"config: smith_geach19.field_size must be a multiple of {scale}")
