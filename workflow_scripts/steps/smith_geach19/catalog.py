"""Rules `smith_geach19_catalog_real` and `smith_geach19_catalog`: the same source extraction on the real field (the
training region, in the survey's units) and on every generated realisation."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd
from astropy.io import fits

from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.studies.smith_geach19.data import read_real_field
from workflow_scripts.studies.smith_geach19.validation import extract, extraction_settings


def _write(cat: pd.DataFrame, path: str) -> None:
    with atomic_path(path) as tmp:
        cat.to_parquet(tmp, index=False)


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    bands = study["bands"]
    meta = json.loads(open(snakemake.input.meta).read())
    zps, scale = meta["PHOTZP"], meta["pixel_scale"]
    kw = extraction_settings(study["validation"])
    if snakemake.rule.endswith("_real"):
        real = read_real_field(snakemake.input.field, meta)
        cat = extract(dict(zip(bands, real)), zps, scale, what=f"real field {snakemake.input.field}", **kw)
        log.info("real: %d sources over %.2f arcmin^2", len(cat), real.shape[1] * real.shape[2] * (scale / 60) ** 2)
        _write(cat.assign(realisation=-1), snakemake.output.catalog)
        return
    images = list(snakemake.input.images)
    gen = []
    for r in range(study["realisations"]):
        imgs = {b: np.asarray(fits.getdata(images[r * len(bands) + i]), np.float32) for i, b in enumerate(bands)}
        gen.append(extract(imgs, zps, scale, what=f"realisation {r}", generated=True, **kw).assign(realisation=r))
    cat = pd.concat(gen, ignore_index=True)
    area = {"real": meta["shape"][1] * meta["shape"][2] * (scale / 60) ** 2,
            "generated": study["realisations"] * study["field_size"] ** 2 * (scale / 60) ** 2}
    log.info("generated: %d sources over %.2f arcmin^2", len(cat), area["generated"])
    _write(cat, snakemake.output.generated)
    with atomic_path(snakemake.output.areas) as tmp:
        tmp.write_text(json.dumps(area))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
