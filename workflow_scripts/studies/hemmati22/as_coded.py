"""The deblending study as the authors' public code did it (xoubish/disks), beside our protocol ("as described").

The two protocols share the blends, the isolated control sample and the trained GANs (the authors' GAN input was
degraded correctly); they differ in what :mod:`..detect` and this module do with them:

* **Low-resolution images** (:func:`degrade_as_coded`): the authors build the PSF-matching kernel for the
  0.18"/px grid (both PSFs sampled there) but convolve it on the 0.06"/px image before rebinning, so in angle the
  kernel is ``factor`` (3) times too narrow and the low-res blends they searched have an effective PSF of ~0.25-0.3",
  not 0.6"; they add white noise of ``noise_sigma`` (0.05 e/s) per low-res pixel, ~1.5 mag shallower than HSC i.
* **Peaks** (:func:`peaks_as_coded`): hi-res stamps go through the authors' display stretch
  (:func:`authors_stretch`: asinh of the flux, shifted to its minimum and scaled to 0-255 per stamp, cast to 8
  bits), low-res stamps stay in flux units, GAN images go into their generator's tanh space (that stretch mapped
  to -1..1, :func:`authors_tanh`: their generator read and wrote stretched stamps); each is convolved with the
  PSF and the 3 x 3 local maxima above a threshold relative to the stamp's mean m are kept: hi-res
  ``conv(x - m) > t_hi m`` (t 1), low-res ``conv(x) > t_lo m`` (t 3), GAN ``conv(x - m) > t_gan`` (0.2, tanh
  units). Peaks in the first two rows or columns are dropped (their ``1 < x``); every other peak of the stamp
  counts (no search region, no prominence test).
* **Matching** (:func:`classify_as_coded`): a true centre is matched by a peak within 5 hi-res px (hi-res, GAN);
  low-res peaks are taken to the hi-res grid (the authors multiply by 3; we use the exact rebinning geometry) and
  matched within 10 hi-res px (0.6"). A blend is *detected* when the stamp has exactly two peaks and both galaxies
  are matched.
* **False positives** (:func:`summarise_as_coded`): single-galaxy stamps with more than one peak, **plus** blends
  with one peak in hi-res and in low-res but more than one in the GAN image, over all stamps of both samples.
* **Photometry** (:func:`photometry_as_coded`): only blends with two hi-res, one low-res and two GAN peaks; the
  dominant source fitted on their low-res images at the low-res peak and at the GAN peaks; median |dF/F|. Their
  photom.py gives its HSC PSF image a third of the image's pixel scale, so the fit's PSF is three times narrower
  than the target's (:func:`authors_psf`: ~0.2" for 0.6"), close to what their low-res images have.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve
from skimage.feature import peak_local_max

from workflow_scripts.detection import classify_blends, classify_isolated, truth_positions
from workflow_scripts.errors import StudyError
from workflow_scripts.imaging.degrade import RebinGeometry, add_noise, integer_factor, matching_kernel, rebin_flux
from workflow_scripts.imaging.stamps import nonfinite_stamps
from workflow_scripts.studies.hemmati22.detect import lowres_psf
from workflow_scripts.surveys import Survey

log = logging.getLogger(__name__)

#: side (low-res px) of the as-coded matching kernel: +-2.5 FWHM of a 0.6" PSF at 0.18"/px
KERNEL_SIZE_LOWRES = 17
#: threshold rules of :func:`peaks_as_coded`: how the configured number relates a convolved pixel to the mean
THRESHOLD_RULES = {"hi": "above_mean_times", "lo": "times_mean", "gan": "above_mean_by"}
#: samples per low-res pixel the authors' photometry declared for its target-PSF image (photom.py: the PSF's
#: Jacobian has a third of the image's pixel scale), i.e. the PSF it fitted with is 3x narrower than the target's
AUTHORS_PSF_OVERSAMPLING = 3


# -------------------------------------------------------------------------------------------- low-res images
def kernel_as_coded(source_psf: np.ndarray, target_fwhm_arcsec: float, hires_scale: float, lores_scale: float, *,
                    profile: str = "moffat", size: int = KERNEL_SIZE_LOWRES) -> np.ndarray:
    """The authors' matching kernel: built between the source PSF block-summed to the low-res grid and the target
    PSF sampled there (``lores_scale``), returned as an array to be applied, as they did, on the hi-res grid."""
    factor = int(integer_factor(lores_scale, hires_scale))
    psf = np.asarray(source_psf, dtype=np.float64)
    pad = (-psf.shape[-1]) % factor
    if pad % 2:          # keep the centre on a block centre: pad to an odd multiple of the factor
        pad += factor
    psf = np.pad(psf, pad // 2)
    n_out = psf.shape[-1] // factor
    low = rebin_flux(psf[None], factor, n_out)[0]
    return matching_kernel(low / low.sum(), target_fwhm_arcsec, lores_scale, size=size, profile=profile)


def degrade_as_coded(cube: np.ndarray, bands: Sequence[str], psfs: Mapping[str, np.ndarray], target: Survey,
                     target_band: str, hires_scale: float, profile: str, noise_sigma: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Low-res images of hi-res stamps as the authors' code made them: their kernel (:func:`kernel_as_coded`) on
    the hi-res grid, the same flux-conserving rebinning as ours, white noise ``noise_sigma`` per low-res pixel."""
    x = np.asarray(cube, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != len(bands):
        raise StudyError(f"degrade_as_coded: expected a cube (N, {len(bands)}, n, n), got shape {x.shape}")
    if bad := nonfinite_stamps(x):
        raise StudyError(f"degrade_as_coded: {bad}")
    fwhm = target.band(target_band).psf_fwhm
    kernels = np.stack([kernel_as_coded(psfs[b], fwhm, hires_scale, target.pixel_scale, profile=profile)
                        for b in bands]).astype(np.float32)
    geo = lowres_geometry(x.shape[-1], target, hires_scale)
    conv = fftconvolve(x, kernels[None], mode="same", axes=(-2, -1))
    low = rebin_flux(conv, geo.factor, geo.n_out).astype(np.float32)
    log.info("as coded: %d stamps x %d bands, kernel for %g\" built at %g\"/px applied at %g\"/px, noise %g",
             x.shape[0], len(bands), fwhm, target.pixel_scale, hires_scale, noise_sigma)
    return add_noise(low, float(noise_sigma), rng)


# -------------------------------------------------------------------------------------------- peaks
def authors_stretch(cube: np.ndarray) -> np.ndarray:
    """The authors' display stretch of each stamp (last two axes): ``a = asinh(flux)``, then
    ``255 / (max a + 0.05) * (a - min a)`` cast to 8 bits (truncated), as float64."""
    a = np.arcsinh(np.asarray(cube, dtype=np.float64))
    lo = a.min(axis=(-2, -1), keepdims=True)
    hi = a.max(axis=(-2, -1), keepdims=True)
    return np.floor(np.clip(255.0 / (hi + 0.05) * (a - lo), 0.0, 255.0))


def peaks_as_coded(scaled: np.ndarray, psf: np.ndarray, rule: str, value: float) -> list[np.ndarray]:
    """3 x 3 local maxima of each PSF-convolved stamp of ``scaled`` (N, H, W) above the as-coded threshold.

    ``rule`` (``value`` t, ``m`` the stamp's mean, the PSF normalised to sum 1, zero padding):
    ``above_mean_times``: ``conv(x - m) > t m``; ``times_mean``: ``conv(x) > t m``; ``above_mean_by``:
    ``conv(x - m) > t``. Returns one (k, 2) array of (x, y) per stamp.
    """
    x = np.asarray(scaled, dtype=np.float64)
    if x.ndim != 3:
        raise StudyError(f"peaks_as_coded: expected stamps (N, H, W), got shape {x.shape}")
    if rule not in THRESHOLD_RULES.values():
        raise StudyError(f"peaks_as_coded: unknown threshold rule {rule!r} ({', '.join(THRESHOLD_RULES.values())})")
    k = np.asarray(psf, dtype=np.float64)
    mean = x.mean(axis=(-2, -1))
    if rule != "times_mean":
        x = x - mean[:, None, None]
    conv = fftconvolve(x, (k / k.sum())[None], mode="same", axes=(-2, -1))
    thresh = {"above_mean_times": value * mean, "times_mean": value * mean,
              "above_mean_by": np.full_like(mean, value)}[rule]
    out = []
    for img, t in zip(conv, thresh):
        rc = peak_local_max(img, min_distance=1, threshold_abs=float(t), exclude_border=False)
        rc = rc[img[rc[:, 0], rc[:, 1]] > t] if len(rc) else rc
        rc = rc[(rc[:, 0] > 1) & (rc[:, 1] > 1)] if len(rc) else rc   # the authors kept 1 < x, 1 < y
        out.append(rc[:, ::-1].astype(np.float64))
    return out


def classify_as_coded(peaks: Sequence[np.ndarray], truth: pd.DataFrame, *, kind: str, radius_hires_px: float,
                      to_hires: Any = None) -> pd.DataFrame:
    """Outcome of every stamp against the hi-res truth: ``n_peaks``, ``n_matched``, and ``detected`` (blends:
    exactly two peaks, both galaxies matched) or ``false_positive`` (isolated: more than one peak). ``to_hires``
    maps low-res peak positions (x, y) to the hi-res grid."""
    if to_hires is not None:
        peaks = [np.column_stack(to_hires(p[:, 0], p[:, 1])) if len(p) else p for p in peaks]
    xy = truth_positions(truth, "hires")
    if kind == "blend":
        t = classify_blends(peaks, xy, radius_hires_px)
        detected = (t["outcome"] == "both").to_numpy() & (t["n_peaks"].to_numpy() == 2)
        return pd.DataFrame({"n_peaks": t["n_peaks"].to_numpy(), "n_matched": t["n_matched"].to_numpy(),
                             "detected": detected})
    t = classify_isolated(peaks, xy, radius_hires_px)
    return pd.DataFrame({"n_peaks": t["n_peaks"].to_numpy(), "n_matched": t["n_matched"].to_numpy(),
                         "false_positive": t["n_peaks"].to_numpy() > 1})


def detect_as_coded(images: Mapping[str, tuple[np.ndarray, str, np.ndarray]], truth: pd.DataFrame, *, kind: str,
                    settings: Mapping[str, Any], lo_geometry: Any,
                    sample: str = "blends") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Peaks and outcomes of every method on one sample: ``images`` maps a method to (scaled stamps (N, H, W), the
    threshold key ``hi``/``lo``/``gan``, PSF). Returns the table (columns ``n_peaks_{m}``, ``n_matched_{m}`` and
    ``detected_{m}`` for blends or ``false_positive_{m}`` for isolated galaxies) and every peak (sample, method,
    index, x, y; each on the grid of its own images, as :mod:`..detect` writes them)."""
    table = pd.DataFrame(index=range(len(truth)))
    thresholds, match = settings["thresholds"], settings["match_px"]
    rows = []
    for method, (stamps, key, psf) in images.items():
        peaks = peaks_as_coded(stamps, psf, THRESHOLD_RULES[key], float(thresholds[key]))
        rows += [pd.DataFrame({"sample": sample, "method": method, "index": i, "x": p[:, 0], "y": p[:, 1]})
                 for i, p in enumerate(peaks) if len(p)]
        lo = key == "lo"
        res = classify_as_coded(peaks, truth, kind=kind, radius_hires_px=float(match["lo" if lo else "hi"]),
                                to_hires=lo_geometry.to_high if lo else None)
        for col in res.columns:
            table[f"{col}_{method}"] = res[col].to_numpy()
        log.info("as coded, %s %s: %s", kind, method,
                 f"{res['detected'].mean():.1%} detected" if kind == "blend"
                 else f"{res['false_positive'].mean():.1%} with > 1 peak")
    cols = {"sample": pd.Series(dtype=object), "method": pd.Series(dtype=object), "index": pd.Series(dtype=np.int64),
            "x": pd.Series(dtype=float), "y": pd.Series(dtype=float)}
    return table, (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(cols))


def lowres_geometry(n_hires: int, target: Survey, hires_scale: float) -> Any:
    """The rebinning geometry of the low-res stamps (low-res pixel -> hi-res pixel with ``to_high``)."""
    factor = integer_factor(target.pixel_scale, hires_scale)
    return RebinGeometry(int(n_hires), int(np.floor(n_hires / factor + 1e-9)), float(factor))


def authors_tanh(cube: np.ndarray) -> np.ndarray:
    """The space the authors' generator worked in: their display stretch (:func:`authors_stretch`, 0-255 per
    stamp) through torchvision's ``ToTensor`` (/ 255) and ``Normalize(0.5, 0.5)``, i.e. ``stretch / 127.5 - 1``:
    each stamp's faintest pixel at -1, its brightest just below +1 (their GAN threshold 0.2 is in these units)."""
    return authors_stretch(cube) / 127.5 - 1.0


