"""Rule `smith_geach19_train`: the Spatial-GAN on crops of the training field, with its self-ensemble snapshots.

A thin adapter over :mod:`workflow_scripts.train.launch` (as the other studies' training rules): pre-emption writes
a checkpoint and exits with PREEMPTED_EXIT_CODE so the rule's retries resume; with more than one GPU (``resources:
gpu``) or ``params.processes`` > 1 the job is relaunched under torchrun (``python -m
workflow_scripts.steps.smith_geach19.train --spec spec.json``), every worker training the whole self-ensemble.
"""

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import torch
from astropy.io import fits

from workflow_scripts.errors import PipelineError
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.steps._training import run_training_rule, training_spec
from workflow_scripts.studies.smith_geach19.model import snapshot_epochs, snapshot_path, train_ensemble
from workflow_scripts.train import distributed, launch
from workflow_scripts.train.loop import TrainResult

WORKER_MODULE = "workflow_scripts.steps.smith_geach19.train"


def job_spec(snakemake: Any) -> dict[str, Any]:
    return training_spec(snakemake, "smith_geach19 Spatial-GAN", study=dict(snakemake.params.study),
                         field=snakemake.input.field, out_dir=os.path.dirname(snakemake.output.ensemble))


def train_model(spec: Mapping[str, Any], log: logging.Logger, is_main: bool = True) -> TrainResult:
    study = spec["study"]
    # a saturating sigmoid generator makes subnormal floats, which run ~5x slower on x86 CPUs: flush them
    torch.set_flush_denormal(True)
    field = np.asarray(fits.getdata(spec["field"]), np.float32)
    snaps, result = train_ensemble(study["model"], study["ensemble"], field, study["crop_size"], spec["seed"],
                                   spec["device"], spec["out_dir"], progress=is_main)
    if result.completed:
        log.info("trained %d epochs, %s; ensemble of %d", result.epochs_done, result.throughput(), len(snaps))
    return result


def main(snakemake: Any, log: logging.Logger) -> None:
    spec = job_spec(snakemake)
    nproc = run_training_rule(snakemake, train_model, spec, WORKER_MODULE, log)
    model, ensemble = spec["study"]["model"], spec["study"]["ensemble"]
    snaps = [snapshot_path(spec["out_dir"], e)
             for e in snapshot_epochs(model["epochs"], ensemble["every"], ensemble["members"])]
    missing = [s.name for s in snaps if not s.exists()]
    if missing:
        raise PipelineError(f"{spec['out_dir']}: the training finished without the snapshots {', '.join(missing)}")
    with atomic_path(snakemake.output.ensemble) as tmp:
        tmp.write_text(json.dumps({"snapshots": [s.name for s in snaps], "processes": nproc}, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
elif __name__ == "__main__":
    distributed.exit_worker(launch.worker_main(train_model, logger="genastro.smith_geach19_train"))
