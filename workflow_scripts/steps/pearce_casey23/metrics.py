"""Rule `pearce_casey23_metrics`: headline metrics (SED errors, merger and ERO AUCs of the cGAN and the baseline)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd

from workflow_scripts.io import atomic_path
from workflow_scripts.metrics import validate_metrics
from workflow_scripts.steps._common import run
from workflow_scripts.studies.pearce_casey23.metrics import compute_metrics


def main(snakemake: Any, log: Any) -> None:
    table = pd.read_parquet(snakemake.input.table)
    metrics = compute_metrics(table, snakemake.params.study, snakemake.params.seed)
    metrics["cutouts"] = json.loads(open(snakemake.input.cutouts).read())["n"]
    validate_metrics(metrics, snakemake.output.metrics)
    for e in metrics["entries"]:
        log.info("%s: ours %s (goal %s, holds %s)", e["id"], e["ours"], e["goal"], e["holds"])
    with atomic_path(snakemake.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
