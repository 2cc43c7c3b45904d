"""Shared plumbing of the training rules' scripts: the job's spec, and the hand-over to
:mod:`workflow_scripts.train.launch` (one process, or several under torchrun)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from workflow_scripts.train import launch


def training_spec(snakemake: Any, name: str, **fields: Any) -> dict[str, Any]:
    """What a training rule's job hands to its training function, as plain JSON-able data: ``name`` (the label of
    its log lines and errors), the rule's seed and device, its threads (at most this machine's CPUs), its log file,
    and the rule's own ``fields``."""
    return {"name": name, "seed": snakemake.params.seed, "device": snakemake.params.device,
            "threads": max(1, min(snakemake.threads, os.cpu_count() or 1)),
            "log": snakemake.log[0] if len(snakemake.log) else None, **fields}


def run_training_rule(snakemake: Any, train_fn: Callable[..., Any], spec: dict[str, Any], worker_module: str,
                      log: logging.Logger) -> int:
    """Train in as many processes as the job's ``gpu`` resource and ``params.processes`` give (several: under
    torchrun, ``python -m worker_module``); exit with the status where it is not 0 (a preempted run: the rule's retry
    resumes from the checkpoint). Returns the number of processes."""
    status, nproc = launch.run_training(train_fn, spec, snakemake.resources.get("gpu", 0),
                                        snakemake.params.processes, worker_module, log)
    if status:
        sys.exit(status)
    return nproc


__all__ = ["run_training_rule", "training_spec"]
