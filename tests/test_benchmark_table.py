"""The per-rule wall time / memory table made from a run's benchmark files and logs."""

from __future__ import annotations

from workflow_scripts import benchmark_table

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"

LOG = """\
[Sun Nov 22 10:38:40 2026]
Job 3: Simulating the embedded goodss field goodss with GalSim
Reason: Missing output files: data/ci/goodss/goodss/F814W.fits, data/ci/goodss/goodss/catalog.parquet
[Sun Nov 22 10:38:45 2026]
Finished jobid: 3 (Rule: simulate_goodss)
[Sun Nov 22 10:38:45 2026]
localrule psf:
    input: data/ci/goodss/goodss/F125W.fits
    output: results/data/goodss/goodss/psf/F125W.fits
    jobid: 5
    benchmark: results/benchmarks/psf/goodss_goodss_F125W.tsv
    wildcards: survey=goodss, field=goodss, band=F125W
[Sun Nov 22 10:38:46 2026]
rule psf:
    jobid: 6
    benchmark: results/benchmarks/psf/goodss_goodss_F160W.tsv
Job 9: Hemmati+22 fig3_superresolution
Reason: Missing output files: results/figures/hemmati22/fig3.png, results/benchmarks/hemmati22/hemmati22_fig3.tsv; \
Input files updated by another job: results/hemmati22/isolated_hi.fits
Finished jobid: 5 (Rule: psf)
Finished jobid: 6 (Rule: psf)
Finished jobid: 9 (Rule: hemmati22_fig3)
"""


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s}\t0:00:{int(s):02d}\t{rss}\t0\t0\t0\t0\t0\t50\t{cpu}\n" for s, rss, cpu in rows]
    path.write_text(HEADER + "".join(lines))


def test_table_per_rule_from_benchmarks_and_logs(tmp_path, capsys):
    bench = tmp_path / "results/benchmarks"
    write(bench / "simulate/goodss_goodss.tsv", [(5.5, 282.0, 4.4)])
    write(bench / "psf/goodss_goodss_F125W.tsv", [(10.0, 200.0, 3.0)])
    write(bench / "psf/goodss_goodss_F160W.tsv", [(20.0, 266.0, 5.0), (22.0, 250.0, 5.0)])  # two repeats
    write(bench / "hemmati22/hemmati22_fig3.tsv", [(13.8, 500.0, 8.5)])
    write(bench / "other/thing.tsv", [(1.0, 10.0, 1.0)])
    (tmp_path / ".snakemake/log").mkdir(parents=True)
    (tmp_path / ".snakemake/log/run.snakemake.log").write_text(LOG)

    jobs = benchmark_table.read_benchmarks(bench)
    assert len(jobs) == 5
    rules = benchmark_table.rules_from_logs([tmp_path / ".snakemake/log/run.snakemake.log"])
    assert rules["results/benchmarks/psf/goodss_goodss_F160W.tsv"] == "psf"
    assert rules["results/benchmarks/hemmati22/hemmati22_fig3.tsv"] == "hemmati22_fig3"
    table = benchmark_table.per_rule(jobs, rules).set_index("rule")
    assert list(table.index) == ["psf", "hemmati22_fig3", "simulate_goodss", "other/thing"]  # longest first
    assert table.loc["psf", "jobs"] == 2 and table.loc["psf", "wall_s"] == 10.0 + 21.0
    assert table.loc["psf", "max_wall_s"] == 21.0 and table.loc["psf", "max_rss_mb"] == 266.0
    assert table.loc["simulate_goodss", "cpu_s"] == 4.4  # a rule with a message: named by its folder and file

    assert benchmark_table.main([str(tmp_path), "--title", "ci"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ci" and out[2].startswith("| rule | jobs | wall s")
    assert out[-1].startswith("| **all** | 5 | 51.3 |")
    assert benchmark_table.main([str(tmp_path / "nothing")]) == 1
