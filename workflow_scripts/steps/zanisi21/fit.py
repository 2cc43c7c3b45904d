"""Rule `zanisi21_fit`: statmorph single-Sersic fits (PSF-convolved) and non-parametric morphology of one set."""

from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.data.psf import read_psf
from workflow_scripts.imaging.stamps import read_cutouts
from workflow_scripts.io import atomic_path
from workflow_scripts.steps._common import run
from workflow_scripts.studies.zanisi21.archetypes import fit_sersic


def main(snakemake: Any, log: Any) -> None:
    cs = read_cutouts(snakemake.input.stamps)
    psf = read_psf(snakemake.input.psf).psf
    fits_table = fit_sersic(cs.cube[:, 0], psf, pixel_scale=cs.pixel_scale, source=str(snakemake.input.stamps))
    table = cs.table.reset_index(drop=True).join(fits_table.reset_index(drop=True), rsuffix="_fit")
    n_bad = int((~table["ok"]).sum())
    log.info("%d stamps fitted, %d failed (%s)", len(table), n_bad,
             table.loc[~table["ok"], "reason"].value_counts().to_dict() if n_bad else "none")
    with atomic_path(snakemake.output.table) as tmp:
        table.to_parquet(tmp, index=False)


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
