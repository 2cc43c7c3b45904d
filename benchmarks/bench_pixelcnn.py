"""Throughput of the PixelCNN of the likelihood-ratio study (Zanisi et al. 2021), printed as a table: training
images/s (one Adam step of :class:`~workflow_scripts.train.LikelihoodObjective`, discretised logistic mixture) and
scoring images/s (per-pixel log-likelihoods in eval mode, what the score step runs).

    python benchmarks/bench_pixelcnn.py                   # CPU (and CUDA when present): demo and paper networks
    python benchmarks/bench_pixelcnn.py --size 32 --filters 32 --n-resnet 2 --threads 1

Two set-ups: the demo's (``--filters`` 16, ``--n-resnet`` 1) and the authors' backbone (64 filters, 3 resnet
blocks), both on 32 x 32 stamps (64^2 zoomed by 0.5). Synthetic quantised inputs; random weights.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from workflow_scripts.models.pixelcnn import PixelCNN, quantize
from workflow_scripts.train import LikelihoodObjective, StepContext, TrainConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn: Callable[[], Any], images: int, seconds: float, device: torch.device) -> float:
    """images per second of ``fn`` (``images`` per call), called for at least ``seconds`` after one warm-up."""
    fn()
    _sync(device)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or n < 2:
        fn()
        n += 1
    _sync(device)
    return images * n / (time.perf_counter() - t0)


def bench(device: torch.device, filters: int, n_resnet: int, size: int, batch: int, seconds: float,
          amp: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    model = PixelCNN(filters=filters, n_resnet=n_resnet).to(device)
    objective = LikelihoodObjective(model, log_prob=model.params_log_prob)
    cfg = TrainConfig(lr=1e-3, device=str(device), amp=amp)
    opts = objective.optimizers(cfg)
    use_amp = amp and device.type == "cuda"
    scalers = {k: torch.amp.GradScaler(device.type, enabled=use_amp) for k in opts}
    ctx = StepContext(device=device, amp=use_amp, config=cfg, modules=objective.modules, optimizers=opts,
                      scalers=scalers)
    x = quantize(torch.rand(batch, 1, size, size, device=device) * 2 - 1)
    train_rate = timed_rate(lambda: objective.step(x, ctx), batch, seconds, device)
    model.eval()

    def score() -> None:
        with torch.no_grad():
            model.log_prob_pixels(x)

    return train_rate, timed_rate(score, batch, seconds, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--n-resnet", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per row")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--no-paper", action="store_true", help="skip the authors' 64-filter, 3-block network")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setups = [("ours", args.filters, args.n_resnet)] + ([] if args.no_paper else [("authors'", 64, 3)])
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"PixelCNN on {args.size}x{args.size} stamps, batch {args.batch}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':<8} {'network':<10} {'filters':>7} {'blocks':>6} {'train img/s':>12} {'score img/s':>12}")
    for dev in devices:
        for name, filters, blocks in setups:
            tr, sc = bench(dev, filters, blocks, args.size, args.batch, args.seconds, amp=True)
            print(f"{dev.type:<8} {name:<10} {filters:>7} {blocks:>6} {tr:>12.0f} {sc:>12.0f}")


if __name__ == "__main__":
    main()
