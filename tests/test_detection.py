"""Peak detection, matching and metrics (workflow_scripts.detection) against images and lists of known truth.

Galaxies are GalSim exponential profiles convolved with a Moffat PSF (0.09" FWHM, beta 3) drawn at 0.06"/px on
64 x 64 stamps at known sub-pixel positions; the low-res versions are convolved to a 0.6" Moffat and rebinned
3 x 3 -> 21 x 21 with :func:`workflow_scripts.imaging.degrade.rebin_flux`, whose positions follow
:class:`workflow_scripts.imaging.degrade.RebinGeometry` (the truth columns xlo_* of the blends).
"""

from __future__ import annotations

import json
import math
import time

import galsim
import numpy as np
import pandas as pd
import pytest
from scipy.signal import fftconvolve
from scipy.stats import norm

from workflow_scripts import detection as D
from workflow_scripts.imaging.degrade import RebinGeometry, rebin_flux, target_psf_image
from workflow_scripts.errors import PipelineError

SCALE = 0.06
SIZE = 64
CENTRE = (SIZE - 1) / 2
PSF = galsim.Moffat(beta=3.0, fwhm=0.09)
LOW_FWHM = 0.6
GEO = RebinGeometry(64, 21, 3.0)
SIGMA = 1.0                  # per-pixel noise of the test images
HI_POS_TOL = 1.0             # brief: both galaxies found within 1 px in hi-res


def psf_image(fwhm: float, scale: float, size: int) -> np.ndarray:
    return target_psf_image(fwhm, scale, size, profile="moffat", beta=3.0)


HI_PSF = psf_image(0.09, SCALE, 15)
LO_PSF = psf_image(LOW_FWHM, 3 * SCALE, 15)


def pair_image(xy1: tuple[float, float], xy2: tuple[float, float], flux: tuple[float, float] = (3000.0, 2000.0),
               hlr: float = 0.1) -> np.ndarray:
    """Noiseless hi-res stamp of two round exponential galaxies at the given (x, y) pixel positions."""
    img = np.zeros((SIZE, SIZE))
    for (x, y), f in zip((xy1, xy2), flux):
        gal = galsim.Convolve(galsim.Exponential(half_light_radius=hlr, flux=f), PSF)
        img += gal.drawImage(nx=SIZE, ny=SIZE, scale=SCALE, offset=(x - CENTRE, y - CENTRE)).array
    return img


def to_lowres(hires: np.ndarray) -> np.ndarray:
    """Emulated degradation: convolve to a 0.6" Moffat (on top of the 0.09" PSF) and rebin 64 -> 21."""
    kernel = psf_image(LOW_FWHM, SCALE, 63)
    return rebin_flux(fftconvolve(hires, kernel, mode="same"), 3, 21)


# ------------------------------------------------------------------------------------------ known images
def test_hires_pair_found_at_both_positions():
    rng = np.random.default_rng(1)
    xy1, xy2 = (27.3, 30.6), (36.8, 33.9)  # 10 px apart
    truth = np.array([xy1, xy2])
    imgs = np.stack([pair_image(xy1, xy2) + rng.normal(0, SIGMA, (SIZE, SIZE)) for _ in range(20)])
    for refine in (False, True):
        peaks = D.find_peaks(imgs, HI_PSF, SIGMA, threshold_sigma=5.0, refine=refine)
        table = D.classify_blends(peaks, np.repeat(truth[None], len(imgs), axis=0), radius=5.0)
        assert (table["outcome"] == "both").all()
        assert (table["n_spurious"] == 0).all()
        assert table[["dist_1", "dist_2"]].to_numpy().max() < HI_POS_TOL


def test_close_pair_is_one_peak_in_lowres():
    rng = np.random.default_rng(2)
    xy1, xy2 = (31.5, 31.5), (33.5, 31.5)  # 2 hi-res px = 0.12" apart: unresolved at 0.6"
    hi = pair_image(xy1, xy2, hlr=0.05)
    lo = to_lowres(hi)
    lo_sigma = 0.5
    lows = lo[None] + rng.normal(0, lo_sigma, (20, 21, 21))
    peaks = D.find_peaks(lows, LO_PSF, lo_sigma, threshold_sigma=5.0)
    assert all(len(p) == 1 for p in peaks)
    xlo, ylo = GEO.to_low(np.array([xy1[0], xy2[0]]), np.array([xy1[1], xy2[1]]))
    truth_lo = np.stack([xlo, ylo], axis=-1)
    table = D.classify_blends(peaks, np.repeat(truth_lo[None], 20, axis=0), radius=D.MATCH_RADIUS_PX["lowres"])
    assert (table["outcome"] == "one").all()
    # the single peak sits between the two galaxies (within one low-res pixel of their mean)
    mean_lo = truth_lo.mean(axis=0)
    assert max(np.hypot(*(p[0] - mean_lo)) for p in peaks) < 1.0


