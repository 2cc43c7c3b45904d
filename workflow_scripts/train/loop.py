"""One training loop for every GAN of the pipeline (DCGAN, SR-GAN 1 and 7 bands, later pix2pix).

What a run does, driven by :class:`TrainConfig`:

* **Seeds everything** (python ``random``, numpy, torch) from ``cfg.seed``, then (re)initialises both networks with
  the DCGAN N(0, 0.02) scheme (``cfg.reinit``), so two runs with the same seed start from the same weights whatever
  the caller's RNG did before.
* **Data order is a pure function of (seed, epoch)**: epoch ``e`` shuffles with a ``torch.Generator`` seeded from
  ``(seed, e)``; nothing in the loop draws from the global RNG except the task itself (noise vectors), whose state is
  checkpointed. A run can therefore stop anywhere (even mid-epoch) and resume exactly.
* **Loss**: the paper's adversarial binary cross-entropy (non-saturating generator loss), computed on discriminator
  logits with ``BCEWithLogitsLoss`` (same loss as sigmoid + BCE, numerically stable, AMP-safe). Conditional tasks
  add ``cfg.l1_weight * L1(G(x), y)`` to the generator loss; ``l1_weight = 0`` is the paper's adversarial-only loss.
  D loss = BCE(D(real), 1) + BCE(D(fake), 0) (summed, as in the DCGAN reference); G loss = BCE(D(G(.)), 1) + L1 term.
* **Device** ``auto``: cuda when present, else cpu. Mixed precision (``torch.autocast`` fp16 + one ``GradScaler``
  per network) on cuda only. ``deterministic``: ``torch.use_deterministic_algorithms(True)`` on cpu, cuDNN
  deterministic kernels on cuda (bitwise reproducibility is promised on cpu only). Global flags are restored on exit.
* **Outputs in** ``out_dir``: ``losses.csv`` (one row per epoch: means over the epoch's steps) and ``losses.png``
  (G and D loss vs epoch), both rewritten after every epoch; ``checkpoint.pt`` (models, optimisers, scalers,
  epoch, position within the epoch, RNG states, loss history) written atomically (temporary file in the same
  directory, fsync, ``os.replace``) every ``checkpoint_every_epochs`` epochs and/or ``checkpoint_every_seconds``;
  ``generator.pt`` at the end (state dict + architecture, see :func:`load_generator`).
* **Resume** (``resume=True``, the default): if ``checkpoint.pt`` exists and was written by the same training set-up
  (task, architectures, dataset shape, seed, batch size, learning rates, betas, l1 weight ...; the epoch count may
  grow), training continues from it; the final weights equal those of an uninterrupted run bit for bit on cpu.
  A checkpoint from a different set-up is moved aside (``checkpoint.<time>.stale.pt``, never overwritten) with
  a warning, and the run starts afresh.
* **Pre-emption**: SIGTERM and SIGUSR1 (what SLURM sends at the time limit, on pre-emption or with
  ``--signal=B:USR1@120``) only set a flag; the loop finishes the current step, writes a checkpoint and returns a
  :class:`TrainResult` with ``completed=False, preempted=True``. Step adapters should then exit with
  :data:`PREEMPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``: "try again") -- non-zero so that Snakemake does not look for
  the missing ``generator.pt`` and, with ``--retries``, reruns the job, which resumes. ``result.raise_if_preempted()``
  raises :class:`Preempted` carrying that exit code. Previous signal handlers are restored when ``train`` returns.
* **Several processes** (torchrun, one per GPU; see :mod:`.distributed`): when the default process group is
  initialised, each global batch is split over the ranks, both networks are wrapped in DistributedDataParallel,
  losses are all-reduced, a signal on any rank stops all at the same step, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from workflow_scripts import __version__
from workflow_scripts.train import distributed
from workflow_scripts.errors import ConfigError, PipelineError
from workflow_scripts.io import atomic_path
from workflow_scripts.models import architecture, build_model, init_weights

log = logging.getLogger(__name__)

#: exit status for a step whose training was pre-empted after writing a checkpoint (sysexits EX_TEMPFAIL)
PREEMPTED_EXIT_CODE = 75
#: signals that request a clean stop (SLURM: SIGTERM at the time limit / on pre-emption, SIGUSR1 via --signal)
STOP_SIGNALS: tuple[int, ...] = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None))
                                      if s is not None)

CHECKPOINT_NAME = "checkpoint.pt"
GENERATOR_NAME = "generator.pt"
LOSSES_CSV = "losses.csv"
LOSSES_PNG = "losses.png"
CHECKPOINT_FORMAT = "genastro-gan-checkpoint"
GENERATOR_FORMAT = "genastro-generator"
FORMAT_VERSION = 1

#: columns of losses.csv; loss columns are means over the epoch's steps
LOSS_COLUMNS = ("epoch", "steps", "images", "loss_d", "loss_g", "loss_g_adv", "loss_l1", "d_real", "d_fake",
                "seconds", "images_per_s")
_SUM_KEYS = ("loss_d", "loss_g", "loss_g_adv", "loss_l1", "d_real", "d_fake")


# ------------------------------------------------------------------------------------------------ config
@dataclass
class TrainConfig:
    """Training hyper-parameters and run-time options (defaults: Hemmati+22's later runs)."""

    epochs: int = 500
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 1e-5
    betas: tuple[float, float] = (0.8, 0.999)
    #: weight of the L1 pixel term in the generator loss of conditional tasks; 0 = the paper's adversarial-only loss
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
    #: re-initialise both networks with N(0, 0.02) after seeding (False: keep the weights passed in, to fine-tune)
    reinit: bool = True
    #: decay of an exponential moving average of the generator's weights, written as ``generator.pt`` instead of
    #: the last step's weights (0 = off, the paper). The average is over ~1/(1 - decay) steps, with the usual
    #: warm-up min(decay, (1 + t) / (10 + t)) so the random initial weights do not linger in a short run.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        try:
            self.betas = (float(self.betas[0]), float(self.betas[1]))
        except (TypeError, IndexError, ValueError):
            raise ConfigError(f"training: betas must be two numbers, got {self.betas!r}") from None
        checks = [
            (int(self.epochs) >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (int(self.batch_size) >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr_g > 0 and self.lr_d > 0, f"learning rates must be > 0, got lr_g={self.lr_g} lr_d={self.lr_d}"),
            (all(0.0 <= b < 1.0 for b in self.betas), f"betas must lie in [0, 1), got {self.betas}"),
            (self.l1_weight >= 0, f"l1_weight must be >= 0, got {self.l1_weight}"),
            (int(self.checkpoint_every_epochs) >= 1,
             f"checkpoint_every_epochs must be >= 1, got {self.checkpoint_every_epochs}"),
            (self.checkpoint_every_seconds is None or self.checkpoint_every_seconds > 0,
             f"checkpoint_every_seconds must be > 0 or null, got {self.checkpoint_every_seconds}"),
            (int(self.num_workers) >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must lie in [0, 1), got {self.ema_decay}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"training: {msg}")
        self.epochs, self.batch_size, self.seed = int(self.epochs), int(self.batch_size), int(self.seed)
        self.lr_g, self.lr_d, self.l1_weight = float(self.lr_g), float(self.lr_d), float(self.l1_weight)
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
        """The options that change the trained weights (a checkpoint is resumed only when these match)."""
        keys = ["batch_size", "lr_g", "lr_d", "betas", "l1_weight", "seed", "deterministic", "drop_last", "reinit"]
        if self.ema_decay:  # only when on, so checkpoints written before the option still resume
            keys.append("ema_decay")
        return {k: getattr(self, k) for k in keys}


# ------------------------------------------------------------------------------------------------- tasks
class GANTask(ABC):
    """What differs between GANs: how a batch becomes (generator input, real image, discriminator condition).

    The discriminator is always called as ``discriminator(image, condition)`` and returns logits.
    """

    name: ClassVar[str] = "gan"
    #: whether an L1 term between G(input) and the real image makes sense (paired data)
    paired: ClassVar[bool] = False

    def __init__(self, generator: nn.Module, discriminator: nn.Module) -> None:
        self.generator = generator
        self.discriminator = discriminator

    @abstractmethod
    def unpack(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(generator input, real image, discriminator condition or None)`` on ``device``."""

    def discriminate(self, image: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.discriminator(image, condition)

    def observed(self, fake: torch.Tensor) -> torch.Tensor:
        """What the discriminator is shown of a generated image (default: the image itself)."""
        return fake

    def fingerprint(self) -> dict[str, Any]:
        return {"task": self.name, "generator": architecture(self.generator),
                "discriminator": architecture(self.discriminator)}


def _first(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class NoiseToImageTask(GANTask):
    """DCGAN: the dataset holds real images ``(N, C, 64, 64)``; the generator maps N(0, 1) noise to images."""

    name = "noise_to_image"
    paired = False

    def __init__(self, generator: nn.Module, discriminator: nn.Module, nz: int | None = None) -> None:
        super().__init__(generator, discriminator)
        nz = nz if nz is not None else getattr(generator, "nz", None)
        if nz is None:
            raise ValueError("NoiseToImageTask needs the noise dimension `nz` (not found on the generator)")
        self.nz = int(nz)

    def unpack(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, None]:
        real = _first(batch).to(device, non_blocking=True)
        z = torch.randn(real.shape[0], self.nz, 1, 1, device=device)
        return z, real, None


class AsinhNoise(nn.Module):
    """A measurement model for images stored asinh-scaled (``y = asinh(x / softening) / scale``): add white
    Gaussian noise of per-channel sigma ``sigma`` *in physical units* (``x``) and scale back. Differentiable.

    Used as a conditional task's ``observe`` (AmbientGAN, Bora et al. 2018): the discriminator judges G(x) plus
    survey-like noise against real, noisy images, so the generator has nothing to gain from drawing noise
    itself and learns the noise-free image, which is what the L1 term asks for too.
    """

    def __init__(self, sigma: Sequence[float], softening: Sequence[float], scale: Sequence[float]) -> None:
        super().__init__()
        values = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (sigma, softening, scale)]
        n = max(v.size for v in values)
        if any(v.size not in (1, n) for v in values) or not all(np.isfinite(v).all() for v in values):
            raise ConfigError(f"AsinhNoise: sigma, softening and scale need 1 or {n} finite values each")
        if (values[0] < 0).any() or (values[1] <= 0).any() or (values[2] <= 0).any():
            raise ConfigError("AsinhNoise: sigma must be >= 0, softening and scale > 0")
        self.spec = {k: [float(x) for x in np.broadcast_to(v, (n,))]
                     for k, v in zip(("sigma", "softening", "scale"), values)}
        for k, v in self.spec.items():
            self.register_buffer(k, torch.tensor(v, dtype=torch.float32)[None, :, None, None], persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        s, c = self.softening.to(y.dtype), self.scale.to(y.dtype)
        x = s * torch.sinh(c * y)
        return torch.asinh((x + self.sigma.to(y.dtype) * torch.randn_like(x)) / s) / c


class ConditionalTask(GANTask):
    """SR-GAN (and pix2pix): the dataset holds pairs ``(input, target)``; the generator maps input -> target and the
    discriminator gets the input as its condition (an unconditional discriminator ignores it).

    ``observe`` (optional, e.g. :class:`AsinhNoise`): applied to the generator's output before the discriminator
    sees it (not before the L1 term, which compares the noise-free output with the target)."""

    name = "conditional"
    paired = True

    def __init__(self, generator: nn.Module, discriminator: nn.Module, observe: nn.Module | None = None) -> None:
        super().__init__(generator, discriminator)
        self.observe = observe

    def observed(self, fake: torch.Tensor) -> torch.Tensor:
        if self.observe is None:
            return fake
        return self.observe.to(fake.device)(fake)

    def fingerprint(self) -> dict[str, Any]:
        out = super().fingerprint()
        if self.observe is not None:  # only when on, so checkpoints written before the option still resume
            out["observe"] = {"name": type(self.observe).__name__, **getattr(self.observe, "spec", {})}
        return out

    def unpack(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("ConditionalTask needs a dataset of (input, target) pairs")
        x = batch[0].to(device, non_blocking=True)
        y = batch[1].to(device, non_blocking=True)
        return x, y, x


# ----------------------------------------------------------------------------------------------- results
class Preempted(PipelineError):
    """Training stopped on SIGTERM/SIGUSR1 after writing its checkpoint; rerun the step to resume."""

    exit_code = PREEMPTED_EXIT_CODE


@dataclass
class StepInfo:
    """Passed to the ``callback`` of :func:`train` after every optimisation step."""

    epoch: int  # 0-based epoch being trained
    step: int  # steps done in this epoch (1-based after the step)
    steps_per_epoch: int
    global_step: int
    loss_d: torch.Tensor
    loss_g: torch.Tensor


@dataclass
class TrainResult:
    completed: bool
    out_dir: Path
    checkpoint_path: Path
    generator_path: Path | None
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

    def raise_if_preempted(self) -> None:
        if self.preempted:
            raise Preempted(f"training in {self.out_dir} stopped by signal {self.signal} after epoch "
                            f"{self.epochs_done} (step {self.global_step}); checkpoint written, rerun to resume")


# ------------------------------------------------------------------------------------------------ helpers
def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; an explicit cuda device without cuda is a :class:`ConfigError`."""
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise ConfigError(f"training: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training: device {spec!r} requested but CUDA is not available; use device: auto")
    return device


def as_dataset(data: Any) -> Dataset:
    """A tensor / array (images), a tuple of them (pairs) or any map-style Dataset -> Dataset."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return TensorDataset(_as_tensor(data))
    if isinstance(data, (tuple, list)):
        return TensorDataset(*[_as_tensor(d) for d in data])
    raise TypeError(f"cannot train on a {type(data).__name__}; pass tensors, arrays or a torch Dataset")


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    raise TypeError(f"expected a tensor or array, got {type(x).__name__}")


def _dataset_fingerprint(ds: Dataset) -> dict[str, Any]:
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
                        worker_init_fn=_worker_ignores_stop_signals if cfg.num_workers else None)
    yield from loader


def _worker_ignores_stop_signals(worker_id: int) -> None:
    """SLURM signals every process of the job: a data-loading worker must survive SIGTERM/SIGUSR1 long enough for
    the main process to finish its step and checkpoint (workers exit on their own when the main process does)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda") and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)  # also seeds every cuda device


def _torch_save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then os.replace onto ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files left by a process killed hard (SIGKILL) in the middle of an atomic write."""
    for name in (CHECKPOINT_NAME, GENERATOR_NAME, LOSSES_CSV, LOSSES_PNG):
        for stale in out_dir.glob(f".{name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass


def _state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def write_losses(out_dir: Path, history: Sequence[Mapping[str, float]]) -> None:
    """Rewrite ``losses.csv`` (one row per epoch) and ``losses.png`` from the full history, atomically."""
    with atomic_path(out_dir / LOSSES_CSV) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOSS_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: (f"{row[k]:.8g}" if isinstance(row.get(k), float) else row.get(k))
                                 for k in LOSS_COLUMNS})
    _plot_losses(out_dir / LOSSES_PNG, history)


def _plot_losses(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    epochs = [row["epoch"] for row in history]
    marker = "o" if len(history) < 30 else None
    ax.plot(epochs, [row["loss_g"] for row in history], label="generator", marker=marker)
    ax.plot(epochs, [row["loss_d"] for row in history], label="discriminator", marker=marker)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean over steps)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


class _StopFlag:
    """Set by SIGTERM / SIGUSR1; the loop polls it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            # no logging here: a handler may interrupt a logging call that holds the handler's lock
            try:
                os.write(2, f"\nsignal {signum} received: finishing the current step, then checkpointing\n".encode())
            except OSError:
                pass

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("train() runs outside the main thread: SIGTERM/SIGUSR1 will not trigger a clean checkpoint")
            return
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


# --------------------------------------------------------------------------------------------------- train
def train(task: GANTask, dataset: Any, cfg: TrainConfig, out_dir: str | Path, progress: bool = True, *,
          resume: bool = True, callback: Callable[[StepInfo], Any] | None = None) -> TrainResult:
    """Train ``task.generator`` against ``task.discriminator`` on ``dataset``; see the module docstring.

    ``dataset``: image tensor/array (noise-to-image), ``(inputs, targets)`` tensors/arrays (conditional), or any
    map-style Dataset yielding what the task's ``unpack`` expects. ``callback(StepInfo)`` runs after every step; a
    truthy return value requests a stop exactly like SIGTERM (checkpoint, then return with ``completed=False``).

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
    if cfg.l1_weight > 0 and not task.paired:
        raise ConfigError(f"training: l1_weight applies to paired (conditional) tasks only, not {task.name}")
    ddp.check(cfg.batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    if ddp.is_main:
        _remove_stale_temporaries(out_dir)
    fingerprint = {"format_version": FORMAT_VERSION, "config": cfg.fingerprint(), **task.fingerprint(),
                   "dataset": _dataset_fingerprint(ds)}

    # ---- global flags, restored in `finally`
    prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    stop = _StopFlag()
    stop.install()
    try:
        if cfg.deterministic and device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        elif device.type == "cuda":
            torch.backends.cudnn.deterministic = cfg.deterministic
            torch.backends.cudnn.benchmark = not cfg.deterministic
        return _run(task, ds, n, cfg, out_dir, ckpt_path, device, amp, fingerprint, stop, progress, resume,
                    callback, ddp)
    finally:
        stop.restore()
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


def _load_checkpoint(path: Path, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise PipelineError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); "
                            "delete it to train from scratch") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise PipelineError(f"{path}: not a training checkpoint of this pipeline; delete it to train from scratch")
    if state.get("fingerprint") != fingerprint:
        old = state.get("fingerprint") or {}
        changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        kept = path.with_name(f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}.stale{path.suffix}")
        os.replace(path, kept)
        log.warning("%s was written by a different training set-up (%s differ); kept it as %s and training "
                    "from scratch", path, ", ".join(changed), kept.name)
        return None
    return state


def _run(task: GANTask, ds: Dataset, n: int, cfg: TrainConfig, out_dir: Path, ckpt_path: Path,
         device: torch.device, amp: bool, fingerprint: dict[str, Any], stop: _StopFlag, progress: bool,
         resume: bool, callback: Callable[[StepInfo], Any] | None,
         ddp: distributed.DistContext = distributed.SINGLE) -> TrainResult:
    gen, disc = task.generator, task.discriminator
    state = (ddp.main_first(lambda: _load_checkpoint(ckpt_path, fingerprint) if ckpt_path.exists() else None)
             if resume else None)

    _seed_everything(cfg.seed)
    if state is None and cfg.reinit:
        init_weights(gen)
        init_weights(disc)
    gen.to(device).train()
    disc.to(device).train()
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    ema = weight_average(gen, cfg.ema_decay) if cfg.ema_decay else None
    scaler_g = torch.amp.GradScaler(device.type, enabled=amp)
    scaler_d = torch.amp.GradScaler(device.type, enabled=amp)

    history: list[dict[str, float]] = []
    start_epoch = start_step = global_step = 0
    partial: dict[str, float] = {}
    if state is not None:
        gen.load_state_dict(state["generator"]["state_dict"])
        disc.load_state_dict(state["discriminator"]["state_dict"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if ema is not None:
            ema.load_state_dict(state["generator_ema"])
        for scaler, key in ((scaler_g, "scaler_g"), (scaler_d, "scaler_d")):
            if amp and state.get(key):
                scaler.load_state_dict(state[key])
        _set_rng_state(state["rng"])
        history = [dict(row) for row in state["history"]]
        start_epoch, start_step = int(state["epoch"]), int(state["step_in_epoch"])
        global_step = int(state["global_step"])
        partial = dict(state.get("partial") or {})
        ranks_rng = state.get("rng_ranks") or []
        if len(ranks_rng) == ddp.world_size:  # a multi-process run resumed by as many processes
            _set_rng_state(ranks_rng[ddp.rank])
        else:
            ddp.diverge_rng(cfg.seed, global_step)
        log.info("resuming %s from %s: epoch %d, step %d", task.name, ckpt_path, start_epoch, start_step)
        if start_epoch > cfg.epochs or (start_epoch == cfg.epochs and start_step > 0):
            log.warning("%s is already past epoch %d (epochs was lowered); its weights are written as they are",
                        ckpt_path, cfg.epochs)
        if history and ddp.is_main:
            write_losses(out_dir, history)  # drops rows of epochs trained after this checkpoint was written
    else:
        ddp.diverge_rng(cfg.seed)  # other ranks draw other noise; rank 0 keeps the single-process stream
    resumed = state is not None
    del state
    step_task = ddp.wrap_task(task)  # DistributedDataParallel networks with several processes

    bce = nn.BCEWithLogitsLoss()
    d_params = list(disc.parameters())
    t_start = time.perf_counter()
    images_seen = 0
    last_ckpt = time.monotonic()

    def checkpoint(epoch_done: int, step: int, sums: Mapping[str, float]) -> None:
        nonlocal last_ckpt
        rngs = ddp.gather(_rng_state())  # every rank's (collective: all ranks checkpoint together)
        if not ddp.is_main:
            last_ckpt = time.monotonic()
            return
        _torch_save_atomic({
            "format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "pipeline_version": __version__,
            "fingerprint": fingerprint, "config": dataclasses.asdict(cfg),
            "generator": {**architecture(gen), "state_dict": _state_dict_cpu(gen)},
            "discriminator": {**architecture(disc), "state_dict": _state_dict_cpu(disc)},
            **({"generator_ema": _state_dict_cpu(ema)} if ema is not None else {}),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "scaler_g": scaler_g.state_dict(), "scaler_d": scaler_d.state_dict(),
            "epoch": epoch_done, "step_in_epoch": step, "global_step": global_step,
            "partial": dict(sums), "rng": rngs[0], "history": history,
            **({"rng_ranks": rngs, "world_size": ddp.world_size} if ddp.enabled else {}),
        }, ckpt_path)
        last_ckpt = time.monotonic()

    def result(completed: bool, gen_path: Path | None) -> TrainResult:
        seconds = time.perf_counter() - t_start
        return TrainResult(
            completed=completed, out_dir=out_dir, checkpoint_path=ckpt_path, generator_path=gen_path,
            device=str(device), start_epoch=start_epoch, start_step=start_step, resumed=resumed,
            epochs_done=len(history), global_step=global_step, history=history, seconds=seconds,
            images_per_second=images_seen / seconds if seconds > 0 and images_seen else float("nan"),
            preempted=not completed and stop.signum is not None, signal=stop.signum)

    isatty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    for epoch in range(start_epoch, cfg.epochs):
        batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch, cfg.drop_last)
        first = start_step if epoch == start_epoch else 0
        sums = {k: torch.tensor(float(partial.get(k, 0.0)) if epoch == start_epoch else 0.0,
                                dtype=torch.float64, device=device) for k in _SUM_KEYS}
        epoch_seconds = float(partial.get("seconds", 0.0)) if epoch == start_epoch else 0.0
        t_epoch = time.perf_counter()
        step_in_epoch = first
        bar = _progress_bar(progress and ddp.is_main, len(batches), first, f"epoch {epoch + 1}/{cfg.epochs}",
                            isatty)
        for batch in _iter_batches(ds, ddp.shard(batches[first:]), cfg, epoch, device):
            losses = _train_step(step_task, batch, opt_g, opt_d, scaler_g, scaler_d, bce, cfg.l1_weight, device,
                                 amp, d_params)
            if ema is not None:
                ema.update_parameters(gen)
            for k in _SUM_KEYS:
                sums[k] += losses[k].detach().double()
            step_in_epoch += 1
            global_step += 1
            images_seen += int(losses["batch"])
            if bar is not None:
                bar.update(1)
                if step_in_epoch % 10 == 0 or step_in_epoch == len(batches):
                    bar.set_postfix(loss_d=f"{float(losses['loss_d']):.3f}",
                                    loss_g=f"{float(losses['loss_g']):.3f}", refresh=False)
            if callback is not None and callback(StepInfo(epoch, step_in_epoch, len(batches), global_step,
                                                          losses["loss_d"], losses["loss_g"])):
                stop.signum = stop.signum or -1
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
        means = {k: float(v) / steps for k, v in _sums_to_floats(ddp.mean(sums), 0.0).items() if k in _SUM_KEYS}
        images = steps * cfg.batch_size if cfg.drop_last else sum(len(b) for b in batches)
        history.append({"epoch": epoch + 1, "steps": steps, "images": images, **means, "seconds": epoch_seconds,
                        "images_per_s": images / epoch_seconds if epoch_seconds > 0 else float("nan")})
        if ddp.is_main:
            write_losses(out_dir, history)
        log.info("epoch %d/%d: loss_d %.4f loss_g %.4f D(real) %.3f D(fake) %.3f (%.1f s, %.1f images/s)",
                 epoch + 1, cfg.epochs, means["loss_d"], means["loss_g"], means["d_real"], means["d_fake"],
                 epoch_seconds, history[-1]["images_per_s"])
        done = epoch + 1
        stopping, = ddp.sync_stop(stop)  # a signal during the epoch's bookkeeping: all ranks must agree
        if stopping or done % cfg.checkpoint_every_epochs == 0 or done == cfg.epochs:
            checkpoint(done, 0, {})
        if stopping:
            log.warning("stopped by signal %s after epoch %d; checkpoint written to %s", stop.signum, done, ckpt_path)
            return result(False, None)

    gen_path = out_dir / GENERATOR_NAME
    if ddp.is_main:
        save_generator(gen if ema is None else ema.module, gen_path,
                       meta={"task": task.name, "epochs": len(history), "seed": cfg.seed, "global_step": global_step,
                             "ema_decay": cfg.ema_decay})
    ddp.barrier()
    return result(True, gen_path)


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


def _train_step(task: GANTask, batch: Any, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                scaler_g: torch.amp.GradScaler, scaler_d: torch.amp.GradScaler, bce: nn.Module, l1_weight: float,
                device: torch.device, amp: bool, d_params: Sequence[nn.Parameter]) -> dict[str, Any]:
    gen = task.generator
    g_in, real, cond = task.unpack(batch, device)

    # --- discriminator: maximise log D(real) + log(1 - D(G(.)))
    with torch.autocast(device.type, enabled=amp):
        fake = gen(g_in)
        shown = task.observed(fake)  # the same noisy view of G(.) for both steps
        d_real = task.discriminate(real, cond)
        d_fake = task.discriminate(shown.detach(), cond)
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
    opt_d.zero_grad(set_to_none=True)
    scaler_d.scale(loss_d).backward()
    scaler_d.step(opt_d)
    scaler_d.update()

    # --- generator: non-saturating loss -log D(G(.)) [+ l1_weight * |G(x) - y|]
    for p in d_params:  # no weight gradients for D here (saves work; grads still flow through D to G)
        p.requires_grad_(False)
    try:
        with torch.autocast(device.type, enabled=amp):
            d_gen = task.discriminate(shown, cond)
            loss_adv = bce(d_gen, torch.ones_like(d_gen))
        if task.paired and l1_weight > 0:
            loss_l1 = F.l1_loss(fake.float(), real.float())
            loss_g = loss_adv + l1_weight * loss_l1
        else:
            loss_g = loss_adv
            with torch.no_grad():  # still logged: the pixel error is the diagnostic that matters for SR
                loss_l1 = (F.l1_loss(fake.float(), real.float()) if task.paired
                           else torch.zeros((), device=device))
        opt_g.zero_grad(set_to_none=True)
        scaler_g.scale(loss_g).backward()
        scaler_g.step(opt_g)
        scaler_g.update()
    finally:
        for p in d_params:
            p.requires_grad_(True)
    with torch.no_grad():
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "loss_g_adv": loss_adv.detach(),
                "loss_l1": loss_l1.detach(), "d_real": torch.sigmoid(d_real.float()).mean(),
                "d_fake": torch.sigmoid(d_fake.float()).mean(), "batch": real.shape[0]}


# ----------------------------------------------------------------------------------------------- inference
def save_generator(generator: nn.Module, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``{name, arch, arch_json, state_dict, meta}`` atomically; :func:`load_generator` rebuilds it."""
    spec = architecture(generator)
    path = Path(path)
    _torch_save_atomic({"format": GENERATOR_FORMAT, "version": FORMAT_VERSION, "pipeline_version": __version__,
                        "name": spec["name"], "arch": spec["arch"], "arch_json": json.dumps(spec, sort_keys=True),
                        "state_dict": _state_dict_cpu(generator), "meta": dict(meta or {})}, path)
    return path


def load_generator(path: str | Path, device: str | torch.device = "auto") -> nn.Module:
    """Rebuild a generator written by :func:`train` / :func:`save_generator`, in eval mode on ``device``."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: generator file not found (train the model first)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"{path}: unreadable generator file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != GENERATOR_FORMAT:
        raise PipelineError(f"{path}: not a generator file of this pipeline")
    spec = json.loads(obj["arch_json"])
    model = build_model(spec["name"], spec["arch"])
    model.load_state_dict(obj["state_dict"])
    return model.to(resolve_device(device)).eval()


def noise(n: int, nz: int, seed: int) -> torch.Tensor:
    """``n`` reproducible N(0, 1) noise vectors ``(n, nz, 1, 1)`` for a noise-to-image generator."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(int(n), int(nz), 1, 1, generator=gen)


def generate(generator: nn.Module, inputs: Any, batch_size: int = 256,
             device: str | torch.device | None = None) -> np.ndarray:
    """Run ``generator`` (put in eval mode) over ``inputs`` (array/tensor, first axis = examples) in batches.

    ``device``: None = where the generator's parameters are, else as :func:`resolve_device`. Returns float32 numpy.
    """
    if device is None:
        param = next(generator.parameters(), None)
        dev = param.device if param is not None else torch.device("cpu")
    else:
        dev = resolve_device(device)
        generator.to(dev)
    generator.eval()
    x = _as_tensor(inputs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            y = generator(x[i:i + batch_size].to(dev, non_blocking=True))
            out.append(y.float().cpu().numpy())
    if not out:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)


__all__ = [
    "AsinhNoise",
    "CHECKPOINT_NAME",
    "GENERATOR_NAME",
    "LOSSES_CSV",
    "LOSSES_PNG",
    "PREEMPTED_EXIT_CODE",
    "ConditionalTask",
    "GANTask",
    "NoiseToImageTask",
    "Preempted",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "as_dataset",
    "epoch_batches",
    "generate",
    "load_generator",
    "noise",
    "resolve_device",
    "save_generator",
    "train",
    "write_losses",
]
