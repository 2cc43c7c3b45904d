"""Blends and the isolated control sample (workflow_scripts.studies.hemmati22.blends) against GalSim galaxies of known geometry.

Cutouts hold one PSF-convolved GalSim galaxy each, at a known sub-pixel position (xc, yc) near the centre, with a
known flux and orientation; a second band is the first times 0.5 (so every band must get the same transform).
"""

from __future__ import annotations

import math

import galsim
import numpy as np
import pandas as pd
import pytest

from workflow_scripts.studies.hemmati22 import blends as B
from workflow_scripts.imaging.stamps import CutoutSet
from workflow_scripts.imaging.degrade import RebinGeometry, lowres_to_hires
from workflow_scripts.errors import PipelineError
from workflow_scripts.io import provenance, read_provenance

SCALE = 0.06
SIZE = 64
CENTRE = (SIZE - 1) / 2
PSF = galsim.Moffat(beta=3.0, fwhm=0.09)
POS_TOLERANCE = 0.3      # brief: light-weighted centres within 0.3 px of the truth
FLUX_TOLERANCE = 0.01    # brief: flux conserved within 1 %
ZPS = [25.678, 24.867]


def galaxy(flux: float, hlr: float, q: float, beta_deg: float, n: float = 1.0) -> galsim.GSObject:
    prof = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux).shear(q=q, beta=beta_deg * galsim.degrees)
    return galsim.Convolve(prof, PSF)


def draw(prof: galsim.GSObject, xc: float, yc: float) -> np.ndarray:
    return prof.drawImage(nx=SIZE, ny=SIZE, scale=SCALE, offset=(xc - CENTRE, yc - CENTRE)).array


def halfmax_diameter(prof: galsim.GSObject) -> float:
    """FWHM (arcsec) as the equivalent-circle diameter of the area above half maximum of the pixel-convolved
    profile, finely sampled: the quantity measure_fwhm_halfmax estimates on the 0.06" pixels."""
    fine_scale = SCALE / 8
    img = galsim.Convolve(prof, galsim.Pixel(SCALE)).drawImage(scale=fine_scale, nx=320, ny=320,
                                                              method="no_pixel").array
    return 2.0 * math.sqrt((img >= 0.5 * img.max()).sum() * fine_scale**2 / math.pi)


def make_set(n: int = 6, seed: int = 0, with_fwhm: bool = True) -> tuple[CutoutSet, list[galsim.GSObject]]:
    rng = np.random.default_rng(seed)
    cube = np.zeros((n, 2, SIZE, SIZE), np.float32)
    rows, profs = [], []
    for k in range(n):
        flux = float(rng.uniform(20, 200))
        prof = galsim.Sersic(n=1.0, half_light_radius=float(rng.uniform(0.1, 0.2)), flux=flux)
        prof = prof.shear(q=float(rng.uniform(0.3, 0.7)), beta=float(rng.uniform(0, 180)) * galsim.degrees)
        prof = galsim.Convolve(prof, PSF)
        xc, yc = CENTRE + rng.uniform(-0.5, 0.5, 2)
        cube[k, 0] = draw(prof, xc, yc)
        cube[k, 1] = 0.5 * cube[k, 0]
        profs.append(prof)
        fwhm = halfmax_diameter(prof)
        rows.append({"id": 100 + k, "ra": 53.0, "dec": -27.8, "xc": xc, "yc": yc, "z": float(rng.uniform(0.2, 3)),
                     "flux_F775W": flux, "flux_F850LP": 0.5 * flux, "mag_F775W": ZPS[0] - 2.5 * math.log10(flux),
                     "mag_F850LP": ZPS[1] - 2.5 * math.log10(0.5 * flux), "fwhm": fwhm if with_fwhm else np.nan})
    table = pd.DataFrame(rows)
    return CutoutSet(cube=cube, bands=["F775W", "F850LP"], table=table, pixel_scale=SCALE, zeropoints=ZPS), profs


