"""Shared plumbing of the rule scripts: logging to the rule's log file, the validated config, provenance."""

from __future__ import annotations

import logging
import sys
from typing import Any

from workflow_scripts.config import config_hash
from workflow_scripts.errors import PipelineError
from workflow_scripts.io import provenance


def setup(snakemake: Any) -> logging.Logger:
    """Send logging to the rule's ``log:`` file and to stderr; return the step's logger."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if len(snakemake.log):
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.captureWarnings(True)
    return logging.getLogger(f"genastro.{snakemake.rule}")


def step_provenance(snakemake: Any, source: str) -> dict[str, Any]:
    return provenance(config_hash(snakemake.config), snakemake.config.get("seed"), source)


def run(main: Any, snakemake: Any) -> None:
    """Run ``main(snakemake, log)``; a :class:`PipelineError` ends the job with its one-line message."""
    log = setup(snakemake)
    try:
        main(snakemake, log)
    except PipelineError as exc:
        log.error("%s", exc)
        sys.exit(1)
