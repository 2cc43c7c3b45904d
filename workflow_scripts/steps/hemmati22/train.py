"""Rule `hemmati22_train`: train one GAN of the study (DCGAN or SR-GAN, 1 or 7 bands) on the training region.

Preemption (SIGTERM/SIGUSR1 from SLURM) writes a checkpoint and exits with PREEMPTED_EXIT_CODE; the rule's
retries rerun the job, which resumes from the checkpoint.

Several GPUs: when the job was given more than one (``resources: gpu``, e.g. ``--set-resources
hemmati22_train:gpu=3``), or ``hemmati22.resources.processes`` asks for N processes (CPU processes too: that
is how the tests run it), this adapter does not train itself: it writes the job's inputs and parameters to a
JSON spec, starts ``torchrun`` with one worker per GPU running this file as a module (``python -m
workflow_scripts.steps.hemmati22.train --spec spec.json``), forwards SIGTERM/SIGUSR1 to it, and waits. Each worker
reads the data, joins the process group (:func:`workflow_scripts.train.distributed.init_from_env`) and calls the same
training function; ``training.train`` then runs data-parallel (DistributedDataParallel) and only rank 0 writes
files. Rank 0 reports its result in a JSON file, from which the adapter takes its exit status (0, or 75 after a
pre-emption), so a multi-GPU job retries and resumes exactly like a single-process one.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import torch

from workflow_scripts.train import distributed
from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.studies.hemmati22.gans import augment, fit_scaling, train_gan
from workflow_scripts.studies.hemmati22.detect import study_bands
from workflow_scripts.errors import PipelineError
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.surveys import get_survey
from workflow_scripts.train.loop import PREEMPTED_EXIT_CODE, TrainResult

WORKER_MODULE = "workflow_scripts.steps.hemmati22.train"


def job_spec(snakemake: Any) -> dict[str, Any]:
    """Everything the training needs from the Snakemake job, as plain JSON-able data."""
    return {
        "name": snakemake.wildcards.model,
        "model": dict(snakemake.params.model),
        "study": dict(snakemake.params.study),
        "seed": snakemake.params.seed,
        "out_dir": snakemake.params.out_dir,
        "train_hi": snakemake.input.train_hi,
        "train_lo": snakemake.input.train_lo,
        "scaling": snakemake.output.scaling,
        "device": snakemake.config["device"],
        "config": snakemake.config,
        "threads": max(1, min(snakemake.threads, os.cpu_count() or 1)),
        "log": snakemake.log[0] if len(snakemake.log) else None,
    }


def train_model(spec: dict[str, Any], log: logging.Logger, is_main: bool = True) -> TrainResult:
    """Read the training cutouts, fit the scalings (rank 0 writes them), train."""
    study, model, name = spec["study"], spec["model"], spec["name"]
    survey = get_survey(spec["config"], study["survey"])
    bands = study_bands(survey, study, model["bands"])
    hi_set, lo_set = read_cutouts(spec["train_hi"]), read_cutouts(spec["train_lo"])
    idx = [hi_set.band_index(b) for b in bands]
    hi, lo = augment([hi_set.cube[:, idx], lo_set.cube[:, idx]], study["augment"])
    scalings = {"hi": fit_scaling(hi), "lo": fit_scaling(lo)}
    log.info("training %s (%s, bands %s) on %d images (%d cutouts x %d), device %s", name, model["kind"],
             ",".join(bands), len(hi), hi_set.n, study["augment"], spec["device"])
    if is_main:
        with atomic_path(spec["scaling"]) as tmp:
            tmp.write_text(json.dumps({"bands": bands, **{k: v.to_dict() for k, v in scalings.items()}}, indent=2))
    result = train_gan(model, hi, lo if model["kind"] == "srgan" else None, scalings, spec["seed"],
                       spec["device"], spec["out_dir"], progress=is_main)
    log.info("%s: epochs %d, %.1f images/s, resumed=%s", name, result.epochs_done, result.images_per_second or 0,
             result.resumed)
    return result


def main(snakemake: Any, log: logging.Logger) -> None:
    spec = job_spec(snakemake)
    configured = snakemake.config["hemmati22"]["resources"].get("processes")
    nproc = distributed.processes_for(snakemake.resources.get("gpu", 0) or 0, configured)
    if nproc == 1:
        torch.set_num_threads(spec["threads"])
        result = train_model(spec, log)
        preempted = result.preempted
        signum = result.signal
    else:
        report = launch_workers(spec, nproc, log)
        preempted, signum = report["preempted"], report["signal"]
    if preempted:
        log.warning("preempted by signal %s: checkpoint written, exiting for a retry", signum)
        sys.exit(PREEMPTED_EXIT_CODE)


def launch_workers(spec: dict[str, Any], nproc: int, log: logging.Logger) -> dict[str, Any]:
    """Train in ``nproc`` torchrun workers; return rank 0's report (completed, preempted, signal, ...)."""
    threads = max(1, spec["threads"] // nproc)
    with tempfile.TemporaryDirectory(prefix="genastro-ddp-") as tmp:
        spec_path, report_path = Path(tmp) / "spec.json", Path(tmp) / "report.json"
        spec_path.write_text(json.dumps({**spec, "threads": threads, "report": str(report_path)}, default=str))
        log.info("training %s data-parallel in %d processes (%d threads each)", spec["name"], nproc, threads)
        for handler in logging.getLogger().handlers:  # rank 0 appends to the rule's log file: so do we from now on
            if isinstance(handler, logging.FileHandler):
                handler.mode = "a"
                handler.close()  # reopened, in append mode, by the next message
        rc = distributed.launch(nproc, WORKER_MODULE, ["--spec", str(spec_path)], threads_per_process=threads)
        report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is None or (rc != 0 and not report.get("preempted")):
        raise PipelineError(f"training {spec['name']}: the {nproc} torchrun workers failed (exit status {rc}); "
                            "their messages are in the job's output above")
    log.info("%s: %d processes, epochs %d, resumed=%s", spec["name"], nproc, report["epochs_done"], report["resumed"])
    return report


def worker_main(argv: list[str] | None = None) -> int:
    """One torchrun worker: ``python -m workflow_scripts.steps.hemmati22.train --spec spec.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    log = logging.getLogger("genastro.hemmati22_train")
    torch.set_num_threads(int(spec["threads"]))
    try:
        result = train_model(spec, log, is_main=ctx.is_main)
        if ctx.is_main:
            distributed.write_json_atomic(spec["report"], {
                "completed": result.completed, "preempted": result.preempted, "signal": result.signal,
                "epochs_done": result.epochs_done, "resumed": result.resumed, "world_size": ctx.world_size})
    except PipelineError as exc:
        log.error("%s", exc)
        return 1
    finally:
        distributed.shutdown()
    return PREEMPTED_EXIT_CODE if result.preempted else 0


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
elif __name__ == "__main__":
    sys.exit(worker_main())