def centroid(img: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    return float((img * xx).sum() / img.sum()), float((img * yy).sum() / img.sum())


def position_angle(img: np.ndarray) -> float:
    """Position angle (deg, counter-clockwise from +x, in [0, 180)) from the second moments."""
    x0, y0 = centroid(img)
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    w = img / img.sum()
    mxx, myy, mxy = (w * (xx - x0) ** 2).sum(), (w * (yy - y0) ** 2).sum(), (w * (xx - x0) * (yy - y0)).sum()
    return math.degrees(0.5 * math.atan2(2 * mxy, mxx - myy)) % 180.0


def angle_diff(a: float, b: float) -> float:
    return (a - b + 90.0) % 180.0 - 90.0


# ------------------------------------------------------------------------------------------- transforms
def test_rotation_turns_the_position_angle():
    prof = galaxy(100.0, 0.3, 0.35, 20.0)
    img = draw(prof, 31.7, 31.2)[None]
    pa0 = position_angle(img[0])
    assert pa0 == pytest.approx(20.0, abs=1.0)
    for angle in (90.0, 30.0, 137.0):
        out = B.transform_stamp(img, angle, (31.7, 31.2), (31.7, 31.2))[0]
        assert angle_diff(position_angle(out), pa0 + angle) == pytest.approx(0.0, abs=1.0)
        assert centroid(out) == pytest.approx((31.7, 31.2), abs=0.05)
        assert out.sum() == pytest.approx(img.sum(), rel=FLUX_TOLERANCE)


def test_transform_matches_galsim_rendering():
    """Rotating + moving the stamp gives the image GalSim draws of the rotated, moved galaxy."""
    prof = galaxy(100.0, 0.2, 0.4, 10.0)
    img = draw(prof, 31.3, 31.9)
    out = B.transform_stamp(img, 57.0, (31.3, 31.9), (40.2, 22.6))[0]
    truth = prof.rotate(57.0 * galsim.degrees).drawImage(nx=SIZE, ny=SIZE, scale=SCALE,
                                                         offset=(40.2 - CENTRE, 22.6 - CENTRE)).array
    assert np.abs(out - truth).max() < 0.03 * truth.max()
    assert out.sum() == pytest.approx(truth.sum(), rel=FLUX_TOLERANCE)


# ------------------------------------------------------------------------------------------------ blends
def test_blend_positions_and_flux_match_the_truth_table():
    cs, _ = make_set()
    bs = B.make_blends(cs, None, 40, np.random.default_rng(1), keep_components=True, progress=False)
    t = bs.truth
    assert bs.cube.shape == (40, 2, SIZE, SIZE) and bs.components.shape == (40, 2, 2, SIZE, SIZE)
    np.testing.assert_allclose(bs.cube, bs.components.sum(axis=1), rtol=1e-6, atol=1e-7)
    worst_pos, worst_flux = 0.0, 0.0
    for k, row in t.iterrows():
        for s in (1, 2):
            cx, cy = centroid(bs.components[k, s - 1, 0])
            worst_pos = max(worst_pos, abs(cx - row[f"x_{s}"]), abs(cy - row[f"y_{s}"]))
        expected = cs.cube[row["idx_1"], 0].sum() + cs.cube[row["idx_2"], 0].sum()
        worst_flux = max(worst_flux, abs(bs.cube[k, 0].sum() / expected - 1))
    print(f"blends: worst centre error {worst_pos:.3f} px, worst flux error {worst_flux:.4f}")
    assert worst_pos < POS_TOLERANCE
    assert worst_flux < FLUX_TOLERANCE
    # every band got the same transform
    np.testing.assert_allclose(bs.cube[:, 1], 0.5 * bs.cube[:, 0], rtol=1e-5, atol=1e-6)


def test_truth_table_columns():
    cs, _ = make_set()
    bs = B.make_blends(cs, None, 200, np.random.default_rng(2), max_offset_px=12.0, min_sep_px=4.0, progress=False)
    t = bs.truth
    assert (t["id_1"] != t["id_2"]).all() and (t["idx_1"] != t["idx_2"]).all()
    assert (t[["dx", "dy"]].abs() <= 12.0).all().all() and (np.hypot(t["dx"], t["dy"]) >= 4.0).all()
    np.testing.assert_allclose(t["x_2"] - t["x_1"], t["dx"])
    np.testing.assert_allclose(t["x_1"], CENTRE) and np.testing.assert_allclose(t["y_1"], CENTRE)
    # lo-res positions map back to the hi-res ones
    for s in (1, 2):
        xb, yb = lowres_to_hires(t[f"xlo_{s}"], t[f"ylo_{s}"])
        np.testing.assert_allclose(xb, t[f"x_{s}"], atol=1e-9)
        np.testing.assert_allclose(yb, t[f"y_{s}"], atol=1e-9)
    np.testing.assert_allclose(t["xlo_1"], 10.0)
    tab = cs.table.set_index("id")
    f1, f2 = tab.loc[t["id_1"], "flux_F775W"].to_numpy(), tab.loc[t["id_2"], "flux_F775W"].to_numpy()
    np.testing.assert_allclose(t["flux_F775W_1"], f1) and np.testing.assert_allclose(t["flux_F850LP_2"], 0.5 * f2)
    np.testing.assert_allclose(t["flux_ratio"], np.minimum(f1, f2) / np.maximum(f1, f2))
    assert (t["flux_ratio"] <= 1).all()
    np.testing.assert_allclose(t["dmag"], np.abs(2.5 * np.log10(f1 / f2)), atol=1e-9)
    np.testing.assert_allclose(t["dz"], np.abs(t["z_1"] - t["z_2"]))
    np.testing.assert_allclose(t["fwhm_sum"], t["fwhm_1"] + t["fwhm_2"])
    np.testing.assert_allclose(t["separation_arcsec"], np.hypot(t["dx"], t["dy"]) * SCALE)
    np.testing.assert_allclose(t["sep_over_fwhm_sum"], t["separation_arcsec"] / t["fwhm_sum"])
    assert (t["fwhm_source_1"] == "catalog").all()
    assert ((t["rot_1"] >= 0) & (t["rot_1"] < 180)).all() and t["rot_1"].std() > 40
    assert bs.ref_band == "F775W"


def test_same_seed_same_blends_and_no_self_pairs():
    cs, _ = make_set(n=3)
    a = B.make_blends(cs, None, 300, np.random.default_rng(3), progress=False)
    b = B.make_blends(cs, None, 300, np.random.default_rng(3), progress=False)
    c = B.make_blends(cs, None, 300, np.random.default_rng(4), progress=False)
    np.testing.assert_array_equal(a.cube, b.cube)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not np.array_equal(a.cube, c.cube)
    assert (a.truth["idx_1"] != a.truth["idx_2"]).all()
    pairs = set(zip(a.truth["idx_1"], a.truth["idx_2"]))
    assert len(pairs) == 6  # all ordered pairs of 3 galaxies occur, none with itself


def test_measured_fwhm_when_the_catalogue_has_none():
    cs, profs = make_set(with_fwhm=False)
    bs = B.make_blends(cs, None, 10, np.random.default_rng(5), progress=False)
    assert (bs.truth["fwhm_source_1"] == "measured").all()
    true_fwhm = {100 + k: halfmax_diameter(p) for k, p in enumerate(profs)}
    for _, row in bs.truth.iterrows():
        assert row["fwhm_1"] == pytest.approx(true_fwhm[row["id_1"]], rel=0.1)


def test_isolated_control_sample():
    cs, _ = make_set()
    iso = B.make_isolated(cs, None, 6, np.random.default_rng(6), progress=False)
    t = iso.truth
    assert iso.kind == "isolated" and iso.cube.shape == (6, 2, SIZE, SIZE)
    assert sorted(t["idx"]) == list(range(6))  # without replacement
    for k, row in t.iterrows():
        assert centroid(iso.cube[k, 0]) == pytest.approx((row["x"], row["y"]), abs=POS_TOLERANCE)
        assert iso.cube[k, 0].sum() == pytest.approx(cs.cube[row["idx"], 0].sum(), rel=FLUX_TOLERANCE)
        assert row["flux_F775W"] == cs.table.loc[row["idx"], "flux_F775W"]
    np.testing.assert_allclose(lowres_to_hires(t["xlo"], t["ylo"])[0], t["x"])
    more = B.make_isolated(cs, None, 15, np.random.default_rng(6), progress=False)
    assert np.bincount(more.truth["idx"]).max() <= 3


def test_blends_from_a_bare_cube():
    cs, _ = make_set()
    bs = B.make_blends(cs.cube[:, :1], cs.table, 5, np.random.default_rng(7), bands=["F775W"], pixel_scale=SCALE,
                       zeropoints=ZPS[:1], geometry=RebinGeometry(64, 21, 3), progress=False)
    assert bs.cube.shape == (5, 1, SIZE, SIZE) and bs.bands == ["F775W"]


def test_blend_file_round_trip(tmp_path):
    cs, _ = make_set()
    bs = B.make_blends(cs, None, 8, np.random.default_rng(8), keep_components=True, progress=False)
    path = tmp_path / "blends.fits"
    B.write_blends(path, bs, provenance("beef", 9, "embedded"))
    back = B.read_blends(path)
    np.testing.assert_array_equal(back.cube, bs.cube)
    np.testing.assert_array_equal(back.components, bs.components)
    pd.testing.assert_frame_equal(back.truth, bs.truth, check_dtype=False)
    assert back.bands == bs.bands and back.zeropoints == bs.zeropoints and back.geometry == bs.geometry
    assert back.kind == "blend" and back.ref_band == "F775W"
    assert read_provenance(path)["seed"] == 9
    iso = B.make_isolated(cs, None, 3, np.random.default_rng(8), progress=False)
    B.write_blends(tmp_path / "iso.fits", iso, provenance("beef", 9, "embedded"))
    back = B.read_blends(tmp_path / "iso.fits")
    assert back.components is None and back.kind == "isolated"
    with pytest.raises(PipelineError, match="not found"):
        B.read_blends(tmp_path / "nope.fits")
    bs.cube[5, 0, 10, 10] = np.nan
    B.write_blends(tmp_path / "nan.fits", bs, provenance("beef", 9, "embedded"))
    with pytest.raises(PipelineError, match=r"nan\.fits: 1 of 8 stamps have NaN or infinite pixels \(stamps 5\)"):
        B.read_blends(tmp_path / "nan.fits")


def test_blend_errors():
    cs, _ = make_set(n=2)
    rng = np.random.default_rng(0)
    one = CutoutSet(cube=cs.cube[:1], bands=cs.bands, table=cs.table.iloc[:1], pixel_scale=SCALE, zeropoints=ZPS)
    with pytest.raises(PipelineError, match="at least 2"):
        B.make_blends(one, None, 3, rng)
    with pytest.raises(PipelineError, match="cannot be reached"):
        B.make_blends(cs, None, 3, rng, max_offset_px=2.0, min_sep_px=3.0)
    with pytest.raises(PipelineError, match=">= 1"):
        B.make_blends(cs, None, 0, rng)
    with pytest.raises(PipelineError, match="reference band"):
        B.make_blends(cs, None, 3, rng, ref_band="F160W")
    with pytest.raises(PipelineError, match="pixel_scale"):
        B.make_blends(cs.cube, cs.table, 3, rng)
    bad = cs.cube.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(PipelineError, match="NaN"):
        B.make_blends(bad, cs.table, 3, rng, pixel_scale=SCALE, bands=cs.bands)
