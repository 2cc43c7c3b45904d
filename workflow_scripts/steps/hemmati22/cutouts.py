"""Rule `hemmati22_cutouts`: paper cuts, declination split, 64x64 cutouts of both regions in every band."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.imaging.stamps import write_cutouts
from workflow_scripts.studies.hemmati22.selection import prepare_cutouts
from workflow_scripts.io import atomic_path, read_catalog, read_mosaic
from workflow_scripts.steps._common import run, step_provenance, step_survey


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    survey = step_survey(snakemake)
    mosaics = {band: read_mosaic(path) for band, path in zip(survey.bands, snakemake.input.images)}
    catalog = read_catalog(snakemake.input.catalog)
    train, blend, summary = prepare_cutouts(mosaics, catalog, study, survey.pixel_scale)
    log.info("cutouts: %s", summary)
    prov = step_provenance(snakemake, "derived")
    write_cutouts(snakemake.output.train, train, prov)
    write_cutouts(snakemake.output.blend, blend, prov)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
