"""Degradation to HSC quality (workflow_scripts.imaging.degrade) against known truth drawn with GalSim.

Stars and galaxies of known flux are drawn on the 0.06"/px grid with a known Moffat PSF (FWHM 0.09"); the PSF
itself (pixel-integrated, 25 x 25, sum 1) plays the measured survey PSF. The degraded images are compared with the
same sources drawn directly by GalSim on the 0.18"/px grid with the 0.6" target PSF, measured the same way
(circular Moffat fit, workflow_scripts.data.psf.measure_fwhm).
"""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest

from workflow_scripts.imaging import degrade as D
from workflow_scripts.config import load_config
from workflow_scripts.errors import PipelineError
from workflow_scripts.data.psf import measure_fwhm
from workflow_scripts.surveys import get_survey

HIRES = 0.06            # arcsec / px, GOODS-S HLF mosaics
HIRES_FWHM = 0.09       # ACS-like Moffat FWHM of the high-resolution images
TARGET_FWHM = 0.6       # HSC i (config surveys.hsc)
LOWRES = 0.18
N_HI, N_LO = 64, 21
ZP_F775W = 25.678
FWHM_TOLERANCE = 0.05   # brief: degraded FWHM within 5 % of 0.6"
FLUX_TOLERANCE = 0.01   # brief: flux conserved within 1 %
NOISE_TOLERANCE = 0.03  # brief: noise std within 3 %


@pytest.fixture(scope="module")
def hsc():
    return get_survey(load_config(), "hsc")


def hires_psf(fwhm: float = HIRES_FWHM, size: int = 25) -> np.ndarray:
    img = galsim.Moffat(beta=3.0, fwhm=fwhm).drawImage(nx=size, ny=size, scale=HIRES).array.astype(np.float64)
    return img / img.sum()


def draw_hi(profile: galsim.GSObject, offset=(0.0, 0.0), psf_fwhm: float = HIRES_FWHM) -> np.ndarray:
    """Hi-res stamp; ``offset`` in hi-res pixels from the stamp centre (31.5, 31.5)."""
    obj = galsim.Convolve(profile, galsim.Moffat(beta=3.0, fwhm=psf_fwhm))
    return obj.drawImage(nx=N_HI, ny=N_HI, scale=HIRES, offset=offset).array.astype(np.float32)


def draw_lo_truth(profile: galsim.GSObject, offset=(0.0, 0.0), target: galsim.GSObject | None = None) -> np.ndarray:
    """The same source as HSC should see it: target PSF, 0.18"/px, same sky position."""
    target = target or galsim.Moffat(beta=D.TARGET_MOFFAT_BETA, fwhm=TARGET_FWHM)
    obj = galsim.Convolve(profile, target)
    return obj.drawImage(nx=N_LO, ny=N_LO, scale=LOWRES, offset=(offset[0] / 3, offset[1] / 3)).array


# --------------------------------------------------------------------------------------------- geometry
def test_rebin_matrix_is_exact_area_overlap():
    r = D.rebin_matrix(64, 3, 21)
    assert r.shape == (21, 64)
    np.testing.assert_allclose(r.sum(axis=1), 3.0, atol=1e-12)           # each lo-res pixel: 3 hi-res widths
    col = r.sum(axis=0)
    np.testing.assert_allclose(col[1:-1], 1.0, atol=1e-12)               # every inner hi-res pixel fully used
    assert col[0] == pytest.approx(0.5) and col[-1] == pytest.approx(0.5)  # half of the outer frame is outside
    # divisible case: a plain 3x3 block sum
    r63 = D.rebin_matrix(63, 3)
    x = np.random.default_rng(0).normal(size=(2, 63, 63))
    blocks = x.reshape(2, 21, 3, 21, 3).sum(axis=(2, 4))
    np.testing.assert_allclose(D.rebin_flux(x, 3, 21), blocks, rtol=1e-12, atol=1e-12)
    assert r63.shape == (21, 63)