def test_lowres_positions_follow_rebin_geometry():
    """A single galaxy anywhere in the stamp is found, after degradation, at RebinGeometry.to_low of its hi-res
    position (refined peaks within 0.05 lo-res px): the detection and the blends' xlo/ylo columns agree."""
    for xy in [(44.5, 19.5), (40.2, 25.7), (20.0, 44.4), (CENTRE, CENTRE)]:
        lo = to_lowres(pair_image(xy, (0.0, 0.0), flux=(3000.0, 0.0)))
        p = D.find_peaks(lo, LO_PSF, 0.01, threshold_sigma=5.0, refine=True)[0]
        assert p.shape == (1, 2)
        assert np.hypot(*(p[0] - np.array(GEO.to_low(*xy)))) < 0.05


def test_wide_pair_resolved_in_lowres():
    rng = np.random.default_rng(3)
    xy1, xy2 = (CENTRE, CENTRE), (CENTRE + 13.0, CENTRE - 12.0)  # 17.7 hi-res px = 1.06"
    lo = to_lowres(pair_image(xy1, xy2, flux=(3000.0, 3000.0)))
    lows = lo[None] + rng.normal(0, 0.5, (10, 21, 21))
    xlo, ylo = GEO.to_low(np.array([xy1[0], xy2[0]]), np.array([xy1[1], xy2[1]]))
    truth_lo = np.stack([xlo, ylo], axis=-1)
    peaks = D.find_peaks(lows, LO_PSF, 0.5, threshold_sigma=5.0, refine=True)
    table = D.classify_blends(peaks, np.repeat(truth_lo[None], 10, axis=0), radius=D.MATCH_RADIUS_LOWRES_MATCHED_PX)
    assert (table["outcome"] == "both").all()
    assert table[["dist_1", "dist_2"]].to_numpy().max() < 1.0
    # the overlapping wings pull both peaks towards each other (by ~0.6 lo-res px here)
    sep = truth_lo[1] - truth_lo[0]
    assert (table["dx_1"] * sep[0] + table["dy_1"] * sep[1] > 0).all()
    assert (table["dx_2"] * sep[0] + table["dy_2"] * sep[1] < 0).all()


def test_subpixel_refinement():
    xy = (20.3, 17.8)
    img = galsim.Gaussian(fwhm=0.3).drawImage(nx=40, ny=40, scale=SCALE, offset=(xy[0] - 19.5, xy[1] - 19.5)).array
    raw = D.find_peaks(img, HI_PSF, 1e-4)[0]
    fine = D.find_peaks(img, HI_PSF, 1e-4, refine=True)[0]
    assert raw.shape == fine.shape == (1, 2)
    assert np.abs(raw[0] - np.round(xy)).max() == 0
    assert np.hypot(*(fine[0] - xy)) < 0.1


def test_coordinates_are_column_row():
    img = np.zeros((21, 25))
    img[5, 17] = 10.0  # row 5, column 17
    peaks, snr = D.find_peaks(img, np.ones((1, 1)), 1.0, threshold_sigma=3.0, return_snr=True)
    np.testing.assert_array_equal(peaks[0], [[17.0, 5.0]])
    assert snr[0][0] == pytest.approx(10.0)


# --------------------------------------------------------------------------------------------- noise
def test_filtered_noise_sigma_matches_empirical_and_false_positives_are_rare():
    rng = np.random.default_rng(4)
    n, sigma = 2000, 2.5
    noise = rng.normal(0.0, sigma, (n, SIZE, SIZE))
    for psf in (HI_PSF, LO_PSF):
        filt = D.matched_filter(noise[:300], psf)
        h = psf.shape[0] // 2
        empirical = filt[:, h:-h, h:-h].std()
        assert D.filtered_noise_sigma(sigma, psf) == pytest.approx(empirical, rel=0.03)
        # threshold calibration: the fraction of interior filtered pixels above 3 sigma is the Gaussian tail
        frac = (filt[:, h:-h, h:-h] > 3.0 * D.filtered_noise_sigma(sigma, psf)).mean()
        assert frac == pytest.approx(norm.sf(3.0), rel=0.25)
    peaks = D.find_peaks(noise, HI_PSF, sigma, threshold_sigma=5.0)
    n_false = sum(len(p) for p in peaks)
    # peaks above 5 sigma <= pixels above 5 sigma, whose mean number is n_pix * Q(5) ~ 2.4: allow a Poisson tail
    expected_pixels = n * SIZE * SIZE * norm.sf(5.0)
    assert n_false <= expected_pixels + 4 * math.sqrt(expected_pixels) + 2
    iso = D.classify_isolated(peaks, np.full((n, 1, 2), CENTRE), radius=5.0)
    assert iso["false_positive"].mean() < 0.005
    # and at 3 sigma there are many: the threshold, not a bug, keeps the 5-sigma list short
    assert sum(len(p) for p in D.find_peaks(noise[:100], HI_PSF, sigma, threshold_sigma=3.0)) > 50


