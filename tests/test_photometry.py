"""Blend photometry: Gaussian-mixture models against GalSim truth, both engines, robustness, the study glue, Fig 7.

Must-holds of the issue, each tested here against GalSim renders of known profiles, PSFs and fluxes:
model images within 1e-3 of the peak; isolated galaxies at S/N > 100 within 1 %; both galaxies of a blend at
known positions within 3 %; pulls (flux - true) / error of width 1 +- 0.1 over many noise realisations (one batch);
NaN / empty stamps and non-converging fits flagged, never raised or dropped.
"""

from __future__ import annotations

import math
from functools import lru_cache

import galsim
import numpy as np
import pandas as pd
import pytest
import torch

from workflow_scripts.config import load_config
from workflow_scripts.errors import ConfigError
from workflow_scripts.photometry import (FLAG_BAD_POSITION, FLAG_NO_DATA, FLAG_NO_OBJECTS, FLAG_NOT_CONVERGED,
                                         RESULT_COLUMNS, FitSettings, MixtureEngine, PhotometryError,
                                         fit_psf_mixture, flux_to_mag, get_engine, ngmix_available,
                                         resolve_engine_name)
from workflow_scripts.photometry import mixtures
from workflow_scripts.photometry.mixtures import galaxy_mixture, render_mixture, sersic_equivalent
from workflow_scripts.studies.hemmati22.photometry import (blend_photometry, delta_stats, dominant_source, gp_curves,
                                                           noise_sigma, photometry_summary, positions_from_peaks,
                                                           read_table, summarise_runs, write_table)

LOWRES_FWHM = 0.6 / 0.18   # HSC-like PSF in low-res pixels (the study's photometry images)
HIRES_FWHM = 1.5           # HST-like PSF in hi-res pixels (undersampled: fitted on the oversampled ePSF)
G1, G2 = 0.2, -0.1
NGMIX_REASON = "ngmix is not installed (conda-forge only, envs/photometry.yaml): its engine cannot be tested here"


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # many small fits: one thread is fastest and immune to a busy machine
    yield
    torch.set_num_threads(old)


def moffat(fwhm: float = LOWRES_FWHM) -> galsim.GSObject:
    return galsim.Moffat(beta=3.0, fwhm=fwhm)


def gaussian(fwhm: float = LOWRES_FWHM) -> galsim.GSObject:
    return galsim.Gaussian(fwhm=fwhm)


def psf_image(psf: galsim.GSObject, size: int = 25, oversampling: int = 1) -> np.ndarray:
    """The effective (pixel-convolved) PSF, as the pipeline's PSF files hold it, sampled ``oversampling`` times per
    pixel (values per native pixel, like photutils EPSFs)."""
    if oversampling == 1:
        return psf.drawImage(nx=size, ny=size, scale=1.0).array
    n = size * oversampling + 1
    eff = galsim.Convolve(psf, galsim.Pixel(1.0))
    return eff.drawImage(nx=n, ny=n, scale=1.0 / oversampling, method="no_pixel").array * oversampling**2


def galaxy(model: str, r_e: float, flux: float, g1: float = G1, g2: float = G2) -> galsim.GSObject:
    prof = galsim.Exponential(half_light_radius=r_e) if model == "exp" else galsim.DeVaucouleurs(half_light_radius=r_e)
    return prof.shear(g1=g1, g2=g2).withFlux(flux)


def mixture_T(model: str, r_e: float, g1: float = G1, g2: float = G2) -> float:
    """T of the mixture matching a GalSim profile of half-light radius r_e sheared by g (shear keeps the area)."""
    gg = g1 * g1 + g2 * g2
    return sersic_equivalent(model)[1] * r_e**2 * (1 + gg) / (1 - gg)


