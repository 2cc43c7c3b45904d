"""PSF matching to F444W (workflow_scripts.imaging.psf_matching) against known truth drawn with GalSim.

NIRCam-like fields (0.03"/px, 256 x 256) hold nine isolated point sources of known flux at random sub-pixel
positions, drawn with the PSF of each band (FWHM F115W 0.040" ... F444W 0.145", the ceers config): a Moffat
(beta = 3, what the embedded simulator uses) or an Airy disc (diffraction-limited, undersampled in F115W). Every
band is matched to F444W with kernels built from the PSF stamps (true 25 px stamps, noisy stamps, and EPSFs the
pipeline estimates from noisy star fields), and each matched star is compared with the same star drawn directly
in F444W, measured the same way (circular Moffat fit, workflow_scripts.data.psf.measure_fwhm).

Run with ``-s`` to see the per-band FWHM, flux and noise ratios.
"""

from __future__ import annotations

import functools

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from photutils.aperture import CircularAperture
from scipy.ndimage import binary_dilation

from workflow_scripts.data import psf as P
from workflow_scripts.errors import PipelineError
from workflow_scripts.imaging import psf_matching as M
from workflow_scripts.io import Mosaic, provenance, read_mosaic, write_mosaic

SCALE = 0.03  # arcsec / px
FWHM = {"F115W": 0.040, "F150W": 0.050, "F200W": 0.066, "F277W": 0.092, "F356W": 0.116, "F444W": 0.145}
TARGET = "F444W"
SOURCES = [b for b in FWHM if b != TARGET]
STAMP = 25             # the pipeline's EPSF stamp (config psf.stamp_size)
NPIX = 256
BIG_APERTURE = 30.0    # px = 0.9" = 6 F444W FWHM: "total" flux
CORE_APERTURE = 5.0    # px = 0.15" ~ 1 F444W FWHM: a colour aperture
FWHM_TOLERANCE = 0.05  # brief: matched FWHM within 5 % of F444W's
FLUX_TOLERANCE = 0.01  # brief: flux in a large aperture kept within 1 %
NOISE_TOLERANCE = 0.03  # brief: propagated rms within a few % of the Monte Carlo
PROFILES = ("moffat", "airy")


def optical(band: str, profile: str, flux: float = 1.0) -> galsim.GSObject:
    fwhm = FWHM[band]
    if profile == "moffat":
        return galsim.Moffat(beta=3.0, fwhm=fwhm, flux=flux)
    return galsim.Airy(lam_over_diam=fwhm / galsim.Airy(lam_over_diam=1.0).fwhm, flux=flux)


def true_stamp(band: str, profile: str, size: int = STAMP) -> np.ndarray:
    """The true effective PSF (pixel-integrated), centred on the central pixel, sum 1."""
    img = optical(band, profile).drawImage(nx=size, ny=size, scale=SCALE).array.astype(np.float64)
    return img / img.sum()


def _stars() -> np.ndarray:
    rng = np.random.default_rng(42)
    rows = []
    for i in range(3):
        for j in range(3):
            x, y = 48 + 80 * i + rng.uniform(-0.5, 0.5), 48 + 80 * j + rng.uniform(-0.5, 0.5)
            rows.append((x, y, rng.uniform(500.0, 5000.0)))
    return np.array(rows)


STARS = _stars()  # x, y (0-based pixel centres), flux


def render(band: str, profile: str, stars: np.ndarray = STARS, npix: int = NPIX,
           objects: list[galsim.GSObject] | None = None) -> np.ndarray:
    image = galsim.ImageD(npix, npix, scale=SCALE)
    for k, (x, y, flux) in enumerate(stars):
        obj = objects[k] if objects is not None else optical(band, profile, flux)
        stamp = obj.drawImage(nx=121, ny=121, scale=SCALE, center=galsim.PositionD(x + 1, y + 1))
        bounds = stamp.bounds & image.bounds
        image[bounds] += stamp[bounds]
    return image.array.copy()