def test_rebin_conserves_flux_of_covered_area():
    x = np.random.default_rng(1).uniform(size=(5, 3, 64, 64))
    low = D.rebin_flux(x, 3, 21)
    assert low.shape == (5, 3, 21, 21)
    w = D.rebin_matrix(64, 3, 21).sum(axis=0)
    expected = np.einsum("i,j,nbij->nb", w, w, x)
    np.testing.assert_allclose(low.sum(axis=(-2, -1)), expected, rtol=1e-12)


def test_coordinate_mapping_and_centroids():
    geo = D.RebinGeometry(64, 21, 3)
    assert geo.to_low(31.5, 31.5) == pytest.approx((10.0, 10.0))
    assert geo.to_high(0.0, 0.0) == pytest.approx((1.5, 1.5))
    xs = np.random.default_rng(2).uniform(5, 58, (2, 50))
    back = D.lowres_to_hires(*D.hires_to_lowres(xs[0], xs[1]))
    np.testing.assert_allclose(back, xs, atol=1e-12)
    # a well-sampled source drawn at a known hi-res position has its lo-res centroid at the mapped position
    for off in [(0.0, 0.0), (4.3, -7.6), (-10.2, 2.45)]:
        img = draw_hi(galsim.Gaussian(fwhm=0.5), offset=off)
        low = D.rebin_flux(img, 3, 21)
        yy, xx = np.mgrid[:21, :21]
        cx, cy = (low * xx).sum() / low.sum(), (low * yy).sum() / low.sum()
        ex, ey = geo.to_low(31.5 + off[0], 31.5 + off[1])
        assert cx == pytest.approx(float(ex), abs=0.02) and cy == pytest.approx(float(ey), abs=0.02)


# ------------------------------------------------------------------------------------------ PSF matching
@pytest.mark.parametrize("profile", ["moffat", "gaussian"])
def test_degraded_star_has_target_fwhm(hsc, profile):
    psf = hires_psf()
    target = (galsim.Moffat(beta=D.TARGET_MOFFAT_BETA, fwhm=TARGET_FWHM) if profile == "moffat"
              else galsim.Gaussian(fwhm=TARGET_FWHM))
    offsets = [(0.0, 0.0), (0.5, 0.5), (0.31, -0.27), (-3.4, 2.2)]
    cube = np.stack([draw_hi(galsim.DeltaFunction(flux=100.0), off) for off in offsets])[:, None]
    low = D.degrade(cube, psf, hsc, HIRES, None, zeropoints=ZP_F775W, noise=False, profile=profile, progress=False)
    assert low.shape == (len(offsets), 1, N_LO, N_LO) and low.dtype == np.float32
    for k, off in enumerate(offsets):
        truth = draw_lo_truth(galsim.DeltaFunction(flux=100.0), off, target)
        got, want = measure_fwhm(low[k, 0]) * LOWRES, measure_fwhm(truth) * LOWRES
        print(f"{profile} offset {off}: degraded FWHM {got:.4f}\", GalSim truth {want:.4f}\", ratio {got / want:.4f}")
        assert got / want == pytest.approx(1.0, abs=FWHM_TOLERANCE)
        assert got / TARGET_FWHM == pytest.approx(1.0, abs=FWHM_TOLERANCE)
        assert low[k, 0].sum() == pytest.approx(cube[k, 0].sum(), rel=FLUX_TOLERANCE)


def test_per_band_psfs_all_reach_the_target(hsc):
    """Two bands with different hi-res PSFs (ACS-like 0.09", WFC3/IR-like 0.18") end with the same 0.6" PSF."""
    fwhms = (0.09, 0.18)
    cube = np.stack([draw_hi(galsim.DeltaFunction(flux=10.0), (0.2, 0.1), f) for f in fwhms])[None]
    low = D.degrade(cube, [hires_psf(f) for f in fwhms], hsc, HIRES, None, zeropoints=[25.678, 25.946],
                    noise=False, progress=False)
    measured = [measure_fwhm(low[0, b]) * LOWRES for b in range(2)]
    truth = measure_fwhm(draw_lo_truth(galsim.DeltaFunction(flux=10.0), (0.2, 0.1))) * LOWRES
    for m in measured:
        assert m / truth == pytest.approx(1.0, abs=FWHM_TOLERANCE)


