"""Rule `download`: fetch one archive file (resumable, retried, verified against the lock file)."""

from pathlib import Path
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.data.download import Limits, fetch
from workflow_scripts.steps._common import run

BYTES_PER_MB = 2**20
BYTES_PER_KB = 1000


def main(snakemake: Any, log: Any) -> None:
    params = snakemake.params
    settings = params.download
    url = params.url
    log.info("fetching %s -> %s", url, snakemake.output[0])
    fetch(
        url,
        snakemake.output[0],
        lock_file=params.lock_file,
        retries=int(settings["retries"]),
        backoff_s=float(settings["backoff_s"]),
        timeout_s=float(settings["timeout_s"]),
        chunk_bytes=max(1, int(float(settings["chunk_mb"]) * BYTES_PER_MB)),
        expect_filter=getattr(params, "expect_filter", None),
        progress=True,
        limits=Limits(deadline_s=float(settings.get("deadline_s", float("inf"))),
                      min_rate=float(settings.get("min_rate_kb_s", 0)) * BYTES_PER_KB,
                      window_s=float(settings.get("rate_window_s", Limits.window_s))),
        sha256=settings.get("checksums", {}).get(Path(snakemake.output[0]).name),
    )


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
