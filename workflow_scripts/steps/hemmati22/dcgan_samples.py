"""Rule `hemmati22_dcgan_samples`: images the trained DCGAN draws from seeded noise, in physical units (Fig 2)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.imaging.stamps import read_cutouts, write_cutouts
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.hemmati22.sampling import dcgan_sample_set


def main(snakemake: Any, log: Any) -> None:
    params = snakemake.params
    scaling = json.loads(open(snakemake.input.scaling).read())
    samples = dcgan_sample_set(snakemake.input.generator, read_cutouts(snakemake.input.train), scaling,
                               params.n_samples, params.seed, params.device)
    write_cutouts(snakemake.output[0], samples, step_provenance(snakemake, "derived"))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
