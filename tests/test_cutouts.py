"""Selection, split, cutouts and asinh scaling (imaging.stamps, imaging.scaling, studies.hemmati22.selection) against known truth.

A two-band mosaic with a celestial WCS holds GalSim point sources at known sub-pixel positions (their RA/Dec
from the WCS); some sit near the edges, one next to a NaN hole and one in a no-coverage (zero) patch.
"""

from __future__ import annotations

import galsim
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from workflow_scripts.imaging import scaling as scaling_mod, stamps
from workflow_scripts.studies.hemmati22 import selection
from workflow_scripts.errors import PipelineError
from workflow_scripts.io import Mosaic, provenance, read_provenance

SCALE = 0.06
NPIX = 400
SIZE = 64
PROV = provenance("cafe01", 11, "embedded")


def make_wcs(npix: int = NPIX, scale: float = SCALE, rotation_deg: float = 0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.12, -27.80]
    wcs.wcs.crpix = [npix / 2 + 0.5, npix / 2 + 0.5]
    c, s = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
    wcs.wcs.cd = scale / 3600 * np.array([[-c, s], [s, c]])
    return wcs


def mosaic(data: np.ndarray, band: str, zp: float, wcs: WCS, rms: np.ndarray | None = None) -> Mosaic:
    hdr = fits.Header({"FILTER": band, "PHOTZP": zp, "BUNIT": "electrons/s", "TELESCOP": "HST",
                       "INSTRUME": "ACS"})
    return Mosaic(data=data.astype(np.float32), wcs=wcs, header=hdr, rms=rms)


@pytest.fixture(scope="module")
def field():
    """Mosaics of two bands (band 2 = 2 x band 1), truth positions and a catalogue."""
    rng = np.random.default_rng(0)
    wcs = make_wcs()
    xs, ys = [], []
    while len(xs) < 12:  # isolated interior sources
        p = rng.uniform(40, NPIX - 40, 2)
        if all(np.hypot(p[0] - x, p[1] - y) > 25 for x, y in zip(xs, ys)) and not (
                (120 <= p[0] <= 200 and 250 <= p[1] <= 330) or (250 <= p[0] <= 330 and 40 <= p[1] <= 110)):
            xs.append(p[0])
            ys.append(p[1])
    # edge cases: near the four edges, next to the NaN hole, inside the zero patch
    edge = [(10.3, 200.2), (NPIX - 20.7, 150.5), (200.0, 5.5), (220.4, NPIX - 31.2)]
    special = [(160.2, 290.7), (290.6, 75.1)]  # NaN hole at (150, 300); zero patch around (290, 75)
    xs_all, ys_all = np.array(xs + [p[0] for p in edge + special]), np.array(ys + [p[1] for p in edge + special])
    img = galsim.ImageF(NPIX, NPIX, scale=SCALE)
    psf = galsim.Gaussian(fwhm=0.15)
    for x, y in zip(xs_all, ys_all):
        stamp = psf.withFlux(100.0).drawImage(scale=SCALE, nx=41, ny=41, center=galsim.PositionD(x + 1, y + 1))
        b = stamp.bounds & img.bounds
        img[b] += stamp[b]
    data = img.array.astype(np.float64) + rng.normal(0, 0.01, img.array.shape)
    data[300, 150] = np.nan
    data[60:90, 270:310] = 0.0
    ra, dec = wcs.all_pix2world(xs_all, ys_all, 0)
    n = len(xs_all)
    cat = pd.DataFrame({"id": np.arange(1, n + 1), "ra": ra, "dec": dec, "star": False, "z": 1.0,
                        "mag_F775W": 22.0, "flux_F775W": 100.0, "fwhm": 0.15})
    rms = np.full(data.shape, 0.01, np.float32)
    mos = {"F775W": mosaic(data, "F775W", 25.678, wcs, rms), "F850LP": mosaic(2 * data, "F850LP", 24.867, wcs, rms)}
    return {"mosaics": mos, "catalog": cat, "x": xs_all, "y": ys_all, "n_good": len(xs), "n_edge": len(edge),
            "ids_edge": list(range(len(xs) + 1, len(xs) + len(edge) + 1)), "id_nan": n - 1, "id_zero": n}


