"""Rule `hemmati22_samples`: HSC-like training images, blends and the isolated control sample (hi and lo res)."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np

from workflow_scripts.studies.hemmati22.blends import make_blends, make_isolated, write_blends
from workflow_scripts.imaging.stamps import CutoutSet, read_cutouts, write_cutouts
from workflow_scripts.studies.hemmati22.samples import degrade_cube
from workflow_scripts.data.psf import read_psf
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.surveys import Survey


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    target = Survey.from_config(snakemake.params.target["name"], snakemake.params.target)
    tband, profile = study["target"]["band"], study["target"]["profile"]
    rng = np.random.default_rng([snakemake.params.seed, 22])
    train = read_cutouts(snakemake.input.train)
    blend_cutouts = read_cutouts(snakemake.input.blend)
    psfs = {b: read_psf(p).psf for b, p in zip(train.bands, snakemake.input.psfs)}
    prov = step_provenance(snakemake, "derived")

    def lowres(cube: np.ndarray, table: Any) -> CutoutSet:
        lo = degrade_cube(cube, train.bands, psfs, target, tband, train.pixel_scale, train.zeropoints, profile, rng)
        return CutoutSet(cube=lo, bands=train.bands, table=table.reset_index(drop=True),
                         pixel_scale=target.pixel_scale, zeropoints=train.zeropoints, bunit=train.bunit)

    write_cutouts(snakemake.output.train_lo, lowres(train.cube, train.table), prov)
    log.info("training pairs: %d", train.n)
    blends = make_blends(blend_cutouts, None, study["n_blends"], rng, max_offset_px=study["max_offset_px"],
                         ref_band=study["band"])
    isolated = make_isolated(blend_cutouts, None, study["n_isolated"], rng, ref_band=study["band"])
    for sample, out_hi, out_lo in ((blends, snakemake.output.blends_hi, snakemake.output.blends_lo),
                                   (isolated, snakemake.output.isolated_hi, snakemake.output.isolated_lo)):
        write_blends(out_hi, sample, prov)
        write_cutouts(out_lo, lowres(sample.cube, sample.truth), prov)
        log.info("%s sample: %d stamps", sample.kind, sample.n)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
