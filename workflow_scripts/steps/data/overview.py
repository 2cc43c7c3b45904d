"""Rule `overview`: one-page look at a survey field (colour image, PSFs, counts and sizes).

input: images (the field's band mosaics), psfs (their PSF files from rule `psf`), catalog (optional);
wildcards: survey, field; output: png (and pdf when the rule declares one).
"""

# no `from __future__` import: Snakemake prepends its preamble to script: files, which would break it
import math
from pathlib import Path
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.plotting.overview import MAX_DISPLAY_PIXELS, bin_mosaic, plot_field_overview
from workflow_scripts.io import read_catalog, read_mosaic
from workflow_scripts.data.psf import read_psf
from workflow_scripts.steps._common import run, step_survey


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    return [str(v) for v in value]


def main(snakemake: Any, log: Any) -> None:
    w = snakemake.wildcards
    survey = step_survey(snakemake)
    mosaics = {}
    psfs = {}
    for path in _files(snakemake.input.images):
        rms = Path(path).with_name(Path(path).name.replace(".fits", ".rms.fits"))
        mosaic = read_mosaic(path, with_rms=rms.exists())
        # bin as we go, so a 30k-pixel real mosaic is never held at full size more than one band at a time
        factor = max(1, math.ceil(max(mosaic.data.shape) / MAX_DISPLAY_PIXELS))
        mosaics[mosaic.band] = bin_mosaic(mosaic, factor)
    for path in _files(getattr(snakemake.input, "psfs", None)):
        result = read_psf(path)
        psfs[result.band] = result  # carries the FWHM measured on the full-resolution EPSF
    catalog_files = _files(getattr(snakemake.input, "catalog", None))
    catalog = read_catalog(catalog_files[0]) if catalog_files else None

    pdf = getattr(snakemake.output, "pdf", None)
    out = plot_field_overview(mosaics, catalog, psfs, survey, snakemake.output.png, pdf or None, field=w.field)
    log.info("%s/%s: overview of %d bands (%s) -> %s", survey.name, w.field, len(mosaics),
             ", ".join(mosaics), out)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
