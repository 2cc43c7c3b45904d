"""Rule `hemmati22_photometry`: model-fitting photometry of every blend for one run (wildcard ``run``):
low-res images at low-res peaks (lo_at_lo) or at GAN peaks (lo_at_gan), hi-res images at hi-res peaks (hi_at_hi);
one Parquet table, one row per (blend, detected object)."""

import os
from typing import Any

# before torch loads OpenMP: threads that wait sleep instead of spinning. Spinning threads on a busy machine (a
# `--cores 8` run on 2 cores) made the many small tensor operations of a fit ~30x slower (measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd
import torch

from workflow_scripts.data.psf import read_psf
from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.steps._common import run, step_provenance, step_survey
from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.studies.hemmati22.photometry import run_photometry, write_table
from workflow_scripts.surveys import Survey


def main(snakemake: Any, log: Any) -> None:
    params = snakemake.params
    torch.set_num_threads(max(int(snakemake.threads), 1))
    table, facts = run_photometry(
        snakemake.wildcards.run, read_blends(snakemake.input.blends_hi), read_cutouts(snakemake.input.blends_lo),
        pd.read_parquet(snakemake.input.peaks), read_psf(snakemake.input.psf), survey=step_survey(snakemake),
        target=Survey.from_config(params.target["name"], params.target), study=params.study,
        phot=params.photometry, device=params.device, seed=params.seed)
    write_table(snakemake.output[0], table, step_provenance(snakemake, "derived"), facts)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
