"""The comparison set with known truth: the embedded survey simulated again, same seed, without clumps.

The simulator draws clumps from their own random stream (:mod:`workflow_scripts.data.simulate.field`), so a run
with ``embedded.clumps`` switched off draws the same galaxies at the same positions with the same noise: only the
clump light, put back into the smooth disks, differs. That twin stands for a simulation that lacks the fine
structure of the real sky (the paper: TNG against SDSS) while the global properties are identical galaxy by galaxy.
Only the bands needed are simulated (the study's band and the survey's magnitude band, which sets the fluxes).

For a survey read from the archive the twin is the embedded simulation of it, without clumps: then it stands for a
simulation compared with real data exactly as TNG with SDSS, galaxy populations matched only statistically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow_scripts.errors import ConfigError
from workflow_scripts.surveys import Survey


def twin_survey(name: str, spec: Mapping[str, Any], bands: list[str]) -> Survey:
    """The survey ``name`` (config block ``spec``) restricted to ``bands`` plus its magnitude band, clumps off."""
    emb = dict(spec.get("embedded") or {})
    if not emb:
        raise ConfigError(f"surveys.{name}: the clump-free twin needs the survey's embedded block")
    keep = [b for b in spec["bands"] if b in set(bands) | {emb["mag_band"]}]
    missing = sorted(set(bands) - set(spec["bands"]))
    if missing:
        raise ConfigError(f"surveys.{name} has no band {', '.join(missing)}")
    emb["clumps"] = None
    bands_spec = {b: spec["bands"][b] for b in keep}
    return Survey.from_config(name, {**spec, "source": "embedded", "bands": bands_spec, "embedded": emb})


__all__ = ["twin_survey"]
