"""Rule `hemmati22_photometry_summary`: the dominant source of every blend in each photometry run, a
Gaussian-process regression of delta-mag on input magnitude per run, and photometry.json (bias, scatter, the
improvement factor of GAN over low-res positions beside the paper's > 10x)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import pandas as pd
import pyarrow.parquet as pq

from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.io import atomic_path
from workflow_scripts.studies.hemmati22.photometry import dominant_source, gp_curves, photometry_summary, write_table
from workflow_scripts.steps._common import run, step_provenance


def main(snakemake: Any, log: Any) -> None:
    phot, band, seed = snakemake.params.photometry, snakemake.params.band, snakemake.params.seed
    truth = read_blends(snakemake.input.blends_hi).truth
    dominants, curves, gp_info = {}, [], {}
    engine = model = None
    for path in snakemake.input.runs:
        table = pd.read_parquet(path)
        meta = json.loads((pq.read_schema(path).metadata or {}).get(b"genastro.photometry", b"{}"))
        engine, model = meta.get("engine", engine), meta.get("model", model)
        name = str(table["run"].iloc[0]) if len(table) else path.rsplit("/", 1)[-1].removesuffix(".parquet")
        dom = dominant_source(table, truth, band)
        dominants[name] = dom
        m = dom["measured"].to_numpy()
        gp, info = gp_curves(dom.loc[m, "input_mag"], dom.loc[m, "dmag"], max_points=phot["gp"]["max_points"],
                             seed=seed, restarts=phot["gp"]["restarts"])
        gp.insert(0, "run", name)
        curves.append(gp)
        gp_info[name] = info
        log.info("%s: %d of %d dominant sources measured; GP %s", name, int(m.sum()), len(dom), info.get("kernel"))
    summary = photometry_summary(dominants, engine=str(engine), model=str(model), gp=gp_info)
    summary["provenance"] = step_provenance(snakemake, "derived")
    log.info("improvement factor (GAN vs low-res positions): %s; paper %s",
             summary["ours"]["improvement_factor"], summary["paper"]["improvement_factor"])
    prov = step_provenance(snakemake, "derived")
    dom_all = pd.concat([d.assign(run=r) for r, d in dominants.items()], ignore_index=True)
    write_table(snakemake.output.dominant, dom_all, prov)
    write_table(snakemake.output.gp, pd.concat(curves, ignore_index=True), prov)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
