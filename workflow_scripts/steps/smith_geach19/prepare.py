"""Rule `smith_geach19_prepare`: the training field (bands stacked, rotated and cropped as configured, clipped and
min-max normalised) and its normalisation."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
from astropy.io import fits

from workflow_scripts.io import atomic_path, provenance_header, read_mosaic
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.smith_geach19.data import preprocess


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    mosaics = [read_mosaic(p, with_rms=False) for p in snakemake.input.images]
    pre = study["preprocess"]
    field, norm = preprocess([m.data for m in mosaics], study["bands"], rotate_deg=pre["rotate_deg"],
                             crop=pre.get("crop"), clip_percentile=pre["clip_percentile"],
                             stretch=pre.get("stretch", "linear"), softening=pre.get("softening", 1.0))
    first = mosaics[0]
    meta = {"bands": study["bands"], "normalisation": norm.to_dict(), "shape": list(field.shape),
            "pixel_scale": first.pixel_scale, "PHOTZP": {m.band: m.zeropoint for m in mosaics},
            "TELESCOP": str(first.header.get("TELESCOP", "")), "INSTRUME": str(first.header.get("INSTRUME", "")),
            "BUNIT": str(first.header.get("BUNIT", "")),
            "centre": [float(np.ravel(v)[0]) for v in first.wcs.celestial.all_pix2world(
                [first.data.shape[1] / 2], [first.data.shape[0] / 2], 0)]}
    log.info("training field %s, normalisation %s", field.shape, norm.to_dict())
    hdr = provenance_header(step_provenance(snakemake, "derived"))
    with atomic_path(snakemake.output.field) as tmp:
        fits.PrimaryHDU(field.astype(np.float32), header=hdr).writeto(tmp)
    with atomic_path(snakemake.output.meta) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
