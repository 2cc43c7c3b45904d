"""The deblending study's glue (workflow_scripts.studies.hemmati22) against known truth."""

from __future__ import annotations

import galsim
import numpy as np
import pandas as pd
import pytest

from workflow_scripts.studies.hemmati22.gans import augment, dihedral
from workflow_scripts.errors import PipelineError
from workflow_scripts.imaging.degrade import RebinGeometry
from workflow_scripts.imaging.stamps import CutoutSet
from workflow_scripts.studies.hemmati22.blends import BlendSet
from workflow_scripts.studies.hemmati22.detect import detect, detect_samples, search_radius_arcsec, srgan_models
from workflow_scripts.surveys import get_survey
from workflow_scripts.detection.peaks import detection_stack, filtered_snr
from workflow_scripts.studies.hemmati22.selection import isolated_only
from workflow_scripts.detection.prominence import prominent
from workflow_scripts.studies.hemmati22.metrics import showcase_blends
from workflow_scripts.detection import find_peaks

SCALE = 0.06
PSF = galsim.Moffat(beta=3.0, fwhm=0.1)


def render(profiles, offsets_px, n=64, noise=1.0, seed=0):
    image = galsim.ImageF(n, n, scale=SCALE)
    for prof, (dx, dy) in zip(profiles, offsets_px):
        galsim.Convolve(prof, PSF).drawImage(image, add_to_image=True, offset=(dx, dy))
    rng = np.random.default_rng(seed)
    return image.array + rng.normal(0, noise, image.array.shape).astype(np.float32)


def psf_image(n=15):
    img = PSF.drawImage(nx=n, ny=n, scale=SCALE).array
    return img / img.sum()


def test_noise_bumps_on_a_big_disk_are_not_a_second_galaxy():
    disk = galsim.Exponential(half_light_radius=0.45, flux=6000.0)
    images = np.stack([render([disk], [(0, 0)], seed=s) for s in range(20)])
    snr, sigma_f = filtered_snr(images, psf_image())
    raw = find_peaks(images, psf_image(), sigma_f, threshold_sigma=5.0, sigma_is_filtered=True)
    kept = prominent(raw, snr, 3.0)
    assert sum(len(p) > 1 for p in raw) >= 5, "the test needs a disk bright enough to grow noise peaks"
    assert all(len(p) == 1 for p in kept)


def test_two_resolved_galaxies_both_survive_the_prominence_test():
    gal = galsim.Exponential(half_light_radius=0.15, flux=800.0)
    image = render([gal, gal.withFlux(400.0)], [(-6, 0), (6, 0)])[None]
    snr, sigma_f = filtered_snr(image, psf_image())
    kept = prominent(find_peaks(image, psf_image(), sigma_f, threshold_sigma=5.0, sigma_is_filtered=True), snr,
                     3.0)[0]
    centre = 31.5
    assert len(kept) == 2
    assert sorted(np.round(kept[:, 0] - centre)) == [-6, 6]


def test_filtered_noise_is_measured_on_the_image_itself():
    rng = np.random.default_rng(3)
    white = rng.normal(0, 2.0, (50, 64, 64)).astype(np.float32)
    _, sigma_f = filtered_snr(white, psf_image())
    expected = 2.0 * np.sqrt((psf_image() ** 2).sum())
    assert np.median(sigma_f) == pytest.approx(expected, rel=0.05)
    # the same noise smoothed (as a GAN or an interpolation would) has a smaller filtered sigma, measured as such
    from scipy.ndimage import gaussian_filter
    smooth = gaussian_filter(white, sigma=(0, 1, 1))
    _, sigma_smooth = filtered_snr(smooth, psf_image())
    assert np.median(sigma_smooth) < 0.8 * np.median(sigma_f)


