"""Rules `zanisi21_stamps` (real training / held-out stamps, the comparison set) and `zanisi21_anomaly_stamps`
(``params.kind`` anomalies: normal training / held-out stamps and the labelled anomalies): blank sky, the scaling."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.io import atomic_path
from workflow_scripts.imaging.stamps import write_cutouts
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.zanisi21.samples import ANOMALY_SETS, SETS, make_anomaly_sets, make_sets, read_fields
from workflow_scripts.studies.zanisi21.stamps import StampScaling, write_sky


def main(snakemake: Any, log: Any) -> None:
    study, inp, out = snakemake.params.study, snakemake.input, snakemake.output
    real = read_fields(snakemake.params.fields, list(inp.images), list(inp.rms), list(inp.catalogs))
    if snakemake.params.kind == "anomalies":
        names = ANOMALY_SETS
        sets, sky, summary = make_anomaly_sets(real, study, seed=snakemake.params.seed)
    else:
        names = SETS
        other = read_fields(snakemake.params.other_fields, list(inp.other_images), list(inp.other_rms),
                            list(inp.other_catalogs))
        sets, sky, summary = make_sets(real, other, study, twin=snakemake.params.twin, seed=snakemake.params.seed)
    scaling = StampScaling.fit(sets["real_train"].cube, zoom_by=study["zoom"], bits=study["model"]["bits"])
    prov = step_provenance(snakemake, "derived")
    for name in names:
        write_cutouts(getattr(out, name), sets[name], prov)
    write_sky(out.sky, sky, prov)
    with atomic_path(out.scaling) as tmp:
        tmp.write_text(json.dumps(scaling.to_dict(), indent=2))
    with atomic_path(out.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
