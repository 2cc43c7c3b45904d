"""Shared plumbing of the rule scripts: logging to the rule's log file, provenance, the survey of a job, and the
check that a job's inputs come from one run."""

from __future__ import annotations

import logging
import sys
from typing import Any

from workflow_scripts.errors import PipelineError
from workflow_scripts.io import check_lineage, provenance
from workflow_scripts.surveys import Survey


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
    """Provenance of what the job writes, from its ``params.lineage`` (rules/common.smk ``lineage()``)."""
    lineage = snakemake.params.lineage
    return provenance(lineage["config_hash"], lineage["seed"], source)


def step_survey(snakemake: Any) -> Survey:
    """The survey a job works on, from its ``params.survey`` (rules/common.smk ``survey_params()``)."""
    spec = snakemake.params.survey
    return Survey.from_config(spec["name"], spec)


def _input_files(snakemake: Any) -> list[str]:
    """Every input file of the job (Snakemake's input is a flat list; a test's stand-in may not be one)."""
    files = getattr(snakemake, "input", [])
    return [str(f) for f in files] if isinstance(files, list) else []


def run(main: Any, snakemake: Any) -> None:
    """Check that the job's inputs come from one run (same SEED, same survey hashes as the job's own ``lineage``),
    then run ``main(snakemake, log)``; a :class:`PipelineError` ends the job with its one-line message."""
    log = setup(snakemake)
    try:
        params = getattr(snakemake, "params", None)
        check_lineage(_input_files(snakemake), getattr(params, "lineage", None))
        main(snakemake, log)
    except PipelineError as exc:
        log.error("%s", exc)
        sys.exit(1)