def test_galaxy_flux_and_image_match_galsim_truth(hsc):
    rng = np.random.default_rng(3)
    gals, offs = [], []
    for k in range(6):
        prof = galsim.Sersic(n=[1.0, 4.0, 1.5][k % 3], half_light_radius=rng.uniform(0.12, 0.35), flux=50.0)
        prof = prof.shear(q=rng.uniform(0.4, 1.0), beta=rng.uniform(0, 180) * galsim.degrees)
        gals.append(prof)
        offs.append(tuple(rng.uniform(-5, 5, 2)))
    cube = np.stack([draw_hi(g, o) for g, o in zip(gals, offs)])[:, None]
    low, info = D.degrade(cube, hires_psf(), hsc, HIRES, None, zeropoints=ZP_F775W, noise=False, progress=False,
                          return_details=True)
    assert info["factor"] == 3.0 and info["kernels"].shape == (1, D.KERNEL_SIZE, D.KERNEL_SIZE)
    n_inside = 0
    for k, (g, o) in enumerate(zip(gals, offs)):
        truth = draw_lo_truth(g, o)
        ratio_in = low[k, 0].sum() / cube[k, 0].sum()
        ratio_truth = low[k, 0].sum() / truth.sum()
        resid = np.abs(low[k, 0] - truth).max() / truth.max()
        print(f"galaxy {k}: in stamp {truth.sum() / g.flux:.4f}; flux lo/hi {ratio_in:.4f}, lo/GalSim truth "
              f"{ratio_truth:.4f}, max |resid| {resid:.4f} "
              "of peak")
        # the stamp always holds what GalSim says it should; sources "well inside" (>= 98 % of their light in
        # the stamp at 0.6") also keep their hi-res flux (extended de Vaucouleurs wings spill over the edge)
        assert ratio_truth == pytest.approx(1.0, abs=FLUX_TOLERANCE)
        if truth.sum() >= 0.98 * g.flux:
            n_inside += 1
            assert ratio_in == pytest.approx(1.0, abs=FLUX_TOLERANCE)
        assert resid < 0.03
    assert n_inside >= 3


# ------------------------------------------------------------------------------------------------ noise
def test_noise_sigma_from_depth(hsc):
    band = hsc.band("i")
    # in the target's own units it is the survey's pixel noise
    assert D.noise_sigma(hsc, "i", band.zeropoint) == pytest.approx(hsc.pixel_noise("i"), rel=1e-12)
    # in F775W units: the same flux, converted with the zeropoints
    expected = hsc.pixel_noise("i") * 10 ** (-0.4 * (band.zeropoint - ZP_F775W))
    assert D.noise_sigma(hsc, "i", ZP_F775W) == pytest.approx(expected, rel=1e-12)
    # 5 sigma in the 2" aperture of 0.18" pixels is the 26.2 depth
    npix = math.pi * (1.0 / LOWRES) ** 2
    assert -2.5 * math.log10(5 * D.noise_sigma(hsc, "i", ZP_F775W) * math.sqrt(npix)) + ZP_F775W == \
        pytest.approx(band.depth, abs=1e-9)


def test_added_noise_has_the_survey_sigma(hsc):
    cube = np.zeros((300, 2, N_HI, N_HI), np.float32)
    zps = [ZP_F775W, 26.505]
    low, info = D.degrade(cube, hires_psf(), hsc, HIRES, np.random.default_rng(4), zeropoints=zps,
                          progress=False, return_details=True)
    for b, zp in enumerate(zps):
        sigma = D.noise_sigma(hsc, "i", zp)
        assert info["sigma"][b] == pytest.approx(sigma)
        std = float(low[:, b].std())
        print(f"band {b}: measured std {std:.5g}, expected {sigma:.5g} ({std / sigma - 1:+.4f})")
        assert std / sigma == pytest.approx(1.0, abs=NOISE_TOLERANCE)
        assert abs(float(low[:, b].mean())) < 5 * sigma / math.sqrt(low[:, b].size)


