"""Rule `pearce_casey23_sed`: SED errors of the cGAN (as it is, and with its bias on the training cutouts taken out)
and of the photometry-only baseline for the validation set and the anomalies."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.studies.pearce_casey23.sed import score_sets


def main(snakemake: Any, log: Any) -> None:
    inp = snakemake.input
    sets = {"validation": (read_cutouts(inp.validation), read_cutouts(inp.pred_validation)),
            "anomalies": (read_cutouts(inp.anomalies), read_cutouts(inp.pred_anomalies))}
    table = score_sets(snakemake.params.study, read_cutouts(inp.train), sets, snakemake.params.seed,
                       train_pred=read_cutouts(inp.pred_train))
    log.info("SED errors of %d objects (%s)", len(table), table["label"].value_counts().to_dict())
    with atomic_path(snakemake.output.table) as tmp:
        table.to_parquet(tmp, index=False)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
