"""Rule `hemmati22_train`: train one GAN of the study (DCGAN or SR-GAN, 1 or 7 bands) on the training region.

A thin adapter over :mod:`workflow_scripts.train.launch`: preemption (SIGTERM/SIGUSR1 from SLURM) writes a
checkpoint and exits with PREEMPTED_EXIT_CODE (the rule's retries rerun the job, which resumes). With more than one
GPU (``resources: gpu``) or ``params.processes`` > 1 (CPU processes too: that is how the tests run it) the job is
relaunched under torchrun, one worker per process running this file as a module (``python -m
workflow_scripts.steps.hemmati22.train --spec spec.json``); each worker calls :func:`train_model`.
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
from workflow_scripts.studies.hemmati22.detect import study_bands
from workflow_scripts.studies.hemmati22.gans import augment, fit_scaling, train_gan
from workflow_scripts.surveys import Survey
from workflow_scripts.train import distributed, launch
from workflow_scripts.train.loop import TrainResult

WORKER_MODULE = "workflow_scripts.steps.hemmati22.train"


def job_spec(snakemake: Any) -> dict[str, Any]:
    """Everything the training needs from the Snakemake job, as plain JSON-able data."""
    return training_spec(snakemake, snakemake.wildcards.model, model=dict(snakemake.params.model),
                         study=dict(snakemake.params.study), survey=dict(snakemake.params.survey),
                         out_dir=snakemake.params.out_dir, train_hi=snakemake.input.train_hi,
                         train_lo=snakemake.input.train_lo, scaling=snakemake.output.scaling)


def train_model(spec: Mapping[str, Any], log: logging.Logger, is_main: bool = True) -> TrainResult:
    """Read the training cutouts, fit the scalings (rank 0 writes them), train."""
    study, model, name = spec["study"], spec["model"], spec["name"]
    survey = Survey.from_config(spec["survey"]["name"], spec["survey"])
    bands = study_bands(survey, study, model["bands"])
    hi_set, lo_set = read_cutouts(spec["train_hi"]), read_cutouts(spec["train_lo"])
    idx = [hi_set.band_index(b) for b in bands]
    hi, lo = augment([hi_set.cube[:, idx], lo_set.cube[:, idx]], study["augment"])
    scalings = {"hi": fit_scaling(hi), "lo": fit_scaling(lo)}
    log.info("training %s (%s, bands %s) on %d images (%d cutouts x %d), device %s", name, model["kind"],
             ",".join(bands), len(hi), hi_set.n, study["augment"], spec["device"])
    if is_main:
        with atomic_path(spec["scaling"]) as tmp:
            tmp.write_text(json.dumps({"bands": bands, **{k: v.to_dict() for k, v in scalings.items()}}, indent=2))
    result = train_gan(model, hi, lo if model["kind"] == "srgan" else None, scalings, spec["seed"],
                       spec["device"], spec["out_dir"], progress=is_main)
    log.info("%s: epochs %d, %s, resumed=%s", name, result.epochs_done, result.throughput(), result.resumed)
    return result


def main(snakemake: Any, log: logging.Logger) -> None:
    run_training_rule(snakemake, train_model, job_spec(snakemake), WORKER_MODULE, log)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
elif __name__ == "__main__":
    distributed.exit_worker(launch.worker_main(train_model, logger="genastro.hemmati22_train"))