def test_detect_finds_a_blend_and_a_single_galaxy():
    gal = galsim.Exponential(half_light_radius=0.12, flux=600.0)
    blend = render([gal, gal], [(-5, 2), (5, -2)])
    single = render([gal], [(0, 0)], seed=1)
    truth = pd.DataFrame({"x_1": [31.5 - 5], "y_1": [31.5 + 2], "x_2": [31.5 + 5], "y_2": [31.5 - 2]})
    table, _ = detect(blend[None, None], truth, kind="blend", grid="hires", zeropoints=[25.0], psfs=[psf_image()],
                      threshold_sigma=5.0, min_prominence=3.0, radius_px=5.0, search_radius_px=22.0)
    assert table["outcome"].tolist() == ["both"]
    iso_truth = pd.DataFrame({"x": [31.5], "y": [31.5]})
    table, _ = detect(single[None, None], iso_truth, kind="isolated", grid="hires", zeropoints=[25.0],
                      psfs=[psf_image()], threshold_sigma=5.0, min_prominence=3.0, radius_px=5.0,
                      search_radius_px=22.0)
    assert not table["false_positive"].iloc[0]


def test_detection_stack_sums_bands_in_common_flux_units():
    cube = np.ones((2, 2, 4, 4), np.float32)
    stack, psf = detection_stack(cube, [25.0, 27.5], [psf_image(15), psf_image(11)])
    # one unit at zeropoint 27.5 is 10^(-0.4 * 2.5) = 0.1 unit at zeropoint 25
    assert stack == pytest.approx(np.full((2, 4, 4), 1.1))
    assert psf.shape == (15, 15) and psf.sum() == pytest.approx(1.0)


def test_isolation_drops_galaxies_with_a_bright_neighbour():
    cat = pd.DataFrame({"id": [1, 2, 3, 4], "ra": [53.0, 53.0 + 1.0 / 3600, 53.01, 53.01 + 1.0 / 3600],
                        "dec": [-27.8, -27.8, -27.8, -27.8], "mag_F160W": [23.0, 24.0, 23.0, 28.5]})
    kept = isolated_only(cat.iloc[[0, 2]], cat, radius_arcsec=1.5, mag_band="F160W", neighbour_mag_max=27.0)
    # galaxy 1 has galaxy 2 (mag 24) 0.88" away; galaxy 3's neighbour (mag 28.5) is too faint to matter
    assert kept["id"].tolist() == [3]


def test_dihedral_copies_keep_low_and_high_res_aligned():
    hi = np.zeros((1, 1, 64, 64), np.float32)
    lo = np.zeros((1, 1, 21, 21), np.float32)
    hi[0, 0, 31, 40] = 1.0    # 8.5 px right of the centre 31.5 (x), 0.5 px above
    lo[0, 0, 10, 13] = 1.0    # about 3 low-res px right of the centre 10
    hi8, lo8 = augment([hi, lo], 8)
    assert hi8.shape == (8, 1, 64, 64) and lo8.shape == (8, 1, 21, 21)
    for k in range(8):
        yh, xh = np.argwhere(hi8[k, 0])[0]
        yl, xl = np.argwhere(lo8[k, 0])[0]
        # both moved the same way around their centres
        assert np.sign(round(xh - 31.5)) == np.sign(xl - 10) and np.sign(round(yh - 31.5)) == np.sign(yl - 10)
    assert np.array_equal(dihedral(hi, 0), hi)


def test_search_radius_and_showcase():
    study = {"max_offset_px": 15, "detection": {"match_radius_arcsec": 0.3}}
    assert search_radius_arcsec(study, 0.06) == pytest.approx(np.sqrt(2) * 0.9 + 0.3)
    det = pd.DataFrame({"outcome_hi": ["both", "one", "both", "both", "both"],
                        "sep_over_fwhm_sum": [0.5, 0.1, 2.0, 1.0, 3.0]})
    # hi-res detections sorted by separation: 0 (0.5), 3 (1.0), 2 (2.0), 4 (3.0); first, middle, last
    assert showcase_blends(det, "hi").tolist() == [0, 2, 4]


