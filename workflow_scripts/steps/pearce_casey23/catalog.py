"""Rule `pearce_casey23_catalog`: sep catalogue of one pointing on the matched mosaics, labelled from the truth when
the survey is embedded."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.io import atomic_path, read_catalog, read_mosaic, write_catalog
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.pearce_casey23.catalog import build_catalog


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    bands = snakemake.params.bands
    mosaics = {b: read_mosaic(img, rms) for b, img, rms in zip(bands, snakemake.input.images, snakemake.input.rms)}
    truth = read_catalog(snakemake.input.truth) if "truth" in snakemake.input.keys() else None
    field = snakemake.wildcards.field
    det_path = snakemake.input.images[bands.index(study["detection"]["band"])]
    cat, summary = build_catalog(mosaics, study, field=field, field_index=snakemake.params.field_index,
                                 truth=truth, what=str(det_path))
    log.info("catalogue of %s: %s", field, summary)
    write_catalog(snakemake.output.catalog, cat, step_provenance(snakemake, "derived"))
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
