"""The shared metrics schema (workflow_scripts.metrics) and the deblending study's headline entries."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.errors import PipelineError
from workflow_scripts.metrics import ENTRY_FIELDS, bootstrap_median, entry, validate_metrics
from workflow_scripts.studies.hemmati22.metrics import headline_entries, summarise
from workflow_scripts.studies.hemmati22.paper import PAPER

GAN_MODELS = {"gan": "srgan1_l1", "gan7": "srgan7"}


# ------------------------------------------------------------------------------------------ the shared helper
def test_entry_keeps_the_fields_in_order_and_plain_json_values():
    e = entry("x", "a number", 0.8, np.float32(0.5), "fraction", "> 0.3", np.bool_(True))
    assert tuple(e) == ENTRY_FIELDS
    assert e["ours"] == 0.5 and type(e["ours"]) is float and e["holds"] is True
    assert json.loads(json.dumps(e)) == e
    assert entry("y", "no number", ">10x", float("nan"), "x", "> 10", None)["ours"] is None   # NaN -> null
    assert entry("z", "count", None, np.int64(3), "", None, None)["ours"] == 3


@pytest.mark.parametrize("args, message", [
    (("", "what", 1.0, 1.0, "", None, None), "identifier"),
    (("bad id", "what", 1.0, 1.0, "", None, None), "identifier"),
    (("x", "", 1.0, 1.0, "", None, None), "'what'"),
    (("x", "what", [1.0], 1.0, "", None, None), "'paper'"),
    (("x", "what", 1.0, "0.5", "", None, None), "'ours'"),
    (("x", "what", 1.0, True, "", None, None), "'ours'"),
    (("x", "what", 1.0, 1.0, None, None, None), "'unit'"),
    (("x", "what", 1.0, 1.0, "", "", None), "'goal'"),
    (("x", "what", 1.0, 1.0, "", "> 0", "yes"), "'holds'"),
    (("x", "what", 1.0, 1.0, "", None, True), "no goal"),
])
def test_bad_entries_raise_one_line(args, message):
    with pytest.raises(PipelineError, match=message) as info:
        entry(*args)
    assert "\n" not in str(info.value)


def test_validate_metrics_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "results/x/metrics.json"
    good = {"study": "x", "entries": [entry("a", "what", 1.0, 2.0, "", None, None)], "detail": {"free": 1}}
    validate_metrics(good, path)
    bad = [({"entries": []}, "no 'study'"),
           ({"study": "x", "entries": {}}, "'entries' must be a list"),
           ({"study": "x", "entries": [{"id": "a"}]}, "missing what, paper"),
           ({"study": "x", "entries": [{**good["entries"][0], "extra": 1}]}, "unknown extra"),
           ({"study": "x", "entries": good["entries"] * 2}, "appears twice"),
           ({"study": "x", "entries": [{**good["entries"][0], "ours": math.inf}]}, "finite"),
           ([], "JSON object")]
    for obj, message in bad:
        with pytest.raises(PipelineError, match=message) as info:
            validate_metrics(obj, path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------- the study's entries
def _outcomes(n: int, n_both: int) -> list[str]:
    return ["both"] * n_both + ["one"] * (n - n_both)


def detections(n: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Blends with known fractions of both-found (hi 16/20, lo 2/20, gan 10/20, gan7 12/20) and isolated galaxies
    with known false positives (gan 1/20, none elsewhere)."""
    both = {"hi": 16, "lo": 2, "hi7": 17, "lo7": 3, GAN_MODELS["gan"]: 10, GAN_MODELS["gan7"]: 12}
    blends = pd.DataFrame({f"outcome_{m}": _outcomes(n, k) for m, k in both.items()})
    isolated = pd.DataFrame({f"false_positive_{m}": np.arange(n) < (1 if m == GAN_MODELS["gan"] else 0)
                             for m in both})
    return blends, isolated


