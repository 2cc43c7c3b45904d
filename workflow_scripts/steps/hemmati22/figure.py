"""Rules `hemmati22_fig{2,3,4,5,6,8,9}`: one paper figure each, from the study's files (dispatch on the rule)."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

import numpy as np
import pandas as pd

from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.studies.hemmati22 import figures as figs
from workflow_scripts.studies.hemmati22.blends import read_blends
from workflow_scripts.studies.hemmati22.metrics import showcase_blends
from workflow_scripts.studies.hemmati22.paper import BLEND_PARAMETERS, FIG5_PARAMETERS, METHOD_LABELS, PAPER
from workflow_scripts.steps._common import run


def _band_slice(stamps: Any, bands: Any) -> np.ndarray:
    return stamps.cube[:, [stamps.bands.index(b) for b in bands]]


def _peaks(table: pd.DataFrame, sample: str, method: str, indexes: Any) -> list[np.ndarray]:
    sel = table[(table["sample"] == sample) & (table["method"] == method)]
    return [sel.loc[sel["index"] == i, ["x", "y"]].to_numpy() for i in indexes]


def fig2(snakemake: Any, study: dict) -> None:
    fake = read_cutouts(snakemake.input.samples)
    real = _band_slice(read_cutouts(snakemake.input.train), fake.bands)[: fake.n, 0]
    figs.fig2_dcgan_samples(real, fake.cube[:, 0], snakemake.output.png, snakemake.output.pdf)


def fig3(snakemake: Any, study: dict) -> None:
    hi, lo, gan = read_blends(snakemake.input.hi), read_cutouts(snakemake.input.lo), read_cutouts(snakemake.input.gan)
    _, first = np.unique(hi.truth["id"].to_numpy(), return_index=True)   # five different galaxies
    pick = np.sort(first)[:5]
    band = [study["band"]]
    figs.fig3_superresolution(_band_slice(hi, band)[pick, 0], _band_slice(lo, band)[pick, 0],
                              _band_slice(gan, band)[pick, 0], snakemake.output.png, snakemake.output.pdf,
                              pixel_scale_hi=hi.pixel_scale, pixel_scale_lo=lo.pixel_scale,
                              row_labels=[f"id {i}" for i in hi.truth["id"].to_numpy()[pick]])


def _blend_figure(snakemake: Any, study: dict, bands: list[str], methods: dict[str, str]) -> None:
    hi, lo, gan = read_blends(snakemake.input.hi), read_cutouts(snakemake.input.lo), read_cutouts(snakemake.input.gan)
    detections = pd.read_parquet(snakemake.input.detections)
    pick = showcase_blends(detections, methods["hi"])
    peaks_table = pd.read_parquet(snakemake.input.peaks)
    peaks = {key: _peaks(peaks_table, "blends", method, pick) for key, method in methods.items()}
    truth_hi = hi.truth[["x_1", "y_1", "x_2", "y_2"]].to_numpy().reshape(-1, 2, 2)[pick]
    truth_lo = hi.truth[["xlo_1", "ylo_1", "xlo_2", "ylo_2"]].to_numpy().reshape(-1, 2, 2)[pick]
    labels = [f"sep/ΣFWHM {detections['sep_over_fwhm_sum'].iloc[i]:.2f}" for i in pick]
    common = dict(pixel_scale_hi=hi.pixel_scale, pixel_scale_lo=lo.pixel_scale, row_labels=labels)
    if len(bands) == 1:
        figs.fig4_blends_with_peaks(_band_slice(hi, bands)[pick, 0], _band_slice(lo, bands)[pick, 0],
                                    _band_slice(gan, bands)[pick, 0], truth_hi, truth_lo, peaks,
                                    snakemake.output.png, snakemake.output.pdf, **common)
    else:
        figs.fig8_multiband(_band_slice(hi, bands)[pick], _band_slice(lo, bands)[pick], _band_slice(gan, bands)[pick],
                            truth_hi, truth_lo, peaks, bands, snakemake.output.png, snakemake.output.pdf,
                            zeropoints=hi.zeropoints, **common)


def fig4(snakemake: Any, study: dict) -> None:
    _blend_figure(snakemake, study, [study["band"]], {"hi": "hi", "lo": "lo", "gan": study["gan_models"]["gan"]})


def fig8(snakemake: Any, study: dict) -> None:
    _blend_figure(snakemake, study, snakemake.params.bands,
                  {"hi": "hi7", "lo": "lo7", "gan": study["gan_models"]["gan7"]})


def _binned(snakemake: Any, rename: dict[str, str], key: str = "binned") -> pd.DataFrame:
    df = pd.read_parquet(snakemake.input[key])
    df = df[df["method"].isin(rename)].copy()
    df["method"] = df["method"].map(rename)
    return df


def fig5(snakemake: Any, study: dict) -> None:
    rename = {"hi": "hi", "lo": "lo", study["gan_models"]["gan"]: "gan"}
    df = _binned(snakemake, rename)
    coded = _binned(snakemake, rename, "binned_as_coded")
    binned = {p: df[df["parameter"] == p].drop(columns="parameter") for p in FIG5_PARAMETERS}
    as_coded = {p: coded[coded["parameter"] == p].drop(columns="parameter") for p in FIG5_PARAMETERS}
    figs.fig5_detection_fraction(binned, snakemake.output.png, snakemake.output.pdf,
                                 reference=PAPER["detection_fraction"],
                                 as_coded={p: t for p, t in as_coded.items() if len(t)})


def fig9(snakemake: Any, study: dict) -> None:
    gm = study["gan_models"]
    one = _binned(snakemake, {"hi": "hi", "lo": "lo", gm["gan"]: "gan1"})
    seven = _binned(snakemake, {"hi7": "hi", "lo7": "lo", gm["gan7"]: "gan7"})
    sep = "sep_over_fwhm_sum"
    figs.fig9_one_vs_seven(one[one["parameter"] == sep].drop(columns="parameter"),
                           seven[seven["parameter"] == sep].drop(columns="parameter"),
                           snakemake.output.png, snakemake.output.pdf)


def fig6(snakemake: Any, study: dict) -> None:
    from workflow_scripts.studies.hemmati22.som import load_som, plot_som  # sklearn + scipy.stats: ~2 s, Fig 6 only

    detections = pd.read_parquet(snakemake.input.detections)
    som, scaler, _ = load_som(snakemake.input.som)
    gan = study["gan_models"]["gan"]
    outcomes = {"hi": detections["outcome_hi"] == "both", "lo": detections["outcome_lo"] == "both",
                "GAN": detections[f"outcome_{gan}"] == "both"}
    plot_som(som, scaler, detections[list(BLEND_PARAMETERS)], {k: v.to_numpy() for k, v in outcomes.items()},
             snakemake.output.png, titles={"hi": METHOD_LABELS["hi"], "lo": METHOD_LABELS["lo"],
                                           "GAN": f"{METHOD_LABELS['gan']} ({gan})"})


FIGURES = {"hemmati22_fig2": fig2, "hemmati22_fig3": fig3, "hemmati22_fig4": fig4, "hemmati22_fig5": fig5,
           "hemmati22_fig6": fig6, "hemmati22_fig8": fig8, "hemmati22_fig9": fig9}


def main(snakemake: Any, log: Any) -> None:
    study = dict(snakemake.params.study)
    FIGURES[snakemake.rule](snakemake, study)
    log.info("wrote %s", snakemake.output.png)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
