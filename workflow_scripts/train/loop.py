"""One training loop for every model of the pipeline: GANs (DCGAN, SR-GAN 1 and 7 bands, later pix2pix and a
relativistic-average SGAN) and likelihood models (PixelCNN). What is trained, and how one step updates it, is an
*objective* (:mod:`workflow_scripts.train.objectives`); everything else is here, driven by :class:`TrainConfig`:

* **Seeds everything** (python ``random``, numpy, torch) from ``cfg.seed``, then (re)initialises the objective's
  modules (``cfg.reinit``; the GAN pair: the DCGAN N(0, 0.02) scheme), so two runs with the same seed start from
  the same weights whatever the caller's RNG did before.
* **Data order is a pure function of (seed, epoch)**: epoch ``e`` shuffles with a ``torch.Generator`` seeded from
  ``(seed, e)``; nothing in the loop draws from the global RNG except the objective's step (noise vectors), whose
  state is checkpointed. A run can therefore stop anywhere (even mid-epoch) and resume exactly.
* **State by name**: the objective's modules, their optimisers, one grad scaler per optimiser and the weight
  average of the exported module are dicts keyed by the names the objective gives them; so are the checkpoint's
  entries (:mod:`.checkpoint`, format version 2; version-1 GAN checkpoints still resume).
* **Learning rate** (``cfg.lr_schedule``): constant, or a cosine or linear decay to 0 (:func:`lr_factor`), set
  on every optimiser before each step as a function of the step alone, so a resumed run follows it exactly.
* **Device** ``auto``: cuda when present, else cpu. Mixed precision (``torch.autocast`` fp16 + one ``GradScaler``
  per optimiser) on cuda only. ``deterministic``: ``torch.use_deterministic_algorithms(True)`` on cpu, cuDNN
  deterministic kernels on cuda (bitwise reproducibility is promised on cpu only). Global flags are restored on exit.
* **Outputs in** ``out_dir``: ``losses.csv`` (one row per epoch: epoch, steps, images, the means over the epoch's
  steps of the objective's ``loss_columns``, seconds, images/s) and ``losses.png`` (the objective's
  ``plot_columns`` vs epoch), both rewritten after every epoch; ``checkpoint.pt`` written atomically (temporary
  file in the same directory, fsync, ``os.replace``) every ``checkpoint_every_epochs`` epochs and/or
  ``checkpoint_every_seconds``; the exported module at the end (``generator.pt`` for GANs, ``model.pt`` for a
  likelihood model; see :func:`workflow_scripts.train.inference.load_model`).
* **Resume** (``resume=True``, the default): if ``checkpoint.pt`` exists and was written by the same training set-up
  (objective, architectures, dataset, seed, batch size, the objective's options ...; the epoch count may grow),
  training continues from it; the final weights equal those of an uninterrupted run bit for bit on cpu.
  A checkpoint from a different set-up is moved aside (``checkpoint.<time>.stale.pt``, never overwritten) with
  a warning, and the run starts afresh.
* **Pre-emption** (:mod:`.signals`): SIGTERM and SIGUSR1 only set a flag; the loop finishes the current step, writes
  a checkpoint and returns a :class:`TrainResult` with ``completed=False, preempted=True``. Step adapters then exit
  with :data:`PREEMPTED_EXIT_CODE` (75; :mod:`.launch` does it) so that Snakemake's ``retries`` rerun the job, which
  resumes. Previous signal handlers are restored when ``train`` returns.
* **Several processes** (torchrun, one per GPU; see :mod:`.distributed`): when the default process group is
  initialised, each global batch is split over the ranks, every module of the objective is wrapped in
  DistributedDataParallel, losses are all-reduced, a signal on any rank stops all at the same step, and only
  rank 0 writes files.
"""

from __future__ import annotations

import math

