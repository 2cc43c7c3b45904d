"""Rule `pearce_casey23_cutouts`: the training, validation and anomaly cutout sets (one FITS cube each)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.imaging.stamps import write_cutouts
from workflow_scripts.io import atomic_path, read_catalog, read_mosaic
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.pearce_casey23.samples import SETS, make_sets


def main(snakemake: Any, log: Any) -> None:
    study, bands, fields = snakemake.params.study, snakemake.params.bands, snakemake.params.fields
    images, rms = list(snakemake.input.images), list(snakemake.input.rms)
    nb = len(bands)
    mosaics = {f: {b: read_mosaic(images[i * nb + j], rms[i * nb + j]) for j, b in enumerate(bands)}
               for i, f in enumerate(fields)}
    catalogs = {f: read_catalog(path) for f, path in zip(fields, snakemake.input.catalogs)}
    sets, summary = make_sets(mosaics, catalogs, study, bands)
    prov = step_provenance(snakemake, "derived")
    for name in SETS:
        write_cutouts(getattr(snakemake.output, name), sets[name], prov)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
