"""Rule `pearce_casey23_predict`: the generator's output bands for one cutout set (validation or anomalies)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.imaging.stamps import CutoutSet, read_cutouts, write_cutouts
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.pearce_casey23.cgan import predict, scalings_from_dict, split_bands


def main(snakemake: Any, log: Any) -> None:
    spec = json.loads(open(snakemake.input.scaling).read())
    cs = read_cutouts(snakemake.input.cutouts)
    sw, _ = split_bands(cs, spec["input_bands"], spec["output_bands"])
    out = predict(snakemake.input.generator, sw, scalings_from_dict(spec), resize=spec["resize"],
                  device=snakemake.params.device, dihedral=snakemake.params.dihedral)
    zps = [cs.zeropoints[cs.band_index(b)] for b in spec["output_bands"]]
    pred = CutoutSet(cube=out, bands=list(spec["output_bands"]), table=cs.table, pixel_scale=cs.pixel_scale,
                     zeropoints=zps, bunit=cs.bunit, summary={"n_input": cs.n, "n_kept": cs.n})
    log.info("predicted %s for %d cutouts (mean over %d dihedral copies)", ",".join(spec["output_bands"]), cs.n,
             snakemake.params.dihedral)
    write_cutouts(snakemake.output.predicted, pred, step_provenance(snakemake, "derived"))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