def test_noise_floor_keeps_texture_on_a_noiseless_gan_image_insignificant():
    """A GAN image with almost no noise but faint texture (bumps at 0.7 sigma of the survey noise): measured
    against its own (tiny) noise the bumps are 'significant' peaks and the single galaxy is a false blend;
    with the hi-res survey's filtered noise as the floor they are not."""
    gal = galsim.Exponential(half_light_radius=0.12, flux=600.0)
    survey = render([gal], [(0, 0)], noise=1.0)[None]
    _, floor = filtered_snr(survey, psf_image())
    clean = render([gal], [(0, 0)], noise=0.01, seed=1)
    yy, xx = np.mgrid[:64, :64]
    for cx, cy in ((20, 44), (44, 20)):
        clean += 0.7 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.2 ** 2)).astype(np.float32)
    truth = pd.DataFrame({"x": [31.5], "y": [31.5]})
    kw = dict(kind="isolated", grid="hires", zeropoints=[25.0], psfs=[psf_image()], threshold_sigma=5.0,
              min_prominence=3.0, radius_px=5.0, search_radius_px=22.0)
    own, _ = detect(clean[None, None], truth, **kw)
    floored, peaks = detect(clean[None, None], truth, noise_floor=floor, **kw)
    assert own["false_positive"].iloc[0] and own["n_peaks"].iloc[0] == 3
    assert not floored["false_positive"].iloc[0] and len(peaks[0]) == 1
    with pytest.raises(Exception, match="noise_floor"):
        detect(clean[None, None], truth, noise_floor=np.array([np.nan]), **kw)


# ------------------------------------------------------------------------------ every method on both samples
GEOMETRY = RebinGeometry(64, 21, 3.0)
BLEND_OFFSETS = [((-8, 3), (8, -3)), ((0, -9), (2, 9)), ((-9, -6), (9, 6))]


def _sample(kind: str, bands: list[str], noise: float, seed: int) -> tuple[BlendSet, CutoutSet]:
    """Blends of two equal galaxies well apart (or single galaxies) at known positions, the same image in every
    band, and their 3x3-binned low-res versions."""
    gal = galsim.Exponential(half_light_radius=0.12, flux=600.0)
    offsets = BLEND_OFFSETS if kind == "blend" else [((0, 0),)] * len(BLEND_OFFSETS)
    images = np.stack([render([gal] * len(o), o, noise=noise, seed=seed + i) for i, o in enumerate(offsets)])
    cube = np.repeat(images[:, None], len(bands), axis=1).astype(np.float32)
    lo = cube[..., :63, :63].reshape(*cube.shape[:2], 21, 3, 21, 3).sum(axis=(3, 5))
    cols = {}
    for k in range(len(offsets[0])):
        x = np.array([31.5 + o[k][0] for o in offsets])
        y = np.array([31.5 + o[k][1] for o in offsets])
        xlo, ylo = GEOMETRY.to_low(x, y)
        suffix = f"_{k + 1}" if kind == "blend" else ""
        cols.update({f"x{suffix}": x, f"y{suffix}": y, f"xlo{suffix}": xlo, f"ylo{suffix}": ylo})
    ids = {"blend_id" if kind == "blend" else "iso_id": np.arange(len(offsets))}
    truth = pd.DataFrame({**ids, **cols, "sep_over_fwhm_sum": 1.0, "unused": 0.0})
    zps = [25.0] * len(bands)
    hi = BlendSet(cube=cube, bands=bands, truth=truth, pixel_scale=SCALE, zeropoints=zps, kind=kind,
                  ref_band=bands[0], geometry=GEOMETRY)
    return hi, CutoutSet(cube=lo, bands=bands, table=truth, pixel_scale=0.18, zeropoints=zps)