def test_study_entries_have_the_known_fractions_and_goals():
    blends, isolated = detections()
    phot = {"ours": {"improvement_factor": {"scatter": 12.0, "bias": 11.0}}}
    metrics = summarise(blends, isolated, GAN_MODELS, phot)
    validate_metrics(metrics, "metrics.json")
    e = {x["id"]: x for x in metrics["entries"]}
    assert {"detection_fraction_hi", "detection_fraction_lo", "detection_fraction_gan", "detection_fraction_gan7",
            "false_positive_rate_gan", "photometry_improvement"} <= set(e)
    assert e["detection_fraction_hi"]["ours"] == pytest.approx(0.80)
    assert e["detection_fraction_lo"]["ours"] == pytest.approx(0.10)
    assert e["detection_fraction_gan"]["ours"] == pytest.approx(0.50)
    assert e["detection_fraction_gan7"]["ours"] == pytest.approx(0.60)
    assert e["false_positive_rate_gan"]["ours"] == pytest.approx(0.05)
    assert e["false_positive_rate_hi"]["ours"] == 0.0
    assert e["photometry_improvement"]["ours"] == 11.0                   # the smaller of the two ratios
    # the paper's values come from paper.py
    assert e["detection_fraction_hi"]["paper"] == PAPER["detection_fraction"]["hi"]
    assert e["false_positive_rate_gan"]["paper"] == PAPER["false_positive_rate"]
    assert e["photometry_improvement"]["paper"] == ">10x"
    holds = {k: v["holds"] for k, v in e.items()}
    assert holds == {"detection_fraction_hi": True, "detection_fraction_lo": True, "detection_fraction_gan": True,
                     "detection_fraction_gan7": True, "false_positive_rate_hi": True,
                     "false_positive_rate_gan": False, "photometry_improvement": True}   # 0.05 is not < 0.05
    assert metrics["photometry"] == phot and metrics["by_method"]["hi"]["detection_fraction"] == pytest.approx(0.8)


def test_study_entries_fail_their_goals_and_leave_unmeasured_photometry_open():
    blends, isolated = detections()
    blends[f"outcome_{GAN_MODELS['gan']}"] = _outcomes(20, 1)              # GAN worse than low-res
    by_method = summarise(blends, isolated, GAN_MODELS)["by_method"]
    e = {x["id"]: x for x in headline_entries(by_method, GAN_MODELS, {"ours": {"improvement_factor": {}}})}
    assert e["detection_fraction_hi"]["holds"] is False and e["detection_fraction_gan"]["holds"] is False
    assert e["detection_fraction_gan7"]["holds"] is True
    assert e["photometry_improvement"]["ours"] is None and e["photometry_improvement"]["holds"] is None


def test_a_magnitude_matched_auc_removes_what_brightness_explains_and_keeps_the_rest():
    """A score that only tracks magnitude, with the positives 1 mag brighter: AUC ~0.84 raw, 0.5 once the negatives
    are re-weighted to the positives' magnitudes. A real shift of 0.5 on top: the matched AUC is Phi(0.5 / sd) with sd
    the spread of the difference of two draws at matched magnitudes (sqrt(2 * 0.5^2 + 2 * 0.3^2)), 0.728."""
    from scipy.stats import norm

    from workflow_scripts.metrics import matched_auc, roc_auc

    rng = np.random.default_rng(0)
    n = 5000
    mag_p, mag_n = rng.normal(24.0, 0.5, n), rng.normal(25.0, 0.8, n)
    s_p, s_n = -mag_p + rng.normal(0, 0.3, n), -mag_n + rng.normal(0, 0.3, n)
    assert roc_auc(s_p, s_n) > 0.8
    auc, n_p, n_n = matched_auc(s_p, mag_p, s_n, mag_n, 0.25)
    assert auc == pytest.approx(0.5, abs=0.02) and n_p > 0.99 * n and 0.7 * n < n_n < n
    expected = norm.cdf(0.5 / np.sqrt(2 * 0.5**2 + 2 * 0.3**2))
    assert matched_auc(s_p + 0.5, mag_p, s_n, mag_n, 0.25)[0] == pytest.approx(expected, abs=0.02)
    assert np.isnan(matched_auc(s_p, mag_p, s_n, mag_n + 100.0, 0.25)[0])  # no bin holds both


def test_bootstrap_interval_of_a_median_has_its_nominal_coverage():
    # 300 samples of 60 draws from N(0, 1): the true median (0) lies inside the 68 % interval ~68 % of the time,
    # and the interval's half width averages the median's standard error, sqrt(pi / 2) / sqrt(60) = 0.162
    rng = np.random.default_rng(3)
    intervals = np.array([bootstrap_median(rng.normal(0.0, 1.0, 60), seed=i) for i in range(300)])
    covered = np.mean((intervals[:, 0] < 0.0) & (0.0 < intervals[:, 1]))
    assert covered == pytest.approx(0.68, abs=0.08)
    assert np.mean(np.diff(intervals, axis=1)) / 2 == pytest.approx(math.sqrt(math.pi / 2 / 60), rel=0.15)


def test_bootstrap_interval_of_a_median_leaves_out_non_finite_values_and_is_seeded():
    x = np.random.default_rng(4).normal(0.0, 1.0, 50)
    assert bootstrap_median(np.r_[x, np.nan, np.inf], seed=1) == bootstrap_median(x, seed=1)
    lo, hi = bootstrap_median(x, seed=1)
    assert lo < np.median(x) < hi
    assert all(math.isnan(v) for v in bootstrap_median([np.nan], seed=1))
