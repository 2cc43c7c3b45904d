"""Rule `hemmati22_train`: train one GAN of the study (DCGAN or SR-GAN, 1 or 7 bands) on the training region.

Preemption (SIGTERM/SIGUSR1 from SLURM) writes a checkpoint and exits with PREEMPTED_EXIT_CODE; the rule's
retries rerun the job, which resumes from the checkpoint.
"""

import json
import os
import sys
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import torch

from workflow_scripts.cutouts import read_cutouts
from workflow_scripts.deblend import augment, fit_scaling, study_bands, train_gan
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.surveys import get_survey
from workflow_scripts.training import PREEMPTED_EXIT_CODE


def main(snakemake: Any, log: Any) -> None:
    config = snakemake.config
    study = snakemake.params.study
    name = snakemake.wildcards.model
    model = snakemake.params.model
    survey = get_survey(config, study["survey"])
    bands = study_bands(survey, study, model["bands"])
    torch.set_num_threads(max(1, min(snakemake.threads, os.cpu_count() or 1)))
    hi_set, lo_set = read_cutouts(snakemake.input.train_hi), read_cutouts(snakemake.input.train_lo)
    idx = [hi_set.band_index(b) for b in bands]
    hi, lo = augment([hi_set.cube[:, idx], lo_set.cube[:, idx]], study["augment"])
    scalings = {"hi": fit_scaling(hi), "lo": fit_scaling(lo)}
    log.info("training %s (%s, bands %s) on %d images (%d cutouts x %d), device %s", name, model["kind"],
             ",".join(bands), len(hi), hi_set.n, study["augment"], config["device"])
    with atomic_path(snakemake.output.scaling) as tmp:
        tmp.write_text(json.dumps({"bands": bands, **{k: v.to_dict() for k, v in scalings.items()}}, indent=2))
    result = train_gan(model, hi, lo if model["kind"] == "srgan" else None, scalings, snakemake.params.seed,
                       config["device"], snakemake.params.out_dir)
    log.info("%s: epochs %d, %.1f images/s, resumed=%s", name, result.epochs_done, result.images_per_second or 0,
             result.resumed)
    if result.preempted:
        log.warning("preempted by signal %s: checkpoint written, exiting for a retry", result.signal)
        sys.exit(PREEMPTED_EXIT_CODE)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
