"""Rule `hemmati22_detect`: peaks on hi-res, low-res and GAN images of the blends and the isolated control
sample, matched to the true centres; one row per stamp with the outcome of every method, and every peak."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.data.psf import read_psf
from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run, step_survey
from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.studies.hemmati22.detect import detect_samples, srgan_models
from workflow_scripts.surveys import Survey


def main(snakemake: Any, log: Any) -> None:
    params, inp, out = snakemake.params, snakemake.input, snakemake.output
    survey = step_survey(snakemake)
    models = srgan_models(params.study)
    samples = {
        "blends": (read_blends(inp.blends_hi), read_cutouts(inp.blends_lo),
                   {m: read_cutouts(p) for m, p in zip(models, inp.gan_blends)}),
        "isolated": (read_blends(inp.isolated_hi), read_cutouts(inp.isolated_lo),
                     {m: read_cutouts(p) for m, p in zip(models, inp.gan_isolated)}),
    }
    target = Survey.from_config(params.target["name"], params.target)
    psfs = {b: read_psf(p).psf for b, p in zip(survey.bands, inp.psfs)}
    tables, peaks = detect_samples(samples, survey=survey, target=target, study=params.study, psfs=psfs)
    for path, frame in ((out.blends, tables["blends"]), (out.isolated, tables["isolated"]), (out.peaks, peaks)):
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
