"""Rule `smith_geach19_metrics`: KS p-values, median offsets, counts ratio, seamlessness, memory and speed."""

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
from workflow_scripts.studies.smith_geach19.metrics import compute_metrics
from workflow_scripts.studies.smith_geach19.validation import compare


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    area = json.loads(open(snakemake.input.areas).read())
    comparison = compare(pd.read_parquet(snakemake.input.real), pd.read_parquet(snakemake.input.generated),
                         study["bands"], mag_limit=study["validation"]["mag_limit"],
                         real_area_arcmin2=area["real"], generated_area_arcmin2=area["generated"])
    metrics = compute_metrics(comparison, json.loads(open(snakemake.input.generation).read()))
    validate_metrics(metrics, snakemake.output.metrics)
    for e in metrics["entries"]:
        log.info("%s: ours %s (paper %s, goal %s, holds %s)", e["id"], e["ours"], e["paper"], e["goal"], e["holds"])
    with atomic_path(snakemake.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
