"""Rule `hemmati22_photometry_summary`: the dominant source of every blend in each photometry run, a
Gaussian-process regression of delta-mag on input magnitude per run, and photometry.json (bias, scatter, the
improvement factor of GAN over low-res positions beside the paper's > 10x)."""

import json
from pathlib import Path
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.studies.hemmati22.photometry import read_table, summarise_runs, write_table


def main(snakemake: Any, log: Any) -> None:
    params = snakemake.params
    runs = {Path(path).stem: read_table(path) for path in snakemake.input.runs}
    summary, dominant, gp = summarise_runs(runs, read_blends(snakemake.input.blends_hi).truth, params.band,
                                           gp=params.photometry["gp"], seed=params.seed)
    prov = step_provenance(snakemake, "derived")
    summary["provenance"] = prov
    write_table(snakemake.output.dominant, dominant, prov)
    write_table(snakemake.output.gp, gp, prov)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
