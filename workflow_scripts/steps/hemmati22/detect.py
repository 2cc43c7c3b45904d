"""Rule `hemmati22_detect`: peaks on hi-res, low-res and GAN images of the blends and the isolated control
sample, matched to the true centres; one row per stamp with the outcome of every method, and every peak."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd

from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.studies.hemmati22.paper import BLEND_PARAMETERS
from workflow_scripts.studies.hemmati22.detect import detect, lowres_psf, search_radius_arcsec, study_bands
from workflow_scripts.detection.peaks import detection_stack, filtered_snr
from workflow_scripts.io import atomic_path
from workflow_scripts.data.psf import read_psf
from workflow_scripts.steps._common import run
from workflow_scripts.surveys import get_survey


def hi_noise(image: tuple) -> Any:
    """Filtered noise sigma per stamp of a hi-res entry of ``images`` (cube, grid, zeropoints, PSFs, scale)."""
    cube, _, zps, psfs, _ = image
    return filtered_snr(*detection_stack(cube, zps, psfs))[1]


def main(snakemake: Any, log: Any) -> None:
    config = snakemake.config
    study = snakemake.params.study
    survey = get_survey(config, study["survey"])
    target = get_survey(config, study["target"]["survey"])
    tband, profile = study["target"]["band"], study["target"]["profile"]
    det = study["detection"]
    search = search_radius_arcsec(study, survey.pixel_scale)
    psfs = {b: read_psf(p).psf for b, p in zip(survey.bands, snakemake.input.psfs)}
    lo_psf = lowres_psf(target, tband, profile)
    gan_models = [m for m, spec in study["models"].items() if spec["kind"] == "srgan"]
    samples = {"blends": (snakemake.input.blends_hi, snakemake.input.blends_lo, snakemake.input.gan_blends,
                          snakemake.output.blends, "blend"),
               "isolated": (snakemake.input.isolated_hi, snakemake.input.isolated_lo, snakemake.input.gan_isolated,
                            snakemake.output.isolated, "isolated")}
    peak_rows = []
    for sample, (hi_path, lo_path, gan_paths, out_path, kind) in samples.items():
        hi, lo = read_blends(hi_path), read_cutouts(lo_path)
        truth = hi.truth
        table = truth[[c for c in truth.columns if c in ("blend_id", "iso_id", *BLEND_PARAMETERS, "dmag",
                                                          "separation_arcsec")]].copy()
        images, method_bands = {}, {}
        for suffix, which in (("", "one"), ("7", "all")):
            bands = study_bands(survey, study, which)
            method_bands[f"hi{suffix}"] = tuple(bands)
            idx = [hi.bands.index(b) for b in bands]
            zps = [hi.zeropoints[i] for i in idx]
            images[f"hi{suffix}"] = (hi.cube[:, idx], "hires", zps, [psfs[b] for b in bands], survey.pixel_scale)
            images[f"lo{suffix}"] = (lo.cube[:, idx], "lowres", zps, [lo_psf] * len(bands), target.pixel_scale)
        for model, path in zip(gan_models, gan_paths):
            gan = read_cutouts(path)
            images[model] = (gan.cube, "hires", gan.zeropoints, [psfs[b] for b in gan.bands], survey.pixel_scale)
            method_bands[model] = tuple(gan.bands)
        floors = {}  # filtered hi-res noise per stamp, by band set: the floor of GAN images of those bands
        if det.get("gan_noise_floor", True):
            floors = {method_bands[m]: hi_noise(images[m]) for m in ("hi", "hi7")}
        for method, (cube, grid, zps, method_psfs, scale) in images.items():
            floor = floors.get(method_bands[method]) if method in gan_models else None
            if method in gan_models and floors and floor is None:
                log.warning("%s: no hi-res images of bands %s, so no noise floor", method, method_bands[method])
            result, peaks = detect(cube, truth, kind=kind, grid=grid, zeropoints=zps, psfs=method_psfs,
                                   threshold_sigma=det["threshold_sigma"], min_prominence=det["min_prominence_sigma"],
                                   radius_px=det["match_radius_arcsec"] / scale, search_radius_px=search / scale,
                                   noise_floor=floor)
            peak_rows += [pd.DataFrame({"sample": sample, "method": method, "index": i, "x": p[:, 0], "y": p[:, 1]})
                          for i, p in enumerate(peaks) if len(p)]
            table[f"outcome_{method}"] = result["outcome"].to_numpy()
            table[f"n_peaks_{method}"] = result["n_peaks"].to_numpy()
            if kind == "isolated":
                table[f"false_positive_{method}"] = result["false_positive"].to_numpy()
            log.info("%s %s: %s", sample, method, result["outcome"].value_counts().to_dict())
        with atomic_path(out_path) as tmp:
            table.to_parquet(tmp)
    with atomic_path(snakemake.output.peaks) as tmp:
        pd.concat(peak_rows, ignore_index=True).to_parquet(tmp)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