def method_images_as_coded(hi: np.ndarray, lo: np.ndarray, gans: Mapping[str, np.ndarray], psf_hi: np.ndarray,
                           psf_lo: np.ndarray) -> dict[str, tuple[np.ndarray, str, np.ndarray]]:
    """The images the authors' detector searched: hi-res stamps through their display stretch
    (:func:`authors_stretch`), low-res stamps in flux units, each GAN's output (in flux) in the tanh space of
    their generator (:func:`authors_tanh`; ours works in its own global asinh scaling, where galaxies peak near
    0.3 and their 0.2 threshold would keep 0.9 peaks per blend). Cubes (N, 1, H, W)."""
    images = {"hi": (authors_stretch(hi[:, 0]), "hi", psf_hi), "lo": (np.asarray(lo[:, 0], np.float64), "lo", psf_lo)}
    for model, cube in gans.items():
        images[model] = (authors_tanh(cube[:, 0]), "gan", psf_hi)
    return images


# -------------------------------------------------------------------------------------------- summary
def summarise_as_coded(blends: pd.DataFrame, isolated: pd.DataFrame) -> dict[str, Any]:
    """Per method: the detection fraction (exactly two matched peaks), the share of single galaxies with more than
    one peak and, for the GANs, the authors' combined false-positive rate: (singles with > 1 peak + blends with one
    peak in hi-res and low-res but > 1 in the GAN) / (singles + blends)."""
    methods = [c.removeprefix("detected_") for c in blends.columns if c.startswith("detected_")]
    one_hi_lo = (blends["n_peaks_hi"].to_numpy() == 1) & (blends["n_peaks_lo"].to_numpy() == 1)
    n_all = len(blends) + len(isolated)
    out: dict[str, Any] = {"n_blends": int(len(blends)), "n_isolated": int(len(isolated)), "by_method": {}}
    for m in methods:
        iso_fp = isolated[f"false_positive_{m}"].to_numpy(dtype=bool)
        row = {"detection_fraction": float(blends[f"detected_{m}"].mean()),
               "isolated_multiple_peaks": float(iso_fp.mean())}
        if m not in ("hi", "lo"):
            split = one_hi_lo & (blends[f"n_peaks_{m}"].to_numpy() > 1)
            row["blends_split_by_gan"] = int(split.sum())
            row["false_positive_rate"] = float((iso_fp.sum() + split.sum()) / n_all)
        else:
            row["false_positive_rate"] = float(iso_fp.mean())
        out["by_method"][m] = row
    return out


