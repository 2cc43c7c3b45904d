"""The embedded survey simulator, checked against its own truth on small fields (seconds each)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from types import SimpleNamespace

import galsim
import numpy as np
import pandas as pd
import pytest
from photutils.aperture import CircularAperture, aperture_photometry
from scipy import ndimage
from scipy.optimize import minimize_scalar

from workflow_scripts import io
from workflow_scripts.config import load_config
from workflow_scripts.errors import ConfigError
from workflow_scripts.data.simulate import (PSF_OVERSAMPLING, field_seed, measured_fwhm, simulate_field,
                                            truth_psf_path, write_simulated_field)
from workflow_scripts.data.simulate.field import STAMP_HLR_FACTOR
from workflow_scripts.data.simulate.population import (COUNTS_AT_REF, COUNTS_REF_MAG, ClumpConfig, bulge_disk_parts,
                                                       draw_knots, draw_magnitudes, surface_density)
from workflow_scripts.data.simulate.psf import PSF_MOFFAT_BETA, PSF_TRUNC_FWHM
from workflow_scripts.data.simulate.rare import (MERGER_CLUMP_FRACTION, MERGER_SEPARATION_ARCSEC, MERGER_TAIL_FRACTION,
                                                 NucleusConfig, nucleus_shares)
from workflow_scripts.data.simulate.seds import ColourGrid, TEMPLATES
from workflow_scripts.surveys import Survey, get_survey

from .conftest import step_params

PROV = io.provenance("cafef00d", 7, "embedded")


def small_survey(name: str, depth_offset: float = 0.0, bands: tuple[str, ...] | None = None, **embedded) -> Survey:
    """A survey from config.yaml with its embedded sizes overridden (validated like any config)."""
    cfg = load_config()
    cfg["surveys"][name]["embedded"].update(embedded)
    if bands:
        cfg["surveys"][name]["bands"] = {b: cfg["surveys"][name]["bands"][b] for b in bands}
        for study in cfg.get("studies", []):   # keep the (unused here) study sections valid
            sec = cfg.get(study) or {}
            if sec.get("survey") == name and sec.get("band") not in (None, *bands):
                sec["band"] = bands[0]
    for spec in cfg["surveys"][name]["bands"].values():
        spec["depth"] += depth_offset
    from workflow_scripts.config import validate_config

    validate_config(cfg)
    return get_survey(cfg, name)


@pytest.fixture(scope="module")
def goodss():
    # bright stars for high-S/N photometry; a realistic galaxy population to mag 27
    survey = small_survey("goodss", npix=512, n_stars=16, star_mag_range=[18.0, 20.5])
    return survey, simulate_field(survey, "goodss", seed=11, progress=False)


@pytest.fixture(scope="module")
def goodss_deep():
    # 4 mag deeper than GOODS-S (noise 40x lower) so that many galaxies reach S/N > 200 in a total aperture;
    # a wide field of bright galaxies in two bands keeps it fast
    survey = small_survey("goodss", depth_offset=4.0, bands=("F435W", "F160W"), npix=1536, n_stars=8,
                          mag_limit=24.5)
    return survey, simulate_field(survey, "goodss", seed=12, progress=False)


@pytest.fixture(scope="module")
def ceers():
    survey = small_survey("ceers", npix=512, n_stars=8, n_ero=12, n_merger=6)
    return survey, simulate_field(survey, "nircam1", seed=5, progress=False)


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_identical_different_seed_differs():
    survey = small_survey("xdf", npix=256, n_stars=5, n_merger=2)
    a = simulate_field(survey, "hudf", seed=3, progress=False)
    b = simulate_field(survey, "hudf", seed=3, progress=False)
    c = simulate_field(survey, "hudf", seed=4, progress=False)
    for band in survey.band_names:
        assert a.images[band].dtype == np.float32
        assert np.array_equal(a.images[band], b.images[band])
        assert not np.array_equal(a.images[band], c.images[band])
        assert np.array_equal(a.psfs[band], b.psfs[band])
    pd.testing.assert_frame_equal(a.catalog, b.catalog)
    assert len(a.catalog) != len(c.catalog) or not np.allclose(a.catalog["x"], c.catalog["x"])


def test_field_seed_is_a_stable_hash():
    expected = int.from_bytes(hashlib.sha256(b"20221/goodss/goodss").digest()[:4], "little")
    assert field_seed(20221, "goodss", "goodss") == expected
    assert field_seed(20221, "ceers", "nircam1") != field_seed(20221, "ceers", "nircam2")


def test_unknown_field_is_a_config_error():
    with pytest.raises(ConfigError, match="not a field"):
        simulate_field(small_survey("xdf", npix=128), "nope", seed=1, progress=False)


# ------------------------------------------------------------------------------------------ photometry
def _aperture_radius_px(survey: Survey, row: pd.Series) -> float:
    """Radius holding all the drawn light: the stamp radius used by the renderer (galaxy extent + PSF reach)."""
    fwhm = max(b.psf_fwhm for b in survey.bands.values())
    extent = STAMP_HLR_FACTOR * row.truth_hlr / np.sqrt(row.truth_q)
    return (extent + PSF_TRUNC_FWHM * fwhm) / survey.pixel_scale


def _isolated(cat: pd.DataFrame, i: int, radius: float, survey: Survey, band: str) -> bool:
    row = cat.loc[i]
    others = cat.drop(index=i)
    # neighbours fainter than 0.2 % of the target cannot bias it by more than 0.2 %
    others = others[others[f"truth_flux_{band}"] > 2e-3 * row[f"truth_flux_{band}"]]
    reach = np.array([_aperture_radius_px(survey, r) for _, r in others.iterrows()])
    dist = np.hypot(others.x - row.x, others.y - row.y)
    return bool(np.all(dist > radius + reach))


@pytest.mark.parametrize("kind, fixture", [("star", "goodss"), ("normal", "goodss_deep"), ("star", "goodss_deep")])
def test_aperture_photometry_recovers_truth_flux(kind, fixture, request):
    """Total-aperture photometry of bright isolated objects returns the truth flux (all light is drawn)."""
    survey, sim = request.getfixturevalue(fixture)
    cat = sim.catalog
    npix = sim.images[survey.band_names[0]].shape[0]
    checked = 0
    for i in cat.index[cat.label == kind]:
        row = cat.loc[i]
        r = _aperture_radius_px(survey, row)
        if min(row.x, row.y) < r or max(row.x, row.y) > npix - 1 - r:
            continue
        for band in survey.band_names:
            truth = row[f"truth_flux_{band}"]
            noise = survey.pixel_noise(band) * np.sqrt(np.pi) * r
            if truth / noise < 200 or not _isolated(cat, i, r, survey, band):
                continue
            flux = aperture_photometry(sim.images[band], CircularAperture((row.x, row.y), r),
                                       method="exact")["aperture_sum"][0]
            assert flux == pytest.approx(truth, rel=0.02), (kind, row.id, band)
            checked += 1
    assert checked >= 10, f"only {checked} bright isolated {kind} measurements"


# ------------------------------------------------------------------------------------------------- WCS
def test_wcs_round_trip_through_written_mosaic(goodss, tmp_path):
    survey, sim = goodss
    write_simulated_field(sim, survey, tmp_path, "goodss", PROV)
    cat = io.read_catalog(io.catalog_path(tmp_path, "goodss", "goodss"))
    for band in ("F435W", "F160W"):
        mosaic = io.read_mosaic(io.band_path(tmp_path, "goodss", "goodss", band))
        x, y = mosaic.wcs.wcs_world2pix(cat["ra"].to_numpy(), cat["dec"].to_numpy(), 0)
        assert np.max(np.abs(x - cat["x"])) < 0.05
        assert np.max(np.abs(y - cat["y"])) < 0.05
        assert mosaic.pixel_scale == pytest.approx(survey.pixel_scale, rel=1e-9)
    # near the real GOODS-S
    assert cat["ra"].mean() == pytest.approx(53.12, abs=0.05)
    assert cat["dec"].mean() == pytest.approx(-27.80, abs=0.05)


# ----------------------------------------------------------------------------------------------- depth
def test_empty_aperture_depth_matches_config(goodss):
    survey, sim = goodss
    cat = sim.catalog
    npix = sim.images[survey.band_names[0]].shape[0]
    yy, xx = np.mgrid[:npix, :npix]
    mask = np.zeros((npix, npix), dtype=bool)
    for _, row in cat.iterrows():
        r = _aperture_radius_px(survey, row)
        mask |= (xx - row.x) ** 2 + (yy - row.y) ** 2 < r**2
    radius = 0.5 * survey.depth_aperture / survey.pixel_scale
    rng = np.random.default_rng(0)
    cand = rng.uniform(radius + 1, npix - radius - 2, size=(20000, 2))
    free = ~mask[np.round(cand[:, 1]).astype(int), np.round(cand[:, 0]).astype(int)]
    pos = cand[free][:3000]
    assert len(pos) >= 1000
    # exclude apertures that touch a masked pixel
    pos = np.array([p for p in pos if not mask[int(p[1] - radius - 1):int(p[1] + radius + 2),
                                                int(p[0] - radius - 1):int(p[0] + radius + 2)].any()])
    assert len(pos) >= 500
    for band in survey.band_names:
        sums = aperture_photometry(sim.images[band], CircularAperture(pos, radius), method="center")["aperture_sum"]
        depth = survey.band(band).mag(5.0 * float(np.std(np.asarray(sums))))
        assert depth == pytest.approx(survey.band(band).depth, abs=0.2), band
        assert np.all(sim.rms[band] == np.float32(survey.pixel_noise(band)))


# ------------------------------------------------------------------------------------------------- PSF
@pytest.mark.parametrize("name", ["goodss", "ceers", "xdf"])
def test_optical_psf_fwhm_is_configured(name):
    survey = small_survey(name, npix=128)
    for band in survey.band_names:
        assert measured_fwhm(survey, band) == pytest.approx(survey.band(band).psf_fwhm, rel=0.005)


def _fit_fwhm(image: np.ndarray, scale: float, guess: float) -> float:
    """FWHM of a Moffat(beta)*pixel model fitted to a centred PSF image (least squares over the FWHM)."""
    n = image.shape[0]

    def cost(fwhm: float) -> float:
        model = galsim.Convolve(galsim.DeltaFunction(), galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=fwhm))
        arr = model.drawImage(nx=n, ny=n, scale=scale, method="fft").array
        return float(np.sum((arr / arr.sum() - image) ** 2))

    return minimize_scalar(cost, bounds=(0.5 * guess, 2.0 * guess), method="bounded",
                           options={"xatol": 1e-5 * guess}).x


@pytest.mark.parametrize("name", ["goodss", "ceers"])
def test_written_true_psf(name, tmp_path):
    survey = small_survey(name, npix=128, n_stars=2, mag_limit=22.0, n_ero=0, n_merger=0)
    fld = survey.fields[0]
    sim = simulate_field(survey, fld, seed=2, progress=False)
    write_simulated_field(sim, survey, tmp_path, fld, PROV)
    for band in survey.band_names:
        native = io._open_image(truth_psf_path(tmp_path, name, fld, band))[0]
        over, hdr = io._open_image(truth_psf_path(tmp_path, name, fld, band, oversampled=True))
        assert native.shape[0] % 2 == 1 and native.shape[0] == native.shape[1]
        assert native.sum() == pytest.approx(1.0, abs=1e-4)
        assert np.unravel_index(np.argmax(native), native.shape) == (native.shape[0] // 2,) * 2
        fwhm = _fit_fwhm(native.astype(float), survey.pixel_scale, survey.band(band).psf_fwhm)
        assert fwhm == pytest.approx(survey.band(band).psf_fwhm, rel=0.02), band
        # the oversampled effective PSF reproduces the native one at native pixel centres
        assert hdr["OVERSAMP"] == PSF_OVERSAMPLING
        assert over.shape[0] == native.shape[0] * PSF_OVERSAMPLING + 1
        c = over.shape[0] // 2
        k = native.shape[0] // 2
        sub = over[c - k * PSF_OVERSAMPLING:c + k * PSF_OVERSAMPLING + 1:PSF_OVERSAMPLING,
                   c - k * PSF_OVERSAMPLING:c + k * PSF_OVERSAMPLING + 1:PSF_OVERSAMPLING]
        assert np.max(np.abs(sub - native)) < 2e-3 * native.max()
        assert io.read_provenance(truth_psf_path(tmp_path, name, fld, band))["config_hash"] == "cafef00d"


def test_stars_in_mosaic_match_true_psf(goodss):
    """A bright star in the image, noise aside, is the true PSF shifted to its position."""
    survey, sim = goodss
    cat = sim.catalog
    star = cat[cat.star].sort_values("truth_flux_F160W").iloc[-1]
    band = "F160W"
    psf = sim.psfs[band]
    k = psf.shape[0] // 2
    ix, iy = int(round(star.x)), int(round(star.y))
    cut = sim.images[band][iy - k:iy + k + 1, ix - k:ix + k + 1]
    model = galsim.Convolve(galsim.DeltaFunction(flux=star.truth_flux_F160W),
                            galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=survey.band(band).psf_fwhm,
                                          trunc=PSF_TRUNC_FWHM * survey.band(band).psf_fwhm))
    arr = model.drawImage(nx=2 * k + 1, ny=2 * k + 1, scale=survey.pixel_scale, method="fft",
                          offset=(star.x - ix, star.y - iy)).array
    resid = (cut - arr) / survey.pixel_noise(band)
    assert np.std(resid) < 1.3


# ----------------------------------------------------------------------------------------- populations
def test_ceers_eros_have_required_colours_and_labels(ceers):
    survey, sim = ceers
    cat = sim.catalog
    ero = cat[cat.label == "ero"]
    assert len(ero) == 12
    m = {b: ero[f"truth_mag_{b}"] for b in ("F150W", "F200W", "F277W", "F444W")}
    assert np.all(np.abs(m["F150W"] - m["F200W"]) < 0.2)
    assert np.all(m["F277W"] - m["F444W"] > 1.5)
    assert np.all(m["F444W"] < 28.0)
    assert np.all((ero.z > 5) & (ero.z < 7))
    assert np.all(ero.truth_hlr < 0.05)
    assert not ero.star.any()
    assert set(cat.label) == {"normal", "star", "ero", "merger"}


def test_ceers_mergers_come_in_labelled_pairs(ceers):
    survey, sim = ceers
    cat = sim.catalog
    mer = cat[cat.label == "merger"]
    assert len(mer) == 12
    assert (cat.loc[cat.label != "merger", "pair_id"] == -1).all()
    for pid, pair in mer.groupby("pair_id"):
        assert len(pair) == 2
        assert pair.z.nunique() == 1
        sep = np.hypot(*np.diff(pair[["x", "y"]].to_numpy(), axis=0)[0]) * survey.pixel_scale
        lo, hi = MERGER_SEPARATION_ARCSEC
        assert lo - 1e-9 <= sep <= hi + 1e-9
        assert (pair.truth_tail_frac > 0).all()


def test_a_dusty_nucleus_is_redder_than_its_host_by_the_drawn_excess():
    waves = [1150.0, 1500.0, 2000.0, 2770.0, 3560.0, 4420.0]
    share, excess = np.array([0.2, 0.3]), np.array([1.0, 2.5])
    d = nucleus_shares(share, excess, waves, 4420.0)
    assert np.allclose(d[:, -1], share)                        # the reference band's share is the drawn one
    assert (np.diff(d, axis=1) > 0).all()                     # rising to the red
    # nucleus - host colour between the bluest band and the reference: the drawn excess
    colour = -2.5 * np.log10((d[:, 0] / d[:, -1]) / ((1 - d[:, 0]) / (1 - d[:, -1])))
    assert np.allclose(colour, excess)
    # between F200W and F444W a share of it, in proportion to 1/wavelength
    w = (1 / 2000 - 1 / 4420) / (1 / 1150 - 1 / 4420)
    colour_sw = -2.5 * np.log10((d[:, 2] / d[:, -1]) / ((1 - d[:, 2]) / (1 - d[:, -1])))
    assert np.allclose(colour_sw, w * excess)
    # a fixed blue end: the same bands get the same shares whether or not the bluest band is in the survey
    assert np.allclose(nucleus_shares(share, excess, waves[2:], 4420.0), d[:, 2:])
    with pytest.raises(ConfigError, match="merger_nucleus.share"):
        NucleusConfig.from_embedded({"merger_nucleus": {"share": [0.5, 1.0], "colour_excess": [1, 2],
                                                        "hlr_arcsec": 0.03}})
    assert NucleusConfig.from_embedded({"merger_nucleus": None}) is None


def test_dusty_nuclei_redden_the_centres_of_merger_members_and_keep_their_light():
    on = small_survey("ceers", npix=384, n_stars=2, n_ero=0, n_merger=3, mag_limit=24.0)
    off = small_survey("ceers", npix=384, n_stars=2, n_ero=0, n_merger=3, mag_limit=24.0, merger_nucleus=None)
    a = simulate_field(on, "nircam1", seed=9, progress=False)
    b = simulate_field(off, "nircam1", seed=9, progress=False)
    cat = a.catalog
    mer = cat.label == "merger"
    lo, hi = on.embedded["merger_nucleus"]["share"]
    assert ((cat.loc[mer, "truth_nucleus_frac"] >= lo) & (cat.loc[mer, "truth_nucleus_frac"] <= hi)).all()
    assert (cat.loc[~mer, "truth_nucleus_frac"] == 0).all() and (b.catalog["truth_nucleus_frac"] == 0).all()
    # the same objects and truth fluxes (the measured FWHM of a member, and so its catalogue error, may change)
    same = [c for c in cat.columns if c.startswith("truth_") and c != "truth_nucleus_frac"] + ["x", "y", "label"]
    pd.testing.assert_frame_equal(a.catalog[same], b.catalog[same])
    for band in ("F115W", "F444W"):     # over the whole field: light moved within the members, none added
        total = float((a.images[band].astype(np.float64) - b.images[band]).sum())
        assert abs(total) < 1e-3 * cat.loc[mer, f"truth_flux_{band}"].sum()
    # the centre (0.3" around each member, wider than either PSF) gains, the more so in the red band
    gain = {}
    for band in ("F115W", "F444W"):
        diff = a.images[band].astype(np.float64) - b.images[band]
        gain[band] = [diff[int(round(m.y)) - 10:int(round(m.y)) + 11, int(round(m.x)) - 10:int(round(m.x)) + 11].sum()
                      / m[f"truth_flux_{band}"] for _, m in cat[mer].iterrows()]
    assert (np.array(gain["F444W"]) > 0.03).all()
    assert (np.array(gain["F444W"]) > 2 * np.array(gain["F115W"])).all()


def test_eros_need_their_bands():
    survey = small_survey("goodss", npix=128, n_ero=2)
    with pytest.raises(ConfigError, match="F150W"):
        simulate_field(survey, "goodss", seed=1, progress=False)


def test_number_counts_and_colours():
    # the counts integral at the reference magnitude is the configured density per mag
    per_mag = surface_density(COUNTS_REF_MAG - 0.005, COUNTS_REF_MAG + 0.005) / 0.01
    assert per_mag == pytest.approx(COUNTS_AT_REF, rel=1e-3)
    mags = draw_magnitudes(np.random.default_rng(0), area_deg2=0.01, m_faint=27.0)
    assert len(mags) == pytest.approx(0.01 * surface_density(17.0, 27.0), rel=0.05)
    assert mags.max() < 27.0 and mags.min() >= 17.0
    # our numpy band integrals agree with GalSim's SED.calculateMagnitude (no IGM at z = 0.5)
    survey = small_survey("goodss", npix=128)
    grid = ColourGrid(survey, "F160W", templates=TEMPLATES[1:2], z_grid=np.array([0.4, 0.5, 0.6]))
    share = galsim.meta_data.share_dir
    sed = galsim.SED(f"{share}/SEDs/{TEMPLATES[1]}.sed", wave_type="Ang", flux_type="flambda").atRedshift(0.5)
    ref = sed.calculateMagnitude(galsim.Bandpass(f"{share}/bandpasses/WFC3_ir_F160W.dat", "nm").withZeropoint("AB"))
    for band in ("F435W", "F606W", "F125W"):
        bp = galsim.Bandpass(f"{share}/bandpasses/{survey.band(band).bandpass}.dat", "nm").withZeropoint("AB")
        colour = sed.calculateMagnitude(bp) - ref
        ours = -2.5 * np.log10(grid.ratio[0, 1, survey.band_names.index(band)])
        assert ours == pytest.approx(colour, abs=0.02), band


def test_high_redshift_galaxies_drop_out_of_blue_bands():
    survey = small_survey("goodss", npix=128)
    grid = colour_grid_for(survey)
    r = grid.flux_ratios(np.array([2.0, 2.0]), np.array([1.0, 4.5]))
    i435 = survey.band_names.index("F435W")
    assert r[1, i435] < 0.02 * r[0, i435]


def colour_grid_for(survey: Survey) -> ColourGrid:
    from workflow_scripts.data.simulate.field import colour_grid

    return colour_grid(survey, survey.embedded["mag_band"])


# -------------------------------------------------------------------------------------------- boundary
def test_boundary_files_read_back_with_provenance(ceers, tmp_path):
    survey, sim = ceers
    written = write_simulated_field(sim, survey, tmp_path, "nircam1", PROV)
    for band in survey.band_names:
        path = io.band_path(tmp_path, "ceers", "nircam1", band)
        assert written[band] == path
        mosaic = io.read_mosaic(path)
        assert np.array_equal(mosaic.data, sim.images[band])
        assert np.array_equal(mosaic.rms, sim.rms[band])
        assert mosaic.band == band
        assert mosaic.zeropoint == survey.band(band).zeropoint
        assert mosaic.header["TELESCOP"] == "JWST" and mosaic.header["BUNIT"] == survey.bunit
        prov = io.read_provenance(path)
        assert prov == {"pipeline_version": PROV["pipeline_version"], "config_hash": "cafef00d", "seed": 7,
                        "source": "embedded"}
        assert truth_psf_path(tmp_path, "ceers", "nircam1", band).exists()
        assert truth_psf_path(tmp_path, "ceers", "nircam1", band, oversampled=True).exists()
    cpath = io.catalog_path(tmp_path, "ceers", "nircam1")
    cat = io.read_catalog(cpath)
    pd.testing.assert_frame_equal(cat, sim.catalog, check_dtype=False)
    for col in ("id", "ra", "dec", "z", "fwhm", "star", "x", "y", "truth_hlr", "truth_bulge_frac",
                "truth_sersic_n", "truth_q", "truth_beta", "label", "pair_id"):
        assert col in cat.columns
    for band in survey.band_names:
        assert {f"flux_{band}", f"mag_{band}", f"truth_flux_{band}"} <= set(cat.columns)
    assert io.read_provenance(cpath)["config_hash"] == "cafef00d"
    assert io.read_provenance(cpath)["field_seed"] == sim.seed
    # the catalogue FWHM is at least the PSF's and the errors are honest
    assert (cat.fwhm >= 0.9 * survey.band("F444W").psf_fwhm).all()
    pull = (cat["flux_F444W"] - cat["truth_flux_F444W"]) / cat["fluxerr_F444W"]
    assert abs(pull.mean()) < 0.5 and 0.6 < pull.std() < 1.5


def test_step_adapter_writes_the_boundary(tmp_path):
    from workflow_scripts.steps.data import simulate as step

    cfg = load_config()
    cfg["surveys"]["xdf"]["embedded"].update(npix=128, n_stars=3)
    snake = SimpleNamespace(wildcards=SimpleNamespace(survey="xdf", field="hudf"),
                            params=step_params(cfg, "xdf", data_dir=str(tmp_path)), log=[], rule="simulate_xdf")
    step.main(snake, logging.getLogger("test"))
    seed = field_seed(cfg["seed"], "xdf", "hudf")
    for band in cfg["surveys"]["xdf"]["bands"]:
        assert io.read_provenance(io.band_path(tmp_path, "xdf", "hudf", band))["source"] == "embedded"
        assert io.read_mosaic(io.band_path(tmp_path, "xdf", "hudf", band)).header["SIMSEED"] == seed
    assert len(io.read_catalog(io.catalog_path(tmp_path, "xdf", "hudf"))) > 3


# --------------------------------------------------------------------------------------------- clumps
CLUMPS = {"fraction": [0.1, 0.4], "n_knots": [5, 20]}


def _clumps_absent(survey: Survey) -> Survey:
    """The same survey with no ``clumps`` key at all in its embedded block (the configuration before clumps)."""
    return dataclasses.replace(survey, embedded={k: v for k, v in survey.embedded.items() if k != "clumps"})


def _stamp_half_px(survey: Survey, row: pd.Series, band: str, extent_factor: float = 1.1) -> int:
    """Half side (px) of the renderer's stamp of a normal galaxy in ``band``, its extent scaled by
    ``extent_factor`` (the stamp grows when a knot falls beyond the extent)."""
    extent = STAMP_HLR_FACTOR * row.truth_hlr / np.sqrt(row.truth_q)
    return int(np.ceil((extent_factor * extent + PSF_TRUNC_FWHM * survey.band(band).psf_fwhm) / survey.pixel_scale)) + 2


@pytest.fixture(scope="module")
def clumpy_pair():
    """GOODS-S-like field with clumps on and the same field with them off (same seed), two bands."""
    # sparse enough that groups of overlapping galaxy stamps lie inside the field
    on = small_survey("goodss", bands=("F435W", "F160W"), npix=1024, n_stars=4, mag_limit=25.5, clumps=CLUMPS)
    off = small_survey("goodss", bands=("F435W", "F160W"), npix=1024, n_stars=4, mag_limit=25.5, clumps=None)
    return on, simulate_field(on, "goodss", seed=21, progress=False), simulate_field(off, "goodss", seed=21,
                                                                                      progress=False)


def test_clumps_off_is_the_configuration_without_clumps():
    """``clumps: null`` gives bit-identical images and catalogues to a block without the key (pre-clump runs),
    and the knot-free profile is exactly the former bulge + disk profile."""
    survey = small_survey("ceers", npix=256, n_stars=3, n_ero=2, n_merger=2, mag_limit=26.0, clumps=None)
    a = simulate_field(survey, "nircam1", seed=8, progress=False)
    b = simulate_field(_clumps_absent(survey), "nircam1", seed=8, progress=False)
    for band in survey.band_names:
        assert np.array_equal(a.images[band], b.images[band]), band
    pd.testing.assert_frame_equal(a.catalog, b.catalog)
    assert (a.catalog.truth_clump_frac == 0).all()
    # the profile without knots is the pre-clump formula, drawn bit for bit
    for hlr, bt, q, beta in [(0.3, 0.4, 0.6, 30.0), (0.2, 0.005, 0.3, 100.0), (0.5, 0.995, 0.9, 10.0)]:
        smooth, knots = bulge_disk_parts(hlr, bt, q, beta)
        assert len(knots) == 0 and smooth.flux == pytest.approx(1.0, abs=1e-15)
        parts = []
        if bt > 0.01:
            parts.append(galsim.DeVaucouleurs(half_light_radius=hlr, trunc=5.0 * hlr, flux=bt))
        if bt < 0.99:
            parts.append(galsim.Exponential(half_light_radius=hlr, flux=1.0 - bt))
        old = (parts[0] if len(parts) == 1 else galsim.Add(parts)).withFlux(1.0).shear(q=q, beta=beta * galsim.degrees)
        draw = dict(nx=64, ny=64, scale=0.06, method="no_pixel")
        assert np.array_equal(smooth.drawImage(**draw).array, old.drawImage(**draw).array)


def test_clumps_move_disk_light_without_touching_anything_else(clumpy_pair):
    survey, on, off = clumpy_pair
    c_on, c_off = on.catalog, off.catalog
    assert list(c_on.columns) == list(c_off.columns)
    clumpy = c_on.truth_clump_frac.to_numpy() > 0
    assert clumpy.sum() >= 20 and (c_off.truth_clump_frac == 0).all()
    # the same objects, positions, truth parameters and fluxes; only measured quantities of clumpy objects
    # (fwhm is measured on the rendered stamp, the catalogue error radius follows it) may differ
    measured = [c for c in c_on.columns if c == "fwhm" or c.split("_")[0] in ("flux", "fluxerr", "mag")]
    pd.testing.assert_frame_equal(c_on.drop(columns=measured + ["truth_clump_frac"]),
                                  c_off.drop(columns=measured + ["truth_clump_frac"]))
    pd.testing.assert_frame_equal(c_on.loc[~clumpy, measured], c_off.loc[~clumpy, measured])
    assert not np.array_equal(c_on.loc[clumpy, "fwhm"], c_off.loc[clumpy, "fwhm"])
    npix = on.images["F160W"].shape[0]
    rows = c_on[clumpy]
    for band in survey.band_names:
        # the noise is the same (it cancels); pixels change only on the stamps of galaxies with clumps
        diff = on.images[band].astype(np.float64) - off.images[band].astype(np.float64)
        near = np.zeros(diff.shape, dtype=bool)
        for _, row in rows.iterrows():
            h = _stamp_half_px(survey, row, band)
            ix, iy = int(round(row.x)), int(round(row.y))
            near[max(iy - h, 0):iy + h + 1, max(ix - h, 0):ix + h + 1] = True
        assert diff[~near].max() == 0 and diff[~near].min() == 0
        assert np.count_nonzero(diff) > 0
        # flux is moved, not added: over each group of overlapping stamps of clumpy galaxies that lies inside the
        # field, the difference integrates to ~0, and it is a real rearrangement of the knot light
        groups, n_groups = ndimage.label(near)
        checked = 0
        for g in range(1, n_groups + 1):
            region = groups == g
            ys, xs = np.nonzero(region)
            if xs.min() == 0 or ys.min() == 0 or xs.max() == npix - 1 or ys.max() == npix - 1:
                continue
            inside = region[np.rint(rows.y).astype(int), np.rint(rows.x).astype(int)]
            members = rows[inside]
            knot_flux = float((members[f"truth_flux_{band}"] * members.truth_clump_frac).sum())
            assert abs(diff[region].sum()) < 1e-4 * knot_flux, (g, band)
            if (members.truth_hlr > 2 * survey.band(band).psf_fwhm).any():
                assert np.abs(diff[region]).sum() > 0.3 * knot_flux, (g, band)
            checked += 1
        assert checked >= 5, band


def test_truth_clump_frac_follows_the_configured_range(clumpy_pair, ceers):
    survey, on, off = clumpy_pair
    lo, hi = CLUMPS["fraction"]
    cat = on.catalog
    tcf, bt = cat.truth_clump_frac.to_numpy(), cat.truth_bulge_frac.to_numpy()
    normal = (cat.label == "normal").to_numpy()
    both = normal & (bt > 0.01) & (bt < 0.99)       # bulge and disk: f (1 - B/T)
    assert both.sum() >= 20
    share = tcf[both] / (1.0 - bt[both])
    assert share.min() >= lo - 1e-12 and share.max() <= hi + 1e-12
    assert share.max() - share.min() > 0.5 * (hi - lo)    # the range is sampled, not a constant
    disk_only = normal & (bt <= 0.01)                # the bulge is dropped: the whole profile is the disk
    assert np.all((tcf[disk_only] >= lo - 1e-12) & (tcf[disk_only] <= hi + 1e-12))
    assert np.all(tcf[normal & (bt >= 0.99)] == 0)   # no disk, no clumps
    assert np.all(tcf[cat.star.to_numpy()] == 0)
    # CEERS (clumps from config.yaml): EROs and stars have none; merger bodies do, diluted by tail and tidal clump
    csurvey, csim = ceers
    clo, chi = csurvey.embedded["clumps"]["fraction"]
    cc = csim.catalog
    assert (cc.loc[cc.label.isin(["ero", "star"]), "truth_clump_frac"] == 0).all()
    mer = cc[(cc.label == "merger") & (cc.truth_bulge_frac > 0.01) & (cc.truth_bulge_frac < 0.99)]
    share = mer.truth_clump_frac / (1.0 - mer.truth_bulge_frac)
    assert len(mer) and (share > 0).all() and (share <= chi + 1e-12).all()
    assert (share >= clo * (1 - MERGER_TAIL_FRACTION[1]) * (1 - MERGER_CLUMP_FRACTION[1]) - 1e-12).all()


def test_clump_share_makes_that_share_of_galaxies_clumpy_and_leaves_their_knots_as_they_were():
    every = ClumpConfig(fraction=(0.1, 0.4), n_knots=(5, 20))
    some = ClumpConfig(fraction=(0.1, 0.4), n_knots=(5, 20), share=0.3)
    n = 4000
    full = draw_knots(np.random.default_rng(5), n, every)
    part = draw_knots(np.random.default_rng(5), n, some)
    clumpy = part.disk_frac > 0
    # binomial: within 4 sigma of the share
    assert abs(clumpy.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    # the clumpy galaxies keep exactly the knots they have with share 1; the others have none
    assert np.array_equal(part.disk_frac[clumpy], full.disk_frac[clumpy])
    assert (part.disk_frac[~clumpy] == 0).all()
    assert np.array_equal(part.n_knots, full.n_knots) and np.array_equal(part.seed, full.seed)
    # merger bodies ignore the share; share 1 uses the stream exactly as a block without the key
    forced = draw_knots(np.random.default_rng(5), n, some, all_clumpy=True)
    assert np.array_equal(forced.disk_frac, full.disk_frac)
    assert ClumpConfig.from_embedded({"clumps": {"fraction": [0.1, 0.4], "n_knots": [5, 20]}}) == every
    with pytest.raises(ConfigError, match="clumps.share"):
        ClumpConfig.from_embedded({"clumps": {"fraction": [0.1, 0.4], "n_knots": [5, 20], "share": 1.5}})


def test_clump_share_zero_leaves_normal_galaxies_smooth_and_mergers_clumpy():
    survey = small_survey("ceers", npix=256, n_stars=3, n_ero=2, n_merger=2, mag_limit=26.0,
                          clumps={"fraction": [0.05, 0.3], "n_knots": [5, 20], "share": 0.0})
    cat = simulate_field(survey, "nircam1", seed=8, progress=False).catalog
    assert (cat.loc[cat.label != "merger", "truth_clump_frac"] == 0).all()
    bodies = cat[(cat.label == "merger") & (cat.truth_bulge_frac < 0.99)]
    assert len(bodies) and (bodies.truth_clump_frac > 0).all()


def test_band_subset_gives_bit_identical_band_images():
    """A survey restricted to some of its bands (the one-band clump-free twin of the likelihood-ratio study) draws
    the same images, truth and catalogue in those bands."""
    full = small_survey("goodss", npix=256, n_stars=4, mag_limit=26.5, clumps=CLUMPS)
    part = small_survey("goodss", bands=("F814W", "F160W"), npix=256, n_stars=4, mag_limit=26.5, clumps=CLUMPS)
    a = simulate_field(full, "goodss", seed=31, progress=False)
    b = simulate_field(part, "goodss", seed=31, progress=False)
    assert (a.catalog.truth_clump_frac > 0).any()
    for band in part.band_names:
        assert np.array_equal(a.images[band], b.images[band]), band
        assert np.array_equal(a.rms[band], b.rms[band])
        assert np.array_equal(a.psfs[band], b.psfs[band])
    pd.testing.assert_frame_equal(a.catalog[b.catalog.columns], b.catalog)
    # and the clump-free twin of that subset is the clumpy field's population, noise included
    twin = simulate_field(dataclasses.replace(part, embedded={**part.embedded, "clumps": None}), "goodss", seed=31,
                          progress=False)
    pd.testing.assert_frame_equal(twin.catalog[["id", "x", "y", "truth_flux_F814W", "truth_hlr"]],
                                  a.catalog[["id", "x", "y", "truth_flux_F814W", "truth_hlr"]])
    assert not np.array_equal(twin.images["F814W"], a.images["F814W"])


def test_clump_config_checks():
    with pytest.raises(ConfigError, match="clumps.fraction"):
        simulate_field(small_survey("xdf", npix=128, n_stars=1, clumps={"fraction": [0.4, 0.1], "n_knots": [5, 9]}),
                       "hudf", seed=1, progress=False)
    with pytest.raises(ConfigError, match="n_knots"):
        small_survey("xdf", npix=128, clumps={"fraction": [0.1, 0.2], "n_knots": [0, 9]})
    # knots trace the sheared disk, hold exactly the requested share of the unit flux, and are reproducible
    smooth, knots = bulge_disk_parts(0.4, 0.3, 0.5, 30.0, knot_frac=0.2, n_knots=400, knot_seed=7)
    assert smooth.flux + knots[:, 2].sum() == pytest.approx(1.0, abs=1e-14)
    assert knots[:, 2].sum() == pytest.approx(0.2 * 0.7, abs=1e-14)
    assert np.array_equal(knots, bulge_disk_parts(0.4, 0.3, 0.5, 30.0, knot_frac=0.2, n_knots=400, knot_seed=7)[1])
    # elongated along beta = 30 deg with axis ratio ~ q
    xy = knots[:, :2] @ np.array([[np.cos(np.radians(30)), -np.sin(np.radians(30))],
                                  [np.sin(np.radians(30)), np.cos(np.radians(30))]])
    ratio = np.sqrt(np.mean(xy[:, 1] ** 2) / np.mean(xy[:, 0] ** 2))
    assert ratio == pytest.approx(0.5, abs=0.1)
