"""Empirical PSF from stars (workflow_scripts.data.psf) against GalSim star fields with a known PSF.

Each field holds stars at random sub-pixel positions drawn with a known Moffat(beta=3) PSF, a few bright extended
galaxies (round and elongated) that must not be taken for stars, and Gaussian noise. The estimated FWHM is compared
with the FWHM of the true effective PSF (GalSim, pixel-convolved, on the same grids) measured by the same method.
"""

from __future__ import annotations

import functools
import json
import time
from types import SimpleNamespace

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from workflow_scripts.data import psf as P
from workflow_scripts.errors import PipelineError
from workflow_scripts.io import Mosaic, provenance, read_provenance, write_mosaic

from .conftest import step_params

STAMP = 25
OVERSAMPLING = 4
SNR_MIN = 50.0
FWHM_TOLERANCE = 0.05
N_STARS = 40

# name: pixel scale ("/px), Moffat FWHM ("), star flux range (sigma units): undersampled ACS-like (1.5 px FWHM)
# and well-sampled NIRCam-F444W-like (4.8 px FWHM)
CASES = {
    "acs_undersampled": dict(scale=0.06, fwhm=0.09, flux_range=(2e3, 6e4)),
    "nircam_sampled": dict(scale=0.03, fwhm=0.145, flux_range=(5e3, 1.5e5)),
}


def make_wcs(npix: int, scale: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.16, -27.78]
    wcs.wcs.crpix = [npix / 2 + 0.5, npix / 2 + 0.5]
    wcs.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
    return wcs


def star_field(*, scale: float, fwhm: float, flux_range: tuple[float, float], npix: int = 1024,
               n_stars: int = N_STARS, n_gal: int = 8, sigma: float = 1.0, seed: int = 7,
               band: str = "F775W") -> tuple[Mosaic, np.ndarray, galsim.GSObject]:
    """A mosaic with stars and galaxies; truth rows are (x, y, flux, is_star) with 0-based pixel centres."""
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.0, fwhm=fwhm)
    image = galsim.ImageF(npix, npix, scale=scale)
    positions: list[np.ndarray] = []
    while len(positions) < n_stars + n_gal:  # well separated, so isolation does not eat the sample
        p = rng.uniform(20, npix - 20, 2)
        if all(np.hypot(*(p - q)) > 40 for q in positions):
            positions.append(p)
    truth = []
    for k, (x, y) in enumerate(positions):
        is_star = k < n_stars
        flux = float(np.exp(rng.uniform(*np.log(flux_range))))
        if is_star:
            obj = psf.withFlux(flux)
        else:  # half round (caught by size), half elongated; bright enough to pass the S/N cut
            q = rng.uniform(0.85, 1.0) if k % 2 else rng.uniform(0.4, 0.7)
            gal = galsim.Sersic(n=rng.uniform(1.0, 3.0), half_light_radius=rng.uniform(0.25, 0.6))
            gal = gal.shear(q=q, beta=rng.uniform(0, np.pi) * galsim.radians).withFlux(3 * flux)
            obj = galsim.Convolve(gal, psf)
        stamp = obj.drawImage(nx=81, ny=81, scale=scale, center=galsim.PositionD(x + 1, y + 1))
        bounds = stamp.bounds & image.bounds
        image[bounds] += stamp[bounds]
        truth.append((x, y, flux, is_star))
    data = image.array.astype(np.float64) + rng.normal(0.0, sigma, image.array.shape)
    wcs = make_wcs(npix, scale)
    header = wcs.to_header()
    header.update({"TELESCOP": "TEST", "INSTRUME": "GALSIM", "FILTER": band, "BUNIT": "counts", "PHOTZP": 25.0})
    mosaic = Mosaic(data=data.astype(np.float32), wcs=wcs, header=header,
                    rms=np.full(data.shape, sigma, dtype=np.float32))
    return mosaic, np.array(truth), psf


def true_fwhm(psf: galsim.GSObject, scale: float) -> tuple[float, float]:
    """FWHM (arcsec) of the true effective PSF on the native grid and oversampled, by P.measure_fwhm."""
    native = psf.drawImage(nx=STAMP, ny=STAMP, scale=scale, method="auto").array
    n = STAMP * OVERSAMPLING + 1
    over = galsim.Convolve(psf, galsim.Pixel(scale)).drawImage(nx=n, ny=n, scale=scale / OVERSAMPLING,
                                                                 method="no_pixel").array
    return P.measure_fwhm(native) * scale, P.measure_fwhm(over, oversampling=OVERSAMPLING) * scale


def estimate(mosaic: Mosaic, fwhm: float, **kw) -> P.EPSFResult:
    args = dict(psf_fwhm_guess=fwhm, stamp_size=STAMP, oversampling=OVERSAMPLING, min_stars=8,
                snr_min=SNR_MIN, max_iters=10)
    args.update(kw)
    return P.estimate_psf(mosaic, **args)