# ---------------------------------------------------------------------------------------------- selection
def test_select_galaxies_applies_the_paper_cuts():
    cat = pd.DataFrame({
        "id": [1, 2, 3, 4, 5, 6, 7, 8],
        "ra": [1.0, 1.0, 1.0, 1.0, 1.0, np.nan, 1.0, 1.0],
        "dec": [2.0] * 8,
        "star": [False, True, False, False, False, False, False, False],
        "mag_F160W": [24.0, 20.0, 25.0, 25.5, 23.0, 22.0, np.nan, 24.99],
        "z": [1.0, 0.0, 1.0, 1.0, 5.2, 1.0, 1.0, 4.99],
    })
    out = selection.select_galaxies(cat)
    assert out["id"].tolist() == [1, 8]  # star, mag >= 25, z >= 5, NaN ra, NaN mag are out
    assert out.index.tolist() == [0, 1]
    assert selection.select_galaxies(cat, mag_max=26.0, z_max=6.0)["id"].tolist() == [1, 3, 4, 5, 8]


def test_select_galaxies_errors():
    with pytest.raises(PipelineError, match="empty"):
        selection.select_galaxies(pd.DataFrame(columns=["id", "ra", "dec", "star", "z", "mag_F160W"]))
    with pytest.raises(PipelineError, match="lacks columns mag_F160W"):
        selection.select_galaxies(pd.DataFrame({"id": [1], "ra": [1.0], "dec": [1.0], "star": [False], "z": [1.0]}))
    with pytest.raises(PipelineError, match="no galaxy passes"):
        selection.select_galaxies(pd.DataFrame({"id": [1], "ra": [1.0], "dec": [1.0], "star": [True], "z": [1.0],
                                        "mag_F160W": [20.0]}))


def test_split_by_declination_is_disjoint_with_a_gap():
    rng = np.random.default_rng(1)
    n = 3000
    cat = pd.DataFrame({"id": np.arange(n), "ra": rng.uniform(53.0, 53.2, n), "dec": rng.uniform(-27.9, -27.7, n)})
    gap = selection.cutout_gap_arcsec(SIZE, SCALE)
    assert gap == pytest.approx(SIZE * SCALE)
    train, blend = selection.split_by_declination(cat, 0.8, gap)
    assert set(train["id"]).isdisjoint(blend["id"])
    assert (blend["dec"].min() - train["dec"].max()) * 3600 >= gap
    assert len(train) / (len(train) + len(blend)) == pytest.approx(0.8, abs=0.02)
    assert len(cat) - len(train) - len(blend) < 0.01 * n  # only the gap is lost
    # north-up cutouts reach half a cutout in dec: two cutouts of the two regions never overlap
    half = 0.5 * SIZE * SCALE / 3600
    assert (train["dec"] + half).max() <= (blend["dec"] - half).min()
    # a mosaic rotated by 45 deg needs sqrt(2) more
    assert selection.cutout_gap_arcsec(SIZE, SCALE, make_wcs(rotation_deg=45)) == pytest.approx(SIZE * SCALE * np.sqrt(2))
    with pytest.raises(PipelineError, match="train_fraction"):
        selection.split_by_declination(cat, 1.0, gap)
    with pytest.raises(PipelineError, match="empty"):
        selection.split_by_declination(cat.iloc[:2], 0.5, 3600.0)


