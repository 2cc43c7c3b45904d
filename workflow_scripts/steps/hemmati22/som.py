"""Rule `hemmati22_som`: the 32x24 self-organising map of the blend parameters (Hemmati+22 sec. 4), trained once
and kept (weights and scaler) for Fig 6, with each blend's cell."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd

from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.hemmati22.paper import BLEND_PARAMETERS
from workflow_scripts.studies.hemmati22.som import cell_table, save_som, train_som
from workflow_scripts.studies.hemmati22.tables import write_table


def main(snakemake: Any, log: Any) -> None:
    cfg, seed = snakemake.params.som, snakemake.params.seed
    detections = pd.read_parquet(snakemake.input.detections)
    features = detections[list(BLEND_PARAMETERS)]
    som, scaler = train_som(features, shape=tuple(cfg["shape"]), seed=seed, iterations=cfg["iterations"],
                            sigma=cfg["sigma"], learning_rate=cfg["learning_rate"])
    prov = step_provenance(snakemake, "derived")
    save_som(snakemake.output.som, som, scaler, {**cfg, "seed": seed, "provenance": prov})
    write_table(snakemake.output.cells, cell_table(som, scaler, features, detections["blend_id"]), prov)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