@functools.cache
def run_case(name: str) -> SimpleNamespace:
    """Render the field of a case and estimate its PSF, once per test session."""
    spec = CASES[name]
    mosaic, truth, psf = star_field(**spec)
    t0 = time.perf_counter()
    result = estimate(mosaic, spec["fwhm"])
    elapsed = time.perf_counter() - t0
    return SimpleNamespace(name=name, spec=spec, mosaic=mosaic, truth=truth, psf=psf, result=result,
                           elapsed=elapsed)


@pytest.fixture(params=list(CASES))
def case(request) -> SimpleNamespace:
    return run_case(request.param)


def test_fwhm_matches_truth(case):
    res = case.result
    native_true, over_true = true_fwhm(case.psf, case.spec["scale"])
    print(f"\n{case.name}: {res.n_stars} stars, {case.elapsed:.1f} s; FWHM native {res.fwhm:.4f}\" vs true "
          f"{native_true:.4f}\" ({res.fwhm / native_true - 1:+.2%}); oversampled {res.fwhm_oversampled:.4f}\" vs "
          f"true {over_true:.4f}\" ({res.fwhm_oversampled / over_true - 1:+.2%})")
    assert res.fwhm == pytest.approx(native_true, rel=FWHM_TOLERANCE)
    assert res.fwhm_oversampled == pytest.approx(over_true, rel=FWHM_TOLERANCE)


