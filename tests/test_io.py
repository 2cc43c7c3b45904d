"""The data boundary: round trips with provenance, and one clear error for each kind of bad input."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from workflow_scripts import io
from workflow_scripts.errors import BoundaryError

PROV = io.provenance("abc123", 7, "embedded")


def make_wcs(scale_arcsec=0.06, shape=(64, 80)):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.12, -27.80]
    wcs.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    wcs.wcs.cd = np.array([[-scale_arcsec / 3600, 0], [0, scale_arcsec / 3600]])
    return wcs


def write(tmp_path, data=None, wcs=None, rms=True):
    data = np.random.default_rng(1).normal(size=(64, 80)).astype(np.float32) if data is None else data
    path = tmp_path / "F775W.fits"
    io.write_mosaic(path, data, wcs or make_wcs(), telescope="HST", instrument="ACS", band="F775W",
                    bunit="electrons/s", zeropoint=25.678, prov=PROV,
                    rms=np.full(data.shape, 0.01, np.float32) if rms else None)
    return path


def test_mosaic_round_trip_with_provenance(tmp_path):
    path = write(tmp_path)
    mosaic = io.read_mosaic(path)
    assert mosaic.band == "F775W" and mosaic.zeropoint == pytest.approx(25.678)
    assert mosaic.pixel_scale == pytest.approx(0.06, rel=1e-9)
    assert mosaic.rms is not None and mosaic.rms.shape == mosaic.data.shape
    assert io.read_provenance(path) == {"pipeline_version": io.__version__, "config_hash": "abc123",
                                        "seed": 7, "source": "embedded"}
    sky = mosaic.wcs.pixel_to_world(10.0, 20.0)
    x, y = mosaic.wcs.world_to_pixel(sky)
    assert abs(x - 10.0) < 1e-6 and abs(y - 20.0) < 1e-6
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"


def test_truncated_fits_is_a_clear_error(tmp_path):
    path = write(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BoundaryError, match="truncated") as err:
        io.read_mosaic(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mosaic_without_wcs_is_refused(tmp_path):
    path = tmp_path / "nowcs.fits"
    hdr = fits.Header({"TELESCOP": "HST", "INSTRUME": "ACS", "FILTER": "F775W", "BUNIT": "e/s", "PHOTZP": 25.0})
    fits.PrimaryHDU(np.ones((8, 8), np.float32), header=hdr).writeto(path)
    with pytest.raises(BoundaryError, match="no valid celestial WCS"):
        io.read_mosaic(path, with_rms=False)


def test_writer_refuses_a_wcs_without_celestial_axes(tmp_path):
    wcs = WCS(naxis=2)  # linear pixel axes, no sky
    with pytest.raises(BoundaryError, match="no celestial axes"):
        write(tmp_path, wcs=wcs)
    assert not (tmp_path / "F775W.fits").exists()


def test_all_nan_band_is_refused(tmp_path):
    path = write(tmp_path, data=np.full((64, 80), np.nan, np.float32))
    with pytest.raises(BoundaryError, match="every pixel is NaN"):
        io.read_mosaic(path)


def test_missing_header_keys_are_named(tmp_path):
    path = tmp_path / "bare.fits"
    fits.PrimaryHDU(np.ones((8, 8), np.float32), header=make_wcs().to_header()).writeto(path)
    with pytest.raises(BoundaryError, match="lacks TELESCOP, INSTRUME, FILTER, BUNIT, PHOTZP"):
        io.read_mosaic(path, with_rms=False)


def test_missing_rms_map_is_named(tmp_path):
    path = write(tmp_path, rms=False)
    with pytest.raises(BoundaryError, match=r"F775W\.rms\.fits: file not found"):
        io.read_mosaic(path)


def catalog(n=3):
    return pd.DataFrame({"id": np.arange(n), "ra": np.full(n, 53.1), "dec": np.full(n, -27.8),
                         "star": np.zeros(n, bool), "flux_F775W": np.ones(n)})


def test_catalog_round_trip_with_provenance(tmp_path):
    path = tmp_path / "catalog.parquet"
    io.write_catalog(path, catalog(), PROV)
    back = io.read_catalog(path)
    pd.testing.assert_frame_equal(back, catalog())
    assert io.read_provenance(path)["config_hash"] == "abc123"


def test_empty_catalog_is_refused_and_nothing_written(tmp_path):
    path = tmp_path / "catalog.parquet"
    with pytest.raises(BoundaryError, match="empty catalogue"):
        io.write_catalog(path, catalog(0), PROV)
    assert not path.exists()
    # an empty catalogue made by something else is refused on reading too
    catalog(0).to_parquet(path)
    with pytest.raises(BoundaryError, match="the catalogue is empty"):
        io.read_catalog(path)


def test_catalog_without_required_columns(tmp_path):
    path = tmp_path / "catalog.parquet"
    with pytest.raises(BoundaryError, match="lacks columns ra, dec"):
        io.write_catalog(path, catalog().drop(columns=["ra", "dec"]), PROV)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.fits"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    target = tmp_path / "out.txt"
    with io.atomic_path(target) as tmp:
        tmp.write_text("shared")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
