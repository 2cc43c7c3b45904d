"""Rule `hemmati22_metrics`: metrics.json (headline entries, ours beside the paper's) and the binned detection
fractions of both protocols (ours and "as coded")."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd

from workflow_scripts.io import atomic_path
from workflow_scripts.metrics import validate_metrics
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.hemmati22.metrics import binned_fractions, summarise


def main(snakemake: Any, log: Any) -> None:
    blends = pd.read_parquet(snakemake.input.blends)
    isolated = pd.read_parquet(snakemake.input.isolated)
    photometry = json.loads(open(snakemake.input.photometry).read())
    as_coded = json.loads(open(snakemake.input.as_coded).read())
    as_coded["photometry"] = json.loads(open(snakemake.input.as_coded_photometry).read())
    metrics = summarise(blends, isolated, snakemake.params.study["gan_models"], photometry, as_coded)
    metrics["provenance"] = step_provenance(snakemake, "derived")
    validate_metrics(metrics, snakemake.output.metrics)
    with atomic_path(snakemake.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    with atomic_path(snakemake.output.binned) as tmp:
        binned_fractions(blends).to_parquet(tmp)
    with atomic_path(snakemake.output.binned_as_coded) as tmp:
        binned_fractions(blends, detected=pd.read_parquet(snakemake.input.as_coded_blends)).to_parquet(tmp)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
