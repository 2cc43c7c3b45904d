"""Config checks of the likelihood-ratio study beyond the schema (run when the study is enabled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow_scripts.errors import ConfigError


def _survey(config: Mapping[str, Any], name: str, what: str) -> Mapping[str, Any]:
    surveys = config["surveys"]
    if name not in surveys or surveys[name].get("source") == "none":
        raise ConfigError(f"config: {what} = {name!r} is not a survey with images ({', '.join(surveys)})")
    return surveys[name]


def check(config: Mapping[str, Any]) -> None:
    study = config["zanisi21"]
    survey = _survey(config, study["survey"], "zanisi21.survey")
    for f in study["fields"]:
        if f not in survey["fields"]:
            raise ConfigError(f"config: zanisi21.fields lists {f!r}, not a field of {study['survey']} "
                              f"({', '.join(survey['fields'])})")
    if study["band"] not in survey["bands"]:
        raise ConfigError(f"config: zanisi21.band = {study['band']!r} is not a band of {study['survey']} "
                          f"({', '.join(survey['bands'])})")
    if not survey.get("catalog"):
        raise ConfigError(f"config: zanisi21 selects galaxies from a catalogue; surveys.{study['survey']} has none "
                          "(catalog: false)")
    k = 1.0 / study["zoom"]
    if abs(k - round(k)) > 1e-9 or study["stamp_size"] % round(k):
        raise ConfigError(f"config: zanisi21.zoom = {study['zoom']} must be 1/k with k dividing stamp_size "
                          f"({study['stamp_size']})")
    lo, hi = study["sample"]["mag_min"], study["sample"]["mag_max"]
    if lo >= hi:
        raise ConfigError(f"config: zanisi21.sample: mag_min {lo} must be below mag_max {hi}")
    n_lo, n_hi = study["archetypes"]["n_range"]
    if n_lo >= n_hi:
        raise ConfigError(f"config: zanisi21.archetypes.n_range must be increasing, got {[n_lo, n_hi]}")
    comp = study["comparison"]
    if comp["kind"] == "twin" and not survey.get("embedded"):
        raise ConfigError(f"config: zanisi21.comparison.kind twin simulates {study['survey']} without clumps, but "
                          f"surveys.{study['survey']} has no embedded block; add one or use kind: survey")
    if comp["kind"] == "survey":
        if "survey" not in comp:
            raise ConfigError("config: zanisi21.comparison.kind survey needs comparison.survey")
        other = _survey(config, comp["survey"], "zanisi21.comparison.survey")
        if study["band"] not in other["bands"] or not other.get("catalog"):
            raise ConfigError(f"config: zanisi21.comparison.survey {comp['survey']!r} needs band {study['band']} "
                              "and a catalogue")
    anom = study.get("anomalies")
    if anom:
        what = "zanisi21.anomalies.survey"
        a_survey = _survey(config, anom["survey"], what)
        if a_survey.get("source") != "embedded" and not a_survey.get("catalog"):
            raise ConfigError(f"config: {what} {anom['survey']!r} is downloaded without a catalogue, so nothing says "
                              "which objects are mergers or EROs; use the embedded survey or set "
                              "zanisi21.anomalies: null")
        if anom["band"] not in a_survey["bands"]:
            raise ConfigError(f"config: zanisi21.anomalies.band = {anom['band']!r} is not a band of {anom['survey']} "
                              f"({', '.join(a_survey['bands'])})")
        for f in anom.get("fields") or []:
            if f not in a_survey["fields"]:
                raise ConfigError(f"config: zanisi21.anomalies.fields lists {f!r}, not a field of {anom['survey']} "
                                  f"({', '.join(a_survey['fields'])})")
        if anom["sample"]["mag_min"] >= anom["sample"]["mag_max"]:
            raise ConfigError(f"config: zanisi21.anomalies.sample: mag_min {anom['sample']['mag_min']} must be below "
                              f"mag_max {anom['sample']['mag_max']}")
    for name, edges in study["comparison_bins"].items():
        if any(b <= a for a, b in zip(edges[:-1], edges[1:])):
            raise ConfigError(f"config: zanisi21.comparison_bins.{name} must be increasing, got {edges}")
