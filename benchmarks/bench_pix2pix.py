"""Throughput of the pix2pix of Pearce-Casey et al. 2023 (3 short-wavelength bands in, 3 long-wavelength bands out),
printed as a table: training images/s (one discriminator step + one generator step of
:class:`~workflow_scripts.train.ConditionalGAN` with the conditional PatchGAN and 100 x L1) and inference cutouts/s.

    python benchmarks/bench_pix2pix.py                    # CPU (and CUDA when present): demo and paper networks
    python benchmarks/bench_pix2pix.py --base 64 --depth 6 --size 90
    python benchmarks/bench_pix2pix.py --bf16             # also bf16 autocast rows on CUDA
    python benchmarks/bench_pix2pix.py --no-paper --threads 1

Two set-ups: ours (``--base`` 32, ``--depth`` 5 on ``--size`` 90x90 cutouts, padded to 96) and the paper's (base 64,
depth 8 on 256x256, the cutouts resized). On CPU the paper's network runs fewer steps of a smaller batch
(``--paper-cpu-batch``), so that the defaults finish in under a minute; its rate is per image all the same.
Synthetic inputs; random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from workflow_scripts.models import PatchDiscriminator, UNetGenerator, init_weights
from workflow_scripts.train import ConditionalGAN, StepContext, TrainConfig


@dataclass
class BF16Context(StepContext):
    """The loop's step context with bfloat16 autocast (no grad scaling needed)."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn: Callable[[], Any], images: int, steps: int, device: torch.device, warmup: int = 1) -> float:
    """images per second of ``fn`` (``images`` per call) over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return images * steps / (time.perf_counter() - t0)


def bench(device: torch.device, base: int, depth: int, size: int, batch: int, steps: int, precision: str,
          infer_batch: int) -> tuple[float, float]:
    """(training images/s, inference cutouts/s) of one set-up."""
    torch.manual_seed(0)
    gen = init_weights(UNetGenerator(3, 3, base=base, depth=depth))
    disc = init_weights(PatchDiscriminator(3, 3, base=base))
    objective = ConditionalGAN(gen, disc)
    for m in objective.modules.values():
        m.to(device).train()
    cfg = TrainConfig(batch_size=batch, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), l1_weight=100.0,
                      device=str(device))
    optimizers = objective.optimizers(cfg)
    amp = precision == "fp16"
    ctx_cls = BF16Context if precision == "bf16" else StepContext
    ctx = ctx_cls(device=device, amp=amp, config=cfg, modules=objective.modules, optimizers=optimizers,
                  scalers={k: torch.amp.GradScaler(device.type, enabled=amp) for k in optimizers},
                  parameters={k: list(m.parameters()) for k, m in objective.modules.items()})
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    y = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    train_ips = timed_rate(lambda: objective.step((x, y), ctx), batch, steps, device)

    gen.eval()
    xs = torch.rand(infer_batch, 3, size, size, device=device) * 2 - 1
    cast = (torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
            if precision != "fp32" else contextlib.nullcontext())

    def infer() -> None:
        with torch.inference_mode(), cast:
            gen(xs)

    return train_ips, timed_rate(infer, infer_batch, steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=32, help="our network's base filters (default 32)")
    parser.add_argument("--depth", type=int, default=5, help="our network's downsamplings (default 5)")
    parser.add_argument("--size", type=int, default=90, help="our cutout side in pixels (default 90)")
    parser.add_argument("--batch", type=int, default=16, help="training batch (the paper: 16)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row on CPU, after one warm-up")
    parser.add_argument("--cuda-steps", type=int, default=20, help="timed steps per row on CUDA")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper's base 64 depth 8 256x256 network")
    parser.add_argument("--paper-cpu-batch", type=int, default=2,
                        help="batch of the paper's network on CPU (default 2, to stay under a minute)")
    parser.add_argument("--paper-cpu-steps", type=int, default=2, help="timed steps of the paper's network on CPU")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast on CUDA")
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
        torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices: "
          + ", ".join(str(d) for d in devices) + (f" ({torch.cuda.get_device_name()})" if len(devices) > 1 else ""))

    ours = (f"ours: base {args.base}, depth {args.depth}, {args.size}x{args.size}", args.base, args.depth, args.size)
    paper = ("paper: base 64, depth 8, 256x256", 64, 8, 256)
    rows = []
    t0 = time.perf_counter()
    for device in devices:
        precisions = ["fp32"] + (["bf16"] if device.type == "cuda" and args.bf16 else [])
        for label, base, depth, size in [ours] + ([] if args.no_paper else [paper]):
            for precision in precisions:
                on_cpu = device.type == "cpu"
                is_paper = on_cpu and (base, depth, size) == paper[1:]
                batch = args.paper_cpu_batch if is_paper else args.batch
                steps = (args.paper_cpu_steps if is_paper else args.steps) if on_cpu else args.cuda_steps
                train_ips, infer_ips = bench(device, base, depth, size, batch, steps, precision,
                                             infer_batch=batch if on_cpu else 64)
                what = f"{label}, batch {batch}"
                rows.append((what, str(device), precision, train_ips, infer_ips))
                print(f"  {what:<48} {device.type:>4} {precision:>4}  train {train_ips:9.1f} images/s  "
                      f"inference {infer_ips:9.1f} cutouts/s", flush=True)
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
