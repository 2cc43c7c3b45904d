"""Rule `smith_geach19_fields`: realisations of the self-ensemble tessellated to ``field_size`` and streamed to one
FITS per band and realisation; the seamlessness check, a timed realisation and the job's peak memory."""

import json
import os
import resource
import time
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import torch

from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.smith_geach19.data import Normalisation
from workflow_scripts.studies.smith_geach19.tessellate import (FitsStreamWriter, field_header, field_wcs,
                                                               noise_for_field, one_shot, realisation_noise,
                                                               tessellate, tessellate_array)
from workflow_scripts.train.inference import load_model, resolve_device

#: side of the field compared tiled vs one-shot (output pixels)
SEAMLESS_SIDE = 256


def main(snakemake: Any, log: Any) -> None:
    study, seed = snakemake.params.study, snakemake.params.seed
    threads = max(1, min(snakemake.threads, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    # a saturating sigmoid generator makes subnormal floats, which run ~5x slower on x86 CPUs: flush them
    torch.set_flush_denormal(True)
    meta = json.loads(open(snakemake.input.meta).read())
    norm = Normalisation.from_dict(meta["normalisation"])
    ens = json.loads(open(snakemake.input.ensemble).read())["snapshots"]
    model_dir = os.path.dirname(snakemake.input.ensemble)
    device = resolve_device(snakemake.params.device)
    tess = study["tessellation"]
    n = study["field_size"]
    bands = study["bands"]
    prov = step_provenance(snakemake, "derived")
    wcs = field_wcs(*meta["centre"], n, meta["pixel_scale"])
    headers = [field_header(wcs, b, meta, prov) for b in bands]
    out = list(snakemake.output.images)
    for r in range(study["realisations"]):
        gen = load_model(os.path.join(model_dir, ens[r % len(ens)]), device)
        noise = realisation_noise(seed, r, gen.nz, n, gen.scale, tess["margin_z"])
        writer = FitsStreamWriter(out[r * len(bands):(r + 1) * len(bands)], n, headers,
                                  norm.inverse_band)
        try:
            tiles = tessellate(gen, noise, n, tile_z=tess["tile_z"], margin_z=tess["margin_z"], write=writer,
                               device=device)
        except BaseException:
            writer.close(ok=False)
            raise
        writer.close()
        log.info("realisation %d from %s: %d tiles", r, ens[r % len(ens)], tiles)
    gen = load_model(os.path.join(model_dir, ens[-1]), device)
    # seamless: the same noise, tiled vs in one go, over the interior
    noise = noise_for_field(seed + 999, gen.nz, SEAMLESS_SIDE, gen.scale, tess["margin_z"])
    tiles = tessellate_array(gen, noise, SEAMLESS_SIDE, tile_z=max(1, tess["tile_z"] // 4), margin_z=tess["margin_z"],
                             device=device)
    whole = one_shot(gen, noise, SEAMLESS_SIDE, margin_z=tess["margin_z"], device=device)
    seamless = float(np.abs(tiles - whole).max())
    # one realisation of the benchmark side, timed (written nowhere)
    side = study["benchmark_side"]
    side -= side % gen.scale
    noise = noise_for_field(seed + 998, gen.nz, side, gen.scale, tess["margin_z"])
    t0 = time.perf_counter()
    tessellate(gen, noise, side, tile_z=tess["tile_z"], margin_z=tess["margin_z"], write=lambda *a: None,
               device=device, progress=False)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    summary = {"field_size": n, "realisations": study["realisations"], "seamless_max_abs_diff": seamless,
               "benchmark_side": side, "realisation_seconds": seconds, "peak_rss_mb": rss,
               "device": device.type, "threads": threads,
               "mpix_per_s": len(bands) * side * side / 1e6 / seconds}
    log.info("generation: %s", summary)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
