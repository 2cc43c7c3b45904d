"""Rule `zanisi21_twin`: the study's survey simulated again with the same seed and no clumps (boundary files under
the study's derived data folder)."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.data.simulate import field_seed, simulate_field, write_simulated_field
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.zanisi21.twin import twin_survey


def main(snakemake: Any, log: Any) -> None:
    spec = dict(snakemake.params.survey)
    survey = twin_survey(spec.pop("name"), spec, [snakemake.params.band])
    field = snakemake.wildcards.field
    seed = field_seed(snakemake.params.lineage["seed"], survey.name, field)
    log.info("twin of %s/%s without clumps: bands %s, seed %d", survey.name, field, ", ".join(survey.band_names),
             seed)
    sim = simulate_field(survey, field, seed, progress=True)
    log.info("timings: %s", ", ".join(f"{k} {v:.1f}" for k, v in sim.timings.items()))
    write_simulated_field(sim, survey, snakemake.params.data_dir, field, step_provenance(snakemake, "embedded"))


if "snakemake" in globals():
    run(main, snakemake)  # type: ignore[name-defined]  # noqa: F821
