"""The deblending study of Hemmati et al. (2022) as plain functions, one per DAG step.

The building blocks live in :mod:`cutouts`, :mod:`degrade`, :mod:`blends`, :mod:`training`, :mod:`detection` and
:mod:`som`; this module strings them together the way the rules of ``rules/deblend.smk`` need them, so that each
rule script is a few lines of file reading and writing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import map_coordinates

from .cutouts import AsinhScaling, CutoutSet, cutout_gap_arcsec, extract_cutouts, select_galaxies, split_by_declination
from .degrade import degrade, target_psf_image
from .detection import (classify_blends, classify_isolated, estimate_noise_sigma, find_peaks, matched_filter,
                        truth_positions)
from .errors import PipelineError
from .io import Mosaic
from .models import DCGANDiscriminator, DCGANGenerator, SRDiscriminator, SRGenerator
from .surveys import Survey
from .training import (AsinhNoise, ConditionalTask, NoiseToImageTask, TrainConfig, TrainResult, generate,
                       load_generator, noise, train)

log = logging.getLogger(__name__)

#: latent size of the DCGAN (Radford et al. 2016, as in the paper's code)
DCGAN_NZ = 100
#: PSF stamp of the low-resolution (target) images, in target pixels: +-3 FWHM of a 0.6" PSF at 0.18"/px
LOWRES_PSF_SIZE = 21
#: truth columns of a blend that the SOM and Fig 5 use, in this order
BLEND_PARAMETERS = ("sep_over_fwhm_sum", "flux_ratio", "fwhm_sum", "dz")


class StudyError(PipelineError):
    """The deblending study cannot go on with these inputs (too few galaxies, missing PSF, ...)."""


def study_bands(survey: Survey, study: Mapping[str, Any], which: str) -> list[str]:
    """The bands a model or detection uses: ``one`` is the study's band, ``all`` every band of the survey."""
    return [study["band"]] if which == "one" else list(survey.bands)


# ---------------------------------------------------------------------------------------------- cutouts
def prepare_cutouts(mosaics: Mapping[str, Mosaic], catalog: pd.DataFrame, study: Mapping[str, Any],
                    pixel_scale: float) -> tuple[CutoutSet, CutoutSet, dict[str, Any]]:
    """Paper cuts, a declination split with a gap of one cutout, and cutouts of both regions in every band."""
    sel = study["select"]
    galaxies = select_galaxies(catalog, mag_band=sel["mag_band"], mag_max=sel["mag_max"], z_max=sel["z_max"])
    n_selected = len(galaxies)
    galaxies = isolated_only(galaxies, catalog, radius_arcsec=sel["isolation_arcsec"],
                             mag_band=sel["mag_band"], neighbour_mag_max=sel["neighbour_mag_max"])
    any_wcs = next(iter(mosaics.values())).wcs
    gap = cutout_gap_arcsec(study["cutout_size"], pixel_scale, any_wcs)
    train_cat, blend_cat = split_by_declination(galaxies, study["train_fraction"], gap)
    train = extract_cutouts(mosaics, train_cat, study["cutout_size"])
    blend = extract_cutouts(mosaics, blend_cat, study["cutout_size"])
    for name, cs in (("training", train), ("blend", blend)):
        if cs.n < 2:
            raise StudyError(f"only {cs.n} usable {name} cutouts after the cuts ({sel['mag_band']} < "
                             f"{sel['mag_max']}, z < {sel['z_max']}); enlarge the field or relax hemmati22.select")
    summary = {"catalog": int(len(catalog)), "selected": int(n_selected), "isolated": int(len(galaxies)),
               "gap_arcsec": gap,
               "train_region": int(len(train_cat)), "blend_region": int(len(blend_cat)),
               "train_cutouts": train.n, "blend_cutouts": blend.n,
               "train_rejected": train.summary, "blend_rejected": blend.summary}
    return train, blend, summary


