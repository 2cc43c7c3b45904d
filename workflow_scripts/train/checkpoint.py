"""Training checkpoints: one file, written atomically, versioned, resumed only by the set-up that wrote it.

Format version 2 (this loop) keeps everything by name, whatever the objective::

    {"format": CHECKPOINT_FORMAT, "version": 2, "pipeline_version", "objective", "fingerprint", "config",
     "modules": {name: {"name", "arch", "state_dict"}}, "optimizers": {name: state}, "scalers": {name: state},
     "ema": {name: state}, "epoch", "step_in_epoch", "global_step", "partial", "rng", "history",
     ["rng_ranks", "world_size"]}

Version 1 (the GAN-only loop before objectives) had fixed keys (generator, discriminator, opt_g, ...). An objective
that can map them (:meth:`Objective.upgrade_v1`, the GAN pair does) resumes such a file; any other version or
objective is refused with a message naming the file, never guessed at.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workflow_scripts.errors import PipelineError
from workflow_scripts.io import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "genastro-training-checkpoint"
CHECKPOINT_VERSION = 2
#: the GAN loop's format before objectives (fixed generator/discriminator keys)
V1_FORMAT = "genastro-gan-checkpoint"
V1_VERSION = 1

#: a v1 checkpoint's fingerprint as this objective and data would have written it, and how to map its keys
Legacy = tuple[Mapping[str, Any], Callable[[Mapping[str, Any]], dict[str, Any]]]


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then os.replace onto ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())


def remove_stale_temporaries(out_dir: Path, names: Iterable[str]) -> None:
    """Temporary files left by a process killed hard (SIGKILL) in the middle of an atomic write."""
    for name in names:
        for stale in out_dir.glob(f".{name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass


def _set_aside(path: Path, why: str) -> None:
    kept = path.with_name(f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}.stale{path.suffix}")
    os.replace(path, kept)
    log.warning("%s %s; kept it as %s and training from scratch", path, why, kept.name)


def _keep_aside(path: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    _set_aside(path, f"was written by a different training set-up ({', '.join(changed)} differ)")


def _past(state: Mapping[str, Any], epochs: int | None) -> bool:
    """Whether a checkpoint lies beyond the end of a run of ``epochs`` epochs (its weights are not that run's)."""
    if epochs is None:
        return False
    done, step = int(state.get("epoch", 0)), int(state.get("step_in_epoch", 0))
    return done > epochs or (done == epochs and step > 0)


def load_checkpoint(path: Path, fingerprint: Mapping[str, Any], legacy: Legacy | None = None,
                    epochs: int | None = None) -> dict[str, Any] | None:
    """The state in ``path`` if the same set-up wrote it and it lies within a run of ``epochs`` epochs (None: any);
    None (file moved aside, never overwritten) otherwise: a checkpoint past the end (the epoch count was lowered, or
    an earlier epoch's weights are asked for) cannot give that run's weights, so training starts again.

    ``legacy``: how this objective reads a version-1 file (None: such a file is refused with an error).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise PipelineError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); "
                            "delete it to train from scratch") from None
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT, V1_FORMAT):
        raise PipelineError(f"{path}: not a training checkpoint of this pipeline; delete it to train from scratch")
    if state["format"] == V1_FORMAT and state.get("version") == V1_VERSION:
        if legacy is None:
            raise PipelineError(f"{path}: a version-{V1_VERSION} GAN checkpoint, which this objective cannot "
                                "resume; delete it to train from scratch")
        old_fingerprint, upgrade = legacy
        if state.get("fingerprint") != old_fingerprint:
            _keep_aside(path, state.get("fingerprint") or {}, old_fingerprint)
            return None
        upgraded = {**upgrade(state), "fingerprint": dict(fingerprint)}
        if _past(upgraded, epochs):
            _set_aside(path, f"is past epoch {epochs}")
            return None
        log.info("%s: a version-%d checkpoint, read as version %d", path, V1_VERSION, CHECKPOINT_VERSION)
        return upgraded
    if state["format"] != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise PipelineError(f"{path}: checkpoint format version {state.get('version')!r}, this pipeline reads "
                            f"{CHECKPOINT_VERSION} (and {V1_VERSION} for GANs); delete it to train from scratch")
    if state.get("fingerprint") != fingerprint:
        _keep_aside(path, state.get("fingerprint") or {}, fingerprint)
        return None
    if _past(state, epochs):
        _set_aside(path, f"is past epoch {epochs} (trained to epoch {state['epoch']}, step {state['step_in_epoch']})")
        return None
    return state


def state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------------------ RNG
def rng_state() -> dict[str, Any]:
    """Every global RNG a step may draw from (torch, cuda, numpy, python), as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda") and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)  # also seeds every cuda device


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "CHECKPOINT_VERSION", "V1_FORMAT", "V1_VERSION", "Legacy",
           "load_checkpoint", "remove_stale_temporaries", "rng_state", "save_atomic", "seed_everything",
           "set_rng_state", "state_dict_cpu"]
