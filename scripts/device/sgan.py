"""The deep-field study's Spatial-GAN trained for a fixed time on a lent GPU, then judged here as the pipeline judges it.

    # on the GPU machine (scripts/device/session.sh runs this): train until the minutes are spent
    python3 scripts/device/sgan.py train --field .device/data/training_field.fits --preset presets/paper.yaml \\
        --minutes 4 --out $OUT/sgan
    # here, on the files that came back: realisations, source extraction, KS tests against the real field
    python scripts/device/sgan.py evaluate --workdir /tmp/demo --snapshots <files_at>/sgan

``train`` runs the study's own objective (``smith_geach19.model``, with the presets' overrides) through the shared
loop on the prepared field of a pipeline run, one epoch at a time, keeps a generator after every epoch and stops
before the next epoch would pass the time budget; the last ``--members`` generators are the self-ensemble. It
writes them, ``losses.csv`` and ``ensemble.json`` (epochs, seconds, images/s, device) to ``--out``: at most
``members + 2`` files, within what the device tool brings back.

``evaluate`` does what the rules ``smith_geach19_fields``, ``_catalog`` and ``_metrics`` do with an ensemble, in
memory: ``realisations`` fields of ``field_size`` from the snapshots in turn, with the pipeline's noise seeds,
tessellated; the study's source extraction on each; the comparison with the real catalogue of the same pipeline
run (``catalog_real.parquet``): KS p, median offsets and the counts ratio, printed with their goals, and a PNG of
the real field beside a generated one. Given the pipeline's own ensemble it gives the pipeline's numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from workflow_scripts.config import load_config  # noqa: E402


def train_for(args: argparse.Namespace) -> None:
    import torch
    from astropy.io import fits

    from workflow_scripts.studies.smith_geach19.data import CropDataset
    from workflow_scripts.studies.smith_geach19.model import build_objective, train_config
    from workflow_scripts.train.loop import train

    config = load_config(*args.preset)
    study, seed = config["smith_geach19"], config["seed"] if args.seed is None else args.seed
    model = study["model"]
    field = np.asarray(fits.getdata(args.field), np.float32)
    work, out = Path(args.work or tempfile.mkdtemp(prefix="sgan_")), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    data = CropDataset(field, study["crop_size"], model["crops_per_epoch"], seed)
    budget = 60.0 * args.minutes
    print(f"Spatial-GAN on {args.field} {field.shape}: g {model['g_filters']}, d {model['d_filters']}, crops "
          f"{study['crop_size']} px, {model['crops_per_epoch']} per epoch, batch {model['batch_size']}, "
          f"{args.minutes} min on {args.device}", flush=True)
    t0, last, epoch, snaps, result = time.monotonic(), 0.0, 0, [], None
    while epoch < model["epochs"]:
        epoch += 1
        start = time.monotonic()
        result = train(build_objective(model, field), data, train_config(model, epoch, seed, args.device), work,
                       progress=False)
        result.raise_if_preempted()
        snap = work / f"generator_epoch{epoch:04d}.pt"
        shutil.copyfile(result.model_path, snap)
        snaps.append(snap)
        last = time.monotonic() - start
        row = result.history[-1]
        print(f"epoch {epoch}: {last:.1f} s, D(real) {row['d_real']:.3f}, D(fake) {row['d_fake']:.3f}, "
              f"{row['images_per_s']:.0f} images/s", flush=True)
        if time.monotonic() - t0 + 1.1 * last > budget:
            break
    assert result is not None
    out.mkdir(parents=True, exist_ok=True)
    keep = snaps[-args.members:]
    for p in keep:
        shutil.copyfile(p, out / p.name)
    shutil.copyfile(work / "losses.csv", out / "losses.csv")
    summary = {"snapshots": [p.name for p in keep], "epochs": epoch, "seconds": time.monotonic() - t0,
               "steps": result.global_step, "images_per_second": result.images_per_second, "device": args.device,
               "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "model": model, "crop_size": study["crop_size"], "presets": args.preset}
    (out / "ensemble.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("epochs", "seconds", "steps", "images_per_second")}), flush=True)


def draw_field(generator_path: str | Path, study: dict, seed: int, realisation: int, meta: dict) -> np.ndarray:
    """Realisation ``realisation`` of ``study['field_size']`` from one generator, in the survey's units: the noise,
    tiles and unit conversion of the rule ``smith_geach19_fields`` (on CPU)."""
    from workflow_scripts.studies.smith_geach19.data import Normalisation
    from workflow_scripts.studies.smith_geach19.tessellate import realisation_noise, tessellate_array
    from workflow_scripts.train.inference import load_model

    gen = load_model(generator_path, "cpu")
    n, tess = study["field_size"], study["tessellation"]
    noise = realisation_noise(seed, realisation, gen.nz, n, gen.scale, tess["margin_z"])
    img = tessellate_array(gen, noise, n, tile_z=tess["tile_z"], margin_z=tess["margin_z"])
    return Normalisation.from_dict(meta["normalisation"]).inverse(img)


def evaluate(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    from workflow_scripts.studies.smith_geach19.data import read_real_field
    from workflow_scripts.studies.smith_geach19.figures import fig2_fields
    from workflow_scripts.studies.smith_geach19.metrics import GOALS
    from workflow_scripts.studies.smith_geach19.validation import compare, extract, extraction_settings

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    config = load_config(*args.configfile)
    study, seed = config["smith_geach19"], config["seed"] if args.seed is None else args.seed
    res = Path(args.workdir) / "results" / "smith_geach19"
    meta = json.loads((res / "training_field.json").read_text())
    ens = json.loads((Path(args.snapshots) / "ensemble.json").read_text())
    bands, n, val = study["bands"], study["field_size"], study["validation"]
    kw = extraction_settings(val)
    cats, field = [], None
    for r in range(study["realisations"]):
        name = ens["snapshots"][r % len(ens["snapshots"])]
        t0 = time.perf_counter()
        field = draw_field(Path(args.snapshots) / name, study, seed, r, meta)
        cat = extract(dict(zip(bands, field)), meta["PHOTZP"], meta["pixel_scale"], what=name, generated=True,
                      **kw)
        print(f"realisation {r} from {name}: {n}^2 in {time.perf_counter() - t0:.1f} s, {len(cat)} sources",
              flush=True)
        cats.append(cat.assign(realisation=r))
    area = json.loads((res / "areas.json").read_text())["real"]
    comparison = compare(pd.read_parquet(res / "catalog_real.parquet"), pd.concat(cats, ignore_index=True), bands,
                         mag_limit=val["mag_limit"], real_area_arcmin2=area,
                         generated_area_arcmin2=len(cats) * n * n * (meta["pixel_scale"] / 60) ** 2)
    if "epochs" in ens:  # written by train
        print(f"\ntrained {ens['epochs']} epochs ({ens['steps']} steps, {ens['seconds'] / 60:.1f} min on "
              f"{ens['device_name']})")
    print(f"{len(cats)} realisations of {n}^2 from {len(ens['snapshots'])} generators; mag < {val['mag_limit']}")
    for b, c in comparison["bands"].items():
        print(f"  {b}: KS p {c['ks_p']:.3g} (goal > {GOALS['ks_p_min']}), median offset {c['median_offset']:+.2f} mag "
              f"(goal |x| <= {GOALS['median_offset_max']}); {c['n_generated']} generated / {c['n_real']} real "
              f"sources, medians {c['median_generated']:.2f} / {c['median_real']:.2f}")
    print(f"  counts ratio {comparison['counts_ratio']:.4g} (goal within {GOALS['counts_ratio_tolerance']:.0%} of 1)")
    real = read_real_field(res / "training_field.fits", meta)
    side = min(n, real.shape[-1])
    fig2_fields(real[:, :side, :side], field[:, :side, :side], meta["pixel_scale"], args.png, None)
    print(f"figure: {args.png}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train for a time budget (the GPU machine)")
    t.add_argument("--field", required=True, help="a pipeline run's results/smith_geach19/training_field.fits")
    t.add_argument("--preset", action="append", default=[], help="config overlays, in order (e.g. presets/paper.yaml)")
    t.add_argument("--minutes", type=float, default=4.0)
    t.add_argument("--members", type=int, default=3, help="the last generators kept (the self-ensemble)")
    t.add_argument("--device", default="cuda")
    t.add_argument("--seed", type=int, default=None, help="default: the config's (the pipeline's)")
    t.add_argument("--work", default=None, help="the loop's folder, where checkpoints stay (default: a new temporary "
                   "one; an existing one resumes)")
    t.add_argument("--out", required=True)
    e = sub.add_parser("evaluate", help="realisations and source extraction of the snapshots (here)")
    e.add_argument("--workdir", required=True, help="the pipeline run whose field was trained on")
    e.add_argument("--snapshots", required=True, help="the folder train wrote (ensemble.json and generators)")
    e.add_argument("--configfile", action="append", default=[], help="the run's config overlays, in order")
    e.add_argument("--seed", type=int, default=None, help="default: the config's (the pipeline's noise)")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--png", default="sgan_device_fields.png")
    args = ap.parse_args(argv)
    (train_for if args.cmd == "train" else evaluate)(args)


if __name__ == "__main__":
    main()