# ------------------------------------------------------------------------------------------------ cutouts
def test_cutouts_are_placed_by_the_wcs(field):
    cs = stamps.extract_cutouts(field["mosaics"], field["catalog"], SIZE, progress=False)
    assert cs.bands == ["F775W", "F850LP"] and cs.cube.shape == (field["n_good"], 2, SIZE, SIZE)
    assert cs.cube.dtype == np.float32 and cs.zeropoints == [25.678, 24.867]
    assert cs.pixel_scale == pytest.approx(SCALE)
    assert cs.summary == {"n_input": len(field["catalog"]), "n_kept": field["n_good"], "n_edge": field["n_edge"],
                          "n_nan": 1, "n_nodata": 1}
    assert sorted(cs.rejected["id"]) == sorted(field["ids_edge"] + [field["id_nan"], field["id_zero"]])
    flags = dict(zip(cs.rejected["id"], cs.rejected["flag"]))
    assert flags[field["id_nan"]] == stamps.FLAG_NAN and flags[field["id_zero"]] == stamps.FLAG_NODATA
    assert all(flags[i] == stamps.FLAG_EDGE for i in field["ids_edge"])
    yy, xx = np.mgrid[:SIZE, :SIZE]
    centre = (SIZE - 1) / 2
    for k, row in cs.table.iterrows():
        truth_x, truth_y = field["x"][row["id"] - 1], field["y"][row["id"] - 1]
        assert row["x"] == pytest.approx(truth_x, abs=1e-6) and row["y"] == pytest.approx(truth_y, abs=1e-6)
        assert abs(row["xc"] - centre) <= 0.5 and abs(row["yc"] - centre) <= 0.5
        # exact slicing: the cutout is the mosaic's pixels, unresampled
        x0, y0 = int(row["x0"]), int(row["y0"])
        np.testing.assert_array_equal(cs.cube[k, 0], field["mosaics"]["F775W"].data[y0:y0 + SIZE, x0:x0 + SIZE])
        np.testing.assert_allclose(cs.cube[k, 1], 2 * cs.cube[k, 0], rtol=1e-6)
        # the light-weighted centre (within 6 px, noise is tiny) is where the table says the galaxy is
        img = cs.cube[k, 0].astype(np.float64)
        near = np.hypot(xx - row["xc"], yy - row["yc"]) < 6
        w = np.where(near, img, 0.0)
        assert (w * xx).sum() / w.sum() == pytest.approx(row["xc"], abs=0.05)
        assert (w * yy).sum() / w.sum() == pytest.approx(row["yc"], abs=0.05)


def test_cutout_origin_convention():
    x0, y0 = stamps.cutout_origin([31.5, 31.99, 32.01, 100.0], [31.5, 31.49, 31.51, 0.2], 64)
    assert x0.tolist() == [0, 0, 1, 69] and y0.tolist() == [0, 0, 0, -31]
    x0, _ = stamps.cutout_origin([10.4, 10.6], [0, 0], 5)  # odd size: centred on the rounded pixel
    assert x0.tolist() == [8, 9]


def test_cutouts_round_trip(field, tmp_path):
    cs = stamps.extract_cutouts(field["mosaics"], field["catalog"], SIZE, progress=False)
    path = tmp_path / "cutouts" / "blend.fits"
    stamps.write_cutouts(path, cs, PROV)
    assert [p.name for p in path.parent.iterdir()] == ["blend.fits"]  # atomic: no temporary left behind
    back = stamps.read_cutouts(path)
    np.testing.assert_array_equal(back.cube, cs.cube)
    assert back.bands == cs.bands and back.zeropoints == cs.zeropoints and back.summary == cs.summary
    assert back.pixel_scale == pytest.approx(cs.pixel_scale) and back.bunit == "electrons/s"
    pd.testing.assert_frame_equal(back.table, cs.table, check_dtype=False)
    assert sorted(back.rejected["id"]) == sorted(cs.rejected["id"])
    assert read_provenance(path)["config_hash"] == "cafe01" and read_provenance(path)["seed"] == 11
    with pytest.raises(PipelineError, match="not found"):
        stamps.read_cutouts(tmp_path / "missing.fits")
    (tmp_path / "junk.fits").write_text("not fits")
    with pytest.raises(PipelineError, match="not a readable"):
        stamps.read_cutouts(tmp_path / "junk.fits")


