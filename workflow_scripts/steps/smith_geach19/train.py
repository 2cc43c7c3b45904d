"""Rule `smith_geach19_train`: the Spatial-GAN on crops of the training field, with its self-ensemble snapshots."""

import json
import os
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import torch
from astropy.io import fits

from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.studies.smith_geach19.model import train_ensemble


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    torch.set_num_threads(max(1, min(snakemake.threads, os.cpu_count() or 1)))
    # a saturating sigmoid generator makes subnormal floats, which run ~5x slower on x86 CPUs: flush them
    torch.set_flush_denormal(True)
    field = np.asarray(fits.getdata(snakemake.input.field), np.float32)
    out_dir = os.path.dirname(snakemake.output.ensemble)
    snaps, result = train_ensemble(study["model"], study["ensemble"], field, study["crop_size"],
                                   snakemake.params.seed, snakemake.params.device, out_dir)
    log.info("trained %d epochs, %s; ensemble of %d", result.epochs_done, result.throughput(), len(snaps))
    with atomic_path(snakemake.output.ensemble) as tmp:
        tmp.write_text(json.dumps({"snapshots": [s.name for s in snaps],
                                   "images_per_second": result.images_per_second}, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
