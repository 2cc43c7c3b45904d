# Helpers shared by the rule files: boundary paths and resource estimates.
from workflow_scripts import io as boundary


def band_file(survey, field, band):
    return str(boundary.band_path(DATA, survey, field, band))


def rms_file(survey, field, band):
    return str(boundary.rms_path(DATA, survey, field, band))


def catalog_file(survey, field):
    return str(boundary.catalog_path(DATA, survey, field))


def mosaic_mem_mb(survey, copies=4, floor=1000):
    """Memory for a job holding `copies` float32 copies of every band of an embedded mosaic."""
    npix = survey.embedded.get("npix", 4096)
    return floor + int(copies * len(survey.bands) * npix * npix * 4 / 2**20)