def draw(gal: galsim.GSObject, psf: galsim.GSObject, size: int, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Pixel-integrated image of gal * psf centred at ((size - 1) / 2 + offset) (0-based, centres at integers)."""
    return galsim.Convolve(gal, psf).drawImage(nx=size, ny=size, scale=1.0, offset=offset).array


@lru_cache(maxsize=None)
def psf_mixture(kind: str, fwhm: float, oversampling: int = 1, ngauss: int = 3, normalize: bool = True):
    """The PSF mixture of a GalSim Moffat / Gaussian PSF image (fitted once per test session)."""
    psf = moffat(fwhm) if kind == "moffat" else gaussian(fwhm)
    return fit_psf_mixture(psf_image(psf, oversampling=oversampling), ngauss, oversampling=oversampling,
                           normalize=normalize)


def engine_for(kind: str = "moffat", fwhm: float = LOWRES_FWHM, *, model: str = "exp", oversampling: int = 1,
               **settings) -> MixtureEngine:
    return MixtureEngine(psf_mixture(kind, fwhm, oversampling), FitSettings(model=model, device="cpu", **settings))


# --------------------------------------------------------------------------------------- model images vs GalSim
@pytest.mark.parametrize("psf_kind,fwhm,oversampling", [("moffat", LOWRES_FWHM, 1), ("gaussian", LOWRES_FWHM, 1),
                                                        ("moffat", HIRES_FWHM, 4)])
@pytest.mark.parametrize("model,r_e", [("exp", 1.0), ("exp", 2.0), ("exp", 4.0), ("dev", 4.0), ("dev", 6.0)])
def test_model_images_match_galsim_to_1e3_of_the_peak(psf_kind, fwhm, oversampling, model, r_e):
    psf = moffat(fwhm) if psf_kind == "moffat" else gaussian(fwhm)
    size, flux = 41, 1000.0
    ref = draw(galaxy(model, r_e, flux), psf, size)
    c = (size - 1) / 2
    # the PSF image keeps GalSim's normalisation here (a 25-px stamp misses ~0.3 % of a Moffat's wings)
    pm = psf_mixture(psf_kind, fwhm, oversampling, 4 if psf_kind == "moffat" else 3, normalize=False)
    eng = MixtureEngine(pm, FitSettings(model=model, device="cpu", dtype="float64"))
    frac, _ = sersic_equivalent(model)
    mod = eng.render([[c, c, G1, G2, mixture_T(model, r_e), frac * flux]], (size, size))[0]
    assert np.abs(mod - ref).max() < 1e-3 * ref.max()


def mixture_as_galsim(model: str, r_e: float, flux: float) -> galsim.GSObject:
    """The galaxy mixture itself (the Gaussians the engine uses for a GalSim profile of half-light radius r_e) as
    a GalSim object, so that GalSim convolves it with the true PSF and integrates the pixels exactly."""
    frac, _ = sersic_equivalent(model)
    cov = mixtures.shape_covariance(G1, G2, mixture_T(model, r_e))
    prof = mixtures.profile(model)
    parts = []
    for a, v in zip(prof.amp, prof.var):
        L = np.linalg.cholesky(v * cov)
        parts.append(galsim.Gaussian(sigma=1.0).transform(L[0, 0], L[0, 1], L[1, 0], L[1, 1]).withFlux(a * frac * flux))
    return galsim.Sum(parts)


# Small dev profiles (r_e <= 2 px) miss 1e-3 of the peak, and the engine is not the cause: the 10-Gaussian dev
# mixture of Hogg & Lang (ngmix uses the same numbers) cannot follow the de Vaucouleurs cusp. Measured (41-px
# stamps, HSC-like Moffat PSF): the mixture convolved by GalSim with the *true* PSF differs from the DeVaucouleurs
# render by 3.2e-3 (r_e = 1), 1.4e-3 (2), 0.85e-3 (3), 0.76e-3 (4) of the peak; without a PSF by 1.9e-2 / 1.1e-2 /
# 6e-3 (r_e = 1 / 2 / 4); the best flux and T for the image do not bring r_e = 2 below 1e-3. The engine's part (the
# PSF mixture; pixels need no approximation, the PSF mixture is fitted to the effective PSF) stays ~1e-4 (Moffat,
# Gaussian) and ~5e-4 (undersampled HST-like PSF). So the test above asserts 1e-3 where the dev mixture holds it
# (r_e >= 4 px), and this one asserts the engine's own accuracy for small dev profiles against the same mixture.
@pytest.mark.parametrize("psf_kind", ["moffat", "gaussian"])
@pytest.mark.parametrize("r_e", [1.0, 2.0])
def test_small_dev_profiles_match_galsim_renders_of_the_dev_mixture(psf_kind, r_e):
    psf = moffat() if psf_kind == "moffat" else gaussian()
    size, flux = 41, 1000.0
    c = (size - 1) / 2
    exact_mixture = galsim.Convolve(mixture_as_galsim("dev", r_e, flux), psf).drawImage(nx=size, ny=size,
                                                                                         scale=1.0).array
    pm = psf_mixture(psf_kind, LOWRES_FWHM, 1, 4 if psf_kind == "moffat" else 3, normalize=False)
    eng = MixtureEngine(pm, FitSettings(model="dev", device="cpu", dtype="float64"))
    mod = eng.render([[c, c, G1, G2, mixture_T("dev", r_e), sersic_equivalent("dev")[0] * flux]], (size, size))[0]
    assert np.abs(mod - exact_mixture).max() < 2e-4 * exact_mixture.max()
    # and the dev mixture itself, not the engine, holds the residual against GalSim's DeVaucouleurs
    ref = draw(galaxy("dev", r_e, flux), psf, size)
    assert np.abs(mod - ref).max() == pytest.approx(np.abs(exact_mixture - ref).max(), rel=0.1)


@pytest.mark.parametrize("shape,params", [
    ((21, 23), [[10.3, 11.7, 0.3, 0.25, 7.0, 500.0], [6.0, 5.2, -0.4, 0.1, 2.0, 100.0]]),
    # a large stamp: the narrow components are evaluated on windows around the centres (one near an edge)
    ((64, 66), [[40.3, 21.7, 0.3, 0.25, 7.0, 500.0], [1.0, 62.2, -0.4, 0.1, 2.0, 100.0]])])
def test_torch_renderer_matches_the_numpy_mixture_algebra(shape, params):
    pm = psf_mixture("moffat", LOWRES_FWHM)
    eng = MixtureEngine(pm, FitSettings(model="dev", device="cpu", dtype="float64"))
    torch_img = eng.render([params], shape)[0]
    mix = galaxy_mixture("dev", *params[0]).convolve(pm.mixture)
    mix2 = galaxy_mixture("dev", *params[1]).convolve(pm.mixture)
    ref = render_mixture(mix, shape) + render_mixture(mix2, shape)
    np.testing.assert_allclose(torch_img, ref, atol=1e-10 * ref.max())


def test_bdf_is_the_exp_and_dev_mixtures_weighted_by_the_bulge_fraction():
    bdf, exp, dev = (mixtures.profile(m) for m in ("bdf", "exp", "dev"))
    np.testing.assert_allclose(bdf.amplitudes(0.0)[~bdf.bulge], exp.amp)
    np.testing.assert_allclose(bdf.amplitudes(1.0)[bdf.bulge], dev.amp)
    for fd in (0.0, 0.3, 1.0):                      # normalised, and T is the whole profile's, at any fracdev
        a = bdf.amplitudes(fd)
        assert a.sum() == pytest.approx(1.0) and (a * bdf.var).sum() == pytest.approx(1.0)
    with pytest.raises(PhotometryError, match="fracdev must be in"):
        bdf.amplitudes(1.5)
    with pytest.raises(PhotometryError, match="no bulge fraction"):
        exp.amplitudes(0.3)
    # the torch renderer against the numpy mixture algebra, with the bulge fraction
    pm = psf_mixture("moffat", LOWRES_FWHM)
    eng = MixtureEngine(pm, FitSettings(model="bdf", device="cpu", dtype="float64"))
    params = [[10.3, 11.7, 0.3, 0.25, 7.0, 500.0, 0.3], [6.0, 5.2, -0.4, 0.1, 2.0, 100.0, 0.9]]
    ref = sum(render_mixture(galaxy_mixture("bdf", *p).convolve(pm.mixture), (21, 23)) for p in params)
    np.testing.assert_allclose(eng.render([params], (21, 23))[0], ref, atol=1e-10 * ref.max())
    with pytest.raises(PhotometryError, match="takes 7 parameters"):
        eng.render([[p[:6] for p in params]], (21, 23))


@pytest.mark.parametrize("fracdev", [0.0, 0.3, 0.7])
def test_bdf_recovers_the_flux_and_bulge_fraction_of_a_galsim_bulge_plus_disk(fracdev):
    """GalSim Exponential + DeVaucouleurs of the same T (the bdf model's assumption), sheared alike: bdf finds the
    flux within 1 % of what the two mixtures can hold (the dev mixture holds 94.3 % of an untruncated de
    Vaucouleurs profile, :func:`sersic_equivalent`) and the bulge fraction within 0.05; exp alone misses 3 and 6 %
    of it at fracdev 0.3 and 0.7 (measured), so the test also checks that bdf is needed."""
    psf, size, flux, sigma, n = moffat(), 31, 2000.0, 0.05, 12
    (f_exp, t_exp), (f_dev, t_dev) = sersic_equivalent("exp"), sersic_equivalent("dev")
    re_disk = 2.0
    re_bulge = re_disk * math.sqrt(t_exp / t_dev)           # the same T for both mixtures
    gal = galsim.Sum([galsim.Exponential(half_light_radius=re_disk, flux=flux * (1 - fracdev)),
                      galsim.DeVaucouleurs(half_light_radius=re_bulge, flux=flux * fracdev)]).shear(g1=G1, g2=G2)
    held = flux * ((1 - fracdev) * f_exp + fracdev * f_dev)
    c = (size - 1) / 2
    images = noisy(draw(gal, psf, size), sigma, n, seed=4)
    res = engine_for(model="bdf").fit(images, [np.array([[c, c]])] * n, sigma)
    assert res["converged"].all() and (res["flags"] == 0).all()
    assert abs(np.median(res["flux"]) / held - 1) < 0.01
    assert np.median(res["fracdev"]) == pytest.approx(fracdev * f_dev * flux / held, abs=0.05)
    assert np.median(res["g1"]) == pytest.approx(G1, abs=0.01)
    if fracdev >= 0.3:
        exp_fit = engine_for(model="exp").fit(images, [np.array([[c, c]])] * n, sigma)
        assert np.median(exp_fit["flux"]) / held < 0.98


def test_mixture_profiles_are_normalised_and_have_their_half_light_radius():
    for name, prof in mixtures.PROFILES.items():
        assert prof.amp.sum() == pytest.approx(1.0, abs=1e-6)
        assert (prof.amp * prof.var).sum() == pytest.approx(1.0, abs=1e-6)
        T = 5.0
        r_e = mixtures.half_light_radius(name, T)
        assert mixtures.T_from_half_light_radius(name, r_e) == pytest.approx(T, rel=1e-9)
    assert mixtures.profile("exp").n == 6 and mixtures.profile("dev").n == 10
    with pytest.raises(PhotometryError, match="unknown galaxy model"):
        mixtures.profile("sersic")
    with pytest.raises(PhotometryError, match="sum of two profiles"):
        sersic_equivalent("bdf")


def test_psf_mixture_fits_a_moffat_and_finds_an_offset_centre():
    psf = moffat().shift(0.3, -0.2)
    pm = fit_psf_mixture(psf_image(psf), 3)
    assert pm.max_residual < 2e-3
    np.testing.assert_allclose(pm.centre, [0.3, -0.2], atol=0.02)
    assert pm.amp.sum() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(PhotometryError, match="odd sides"):
        fit_psf_mixture(np.ones((4, 4)))
    with pytest.raises(PhotometryError, match="NaN"):
        fit_psf_mixture(np.full((5, 5), np.nan))


@pytest.mark.parametrize("model", ["exp", "bdf"])
@pytest.mark.parametrize("shape,centres", [((15, 17), [(7.2, 8.1), (10.0, 4.5)]),
                                           ((40, 37), [(17.2, 20.1), (34.0, 3.5)])])   # windowed components
def test_analytic_jacobian_matches_autograd(shape, centres, model):
    pm = psf_mixture("moffat", LOWRES_FWHM)
    eng = MixtureEngine(pm, FitSettings(model=model, device="cpu", dtype="float64"))
    px, py = eng._grid(shape)
    (x1, y1), (x2, y2) = centres
    extra = ([0.3], [0.8]) if model == "bdf" else ([], [])            # bdf: fracdev
    theta = torch.tensor([[[x1, y1, 0.3, -0.2, math.log(6.0), 300.0, *extra[0]],
                           [x2, y2, -0.1, 0.4, math.log(2.0), 80.0, *extra[1]]]], dtype=torch.float64)
    omask = torch.ones((1, 2), dtype=torch.bool)
    _, jac = eng._evaluate(theta, omask, px, py, jacobian=True)

    def image(th):
        return eng._evaluate(th, omask, px, py, jacobian=False)[0]

    npar = theta.shape[-1]
    auto = torch.autograd.functional.jacobian(image, theta)                # (1, N, 1, 2, npar)
    auto = auto[0, :, 0].reshape(px.numel() * py.numel(), 2 * npar).T      # (2 npar, N)
    torch.testing.assert_close(jac[0], auto, rtol=1e-7, atol=1e-9 * float(auto.abs().max()))


# --------------------------------------------------------------------------------------- accuracy of the fits
def noisy(clean: np.ndarray, sigma: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return clean[None] + rng.normal(scale=sigma, size=(n, *clean.shape))


def test_isolated_galaxies_at_high_snr_recover_their_flux_within_1_percent():
    psf, size, flux, r_e = moffat(), 21, 1000.0, 1.5
    eng = engine_for()
    clean = draw(galaxy("exp", r_e, flux), psf, size)
    c = (size - 1) / 2
    for sigma, n in ((0.5, 100), (0.05, 10)):        # S/N ~ 200 and ~ 2000
        res = eng.fit(noisy(clean, sigma, n, seed=1), [np.array([[c, c]])] * n, sigma)
        ratio = res["flux"].to_numpy() / flux
        snr = (res["flux"] / res["flux_err"]).to_numpy()
        assert (snr > 100).all() and res["converged"].all() and (res["flags"] == 0).all()
        assert abs(np.median(ratio) - 1) < 0.01
        if sigma < 0.1:
            assert np.abs(ratio - 1).max() < 0.01
        assert np.median(res["T"]) == pytest.approx(mixture_T("exp", r_e), rel=0.02)
        assert np.median(res["g1"]) == pytest.approx(G1, abs=0.01)
        assert np.median(res["g2"]) == pytest.approx(G2, abs=0.01)


def test_isolated_hires_galaxy_with_an_undersampled_psf():
    psf, size, flux = moffat(HIRES_FWHM), 64, 2000.0
    eng = engine_for(fwhm=HIRES_FWHM, oversampling=4)
    c = (size - 1) / 2
    clean = draw(galaxy("exp", 3.0, flux), psf, size, offset=(0.3, -0.4))
    res = eng.fit(noisy(clean, 0.1, 4, seed=2), [np.array([[c + 1, c - 1]])] * 4, 0.1)
    np.testing.assert_allclose(res["flux"], flux, rtol=0.01)
    np.testing.assert_allclose(res["x"], c + 0.3, atol=0.05)
    np.testing.assert_allclose(res["y"], c - 0.4, atol=0.05)


def blend_images(sigma: float, n: int, seed: int, sep: tuple[float, float] = (4.0, -2.5)):
    psf, size = moffat(), 21
    c = (size - 1) / 2
    f1, f2 = 1000.0, 400.0
    clean = draw(galaxy("exp", 1.5, f1), psf, size) + draw(galaxy("exp", 1.0, f2, 0.0, 0.2), psf, size, offset=sep)
    truth = np.array([[c, c], [c + sep[0], c + sep[1]]])
    return psf, noisy(clean, sigma, n, seed), truth, (f1, f2)


def test_a_blend_of_two_galaxies_at_known_positions_recovers_both_fluxes_within_3_percent():
    psf, images, truth, fluxes = blend_images(0.05, 20, seed=3)      # S/N ~ 1000 and ~ 500
    eng = engine_for()
    res = eng.fit(images, [truth] * len(images), 0.05)
    assert len(res) == 2 * len(images) and res["converged"].all()
    for obj, f in enumerate(fluxes):
        got = res.loc[res["object"] == obj, "flux"].to_numpy()
        assert np.abs(got / f - 1).max() < 0.03
        assert abs(np.median(got) / f - 1) < 0.01


def test_flux_pulls_have_unit_width_over_many_noise_realisations():
    psf, size, flux = moffat(), 21, 1000.0
    eng = engine_for()
    clean = draw(galaxy("exp", 1.5, flux), psf, size)
    c = (size - 1) / 2
    n, sigma = 400, 3.0                                  # S/N ~ 25: one batch of 400 fits
    rng = np.random.default_rng(4)
    positions = [np.array([[c, c]]) + rng.normal(0, 0.3, (1, 2)) for _ in range(n)]   # peaks are not exact
    res = eng.fit(noisy(clean, sigma, n, seed=5), positions, sigma)
    assert res["converged"].mean() > 0.98
    r = res[res["converged"]]
    pull = (r["flux"] - flux) / r["flux_err"]
    assert pull.std() == pytest.approx(1.0, abs=0.1)
    assert abs(pull.mean()) < 0.2


def test_blend_pulls_have_unit_width():
    psf, images, truth, fluxes = blend_images(0.5, 300, seed=6)             # S/N ~ 60 and ~ 25
    rng = np.random.default_rng(16)
    positions = [truth + rng.normal(0, 0.3, truth.shape) for _ in images]     # detected peaks scatter
    res = engine_for().fit(images, positions, 0.5)
    for obj, f in enumerate(fluxes):
        r = res[(res["object"] == obj) & res["converged"]]
        assert len(r) > 0.95 * len(images)
        pull = (r["flux"] - f) / r["flux_err"]
        assert pull.std() == pytest.approx(1.0, abs=0.1)


def test_blends_with_an_unresolved_companion_are_converged_where_centres_and_fluxes_are_settled():
    # an unresolved companion's ln T slides down a valley where chi^2 hardly changes: the whole Gauss-Newton
    # decrement stayed above its bar in 16 of these 400 fits (4 %; 15 in float64: not a precision problem),
    # although their fluxes were settled; the test on centres and fluxes leaves 3 (measured)
    psf, size, n = moffat(), 21, 400
    c = (size - 1) / 2
    clean = draw(galaxy("exp", 1.5, 1000.0), psf, size) + draw(galaxy("exp", 0.05, 300.0, 0.0, 0.0), psf, size,
                                                                offset=(4.0, -3.0))
    rng = np.random.default_rng(3)
    positions = [np.array([[c, c], [c + 4.0, c - 3.0]]) + rng.normal(0, 0.3, (2, 2)) for _ in range(n)]
    images = noisy(clean, 1.0, n, seed=13)                                   # S/N ~ 50 and ~ 25
    res = engine_for().fit(images, positions, 1.0)
    per_stamp = res.groupby("stamp")["converged"].first()
    assert (~per_stamp).sum() <= 6                                            # <= 1.5 %
    assert (res.loc[res["object"] == 1, "T"] < 0.2 * psf_mixture("moffat", LOWRES_FWHM).T).mean() > 0.9
    total = res[res["converged"]].groupby("stamp")["flux"].sum()
    assert abs(np.median(total) / 1300.0 - 1) < 0.01                       # the light is all there


# --------------------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("model", ["exp", "bdf"])
def test_bad_stamps_give_flagged_rows_and_never_spoil_the_batch(model):
    psf, images, truth, fluxes = blend_images(0.2, 6, seed=7)
    images = images.copy()
    images[1] = np.nan                                   # a NaN cutout
    images[2, :5, :5] = np.nan                           # a few NaN pixels: fitted without them
    sigma = np.full(6, 0.2)
    sigma[3] = np.nan                                    # no noise estimate
    positions = [truth, truth, truth, truth, np.zeros((0, 2)), np.array([[np.nan, 3.0], truth[0]])]
    res = engine_for(model=model).fit(images, positions, sigma)
    assert list(res.columns) == list(RESULT_COLUMNS)
    assert res["fracdev"].isna().all() == (model != "bdf")
    by = {s: g for s, g in res.groupby("stamp")}
    assert len(by) == 6
    assert (by[0]["flags"] == 0).all() and by[0]["converged"].all()
    np.testing.assert_allclose(by[0]["flux"], fluxes, rtol=0.03)
    assert (by[1]["flags"] & FLAG_NO_DATA).all() and by[1]["flux"].isna().all() and len(by[1]) == 2
    assert (by[2]["flags"] == 0).all()
    np.testing.assert_allclose(by[2]["flux"], fluxes, rtol=0.03)
    assert (by[3]["flags"] & FLAG_NO_DATA).all()
    assert len(by[4]) == 1 and by[4]["object"].iloc[0] == -1 and by[4]["flags"].iloc[0] & FLAG_NO_OBJECTS
    assert by[5]["flags"].iloc[0] & FLAG_BAD_POSITION and np.isnan(by[5]["flux"].iloc[0])
    assert by[5]["flags"].iloc[1] == 0 and by[5]["converged"].iloc[1]
    # an all-NaN batch, an empty position list and wild values raise nothing either
    odd = engine_for(model=model).fit(np.stack([np.full((21, 21), np.nan), np.full((21, 21), 1e30)]),
                              [truth, truth], 1.0)
    assert len(odd) == 4 and (odd["flags"] > 0).any()


def test_a_fit_that_does_not_converge_is_flagged_not_dropped():
    psf, images, truth, _ = blend_images(0.2, 4, seed=8)
    eng = engine_for(max_iter=1)
    res = eng.fit(images, [truth + 1.5] * 4, 0.2)                   # start off the galaxies, one iteration
    assert len(res) == 8
    assert (res["flags"] & FLAG_NOT_CONVERGED).all() and not res["converged"].any()
    assert res["flux"].notna().all()                                  # the last iterate is still reported


def test_bad_arguments_raise_one_clear_error():
    eng = engine_for()
    with pytest.raises(PhotometryError, match="position lists"):
        eng.fit(np.zeros((2, 5, 5)), [np.zeros((1, 2))], 1.0)
    with pytest.raises(PhotometryError, match="noise_sigma"):
        eng.fit(np.zeros((2, 5, 5)), [np.zeros((1, 2))] * 2, [1.0, 2.0, 3.0])
    with pytest.raises(PhotometryError, match="g_sigma"):
        FitSettings(g_sigma=1.5)


# --------------------------------------------------------------------------------------- engines
def test_engine_selection(monkeypatch):
    from workflow_scripts import photometry

    monkeypatch.setattr(photometry, "ngmix_available", lambda: False)
    assert resolve_engine_name("auto") == "mixture"
    assert get_engine("auto", psf_image(moffat())).name == "mixture"
    with pytest.raises(PhotometryError, match="conda-forge"):
        resolve_engine_name("ngmix")
    monkeypatch.setattr(photometry, "ngmix_available", lambda: True)
    assert resolve_engine_name("auto") == "ngmix"
    with pytest.raises(PhotometryError, match="unknown photometry engine"):
        resolve_engine_name("sextractor")


def test_auto_engine_is_ngmix_exactly_when_ngmix_imports():
    assert resolve_engine_name("auto") == ("ngmix" if ngmix_available() else "mixture")


@pytest.mark.skipif(not ngmix_available(), reason=NGMIX_REASON)
def test_ngmix_engine_isolated_and_blend_fluxes():
    psf, size, flux = moffat(), 21, 1000.0
    c = (size - 1) / 2
    eng = get_engine("ngmix", psf_image(moffat()), FitSettings(model="exp"))
    assert eng.name == "ngmix"
    clean = draw(galaxy("exp", 1.5, flux), psf, size)
    res = eng.fit(noisy(clean, 0.5, 10, seed=9), [np.array([[c, c]])] * 10, 0.5)
    assert res["converged"].all() and abs(np.median(res["flux"]) / flux - 1) < 0.01
    _, images, truth, fluxes = blend_images(0.05, 5, seed=10)
    res = eng.fit(images, [truth] * 5, 0.05)
    assert res["converged"].all()
    for obj, f in enumerate(fluxes):
        assert np.abs(res.loc[res["object"] == obj, "flux"] / f - 1).max() < 0.03


@pytest.mark.skipif(not ngmix_available(), reason=NGMIX_REASON)
def test_ngmix_and_mixture_engines_agree():
    _, images, truth, _ = blend_images(0.5, 5, seed=11)
    a = get_engine("ngmix", psf_image(moffat())).fit(images, [truth] * 5, 0.5)
    b = get_engine("mixture", psf_image(moffat())).fit(images, [truth] * 5, 0.5)
    np.testing.assert_allclose(a["flux"], b["flux"], rtol=0.02)
    np.testing.assert_allclose(a["flux_err"], b["flux_err"], rtol=0.15)
    bad = get_engine("ngmix", psf_image(moffat())).fit(np.full((1, 21, 21), np.nan), [truth], 1.0)
    assert (bad["flags"] & FLAG_NO_DATA).all()


@pytest.mark.skipif(not ngmix_available(), reason=NGMIX_REASON)
def test_ngmix_and_mixture_engines_agree_on_bulge_plus_disk():
    fit = {}
    for sigma in (0.05, 0.5):                                        # S/N ~ 600 and ~ 60
        _, images, truth, _ = blend_images(sigma, 5, seed=11)
        fit[sigma] = [get_engine(name, psf_image(moffat()), FitSettings(model="bdf")).fit(images, [truth] * 5, sigma)
                      for name in ("ngmix", "mixture")]
    a, b = fit[0.05]
    np.testing.assert_allclose(a["flux"], b["flux"], rtol=0.01)
    np.testing.assert_allclose(a["fracdev"], b["fracdev"], atol=0.02)
    # at S/N ~ 60 the bulge fraction is loose and the two can end in different minima: where they do, ours has
    # the lower chi^2 (measured: one stamp of 5, chi^2/dof 1.07 against ngmix's 1.18, fluxes 5 % apart)
    a, b = fit[0.5]
    assert (b.groupby("stamp")["chi2_dof"].first() <= a.groupby("stamp")["chi2_dof"].first() * 1.001).all()


# --------------------------------------------------------------------------------------- the study glue
def synthetic_truth(n: int) -> pd.DataFrame:
    return pd.DataFrame({"blend_id": np.arange(n), "flux_F775W_1": np.full(n, 1000.0), "flux_F775W_2": 400.0,
                         "mag_F775W_1": 25.0 - 2.5 * np.log10(1000.0), "mag_F775W_2": 25.0 - 2.5 * np.log10(400.0),
                         "xlo_1": 10.0, "ylo_1": 10.0, "xlo_2": 14.0, "ylo_2": 7.5, "flux_ratio": 0.4})


def test_positions_from_peaks_maps_gan_peaks_to_lowres_pixels():
    peaks = pd.DataFrame({"sample": ["blends"] * 3 + ["isolated"], "method": ["lo", "srgan1", "srgan1", "lo"],
                          "index": [0, 1, 1, 0], "x": [10.0, 31.5, 43.5, 1.0], "y": [10.0, 31.5, 22.5, 1.0]})
    lo = positions_from_peaks(peaks, "lo", 3)
    assert [len(p) for p in lo] == [1, 0, 0]
    from workflow_scripts.imaging.degrade import RebinGeometry
    gan = positions_from_peaks(peaks, "srgan1", 3, to_low=RebinGeometry(64, 21, 3.0).to_low)
    np.testing.assert_allclose(gan[1], [[10.0, 10.0], [14.0, 7.0]])


def test_study_tables_match_the_dominant_source_and_summarise():
    psf, images, truth_xy, fluxes = blend_images(0.5, 30, seed=12)
    truth = synthetic_truth(30)
    eng = engine_for()
    both = eng.fit(images, [truth_xy] * 30, 0.5)
    merged = eng.fit(images, [truth_xy[:1]] * 30, 0.5)          # as if only one peak was found
    kw = dict(band="F775W", zeropoint=25.0, radius_px=2.0, truth_xy=np.repeat(truth_xy[None], 30, 0))
    t_both = blend_photometry(both, truth, run="lo_at_gan", **kw)
    t_one = blend_photometry(merged, truth, run="lo_at_lo", **kw)
    assert set(t_both["truth_object"]) == {1, 2} and t_both["dominant"].sum() == 30
    assert t_both.loc[t_both["dominant"], "true_flux"].eq(1000.0).all()
    d_both, d_one = dominant_source(t_both, truth, "F775W"), dominant_source(t_one, truth, "F775W")
    assert d_both["measured"].all() and d_one["measured"].all()
    # one object for two galaxies takes some of the companion's light: brighter, biased
    assert np.median(d_one["dmag"]) < -0.05 < np.median(d_both["dmag"]) + 0.05
    stats = delta_stats(d_both)
    assert stats["n_measured"] == 30 and abs(stats["bias"]) < 0.01 and stats["scatter"] < 0.02
    summary = photometry_summary({"lo_at_lo": d_one, "lo_at_gan": d_both}, engine="mixture", model="exp")
    imp = summary["ours"]["improvement_factor"]
    assert imp["bias"] > 5 and summary["paper"]["improvement_factor_min"] == 10
    np.testing.assert_allclose(flux_to_mag([100.0, -1.0], 25.0), [20.0, np.nan])


def test_summarise_runs_is_the_per_run_chain_and_tables_keep_their_facts(tmp_path):
    """The summary step's library call: dominant source, GP and photometry.json of each run, named by its table."""
    psf, images, truth_xy, fluxes = blend_images(0.5, 30, seed=12)
    truth = synthetic_truth(30)
    eng = engine_for()
    kw = dict(band="F775W", zeropoint=25.0, radius_px=2.0, truth_xy=np.repeat(truth_xy[None], 30, 0))
    tables = {"lo_at_lo": blend_photometry(eng.fit(images, [truth_xy[:1]] * 30, 0.5), truth, run="lo_at_lo", **kw),
              "lo_at_gan": blend_photometry(eng.fit(images, [truth_xy] * 30, 0.5), truth, run="lo_at_gan", **kw)}
    facts = {"engine": "mixture", "model": "exp"}
    for run, table in tables.items():
        write_table(tmp_path / f"{run}.parquet", table, {"seed": 1}, {"run": run, **facts})
    runs = {run: read_table(tmp_path / f"{run}.parquet") for run in tables}
    assert runs["lo_at_gan"][1] == {"run": "lo_at_gan", **facts}
    summary, dominant, gp = summarise_runs(runs, truth, "F775W", gp={"max_points": 50, "restarts": 0}, seed=1)
    doms = {run: dominant_source(table, truth, "F775W") for run, table in tables.items()}
    expected = photometry_summary(doms, engine="mixture", model="exp")
    assert summary["ours"] == expected["ours"] and summary["engine"] == "mixture" and set(summary["gp"]) == set(tables)
    assert list(dominant["run"].unique()) == ["lo_at_lo", "lo_at_gan"] and len(dominant) == 60
    assert set(gp["run"]) == set(tables) and {"mag", "mean", "std"} <= set(gp.columns)


def test_noise_sigma_ignores_empty_corners():
    rng = np.random.default_rng(13)
    img = rng.normal(scale=2.0, size=(3, 30, 30))
    img[0, :10] = 0.0
    img[2] = 0.0
    sig = noise_sigma(img)
    assert sig[0] == pytest.approx(2.0, rel=0.15) and sig[1] == pytest.approx(2.0, rel=0.15) and np.isnan(sig[2])


def test_gp_regression_follows_a_trend_with_predictive_bands():
    rng = np.random.default_rng(14)
    mag = rng.uniform(20, 26, 300)
    dmag = 0.05 * (mag - 20) + rng.normal(0, 0.1, 300)
    curves, info = gp_curves(mag, dmag, max_points=200, seed=1, restarts=0)
    inside = (curves["mag"] > 21) & (curves["mag"] < 25)
    np.testing.assert_allclose(curves.loc[inside, "mean"], 0.05 * (curves.loc[inside, "mag"] - 20), atol=0.06)
    assert curves.loc[inside, "std"].between(0.07, 0.15).all()      # predictive: includes the 0.1 white noise
    assert info["n_points"] == 200 and "RBF" in info["kernel"] and "WhiteKernel" in info["kernel"]


def test_fig7_is_drawn(tmp_path):
    from workflow_scripts.studies.hemmati22.figures_photometry import fig7_photometry

    rng = np.random.default_rng(15)
    doms, curves = {}, []
    for run, bias, scatter in (("lo_at_lo", -0.3, 0.3), ("lo_at_gan", -0.05, 0.1), ("hi_at_hi", 0.0, 0.03)):
        mag = rng.uniform(21, 25, 120)
        meas = mag + bias + rng.normal(0, scatter, 120)
        doms[run] = pd.DataFrame({"input_mag": mag, "measured_mag": meas, "measured": True})
        c, _ = gp_curves(mag, meas - mag, max_points=100, restarts=0)
        curves.append(c.assign(run=run))
    summary = photometry_summary({r: d.assign(matched=True, converged=True, dmag=d.measured_mag - d.input_mag)
                                  for r, d in doms.items()}, engine="mixture", model="exp")
    out = fig7_photometry(doms, pd.concat(curves), tmp_path / "f.png", tmp_path / "f.pdf", summary=summary,
                          band="F775W")
    assert out.stat().st_size > 20_000 and (tmp_path / "f.pdf").stat().st_size > 5_000


def test_fig7_third_panel_shows_the_as_coded_runs_with_their_medians(tmp_path, monkeypatch):
    from workflow_scripts.studies.hemmati22 import figures_photometry as f7
    from workflow_scripts.studies.hemmati22.as_coded import dominants_on_subset

    rng = np.random.default_rng(16)
    mag = rng.uniform(21, 25, 60)
    doms = {r: pd.DataFrame({"input_mag": mag, "measured_mag": mag, "measured": True})
            for r in ("lo_at_lo", "lo_at_gan")}
    curves = pd.DataFrame({"run": ["lo_at_lo"], "mag": [22.0], "mean": [0.0], "std": [0.1]})
    flux = 10 ** (-0.4 * (mag - 25))
    runs = {name: pd.DataFrame({"input_mag": mag, "input_flux": flux, "measured": True,
                                "measured_flux": flux * (1 + err * rng.choice([-1, 1], 60))})
            for name, err in (("lo_at_lo", np.linspace(0.2, 0.8, 60)), ("lo_at_gan", 0.05), ("lo_at_truth", 0.02))}
    runs["lo_at_gan"].loc[30:, "measured"] = False     # the low-res peak's median counts blends measured in both
    subset = np.arange(60) % 2 == 0
    coded = dominants_on_subset(runs, subset)
    assert len(coded) == 90 and set(coded["run"]) == set(runs) and (coded["index"] % 2 == 0).all()
    drawn = []
    real_save = f7.save_figure
    monkeypatch.setattr(f7, "save_figure", lambda fig, *a, **k: (drawn.append(fig.axes), real_save(fig, *a, **k))[1])
    summary = {"n_subset": 30, "n_measured": 30, "median_abs_dflux_lo_at_lo": 0.5, "median_abs_dflux_lo_at_gan": 0.05,
               "improvement_factor": 10.0}
    f7.fig7_photometry(doms, curves, tmp_path / "f.png", as_coded=coded, as_coded_summary=summary)
    axes = drawn[0]
    assert len(axes) == 3 and axes[2].get_yscale() == "log"
    medians = sorted(ln.get_ydata()[0] for ln in axes[2].lines if ln.get_linestyle() == "--")
    both = np.flatnonzero(subset[:30])
    assert medians == pytest.approx([0.02, 0.05, np.median(np.linspace(0.2, 0.8, 60)[both])])
    assert "x10.0" in axes[2].texts[0].get_text()
    with pytest.raises(f7.FigureError, match="as-coded table needs columns"):
        f7.fig7_photometry(doms, curves, tmp_path / "g.png", as_coded=coded.drop(columns="input_flux"))


def test_photometry_config_is_validated(config):
    assert config["photometry"]["engine"] in ("auto", "ngmix", "mixture")
    bad = {**config, "photometry": {**config["photometry"], "engine": "sextractor"}}
    from workflow_scripts.config import validate_config

    with pytest.raises(ConfigError, match="photometry.engine"):
        validate_config(bad)
    bad = {**config, "photometry": {**config["photometry"], "prior": {}}}
    with pytest.raises(ConfigError, match="unknown key 'photometry.prior'"):
        validate_config(bad)
    load_config()  # the default config holds a valid block
