"""Config checks of the deblending study beyond the schema (registered with :func:`workflow_scripts.config.validate_config`,
which runs them when the study is enabled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow_scripts.errors import ConfigError


def check(config: Mapping[str, Any]) -> None:
    study = config["hemmati22"]
    surveys = config["surveys"]
    for key in ("survey", "target"):
        name = study[key] if key == "survey" else study["target"]["survey"]
        where = "hemmati22.survey" if key == "survey" else "hemmati22.target.survey"
        if name not in surveys:
            raise ConfigError(f"config: {where} = {name!r} is not a configured survey ({', '.join(surveys)})")
    survey = surveys[study["survey"]]
    bands = survey["bands"]
    for where, band in (("hemmati22.band", study["band"]), ("hemmati22.select.mag_band", study["select"]["mag_band"])):
        if band not in bands:
            raise ConfigError(f"config: {where} = {band!r} is not a band of {study['survey']} ({', '.join(bands)})")
    if study["target"]["band"] not in surveys[study["target"]["survey"]]["bands"]:
        raise ConfigError(f"config: hemmati22.target.band = {study['target']['band']!r} is not a band of "
                          f"{study['target']['survey']}")
    if study["field"] not in survey["fields"]:
        raise ConfigError(f"config: hemmati22.field = {study['field']!r} is not a field of {study['survey']} "
                          f"({', '.join(survey['fields'])})")
    search = (2.0 ** 0.5 * study["max_offset_px"] * survey["pixel_scale"]
              + study["detection"]["match_radius_arcsec"])
    if study["select"]["isolation_arcsec"] < search:
        raise ConfigError(f"config: hemmati22.select.isolation_arcsec = {study['select']['isolation_arcsec']} is "
                          f"smaller than the companion search radius ({search:.2f}\" = sqrt 2 x max_offset_px x "
                          "pixel_scale + match_radius_arcsec): real neighbours would count as false positives")
    models = study["models"]
    for role, name in study["gan_models"].items():
        if name not in models or models[name]["kind"] != "srgan":
            raise ConfigError(f"config: hemmati22.gan_models.{role} = {name!r} must name an srgan entry of "
                              "hemmati22.models")
    if not any(m["kind"] == "dcgan" for m in models.values()):
        raise ConfigError("config: hemmati22.models needs one dcgan entry (Fig 2)")
    for name, model in models.items():
        for key in ("upsample", "skip", "zero_residual", "ambient_noise"):
            if model["kind"] == "dcgan" and key in model:
                raise ConfigError(f"config: hemmati22.models.{name}.{key} applies to an srgan only")
        if model.get("zero_residual") and not model.get("skip"):
            raise ConfigError(f"config: hemmati22.models.{name}.zero_residual needs skip: true")
        if model["kind"] == "dcgan" and model["l1_weight"] > 0:
            raise ConfigError(f"config: hemmati22.models.{name}.l1_weight must be 0 for a dcgan (no target image)")
