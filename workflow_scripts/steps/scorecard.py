"""Rule `scorecard`: the headline entries of every enabled study's metrics.json in one JSON file and one table."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.io import atomic_path
from workflow_scripts.scorecard import gather, markdown
from workflow_scripts.steps._common import run


def main(snakemake: Any, log: Any) -> None:
    card = gather(dict(zip(snakemake.params.studies, snakemake.input)), snakemake.params.preset)
    with atomic_path(snakemake.output.json) as tmp:
        tmp.write_text(json.dumps(card, indent=2))
    with atomic_path(snakemake.output.md) as tmp:
        tmp.write_text(markdown(card))
    log.info("scorecard: %d entries from %s", len(card["entries"]), ", ".join(snakemake.params.studies))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
