"""Rule `hemmati22_photometry`: model-fitting photometry of every blend for one run (wildcard ``run``):
low-res images at low-res peaks (lo_at_lo) or at GAN peaks (lo_at_gan), hi-res images at hi-res peaks (hi_at_hi);
one Parquet table, one row per (blend, detected object)."""

import os
from typing import Any

# before torch loads OpenMP: threads that wait sleep instead of spinning. Spinning threads on a busy machine (a
# `--cores 8` run on 2 cores) made the many small tensor operations of a fit ~30x slower (measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd
import torch

from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.studies.hemmati22.detect import lowres_psf
from workflow_scripts.detection import truth_positions
from workflow_scripts.photometry import FLAG_NAMES, FitSettings, get_engine
from workflow_scripts.studies.hemmati22.photometry import (RUNS, blend_photometry, noise_sigma, positions_from_peaks,
                                                           write_table)
from workflow_scripts.data.psf import read_psf
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.surveys import get_survey


def settings_from_config(phot: dict, device: str) -> FitSettings:
    pri = phot["priors"]
    return FitSettings(model=phot["model"], centre_sigma=pri["centre_sigma_px"], g_sigma=pri["g_sigma"],
                       log_T_sigma=pri["log_T_sigma"], flux_sigma_rel=pri["flux_sigma_rel"],
                       max_iter=phot["max_iter"], batch_size=phot["batch_size"], memory_mb=phot["memory_mb"],
                       device=device)


def main(snakemake: Any, log: Any) -> None:
    config, study, phot = snakemake.config, snakemake.params.study, snakemake.params.photometry
    name = snakemake.wildcards.run
    grid, kind = RUNS[name]
    survey = get_survey(config, study["survey"])
    target = get_survey(config, study["target"]["survey"])
    band = study["band"]
    torch.set_num_threads(max(int(snakemake.threads), 1))
    hi = read_blends(snakemake.input.blends_hi)
    b = hi.bands.index(band)
    peaks = pd.read_parquet(snakemake.input.peaks)
    n = hi.n
    if grid == "lowres":
        lo = read_cutouts(snakemake.input.blends_lo)
        images = lo.cube[:, lo.bands.index(band)]
        psf_image, oversampling = lowres_psf(target, study["target"]["band"], study["target"]["profile"]), 1
        scale = target.pixel_scale
        method = "lo" if kind == "lo" else study["gan_models"]["gan"]
        positions = positions_from_peaks(peaks, method, n, to_low=hi.geometry.to_low if kind == "gan" else None)
    else:
        images = hi.cube[:, b]
        epsf = read_psf(snakemake.input.psf)
        psf_image, oversampling = epsf.epsf, epsf.oversampling
        scale = survey.pixel_scale
        positions = positions_from_peaks(peaks, "hi", n)
    sigma = noise_sigma(images)
    engine = get_engine(phot["engine"], psf_image, settings_from_config(phot, snakemake.params.device),
                        psf_oversampling=oversampling, psf_ngauss=phot["psf_ngauss"], seed=snakemake.params.seed)
    psf_info = getattr(engine, "psf", None)
    if psf_info is not None:
        log.info("PSF mixture: %d Gaussians, max residual %.2e of the peak", psf_info.n, psf_info.max_residual)
    log.info("%s: %d blends, %d positions (%s peaks), engine %s, model %s, median sigma %.3g", name, n,
             sum(len(p) for p in positions), kind, engine.name, engine.settings.model, float(np.nanmedian(sigma)))
    # pixels exactly 0 hold no data (the corners a rotation moved in from outside a stamp): weight 0
    data = np.where(images == 0, np.nan, images)
    result = engine.fit(data, positions, sigma)
    log.info("fitted in %.1f s (%.0f objects/s on %s)", engine.last_stats["seconds"],
             engine.last_stats["objects_per_second"], engine.last_stats["device"])
    flags = result["flags"].to_numpy()
    for bit, what in FLAG_NAMES.items():
        if (flags & bit).any():
            log.info("flag %s: %d rows", what, int(((flags & bit) > 0).sum()))
    table = blend_photometry(result, hi.truth, run=name, band=band, zeropoint=hi.zeropoints[b],
                             radius_px=phot["match_radius_arcsec"] / scale, truth_xy=truth_positions(hi.truth, grid))
    log.info("%d rows, %d converged, %d matched to a true galaxy", len(table), int(table["converged"].sum()),
             int((table["truth_object"] > 0).sum()))
    write_table(snakemake.output[0], table, step_provenance(snakemake, "derived"),
                {"run": name, "engine": engine.name, "model": engine.settings.model, "band": band,
                 "zeropoint": hi.zeropoints[b], "pixel_scale": scale, **engine.last_stats})


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
