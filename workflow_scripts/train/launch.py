"""The job side of a training rule: train in this process, or relaunch under torchrun with one worker per GPU, and
turn the outcome into the step's exit status (0, or :data:`PREEMPTED_EXIT_CODE` after a pre-emption so that
Snakemake's ``retries`` rerun the job, which resumes from its checkpoint).

A training step adapter provides two things: a JSON-able *spec* of its job (inputs, parameters, and the keys below)
and a function ``train_fn(spec, log, is_main) -> TrainResult`` that reads the data and calls the loop. Then::

    status, nproc = run_training(train_fn, spec, gpus, processes, WORKER_MODULE, log)   # in the rule script
    distributed.exit_worker(worker_main(train_fn))                      # when run as WORKER_MODULE (python -m)

With ``nproc > 1``, :func:`run_job` writes the spec to a temporary JSON file, starts ``torchrun`` running
``python -m WORKER_MODULE --spec spec.json`` (SIGTERM/SIGUSR1 forwarded, see :func:`distributed.launch`) and waits;
each worker (:func:`worker_main`) joins the process group and calls the same ``train_fn``, rank 0 appends to the
rule's log and writes a small report, from which the launcher takes its exit status.

Spec keys read here: ``name`` (for messages), ``device``, ``threads`` (CPU threads of the job), ``log`` (the rule's
log file or None).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from workflow_scripts.errors import PipelineError
from workflow_scripts.train import distributed
from workflow_scripts.train.loop import TrainResult
from workflow_scripts.train.signals import PREEMPTED_EXIT_CODE

#: ``(spec, log, is_main) -> TrainResult``: what one process of a training job does
TrainFn = Callable[[Mapping[str, Any], logging.Logger, bool], TrainResult]
#: the report rank 0 writes for the launcher
REPORT_KEYS = ("completed", "preempted", "signal", "epochs_done", "resumed")


def exit_status(preempted: bool) -> int:
    """The step's exit status: :data:`PREEMPTED_EXIT_CODE` after a pre-emption (checkpoint written), else 0."""
    return PREEMPTED_EXIT_CODE if preempted else 0


def run_job(train_fn: TrainFn, spec: Mapping[str, Any], nproc: int, worker_module: str,
            log: logging.Logger) -> int:
    """Train the job in this process (``nproc == 1``) or in ``nproc`` torchrun workers running ``worker_module``;
    return the step's exit status (:func:`exit_status`). Failed workers raise a :class:`PipelineError`."""
    if nproc == 1:
        torch.set_num_threads(int(spec["threads"]))
        result = train_fn(spec, log, True)
        preempted, signum = result.preempted, result.signal
    else:
        report = launch_workers(spec, nproc, worker_module, log)
        preempted, signum = bool(report["preempted"]), report["signal"]
    if preempted:
        log.warning("preempted by signal %s: checkpoint written, exiting for a retry", signum)
    return exit_status(preempted)


def run_training(train_fn: TrainFn, spec: Mapping[str, Any], gpus: int, processes: int | None, worker_module: str,
                 log: logging.Logger) -> tuple[int, int]:
    """A training rule's job: as many processes as :func:`distributed.processes_for` gives for the job's ``gpus``
    and the configured ``processes``, then :func:`run_job`. Returns ``(exit status, processes)``."""
    nproc = distributed.processes_for(int(gpus or 0), processes)
    return run_job(train_fn, spec, nproc, worker_module, log), nproc


def launch_workers(spec: Mapping[str, Any], nproc: int, worker_module: str, log: logging.Logger) -> dict[str, Any]:
    """Train in ``nproc`` torchrun workers; return rank 0's report (completed, preempted, signal, ...)."""
    threads = max(1, int(spec["threads"]) // nproc)
    with tempfile.TemporaryDirectory(prefix="genastro-ddp-") as tmp:
        spec_path, report_path = Path(tmp) / "spec.json", Path(tmp) / "report.json"
        spec_path.write_text(json.dumps({**spec, "threads": threads, "report": str(report_path)}, default=str))
        log.info("training %s data-parallel in %d processes (%d threads each)", spec["name"], nproc, threads)
        for handler in logging.getLogger().handlers:  # rank 0 appends to the rule's log file: so do we from now on
            if isinstance(handler, logging.FileHandler):
                handler.mode = "a"
                handler.close()  # reopened, in append mode, by the next message
        rc = distributed.launch(nproc, worker_module, ["--spec", str(spec_path)], threads_per_process=threads)
        report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is None or (rc != 0 and not report.get("preempted")):
        raise PipelineError(f"training {spec['name']}: the {nproc} torchrun workers failed (exit status {rc}); "
                            "their messages are in the job's output above")
    log.info("%s: %d processes, epochs %d, resumed=%s", spec["name"], nproc, report["epochs_done"], report["resumed"])
    return report


def worker_main(train_fn: TrainFn, argv: Sequence[str] | None = None, logger: str = "genastro.train") -> int:
    """One torchrun worker (``python -m WORKER_MODULE --spec spec.json``); returns its exit status."""
    parser = argparse.ArgumentParser(description="one worker of a data-parallel training job")
    parser.add_argument("--spec", required=True, help="JSON written by the rule's adapter")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    ctx = distributed.init_from_env(spec["device"])
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if ctx.is_main and spec.get("log"):
        handlers.append(logging.FileHandler(spec["log"], mode="a"))
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, handlers=handlers, force=True,
                        format=f"%(asctime)s rank{ctx.rank}/{ctx.world_size} %(name)s %(levelname)s %(message)s")
    logging.captureWarnings(True)
    log = logging.getLogger(logger)
    torch.set_num_threads(int(spec["threads"]))
    try:
        result = train_fn(spec, log, ctx.is_main)
        if ctx.is_main:
            distributed.write_json_atomic(spec["report"], {**{k: getattr(result, k) for k in REPORT_KEYS},
                                                           "world_size": ctx.world_size})
    except PipelineError as exc:
        log.error("%s", exc)
        return 1
    finally:
        distributed.shutdown()
    return exit_status(result.preempted)


__all__ = ["REPORT_KEYS", "TrainFn", "exit_status", "launch_workers", "run_job", "run_training", "worker_main"]
