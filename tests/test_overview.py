"""The data overview figure (workflow_scripts.plotting.overview) and its rule script, on a small GalSim field."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import galsim
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS

from workflow_scripts.plotting.overview import FigureError, bin_mosaic, plot_field_overview
from workflow_scripts.io import Mosaic, provenance, write_catalog, write_mosaic
from workflow_scripts.data.psf import EPSFResult, write_psf
from workflow_scripts.surveys import get_survey

from .conftest import step_params

BANDS = ["F435W", "F775W", "F160W"]  # blue, green, red of the goodss survey
NPIX = 320


def _wcs(npix: int, scale: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.12, -27.80]
    wcs.wcs.crpix = [npix / 2 + 0.5, npix / 2 + 0.5]
    wcs.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
    return wcs


@pytest.fixture(scope="module")
def field():
    """Three bands of one small field (blue discs, red spheroids, stars), their PSFs and a catalogue."""
    survey = get_survey(_config(), "goodss")
    scale = survey.pixel_scale
    rng = np.random.default_rng(3)
    n_gal, n_star = 40, 6
    xy = rng.uniform(15, NPIX - 15, (n_gal + n_star, 2))
    mags = rng.uniform(21.0, 26.0, n_gal + n_star)
    hlr = rng.uniform(0.15, 0.6, n_gal + n_star)
    red = rng.random(n_gal + n_star) < 0.4
    colour = {"F435W": np.where(red, 1.8, 0.2), "F775W": np.where(red, 0.6, 0.0), "F160W": np.zeros(n_gal + n_star)}
    mosaics, psfs, rows = {}, {}, []
    for band in BANDS:
        spec = survey.band(band)
        psf = galsim.Moffat(beta=3.0, fwhm=spec.psf_fwhm)
        image = galsim.ImageF(NPIX, NPIX, scale=scale)
        for k, (x, y) in enumerate(xy):
            flux = spec.flux(mags[k] + colour[band][k])
            obj = psf if k >= n_gal else galsim.Convolve(galsim.Exponential(half_light_radius=hlr[k]), psf)
            stamp = obj.withFlux(flux).drawImage(nx=64, ny=64, scale=scale, center=galsim.PositionD(x + 1, y + 1))
            b = stamp.bounds & image.bounds
            image[b] += stamp[b]
        sigma = survey.pixel_noise(band)
        data = image.array + rng.normal(0.0, sigma, image.array.shape)
        wcs = _wcs(NPIX, scale)
        header = wcs.to_header()
        header.update({"TELESCOP": "HST", "INSTRUME": "ACS", "FILTER": band, "BUNIT": "electrons/s",
                       "PHOTZP": spec.zeropoint})
        mosaics[band] = Mosaic(data=data.astype(np.float32), wcs=wcs, header=header,
                               rms=np.full(data.shape, sigma, np.float32))
        psfs[band] = psf.drawImage(nx=25, ny=25, scale=scale, method="auto").array
    catalog = pd.DataFrame({"id": np.arange(n_gal + n_star), "ra": 53.12, "dec": -27.8,
                            "star": np.arange(n_gal + n_star) >= n_gal,
                            "fwhm": np.where(np.arange(n_gal + n_star) >= n_gal, 0.1, 2 * hlr)})
    for band in BANDS:
        catalog[f"mag_{band}"] = mags + colour[band]
    return SimpleNamespace(survey=survey, mosaics=mosaics, psfs=psfs, catalog=catalog)


def _config() -> dict:
    from workflow_scripts.config import load_config

    return load_config()


def _check_png(path: Path, min_side: int = 600) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min_side <= min(img.shape[:2]) and max(img.shape[:2]) <= 4000
    assert img[..., :3].std() > 0.05, "the figure looks blank"
    return img


def test_overview_with_catalogue(field, tmp_path):
    png, pdf = tmp_path / "fig" / "overview.png", tmp_path / "fig" / "overview.pdf"
    out = plot_field_overview(field.mosaics, field.catalog, field.psfs, field.survey, png, pdf, field="goodss")
    assert out == png
    img = _check_png(png)
    assert img.shape[1] > img.shape[0], "landscape page: image left, PSFs and counts right"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(png.parent.glob(".*.tmp"))


def test_overview_without_catalogue_and_single_band(field, tmp_path):
    _check_png(plot_field_overview(field.mosaics, None, field.psfs, field.survey, tmp_path / "nocat.png"))
    one = {"F775W": field.mosaics["F775W"]}
    _check_png(plot_field_overview(one, None, {"F775W": field.psfs["F775W"]}, field.survey, tmp_path / "one.png"))


def test_empty_band_dict_is_a_clear_error(field, tmp_path):
    with pytest.raises(FigureError, match="no band mosaics"):
        plot_field_overview({}, None, {}, field.survey, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_bin_mosaic_keeps_flux_scale_and_wcs(field):
    m = field.mosaics["F775W"]
    b = bin_mosaic(m, 4)
    assert b.data.shape == (NPIX // 4, NPIX // 4)
    assert b.pixel_scale == pytest.approx(4 * m.pixel_scale, rel=1e-6)
    assert np.nanmean(b.data) == pytest.approx(np.nanmean(m.data), rel=1e-4, abs=1e-6)
    assert np.nanmedian(b.rms) == pytest.approx(np.nanmedian(m.rms) / 4, rel=1e-5)
    ra, dec = m.wcs.pixel_to_world_values(1.5, 1.5)  # centre of the first 4x4 block
    ra_b, dec_b = b.wcs.pixel_to_world_values(0.0, 0.0)
    assert (float(ra), float(dec)) == pytest.approx((float(ra_b), float(dec_b)), abs=1e-9)


def test_step_adapter(field, tmp_path):
    """steps/overview.py main() on boundary files written by io and the PSF files written by psf.write_psf."""
    from workflow_scripts.steps.data import overview as step

    prov = provenance("x", 1, "embedded")
    images, psf_files = [], []
    for band in BANDS:
        m = field.mosaics[band]
        path = tmp_path / "goodss" / "goodss" / f"{band}.fits"
        write_mosaic(path, m.data, m.wcs, telescope="HST", instrument="ACS", band=band, bunit="electrons/s",
                     zeropoint=m.zeropoint, prov=prov, rms=m.rms)
        images.append(str(path))
        psf = field.psfs[band] / field.psfs[band].sum()
        epsf = np.kron(psf, np.ones((4, 4)))
        epsf = np.pad(epsf, ((0, 1), (0, 1)))
        result = EPSFResult(band=band, epsf=epsf, oversampling=4, psf=psf, pixel_scale=0.06, n_stars=6,
                            n_candidates=46, fwhm=0.1, fwhm_oversampled=0.1, fwhm_guess=0.09)
        psf_path = tmp_path / "psf" / f"{band}.fits"
        write_psf(psf_path, result, {"FILTER": band}, prov)
        psf_files.append(str(psf_path))
    catalog = tmp_path / "goodss" / "goodss" / "catalog.parquet"
    write_catalog(catalog, field.catalog, prov)
    snakemake = SimpleNamespace(
        input=SimpleNamespace(images=images, psfs=psf_files, catalog=str(catalog)),
        output=SimpleNamespace(png=str(tmp_path / "out" / "goodss_goodss_overview.png")),
        params=step_params(_config(), "goodss"), wildcards=SimpleNamespace(survey="goodss", field="goodss"),
        log=[], rule="overview",
    )
    step.main(snakemake, logging.getLogger("test"))
    _check_png(Path(snakemake.output.png))
