"""Data-parallel training on several processes (GPUs, or CPU processes for tests): the pieces the training loop
needs, kept apart from the training loop.

How a multi-GPU job runs:

1. A launcher (the step adapter of a training rule, see :func:`launch`) starts ``torchrun`` (``python -m
   torch.distributed.run --standalone --nproc-per-node N``) with one worker process per GPU, and forwards
   SIGTERM/SIGUSR1 to it (torchrun forwards them to every worker).
2. Each worker calls :func:`init_from_env`: it reads torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` and
   joins the process group (``nccl`` on CUDA, one GPU per worker; ``gloo`` on CPU).
3. :func:`workflow_scripts.train.loop.train` asks :func:`current` for the context and, with more than one process:

   * every global batch (the same seeded ``epoch_batches`` as a single process) is split across the ranks
     (:meth:`DistContext.shard`, the role of a ``DistributedSampler``), so the batch size, the steps per epoch
     and the position stored in a checkpoint mean the same whatever the number of processes;
   * every module of the objective is wrapped in ``DistributedDataParallel`` by name
     (:meth:`DistContext.wrap_modules`): gradients are averaged over the ranks, so all ranks hold the same
     weights after every step;
   * the per-step losses are all-reduced (means over ranks) before they are logged or checkpointed;
   * a stop request (signal) on any rank stops all ranks at the same step (:meth:`DistContext.sync_stop`);
   * only rank 0 writes files (checkpoint, losses, generator) and shows progress; the checkpoint also holds the
     RNG state of every rank, so a multi-process run resumes exactly where it stopped.

With one process everything here is a no-op, and the loop is the single-process loop, bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from workflow_scripts.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: signals that ask a training run to checkpoint and stop (SLURM: SIGTERM at the time limit or on pre-emption,
#: SIGUSR1 with ``--signal``); forwarded by the launcher to torchrun and by torchrun to its workers
FORWARDED_SIGNALS = ("SIGTERM", "SIGUSR1")
#: seconds torchrun waits for its workers to checkpoint and exit after a forwarded signal, before SIGKILL
SHUTDOWN_TIMEOUT_S = 300


# ------------------------------------------------------------------------------------------------ context
@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run; ``DistContext()`` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, logs progress and owns the output directory."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per worker: ``cuda`` becomes ``cuda:LOCAL_RANK``; a cpu device stays as it is."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def check(self, batch_size: int) -> None:
        if self.enabled and batch_size < self.world_size:
            raise ConfigError(f"training: batch_size {batch_size} cannot be split over {self.world_size} "
                              "processes; raise batch_size or use fewer processes")

    def shard(self, batches: Sequence[Sequence[int]]) -> list[list[int]]:
        """This rank's share of each global batch (every ``world_size``-th index, starting at ``rank``)."""
        if not self.enabled:
            return [list(b) for b in batches]
        return [list(b[self.rank::self.world_size]) for b in batches]

    def wrap_modules(self, modules: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
        """The modules a training step calls, by name: DistributedDataParallel replicas with several processes
        (gradients averaged over the ranks), the modules themselves with one. The checkpoint keeps the unwrapped
        modules: their state dicts load anywhere."""
        if not self.enabled:
            return dict(modules)
        return {name: _Replica(module) for name, module in modules.items()}

    def sync_stop(self, stop: Any, *flags: bool) -> tuple[bool, ...]:
        """One all-reduce per step: ``(stop requested on any rank, *each flag set on any rank)``.

        ``stop`` is the training loop's stop flag (``.signum``: None, a signal number, or -1 for a callback); when
        another rank was signalled, its signal number is copied into this rank's flag so every rank reports the
        same pre-emption.
        """
        signum = stop.signum
        if not self.enabled:
            return (signum is not None, *(bool(f) for f in flags))
        values = torch.tensor([1.0 if signum is not None else 0.0, float(max(signum or 0, 0)),
                               *(1.0 if f else 0.0 for f in flags)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        stopping = bool(values[0] > 0)
        if stopping and signum is None:
            stop.signum = int(values[1]) if values[1] > 0 else -1
        return (stopping, *(bool(v > 0) for v in values[2:]))

    def mean(self, sums: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Means over the ranks of per-rank loss sums (one all-reduce); the sums themselves with one process."""
        if not self.enabled or not sums:
            return dict(sums)
        keys = list(sums)
        stacked = torch.stack([sums[k].detach().to(self._comm_device, torch.float64) for k in keys])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= self.world_size
        return {k: stacked[i] for i, k in enumerate(keys)}

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order (``[obj]`` with one process)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the other ranks (for steps that may change files, e.g. moving a stale
        checkpoint aside before the others look for it)."""
        if not self.enabled:
            return fn()
        if self.is_main:
            out = fn()
            dist.barrier()
            return out
        dist.barrier()
        return fn()

    def diverge_rng(self, seed: int, salt: int = 0) -> None:
        """Reseed the global RNG of ranks > 0 from ``(seed, rank, salt)``: the random draws of an objective (the
        DCGAN's noise) differ between ranks, while rank 0 keeps the single-process stream."""
        if self.enabled and self.rank > 0:
            torch.manual_seed((int(seed) * 1_000_003 + self.rank * 7919 + int(salt) * 104_729) % 2**63)

    @property
    def _comm_device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def _ddp(module: nn.Module) -> DistributedDataParallel:
    param = next(module.parameters())
    device_ids = [param.device.index] if param.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


class _Replica(nn.Module):
    """A module under DistributedDataParallel, called through DDP only while its weights take gradients.

    A pass with the module's parameters frozen (a GAN's generator step through the discriminator: gradients flow
    through it to another module only) would leave DDP waiting for gradients that never come; there is nothing of
    the module to synchronise in such a pass, so it calls the plain module (BatchNorm buffers are re-broadcast by
    DDP's next forward pass).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.ddp = _ddp(module)
        self._params = [p for p in module.parameters()]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if any(p.requires_grad for p in self._params):
            return self.ddp(*args, **kwargs)
        return self.ddp.module(*args, **kwargs)


SINGLE = DistContext()


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment, or None outside torchrun."""
    try:
        world = int(os.environ["WORLD_SIZE"])
        return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    except (KeyError, ValueError):
        return None


def current() -> DistContext:
    """The context of this process: from the initialised default process group, else a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    env = torchrun_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    local = env[2] if env is not None else rank
    return DistContext(rank=rank, world_size=world, local_rank=local)


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group torchrun set up (``nccl`` when training on CUDA, else ``gloo``); a single-process
    context outside torchrun or with ``WORLD_SIZE=1``."""
    env = torchrun_env()
    if env is None or env[1] <= 1:
        return SINGLE
    rank, world, local = env
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ConfigError(f"training: worker {rank} of {world} needs GPU {local}, but "
                              f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} are visible")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    global _JOINED
    _JOINED = True
    return current()


#: True once this process joined a process group (it is a torchrun worker; see :func:`exit_worker`)
_JOINED = False


def shutdown() -> None:
    """Leave the process group: a barrier (no rank tears the group down while a peer still uses it), then
    ``destroy_process_group``. A no-op without a process group; safe to call twice."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_worker(status: int) -> NoReturn:
    """End this process with ``status`` after :func:`shutdown`.

    A torchrun worker leaves through ``os._exit`` once its log handlers and standard streams are flushed: torch
    2.13's gloo backend can abort a finished worker while the interpreter finalises ("terminate called without an
    active exception", SIGABRT, no Python frame on the stack; 1 of 12 two-process runs without the barrier, and one
    CI run with it), which failed the whole job after its training had completed. Everything a worker writes is
    closed before this point. A single process (no process group) exits normally through ``sys.exit``.
    """
    shutdown()
    if not _JOINED:
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(status)


# ----------------------------------------------------------------------------------------------- launcher
def processes_for(gpus: int, configured: int | None = None, cuda_devices: int | None = None) -> int:
    """How many training processes a job runs: ``configured`` when set (CPU processes too), else one per GPU
    the job was given when there is more than one and CUDA sees them, else 1."""
    if configured is not None:
        if int(configured) < 1:
            raise ConfigError(f"training: processes must be >= 1, got {configured}")
        return int(configured)
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = int(gpus or 0)
    if gpus <= 1 or cuda_devices <= 1:
        if gpus > 1:
            log.warning("the job asked for %d GPUs but CUDA sees %d: training in one process", gpus, cuda_devices)
        return 1
    if cuda_devices < gpus:
        log.warning("the job asked for %d GPUs but CUDA sees %d: training on %d", gpus, cuda_devices, cuda_devices)
    return min(gpus, cuda_devices)


def torchrun_command(nproc: int, module: str, args: Sequence[str] = ()) -> list[str]:
    """``python -m torch.distributed.run`` on this machine with ``nproc`` workers running ``python -m module``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}",
            f"--signals-to-handle={','.join(('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1'))}",
            f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}", "--module", module, *args]


def launch(nproc: int, module: str, args: Sequence[str] = (), *, threads_per_process: int = 1,
           env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
           forward_signals: bool | None = None) -> int:
    """Run ``module`` in ``nproc`` torchrun workers and wait; return torchrun's exit status.

    torchrun passes SIGTERM/SIGUSR1 on to the workers (they checkpoint and stop) and waits up to
    :data:`SHUTDOWN_TIMEOUT_S` for them. ``forward_signals``: whether this process forwards the SIGTERM/SIGUSR1 it
    receives to torchrun; by default only outside a SLURM job, since SLURM signals every process of a job step
    itself, and a second signal to torchrun would cut its graceful shutdown short.
    """
    if forward_signals is None:
        forward_signals = "SLURM_JOB_ID" not in os.environ
    repo = str(Path(__file__).resolve().parents[1])
    run_env = {**os.environ, **(env or {})}
    run_env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, run_env.get("PYTHONPATH", "")) if p)
    run_env["OMP_NUM_THREADS"] = str(max(1, int(threads_per_process)))
    cmd = torchrun_command(nproc, module, args)
    log.info("launching %d training processes: %s", nproc, " ".join(cmd))
    proc = subprocess.Popen(cmd, env=run_env, cwd=cwd)
    previous: dict[int, Any] = {}

    def forward(signum: int, frame: Any) -> None:
        if not forward_signals:
            return  # torchrun got its own; this process only must not die of it
        try:
            proc.send_signal(signum)
        except OSError:
            pass

    for name in FORWARDED_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, forward)
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if proc.poll() is None:  # interrupted by an exception: stop torchrun and its workers
            proc.terminate()
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Small JSON file (a worker's result for its launcher), written atomically."""
    from workflow_scripts.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


__all__ = [
    "SINGLE",
    "DistContext",
    "current",
    "exit_worker",
    "init_from_env",
    "launch",
    "processes_for",
    "shutdown",
    "torchrun_command",
    "torchrun_env",
    "write_json_atomic",
]
