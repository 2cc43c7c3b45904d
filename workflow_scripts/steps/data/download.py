"""Rule `download`: fetch one archive file (resumable, retried, verified against the lock file)."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.data.download import fetch
from workflow_scripts.steps._common import run

BYTES_PER_MB = 2**20


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
    )


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