def test_estimate_noise_sigma_ignores_galaxies():
    rng = np.random.default_rng(5)
    imgs = pair_image((27.3, 30.6), (36.8, 33.9))[None] + rng.normal(0, 1.7, (5, SIZE, SIZE))
    np.testing.assert_allclose(D.estimate_noise_sigma(imgs), 1.7, rtol=0.05)


def test_per_image_sigma_batching_and_options():
    rng = np.random.default_rng(6)
    imgs = np.stack([pair_image((27.3, 30.6), (36.8, 33.9)) for _ in range(7)]) + rng.normal(0, 1, (7, 64, 64))
    a = D.find_peaks(imgs, HI_PSF, np.ones(7), threshold_sigma=5.0)
    b = D.find_peaks(imgs, HI_PSF, 1.0, threshold_sigma=5.0, batch_size=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # a huge sigma for one image removes its peaks only
    sig = np.ones(7)
    sig[2] = 1e6
    c = D.find_peaks(imgs, HI_PSF, sig, threshold_sigma=5.0)
    assert len(c[2]) == 0 and all(len(c[i]) == 2 for i in range(7) if i != 2)
    # sigma_is_filtered: passing the filtered sigma gives the same answer
    d = D.find_peaks(imgs, HI_PSF, D.filtered_noise_sigma(1.0, HI_PSF), threshold_sigma=5.0, sigma_is_filtered=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, d))
    # the PSF's normalisation does not matter
    e = D.find_peaks(imgs, 7.0 * HI_PSF, 1.0, threshold_sigma=5.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, e))
    # max_peaks keeps the brightest (the 3000-flux galaxy at (27.3, 30.6))
    f = D.find_peaks(imgs, HI_PSF, 1.0, threshold_sigma=5.0, max_peaks=1)
    assert all(len(p) == 1 and np.hypot(*(p[0] - (27.3, 30.6))) < 1 for p in f)


def test_border_plateau_and_min_distance():
    img = np.zeros((15, 15))
    img[0, 7] = 5.0            # on the edge
    img[7, 7] = img[7, 8] = 4.0  # a two-pixel plateau: one peak
    img[7, 11] = 3.0           # 3 px from the plateau
    delta = np.ones((1, 1))
    p = D.find_peaks(img, delta, 1.0, threshold_sigma=1.0)[0]
    assert {tuple(map(int, q)) for q in p} == {(7, 7), (11, 7)}  # the first plateau pixel (row-major) is kept
    p0 = D.find_peaks(img, delta, 1.0, threshold_sigma=1.0, exclude_border=0)[0]
    assert (7.0, 0.0) in {tuple(q) for q in p0}
    p3 = D.find_peaks(img, delta, 1.0, threshold_sigma=1.0, min_distance=3)[0]
    assert len(p3) == 1


def test_find_peaks_errors():
    img = np.zeros((3, 21, 21))
    with pytest.raises(D.DetectionError, match="odd"):
        D.find_peaks(img, np.ones((4, 4)) / 16, 1.0)
    with pytest.raises(D.DetectionError, match="one value per image"):
        D.find_peaks(img, LO_PSF, np.ones(2))
    with pytest.raises(D.DetectionError, match="> 0"):
        D.find_peaks(img, LO_PSF, 0.0)
    bad = img.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(D.DetectionError, match="NaN"):
        D.find_peaks(bad, LO_PSF, 1.0)
    with pytest.raises(D.DetectionError, match="no images"):
        D.find_peaks(np.zeros((0, 21, 21)), LO_PSF, 1.0)
    with pytest.raises(PipelineError):
        D.find_peaks(np.zeros(5), LO_PSF, 1.0)


# ------------------------------------------------------------------------------------------- matching
def greedy_match(peaks: np.ndarray, truth: np.ndarray, radius: float) -> int:
    """Reference greedy matcher: repeatedly take the globally closest free pair within the radius."""
    d = np.hypot(*(peaks[:, None] - truth[None]).transpose(2, 0, 1))
    d[d > radius] = np.inf
    n = 0
    while np.isfinite(d).any():
        i, j = np.unravel_index(np.argmin(d), d.shape)
        d[i, :] = np.inf
        d[:, j] = np.inf
        n += 1
    return n


