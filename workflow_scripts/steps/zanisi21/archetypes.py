"""Rule `zanisi21_archetypes`: smooth Sersic archetypes of the training and held-out galaxies in real blank sky."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd

from workflow_scripts.data.psf import read_psf
from workflow_scripts.imaging.stamps import CutoutSet, read_cutouts, write_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.zanisi21.archetypes import render_archetypes
from workflow_scripts.studies.zanisi21.stamps import StampError, read_sky


def main(snakemake: Any, log: Any) -> None:
    inp, study = snakemake.input, snakemake.params.study
    psf = read_psf(inp.psf).psf
    prov = step_provenance(snakemake, "derived")
    summary = {}
    for part in ("train", "test"):
        table = pd.read_parquet(getattr(inp, part))
        cs = read_cutouts(getattr(inp, f"stamps_{part}"))
        sky = read_sky(inp.sky, part)
        ok = table["ok"].to_numpy(bool)
        if not ok.any():
            raise StampError(f"{getattr(inp, part)}: every Sersic fit failed ({len(table)} stamps): no archetype")
        if len(sky) < ok.sum():
            raise StampError(f"{inp.sky}: {len(sky)} blank-sky stamps for {int(ok.sum())} archetypes ({part})")
        good = table.loc[ok].reset_index(drop=True)
        cube = render_archetypes(good, psf, sky[:len(good)], pixel_scale=cs.pixel_scale,
                                 n_range=tuple(study["archetypes"]["n_range"]), source=str(getattr(inp, part)))
        out = CutoutSet(cube=np.asarray(cube, np.float32)[:, None], bands=list(cs.bands), table=good,
                        pixel_scale=cs.pixel_scale, zeropoints=list(cs.zeropoints), bunit=cs.bunit,
                        summary={"n_input": len(table), "n_kept": len(good)})
        write_cutouts(getattr(snakemake.output, f"archetype_{part}"), out, prov)
        summary[part] = {"galaxies": len(table), "archetypes": len(good), "fit_failed": int((~ok).sum()),
                         "reasons": table.loc[~ok, "reason"].value_counts().to_dict() if (~ok).any() else {}}
        log.info("%s: %d archetypes of %d galaxies (%d fits failed)", part, len(good), len(table), (~ok).sum())
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
