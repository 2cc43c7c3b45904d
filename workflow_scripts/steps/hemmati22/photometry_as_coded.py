"""Rule `hemmati22_photometry_as_coded`: the authors' photometry statistic on their subset of blends (exactly two
hi-res, one low-res and two GAN peaks under their detector): the dominant source fitted on their low-res images
with the PSF and the galaxy model their photometry used (:func:`authors_psf`; bulge + disk with a free bulge
fraction, ``hemmati22.as_coded.photometry_model``) at the low-res peak and at the GAN peaks, median |dF/F| of
each and their ratio; and the same fit at the true centres (the ratio a perfect position finder would give). Also
the dominant sources of the subset in every run (Fig 7)."""

import json
import os
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch loads OpenMP (see steps/hemmati22/photometry.py)

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd
import torch

from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run, step_survey
from workflow_scripts.studies.hemmati22.as_coded import (AUTHORS_PSF_OVERSAMPLING, authors_psf, dominants_on_subset,
                                                         peaks_on_subset, photometry_as_coded, photometry_subset,
                                                         true_position_peaks)
from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.studies.hemmati22.photometry import dominant_source, run_photometry
from workflow_scripts.surveys import Survey


def main(snakemake: Any, log: Any) -> None:
    params, inp = snakemake.params, snakemake.input
    torch.set_num_threads(max(int(snakemake.threads), 1))
    study = params.study
    gan = study["gan_models"]["gan"]
    blends = pd.read_parquet(inp.detections)
    if f"n_peaks_{gan}" not in blends.columns:
        summary = {"skipped": f"the headline GAN {gan} is not a one-band model: the authors' detector ran on one band",
                   "improvement_factor": None}
        table = pd.DataFrame(columns=["run", "index", "input_mag", "input_flux", "measured_flux", "measured"])
    else:
        hi, lo, peaks = read_blends(inp.blends_hi), read_cutouts(inp.blends_lo), pd.read_parquet(inp.peaks)
        target = Survey.from_config(params.target["name"], params.target)
        subset = photometry_subset(blends, gan)
        truth_peaks = pd.concat([peaks[peaks["method"] != gan], true_position_peaks(hi.truth, gan)],
                                ignore_index=True)
        # only the subset's blends are fitted (the statistic uses no other)
        peaks, truth_peaks = peaks_on_subset(peaks, subset), peaks_on_subset(truth_peaks, subset)
        psf = authors_psf(target, study["target"]["band"], study["target"]["profile"])
        phot = {**params.photometry, "model": study["as_coded"]["photometry_model"]}   # theirs: bdf
        dominants = {}
        # lo_at_truth: the GAN run with the GAN's peaks replaced by the true centres
        for name, run_name, table_of_peaks in (("lo_at_lo", "lo_at_lo", peaks), ("lo_at_gan", "lo_at_gan", peaks),
                                               ("lo_at_truth", "lo_at_gan", truth_peaks)):
            table, _ = run_photometry(run_name, hi, lo, table_of_peaks, None, survey=step_survey(snakemake),
                                      target=target, study=study, phot=phot, device=params.device,
                                      seed=params.seed, psf=psf)
            dominants[name] = dominant_source(table, hi.truth, study["band"])
        summary = photometry_as_coded(dominants, subset, seed=params.seed)
        table = dominants_on_subset(dominants, subset)
        log.info("as coded: %s blends in the subset, %s measured in both runs; median |dF/F| %s (lo) vs %s (GAN): %s",
                 summary["n_subset"], summary["n_measured"], summary["median_abs_dflux_lo_at_lo"],
                 summary["median_abs_dflux_lo_at_gan"], summary["improvement_factor"])
        log.info("at the true centres: median |dF/F| %s, ratio %s over %s blends",
                 summary["median_abs_dflux_lo_at_truth"], summary["improvement_factor_true_positions"],
                 summary["n_measured_true_positions"])
    summary["gan"] = gan
    summary["model"] = study["as_coded"]["photometry_model"]
    summary["psf"] = (f"the target PSF declared at 1/{AUTHORS_PSF_OVERSAMPLING} of the low-res pixel, as the authors' "
                      "photom.py did")
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    with atomic_path(snakemake.output.dominant) as tmp:
        table.to_parquet(tmp)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