def isolated_only(galaxies: pd.DataFrame, catalog: pd.DataFrame, *, radius_arcsec: float, mag_band: str,
                  neighbour_mag_max: float) -> pd.DataFrame:
    """Galaxies with no other catalogue source brighter than ``neighbour_mag_max`` within ``radius_arcsec``.

    The study's blends are two-galaxy blends: a cutout that already holds a detectable neighbour near its
    galaxy would make a three-object "blend" and count the neighbour as a false positive.
    """
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    mags = catalog[f"mag_{mag_band}"].to_numpy(dtype=float)
    bright = catalog[np.isfinite(mags) & (mags < neighbour_mag_max)]
    if len(galaxies) == 0 or len(bright) == 0:
        return galaxies
    gal = SkyCoord(galaxies["ra"].to_numpy() * u.deg, galaxies["dec"].to_numpy() * u.deg)
    nb = SkyCoord(bright["ra"].to_numpy() * u.deg, bright["dec"].to_numpy() * u.deg)
    idx_gal, idx_nb, _, _ = nb.search_around_sky(gal, radius_arcsec * u.arcsec)
    same = galaxies["id"].to_numpy()[idx_gal] == bright["id"].to_numpy()[idx_nb]
    crowded = np.zeros(len(galaxies), bool)
    crowded[idx_gal[~same]] = True
    log.info("isolation: %d of %d selected galaxies have a neighbour (%s < %.1f) within %.2f arcsec; dropped",
             int(crowded.sum()), len(galaxies), mag_band, neighbour_mag_max, radius_arcsec)
    return galaxies[~crowded]


# -------------------------------------------------------------------------------------------- degrading
def degrade_cube(cube: np.ndarray, bands: Sequence[str], psfs: Mapping[str, np.ndarray], target: Survey,
                 target_band: str, hires_scale: float, zeropoints: Sequence[float], profile: str,
                 rng: np.random.Generator) -> np.ndarray:
    """HSC-like images of hi-res stamps: match each band's measured PSF to the target, rebin, add target noise."""
    return degrade(cube, [psfs[b] for b in bands], target, hires_scale, rng, zeropoints=list(zeropoints),
                   target_bands=[target_band] * len(bands), profile=profile)


def search_radius_arcsec(study: Mapping[str, Any], hires_scale: float) -> float:
    """Where a companion can be: the largest blend offset (per axis, so times sqrt 2) plus the match radius."""
    return float(np.sqrt(2.0) * study["max_offset_px"] * hires_scale + study["detection"]["match_radius_arcsec"])


def lowres_psf(target: Survey, target_band: str, profile: str) -> np.ndarray:
    return target_psf_image(target.band(target_band).psf_fwhm, target.pixel_scale, LOWRES_PSF_SIZE, profile=profile)


# --------------------------------------------------------------------------------------------- training
def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 rotations/flips of the last two axes (k = 0 is the identity)."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return np.flip(y, axis=-1) if k >= 4 else y


def augment(arrays: Sequence[np.ndarray], copies: int) -> list[np.ndarray]:
    """``copies`` dihedral copies of every stamp, the same transform for each aligned array (lo and hi).

    Stamps are centred on their galaxy (hi-res 31.5, lo-res 10), so rotations keep lo and hi aligned.
    """
    return [np.concatenate([dihedral(a, k) for k in range(copies)]).astype(np.float32) for a in arrays]


def fit_scaling(cube: np.ndarray) -> AsinhScaling:
    """Invertible per-band asinh scaling of a (N, bands, H, W) cube into [-1, 1] (the generator's tanh range)."""
    return AsinhScaling.fit(cube, per_band=True)


def _scale(scaling: AsinhScaling, cube: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(scaling.forward(cube), dtype=np.float32))


def train_config(model: Mapping[str, Any], seed: int, device: str) -> TrainConfig:
    return TrainConfig(epochs=model["epochs"], batch_size=model["batch_size"], lr_g=model["lr_g"],
                       lr_d=model["lr_d"], betas=(model["beta1"], 0.999), l1_weight=model["l1_weight"],
                       ema_decay=model.get("ema_decay", 0.0), seed=seed, device=device)