def test_total_noise_with_hires_noise_accounted(hsc):
    """With hires_sigma, only the quadrature difference is added: pure hi-res noise ends at the target sigma."""
    hires_sigma = 0.02  # large on purpose: its residual is a sizeable part of the 0.0126 target
    cube = np.random.default_rng(8).normal(0, hires_sigma, (300, 1, N_HI, N_HI)).astype(np.float32)
    quiet, info = D.degrade(cube, hires_psf(), hsc, HIRES, None, zeropoints=ZP_F775W, noise=False, progress=False,
                            return_details=True)
    resid = D.residual_sigma(info["kernels"][0], hires_sigma)
    # the propagated sigma is right (the stamp edge, where the kernel is cut, is left out)
    assert float(quiet[:, 0, 3:-3, 3:-3].std()) == pytest.approx(resid, rel=NOISE_TOLERANCE)
    low, info = D.degrade(cube, hires_psf(), hsc, HIRES, np.random.default_rng(9), zeropoints=ZP_F775W,
                          hires_sigma=hires_sigma, progress=False, return_details=True)
    target = D.noise_sigma(hsc, "i", ZP_F775W)
    assert info["sigma_added"][0] == pytest.approx(math.sqrt(target**2 - resid**2))
    total = float(low[:, 0, 3:-3, 3:-3].std())
    print(f"residual {resid:.5g}, target {target:.5g}, total measured {total:.5g}")
    assert total / target == pytest.approx(1.0, abs=NOISE_TOLERANCE)


def test_add_noise_is_reproducible_and_per_band():
    x = np.zeros((100, 2, 21, 21), np.float32)
    a = D.add_noise(x, [1.0, 3.0], np.random.default_rng(5))
    b = D.add_noise(x, [1.0, 3.0], np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a[:, 1].std() / a[:, 0].std() == pytest.approx(3.0, rel=0.03)
    assert not x.any()  # input untouched


def test_degrade_same_seed_same_output(hsc):
    cube = np.random.default_rng(6).normal(size=(10, 1, N_HI, N_HI)).astype(np.float32)
    a = D.degrade(cube, hires_psf(), hsc, HIRES, np.random.default_rng(7), zeropoints=ZP_F775W, progress=False,
                  batch_size=3)
    b = D.degrade(cube, hires_psf(), hsc, HIRES, np.random.default_rng(7), zeropoints=ZP_F775W, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_one_line_errors(hsc):
    cube = np.zeros((2, 1, N_HI, N_HI), np.float32)
    with pytest.raises(PipelineError, match="not normalised"):
        D.matching_kernel(hires_psf() * 2, TARGET_FWHM, HIRES)
    with pytest.raises(PipelineError, match="odd side"):
        D.matching_kernel(np.ones((24, 24)) / 576, TARGET_FWHM, HIRES)
    with pytest.raises(PipelineError, match="not broader"):
        D.matching_kernel(hires_psf(), 0.05, HIRES)
    with pytest.raises(PipelineError, match="empty"):
        D.degrade(np.zeros((0, 1, N_HI, N_HI)), hires_psf(), hsc, HIRES, None, zeropoints=ZP_F775W, noise=False)
    bad = cube.copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(PipelineError, match="NaN"):
        D.degrade(bad, hires_psf(), hsc, HIRES, None, zeropoints=ZP_F775W, noise=False)
    with pytest.raises(PipelineError, match="zeropoints"):
        D.degrade(cube, hires_psf(), hsc, HIRES, None, zeropoints=[1.0, 2.0, 3.0], noise=False)
    with pytest.raises(PipelineError, match="rng"):
        D.degrade(cube, hires_psf(), hsc, HIRES, None, zeropoints=ZP_F775W, noise=True, progress=False)
    with pytest.raises(PipelineError, match="do not fit"):
        D.RebinGeometry(64, 22, 3)
    for err in (PipelineError,):
        with pytest.raises(err):
            D.add_noise(np.zeros((3, 2, 5, 5)), [1.0, 2.0, 3.0], np.random.default_rng(0))