def test_hungarian_beats_greedy():
    truth = np.array([[0.0, 0.0], [3.0, 0.0]])
    # peak A lies between the galaxies, closer to the second; peak B is only reachable from the second
    peaks = np.array([[1.8, 0.0], [4.9, 0.0]])
    assert greedy_match(peaks, truth, 2.0) == 1
    m = D.match_peaks(peaks, truth, 2.0)
    assert m.n_matched == 2
    np.testing.assert_array_equal(m.pairs, [[0, 0], [1, 1]])
    np.testing.assert_allclose(m.distances, [1.8, 1.9])
    assert m.unmatched_peaks.size == 0 and m.unmatched_truth.size == 0


def test_matching_is_permutation_invariant_and_reports_spurious():
    truth = np.array([[10.0, 10.0], [16.0, 10.0]])
    peaks = np.array([[10.3, 10.0], [13.2, 10.0], [15.8, 10.2]])  # the middle one is spurious, 2.8 px from #2
    rng = np.random.default_rng(7)
    for _ in range(6):
        perm = rng.permutation(3)
        m = D.match_peaks(peaks[perm], truth, 5.0)
        assert m.n_matched == 2
        matched_xy = peaks[perm][m.pairs[:, 0]]
        np.testing.assert_allclose(matched_xy, peaks[[0, 2]])
        np.testing.assert_array_equal(m.pairs[:, 1], [0, 1])
        np.testing.assert_allclose(peaks[perm][m.unmatched_peaks], peaks[[1]])
        assert m.peak_for_truth(1) == int(np.flatnonzero(perm == 2)[0])


def test_radius_excludes_far_peaks():
    truth = np.array([[10.0, 10.0], [20.0, 10.0]])
    peaks = np.array([[10.0, 14.9], [26.0, 10.0]])
    m = D.match_peaks(peaks, truth, 5.0)
    np.testing.assert_array_equal(m.pairs, [[0, 0]])
    np.testing.assert_array_equal(m.unmatched_peaks, [1])
    np.testing.assert_array_equal(m.unmatched_truth, [1])
    assert D.match_peaks(np.empty((0, 2)), truth, 5.0).unmatched_truth.tolist() == [0, 1]
    assert D.match_peaks(peaks, np.empty((0, 2)), 5.0).unmatched_peaks.tolist() == [0, 1]
    with pytest.raises(D.DetectionError, match="radius"):
        D.match_peaks(peaks, truth, 0.0)


def test_classify_blends_and_isolated():
    truth = np.array([[[10, 10], [20, 10]]] * 4, dtype=float)
    peaks = [np.array([[10.5, 10.0], [19.0, 10.0], [30.0, 30.0]]),  # both + spurious
             np.array([[11.0, 11.0]]),                             # one
             np.empty((0, 2)),                                     # none
             np.array([[40.0, 40.0], [50.0, 50.0]])]               # none, two spurious
    t = D.classify_blends(peaks, truth, 3.0, ids=[7, 8, 9, 10])
    assert t["blend_id"].tolist() == [7, 8, 9, 10]
    assert t["outcome"].tolist() == ["both", "one", "none", "none"]
    assert t["n_matched"].tolist() == [2, 1, 0, 0]
    assert t["n_spurious"].tolist() == [1, 0, 0, 2]
    assert t["dx_2"].iloc[0] == pytest.approx(-1.0) and np.isnan(t["dx_2"].iloc[1])
    assert t["dist_1"].iloc[1] == pytest.approx(math.sqrt(2))
    iso = D.classify_isolated(peaks, truth[:, :1], 3.0)
    assert iso["outcome"].tolist() == ["multiple", "single", "none", "multiple"]
    assert iso["false_positive"].tolist() == [True, False, False, True]
    assert iso["matched"].tolist() == [True, True, False, False]
    assert iso["n_spurious"].tolist() == [2, 0, 0, 2]
    with pytest.raises(D.DetectionError, match="3 peak lists for 4"):
        D.classify_blends(peaks[:3], truth, 3.0)
    with pytest.raises(D.DetectionError, match=r"\(N, 2, 2\)"):
        D.classify_blends(peaks, truth[:, :1], 3.0)


