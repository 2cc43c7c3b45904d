"""Rule `pearce_casey23_train`: pix2pix from the input to the output bands on the training cutouts.

A thin adapter over :mod:`workflow_scripts.train.launch` (as `hemmati22_train`): preemption writes a checkpoint and
exits with PREEMPTED_EXIT_CODE so the rule's retries resume; several GPUs or ``params.processes`` > 1 relaunch it
under torchrun (``python -m workflow_scripts.steps.pearce_casey23.train --spec spec.json``).
"""

import json
import logging
from collections.abc import Mapping
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.steps._training import run_training_rule, training_spec
from workflow_scripts.studies.pearce_casey23.cgan import (fit_scalings, reference_index, scalings_to_dict, split_bands,
                                                          train_pix2pix)
from workflow_scripts.train import distributed, launch
from workflow_scripts.train.loop import TrainResult

WORKER_MODULE = "workflow_scripts.steps.pearce_casey23.train"


def job_spec(snakemake: Any) -> dict[str, Any]:
    return training_spec(snakemake, "pearce_casey23 pix2pix", study=dict(snakemake.params.study),
                         out_dir=snakemake.params.out_dir, train=snakemake.input.train,
                         scaling=snakemake.output.scaling)


def train_model(spec: Mapping[str, Any], log: logging.Logger, is_main: bool = True) -> TrainResult:
    study = spec["study"]
    cs = read_cutouts(spec["train"])
    sw, lw = split_bands(cs, study["input_bands"], study["output_bands"])
    scalings = fit_scalings(sw, lw)
    if is_main:
        with atomic_path(spec["scaling"]) as tmp:
            tmp.write_text(json.dumps(scalings_to_dict(scalings, study["input_bands"], study["output_bands"],
                                                       study["model"]["resize"]), indent=2))
    result = train_pix2pix(study["model"], sw, lw, scalings, copies=study["augment"], seed=spec["seed"],
                           device=spec["device"], out_dir=spec["out_dir"], progress=is_main,
                           reference=reference_index(study["model"], study["input_bands"]))
    log.info("pix2pix: epochs %d, %s, resumed=%s", result.epochs_done, result.throughput(), result.resumed)
    return result


def main(snakemake: Any, log: logging.Logger) -> None:
    run_training_rule(snakemake, train_model, job_spec(snakemake), WORKER_MODULE, log)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
elif __name__ == "__main__":
    distributed.exit_worker(launch.worker_main(train_model, logger="genastro.pearce_casey23_train"))
