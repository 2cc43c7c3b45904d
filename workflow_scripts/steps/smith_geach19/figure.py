"""Rules `smith_geach19_fig{1,2,4}`: one figure each (dispatch on the rule)."""

import json
import os
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd
from astropy.io import fits

from workflow_scripts.steps._common import run
from workflow_scripts.studies.smith_geach19 import figures as figs
from workflow_scripts.studies.smith_geach19.tessellate import noise_for_field, one_shot
from workflow_scripts.train.inference import load_model

#: side of the Fig 1 images (output pixels)
FIG1_SIDE = 192


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    which = snakemake.rule.removeprefix("smith_geach19_")
    out = (snakemake.output.png, snakemake.output.pdf)
    meta = json.loads(open(snakemake.input.meta).read())
    if which == "fig1":
        ens = json.loads(open(snakemake.input.ensemble).read())["snapshots"]
        model_dir = os.path.dirname(snakemake.input.ensemble)
        images = []
        for name in ens:
            gen = load_model(os.path.join(model_dir, name), "cpu")
            noise = noise_for_field(snakemake.params.seed + 7, gen.nz, FIG1_SIDE, gen.scale, 2)
            images.append(one_shot(gen, noise, FIG1_SIDE, margin_z=2))
        figs.fig1_evolution(images, [n.removeprefix("generator_").removesuffix(".pt") for n in ens], *out)
    elif which == "fig2":
        real = np.asarray(fits.getdata(snakemake.input.field), np.float32)
        n = study["field_size"]
        gen = np.stack([np.asarray(fits.getdata(p), np.float32) for p in snakemake.input.images[:len(study["bands"])]])
        lo, hi = np.array(meta["normalisation"]["lo"]), np.array(meta["normalisation"]["hi"])
        gen = (gen - lo[:, None, None]) / (hi - lo)[:, None, None]
        side = min(n, real.shape[-1])
        figs.fig2_fields(real[:, :side, :side], gen[:, :side, :side], meta["pixel_scale"], *out)
    elif which == "fig4":
        metrics = json.loads(open(snakemake.input.metrics).read())
        figs.fig4_magnitudes(pd.read_parquet(snakemake.input.real), pd.read_parquet(snakemake.input.generated),
                             metrics["comparison"], study["bands"], *out)
    log.info("%s written", snakemake.output.png)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
