"""Normalisation of raw archive products (shaped like the real ones) to the data boundary."""

from __future__ import annotations

import gzip
import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from snakemake.iocontainers import Namedlist

from workflow_scripts import io
from workflow_scripts.config import load_config
from workflow_scripts.errors import BoundaryError
from workflow_scripts.data.normalise import (build_catalog, estimate_rms_map, hst_zeropoint, normalise_band,
                                             normalise_catalog, normalise_hst_sci, normalise_jwst_i2d)
from workflow_scripts.surveys import get_survey

from .conftest import step_params

pytestmark = pytest.mark.timeout(60)

# A real ACS/WFC F606W header pair and the AB zeropoint it implies (computed by hand from the formula).
PHOTFLAM_F606W = 7.7265099e-20
PHOTPLAM_F606W = 5919.4604
ZP_F606W = 26.51063
PROV = io.provenance("cafe0123", 7, "download")
SIGMA = 0.002           # sky noise of the fake HST mosaic, electrons/s
BLANK_COLUMNS = 40      # the fake mosaics' footprint starts at this column


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config()


def tan_wcs(shape: tuple[int, int], scale_arcsec: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.1625, -27.7914]
    wcs.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    wcs.wcs.cd = np.array([[-scale_arcsec / 3600, 0], [0, scale_arcsec / 3600]])
    return wcs


