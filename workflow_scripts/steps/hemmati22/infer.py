"""Rule `hemmati22_infer`: SR-GAN images of a sample (blends or isolated) from its low-resolution stamps."""

import json
import os
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import torch

from workflow_scripts.imaging.scaling import AsinhScaling
from workflow_scripts.imaging.stamps import CutoutSet, read_cutouts, write_cutouts
from workflow_scripts.studies.hemmati22.gans import super_resolve
from workflow_scripts.steps._common import run, step_provenance, step_survey


def main(snakemake: Any, log: Any) -> None:
    spec = json.loads(open(snakemake.input.scaling).read())
    scalings = {k: AsinhScaling.from_dict(spec[k]) for k in ("hi", "lo")}
    bands = spec["bands"]
    torch.set_num_threads(max(1, min(snakemake.threads, os.cpu_count() or 1)))
    lo_set = read_cutouts(snakemake.input.lowres)
    idx = [lo_set.band_index(b) for b in bands]
    cube = super_resolve(snakemake.input.generator, lo_set.cube[:, idx], scalings, snakemake.params.device)
    table = lo_set.table
    log.info("%s: %d GAN images of shape %s", snakemake.wildcards.model, len(cube), cube.shape[1:])
    hires_scale = step_survey(snakemake).pixel_scale
    zps = [lo_set.zeropoints[lo_set.band_index(b)] for b in bands]
    out = CutoutSet(cube=cube, bands=bands, table=table.reset_index(drop=True), pixel_scale=hires_scale,
                    zeropoints=zps, bunit=lo_set.bunit)
    write_cutouts(snakemake.output[0], out, step_provenance(snakemake, "derived"))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