import csv
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from workflow_scripts import __version__
from workflow_scripts.code_version import modules_version
from workflow_scripts.errors import ConfigError, PipelineError
from workflow_scripts.io import atomic_path
from workflow_scripts.models import architecture
from workflow_scripts.train import distributed
from workflow_scripts.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
    state_dict_cpu,
)
from workflow_scripts.train.inference import as_tensor, resolve_device, save_model
from workflow_scripts.train.objectives.base import (
    Objective,
    StepContext,
    module_fingerprint,
)
from workflow_scripts.train.signals import (
    CALLBACK_STOP,
    PREEMPTED_EXIT_CODE,
    Preempted,
    StopFlag,
    worker_ignores_stop_signals,
)

log = logging.getLogger(__name__)

#: the GAN objectives' exported file (kept for callers of the GAN-only loop)
GENERATOR_NAME = "generator.pt"
LOSSES_CSV = "losses.csv"
LOSSES_PNG = "losses.png"
#: losses.csv columns around an objective's loss columns
LEADING_COLUMNS = ("epoch", "steps", "images")
TRAILING_COLUMNS = ("seconds", "images_per_s")
#: progress-bar refresh: every this many steps (and at the end of an epoch)
PROGRESS_EVERY_STEPS = 10


def csv_columns(objective: Objective) -> tuple[str, ...]:
    """The columns of an objective's losses.csv."""
    return (*LEADING_COLUMNS, *objective.loss_columns, *TRAILING_COLUMNS)


