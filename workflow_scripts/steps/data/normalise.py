"""Rule `normalise_{survey}`: raw archive products of one field -> boundary mosaics, rms maps, catalogue.

Inputs are named by band (one raw file each) plus optional ``catalog`` and ``photoz`` raw tables. Outputs
are recognised by their file names, as :mod:`workflow_scripts.io` lays them out: ``{band}.fits``,
``{band}.rms.fits`` and ``catalog.parquet``.
"""

from pathlib import Path
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.errors import BoundaryError
from workflow_scripts.data.normalise import normalise_band, normalise_catalog
from workflow_scripts.steps._common import run, step_provenance, step_survey

CATALOG_NAME = "catalog.parquet"
RMS_SUFFIX = ".rms.fits"
IMAGE_SUFFIX = ".fits"


def _outputs(paths: list[str], bands: list[str]) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(band -> image path, band -> rms path, catalogue path) from the job's output files."""
    images: dict[str, str] = {}
    rms: dict[str, str] = {}
    catalog = None
    for path in map(str, paths):
        name = Path(path).name
        if name == CATALOG_NAME:
            catalog = path
        elif name.endswith(RMS_SUFFIX) and name.removesuffix(RMS_SUFFIX) in bands:
            rms[name.removesuffix(RMS_SUFFIX)] = path
        elif name.endswith(IMAGE_SUFFIX) and name.removesuffix(IMAGE_SUFFIX) in bands:
            images[name.removesuffix(IMAGE_SUFFIX)] = path
    return images, rms, catalog


def main(snakemake: Any, log: Any) -> None:
    survey = step_survey(snakemake)
    fmt = survey.download.get("format")
    if fmt is None:
        raise BoundaryError(f"surveys.{survey.name}.download.format is not set")
    prov = step_provenance(snakemake, "download")
    inputs = dict(snakemake.input.items())
    images, rms, catalog = _outputs(list(snakemake.output), survey.band_names)
    zeropoints: dict[str, float] = {}
    for band, out in images.items():
        if band not in inputs:
            raise BoundaryError(f"normalise {survey.name}/{snakemake.wildcards.field}: no raw input for band {band}")
        log.info("%s %s: %s -> %s", survey.name, band, inputs[band], out)
        result = normalise_band(fmt, inputs[band], out, survey=survey, band=band, prov=prov,
                                rms_out=rms.get(band))
        zeropoints[band] = result.zeropoint
    if catalog is not None:
        if "catalog" not in inputs:
            raise BoundaryError(f"normalise {survey.name}: catalog.parquet is an output but no raw catalog input")
        normalise_catalog(inputs["catalog"], inputs.get("photoz"), catalog, survey=survey, prov=prov,
                          zeropoints=zeropoints)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
