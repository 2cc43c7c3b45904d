"""Loading, merging and validating the pipeline configuration.

The schema (``schemas/config.schema.yaml``) checks structure and types; :func:`validate_config` adds the
checks a schema cannot express (a band named by a study must exist in its survey, and so on); each enabled
study adds its own blocks (``schemas/<study>.schema.yaml``) and checks (``studies/<study>/validate.py``). Every
failure is one line that names the offending key.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from workflow_scripts.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "schemas"
SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"
STUDIES_DIR = Path(__file__).resolve().parent / "studies"
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


def typed_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``--config`` values as YAML would read them: Snakemake keeps the leaves of a nested value as strings
    (``hemmati22={"n_blends": 100}`` gives ``"100"``), so each string leaf is parsed again and kept when it
    becomes a number, a boolean, null, a list or a mapping."""
    def parse(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: parse(v) for k, v in value.items()}
        if isinstance(value, list):
            return [parse(v) for v in value]
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return value if isinstance(parsed, str) else parse(parsed)
        return value

    return parse(dict(overrides))


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


def available_studies() -> list[str]:
    """The studies this checkout has: a package under ``workflow_scripts/studies/`` with a schema file."""
    return sorted(p.name.removesuffix(".schema.yaml") for p in SCHEMA_DIR.glob("*.schema.yaml")
                  if p.name != SCHEMA_PATH.name and (STUDIES_DIR / p.name.removesuffix(".schema.yaml")).is_dir())


def enabled_studies(config: Mapping[str, Any]) -> list[str]:
    """The studies ``all`` builds, in the order of the config's ``studies`` list."""
    return list(config.get("studies", []))


def _load_schema() -> dict[str, Any]:
    """The shared schema with every study's blocks merged in; a study's blocks are required when it is enabled."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    studies = available_studies()
    schema["properties"]["studies"]["items"] = {"enum": studies}
    for study in studies:
        part = yaml.safe_load((SCHEMA_DIR / f"{study}.schema.yaml").read_text())
        schema["$defs"].update(part.get("$defs", {}))
        schema["properties"].update(part["properties"])
        schema.setdefault("allOf", []).append({
            "if": {"properties": {"studies": {"contains": {"const": study}}}, "required": ["studies"]},
            "then": {"required": sorted(part["properties"])}})
    return schema


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
    if config["psf"]["stamp_size"] % 2 == 0:
        raise ConfigError("config: psf.stamp_size must be odd")
    for name, changes in config["psf"].get("per_survey", {}).items():
        if name not in config["surveys"]:
            raise ConfigError(f"config: psf.per_survey.{name} is not a survey ({', '.join(config['surveys'])})")
        if changes.get("stamp_size", 1) % 2 == 0:
            raise ConfigError(f"config: psf.per_survey.{name}.stamp_size must be odd")
    for study in enabled_studies(config):  # each study's own checks, in its package (validate.check)
        importlib.import_module(f"workflow_scripts.studies.{study}.validate").check(config)


def psf_settings(config: Mapping[str, Any], survey: str) -> dict[str, Any]:
    """The ``psf`` block as it applies to one survey: the top-level settings with its ``per_survey`` changes."""
    base = {k: v for k, v in config["psf"].items() if k != "per_survey"}
    return {**base, **config["psf"].get("per_survey", {}).get(survey, {})}


#: hex digits of each survey's hash in a lineage (FITS header values hold 68 characters)
LINEAGE_DIGITS = 8


def lineage_hash(config: Mapping[str, Any], surveys: Iterable[str]) -> str:
    """``"goodss=1a2b3c4d;hsc=5e6f7a8b"``: per survey the hash of its config block and the seed, in name order.

    What a file descends from, recorded as its CFGHASH: two inputs of one step that name the same survey must
    carry the same hash there (and the same SEED), or the step refuses them (:func:`workflow_scripts.io.check_lineage`).
    Per survey rather than the whole config, so that a change to one study's settings does not mark every other
    file as foreign.
    """
    parts = []
    for name in sorted(set(surveys)):
        text = json.dumps({"seed": config["seed"], "survey": config["surveys"][name]}, sort_keys=True,
                          separators=(",", ":"), default=str)
        parts.append(f"{name}={hashlib.sha256(text.encode()).hexdigest()[:LINEAGE_DIGITS]}")
    return ";".join(parts)


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a configuration (canonical JSON), recorded as provenance."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