def train_gan(model: Mapping[str, Any], hi: np.ndarray, lo: np.ndarray | None, scalings: Mapping[str, AsinhScaling],
              seed: int, device: str, out_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train a DCGAN (``kind: dcgan``, hi-res images only) or an SR-GAN (``kind: srgan``, lo -> hi pairs)."""
    channels = hi.shape[1]
    cfg = train_config(model, seed, device)
    if model["kind"] == "dcgan":
        task = NoiseToImageTask(DCGANGenerator(DCGAN_NZ, channels, base=model["base"]),
                                DCGANDiscriminator(channels, base=model["base"]), nz=DCGAN_NZ)
        data: Any = _scale(scalings["hi"], hi)
    else:
        if lo is None:
            raise StudyError("an srgan needs the low-resolution training images")
        observe = ambient_noise(hi, scalings["hi"]) if model.get("ambient_noise", False) else None
        task = ConditionalTask(SRGenerator(channels, base=model["base"], upsample=model.get("upsample", "transposed"),
                                            skip=model.get("skip", False),
                                            zero_residual=model.get("zero_residual", False)),
                               SRDiscriminator(channels, base=model["base"], conditional=True), observe=observe)
        data = (_scale(scalings["lo"], lo), _scale(scalings["hi"], hi))
    return train(task, data, cfg, out_dir, progress=progress)


def background_sigma(cube: np.ndarray) -> np.ndarray:
    """Per-band per-pixel noise sigma of a (N, bands, H, W) cube: the median over stamps of each stamp's
    clipped-MAD sigma (:func:`estimate_noise_sigma`)."""
    return np.array([float(np.median(estimate_noise_sigma(cube[:, b]))) for b in range(cube.shape[1])])


def ambient_noise(hi: np.ndarray, scaling: AsinhScaling) -> AsinhNoise:
    """The measurement model of ``ambient_noise: true``: white noise of the hi-res training images' sigma, added
    in physical units to the generator's (asinh-scaled) output before the discriminator sees it."""
    sigma = background_sigma(hi)
    bands = hi.shape[1]
    soft = np.broadcast_to(np.atleast_1d(scaling.softening), (bands,))
    scale = np.broadcast_to(np.atleast_1d(scaling.scale), (bands,))
    log.info("ambient noise for the discriminator: sigma %s per pixel", np.array2string(sigma, precision=4))
    return AsinhNoise(sigma, soft, scale)


def super_resolve(generator_path: str | Path, lo: np.ndarray, scalings: Mapping[str, AsinhScaling],
                  device: str = "auto", batch_size: int = 256) -> np.ndarray:
    """GAN hi-res images (physical units) of low-resolution stamps (physical units)."""
    generator = load_generator(generator_path, device)
    out = generate(generator, _scale(scalings["lo"], lo), batch_size=batch_size)
    return scalings["hi"].inverse(np.clip(out, -1.0, 1.0)).astype(np.float32)


def dcgan_samples(generator_path: str | Path, n: int, seed: int, scaling: AsinhScaling,
                  device: str = "auto") -> np.ndarray:
    generator = load_generator(generator_path, device)
    z = noise(n, DCGAN_NZ, seed)
    out = generate(generator, z, batch_size=n)
    return scaling.inverse(np.clip(out, -1.0, 1.0)).astype(np.float32)


# -------------------------------------------------------------------------------------------- detection
def detection_stack(cube: np.ndarray, zeropoints: Sequence[float],
                    psfs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One detection image per stamp: the bands summed in the first band's flux units; and the mean PSF."""
    zp = np.asarray(zeropoints, dtype=float)
    weights = 10.0 ** (-0.4 * (zp - zp[0]))          # band b's unit expressed in band 0's unit
    stack = np.tensordot(cube.astype(np.float64), weights, axes=([1], [0])).astype(np.float32)
    size = max(p.shape[0] for p in psfs)
    psf = np.mean([np.pad(p, (size - p.shape[0]) // 2) for p in psfs], axis=0)
    return stack, psf / psf.sum()


def filtered_snr(stack: np.ndarray, psf: np.ndarray,
                 noise_floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Matched-filtered images in units of their own noise, and that noise (per stamp; at least ``noise_floor``).

    The noise is measured on each filtered image (clipped MAD, pixels without data left out) rather than taken
    from the survey: rotated stamps, summed blends, degraded and GAN images all have correlated noise of
    different levels, and a peak must be significant against the noise of the image it is found in.
    """
    filtered = matched_filter(stack, psf)
    sigma_f = estimate_noise_sigma(filtered, mask=stack != 0)
    if noise_floor is not None:
        floor = np.broadcast_to(np.asarray(noise_floor, dtype=np.float64), sigma_f.shape)
        if not (np.isfinite(floor).all() and (floor >= 0).all()):
            raise StudyError("noise_floor must be finite and >= 0")
        sigma_f = np.maximum(sigma_f, floor)
    return filtered / sigma_f[:, None, None], sigma_f


def within(peaks: Sequence[np.ndarray], centres: np.ndarray, radius: float) -> list[np.ndarray]:
    """Keep the peaks of each stamp within ``radius`` of its centre (x, y)."""
    return [p[np.hypot(p[:, 0] - c[0], p[:, 1] - c[1]) <= radius] if len(p) else p for p, c in zip(peaks, centres)]


#: samples per pixel along the segment between two peaks when looking for the saddle
SADDLE_SAMPLES_PER_PX = 2


def prominent(peaks: Sequence[np.ndarray], snr: np.ndarray, min_prominence: float) -> list[np.ndarray]:
    """Drop secondary peaks that do not rise ``min_prominence`` (in S/N) above the saddle towards a brighter peak.

    ``peaks`` per image, brightest first, (x, y); ``snr`` the matched-filtered S/N images (N, H, W). The saddle
    is the lowest S/N on the straight segment to the nearest brighter kept peak (bilinear samples). Noise
    bumps on the bright wings of a large galaxy clear an absolute threshold but not this contrast test; two
    resolved galaxies have a deep saddle between them. (Our own: the library peak finders have no contrast test.)
    """
    out = []
    for img, pk in zip(snr, peaks):
        if len(pk) < 2:
            out.append(pk)
            continue
        keep = [pk[0]]
        heights = map_coordinates(img, [pk[:, 1], pk[:, 0]], order=1)
        for k in range(1, len(pk)):
            brighter = np.array(keep)
            j = int(np.argmin(np.hypot(*(brighter - pk[k]).T)))
            n = max(2, int(np.ceil(np.hypot(*(brighter[j] - pk[k])) * SADDLE_SAMPLES_PER_PX)) + 1)
            t = np.linspace(0.0, 1.0, n)
            xs = pk[k, 0] + t * (brighter[j, 0] - pk[k, 0])
            ys = pk[k, 1] + t * (brighter[j, 1] - pk[k, 1])
            saddle = map_coordinates(img, [ys, xs], order=1).min()
            if heights[k] - saddle >= min_prominence:
                keep.append(pk[k])
        out.append(np.array(keep).reshape(-1, 2))
    return out


def detect(cube: np.ndarray, truth: pd.DataFrame, *, kind: str, grid: str, zeropoints: Sequence[float],
           psfs: Sequence[np.ndarray], threshold_sigma: float, min_prominence: float,
           radius_px: float, search_radius_px: float,
           noise_floor: np.ndarray | None = None) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Peaks on every stamp and their outcome against the truth (``kind``: blend or isolated).

    Secondary peaks must pass the :func:`prominent` contrast test. Only peaks within ``search_radius_px`` of
    the primary galaxy count: that is where a blend's companion can
    be; further out, the cutouts hold real neighbours, which are neither blends nor false positives.

    ``noise_floor`` (per stamp, filtered-noise sigma): the S/N unit is at least this. GAN images get the
    filtered noise of the hi-res images they imitate: a generator that draws less noise than the survey has
    (or none) must not make its peaks more significant than the data could.
    """
    stack, psf = detection_stack(cube, zeropoints, psfs)
    truth_xy = truth_positions(truth, grid)
    snr, sigma_f = filtered_snr(stack, psf, noise_floor)
    peaks = find_peaks(stack, psf, sigma_f, threshold_sigma=threshold_sigma, sigma_is_filtered=True)
    peaks = within(prominent(peaks, snr, min_prominence), truth_xy[:, 0], search_radius_px)
    if kind == "blend":
        table = classify_blends(peaks, truth_xy, radius_px)
    else:
        table = classify_isolated(peaks, truth_xy, radius_px)
    return table, peaks


# ---------------------------------------------------------------------------------------------- metrics
#: Hemmati+22's headline numbers: blend detection fraction (both galaxies found), false-positive rate on single
#: galaxies, and the gain of the 7-band GAN over the 1-band GAN
PAPER = {"detection_fraction": {"hi": 0.80, "lo": 0.10, "gan": 0.50}, "false_positive_rate": 0.01,
         "gan7_minus_gan": 0.10}
#: bins of each blend parameter in Fig 5 (equal width between these percentiles of the sample)
N_BINS = 8
BIN_PERCENTILES = (1.0, 99.0)
FIG5_PARAMETERS = ("sep_over_fwhm_sum", "dmag", "fwhm_sum", "dz")


def methods_of(blends: pd.DataFrame) -> list[str]:
    return [c.removeprefix("outcome_") for c in blends.columns if c.startswith("outcome_")]


def binned_fractions(blends: pd.DataFrame, parameters: Sequence[str] = FIG5_PARAMETERS) -> pd.DataFrame:
    """Detection fraction of every method in bins of every parameter, long format (the figures' input)."""
    from .detection import detection_fraction

    rows = []
    for param in parameters:
        values = blends[param].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        edges = np.linspace(*np.percentile(finite, BIN_PERCENTILES), N_BINS + 1)
        for method in methods_of(blends):
            df = detection_fraction(blends[f"outcome_{method}"].to_numpy(), values, edges)
            df = df.rename(columns={"bin_lo": "left", "bin_hi": "right", "bin_centre": "centre",
                                    "ci_lo": "ci_low", "ci_hi": "ci_high"})
            df.insert(0, "method", method)
            df.insert(0, "parameter", param)
            rows.append(df)
    return pd.concat(rows, ignore_index=True)


def summarise(blends: pd.DataFrame, isolated: pd.DataFrame, gan_models: Mapping[str, str]) -> dict[str, Any]:
    """metrics.json: our detection fractions, false-positive rates and precision/recall beside the paper's."""
    from .detection import outcome_fractions, precision_recall

    ours: dict[str, Any] = {}
    for method in methods_of(blends):
        fractions = outcome_fractions(blends[f"outcome_{method}"].to_numpy())
        pr = precision_recall(blends[f"outcome_{method}"].to_numpy(),
                              isolated[f"false_positive_{method}"].to_numpy(dtype=bool))
        ours[method] = {"detection_fraction": fractions["both"]["fraction"],
                        "detection_fraction_ci": [fractions["both"]["ci_lo"], fractions["both"]["ci_hi"]],
                        "one_found": fractions["one"]["fraction"], "none_found": fractions["none"]["fraction"],
                        "false_positive_rate": pr["false_positive_rate"],
                        "precision": pr["precision"], "recall": pr["recall"], "f1": pr["f1"]}
    gan, gan7 = gan_models["gan"], gan_models["gan7"]
    frac = {m: ours[m]["detection_fraction"] for m in ours}
    headline = {
        "detection_fraction": {"hi": frac["hi"], "lo": frac["lo"], "gan": frac[gan]},
        "false_positive_rate": {"hi": ours["hi"]["false_positive_rate"], "lo": ours["lo"]["false_positive_rate"],
                                "gan": ours[gan]["false_positive_rate"]},
        "gan7_minus_gan": frac[gan7] - frac[gan],
        "ordering_hi_gan_lo": bool(frac["hi"] > frac[gan] > frac["lo"]),
    }
    return {"study": "hemmati22", "n_blends": int(len(blends)), "n_isolated": int(len(isolated)),
            "gan_models": dict(gan_models), "paper": PAPER, "ours": headline, "by_method": ours}


def showcase_blends(detections: pd.DataFrame, method: str = "hi", n: int = 3) -> np.ndarray:
    """Indexes of ``n`` blends for the figures: found in hi-res, at low / middle / high separation quantiles."""
    candidates = np.flatnonzero(detections[f"outcome_{method}"].to_numpy() == "both")
    if len(candidates) < n:
        candidates = np.arange(len(detections))
    sep = detections["sep_over_fwhm_sum"].to_numpy()[candidates]
    order = candidates[np.argsort(sep, kind="stable")]
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]