def test_truth_positions_from_blend_table():
    truth = pd.DataFrame({"x_1": [31.5], "y_1": [31.5], "x_2": [40.0], "y_2": [30.0],
                          "xlo_1": [10.0], "ylo_1": [10.0], "xlo_2": [12.8], "ylo_2": [9.5]})
    np.testing.assert_array_equal(D.truth_positions(truth, "hires"), [[[31.5, 31.5], [40.0, 30.0]]])
    np.testing.assert_array_equal(D.truth_positions(truth, "lowres"), [[[10.0, 10.0], [12.8, 9.5]]])
    iso = pd.DataFrame({"x": [31.5], "y": [31.5], "xlo": [10.0], "ylo": [10.0]})
    assert D.truth_positions(iso, "gan").shape == (1, 1, 2)
    with pytest.raises(D.DetectionError):
        D.truth_positions(pd.DataFrame({"a": [1]}))


# -------------------------------------------------------------------------------------------- metrics
def test_detection_fraction_bins():
    rng = np.random.default_rng(8)
    values = rng.uniform(0, 1, 1000)
    outcomes = np.where(values > 0.5, "both", "one")
    values[:5] = np.nan
    df = D.detection_fraction(outcomes, values, np.linspace(0, 1, 5))
    assert df["count"].sum() == 995
    assert list(df.columns) == ["bin_lo", "bin_hi", "bin_centre", "count", "n_detected", "fraction", "ci_lo", "ci_hi"]
    np.testing.assert_allclose(df["fraction"], [0, 0, 1, 1])
    assert (df["ci_lo"] <= df["fraction"]).all() and (df["fraction"] <= df["ci_hi"]).all()
    df2 = D.detection_fraction(values > 0.25, values, 10)
    assert df2["count"].sum() == 995 and len(df2) == 10
    # values on the last edge are kept; outside the edges dropped; empty bins give NaN
    df3 = D.detection_fraction([True, False, True], [0.7, 2.0, 5.0], [0.0, 0.5, 1.0, 2.0])
    assert df3["count"].tolist() == [0, 1, 1] and np.isnan(df3["fraction"].iloc[0])
    json.dumps(df3.to_dict(orient="list"), allow_nan=True)
    with pytest.raises(D.DetectionError, match="values for"):
        D.detection_fraction(outcomes, values[:10], 4)


def test_wilson_interval_known_value():
    lo, hi = D.wilson_interval(8, 10, confidence=0.95)
    assert float(lo) == pytest.approx(0.4902, abs=1e-4)
    assert float(hi) == pytest.approx(0.9433, abs=1e-4)
    lo0, hi0 = D.wilson_interval(0, 0)
    assert np.isnan(lo0) and np.isnan(hi0)


def test_precision_recall_hand_example():
    blends = ["both"] * 6 + ["one"] * 3 + ["none"]
    isolated = ["single"] * 8 + ["multiple"] * 2
    r = D.precision_recall(blends, isolated)
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (6, 4, 2, 8)
    assert r["precision"] == pytest.approx(0.75)
    assert r["recall"] == pytest.approx(0.6)
    assert r["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert r["false_positive_rate"] == pytest.approx(0.2)
    json.dumps(r, allow_nan=False)  # plain JSON
    # DataFrames from the classifiers and booleans give the same answer
    iso_df = pd.DataFrame({"outcome": isolated, "false_positive": [o == "multiple" for o in isolated]})
    assert D.precision_recall(pd.DataFrame({"outcome": blends}), iso_df)["f1"] == pytest.approx(r["f1"])
    assert D.precision_recall(np.array(blends) == "both", np.array(isolated) == "multiple")["tp"] == 6
    # undefined ratios are None, not NaN
    assert D.precision_recall(["none"], ["single"])["precision"] is None
    fr = D.outcome_fractions(blends)
    assert fr["both"]["fraction"] == pytest.approx(0.6) and fr["n"] == 10
    json.dumps(fr, allow_nan=False)


# ---------------------------------------------------------------------------------------------- speed
@pytest.mark.parametrize("size,psf", [(21, LO_PSF), (64, HI_PSF)])
def test_speed_batch(size, psf):
    """Peaks + matching of 2000 stamps well within seconds (measured ~0.5 s on 2 cores)."""
    rng = np.random.default_rng(9)
    imgs = rng.normal(0, 1, (2000, size, size)).astype(np.float32)
    c = (size - 1) / 2
    imgs[:, int(c), int(c)] += 200.0
    t0 = time.perf_counter()
    peaks = D.find_peaks(imgs, psf, 1.0, threshold_sigma=5.0)
    D.classify_blends(peaks, np.tile([[c, c], [c + 3, c]], (2000, 1, 1)), 5.0)
    assert time.perf_counter() - t0 < 20.0