def test_nan_stamps_are_refused_naming_the_file_and_the_stamps(field, tmp_path):
    cs = stamps.extract_cutouts(field["mosaics"], field["catalog"], SIZE, progress=False)
    assert cs.n >= 3
    cs.cube[1, 0, 3, 3] = np.nan
    cs.cube[2, -1, 0, 0] = np.inf
    path = tmp_path / "nan.fits"
    stamps.write_cutouts(path, cs, PROV)
    with pytest.raises(PipelineError, match=rf"{path}: 2 of {cs.n} stamps have NaN or infinite pixels \(stamps 1, 2\)"):
        stamps.read_cutouts(path)
    with pytest.raises(PipelineError, match=r"AsinhScaling.fit: 2 of .* \(stamps 1, 2\)"):
        scaling_mod.AsinhScaling.fit(cs.cube)


def test_cutout_errors(field):
    mos, cat = field["mosaics"], field["catalog"]
    with pytest.raises(PipelineError, match="empty"):
        stamps.extract_cutouts(mos, cat.iloc[:0], SIZE)
    with pytest.raises(PipelineError, match="larger than the mosaic"):
        stamps.extract_cutouts(mos, cat, NPIX + 1)
    with pytest.raises(PipelineError, match="no mosaic"):
        stamps.extract_cutouts({}, cat, SIZE)
    other = mosaic(mos["F775W"].data, "F160W", 25.9, make_wcs(rotation_deg=0.5))
    with pytest.raises(PipelineError, match="one pixel grid"):
        stamps.extract_cutouts({"F775W": mos["F775W"], "F160W": other}, cat, SIZE)


# ---------------------------------------------------------------------------------------------- scaling
def test_asinh_scaling_is_invertible_and_monotonic():
    rng = np.random.default_rng(2)
    sigma = 0.01
    cube = rng.normal(0, sigma, (40, 2, 32, 32))
    yy, xx = np.mgrid[:32, :32]
    cube[:, :, :, :] += 5.0 * np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 8.0)
    cube[:, 1] *= 10.0
    scaling = scaling_mod.AsinhScaling.fit(cube.astype(np.float32))
    soft = np.asarray(scaling.softening)
    assert soft.shape == (2,)
    assert soft[0] == pytest.approx(scaling_mod.SOFTENING_NSIGMA * sigma, rel=0.05)     # from the noise level
    assert soft[1] == pytest.approx(scaling_mod.SOFTENING_NSIGMA * 10 * sigma, rel=0.05)
    for dtype in (np.float64, np.float32):
        x = cube.astype(dtype)
        y = scaling.forward(x)
        assert y.dtype == dtype and y.max() <= 1.0 + 1e-6 and y.min() >= -1.0
        assert y.max() == pytest.approx(1.0, abs=1e-6)
        back = scaling.inverse(y)
        np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5 * soft.min())
    # strictly increasing and odd
    single = scaling_mod.AsinhScaling(0.03, 5.0)
    grid = np.linspace(-10, 1000, 100001)
    assert (np.diff(single.forward(grid)) > 0).all()
    np.testing.assert_allclose(single.forward(-grid), -single.forward(grid))
    np.testing.assert_allclose(single.inverse(single.forward(grid)), grid, rtol=1e-10, atol=1e-12)
    assert scaling_mod.AsinhScaling.from_dict(scaling.to_dict()) == scaling
    assert scaling_mod.AsinhScaling.from_dict(single.to_dict()) == single
    with pytest.raises(PipelineError, match="> 0"):
        scaling_mod.AsinhScaling(0.0, 1.0)
    with pytest.raises(PipelineError, match="NaN"):
        scaling_mod.AsinhScaling.fit(np.full((2, 1, 4, 4), np.nan))
