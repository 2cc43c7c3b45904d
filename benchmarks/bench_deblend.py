"""Throughput of the deblending study's steps, printed as a table (speed goals live here, not in tests).

    python benchmarks/bench_deblend.py            # CPU, and CUDA when present
    python benchmarks/bench_deblend.py --quick    # smaller sizes
    python benchmarks/bench_deblend.py --only peaks

Synthetic inputs of the study's shapes: 64x64 hi-res and 21x21 low-res stamps, 1 and 7 bands.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from workflow_scripts.imaging.degrade import rebin_flux, target_psf_image
from workflow_scripts.studies.hemmati22.detect import detect
from workflow_scripts.models import SRDiscriminator, SRGenerator
from workflow_scripts.train import ConditionalGAN, TrainConfig, generate, train


def blobs(n: int, size: int, rng: np.random.Generator, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """n stamps each holding two Gaussian galaxies at random positions, plus unit noise; and the true centres."""
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(size * 0.3, size * 0.7, size=(n, 2, 2))
    img = rng.normal(size=(n, size, size)).astype(np.float32)
    for k in range(2):
        cx, cy = centres[:, k, 0, None, None], centres[:, k, 1, None, None]
        img += 40.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma_px**2))
    return img, centres


def rate(fn, n: int, repeat: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return n * repeat / (time.perf_counter() - t0)


def bench_training(device: str, channels: int, base: int, n: int, epochs: int) -> float:
    lo = torch.rand(n, channels, 21, 21) * 2 - 1
    hi = torch.rand(n, channels, 64, 64) * 2 - 1
    objective = ConditionalGAN(SRGenerator(channels, base=base), SRDiscriminator(channels, base=base))
    with tempfile.TemporaryDirectory() as out:
        res = train(objective, (lo, hi), TrainConfig(epochs=epochs, batch_size=64, device=device), out, progress=False)
    return res.images_per_second or float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["peaks", "gan"], help="run one group of benchmarks")
    args = parser.parse_args()
    n = 1000 if args.quick else 5000
    rng = np.random.default_rng(0)
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices: {', '.join(devices)}")

    if args.only != "gan":
        hi, centres = blobs(n, 64, rng, 2.0)
        truth = pd.DataFrame(centres.reshape(n, 4), columns=["x_1", "y_1", "x_2", "y_2"])
        lo = rebin_flux(hi, 3, 21)
        truth_lo = pd.DataFrame(centres.reshape(n, 4) / 3.0, columns=["xlo_1", "ylo_1", "xlo_2", "ylo_2"])
        for label, cube, table, grid, psf, radius in (
                ("64x64 hi-res", hi, truth, "hires", target_psf_image(0.1, 0.06, 15), 5.0),
                ("21x21 low-res", lo, truth_lo, "lowres", target_psf_image(0.6, 0.18, 11), 5.0 / 3)):
            rows.append((f"detection (filter, noise, peaks, prominence, matching), {label}", "cpu", rate(
                lambda: detect(cube[:, None], table, kind="blend", grid=grid, zeropoints=[25.0], psfs=[psf],
                               threshold_sigma=5.0, min_prominence=3.0, radius_px=radius,
                               search_radius_px=30.0 if grid == "hires" else 10.0), n), "blends/s"))

    for device in (devices if args.only != "peaks" else []):
        for channels in (1, 7):
            for base in (32, 64):
                ips = bench_training(device, channels, base, 256 if args.quick else 512, 2)
                rows.append((f"SR-GAN training, {channels} band(s), base {base}", device, ips, "images/s"))
        gen = SRGenerator(7, base=64).to(device).eval()
        x = torch.rand(n, 7, 21, 21) * 2 - 1
        rows.append(("SR-GAN inference, 7 bands, base 64", device,
                     rate(lambda: generate(gen, x, batch_size=512, device=device), n), "blends/s"))

    width = max(len(r[0]) for r in rows)
    for what, device, value, unit in rows:
        print(f"{what:<{width}}  {device:>4}  {value:10.1f} {unit}")


if __name__ == "__main__":
    main()
