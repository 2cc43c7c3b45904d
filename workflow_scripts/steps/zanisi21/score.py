"""Rule `zanisi21_score`: per-pixel log-likelihoods of one stamp set under every PixelCNN, LLRs, background share."""

import json
import os
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import torch

from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.zanisi21.scoring import score_set, write_scores
from workflow_scripts.studies.zanisi21.stamps import StampScaling


def main(snakemake: Any, log: Any) -> None:
    torch.set_num_threads(max(1, min(snakemake.threads, os.cpu_count() or 1)))
    cs = read_cutouts(snakemake.input.stamps)
    scaling = StampScaling.from_dict(json.loads(open(snakemake.input.scaling).read()))
    models = dict(zip(snakemake.params.models, snakemake.input.models))
    scores = score_set(cs.cube, cs.table, scaling, models, masks=snakemake.params.study["masks"],
                       device=snakemake.params.device)
    t = scores.table
    log.info("%s: %d stamps; mean bits/dim %s; mean LLR %.1f nats", snakemake.wildcards.set, len(t),
             ", ".join(f"{m} {t[f'bpd_{m}'].mean():.3f}" for m in scores.logp), t["llr"].mean())
    write_scores(snakemake.output.maps, scores, step_provenance(snakemake, "derived"))
    with atomic_path(snakemake.output.table) as tmp:
        t.to_parquet(tmp, index=False)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