# -------------------------------------------------------------------------------------------- photometry
def photometry_subset(blends: pd.DataFrame, gan: str) -> np.ndarray:
    """The blends the authors' photometry used: exactly two peaks in hi-res, one in low-res, two in the GAN image."""
    return ((blends["n_peaks_hi"].to_numpy() == 2) & (blends["n_peaks_lo"].to_numpy() == 1)
            & (blends[f"n_peaks_{gan}"].to_numpy() == 2))


def true_position_peaks(truth: pd.DataFrame, method: str) -> pd.DataFrame:
    """A peaks table (columns sample, method, index, x, y) that puts ``method``'s peaks of every blend at the two true
    centres (hi-res grid): the photometry's positions with a perfect position finder in the GAN's place."""
    xy = truth_positions(truth, "hires")
    n, m = xy.shape[:2]
    return pd.DataFrame({"sample": "blends", "method": method, "index": np.repeat(np.arange(n), m),
                         "x": xy[..., 0].ravel(), "y": xy[..., 1].ravel()})


def peaks_on_subset(peaks: pd.DataFrame, subset: np.ndarray) -> pd.DataFrame:
    """The peaks table without the blends outside ``subset`` (bool per blend; the isolated sample is kept): the
    photometry then fits only the blends of the authors' statistic (~5 % of them) and gives the others rows
    flagged ``no_objects``."""
    keep = np.flatnonzero(np.asarray(subset, dtype=bool))
    return peaks[(peaks["sample"] != "blends") | peaks["index"].isin(keep)].reset_index(drop=True)


