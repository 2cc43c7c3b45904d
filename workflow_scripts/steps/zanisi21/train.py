"""Rule `zanisi21_train`: one PixelCNN (``wildcards.model``: real, archetype, perturbed or shared) through the shared
loop. ``input.stamps``: the stamp file(s) of its training set (the shared model: real, then archetypes).

A thin adapter over :mod:`workflow_scripts.train.launch` (as `hemmati22_train`): preemption writes a checkpoint and
exits with PREEMPTED_EXIT_CODE so the rule's retries resume; several GPUs or ``params.processes`` > 1 relaunch it
under torchrun (``python -m workflow_scripts.steps.zanisi21.train --spec spec.json``).
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
from workflow_scripts.steps._common import run
from workflow_scripts.steps._training import run_training_rule, training_spec
from workflow_scripts.studies.zanisi21.model import (SHARED_CLASSES, shared_training_data, train_pixelcnn,
                                                     training_data)
from workflow_scripts.studies.zanisi21.stamps import StampScaling
from workflow_scripts.train import distributed, launch
from workflow_scripts.train.loop import TrainResult

WORKER_MODULE = "workflow_scripts.steps.zanisi21.train"


def job_spec(snakemake: Any) -> dict[str, Any]:
    return training_spec(snakemake, f"zanisi21 {snakemake.wildcards.model}", kind=snakemake.wildcards.model,
                         study=dict(snakemake.params.study), out_dir=snakemake.params.out_dir,
                         stamps=list(snakemake.input.stamps), scaling=snakemake.input.scaling)


def train_model(spec: Mapping[str, Any], log: logging.Logger, is_main: bool = True) -> TrainResult:
    study = spec["study"]
    scaling = StampScaling.from_dict(json.loads(open(spec["scaling"]).read()))
    cubes = [read_cutouts(path).cube for path in spec["stamps"]]
    labels = None
    if spec["kind"] == "shared":
        data, labels = shared_training_data(dict(zip(SHARED_CLASSES, cubes)), scaling, copies=study["augment"])
    else:
        data = training_data(spec["kind"], cubes[0], scaling, copies=study["augment"], mu=study["perturbation_mu"],
                             seed=spec["seed"])
    result = train_pixelcnn(study["model"], data, bits=scaling.bits, seed=spec["seed"], device=spec["device"],
                            out_dir=spec["out_dir"], progress=is_main, labels=labels)
    log.info("PixelCNN %s: epochs %d, %s, resumed=%s", spec["kind"], result.epochs_done, result.throughput(),
             result.resumed)
    return result


def main(snakemake: Any, log: logging.Logger) -> None:
    run_training_rule(snakemake, train_model, job_spec(snakemake), WORKER_MODULE, log)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
elif __name__ == "__main__":
    distributed.exit_worker(launch.worker_main(train_model, logger="genastro.zanisi21_train"))
