"""Rule `hemmati22_fig7`: Fig 7, photometry of the dominant source at low-res vs GAN positions (GP regression)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd

from workflow_scripts.studies.hemmati22.figures_photometry import fig7_photometry
from workflow_scripts.steps._common import run


def main(snakemake: Any, log: Any) -> None:
    dom = pd.read_parquet(snakemake.input.dominant)
    gp = pd.read_parquet(snakemake.input.gp)
    summary = json.loads(open(snakemake.input.summary).read())
    dominants = {r: d.drop(columns="run") for r, d in dom.groupby("run", sort=False)}
    coded = pd.read_parquet(snakemake.input.as_coded)
    fig7_photometry(dominants, gp, snakemake.output.png, snakemake.output.pdf, summary=summary,
                    band=snakemake.params.band, as_coded=coded if len(coded) else None,
                    as_coded_summary=json.loads(open(snakemake.input.as_coded_summary).read()))
    log.info("wrote %s", snakemake.output.png)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
