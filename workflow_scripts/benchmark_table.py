"""Wall time and memory of a workflow run, per rule, from the jobs' ``benchmark:`` files.

Every rule writes ``results/benchmarks/.../<job>.tsv`` (Snakemake's benchmark format: ``s`` wall seconds,
``max_rss`` MB, ``cpu_time`` s, ...). The rule of each file is read from the run's own logs
(``.snakemake/log/*.snakemake.log`` lists every job with its rule and benchmark file), so the table needs no
knowledge of the workflow; a file no log mentions is listed under its path.

    python -m workflow_scripts.benchmark_table [WORKDIR] [--per-job] [--title TEXT]

prints a Markdown table: rule, jobs, total and longest wall time, total CPU time, largest peak memory (RSS).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

BENCH_DIR = Path("results/benchmarks")
_HEADER = re.compile(r"^(?:(?:local)?(?:rule|checkpoint) (?P<rule>\S+):|Job (?P<job>\d+): .*)$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_BENCH = re.compile(r"^\s+benchmark: (\S+)$")
_MISSING = re.compile(r"^\s*[Rr]eason: Missing output files: ([^;]*)")
_FINISHED = re.compile(r"Finished jobid: (\d+) \(Rule: (\S+)\)")


def read_benchmarks(bench_dir: str | Path) -> pd.DataFrame:
    """One row per benchmark file: ``job`` (path under ``bench_dir`` without .tsv), ``path`` (as the workflow
    names it), ``wall_s``, ``cpu_s``, ``max_rss_mb`` (the mean / max over a file's repeats)."""
    bench_dir = Path(bench_dir)
    rows = []
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        data = pd.read_csv(tsv, sep="\t")
        if data.empty or "s" not in data:
            continue
        rss = pd.to_numeric(data.get("max_rss"), errors="coerce")
        cpu = pd.to_numeric(data.get("cpu_time"), errors="coerce")
        rows.append({"job": str(tsv.relative_to(bench_dir).with_suffix("")),
                     "path": str(BENCH_DIR / tsv.relative_to(bench_dir)),
                     "wall_s": float(pd.to_numeric(data["s"], errors="coerce").mean()),
                     "cpu_s": float(cpu.mean()) if cpu is not None else float("nan"),
                     "max_rss_mb": float(rss.max()) if rss is not None else float("nan")})
    return pd.DataFrame(rows, columns=["job", "path", "wall_s", "cpu_s", "max_rss_mb"])


def rules_from_logs(logs: Iterable[str | Path]) -> dict[str, str]:
    """``{benchmark path: rule}`` from Snakemake run logs (later logs win).

    A job's block names its rule (``rule X:``) or, for rules with a ``message:``, only ``Job N: <message>``; the
    benchmark file is on its ``benchmark:`` line, or among the missing outputs of its ``Reason:`` line; every
    job's rule is also on its ``Finished jobid: N (Rule: X)`` line.
    """
    rules: dict[str, str] = {}
    for log in logs:
        bench_of_job: dict[str, str] = {}
        rule_of_job: dict[str, str] = {}
        job = rule = None
        for line in Path(log).read_text(errors="replace").splitlines():
            if match := _HEADER.match(line):
                job, rule = match.group("job"), match.group("rule")
            elif match := _JOBID.match(line):
                job = match.group(1)
                if rule is not None:
                    rule_of_job[job] = rule
            elif (match := _BENCH.match(line)) and job is not None:
                bench_of_job[job] = match.group(1)
            elif (match := _MISSING.match(line)) and job is not None:
                for path in (p.strip() for p in match.group(1).split(",")):
                    if path.startswith(f"{BENCH_DIR}/") and path.endswith(".tsv"):
                        bench_of_job.setdefault(job, path)
            elif match := _FINISHED.search(line):
                rule_of_job[match.group(1)] = match.group(2)
        for job_id, path in bench_of_job.items():
            if job_id in rule_of_job:
                rules[path] = rule_of_job[job_id]
        rules.update({f"rule:{r}": r for r in rule_of_job.values()})  # every rule that ran, for rule_of()
    return rules


def rule_of(job: str, path: str, rules: dict[str, str]) -> str:
    """The rule of a benchmark file: from the logs, else the one rule that ran whose name is the file's folder
    joined to the first word of its name (``simulate/goodss_goodss`` -> ``simulate_goodss``), its folder or its
    name; else the file's path."""
    if path in rules:
        return rules[path]
    folder, _, stem = job.rpartition("/")
    for guess in (f"{folder}_{stem.split('_')[0]}", folder, stem):
        if f"rule:{guess}" in rules:
            return guess
    return job


def per_rule(jobs: pd.DataFrame, rules: dict[str, str]) -> pd.DataFrame:
    """Per rule: jobs, total and longest wall time, total CPU time, largest peak RSS; longest total first."""
    jobs = jobs.assign(rule=[rule_of(j, p, rules) for p, j in zip(jobs["path"], jobs["job"], strict=True)])
    table = jobs.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "sum"), max_wall_s=("wall_s", "max"),
                                     cpu_s=("cpu_s", "sum"), max_rss_mb=("max_rss_mb", "max"))
    return table.sort_values("wall_s", ascending=False).reset_index()


def markdown(table: pd.DataFrame, per_job: bool = False) -> str:
    """The table in Markdown, with a total row."""
    if per_job:
        lines = ["| job | wall s | CPU s | max RSS MB |", "|---|---:|---:|---:|"]
        lines += [f"| {r.job} | {r.wall_s:.1f} | {_num(r.cpu_s)} | {_num(r.max_rss_mb, 0)} |"
                  for r in table.itertuples()]
        lines.append(f"| **all {len(table)} jobs** | {table['wall_s'].sum():.1f} | {_num(table['cpu_s'].sum())} | "
                     f"{_num(table['max_rss_mb'].max(), 0)} |")
        return "\n".join(lines)
    lines = ["| rule | jobs | wall s (sum) | wall s (longest job) | CPU s (sum) | max RSS MB |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.rule} | {r.jobs} | {r.wall_s:.1f} | {r.max_wall_s:.1f} | {_num(r.cpu_s)} | "
              f"{_num(r.max_rss_mb, 0)} |" for r in table.itertuples()]
    lines.append(f"| **all** | {int(table['jobs'].sum())} | {table['wall_s'].sum():.1f} | "
                 f"{table['max_wall_s'].max():.1f} | {_num(table['cpu_s'].sum())} | "
                 f"{_num(table['max_rss_mb'].max(), 0)} |")
    return "\n".join(lines)


def _num(value: float, digits: int = 1) -> str:
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-rule wall time and memory from a run's benchmark files.")
    parser.add_argument("workdir", nargs="?", default=".", help="the run's working directory (default: here)")
    parser.add_argument("--bench-dir", help=f"benchmark folder (default: WORKDIR/{BENCH_DIR})")
    parser.add_argument("--log", action="append", default=None,
                        help="Snakemake log(s) naming each job's rule (default: WORKDIR/.snakemake/log/*.log)")
    parser.add_argument("--per-job", action="store_true", help="one row per job instead of per rule")
    parser.add_argument("--title", help="a line printed above the table")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    bench_dir = Path(args.bench_dir) if args.bench_dir else workdir / BENCH_DIR
    jobs = read_benchmarks(bench_dir)
    if jobs.empty:
        print(f"no benchmark files under {bench_dir}", file=sys.stderr)
        return 1
    logs = args.log if args.log is not None else sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if args.title:
        print(args.title + "\n")
    print(markdown(jobs if args.per_job else per_rule(jobs, rules_from_logs(logs)), per_job=args.per_job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