# ------------------------------------------------------------------------------------------------ config
#: the learning-rate schedules of :class:`TrainConfig` (``lr_schedule``)
LR_SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(schedule: str, done: float) -> float:
    """The factor on every optimiser's learning rate when the fraction ``done`` (in [0, 1)) of the run's steps is
    behind it. ``constant``: 1. ``cosine``: (1 + cos(pi done)) / 2, from 1 to 0 over the run (Zanisi+21's code:
    cosine over its 10^6 steps). ``linear``: 1 for the first half, then linearly to 0 (pix2pix's reference code:
    ``n_epochs`` constant, ``n_epochs_decay`` linear)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    if schedule == "linear":
        return min(1.0, 2.0 * (1.0 - done))
    raise ConfigError(f"training: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


@dataclass
class TrainConfig:
    """Training hyper-parameters and run-time options (defaults: Hemmati+22's later runs)."""

    epochs: int = 500
    batch_size: int = 64
    #: learning rates of a GAN's generator and discriminator
    lr_g: float = 2e-4
    lr_d: float = 1e-5
    #: learning rate of a one-model objective (likelihood)
    lr: float = 1e-3
    #: Adam's betas, for every optimiser of the objective
    betas: tuple[float, float] = (0.8, 0.999)
    #: weight of the L1 pixel term in the generator loss of paired GANs; 0 = the paper's adversarial-only loss
    l1_weight: float = 0.0
    seed: int = 0
    #: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:N"
    device: str = "auto"
    #: mixed precision; used on cuda only
    amp: bool = True
    checkpoint_every_epochs: int = 1
    #: also checkpoint mid-epoch when this many seconds passed since the last checkpoint (None: never)
    checkpoint_every_seconds: float | None = None
    num_workers: int = 0
    deterministic: bool = True
    #: drop the last incomplete batch of each epoch (BatchNorm statistics on a tiny batch are noise)
    drop_last: bool = True
    #: re-initialise the objective's modules after seeding (GANs: N(0, 0.02)); False: keep the weights passed in,
    #: to fine-tune
    reinit: bool = True
    #: decay of an exponential moving average of the exported module's weights (a GAN's generator), written
    #: instead of the last step's weights (0 = off, the paper). The average is over ~1/(1 - decay) steps, with the usual
    #: warm-up min(decay, (1 + t) / (10 + t)) so the random initial weights do not linger in a short run.
    ema_decay: float = 0.0
    #: every optimiser's learning rate over the run (:func:`lr_factor`): constant (the default), cosine (to 0 over
    #: the run) or linear (constant for the first half, then linearly to 0)
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        try:
            self.betas = (float(self.betas[0]), float(self.betas[1]))
        except (TypeError, IndexError, ValueError):
            raise ConfigError(f"training: betas must be two numbers, got {self.betas!r}") from None
        checks = [
            (int(self.epochs) >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (int(self.batch_size) >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr_g > 0 and self.lr_d > 0 and self.lr > 0,
             f"learning rates must be > 0, got lr_g={self.lr_g} lr_d={self.lr_d} lr={self.lr}"),
            (all(0.0 <= b < 1.0 for b in self.betas), f"betas must lie in [0, 1), got {self.betas}"),
            (self.l1_weight >= 0, f"l1_weight must be >= 0, got {self.l1_weight}"),
            (int(self.checkpoint_every_epochs) >= 1,
             f"checkpoint_every_epochs must be >= 1, got {self.checkpoint_every_epochs}"),
            (self.checkpoint_every_seconds is None or self.checkpoint_every_seconds > 0,
             f"checkpoint_every_seconds must be > 0 or null, got {self.checkpoint_every_seconds}"),
            (int(self.num_workers) >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must lie in [0, 1), got {self.ema_decay}"),
            (self.lr_schedule in LR_SCHEDULES,
             f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"training: {msg}")
        self.epochs, self.batch_size, self.seed = int(self.epochs), int(self.batch_size), int(self.seed)
        self.lr_g, self.lr_d, self.lr = float(self.lr_g), float(self.lr_d), float(self.lr)
        self.l1_weight = float(self.l1_weight)
        self.checkpoint_every_epochs, self.num_workers = int(self.checkpoint_every_epochs), int(self.num_workers)
        self.ema_decay = float(self.ema_decay)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a config-file mapping; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"training: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(values))

    def fingerprint(self) -> dict[str, Any]:
        """The loop's options that change the trained weights (a checkpoint is resumed only when these match, and
        those the objective reads: :meth:`Objective.config_fingerprint`)."""
        keys = ["batch_size", "seed", "deterministic", "drop_last", "reinit"]
        if self.ema_decay:  # only when on, so checkpoints written before the option still resume
            keys.append("ema_decay")
        if self.lr_schedule != "constant":  # the rate at every step depends on the run's length: no extending
            keys += ["lr_schedule", "epochs"]
        return {k: getattr(self, k) for k in keys}


# ----------------------------------------------------------------------------------------------- results
@dataclass
class StepInfo:
    """Passed to the ``callback`` of :func:`train` after every optimisation step."""

    epoch: int  # 0-based epoch being trained
    step: int  # steps done in this epoch (1-based after the step)
    steps_per_epoch: int
    global_step: int
    #: what the objective's step returned (this rank's values, tensors)
    losses: Mapping[str, torch.Tensor]


@dataclass
class TrainResult:
    completed: bool
    out_dir: Path
    checkpoint_path: Path
    #: the exported module's file (None unless completed)
    model_path: Path | None
    device: str
    #: epoch (0-based) and step within it where this call started; (0, 0) for a fresh run
    start_epoch: int
    start_step: int
    resumed: bool
    epochs_done: int
    global_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = float("nan")
    preempted: bool = False
    signal: int | None = None

    @property
    def generator_path(self) -> Path | None:
        """A GAN's name for :attr:`model_path`."""
        return self.model_path

    def throughput(self) -> str:
        """This call's training speed in words: ``"812.3 images/s"``, or what happened when it trained nothing
        (a run resumed from the checkpoint of its last epoch has no speed to report, not ``nan images/s``)."""
        if math.isfinite(self.images_per_second):
            return f"{self.images_per_second:.1f} images/s"
        if self.resumed:
            return f"nothing left to train (resumed from the checkpoint after epoch {self.epochs_done})"
        return "no images trained"

    def raise_if_preempted(self) -> None:
        if self.preempted:
            raise Preempted(f"training in {self.out_dir} stopped by signal {self.signal} after epoch "
                            f"{self.epochs_done} (step {self.global_step}); checkpoint written, rerun to resume")


# ------------------------------------------------------------------------------------------------ helpers
def as_dataset(data: Any) -> Dataset:
    """A tensor / array (images), a tuple of them (pairs) or any map-style Dataset -> Dataset."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return TensorDataset(as_tensor(data))
    if isinstance(data, (tuple, list)):
        return TensorDataset(*[as_tensor(d) for d in data])
    raise TypeError(f"cannot train on a {type(data).__name__}; pass tensors, arrays or a torch Dataset")


def training_code_version(objective: Objective, ds: Dataset) -> str:
    """The version of the code a training runs (:func:`workflow_scripts.code_version.modules_version`): this loop,
    the objective's and its modules' classes, the dataset's class, and every module they import. In the checkpoint
    fingerprint, so that a rule run again after a change to that code trains again instead of resuming the old
    code's finished checkpoint (Snakemake reruns the job; the checkpoint is not one of its outputs)."""
    classes = [type(objective), *(type(m) for m in objective.modules.values()), type(ds)]
    return modules_version([__name__, *(c.__module__ for c in classes)])


def _dataset_fingerprint(ds: Dataset) -> dict[str, Any]:
    """Size and cheap content checks of a TensorDataset (what version-1 checkpoints hold); see
    :func:`dataset_fingerprint` for other datasets."""
    fp: dict[str, Any] = {"n": len(ds)}  # type: ignore[arg-type]
    if isinstance(ds, TensorDataset):
        # cheap content checks: the total, and the sum of squares of a strided sample. Summed by numpy, whose
        # pairwise summation does not depend on the thread count (torch's does: a job resumed with other
        # --cpus-per-task would otherwise see a "different" dataset and start again from scratch)
        fp["tensors"] = [{"shape": list(t.shape), "dtype": str(t.dtype),
                          "sum": sum(float(t[i:i + 256].cpu().numpy().astype(np.float64).sum())
                                     for i in range(0, len(t), 256)),
                          "sample": float(np.square(t.flatten()[:: max(1, t.numel() // 65536)].cpu().numpy()
                                                    .astype(np.float64)).sum())}
                         for t in ds.tensors]
    return fp


def dataset_fingerprint(ds: Dataset) -> dict[str, Any]:
    """What identifies the training data in a checkpoint: a TensorDataset by its content; any other dataset by
    its size, its class and, where it has one, its own ``fingerprint()`` (JSON-able; e.g. the files it reads and
    their sizes): without it a changed file of a custom dataset would be resumed as if it were the same data."""
    fp = _dataset_fingerprint(ds)
    if not isinstance(ds, TensorDataset):
        fp["class"] = type(ds).__qualname__
        own = getattr(ds, "fingerprint", None)
        if callable(own):
            fp["content"] = own()
    return fp


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the shuffling generator of ``epoch``: a function of (seed, epoch) only."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED]).generate_state(1, np.uint64)[0]
               & 0x7FFF_FFFF_FFFF_FFFF)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = True) -> list[list[int]]:
    """Index batches of ``epoch``: a permutation from a generator seeded by (seed, epoch), cut into batches."""
    gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=gen).tolist()
    stop = (n // batch_size) * batch_size if drop_last else n
    return [perm[i:i + batch_size] for i in range(0, stop, batch_size)]


def _iter_batches(ds: Dataset, batches: Sequence[Sequence[int]], cfg: TrainConfig, epoch: int,
                  device: torch.device) -> Iterator[Any]:
    if isinstance(ds, TensorDataset) and cfg.num_workers == 0:
        for idx in batches:  # fast path: one gather per tensor instead of per-item collation
            index = torch.as_tensor(idx)
            yield tuple(t[index] for t in ds.tensors)
        return
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) ^ 0x9E3779B9)  # worker seeds, not the global RNG
    loader = DataLoader(ds, batch_sampler=list(batches), num_workers=cfg.num_workers, generator=gen,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        worker_init_fn=worker_ignores_stop_signals if cfg.num_workers else None)
    yield from loader


def write_losses(out_dir: Path, history: Sequence[Mapping[str, float]], columns: Sequence[str],
                 curves: Mapping[str, str]) -> None:
    """Rewrite ``losses.csv`` (one row per epoch, ``columns``) and ``losses.png`` (``curves``: label -> column)
    from the full history, atomically."""
    with atomic_path(out_dir / LOSSES_CSV) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: (f"{row[k]:.8g}" if isinstance(row.get(k), float) else row.get(k))
                                 for k in columns})
    _plot_losses(out_dir / LOSSES_PNG, history, curves)


