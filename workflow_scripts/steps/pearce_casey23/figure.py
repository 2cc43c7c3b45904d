"""Rules `pearce_casey23_fig1{a,b,c,d,e}` and `pearce_casey23_roc`: one figure each (dispatch on the rule)."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd

from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.metrics import plural_label, singular_label
from workflow_scripts.plotting.save import FigureError
from workflow_scripts.steps._common import run
from workflow_scripts.studies.pearce_casey23 import figures as figs
from workflow_scripts.studies.pearce_casey23.metrics import groups

#: objects shown in the image figures (the brightest of their class in the last output band)
N_SHOWN = 3


def _brightest(df: pd.DataFrame, band: str, cls: str) -> pd.DataFrame:
    if df.empty:
        raise FigureError(f"no {cls} brighter than the metrics' limit to show")
    return df.sort_values(f"mag_{band}").head(N_SHOWN)


def _cubes(snakemake: Any, study: dict, true: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = read_cutouts(snakemake.input.pred_anomalies)
    pos = pd.Index(true.table["id"]).get_indexer(ids)
    sw = true.cube[pos][:, [true.band_index(b) for b in study["input_bands"]]]
    lw = true.cube[pos][:, [true.band_index(b) for b in study["output_bands"]]]
    return sw, pred.cube[pos], lw


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    which = snakemake.rule.removeprefix("pearce_casey23_")
    table = pd.read_parquet(snakemake.input.table)
    g = groups(table, study)
    inb, outb = study["input_bands"], study["output_bands"]
    band = outb[-1]
    out = (snakemake.output.png, snakemake.output.pdf)
    anomalies = read_cutouts(snakemake.input.anomalies)
    zps = dict(zip(anomalies.bands, anomalies.zeropoints))
    if which == "fig1a":
        figs.sed_error_distribution(g["normal"], {"ero": g["ero"], "merger": g["merger"]}, outb, *out,
                                    f"validation galaxies with {band} < {study['sed']['bright_mag']:g}")
    elif which in ("fig1b", "fig1d"):
        cls = "ero" if which == "fig1b" else "merger"
        shown = _brightest(g[cls], band, cls)
        sw, pred, lw = _cubes(snakemake, study, anomalies, shown["id"].to_numpy())
        labels = [f"{singular_label(cls)} {i}\n{band} {m:.1f}, err {e:.2f}" for i, m, e in
                  zip(shown["id"], shown[f"mag_{band}"], shown["cgan_sed_error"])]
        figs.object_panels(sw, pred, lw, labels, inb, outb, *out, f"the {len(shown)} brightest {plural_label(cls)}")
    elif which in ("fig1c", "fig1e"):
        cls = "ero" if which == "fig1c" else "merger"
        row = _brightest(g[cls], band, cls).iloc[0]
        figs.sed_panel(row, inb, outb, zps, *out, f"SED of the brightest {singular_label(cls)} (id {row['id']})")
    elif which == "roc":
        metrics = json.loads(open(snakemake.input.metrics).read())
        aucs = {f"{m}_sed_error": {c: metrics[m]["auc"][c]["auc"] for c in ("merger", "ero")}
                for m in ("cgan", "baseline", "truth_photometry") if m in metrics}
        aucs.update({col: {c: v[c]["auc"] for c in ("merger", "ero")} for col, v in metrics.get("core", {}).items()})
        figs.roc_figure(g["normal"], {"merger": g["merger"], "ero": g["ero"]}, aucs, *out)
    else:
        raise FigureError(f"unknown figure rule {snakemake.rule}")
    log.info("%s written", snakemake.output.png)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
