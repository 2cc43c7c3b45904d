"""Config checks of the anomaly study beyond the schema (run by :func:`workflow_scripts.config.validate_config` when
the study is enabled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow_scripts.config import psf_settings
from workflow_scripts.errors import ConfigError


def check(config: Mapping[str, Any]) -> None:
    study = config["pearce_casey23"]
    surveys = config["surveys"]
    name = study["survey"]
    if name not in surveys:
        raise ConfigError(f"config: pearce_casey23.survey = {name!r} is not a configured survey ({', '.join(surveys)})")
    survey = surveys[name]
    if survey.get("source") == "none":
        raise ConfigError(f"config: pearce_casey23.survey = {name!r} has source: none (no images to read)")
    bands = list(survey["bands"])
    for field in study["fields"]:
        if field not in survey["fields"]:
            raise ConfigError(f"config: pearce_casey23.fields lists {field!r}, not a field of {name} "
                              f"({', '.join(survey['fields'])})")
    named = [("pearce_casey23.input_bands", b) for b in study["input_bands"]]
    named += [("pearce_casey23.output_bands", b) for b in study["output_bands"]]
    named += [("pearce_casey23.psf_target", study["psf_target"]),
              ("pearce_casey23.detection.band", study["detection"]["band"]),
              ("pearce_casey23.sample.mag_band", study["sample"]["mag_band"])]
    for where, band in named:
        if band not in bands:
            raise ConfigError(f"config: {where} = {band!r} is not a band of {name} ({', '.join(bands)})")
    both = set(study["input_bands"]) & set(study["output_bands"])
    if both:
        raise ConfigError(f"config: pearce_casey23: {', '.join(sorted(both))} is both an input and an output band")
    model = study["model"]
    ref = model.get("reference_band")
    if ref is not None and ref not in study["input_bands"]:
        raise ConfigError(f"config: pearce_casey23.model.reference_band = {ref!r} is not one of the input_bands "
                          f"({', '.join(study['input_bands'])})")
    if model["n_dropout"] > model["depth"] - 1:
        raise ConfigError(f"config: pearce_casey23.model.n_dropout = {model['n_dropout']} exceeds the U-Net's "
                          f"{model['depth'] - 1} inner decoder blocks (depth {model['depth']})")
    if 0 < model["resize"] < study["cutout_size"]:
        raise ConfigError(f"config: pearce_casey23.model.resize = {model['resize']} is smaller than the cutouts "
                          f"({study['cutout_size']} px): resizing would lose resolution; use 0 or >= cutout_size")
    if 2 * study["aperture_radius_px"] >= study["cutout_size"]:
        raise ConfigError(f"config: pearce_casey23.aperture_radius_px = {study['aperture_radius_px']} does not fit in "
                          f"a {study['cutout_size']} px cutout")
    wings = study.get("psf_wings")
    if wings is not None:
        stamp = psf_settings(config, name)["stamp_size"]
        if wings % 2 == 0 or wings < stamp:
            raise ConfigError(f"config: pearce_casey23.psf_wings = {wings} must be odd and at least the EPSF stamp "
                              f"of {name} ({stamp} px, psf.stamp_size)")
    core = study.get("core_radius_px")
    if core is not None and not core < study["aperture_radius_px"]:
        raise ConfigError(f"config: pearce_casey23.core_radius_px = {core} must be smaller than aperture_radius_px = "
                          f"{study['aperture_radius_px']}")
