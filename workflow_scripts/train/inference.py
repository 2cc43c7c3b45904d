"""Trained models as files, and running them: :func:`save_model` / :func:`load_model` (a GAN's generator, a
likelihood model), reproducible noise for noise-to-image generators, batched :func:`generate`.

A model file holds ``{format, version, name, arch, arch_json, state_dict, meta}``: the class name and constructor
arguments that :func:`workflow_scripts.models.build_model` rebuilds it from, so inference needs no training code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workflow_scripts import __version__
from workflow_scripts.errors import ConfigError, PipelineError
from workflow_scripts.models import architecture, build_model
from workflow_scripts.train.checkpoint import save_atomic, state_dict_cpu

#: the name kept from the GAN-only loop: files written before likelihood models load unchanged
MODEL_FORMAT = "genastro-generator"
MODEL_FILE_VERSION = 1
GENERATOR_FORMAT = MODEL_FORMAT


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


def as_tensor(x: Any) -> torch.Tensor:
    """A float32 tensor of an array (copied only when it must be) or a tensor (cast when floating, not float32)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    raise TypeError(f"expected a tensor or array, got {type(x).__name__}")


def save_model(model: nn.Module, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``{name, arch, arch_json, state_dict, meta}`` atomically; :func:`load_model` rebuilds it."""
    spec = architecture(model)
    path = Path(path)
    save_atomic({"format": MODEL_FORMAT, "version": MODEL_FILE_VERSION, "pipeline_version": __version__,
                 "name": spec["name"], "arch": spec["arch"], "arch_json": json.dumps(spec, sort_keys=True),
                 "state_dict": state_dict_cpu(model), "meta": dict(meta or {})}, path)
    return path


def _read_model_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: model file not found (train the model first)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"{path}: unreadable model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise PipelineError(f"{path}: not a model file of this pipeline")
    return obj


def model_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` a model file was written with (``train`` writes objective, epochs, seed, global_step ...)."""
    return dict(_read_model_file(path).get("meta") or {})


def load_model(path: str | Path, device: str | torch.device = "auto") -> nn.Module:
    """Rebuild a model written by ``train`` / :func:`save_model`, in eval mode on ``device``."""
    obj = _read_model_file(path)
    spec = json.loads(obj["arch_json"])
    model = build_model(spec["name"], spec["arch"])
    model.load_state_dict(obj["state_dict"])
    return model.to(resolve_device(device)).eval()


#: the names of the GAN-only loop
save_generator = save_model
load_generator = load_model


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
    x = as_tensor(inputs)
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


__all__ = ["GENERATOR_FORMAT", "MODEL_FILE_VERSION", "MODEL_FORMAT", "as_tensor", "generate", "load_generator",
           "load_model", "model_meta", "noise", "resolve_device", "save_generator", "save_model"]
