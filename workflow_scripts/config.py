"""Loading, merging and validating the pipeline configuration.

The schema (``schemas/config.schema.yaml``) checks structure and types; :func:`validate_config` adds the
checks a schema cannot express (a band named by a study must exist in its survey, and so on). Every failure
is one line that names the offending key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``overlay`` (the way Snakemake merges --configfile)."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(*overlays: str | Path, base: str | Path = DEFAULT_CONFIG, validate: bool = True) -> dict[str, Any]:
    """Read ``config.yaml`` and merge preset files over it, in order; validate the result."""
    config: dict[str, Any] = {}
    for path in (base, *overlays):
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        config = deep_merge(config, data)
    if validate:
        validate_config(config)
    return config


def _load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = _key_path([*error.absolute_path, extra[0]]) if extra else key
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"config: unknown key '{where}' (allowed here: {allowed})"
    if error.validator == "required":
        return f"config: {key}: {error.message}"
    if error.validator == "enum":
        return f"config: {key} = {error.instance!r} is not one of {error.validator_value}"
    return f"config: {key} = {error.instance!r}: {error.message}"


def validate_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` with one line naming the first bad key; return None when valid."""
    validator = jsonschema.Draft202012Validator(_load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(_describe(errors[0]))
    _semantic_checks(config)


def _semantic_checks(config: Mapping[str, Any]) -> None:
    for name, survey in config["surveys"].items():
        bands = survey["bands"]
        for band, spec in bands.items():
            if "bandpass" not in spec and "wavelength" not in spec and survey["source"] == "embedded":
                raise ConfigError(
                    f"config: surveys.{name}.bands.{band} needs 'bandpass' or 'wavelength' to be simulated")
            if "wavelength" in spec and not spec["wavelength"][0] < spec["wavelength"][1]:
                raise ConfigError(f"config: surveys.{name}.bands.{band}.wavelength must be increasing")
        if survey["source"] == "download":
            for band, spec in bands.items():
                if "url" not in spec:
                    raise ConfigError(f"config: surveys.{name}.bands.{band}.url is required when source is download")
            if "download" not in survey:
                raise ConfigError(f"config: surveys.{name}.download is required when source is download")
            if survey["catalog"] and "catalog_url" not in survey["download"]:
                raise ConfigError(f"config: surveys.{name}.download.catalog_url is required (catalog: true)")
        if survey["source"] != "none" and not survey["fields"]:
            raise ConfigError(f"config: surveys.{name}.fields must name at least one field")
        if survey["source"] == "embedded":
            emb = survey.get("embedded")
            if emb is None:
                raise ConfigError(f"config: surveys.{name}.embedded is required when source is embedded")
            if emb["mag_band"] not in bands:
                raise ConfigError(f"config: surveys.{name}.embedded.mag_band = {emb['mag_band']!r} is not a band "
                                  f"of {name} ({', '.join(bands)})")
            lo, hi = emb["star_mag_range"]
            if not lo < hi:
                raise ConfigError(f"config: surveys.{name}.embedded.star_mag_range must be [bright, faint]")
    _check_hemmati22(config)
    if config["psf"]["stamp_size"] % 2 == 0:
        raise ConfigError("config: psf.stamp_size must be odd")


def _check_hemmati22(config: Mapping[str, Any]) -> None:
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


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a configuration (canonical JSON), recorded as provenance."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
