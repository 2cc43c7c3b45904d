"""Rule `hemmati22_lowres_as_coded`: the study band's low-res images of the blends and the isolated control sample
as the authors' code made them (their matching kernel applied on the hi-res grid, their noise)."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np

from workflow_scripts.data.psf import read_psf
from workflow_scripts.imaging.stamps import CutoutSet, write_cutouts
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.hemmati22.as_coded import degrade_as_coded
from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.surveys import Survey


def main(snakemake: Any, log: Any) -> None:
    study, inp, out = snakemake.params.study, snakemake.input, snakemake.output
    target = Survey.from_config(snakemake.params.target["name"], snakemake.params.target)
    band = study["band"]
    psf = read_psf(inp.psf).psf
    rng = np.random.default_rng([snakemake.params.seed, 22, 1])   # a stream of its own: ours stay as they were
    prov = step_provenance(snakemake, "derived")
    for path_in, path_out in ((inp.blends_hi, out.blends_lo), (inp.isolated_hi, out.isolated_lo)):
        hi = read_blends(path_in)
        i = hi.bands.index(band)
        lo = degrade_as_coded(hi.cube[:, [i]], [band], {band: psf}, target, study["target"]["band"],
                              hi.pixel_scale, study["target"]["profile"],
                              float(study["as_coded"]["noise_sigma"]), rng)
        write_cutouts(path_out, CutoutSet(cube=lo, bands=[band], table=hi.truth.reset_index(drop=True),
                                          pixel_scale=target.pixel_scale, zeropoints=[hi.zeropoints[i]],
                                          bunit=hi.bunit), prov)
        log.info("%s: %d stamps, as-coded low-res", path_out, hi.n)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
