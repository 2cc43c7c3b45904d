"""Rule `zanisi21_metrics`: AUCs, bits/dim, background share, matched bins -> metrics.json, comparison.parquet."""

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
from workflow_scripts.studies.zanisi21.metrics import anomaly_metrics, compute_metrics, with_morphology


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    tables = {s: pd.read_parquet(p) for s, p in zip(snakemake.params.sets, snakemake.input.scores)}
    morph = dict(zip(("real_test", "other"), snakemake.input.morphology))
    for s, path in morph.items():
        tables[s] = with_morphology(tables[s], pd.read_parquet(path), snakemake.params.band)
    tables["archetype_test"]["mag"] = tables["archetype_test"][f"mag_{snakemake.params.band}"]
    stamps = json.loads(open(snakemake.input.stamps).read())
    archetypes = json.loads(open(snakemake.input.archetypes).read())
    metrics, comparison = compute_metrics(tables, study, stamps, archetypes, seed=snakemake.params.seed)
    anom = snakemake.params.anomalies
    if anom:  # ours: the anomaly study's mergers and EROs scored by the same likelihoods
        normal, anomalies = (pd.read_parquet(p) for p in snakemake.input.anomaly_scores)
        if "anomaly_morphology" in snakemake.input.keys():    # the Sersic fits' baseline beside the likelihoods
            normal, anomalies = (with_morphology(t, pd.read_parquet(p), anom["band"])
                                 for t, p in zip((normal, anomalies), snakemake.input.anomaly_morphology))
        found = anomaly_metrics(normal, anomalies, anom, seed=snakemake.params.seed)
        metrics["entries"] += found.pop("entries")
        metrics.setdefault("side_by_side", {})["anomalies"] = found.pop("side_by_side")
        metrics["anomalies"] = {**found,
                                "stamps": json.loads(open(snakemake.input.anomaly_stamps).read()).get("counts")}
    validate_metrics(metrics, snakemake.output.metrics)
    for e in metrics["entries"]:
        log.info("%s: ours %s (paper %s, goal %s, holds %s)", e["id"], e["ours"], e["paper"], e["goal"], e["holds"])
    with atomic_path(snakemake.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=float))
    with atomic_path(snakemake.output.comparison) as tmp:
        comparison.to_parquet(tmp, index=False)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
