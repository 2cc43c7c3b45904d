"""Rule `psf`: the empirical PSF (photutils EPSF) of one band of one field, from the stars in the mosaic itself.

input: image (boundary mosaic), rms (its noise map); params: psf (the config's psf block); wildcards: survey,
field, band; output: fits (native PSF + 'EPSF' oversampled extension + 'STARS' table), json (summary).
"""

# no `from __future__` import: Snakemake prepends its preamble to script: files, which would break it
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.errors import BoundaryError
from workflow_scripts.io import read_mosaic
from workflow_scripts.data.psf import estimate_psf, write_psf, write_psf_summary
from workflow_scripts.steps._common import run, step_provenance, step_survey

#: relative difference between the WCS pixel scale and the configured one that is worth a warning
PIXEL_SCALE_TOLERANCE = 0.01


def main(snakemake: Any, log: Any) -> None:
    w = snakemake.wildcards
    survey = step_survey(snakemake)
    band = survey.band(w.band)
    cfg = dict(snakemake.params.psf)

    rms_file = getattr(snakemake.input, "rms", None)
    mosaic = read_mosaic(snakemake.input.image, rms_file=rms_file or None, with_rms=bool(rms_file))
    if mosaic.band.upper() != band.name.upper():
        raise BoundaryError(f"{snakemake.input.image}: FILTER = {mosaic.band!r} but the rule asked for band "
                            f"{band.name} of {survey.name}")
    scale = mosaic.pixel_scale
    if abs(scale / survey.pixel_scale - 1.0) > PIXEL_SCALE_TOLERANCE:
        log.warning("%s %s: WCS pixel scale %.4f\" differs from the configured %.4f\"; using the WCS's",
                    survey.name, band.name, scale, survey.pixel_scale)

    log.info("%s/%s %s: finding stars (S/N >= %g, %d-px stamps) and building the EPSF (x%d)",
             survey.name, w.field, band.name, cfg["star_snr_min"], cfg["stamp_size"], cfg["oversampling"])
    result = estimate_psf(
        mosaic,
        psf_fwhm_guess=band.psf_fwhm,
        stamp_size=int(cfg["stamp_size"]),
        oversampling=int(cfg["oversampling"]),
        min_stars=int(cfg["min_stars"]),
        snr_min=float(cfg["star_snr_min"]),
        max_iters=int(cfg["max_iters"]),
        pixel_scale=scale,
        max_stars=int(cfg["max_stars"]),
    )
    log.info("%s %s: %d stars of %d detections; FWHM %.4f\" (oversampled model %.4f\", configured %.4f\"); "
             "%d iterations%s", survey.name, band.name, result.n_stars, result.n_candidates, result.fwhm,
             result.fwhm_oversampled, band.psf_fwhm, result.iterations,
             "" if result.converged else f" (star centres still moving by {result.center_shift:.4f} px at max_iters)")

    prov = step_provenance(snakemake, survey.source)
    meta = {
        "TELESCOP": mosaic.header.get("TELESCOP", survey.telescope),
        "INSTRUME": mosaic.header.get("INSTRUME", survey.instrument),
        "FILTER": band.name,
        "SURVEY": survey.name,
        "FIELD": w.field,
    }
    write_psf(snakemake.output.fits, result, meta, prov)
    write_psf_summary(snakemake.output.json, result, {"survey": survey.name, "field": w.field}, prov)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
