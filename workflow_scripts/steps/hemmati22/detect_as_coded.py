"""Rule `hemmati22_detect_as_coded`: the authors' detector, matching and false-positive definition on hi-res,
as-coded low-res and one-band GAN images of the blends and the isolated control sample."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd

from workflow_scripts.data.psf import read_psf
from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.studies.hemmati22.as_coded import (detect_as_coded, lowres_geometry, method_images_as_coded,
                                                         summarise_as_coded)
from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.studies.hemmati22.detect import lowres_psf
from workflow_scripts.surveys import Survey


def main(snakemake: Any, log: Any) -> None:
    study, inp, out = snakemake.params.study, snakemake.input, snakemake.output
    target = Survey.from_config(snakemake.params.target["name"], snakemake.params.target)
    models = list(snakemake.params.models)
    psf_hi = read_psf(inp.psf).psf
    psf_lo = lowres_psf(target, study["target"]["band"], study["target"]["profile"])
    tables, peaks = {}, []
    for sample, kind, hi_path, lo_path, gan_paths in (
            ("blends", "blend", inp.blends_hi, inp.blends_lo, inp.gan_blends),
            ("isolated", "isolated", inp.isolated_hi, inp.isolated_lo, inp.gan_isolated)):
        hi = read_blends(hi_path)
        i = hi.bands.index(study["band"])
        gans = {m: read_cutouts(p).cube for m, p in zip(models, gan_paths)}
        images = method_images_as_coded(hi.cube[:, [i]], read_cutouts(lo_path).cube, gans, psf_hi, psf_lo)
        tables[sample], rows = detect_as_coded(images, hi.truth, kind=kind, settings=study["as_coded"],
                                               lo_geometry=lowres_geometry(hi.cube.shape[-1], target,
                                                                           hi.pixel_scale), sample=sample)
        peaks.append(rows)
    summary = summarise_as_coded(tables["blends"], tables["isolated"])
    for path, frame in ((out.blends, tables["blends"]), (out.isolated, tables["isolated"]),
                        (out.peaks, pd.concat(peaks, ignore_index=True))):
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp)
    with atomic_path(out.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
