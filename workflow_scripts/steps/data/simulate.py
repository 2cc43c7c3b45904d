"""Rule script: simulate one embedded field and write it to the data boundary.

Expects ``wildcards.survey`` and ``wildcards.field`` and ``params.data_dir``; writes
``{data_dir}/{survey}/{field}/{band}.fits``, ``{band}.rms.fits``, ``catalog.parquet`` and the true PSFs under
``truth/`` (``psf_{band}.fits``, ``psf_{band}_x4.fits``). The field's seed is a stable hash of the config seed,
the survey and the field (:func:`workflow_scripts.data.simulate.field_seed`), so fields differ but reruns are
bit-identical.
"""

import time
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.data.simulate import field_seed, simulate_field, write_simulated_field
from workflow_scripts.steps._common import run, step_provenance, step_survey


def main(snakemake: Any, log: Any) -> None:
    survey = step_survey(snakemake)
    field = snakemake.wildcards.field
    seed = field_seed(snakemake.params.lineage["seed"], survey.name, field)
    emb = survey.embedded
    log.info("simulating %s/%s: %d^2 px, %d bands, %s < %.1f, seed %d", survey.name, field, emb["npix"],
             len(survey.bands), emb["mag_band"], emb["mag_limit"], seed)
    sim = simulate_field(survey, field, seed, progress=True)
    log.info("objects: %s", ", ".join(f"{k} {v}" for k, v in sorted(sim.counts.items())))
    log.info("timings: %s", ", ".join(f"{k} {v:.1f}" for k, v in sim.timings.items()))
    t0 = time.perf_counter()
    written = write_simulated_field(sim, survey, snakemake.params.data_dir, field,
                                    step_provenance(snakemake, "embedded"))
    log.info("wrote %d files under %s/%s/%s in %.1f s", len(written), snakemake.params.data_dir, survey.name,
             field, time.perf_counter() - t0)


if "snakemake" in globals():
    run(main, snakemake)  # type: ignore[name-defined]  # noqa: F821
