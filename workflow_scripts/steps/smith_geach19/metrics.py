"""Rule `smith_geach19_metrics`: KS p-values, median offsets, counts ratio, seamlessness, memory and speed; the same
statistics for the catalogue mock and for the real field's two halves (the null)."""

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
from workflow_scripts.studies.smith_geach19.validation import compare, split_halves


def main(snakemake: Any, log: Any) -> None:
    study, seed = snakemake.params.study, snakemake.params.seed
    bands, lim = study["bands"], study["validation"]["mag_limit"]
    area = json.loads(open(snakemake.input.areas).read())
    mock_area = json.loads(open(snakemake.input.mock_summary).read())["area_arcmin2"]
    width = json.loads(open(snakemake.input.meta).read())["shape"][2]
    real = pd.read_parquet(snakemake.input.real)
    comparison = compare(real, pd.read_parquet(snakemake.input.generated), bands, mag_limit=lim,
                         real_area_arcmin2=area["real"], generated_area_arcmin2=area["generated"], seed=seed)
    mock = compare(real, pd.read_parquet(snakemake.input.mock), bands, mag_limit=lim,
                   real_area_arcmin2=area["real"], generated_area_arcmin2=mock_area, seed=seed + 1)
    left, right = split_halves(real, width)
    null = compare(left, right, bands, mag_limit=lim, real_area_arcmin2=area["real"] / 2,
                   generated_area_arcmin2=area["real"] / 2, seed=seed + 2)
    metrics = compute_metrics(comparison, json.loads(open(snakemake.input.generation).read()), mock, null)
    validate_metrics(metrics, snakemake.output.metrics)
    for e in metrics["entries"]:
        log.info("%s: ours %s (paper %s, goal %s, holds %s)", e["id"], e["ours"], e["paper"], e["goal"], e["holds"])
    with atomic_path(snakemake.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