def gzip_file(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return gz


def fake_hst_sci(path: Path, *, shape=(300, 360), photflam: float | None = PHOTFLAM_F606W,
                 photplam: float | None = PHOTPLAM_F606W, band: str = "F606W", gz: bool = False,
                 seed: int = 1) -> tuple[Path, np.ndarray, WCS]:
    """HLSP-like science mosaic: primary HDU in e/s, drizzle's zeros outside the footprint, a few galaxies."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, SIGMA, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(15):
        y0, x0 = rng.uniform(0, shape[0]), rng.uniform(BLANK_COLUMNS, shape[1])
        data += rng.uniform(0.05, 0.5) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 2.0**2))
    data[:, :BLANK_COLUMNS] = 0.0
    data[yy + xx < 80] = 0.0  # a slanted edge, as mosaics have
    wcs = tan_wcs(shape, 0.06)
    header = wcs.to_header()
    header.update({"TELESCOP": "HST", "INSTRUME": "ACS", "FILTER": band, "BUNIT": "ELECTRONS/S"})
    if photflam is not None:
        header["PHOTFLAM"], header["PHOTPLAM"] = photflam, photplam
    data = data.astype(np.float32)
    fits.PrimaryHDU(data=data, header=header).writeto(path)
    return (gzip_file(path) if gz else path), data, wcs


def fake_i2d(path: Path, *, shape=(200, 240), band: str = "F444W") -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """CEERS-like i2d: empty primary, SCI (MJy/sr, WCS), ERR, WHT (zero outside the footprint), gzipped."""
    rng = np.random.default_rng(2)
    sci = rng.normal(0.01, 0.003, shape).astype(np.float32)
    err = rng.uniform(0.002, 0.004, shape).astype(np.float32)
    wht = rng.uniform(100, 200, shape).astype(np.float32)
    wht[:, :30] = 0.0          # no exposure: some SCI there is non-zero rubbish, some exactly zero
    sci[:, :15] = 0.0
    wcs = tan_wcs(shape, 0.03)
    primary = fits.PrimaryHDU()
    primary.header.update({"TELESCOP": "JWST", "INSTRUME": "NIRCAM", "FILTER": band})
    sci_hdr = wcs.to_header()
    sci_hdr["BUNIT"] = "MJy/sr"
    hdul = fits.HDUList([primary, fits.ImageHDU(sci, sci_hdr, name="SCI"), fits.ImageHDU(err, name="ERR"),
                         fits.ImageHDU(wht, name="WHT")])
    hdul.writeto(path)
    return gzip_file(path), sci, err, wht


# ------------------------------------------------------------------------------------------ zeropoint
def test_hst_zeropoint_formula():
    zp, source = hst_zeropoint({"PHOTFLAM": PHOTFLAM_F606W, "PHOTPLAM": PHOTPLAM_F606W}, 99.0)
    assert source == "PHOTFLAM"
    assert zp == pytest.approx(ZP_F606W, abs=1e-4)
    expected = -2.5 * math.log10(PHOTFLAM_F606W) - 21.10 - 5 * math.log10(PHOTPLAM_F606W) + 18.692
    assert zp == pytest.approx(expected, abs=1e-12)
    assert hst_zeropoint({}, 25.5) == (25.5, "config")
    assert hst_zeropoint({"PHOTFLAM": 0.0, "PHOTPLAM": 5000.0}, 25.5) == (25.5, "config")


# ---------------------------------------------------------------------------------------------- hst_sci
@pytest.mark.parametrize("gz", [False, True])
def test_hst_sci_to_boundary(tmp_path, config, gz):
    survey = get_survey(config, "xdf")
    raw, data, wcs = fake_hst_sci(tmp_path / "hlsp_xdf_hst_acswfc-60mas_hudf_f606w_v1_sci.fits", gz=gz)
    out = io.band_path(tmp_path / "data", "xdf", "hudf", "F606W")
    result = normalise_hst_sci(raw, out, survey=survey, band="F606W", prov=PROV)
    mosaic = io.read_mosaic(out)
    hdr = mosaic.header
    assert (hdr["TELESCOP"], hdr["INSTRUME"], hdr["FILTER"], hdr["BUNIT"]) == ("HST", "ACS/WFC", "F606W",
                                                                              "electrons/s")
    assert mosaic.zeropoint == pytest.approx(ZP_F606W, abs=1e-4) == result.zeropoint
    assert hdr["ZPSOURCE"] == "PHOTFLAM"
    blank = data == 0
    assert np.isnan(mosaic.data[blank]).all() and np.isnan(mosaic.rms[blank]).all()
    assert np.isfinite(mosaic.data[~blank]).all() and np.isfinite(mosaic.rms[~blank]).all()
    np.testing.assert_array_equal(mosaic.data[~blank], data[~blank])
    assert np.nanmedian(mosaic.rms) == pytest.approx(SIGMA, rel=0.1)
    assert mosaic.wcs.naxis == 2 and mosaic.wcs.has_celestial
    assert mosaic.pixel_scale == pytest.approx(0.06, rel=1e-6)
    sky_in, sky_out = wcs.pixel_to_world(17.0, 250.0), mosaic.wcs.pixel_to_world(17.0, 250.0)
    assert sky_in.separation(sky_out).arcsec < 1e-6
    assert io.read_provenance(out)["config_hash"] == "cafe0123"
    assert result.footprint_fraction == pytest.approx(1 - blank.mean())
    assert not list(tmp_path.glob(".*.fits"))  # the gunzipped temporary copy is gone


def test_hst_sci_without_photflam_uses_configured_zeropoint(tmp_path, config):
    survey = get_survey(config, "goodss")
    raw, _, _ = fake_hst_sci(tmp_path / "f775w_sci.fits", photflam=None, band="F775W")
    out = tmp_path / "F775W.fits"
    rms_out = tmp_path / "elsewhere" / "F775W_noise.fits"
    normalise_band("hst_sci", raw, out, survey=survey, band="F775W", prov=PROV, rms_out=rms_out)
    mosaic = io.read_mosaic(out, rms_out)
    assert mosaic.zeropoint == survey.band("F775W").zeropoint == 25.678
    assert mosaic.header["ZPSOURCE"] == "config"


def test_unreadable_raw_and_unknown_format_are_clear_errors(tmp_path, config):
    survey = get_survey(config, "xdf")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file" * 300)
    with pytest.raises(BoundaryError, match="bad.fits"):
        normalise_hst_sci(bad, tmp_path / "F606W.fits", survey=survey, band="F606W", prov=PROV)
    with pytest.raises(BoundaryError, match="unknown raw format"):
        normalise_band("hst_drz", bad, tmp_path / "F606W.fits", survey=survey, band="F606W", prov=PROV)
    assert not (tmp_path / "F606W.fits").exists()


def test_truncated_raw_is_a_clear_error(tmp_path, config):
    raw, _, _ = fake_hst_sci(tmp_path / "sci.fits")
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    with pytest.warns(UserWarning, match="truncated"), pytest.raises(BoundaryError, match="truncated"):
        normalise_hst_sci(raw, tmp_path / "F606W.fits", survey=get_survey(config, "xdf"), band="F606W", prov=PROV)
    assert not (tmp_path / "F606W.fits").exists()


def test_rms_map_follows_the_noise_and_keeps_blanks():
    rng = np.random.default_rng(3)
    ny, nx = 600, 700
    sigma = np.where(np.arange(nx) < nx // 2, 1.0, 2.0)[None, :] * np.ones((ny, 1))
    image = (rng.normal(0, 1, (ny, nx)) * sigma).astype(np.float32)
    image[:150] = np.nan          # whole strips blank: filled from the neighbours, blank in the output
    image[300:320, 100:140] += 50  # a bright source is clipped away
    rms = estimate_rms_map(image, box_px=64, strip_boxes=2)
    assert rms.dtype == np.float32 and rms.shape == image.shape
    assert np.isnan(rms[:150]).all() and np.isfinite(rms[150:]).all()
    assert np.median(rms[150:, :200]) == pytest.approx(1.0, rel=0.05)
    assert np.median(rms[150:, -200:]) == pytest.approx(2.0, rel=0.05)
    assert np.median(rms[300:320, 100:140]) == pytest.approx(1.0, rel=0.1)


def test_rms_map_of_an_all_blank_image_is_an_error():
    with pytest.raises(BoundaryError, match="sky"):
        estimate_rms_map(np.full((100, 100), np.nan, dtype=np.float32), box_px=32)


# --------------------------------------------------------------------------------------------- jwst_i2d
def test_jwst_i2d_to_boundary(tmp_path, config):
    survey = get_survey(config, "ceers")
    raw, sci, err, wht = fake_i2d(tmp_path / "hlsp_ceers_jwst_nircam_nircam1_f444w_dr0.5_i2d.fits")
    out = io.band_path(tmp_path / "data", "ceers", "nircam1", "F444W")
    normalise_jwst_i2d(raw, out, survey=survey, band="F444W", prov=PROV)
    mosaic = io.read_mosaic(out)
    assert mosaic.zeropoint == pytest.approx(28.08652)
    assert (mosaic.header["TELESCOP"], mosaic.header["INSTRUME"], mosaic.header["BUNIT"]) == ("JWST", "NIRCAM",
                                                                                              "MJy/sr")
    blank = wht == 0
    assert np.isnan(mosaic.data[blank]).all() and np.isnan(mosaic.rms[blank]).all()
    np.testing.assert_array_equal(mosaic.data[~blank], sci[~blank])
    np.testing.assert_array_equal(mosaic.rms[~blank], err[~blank])
    assert mosaic.pixel_scale == pytest.approx(0.03, rel=1e-6)
    assert mosaic.wcs.naxis == 2 and mosaic.wcs.has_celestial


def test_jwst_i2d_without_err_is_a_clear_error(tmp_path, config):
    survey = get_survey(config, "ceers")
    path = tmp_path / "i2d.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((50, 50), np.float32), tan_wcs((50, 50), 0.03).to_header(),
                                                   name="SCI")]).writeto(path)
    with pytest.raises(BoundaryError, match="no ERR extension"):
        normalise_jwst_i2d(path, tmp_path / "F444W.fits", survey=survey, band="F444W", prov=PROV)


# -------------------------------------------------------------------------------------------- catalogue
GUO_BANDS = {"F435W": "ACS", "F606W": "ACS", "F775W": "ACS", "F814W": "ACS", "F125W": "WFC3", "F160W": "WFC3"}


def fake_guo(path: Path, *, fwhm_world: bool = False) -> None:
    """Guo+13-shaped multiband table (fluxes in uJy, -99 = not observed); F850LP left out on purpose."""
    n = 6
    cols = [fits.Column("ID", "J", array=np.arange(1, n + 1)),
            fits.Column("RA", "D", array=np.linspace(53.10, 53.20, n)),
            fits.Column("DEC", "D", array=np.linspace(-27.90, -27.70, n)),
            fits.Column("CLASS_STAR", "E", array=[0.1, 0.98, 0.5, 0.99, 0.2, 0.0])]
    for band, inst in GUO_BANDS.items():
        flux = [1.0, 10.0, -99.0, 0.5, -0.2, 100.0] if band == "F775W" else [2.0] * n
        cols += [fits.Column(f"{inst}_{band}_FLUX", "E", array=flux),
                 fits.Column(f"{inst}_{band}_FLUXERR", "E", array=[0.1] * n)]
    if fwhm_world:
        cols.append(fits.Column("FWHM_WORLD", "E", array=[0.1 / 3600] * n))
    fits.BinTableHDU.from_columns(cols).writeto(path)


def fake_santini(path: Path) -> None:
    """Santini-shaped photo-z/mass table: rows in another order, one source absent, one redshift missing."""
    cols = [fits.Column("ID", "J", array=[6, 4, 3, 2, 1]),
            fits.Column("zbest", "E", array=[4.5, 0.0, -99.0, 1.25, 0.5]),
            fits.Column("M_med", "E", array=[1e9] * 5)]
    fits.BinTableHDU.from_columns(cols).writeto(path)


def test_goodss_catalog_to_boundary(tmp_path, config):
    survey = get_survey(config, "goodss")
    fake_guo(tmp_path / "guo.fits")
    fake_santini(tmp_path / "santini.fits")
    out = io.catalog_path(tmp_path / "data", "goodss", "goodss")
    normalise_catalog(tmp_path / "guo.fits", tmp_path / "santini.fits", out, survey=survey, prov=PROV)
    cat = io.read_catalog(out)
    assert list(cat["id"]) == [1, 2, 3, 4, 5, 6]
    # 1 uJy is AB 23.9; in F775W image units (ZP 25.678) that is 10**(0.4 * 1.778) = 5.1428
    assert cat["flux_F775W"][0] == pytest.approx(5.142804, rel=1e-6)
    mag = 23.9 - 2.5 * np.log10(10.0)
    assert cat["mag_F775W"][1] == pytest.approx(21.4)
    assert cat["flux_F775W"][1] == pytest.approx(10 ** (-0.4 * (mag - 25.678)))
    assert np.isnan(cat["flux_F775W"][2]) and np.isnan(cat["mag_F775W"][2])       # -99: not observed
    assert cat["flux_F775W"][4] < 0 and np.isnan(cat["mag_F775W"][4])              # negative: flux kept
    assert cat["flux_F160W"][0] == pytest.approx(2.0 * 10 ** (0.4 * (25.946 - 23.9)))
    assert "flux_F850LP" not in cat.columns                                        # no column in the table
    assert cat["star"].dtype == bool and list(cat["star"]) == [False, True, False, True, False, False]
    z = cat["z"].to_numpy()
    np.testing.assert_allclose(z[[0, 1, 3, 5]], [0.5, 1.25, 0.0, 4.5])
    assert np.isnan(z[2]) and np.isnan(z[4])                                       # -99 and absent
    assert cat["fwhm"].isna().all()
    assert io.read_provenance(out)["seed"] == 7


def test_catalog_uses_the_mosaic_zeropoints_and_fwhm_world(tmp_path, config):
    survey = get_survey(config, "goodss")
    fake_guo(tmp_path / "guo.fits", fwhm_world=True)
    cat = build_catalog(tmp_path / "guo.fits", None, survey=survey, zeropoints={"F775W": 26.0})
    assert cat["flux_F775W"][0] == pytest.approx(10 ** (0.4 * (26.0 - 23.9)))
    assert cat["fwhm"].to_numpy() == pytest.approx(0.1)
    assert cat["z"].isna().all()


def test_catalog_without_class_star_is_a_clear_error(tmp_path, config):
    path = tmp_path / "t.fits"
    fits.BinTableHDU.from_columns([fits.Column("ID", "J", array=[1]), fits.Column("RA", "D", array=[1.0]),
                                   fits.Column("DEC", "D", array=[1.0])]).writeto(path)
    with pytest.raises(BoundaryError, match="CLASS_STAR"):
        build_catalog(path, None, survey=get_survey(config, "goodss"))


# ---------------------------------------------------------------------------------------------- adapter
def test_normalise_step_adapter(tmp_path, config):
    from workflow_scripts.steps.data.normalise import main

    raw = tmp_path / "raw"
    raw.mkdir()
    f606w, _, _ = fake_hst_sci(raw / "f606w_sci.fits", gz=True)
    f775w, _, _ = fake_hst_sci(raw / "f775w_sci.fits", photflam=None, band="F775W", seed=4)
    fake_guo(raw / "guo.fits")
    fake_santini(raw / "santini.fits")
    field = tmp_path / "data" / "goodss" / "goodss"
    outputs = [field / "F606W.fits", field / "F775W.fits", field / "F606W.rms.fits", field / "F775W.rms.fits",
               field / "catalog.parquet"]
    snakemake = SimpleNamespace(
        params=step_params(config, "goodss"),
        wildcards=Namedlist(fromdict={"survey": "goodss", "field": "goodss"}),
        input=Namedlist(fromdict={"F606W": str(f606w), "F775W": str(f775w), "catalog": str(raw / "guo.fits"),
                                  "photoz": str(raw / "santini.fits")}),
        output=Namedlist([str(p) for p in outputs]),
    )
    main(snakemake, logging.getLogger("test"))
    assert all(p.exists() for p in outputs)
    assert io.read_mosaic(field / "F606W.fits").zeropoint == pytest.approx(ZP_F606W, abs=1e-4)
    cat = io.read_catalog(field / "catalog.parquet")
    # the catalogue's F606W fluxes are in the units of the mosaic just written (header zeropoint, not config)
    assert cat["flux_F606W"][0] == pytest.approx(2.0 * 10 ** (0.4 * (ZP_F606W - 23.9)), rel=1e-4)
    assert io.read_provenance(field / "F775W.fits")["source"] == "download"
