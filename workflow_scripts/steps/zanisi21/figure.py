"""Rules `zanisi21_fig{1,2,3,4,5}`: one figure each (dispatch on the rule)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd

from workflow_scripts.steps._common import run
from workflow_scripts.studies.zanisi21 import figures as figs
from workflow_scripts.studies.zanisi21.metrics import ANOMALY_DETECTORS, anomaly_sample
from workflow_scripts.studies.zanisi21.scoring import read_score_maps


def main(snakemake: Any, log: Any) -> None:
    which = snakemake.rule.removeprefix("zanisi21_")
    out = (snakemake.output.png, snakemake.output.pdf)
    if which == "fig5":  # the anomaly study's objects
        normal, groups, sample = anomaly_sample(*(pd.read_parquet(p) for p in snakemake.input.tables),
                                                snakemake.params.anomalies)
        figs.fig5_anomalies(normal, groups, ANOMALY_DETECTORS, sample, *out)
        log.info("%s written", snakemake.output.png)
        return
    sets = list(snakemake.params.sets)
    tables = {s: pd.read_parquet(p) for s, p in zip(sets, snakemake.input.tables)}
    maps = dict(zip(sets, snakemake.input.maps))
    if which in ("fig1", "fig2"):
        scores = read_score_maps(maps["real_test"], tables["real_test"])
        (figs.fig1_examples if which == "fig1" else figs.fig2_pixel_maps)(scores, *out)
    elif which == "fig3":
        metrics = json.loads(open(snakemake.input.metrics).read())
        figs.fig3_distributions(tables, metrics["aucs"], *out)
    elif which == "fig4":
        figs.fig4_matched_bins(pd.read_parquet(snakemake.input.comparison), *out)
    log.info("%s written", snakemake.output.png)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