def _plot_losses(path: Path, history: Sequence[Mapping[str, float]], curves: Mapping[str, str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    epochs = [row["epoch"] for row in history]
    marker = "o" if len(history) < 30 else None
    for label, column in curves.items():
        ax.plot(epochs, [row[column] for row in history], label=label, marker=marker)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean over steps)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _batch_length(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])


# --------------------------------------------------------------------------------------------------- train
def train(objective: Objective, dataset: Any, cfg: TrainConfig, out_dir: str | Path, progress: bool = True, *,
          resume: bool = True, callback: Callable[[StepInfo], Any] | None = None) -> TrainResult:
    """Train ``objective`` on ``dataset``; see the module docstring.

    ``dataset``: image tensor/array, ``(inputs, targets)`` tensors/arrays, or any map-style Dataset yielding what
    the objective's step expects. ``callback(StepInfo)`` runs after every step; a truthy return value requests a
    stop exactly like SIGTERM (checkpoint, then return with ``completed=False``).

    Returns a :class:`TrainResult`; ``completed=False, preempted=True`` after a signal (call
    ``raise_if_preempted()`` or exit with :data:`PREEMPTED_EXIT_CODE`).
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    ddp = distributed.current()  # one process unless launched by torchrun
    device = ddp.device(resolve_device(cfg.device))
    amp = bool(cfg.amp and device.type == "cuda")
    ds = as_dataset(dataset)
    n = len(ds)  # type: ignore[arg-type]
    if n == 0:
        raise ConfigError("training: the training set is empty")
    if cfg.drop_last and n < cfg.batch_size:
        raise ConfigError(f"training: {n} training examples is fewer than one batch of {cfg.batch_size}; "
                          "lower batch_size or set drop_last: false")
    objective.check(cfg)
    if objective.export not in objective.modules:
        raise ConfigError(f"training: {objective.name} exports module {objective.export!r}, which it does not have "
                          f"(modules: {', '.join(objective.modules)})")
    try:  # the exported module is written at the end: know now that it can be, not after hours of training
        architecture(objective.modules[objective.export])
    except TypeError as exc:
        raise ConfigError(f"training: {objective.name} cannot write its {objective.export}: {exc}") from None
    ddp.check(cfg.batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    if ddp.is_main:
        remove_stale_temporaries(out_dir, (CHECKPOINT_NAME, objective.export_file, LOSSES_CSV, LOSSES_PNG))
    fingerprint = {"format_version": CHECKPOINT_VERSION,
                   "config": {**cfg.fingerprint(), **objective.config_fingerprint(cfg)},
                   **objective.fingerprint(), "dataset": dataset_fingerprint(ds),
                   "code": training_code_version(objective, ds)}
    legacy = objective.legacy(cfg, _dataset_fingerprint(ds))

    # ---- global flags, restored in `finally`
    prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    stop = StopFlag()
    stop.install()
    try:
        if cfg.deterministic and device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        elif device.type == "cuda":
            torch.backends.cudnn.deterministic = cfg.deterministic
            torch.backends.cudnn.benchmark = not cfg.deterministic
        return _run(objective, ds, n, cfg, out_dir, ckpt_path, device, amp, fingerprint, legacy, stop, progress,
                    resume, callback, ddp)
    finally:
        stop.restore()
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


def _run(objective: Objective, ds: Dataset, n: int, cfg: TrainConfig, out_dir: Path, ckpt_path: Path,
         device: torch.device, amp: bool, fingerprint: dict[str, Any], legacy: Any, stop: StopFlag, progress: bool,
         resume: bool, callback: Callable[[StepInfo], Any] | None,
         ddp: distributed.DistContext = distributed.SINGLE) -> TrainResult:
    modules = objective.modules
    state = (ddp.main_first(lambda: load_checkpoint(ckpt_path, fingerprint, legacy, cfg.epochs)
                            if ckpt_path.exists() else None) if resume else None)

    # the order of what follows is that of the RNG draws (initialisation, then nothing until the first step)
    seed_everything(cfg.seed)
    if state is None and cfg.reinit:
        objective.reset_parameters()
    for module in modules.values():
        module.to(device).train()
    optimizers = objective.optimizers(cfg)
    base_lrs = {name: [group["lr"] for group in opt.param_groups] for name, opt in optimizers.items()}
    ema = ({objective.export: weight_average(modules[objective.export], cfg.ema_decay)} if cfg.ema_decay else {})
    scalers = {name: torch.amp.GradScaler(device.type, enabled=amp) for name in optimizers}

    history: list[dict[str, float]] = []
    start_epoch = start_step = global_step = 0
    partial: dict[str, float] = {}
    if state is not None:
        missing = sorted((set(modules) - set(state["modules"])) | (set(optimizers) - set(state["optimizers"]))
                         | (set(ema) - set(state.get("ema") or {})))
        if missing:
            raise PipelineError(f"{ckpt_path}: no state for {', '.join(missing)}; delete it to train from scratch")
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name]["state_dict"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, avg in ema.items():
            avg.load_state_dict(state["ema"][name])
        for name, scaler in scalers.items():
            saved = (state.get("scalers") or {}).get(name)
            if amp and saved:
                scaler.load_state_dict(saved)
        set_rng_state(state["rng"])
        history = [dict(row) for row in state["history"]]
        start_epoch, start_step = int(state["epoch"]), int(state["step_in_epoch"])
        global_step = int(state["global_step"])
        partial = dict(state.get("partial") or {})
        ranks_rng = state.get("rng_ranks") or []
        if len(ranks_rng) == ddp.world_size:  # a multi-process run resumed by as many processes
            set_rng_state(ranks_rng[ddp.rank])
        else:
            ddp.diverge_rng(cfg.seed, global_step)
        log.info("resuming %s from %s: epoch %d, step %d", objective.name, ckpt_path, start_epoch, start_step)
        if history and ddp.is_main:
            _write_losses(out_dir, history, objective)  # drops rows of epochs trained after this checkpoint
    else:
        ddp.diverge_rng(cfg.seed)  # other ranks draw other noise; rank 0 keeps the single-process stream
    resumed = state is not None
    del state
    ctx = StepContext(device=device, amp=amp, config=cfg, modules=ddp.wrap_modules(modules), optimizers=optimizers,
                      scalers=scalers, parameters={k: list(m.parameters()) for k, m in modules.items()})
    columns = objective.loss_columns
    t_start = time.perf_counter()
    images_seen = 0
    last_ckpt = time.monotonic()

    def checkpoint(epoch_done: int, step: int, sums: Mapping[str, float]) -> None:
        nonlocal last_ckpt
        rngs = ddp.gather(rng_state())  # every rank's (collective: all ranks checkpoint together)
        if not ddp.is_main:
            last_ckpt = time.monotonic()
            return
        save_atomic({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "pipeline_version": __version__,
            "objective": objective.name, "fingerprint": fingerprint, "config": dataclasses.asdict(cfg),
            "modules": {name: {**module_fingerprint(m), "state_dict": state_dict_cpu(m)} for name, m in modules.items()},
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "scalers": {name: scaler.state_dict() for name, scaler in scalers.items()},
            "ema": {name: state_dict_cpu(avg) for name, avg in ema.items()},
            "epoch": epoch_done, "step_in_epoch": step, "global_step": global_step,
            "partial": dict(sums), "rng": rngs[0], "history": history,
            **({"rng_ranks": rngs, "world_size": ddp.world_size} if ddp.enabled else {}),
        }, ckpt_path)
        last_ckpt = time.monotonic()

    def result(completed: bool, model_path: Path | None) -> TrainResult:
        seconds = time.perf_counter() - t_start
        return TrainResult(
            completed=completed, out_dir=out_dir, checkpoint_path=ckpt_path, model_path=model_path,
            device=str(device), start_epoch=start_epoch, start_step=start_step, resumed=resumed,
            epochs_done=len(history), global_step=global_step, history=history, seconds=seconds,
            images_per_second=images_seen / seconds if seconds > 0 and images_seen else float("nan"),
            preempted=not completed and stop.signum is not None, signal=stop.signum)

    def rate_at(epoch: int, step: int, steps: int) -> float:
        """The schedule's factor at ``step`` of an epoch of ``steps``: set before each step, logged per epoch."""
        return lr_factor(cfg.lr_schedule, (epoch + step / steps) / cfg.epochs)

    isatty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    for epoch in range(start_epoch, cfg.epochs):
        batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch, cfg.drop_last)
        first = start_step if epoch == start_epoch else 0
        sums = {k: torch.tensor(float(partial.get(k, 0.0)) if epoch == start_epoch else 0.0,
                                dtype=torch.float64, device=device) for k in columns}
        epoch_seconds = float(partial.get("seconds", 0.0)) if epoch == start_epoch else 0.0
        t_epoch = time.perf_counter()
        step_in_epoch = first
        bar = _progress_bar(progress and ddp.is_main, len(batches), first, f"epoch {epoch + 1}/{cfg.epochs}",
                            isatty)
        for batch in _iter_batches(ds, ddp.shard(batches[first:]), cfg, epoch, device):
            if cfg.lr_schedule != "constant":  # a function of the step alone, so a resumed run follows it exactly
                factor = rate_at(epoch, step_in_epoch, len(batches))
                for name, opt in optimizers.items():
                    for group, base in zip(opt.param_groups, base_lrs[name]):
                        group["lr"] = base * factor
            losses = objective.step(batch, ctx)
            for name, avg in ema.items():
                avg.update_parameters(modules[name])
            try:
                for k in columns:
                    sums[k] += losses[k].detach().double()
            except KeyError as exc:
                raise PipelineError(f"training: {objective.name}'s step returned no {exc.args[0]!r} "
                                    f"(its loss columns: {', '.join(columns)})") from None
            step_in_epoch += 1
            global_step += 1
            images_seen += _batch_length(batch)
            if bar is not None:
                bar.update(1)
                if step_in_epoch % PROGRESS_EVERY_STEPS == 0 or step_in_epoch == len(batches):
                    bar.set_postfix({k: f"{float(losses[k]):.3f}" for k in objective.progress_columns},
                                    refresh=False)
            if callback is not None and callback(StepInfo(epoch, step_in_epoch, len(batches), global_step, losses)):
                stop.signum = stop.signum or CALLBACK_STOP
            stopping, due = ddp.sync_stop(stop, cfg.checkpoint_every_seconds is not None
                                          and step_in_epoch < len(batches)
                                          and time.monotonic() - last_ckpt >= cfg.checkpoint_every_seconds)
            if stopping:
                break
            if due:
                checkpoint(epoch, step_in_epoch,
                           _sums_to_floats(ddp.mean(sums), epoch_seconds + time.perf_counter() - t_epoch))
        if bar is not None:
            bar.close()
        epoch_seconds += time.perf_counter() - t_epoch
        if step_in_epoch < len(batches):  # stopped mid-epoch
            checkpoint(epoch, step_in_epoch, _sums_to_floats(ddp.mean(sums), epoch_seconds))
            log.warning("stopped by signal %s at epoch %d step %d/%d; checkpoint written to %s", stop.signum,
                        epoch + 1, step_in_epoch, len(batches), ckpt_path)
            return result(False, None)
        steps = len(batches)
        means = {k: float(v) / steps for k, v in _sums_to_floats(ddp.mean(sums), 0.0).items() if k in columns}
        images = steps * cfg.batch_size if cfg.drop_last else sum(len(b) for b in batches)
        history.append({"epoch": epoch + 1, "steps": steps, "images": images, **means, "seconds": epoch_seconds,
                        "images_per_s": images / epoch_seconds if epoch_seconds > 0 else float("nan")})
        if ddp.is_main:
            _write_losses(out_dir, history, objective)
        rate = ("" if cfg.lr_schedule == "constant" else
                f", learning rate x{rate_at(epoch, steps - 1, steps):.3g} "
                f"({cfg.lr_schedule}) at the last step")
        log.info("epoch %d/%d: %s (%.1f s, %.1f images/s%s)", epoch + 1, cfg.epochs,
                 " ".join(f"{k} {means[k]:.4f}" for k in columns), epoch_seconds, history[-1]["images_per_s"], rate)
        done = epoch + 1
        stopping, = ddp.sync_stop(stop)  # a signal during the epoch's bookkeeping: all ranks must agree
        if stopping or done % cfg.checkpoint_every_epochs == 0 or done == cfg.epochs:
            checkpoint(done, 0, {})
        if stopping:
            log.warning("stopped by signal %s after epoch %d; checkpoint written to %s", stop.signum, done, ckpt_path)
            return result(False, None)

    model_path = out_dir / objective.export_file
    if ddp.is_main:
        exported = ema[objective.export].module if ema else modules[objective.export]
        save_model(exported, model_path, meta={"objective": objective.name, "epochs": len(history), "seed": cfg.seed,
                                               "global_step": global_step, "ema_decay": cfg.ema_decay,
                                               "lr_schedule": cfg.lr_schedule})
    ddp.barrier()
    return result(True, model_path)


