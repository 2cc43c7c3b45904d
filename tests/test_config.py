"""Configuration: presets validate; typos, wrong types and impossible values give one line naming the key."""

from __future__ import annotations

import copy

import pytest

from workflow_scripts.config import config_hash, deep_merge, load_config, validate_config
from workflow_scripts.errors import ConfigError
from workflow_scripts.surveys import get_survey

from .conftest import REPO, run_snakemake


@pytest.mark.parametrize("preset", [None, "ci", "paper"])
def test_presets_validate(preset):
    overlays = [REPO / "presets" / f"{preset}.yaml"] if preset else []
    config = load_config(*overlays)
    assert config["preset"] == (preset or "demo")


def test_paper_preset_uses_real_data_and_ci_is_smaller():
    paper = load_config(REPO / "presets" / "paper.yaml")
    ci = load_config(REPO / "presets" / "ci.yaml")
    demo = load_config()
    assert {s["source"] for n, s in paper["surveys"].items() if n != "hsc"} == {"download"}
    for name in ("goodss", "ceers", "xdf"):
        assert ci["surveys"][name]["embedded"]["npix"] < demo["surveys"][name]["embedded"]["npix"]
        # the overlay changed sizes only: the instrument description is untouched
        assert ci["surveys"][name]["bands"] == demo["surveys"][name]["bands"]


def _broken(config, path, value):
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return config


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("sed",), 1, "unknown key 'sed'"),
        (("surveys", "goodss", "pixle_scale"), 0.06, "unknown key 'surveys.goodss.pixle_scale'"),
        (("seed",), "abc", "seed"),
        (("surveys", "goodss", "embedded", "npix"), -512, "surveys.goodss.embedded.npix"),
        (("surveys", "xdf", "pixel_scale"), 0, "surveys.xdf.pixel_scale"),
        (("surveys", "goodss", "embedded", "mag_band"), "F999W", "'F999W' is not a band of goodss"),
        (("surveys", "ceers", "source"), "downlaod", "surveys.ceers.source"),
        (("psf", "stamp_size"), 24, "psf.stamp_size must be odd"),
        (("psf", "per_survey", "xdff"), {"star_snr_min": 10.0}, "psf.per_survey.xdff is not a survey"),
        (("psf", "per_survey", "xdf", "stamp_size"), 24, "psf.per_survey.xdf.stamp_size must be odd"),
        (("psf", "per_survey", "xdf", "star_snr"), 10.0, "unknown key 'psf.per_survey.xdf.star_snr'"),
        (("device",), "gpu", "device"),
        (("hemmati22", "select", "isolation_arcsec"), 1.0, "smaller than the companion search radius (1.57"),
        (("hemmati22", "models", "dcgan", "skip"), True, "hemmati22.models.dcgan.skip applies to an srgan only"),
        (("hemmati22", "models", "dcgan", "ambient_noise"), True,
         "hemmati22.models.dcgan.ambient_noise applies to an srgan only"),
        (("hemmati22", "models", "srgan1", "zero_residual"), True,
         "hemmati22.models.srgan1.zero_residual needs skip: true"),
        (("hemmati22", "models", "srgan1", "ema_decay"), 1.0, "ema_decay"),
    ],
)
def test_bad_config_is_one_clear_line(config, path, value, expected):
    with pytest.raises(ConfigError) as err:
        validate_config(_broken(config, path, value))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_download_source_requires_urls(config):
    bad = _broken(config, ("surveys", "xdf", "source"), "download")
    del bad["surveys"]["xdf"]["bands"]["F775W"]["url"]
    with pytest.raises(ConfigError, match="surveys.xdf.bands.F775W.url is required"):
        validate_config(bad)


def test_unknown_band_of_a_survey(config):
    survey = get_survey(config, "goodss")
    assert survey.band("F775W").zeropoint == pytest.approx(25.678)
    with pytest.raises(ConfigError, match="unknown band 'F999W' for survey goodss"):
        survey.band("F999W")


def test_depth_and_noise_are_inverse(config):
    survey = get_survey(config, "ceers")
    for band in survey.bands:
        sigma = survey.pixel_noise(band)
        assert survey.depth_from_noise(band, sigma) == pytest.approx(survey.band(band).depth, abs=1e-9)


def test_deep_merge_and_hash_are_stable(config):
    merged = deep_merge(config, {"surveys": {"xdf": {"embedded": {"npix": 256}}}})
    assert merged["surveys"]["xdf"]["embedded"]["npix"] == 256
    assert merged["surveys"]["xdf"]["embedded"]["mag_band"] == "F775W"
    assert config["surveys"]["xdf"]["embedded"]["npix"] != 256  # the base is not modified
    assert config_hash(config) == config_hash(copy.deepcopy(config))
    assert config_hash(config) != config_hash(merged)


def test_snakemake_refuses_a_typo_before_any_job(tmp_path):
    result = run_snakemake("-n", "all", "--config", "seeed=3", workdir=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "unknown key 'seeed'" in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_nested_config_values_from_the_command_line_are_typed_like_yaml(tmp_path):
    from workflow_scripts.config import typed_overrides

    assert typed_overrides({"hemmati22": {"n_blends": "100", "band": "F775W", "models": {"x": {"skip": "true"}}},
                            "studies": "[hemmati22]", "seed": 7}) == {
        "hemmati22": {"n_blends": 100, "band": "F775W", "models": {"x": {"skip": True}}},
        "studies": ["hemmati22"], "seed": 7}
    result = run_snakemake("-n", "--quiet", "all", "--config", 'hemmati22={"n_blends": 100}', workdir=tmp_path,
                           timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_snakemake("-n", "--quiet", "all", "--config", 'hemmati22={"n_blends": "many"}', workdir=tmp_path,
                           timeout=300)
    assert result.returncode != 0
    assert "error: invalid config: hemmati22.n_blends = 'many'" in result.stderr


def test_a_second_run_in_the_same_directory_is_told_that_another_holds_it(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("")
    result = run_snakemake("-n", "--quiet", "all", workdir=tmp_path, timeout=300)
    first = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Using workflow")]
    assert first and first[0].startswith(f"note: another Snakemake run holds {tmp_path}")