def authors_psf(target: Survey, target_band: str, profile: str) -> tuple[np.ndarray, int]:
    """The PSF the authors' photometry fitted with: the target PSF sampled on the low-res grid, declared as sampled
    :data:`AUTHORS_PSF_OVERSAMPLING` times per pixel (``psf`` of :func:`..photometry.run_photometry`)."""
    return lowres_psf(target, target_band, profile), AUTHORS_PSF_OVERSAMPLING


def _abs_dflux(dom: pd.DataFrame) -> np.ndarray:
    return np.abs((dom["measured_flux"].to_numpy() - dom["input_flux"].to_numpy()) / dom["input_flux"].to_numpy())


def _median_abs_dflux(dom: pd.DataFrame, mask: np.ndarray) -> float | None:
    return float(np.median(_abs_dflux(dom)[mask])) if mask.any() else None


def bootstrap_ratio_interval(numerator: np.ndarray, denominator: np.ndarray, *, n_boot: int, seed: int,
                             level: float = 0.68) -> list[float] | None:
    """Central ``level`` interval of median(numerator) / median(denominator) over ``n_boot`` bootstrap resamples of
    the pairs (the same objects in both): the sampling error of a ratio of medians over a few tens of blends. None
    with fewer than 2 pairs."""
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if a.size < 2 or n_boot < 1:
        return None
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size == 0:
        return None
    tail = 50.0 * (1.0 - level)
    return [float(np.percentile(ratio, tail)), float(np.percentile(ratio, 100.0 - tail))]


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def photometry_as_coded(dominants: Mapping[str, pd.DataFrame], subset: np.ndarray, *, n_boot: int = 2000,
                        seed: int = 0) -> dict[str, Any]:
    """The authors' photometry statistic on their subset: median |dF/F| of the dominant source fitted on the
    low-res image at the single low-res peak (``lo_at_lo``) and at the two GAN peaks (``lo_at_gan``), over the
    blends of ``subset`` measured in both runs, and its ratio (their ">10x"). ``dominants``:
    :func:`..photometry.dominant_source` per run. With a ``lo_at_truth`` run (the fit at the true centres,
    :func:`true_position_peaks`) also the same ratio for perfect positions, over the blends measured in it and in
    ``lo_at_lo``: how much of the factor any position finder could give with this fit. Each ratio comes with its
    68 % bootstrap interval over the blends (``n_boot`` resamples, ``seed``; :func:`bootstrap_ratio_interval`)."""
    lo, gan = dominants["lo_at_lo"], dominants["lo_at_gan"]
    lo_ok = subset & lo["measured"].to_numpy()
    both = lo_ok & gan["measured"].to_numpy()
    out: dict[str, Any] = {"n_blends": int(len(subset)), "n_subset": int(subset.sum()), "n_measured": int(both.sum()),
                           "statistic": "median |F_measured - F_input| / F_input of the dominant source",
                           "median_abs_dflux_lo_at_lo": _median_abs_dflux(lo, both),
                           "median_abs_dflux_lo_at_gan": _median_abs_dflux(gan, both)}
    out["improvement_factor"] = _ratio(out["median_abs_dflux_lo_at_lo"], out["median_abs_dflux_lo_at_gan"])
    out["improvement_factor_interval_68"] = bootstrap_ratio_interval(_abs_dflux(lo)[both], _abs_dflux(gan)[both],
                                                                     n_boot=n_boot, seed=seed)
    if "lo_at_truth" in dominants:
        true_ok = lo_ok & dominants["lo_at_truth"]["measured"].to_numpy()
        at_truth = _median_abs_dflux(dominants["lo_at_truth"], true_ok)
        out.update({"n_measured_true_positions": int(true_ok.sum()), "median_abs_dflux_lo_at_truth": at_truth,
                    "improvement_factor_true_positions": _ratio(_median_abs_dflux(lo, true_ok), at_truth),
                    "improvement_factor_true_positions_interval_68": bootstrap_ratio_interval(
                        _abs_dflux(lo)[true_ok], _abs_dflux(dominants["lo_at_truth"])[true_ok], n_boot=n_boot,
                        seed=seed)})
    out["n_bootstrap"] = n_boot
    return out


def dominants_on_subset(dominants: Mapping[str, pd.DataFrame], subset: np.ndarray) -> pd.DataFrame:
    """The runs' dominant sources (:func:`..photometry.dominant_source`) on the authors' subset as one long table,
    with columns ``run`` and ``index`` (the blend): what Fig 7 draws for the protocol "as coded"."""
    frames = [d.assign(run=name, index=np.arange(len(d)))[np.asarray(subset, dtype=bool)]
              for name, d in dominants.items()]
    return pd.concat(frames, ignore_index=True)


__all__ = ["AUTHORS_PSF_OVERSAMPLING", "authors_psf", "bootstrap_ratio_interval", "dominants_on_subset", "photometry_as_coded", "photometry_subset",
           "KERNEL_SIZE_LOWRES", "THRESHOLD_RULES", "authors_stretch", "authors_tanh", "classify_as_coded",
           "degrade_as_coded", "detect_as_coded", "kernel_as_coded", "lowres_geometry", "method_images_as_coded",
           "peaks_as_coded", "peaks_on_subset", "summarise_as_coded", "true_position_peaks"]