def test_result_shapes_and_normalisation(case):
    res = case.result
    assert res.psf.shape == (STAMP, STAMP)
    assert res.psf.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.unravel_index(np.argmax(res.psf), res.psf.shape) == (STAMP // 2, STAMP // 2)
    assert res.epsf.shape == (STAMP * OVERSAMPLING + 1,) * 2
    assert res.epsf.sum() == pytest.approx(OVERSAMPLING**2, rel=1e-9)
    assert res.band == "F775W" and res.oversampling == OVERSAMPLING
    assert res.pixel_scale == pytest.approx(case.spec["scale"], rel=1e-6)
    # the native PSF is the oversampled one sampled at native pixel centres
    assert np.allclose(P.native_from_oversampled(res.epsf, OVERSAMPLING, STAMP), res.psf)
    # the true native effective PSF and the estimate agree pixel by pixel to within 4 % of the peak
    true = case.psf.drawImage(nx=STAMP, ny=STAMP, scale=case.spec["scale"], method="auto").array
    true = true / true.sum()
    assert np.abs(res.psf - true).max() < 0.04 * true.max()


def test_galaxies_are_not_stars(case):
    table = P.classify_sources(case.mosaic, pixel_scale=case.spec["scale"], psf_fwhm_guess=case.spec["fwhm"],
                               stamp_size=STAMP, snr_min=SNR_MIN)
    dist, idx = cKDTree(case.truth[:, :2]).query(table[["x", "y"]].to_numpy())
    matched = dist < 2.0
    is_star = case.truth[idx, 3].astype(bool) & matched
    is_gal = ~case.truth[idx, 3].astype(bool) & matched
    assert is_gal.sum() == 8, "every galaxy should be detected"
    assert not table["star"][is_gal].any(), table[is_gal]
    assert set(table["reject"][is_gal]) <= {"size", "elongated", "flags"}  # flags: touches the image edge
    assert table["star"][is_star].sum() >= 0.9 * N_STARS
    assert not table["star"][~matched].any(), "no spurious detection may be a star"
    # the stars used by the EPSF are the true stars
    d_used, i_used = cKDTree(case.truth[:, :2]).query(case.result.stars[["x", "y"]].to_numpy())
    assert (d_used < 1.0).all() and case.truth[i_used, 3].all()


def test_too_few_stars_is_a_clear_error():
    mosaic, _, _ = star_field(**CASES["acs_undersampled"], npix=384, n_stars=4, n_gal=3, seed=3, band="F814W")
    with pytest.raises(P.PSFError, match=r"band F814W: only \d+ usable PSF stars \(need psf.min_stars = 8\)"):
        estimate(mosaic, 0.09)
    assert issubclass(P.PSFError, PipelineError)


def test_edges_nans_and_neighbours_are_rejected():
    mosaic, truth, _ = star_field(**CASES["acs_undersampled"], npix=512, n_stars=20, n_gal=0, seed=11)
    data = mosaic.data.copy()
    data[:, :256] = np.nan  # left half without coverage
    # a close companion next to the first star in the right half
    k = int(np.flatnonzero(truth[:, 0] > 300)[0])
    x, y = truth[k, :2]
    stamp = galsim.Moffat(beta=3.0, fwhm=0.09).withFlux(3000).drawImage(
        nx=41, ny=41, scale=0.06, center=galsim.PositionD(x + 8 + 1, y + 1))
    img = galsim.ImageF(data.shape[1], data.shape[0], scale=0.06)
    b = stamp.bounds & img.bounds
    img[b] += stamp[b]
    data += img.array
    noisy = Mosaic(data=data, wcs=mosaic.wcs, header=mosaic.header, rms=mosaic.rms)
    table = P.classify_sources(noisy, pixel_scale=0.06, psf_fwhm_guess=0.09, stamp_size=STAMP, snr_min=SNR_MIN)
    assert not table.loc[table["x"] < 256 + STAMP // 2, "star"].any()
    near = np.hypot(table["x"] - x, table["y"] - y) < 2
    assert near.sum() == 1 and table.loc[near, "reject"].item() == "neighbour"


def test_measure_fwhm_recovers_a_well_sampled_moffat():
    fwhm_px = 6.0
    img = galsim.Moffat(beta=3.0, fwhm=fwhm_px).drawImage(nx=61, ny=61, scale=1.0, method="sb").array
    assert P.measure_fwhm(img) == pytest.approx(fwhm_px, rel=1e-3)
    with pytest.raises(P.PSFError):
        P.measure_fwhm(np.zeros((5, 5)))


def test_write_and_read_psf(tmp_path):
    case = run_case("acs_undersampled")
    prov = provenance("abc123", 42, "embedded")
    path, jpath = tmp_path / "psf" / "F775W.fits", tmp_path / "psf" / "F775W.json"
    P.write_psf(path, case.result, {"SURVEY": "test", "FIELD": "f1", "FILTER": "F775W"}, prov)
    summary = P.write_psf_summary(jpath, case.result, {"survey": "test", "field": "f1"}, prov)
    with fits.open(path) as hdul:
        hdr = hdul[0].header
        assert hdul[0].data.shape == (STAMP, STAMP) and hdul[0].data.sum() == pytest.approx(1.0, rel=1e-5)
        assert hdul["EPSF"].header["OVERSAMP"] == OVERSAMPLING
        assert hdul["EPSF"].data.sum() == pytest.approx(OVERSAMPLING**2, rel=1e-5)
        assert hdr["NSTARS"] == case.result.n_stars and hdr["FWHM"] == pytest.approx(case.result.fwhm, rel=1e-5)
        assert hdr["FWHMCFG"] == pytest.approx(0.09) and hdr["SURVEY"] == "test"
        assert hdr["PIPEVER"] and hdr["SEED"] == 42 and hdr["OVERSAMP"] == OVERSAMPLING
        assert len(hdul["STARS"].data) == case.result.n_stars
    assert read_provenance(path)["config_hash"] == "abc123"
    back = P.read_psf(path)
    assert back.fwhm == pytest.approx(case.result.fwhm, rel=1e-5) and back.n_stars == case.result.n_stars
    assert np.allclose(back.psf, case.result.psf, atol=1e-7)
    on_disk = json.loads(jpath.read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    assert on_disk["band"] == "F775W" and on_disk["n_stars"] == case.result.n_stars
    assert on_disk["provenance"]["seed"] == 42
    assert not list(path.parent.glob(".*.tmp"))


def test_step_adapter(tmp_path, config):
    """steps/psf.py main() on a boundary mosaic written by io.write_mosaic (goodss F775W: 0.06"/px, 0.09")."""
    from workflow_scripts.steps.data import psf as step

    mosaic, _, _ = star_field(**CASES["acs_undersampled"], npix=512, n_stars=25, n_gal=3, seed=5)
    image = tmp_path / "goodss" / "goodss" / "F775W.fits"
    write_mosaic(image, mosaic.data, mosaic.wcs, telescope="HST", instrument="ACS", band="F775W",
                 bunit="electrons/s", zeropoint=25.678, prov=provenance("x", 1, "embedded"), rms=mosaic.rms)
    out = tmp_path / "results"
    snakemake = SimpleNamespace(
        input=SimpleNamespace(image=str(image), rms=str(image).replace(".fits", ".rms.fits")),
        output=SimpleNamespace(fits=str(out / "F775W.fits"), json=str(out / "F775W.json")),
        params=step_params(config, "goodss", psf={**config["psf"], "max_iters": 2, "max_stars": 10}),  # EPSF: above
        wildcards=SimpleNamespace(survey="goodss", field="goodss", band="F775W"),
        log=[], rule="psf",
    )
    import logging

    step.main(snakemake, logging.getLogger("test"))
    summary = json.loads((out / "F775W.json").read_text())
    assert summary["survey"] == "goodss" and config["psf"]["min_stars"] <= summary["n_stars"] <= 10   # psf.max_stars
    assert summary["fwhm_configured_arcsec"] == pytest.approx(0.09)
    assert fits.getheader(out / "F775W.fits")["FILTER"] == "F775W"
