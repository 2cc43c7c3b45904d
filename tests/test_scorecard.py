"""The scorecard gathers every enabled study's headline entries; the report holds every figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workflow_scripts.errors import PipelineError
from workflow_scripts.metrics import entry
from workflow_scripts.scorecard import gather, markdown

from .conftest import run_snakemake
from .test_workflow import CI


def _metrics(path: Path, study: str, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"study": study, "entries": entries, "detail": {"anything": 1}}))
    return path


def test_gather_keeps_every_entry_with_its_study_and_the_table_shows_them(tmp_path: Path):
    a = _metrics(tmp_path / "a.json", "hemmati22", [
        entry("detection_fraction_hi", "blends found in hi-res", 0.80, 0.647, "fraction", "> gan > lo", True),
        entry("photometry_improvement", "GAN vs low-res positions", ">10x", 1.4, "x", ">= 5", False)])
    b = _metrics(tmp_path / "b.json", "other", [entry("x", "a number", None, 2.5, "", None, None)])
    card = gather({"hemmati22": a, "other": b}, "ci")
    assert card["preset"] == "ci"
    assert [(e["study"], e["id"]) for e in card["entries"]] == [
        ("hemmati22", "detection_fraction_hi"), ("hemmati22", "photometry_improvement"), ("other", "x")]
    table = markdown(card)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 3
    assert re.search(r"\| hemmati22 \| `photometry_improvement` \| .* \| >10x \| 1\.4 \| x \| >= 5 \| \*\*no\*\* \|",
                     table)
    assert "1 of 2 goals hold; 1 entries have no goal." in table


def test_side_by_side_rows_of_one_topic_from_two_studies_make_one_table(tmp_path: Path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"study": "a", "entries": [], "side_by_side": {"anomalies": [
        {"detector": "cGAN SED error", "scored": "x", "merger_auc": 0.59, "ero_auc": 0.82}]}}))
    b.write_text(json.dumps({"study": "b", "entries": [], "side_by_side": {"anomalies": [
        {"detector": "LLR", "scored": "y", "ero_auc": 0.5, "merger_auc": 0.7},
        {"detector": "log p", "scored": "y", "merger_auc": float("nan")}]}}))
    card = gather({"a": a, "b": b}, "ci")
    rows = card["side_by_side"]["anomalies"]
    assert [(r["study"], r["detector"]) for r in rows] == [("a", "cGAN SED error"), ("b", "LLR"), ("b", "log p")]
    assert rows[2]["merger_auc"] is None  # strict JSON: nothing measured
    table = markdown(card).split("## Side by side: anomalies")[1]
    assert "| study | detector | scored | ero_auc | merger_auc |" in table  # text first, then numbers by name
    assert "| a | cGAN SED error | x | 0.82 | 0.59 |" in table and "| b | LLR | y | 0.5 | 0.7 |" in table
    assert "| b | log p | y | – | – |" in table


def test_gather_refuses_a_bad_metrics_file_naming_it(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"study": "x", "entries": [{"id": "no_other_fields"}]}))
    with pytest.raises(PipelineError, match="bad.json"):
        gather({"x": bad}, "ci")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PipelineError, match="broken.json"):
        gather({"x": broken}, "ci")


@pytest.mark.slow
def test_ci_scorecard_and_report_hold_every_study_and_figure(ci_run: Path):
    card = json.loads((ci_run / "results/scorecard.json").read_text())
    assert card["preset"] == "ci"
    ids = {e["id"] for e in card["entries"] if e["study"] == "hemmati22"}
    assert {"detection_fraction_hi", "detection_fraction_lo", "detection_fraction_gan", "detection_fraction_gan7",
            "false_positive_rate_gan", "photometry_improvement"} <= ids
    assert "| hemmati22 | `detection_fraction_hi` |" in (ci_run / "results/scorecard.md").read_text()
    # the anomaly study's detectors beside the likelihood study's, scored on the same embedded CEERS objects
    side = card["side_by_side"]["anomalies"]
    assert {r["study"] for r in side} == {"pearce_casey23", "zanisi21"}
    for study in ("pearce_casey23", "zanisi21"):
        aucs = [r.get("merger_auc") for r in side if r["study"] == study]
        assert any(a is not None and 0.0 <= a <= 1.0 for a in aucs), (study, aucs)
    assert {"anomaly_merger_auc_llr", "anomaly_merger_auc_likelihood"} <= {e["id"] for e in card["entries"]}

    result = run_snakemake("--report", "results/report.html", "all", "--configfile", CI, workdir=ci_run,
                           timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    html = (ci_run / "results/report.html").read_text(errors="replace")
    figures = sorted(p.name for p in (ci_run / "results/figures").rglob("*.png"))
    assert len(figures) >= 11
    missing = [name for name in figures if name not in html]
    assert not missing, f"figures not in the report: {missing}"
    assert "scorecard.md" in html


def test_a_pipe_inside_a_cell_does_not_split_the_row(tmp_path: Path):
    a = _metrics(tmp_path / "a.json", "s", [entry("d", "mean |dmag| over bands", None, 0.2, "mag", "|x| <= 0.1",
                                                  False)])
    row = next(line for line in markdown(gather({"s": a}, "ci")).splitlines() if "`d`" in line)
    cells = re.split(r"(?<!\\)\|", row)[1:-1]        # split on unescaped pipes only
    assert len(cells) == 8 and cells[2].strip() == r"mean \|dmag\| over bands" and cells[6].strip() == r"\|x\| <= 0.1"