def test_detect_samples_finds_known_blends_in_every_method_and_no_false_positives(config):
    study = config["hemmati22"]
    survey, target = get_survey(config, study["survey"]), get_survey(config, study["target"]["survey"])
    bands = list(survey.bands)
    gans = srgan_models(study)
    samples = {}
    for name, kind, seed in (("blends", "blend", 10), ("isolated", "isolated", 20)):
        hi, lo = _sample(kind, bands, noise=1.0, seed=seed)
        # a GAN image: the hi-res image without its noise (what a generator drawing no noise would give); the
        # 1-band GANs get the study's band, the others every band
        clean, _ = _sample(kind, bands, noise=1e-3, seed=seed)
        gan_sets = {}
        for m in gans:
            gb = [study["band"]] if study["models"][m]["bands"] == "one" else bands
            idx = [bands.index(b) for b in gb]
            gan_sets[m] = CutoutSet(cube=clean.cube[:, idx], bands=gb, table=hi.truth, pixel_scale=SCALE,
                                    zeropoints=[25.0] * len(gb))
        samples[name] = (hi, lo, gan_sets)
    psfs = {b: psf_image() for b in bands}
    tables, peaks = detect_samples(samples, survey=survey, target=target, study=study, psfs=psfs)

    blends, isolated = tables["blends"], tables["isolated"]
    methods = ["hi", "lo", "hi7", "lo7", *gans]
    assert [c for c in blends.columns if c.startswith("outcome_")] == [f"outcome_{m}" for m in methods]
    assert "unused" not in blends.columns and blends["blend_id"].tolist() == [0, 1, 2]
    assert not any(c.startswith("false_positive_") for c in blends.columns)
    for m in ("hi", "hi7", *gans):      # resolved pairs: both found, on hi-res and (noise floor) GAN images alike
        assert blends[f"outcome_{m}"].tolist() == ["both"] * 3, m
        assert blends[f"n_peaks_{m}"].tolist() == [2] * 3, m
        assert not isolated[f"false_positive_{m}"].any(), m
        assert isolated[f"n_peaks_{m}"].tolist() == [1] * 3, m
    assert set(blends["outcome_lo"]) <= {"both", "one", "none"}
    # the peaks table: sample, method, stamp index and position, at the true centres
    assert list(peaks.columns) == ["sample", "method", "index", "x", "y"]
    hi_peaks = peaks[(peaks["sample"] == "blends") & (peaks["method"] == "hi")]
    for i, offsets in enumerate(BLEND_OFFSETS):
        found = hi_peaks.loc[hi_peaks["index"] == i, ["x", "y"]].to_numpy()
        true = 31.5 + np.array(offsets, dtype=float)
        d = np.hypot(*(found[:, None] - true[None]).transpose(2, 0, 1)).min(axis=0)
        assert (d < 1.5).all(), (i, found, true)
    assert set(peaks.loc[peaks["sample"] == "isolated", "method"]) == set(methods)


def test_detect_samples_refuses_a_run_without_any_peak(config):
    study = config["hemmati22"]
    survey, target = get_survey(config, study["survey"]), get_survey(config, study["target"]["survey"])
    hi, lo = _sample("blend", list(survey.bands), noise=1.0, seed=1)
    rng = np.random.default_rng(2)   # noise only: nothing reaches 5 sigma of the matched filter
    noise = BlendSet(cube=rng.normal(0, 1, hi.cube.shape).astype(np.float32), bands=hi.bands, truth=hi.truth,
                     pixel_scale=SCALE, zeropoints=hi.zeropoints, kind="blend", ref_band=hi.ref_band,
                     geometry=GEOMETRY)
    noise_lo = CutoutSet(cube=rng.normal(0, 1, lo.cube.shape).astype(np.float32), bands=lo.bands, table=lo.table,
                         pixel_scale=0.18, zeropoints=lo.zeropoints)
    with pytest.raises(PipelineError, match="no peak on any stamp"):
        detect_samples({"blends": (noise, noise_lo, {})}, survey=survey, target=target, study=study,
                       psfs={b: psf_image() for b in survey.bands})