@functools.cache
def field(band: str, profile: str) -> np.ndarray:
    return render(band, profile)


def star_fwhms(image: np.ndarray, stars: np.ndarray = STARS) -> np.ndarray:
    h = STAMP // 2
    out = []
    for x, y, _ in stars:
        xi, yi = round(x), round(y)
        out.append(P.measure_fwhm(image[yi - h:yi + h + 1, xi - h:xi + h + 1]))
    return np.array(out)


def aperture_flux(image: np.ndarray, radius: float, stars: np.ndarray = STARS) -> np.ndarray:
    sums, _ = CircularAperture(stars[:, :2], r=radius).do_photometry(image, method="exact")
    return np.asarray(sums)


@functools.cache
def truth(profile: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F444W stars drawn directly: FWHM (px), core and big-aperture fluxes."""
    img = field(TARGET, profile)
    return star_fwhms(img), aperture_flux(img, CORE_APERTURE), aperture_flux(img, BIG_APERTURE)


def check_band(band: str, profile: str, kernel: np.ndarray, label: str) -> dict[str, float]:
    """Match the band's field with ``kernel``, compare every star with its F444W self; return the ratios."""
    matched, _ = M.match_image(field(band, profile), None, kernel)
    fwhm_t, core_t, _ = truth(profile)
    fwhm_ratio = star_fwhms(matched) / fwhm_t
    flux_ratio = aperture_flux(matched, BIG_APERTURE) / aperture_flux(field(band, profile), BIG_APERTURE)
    core_ratio = aperture_flux(matched, CORE_APERTURE) / core_t
    res = {"fwhm": float(np.median(fwhm_ratio)), "fwhm_worst": float(fwhm_ratio[np.argmax(abs(fwhm_ratio - 1))]),
           "flux": float(np.median(flux_ratio)), "flux_worst": float(flux_ratio[np.argmax(abs(flux_ratio - 1))]),
           "core": float(np.median(core_ratio)), "gain": M.noise_gain(kernel)}
    print(f"{label:>22} {band}->{TARGET}: FWHM ratio {res['fwhm']:.4f} (worst star {res['fwhm_worst']:.4f}); "
          f"flux ratio r=0.9\" {res['flux']:.5f} (worst {res['flux_worst']:.5f}); core r=0.15\" vs F444W truth "
          f"{res['core']:.4f}; noise gain {res['gain']:.3f}")
    assert np.all(np.abs(fwhm_ratio - 1) < FWHM_TOLERANCE), fwhm_ratio
    assert np.all(np.abs(flux_ratio - 1) < FLUX_TOLERANCE), flux_ratio
    return res


def make_wcs(npix: int) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [214.9, 52.9]
    wcs.wcs.crpix = [npix / 2 + 0.5, npix / 2 + 0.5]
    wcs.wcs.cdelt = [-SCALE / 3600.0, SCALE / 3600.0]
    return wcs


def make_mosaic(data: np.ndarray, band: str, rms: np.ndarray | None = None) -> Mosaic:
    wcs = make_wcs(data.shape[0])
    header = wcs.to_header()
    header.update({"TELESCOP": "JWST", "INSTRUME": "NIRCAM", "FILTER": band, "BUNIT": "MJy/sr",
                   "PHOTZP": 28.08652, "SEED": 7})
    return Mosaic(data=np.asarray(data, np.float32), wcs=wcs, header=header,
                  rms=None if rms is None else np.asarray(rms, np.float32))


# --------------------------------------------------------------------------------- matching to F444W
@pytest.mark.parametrize("profile", PROFILES)
def test_true_psf_kernels_match_every_band_to_f444w(profile):
    target = true_stamp(TARGET, profile)
    print()
    for band in SOURCES:
        kernel = M.matching_kernel_to(true_stamp(band, profile), target, pixel_scale=SCALE)
        assert kernel.shape == (STAMP, STAMP) and kernel.sum() == pytest.approx(1.0, abs=1e-12)
        check_band(band, profile, kernel, f"{profile} true stamps")


@pytest.mark.parametrize("profile", PROFILES)
def test_noisy_stamp_kernels_match_every_band_to_f444w(profile):
    """Source and target stamps with white noise of 2e-4 per pixel (sum-1 stamps): ~7x the noise of an EPSF of
    24 bright stars (measured 3e-5, below), 0.7 % of the F444W peak."""
    rng = np.random.default_rng(11)
    sigma = 2e-4
    target = true_stamp(TARGET, profile) + rng.normal(0.0, sigma, (STAMP, STAMP))
    print()
    for band in SOURCES:
        noisy = true_stamp(band, profile) + rng.normal(0.0, sigma, (STAMP, STAMP))
        kernel = M.matching_kernel_to(noisy, target, pixel_scale=SCALE)
        res = check_band(band, profile, kernel, f"{profile} noisy stamps")
        clean = M.noise_gain(M.matching_kernel_to(true_stamp(band, profile), true_stamp(TARGET, profile)))
        # the window keeps the stamp noise from adding much noise to the matched image
        assert res["gain"] < 1.3 * clean, (res["gain"], clean)


def test_whole_psf_stamps_match_colour_apertures_too():
    """With stamps that hold the whole PSF (the simulator's truth PSFs: Moffat truncated at 6 FWHM, 59 px for
    F444W), the matched stars also have the F444W flux in a 1-FWHM aperture; with 25 px stamps they are ~1 %
    brighter there, the F444W wing beyond the stamp being put back into the core (see the first test's output)."""
    from workflow_scripts.config import load_config
    from workflow_scripts.data.simulate import psf as S
    from workflow_scripts.surveys import get_survey

    ceers = get_survey(load_config(), "ceers")
    assert ceers.pixel_scale == SCALE and {b: ceers.band(b).psf_fwhm for b in FWHM} == FWHM
    target = S.draw_psf_native(ceers, TARGET)
    objs = {b: [S.optical_psf(ceers, b).withFlux(f) for f in STARS[:, 2]] for b in FWHM}
    # 32 px more margin: the 59 px kernel's NaN frame along the image edge is wider
    stars, npix = STARS + [32.0, 32.0, 0.0], NPIX + 64
    truth_img = render(TARGET, "moffat", stars, npix, objects=objs[TARGET])
    core_t, fwhm_t = aperture_flux(truth_img, CORE_APERTURE, stars), star_fwhms(truth_img, stars)
    print()
    for band in ("F115W", "F200W", "F356W"):
        kernel = M.matching_kernel_to(S.draw_psf_native(ceers, band), target)
        assert kernel.shape == target.shape == (59, 59)
        img = render(band, "moffat", stars, npix, objects=objs[band])
        matched, _ = M.match_image(img, None, kernel)
        core = aperture_flux(matched, CORE_APERTURE, stars) / core_t
        fw = star_fwhms(matched, stars) / fwhm_t
        total = aperture_flux(matched, BIG_APERTURE, stars) / aperture_flux(img, BIG_APERTURE, stars)
        print(f"simulator PSFs {band}->{TARGET}: FWHM ratio {np.median(fw):.4f}, core r=0.15\" vs F444W truth "
              f"{np.median(core):.4f}, flux ratio r=0.9\" {np.median(total):.5f}")
        assert np.all(np.abs(core - 1) < FLUX_TOLERANCE), core
        assert np.all(np.abs(fw - 1) < FWHM_TOLERANCE), fw
        assert np.all(np.abs(total - 1) < FLUX_TOLERANCE), total


def _star_field(band: str, rng: np.random.Generator, npix: int = 512, n: int = 24) -> Mosaic:
    """A noisy field of bright isolated Moffat stars (sigma 1 per pixel) for the pipeline's EPSF estimate."""
    pos: list[np.ndarray] = []
    while len(pos) < n:
        p = rng.uniform(30, npix - 30, 2)
        if all(np.hypot(*(p - q)) > 60 for q in pos):
            pos.append(p)
    stars = np.column_stack([np.array(pos), np.exp(rng.uniform(np.log(5e3), np.log(1.5e5), n))])
    data = render(band, "moffat", stars, npix=npix) + rng.normal(0.0, 1.0, (npix, npix))
    return make_mosaic(data, band, np.ones((npix, npix)))


def test_pipeline_epsfs_from_noisy_stars_match_to_f444w(tmp_path):
    """Kernels from the pipeline's own EPSFs (estimate_psf on noisy star fields, through the PSF FITS files)."""
    rng = np.random.default_rng(5)
    results = {}
    for band in ("F150W", "F356W", TARGET):
        res = P.estimate_psf(_star_field(band, rng), psf_fwhm_guess=FWHM[band], stamp_size=STAMP, oversampling=4,
                             min_stars=8, snr_min=50.0, max_iters=10)
        path = tmp_path / f"{band}.psf.fits"
        P.write_psf(path, res, {"FILTER": band}, provenance("test", 5, "test"))
        results[band] = P.read_psf(path)
        true = true_stamp(band, "moffat")
        yy, xx = np.mgrid[:STAMP, :STAMP]
        wing = np.hypot(xx - STAMP // 2, yy - STAMP // 2) > 8
        print(f"\nEPSF {band}: {res.n_stars} stars, FWHM {res.fwhm:.4f}\", stamp noise (r > 8 px) "
              f"{(results[band].psf - true)[wing].std():.2g}", end="")
    print()
    for band in ("F150W", "F356W"):
        kernel = M.kernel_between(results[band], results[TARGET])
        res = check_band(band, "moffat", kernel, "pipeline EPSFs")
        clean = M.noise_gain(M.matching_kernel_to(true_stamp(band, "moffat"), true_stamp(TARGET, "moffat")))
        assert res["gain"] < 1.3 * clean
    # the target band matched to its own EPSF is left alone
    assert M.is_delta_kernel(M.kernel_between(results[TARGET], results[TARGET]))


def test_kernel_turns_source_stamp_into_target_stamp():
    """source * k = target: to 0.1 % of the peak without a window; the default window costs 2.5 % of the peak
    (and +1 % on the FWHM), the price of not letting the noise of empirical PSFs through."""
    from scipy.signal import fftconvolve

    src, tgt = true_stamp("F200W", "moffat"), true_stamp(TARGET, "moffat")
    for window, tolerance in ((None, 0.002), ("default", 0.03)):
        kernel = M.matching_kernel_to(src, tgt, window=window)
        got = fftconvolve(np.pad(src, STAMP), kernel, mode="same")[STAMP:-STAMP, STAMP:-STAMP]
        print(f"\nwindow {window}: max |source * k - target| = {np.abs(got - tgt).max() / tgt.max():.4f} of the peak")
        assert np.abs(got - tgt).max() < tolerance * tgt.max()
    kernel = M.matching_kernel_to(src, tgt)
    # centred: the kernel's centroid is on its central pixel
    yy, xx = np.mgrid[:STAMP, :STAMP]
    assert (kernel * xx).sum() == pytest.approx(STAMP // 2, abs=0.01)
    assert (kernel * yy).sum() == pytest.approx(STAMP // 2, abs=0.01)


def test_stamps_of_different_sizes_and_offsets_are_padded_and_centred(caplog):
    small, big = true_stamp("F150W", "moffat", 25), true_stamp(TARGET, "moffat", 41)
    kernel = M.matching_kernel_to(small, big)
    assert kernel.shape == (41, 41) and kernel.sum() == pytest.approx(1.0)
    # a stamp whose peak is off the central pixel is moved back by whole pixels (with a warning)
    shifted = np.roll(small * 7.0, (2, -1), axis=(0, 1))
    with caplog.at_level("WARNING"):
        again = M.matching_kernel_to(shifted, big)
    assert "not on the central pixel" in caplog.text
    np.testing.assert_allclose(again, kernel, atol=1e-3 * kernel.max())  # np.roll wrapped the stamp's edge
    # an explicit size pads both
    assert M.matching_kernel_to(small, big, size=51).shape == (51, 51)


# ------------------------------------------------------------------------------------------------ noise
def test_rms_propagation_matches_monte_carlo():
    """Pure noise of a known, spatially varying rms (a step x a random per-pixel factor in [0.2, 1.8], so that
    sqrt(conv(rms^2, k^2)) differs by 10 % from cruder rules such as gain * conv(rms, k)), convolved 400 times: the
    per-column std of the matched noise equals the propagated rms."""
    rng = np.random.default_rng(3)
    ny, nx, n_real = 128, 96, 400
    rms = np.where(np.arange(nx)[None, :] < nx // 2, 1.0, 3.0) * rng.uniform(0.2, 1.8, (ny, nx))
    print()
    for band in ("F150W", "F356W"):
        kernel = M.matching_kernel_to(true_stamp(band, "moffat"), true_stamp(TARGET, "moffat"))
        _, prop = M.match_image(np.zeros((ny, nx)), rms, kernel)
        sq = np.zeros((ny, nx))
        for _ in range(n_real):
            out, _ = M.match_image(rng.normal(0.0, 1.0, (ny, nx)) * rms, None, kernel)
            sq += out.astype(np.float64) ** 2
        finite = np.isfinite(prop)                   # all but the NaN frame along the image edge
        assert np.array_equal(finite, np.isfinite(sq))
        cols = finite.sum(axis=0) > ny / 2
        n = finite[:, cols].sum(axis=0)
        mc = np.sqrt(np.where(finite, sq, 0.0)[:, cols].sum(axis=0) / (n * n_real))
        expected = np.sqrt(np.where(finite, prop.astype(np.float64) ** 2, 0.0)[:, cols].sum(axis=0) / n)
        ratio = mc / expected
        white = M.noise_gain(kernel)
        print(f"rms {band}->{TARGET}: Monte Carlo / propagated per column: median {np.median(ratio):.4f}, "
              f"range {ratio.min():.4f}-{ratio.max():.4f} over {cols.sum()} columns; white-noise gain {white:.3f}")
        assert np.all(np.abs(ratio - 1) < NOISE_TOLERANCE), ratio
        assert abs(np.median(ratio) - 1) < NOISE_TOLERANCE / 3
        # uniform white noise: the propagated rms is sigma * sqrt(sum k^2)
        _, flat = M.match_image(np.zeros((ny, nx)), np.full((ny, nx), 2.0), kernel)
        assert np.nanmedian(flat) == pytest.approx(2.0 * white, rel=1e-5)


# ------------------------------------------------------------------------------------------- bad pixels
def test_nan_pixels_do_not_spread_beyond_the_kernel_footprint():
    kernel = M.matching_kernel_to(true_stamp("F150W", "moffat"), true_stamp(TARGET, "moffat"))
    half = kernel.shape[0] // 2
    rng = np.random.default_rng(8)
    clean = field("F150W", "moffat") + rng.normal(0.0, 0.5, (NPIX, NPIX))
    rms = np.full((NPIX, NPIX), 0.5)
    img, noise = clean.copy(), rms.copy()
    img[100:120, 60:90] = np.nan                      # a hole without coverage
    img[[30, 200, 210], [200, 40, 180]] = np.nan       # isolated NaN pixels
    noise[150, 150] = 0.0                              # zero-weight pixel
    noise[60, 130] = np.inf
    bad = ~np.isfinite(img) | ~(noise > 0) | ~np.isfinite(noise)
    out, out_rms = M.match_image(img, noise, kernel)
    ref, _ = M.match_image(clean, rms, kernel)
    nan = ~np.isfinite(out)
    footprint = np.ones((2 * half + 1, 2 * half + 1), bool)
    reach = binary_dilation(np.pad(bad, half, constant_values=True), footprint)[half:-half, half:-half]
    frac = nan.mean()
    print(f"\n{bad.sum()} bad input pixels -> {nan.sum()} NaN output pixels ({frac:.1%} of the image; "
          f"the bad pixels grown by the whole kernel footprint, edge included: {reach.sum()})")
    assert out.dtype == np.float32 and out_rms.dtype == np.float32
    assert nan[bad].all()                              # bad pixels stay bad
    assert not nan[~reach].any()                       # never beyond the footprint
    assert np.array_equal(nan, ~np.isfinite(out_rms))  # image and rms agree
    assert frac < 0.25
    # away from the bad pixels the result is exactly what the clean image gives
    far = ~reach
    np.testing.assert_allclose(out[far], ref[far], rtol=0, atol=1e-5 * np.abs(ref[far]).max())
    # pixels that are valid but near a hole miss at most 0.1 % of the kernel: their values stay close
    near = reach & ~nan
    assert near.any()
    assert np.abs(out[near] - ref[near]).max() < 0.05 * float(np.nanmax(ref))


# ----------------------------------------------------------------------------------- identity and errors
def test_band_matched_to_itself_is_the_identity():
    t = true_stamp(TARGET, "moffat")
    kernel = M.matching_kernel_to(t, t * 3.0)
    assert M.is_delta_kernel(kernel) and kernel.shape == (STAMP, STAMP)
    # a target PSF re-estimated with a little noise still is the target (FWHM within 1 %)
    noisy = t + np.random.default_rng(1).normal(0.0, 2e-5, t.shape)
    assert M.is_delta_kernel(M.matching_kernel_to(noisy, t))
    img = field(TARGET, "moffat").copy()
    img[5, 5] = np.nan
    rms = np.full(img.shape, 0.3)
    mosaic = make_mosaic(img, TARGET, rms)
    same = M.match_mosaic(mosaic, kernel, TARGET, FWHM[TARGET])
    assert np.array_equal(same.data, mosaic.data, equal_nan=True) and np.array_equal(same.rms, mosaic.rms)
    assert same.header["PSFMATCH"] == TARGET and same.header["PSFKGAIN"] == 1.0


def test_match_mosaic_keeps_wcs_and_header_and_writes(tmp_path):
    band = "F200W"
    kernel = M.matching_kernel_to(true_stamp(band, "moffat"), true_stamp(TARGET, "moffat"))
    rng = np.random.default_rng(2)
    mosaic = make_mosaic(field(band, "moffat") + rng.normal(0, 0.2, (NPIX, NPIX)), band, np.full((NPIX,) * 2, 0.2))
    before = mosaic.data.copy()
    out = M.match_mosaic(mosaic, kernel, TARGET, FWHM[TARGET])
    np.testing.assert_array_equal(mosaic.data, before)               # input untouched
    assert out.data.dtype == np.float32 and out.data.shape == mosaic.data.shape
    for key in ("FILTER", "BUNIT", "PHOTZP", "TELESCOP", "INSTRUME", "SEED"):
        assert out.header[key] == mosaic.header[key]
    assert out.band == band and out.zeropoint == pytest.approx(28.08652)
    assert out.header["PSFMATCH"] == TARGET and out.header["PSFFWHM"] == pytest.approx(0.145)
    assert out.header["PSFKSIZE"] == STAMP
    assert out.header["PSFKGAIN"] == pytest.approx(M.noise_gain(kernel), rel=1e-5)
    assert out.pixel_scale == pytest.approx(SCALE)
    assert np.allclose(out.wcs.pixel_to_world_values([0, 100], [0, 200]),
                       mosaic.wcs.pixel_to_world_values([0, 100], [0, 200]))
    assert out.wcs is not mosaic.wcs
    assert np.nanmedian(out.rms) == pytest.approx(0.2 * M.noise_gain(kernel), rel=1e-4)
    # it goes through the data boundary with its matching keys
    path = tmp_path / f"{band}.fits"
    keys = ("PSFMATCH", "PSFFWHM", "PSFKSIZE", "PSFKGAIN")
    write_mosaic(path, out.data, out.wcs, telescope="JWST", instrument="NIRCAM", band=band, bunit="MJy/sr",
                 zeropoint=out.zeropoint, prov=provenance("test", 7, "test"), rms=out.rms,
                 extra={k: out.header[k] for k in keys})
    back = read_mosaic(path)
    assert back.header["PSFMATCH"] == TARGET
    np.testing.assert_array_equal(back.data, out.data)
    assert fits.getheader(path)["PSFFWHM"] == pytest.approx(0.145)
    # matching an already matched mosaic to another band is refused
    with pytest.raises(M.PSFMatchError, match="already PSF-matched to F444W"):
        M.match_mosaic(out, kernel, "F356W", FWHM["F356W"])


def test_broader_source_is_a_clear_error():
    assert issubclass(M.PSFMatchError, PipelineError)
    narrow, broad = true_stamp("F150W", "moffat"), true_stamp(TARGET, "moffat")
    f_broad, f_narrow = P.measure_fwhm(broad) * SCALE, P.measure_fwhm(narrow) * SCALE
    with pytest.raises(M.PSFMatchError) as err:
        M.matching_kernel_to(broad, narrow, pixel_scale=SCALE, source_name="F444W PSF", target_name="F150W PSF")
    msg = str(err.value)
    print(f"\n{msg}")
    assert "broader" in msg and "cannot be sharpened" in msg and "\n" not in msg
    assert f"{f_broad:.4f}\"" in msg and f"{f_narrow:.4f}\"" in msg and "F444W" in msg and "F150W" in msg


def test_bad_inputs_are_clear_errors():
    t = true_stamp(TARGET, "moffat")
    with pytest.raises(M.PSFMatchError, match="odd side"):
        M.matching_kernel_to(np.ones((24, 24)), t)
    with pytest.raises(M.PSFMatchError, match="NaN"):
        M.matching_kernel_to(np.where(t > t.max() / 2, np.nan, t), t)
    with pytest.raises(M.PSFMatchError, match="no positive flux"):
        M.matching_kernel_to(np.zeros((25, 25)), t)
    with pytest.raises(M.PSFMatchError, match="sums to"):
        M.match_image(np.zeros((32, 32)), None, M.delta_kernel(5) * 2)
    with pytest.raises(M.PSFMatchError, match="rms map shape"):
        M.match_image(np.zeros((32, 32)), np.ones((31, 32)), M.delta_kernel(5))
    a = P.EPSFResult(band="F150W", epsf=t, oversampling=1, psf=t, pixel_scale=0.03, n_stars=10, n_candidates=10,
                     fwhm=0.05, fwhm_oversampled=0.05)
    b = P.EPSFResult(band="F444W", epsf=t, oversampling=1, psf=t, pixel_scale=0.06, n_stars=10, n_candidates=10,
                     fwhm=0.145, fwhm_oversampled=0.145)
    with pytest.raises(M.PSFMatchError, match="different pixel scales"):
        M.kernel_between(a, b)


def test_default_window_scales_with_the_target():
    for fwhm_px, size in ((4.9, 25), (9.8, 51), (3.0, 41)):
        arr = M.default_window(fwhm_px, size)((size, size))
        c = size // 2
        freq = np.hypot(*np.meshgrid(np.arange(size) - c, np.arange(size) - c)) / size  # cycles / px
        assert np.all(arr[freq <= M.WINDOW_FLAT / fwhm_px - 0.5 / size] == 1.0)
        assert np.all(arr[freq >= M.WINDOW_ZERO / fwhm_px + 0.5 / size] == 0.0)
        assert 0 < arr.mean() < 1
    assert M.default_window(1.5, 25) is None  # a sharp target: the flat part already reaches Nyquist


# --------------------------------------------------------------------------------- Moffat wings
def _encircled(psf: np.ndarray, radii: tuple[float, ...]) -> np.ndarray:
    c = psf.shape[0] // 2
    yy, xx = np.mgrid[:psf.shape[0], :psf.shape[0]] - c
    r = np.hypot(xx, yy)
    return np.array([psf[r <= R].sum() for R in radii])


@pytest.mark.parametrize("band", ["F277W", "F356W", "F444W"])
def test_moffat_wings_restore_the_light_a_25px_stamp_cuts(band):
    """A 25 px stamp of a Moffat(3) PSF holds its light too close in (renormalised inside the stamp); extended to
    59 px with fitted wings, its encircled energy equals the whole PSF's within 0.1 % at 5, 10 and 20 px."""
    whole = true_stamp(band, "moffat", 59)
    cut = true_stamp(band, "moffat", STAMP)
    extended = M.with_moffat_wings(cut, 59, f"{band} PSF")
    assert extended.shape == (59, 59) and extended.sum() == pytest.approx(1.0)
    radii = (5.0, 10.0, 20.0)
    err_cut = np.abs(_encircled(np.pad(cut, 17), radii) - _encircled(whole, radii))
    err_ext = np.abs(_encircled(extended, radii) - _encircled(whole, radii))
    print(f"\n{band}: encircled energy error at r = 5/10/20 px, 25 px stamp {np.round(err_cut, 4)}, "
          f"with Moffat wings {np.round(err_ext, 5)}")
    assert np.all(err_ext < 1e-3), err_ext
    assert err_cut[1] > 3 * err_ext[1]  # the stamp alone is off by more (F444W: 1.1 % at 10 px)
    # inside the stamp the measured shape is kept, scaled by the Moffat's share there
    inner = extended[17:42, 17:42]
    np.testing.assert_allclose(inner / inner.sum(), cut, rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(M.with_moffat_wings(cut, STAMP), cut)  # no larger size: the stamp itself


def test_moffat_wings_bring_matched_colour_apertures_to_the_target():
    """25 px stamps extended to 59 px with fitted wings: the matched stars' core (r = 0.15") flux agrees with the
    F444W stars' within 0.3 % (the 25 px stamps alone: +0.4-0.9 %)."""
    stars, npix = STARS + [32.0, 32.0, 0.0], NPIX + 64  # margin for the 59 px kernel's NaN frame
    core_t = aperture_flux(render(TARGET, "moffat", stars, npix), CORE_APERTURE, stars)
    target = true_stamp(TARGET, "moffat")
    print()
    for band in ("F115W", "F200W", "F356W"):
        img = render(band, "moffat", stars, npix)
        source = true_stamp(band, "moffat")
        ratios = {}
        for label, kernel in (
                ("25 px", M.matching_kernel_to(source, target)),
                ("wings", M.matching_kernel_to(M.with_moffat_wings(source, 59), M.with_moffat_wings(target, 59)))):
            matched, _ = M.match_image(img, None, kernel)
            ratios[label] = float(np.median(aperture_flux(matched, CORE_APERTURE, stars) / core_t))
            total = aperture_flux(matched, BIG_APERTURE, stars) / aperture_flux(img, BIG_APERTURE, stars)
            assert np.all(np.abs(total - 1) < FLUX_TOLERANCE), total
        print(f"{band}->{TARGET}: core flux vs F444W truth, 25 px stamps {ratios['25 px']:.4f}, "
              f"with Moffat wings {ratios['wings']:.4f}")
        assert abs(ratios["wings"] - 1) < 0.003, ratios
        assert abs(ratios["25 px"] - 1) > abs(ratios["wings"] - 1), ratios


@pytest.mark.parametrize("size, message", [(60, "odd size >= 25"), (21, "odd size >= 25")])
def test_moffat_wings_refuse_a_bad_size_naming_the_psf(size, message):
    with pytest.raises(M.PSFMatchError, match=f"F356W PSF.*{message}"):
        M.with_moffat_wings(true_stamp("F356W", "moffat"), size, "F356W PSF")
