"""Rule `smith_geach19_mock`: the catalogue-mock baseline (no learning): the real field's sources bootstrapped and
rendered as exponential disks through the measured PSFs on its sky noise, one field per realisation, then the same
extraction as the real and generated fields."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd
from astropy.io import fits

from workflow_scripts.data.psf import read_psf
from workflow_scripts.detection.sources import measure_background
from workflow_scripts.imaging.render import psf_half_light_radius
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.smith_geach19.data import read_real_field
from workflow_scripts.studies.smith_geach19.mock import MOCK_SEED_OFFSET, mock_sources, render_mock
from workflow_scripts.studies.smith_geach19.tessellate import field_header, field_wcs
from workflow_scripts.studies.smith_geach19.validation import extract, extraction_settings

MADE_BY = "catalogue mock: the real field's sources as exponential disks"


def main(snakemake: Any, log: Any) -> None:
    study, seed = snakemake.params.study, snakemake.params.seed
    bands, n = study["bands"], study["field_size"]
    meta = json.loads(open(snakemake.input.meta).read())
    zps, scale = meta["PHOTZP"], meta["pixel_scale"]
    real = read_real_field(snakemake.input.field, meta)
    val = study["validation"]
    sky = {b: float(np.median(measure_background(real[i], None, box=val["background_box"]).rms))
           for i, b in enumerate(bands)}
    psfs = {b: read_psf(p).psf for b, p in zip(bands, snakemake.input.psfs)}
    psf_hlr = {b: psf_half_light_radius(psfs[b], scale) for b in bands}
    cat = pd.read_parquet(snakemake.input.catalog)
    sources = mock_sources(cat, bands, max(psf_hlr.values()))
    density = len(cat) / (real.shape[1] * real.shape[2])
    log.info("%d real sources (%d usable), sky rms %s, PSF half-light radii %s arcsec", len(cat), len(sources),
             {b: f"{v:.3g}" for b, v in sky.items()}, {b: f"{v:.3g}" for b, v in psf_hlr.items()})
    wcs = field_wcs(*meta["centre"], n, scale)
    prov = step_provenance(snakemake, "derived")
    images = list(snakemake.output.images)
    found, placed = [], []
    for r in range(study["realisations"]):
        imgs, table = render_mock(sources, bands, psfs, sky, n, scale, density,
                                  np.random.default_rng(seed + MOCK_SEED_OFFSET + r), progress=True)
        for i, b in enumerate(bands):
            with atomic_path(images[r * len(bands) + i]) as tmp:
                fits.PrimaryHDU(imgs[b], header=field_header(wcs, b, meta, prov, MADE_BY)).writeto(tmp)
        c = extract(imgs, zps, scale, what=f"mock realisation {r}", **extraction_settings(val))
        log.info("mock realisation %d: %d sources placed, %d extracted", r, len(table), len(c))
        found.append(c.assign(realisation=r))
        placed.append(len(table))
    with atomic_path(snakemake.output.catalog) as tmp:
        pd.concat(found, ignore_index=True).to_parquet(tmp, index=False)
    summary = {"sources_in_catalogue": len(cat), "sources_usable": len(sources), "placed": placed,
               "sky_rms": sky, "psf_half_light_radius_arcsec": psf_hlr,
               "area_arcmin2": study["realisations"] * n * n * (scale / 60) ** 2}
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
