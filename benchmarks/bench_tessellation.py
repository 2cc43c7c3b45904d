"""Tessellation of a Spatial-GAN field streamed to FITS (Smith & Geach 2019): Mpix/s and the process's peak memory,
printed, for a field of any side (default 16384^2 x 3: the issue's memory check, <= 2 GB on CPU).

    python benchmarks/bench_tessellation.py                          # 16384^2, a small generator, CPU
    python benchmarks/bench_tessellation.py --side 3232 --filters 256 128 64 32   # the paper's realisation
    python benchmarks/bench_tessellation.py --device cuda --side 87040            # the paper's field, on a GPU
    python benchmarks/bench_tessellation.py --device cuda --side 16384 --filters 256 128 64 32 --bf16 --channels-last

The generator has random weights (speed and memory do not depend on them); the FITS files go to ``--out`` (a
temporary folder by default, removed afterwards). Memory is the peak resident set of this process (``ru_maxrss``)
before and after, so what the field adds is the difference. ``--bf16`` runs the generator under autocast to
bfloat16 and ``--channels-last`` stores its weights channels-last (speed options to try on a GPU; the pipeline
generates in float32, so the fields do not depend on the device).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from torch import nn

from workflow_scripts.models.sgan import SGANGenerator
from workflow_scripts.studies.smith_geach19.tessellate import (FitsStreamWriter, field_header, field_wcs,
                                                               noise_for_field, tessellate)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Autocast(nn.Module):
    """The generator run under ``torch.autocast`` to ``dtype`` (its ``nz`` and ``scale`` passed through)."""

    def __init__(self, generator: SGANGenerator, dtype: torch.dtype) -> None:
        super().__init__()
        self.generator, self.dtype = generator, dtype
        self.nz, self.scale = generator.nz, generator.scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, dtype=self.dtype):
            return self.generator(z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=16384)
    ap.add_argument("--filters", type=int, nargs="+", default=[32, 16, 8, 8])
    ap.add_argument("--tile-z", type=int, default=32)
    ap.add_argument("--margin-z", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--bf16", action="store_true", help="autocast the generator to bfloat16")
    ap.add_argument("--channels-last", action="store_true", help="the generator's weights channels-last")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    gen = SGANGenerator(nz=50, channels=3, filters=args.filters).eval()
    if args.channels_last:
        gen = gen.to(memory_format=torch.channels_last)
    run: nn.Module = Autocast(gen, torch.bfloat16) if args.bf16 else gen
    precision = ("bf16" if args.bf16 else "fp32") + (", channels-last" if args.channels_last else "")
    side = args.side - args.side % gen.scale
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tessellation_"))
    before = peak_mb()
    bands = ["F606W", "F775W", "F814W"]
    meta = {"TELESCOP": "HST", "INSTRUME": "ACS/WFC", "BUNIT": "electrons/s",
            "PHOTZP": {"F606W": 26.505, "F775W": 25.678, "F814W": 25.947}}
    prov = {"pipeline_version": "bench", "config_hash": "bench", "seed": 0, "source": "derived"}
    wcs = field_wcs(53.16, -27.78, side, 0.06)
    writer = FitsStreamWriter([out / f"{b}.fits" for b in bands], side,
                              [field_header(wcs, b, meta, prov) for b in bands], lambda b, t: t)
    noise = noise_for_field(1, gen.nz, side, gen.scale, args.margin_z)
    t0 = time.perf_counter()
    try:
        tiles = tessellate(run, noise, side, tile_z=args.tile_z, margin_z=args.margin_z, write=writer,
                           device=args.device)
    finally:
        writer.close()
    seconds = time.perf_counter() - t0
    size_gb = sum(f.stat().st_size for f in out.glob("*.fits")) / 2**30
    print("| field | filters | device, threads | precision | tiles | seconds | Mpix/s (x3 bands) | FITS on disk | "
          "peak RSS |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    print(f"| {side}^2 x 3 | {'-'.join(map(str, args.filters))} | {args.device}, {args.threads} | {precision} | "
          f"{tiles} | "
          f"{seconds:.1f} | {3 * side * side / 1e6 / seconds:.1f} | {size_gb:.2f} GB | "
          f"{peak_mb():.0f} MB (before: {before:.0f} MB) |")
    if not args.out:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
