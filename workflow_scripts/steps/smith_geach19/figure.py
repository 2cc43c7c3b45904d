"""Rules `smith_geach19_fig{1,2,3,4,5}`: one figure each (dispatch on the rule)."""

import json
import os
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd
from astropy.io import fits

from workflow_scripts.steps._common import run
from workflow_scripts.studies.smith_geach19 import figures as figs
from workflow_scripts.studies.smith_geach19.data import Normalisation
from workflow_scripts.studies.smith_geach19.tessellate import noise_for_field, one_shot
from workflow_scripts.train.inference import load_model

#: side of the Fig 1 images (output pixels)
FIG1_SIDE = 192
#: Fig 3: thumbnails per kind, their side (px) and the magnitude range of their sources (Smith & Geach: 21-26)
FIG3_N, FIG3_SIDE, FIG3_MAGS = 50, 48, (21.0, 26.0)


def _thumbnails(img: np.ndarray, cat: pd.DataFrame, band: str) -> list[np.ndarray]:
    """Up to FIG3_N thumbnails (3, s, s) of the brightest sources in FIG3_MAGS that lie fully inside ``img``."""
    h = FIG3_SIDE // 2
    m = cat[f"mag_{band}"].to_numpy(float)
    x, y = cat["x"].to_numpy(float), cat["y"].to_numpy(float)
    n = img.shape[-1]
    ok = (m > FIG3_MAGS[0]) & (m < FIG3_MAGS[1]) & (x > h) & (y > h) & (x < n - h - 1) & (y < n - h - 1)
    out = []
    for i in np.flatnonzero(ok)[np.argsort(m[ok])][:FIG3_N]:
        xi, yi = int(round(x[i])), int(round(y[i]))
        out.append(img[:, yi - h:yi + h, xi - h:xi + h])
    return out


def _scaled(paths: list[str], meta: dict) -> np.ndarray:
    """The bands of one field, from the survey's units to the training field's scale (its normalisation)."""
    cube = np.stack([np.asarray(fits.getdata(p), np.float32) for p in paths])
    return Normalisation.from_dict(meta["normalisation"]).forward(cube, clip=False)


def _catalogs(inp: Any) -> dict[str, pd.DataFrame]:
    """The real, generated and catalogue-mock catalogues of a figure rule's inputs, by the figures' names."""
    return {"real": pd.read_parquet(inp.real), "generated": pd.read_parquet(inp.generated),
            "catalogue mock": pd.read_parquet(inp.mock)}


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    which = snakemake.rule.removeprefix("smith_geach19_")
    out = (snakemake.output.png, snakemake.output.pdf)
    meta = json.loads(open(snakemake.input.meta).read())
    if which == "fig1":
        ens = json.loads(open(snakemake.input.ensemble).read())["snapshots"]
        model_dir = os.path.dirname(snakemake.input.ensemble)
        images = []
        for name in ens:
            gen = load_model(os.path.join(model_dir, name), "cpu")
            noise = noise_for_field(snakemake.params.seed + 7, gen.nz, FIG1_SIDE, gen.scale, 2)
            images.append(one_shot(gen, noise, FIG1_SIDE, margin_z=2))
        figs.fig1_evolution(images, [n.removeprefix("generator_").removesuffix(".pt") for n in ens], *out)
    elif which == "fig2":
        real = np.asarray(fits.getdata(snakemake.input.field), np.float32)
        n = study["field_size"]
        gen = _scaled(snakemake.input.images[:len(study["bands"])], meta)
        mock = _scaled(list(snakemake.input.mock), meta)
        side = min(n, real.shape[-1])
        figs.fig2_fields(real[:, :side, :side], gen[:, :side, :side], meta["pixel_scale"], *out,
                         mock=mock[:, :side, :side])
    elif which == "fig3":
        real_img = np.asarray(fits.getdata(snakemake.input.field), np.float32)
        gen_img = _scaled(snakemake.input.images[:len(study["bands"])], meta)
        band = study["bands"][1]
        cats = {"real": pd.read_parquet(snakemake.input.real), "generated": pd.read_parquet(snakemake.input.generated)}
        cats["generated"] = cats["generated"][cats["generated"]["realisation"] == 0]
        thumbs = {k: _thumbnails(img, cats[k], band) for k, img in (("real", real_img), ("generated", gen_img))}
        figs.fig3_thumbnails(thumbs["real"], thumbs["generated"], snakemake.params.seed, *out, snakemake.output.key,
                             f"{len(thumbs['real'])} real and {len(thumbs['generated'])} generated sources, "
                             f"{FIG3_MAGS[0]:g} < {band} < {FIG3_MAGS[1]:g}, shuffled (key: {snakemake.output.key})")
    elif which == "fig4":
        metrics = json.loads(open(snakemake.input.metrics).read())
        figs.fig4_magnitudes(_catalogs(snakemake.input), metrics["comparison"], metrics["mock"], study["bands"],
                             *out)
    elif which == "fig5":
        areas = json.loads(open(snakemake.input.areas).read())
        areas["catalogue mock"] = json.loads(open(snakemake.input.mock_summary).read())["area_arcmin2"]
        figs.fig5_counts_colours_sizes(_catalogs(snakemake.input), areas, study["bands"],
                                       study["validation"]["mag_limit"], *out)
    log.info("%s written", snakemake.output.png)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