def _write_losses(out_dir: Path, history: Sequence[Mapping[str, float]], objective: Objective) -> None:
    write_losses(out_dir, history, csv_columns(objective), objective.plot_columns)


def weight_average(module: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``module``'s parameters and buffers (BatchNorm statistics too).

    torch's ``AveragedModel`` with a warm-up: update t (from 0) moves the average by 1 - min(decay, (1 + t) /
    (10 + t)) towards the current weights, so early updates follow the network closely and a short run is not
    dragged towards its random initial weights.
    """
    decay = float(decay)

    def ema(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        # called once per (device, dtype) group of tensors; integer buffers (BatchNorm's batch count) are copied
        if not averaged[0].is_floating_point():
            for a, c in zip(averaged, current):
                a.copy_(c)
            return
        weight = 1.0 - min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        for a, c in zip(averaged, current):
            a.lerp_(c, weight)

    return torch.optim.swa_utils.AveragedModel(module, multi_avg_fn=ema, use_buffers=True)


def _sums_to_floats(sums: Mapping[str, torch.Tensor], seconds: float) -> dict[str, float]:
    out = {k: float(v) for k, v in sums.items()}
    out["seconds"] = float(seconds)
    return out


def _progress_bar(enabled: bool, total: int, initial: int, desc: str, isatty: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=isatty, dynamic_ncols=True,
                mininterval=0.5 if isatty else 30.0, file=sys.stderr)



__all__ = [
    "CHECKPOINT_NAME",
    "GENERATOR_NAME",
    "LOSSES_CSV",
    "LOSSES_PNG",
    "LR_SCHEDULES",
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "as_dataset",
    "csv_columns",
    "dataset_fingerprint",
    "epoch_batches",
    "lr_factor",
    "train",
    "training_code_version",
    "weight_average",
    "write_losses",
]
