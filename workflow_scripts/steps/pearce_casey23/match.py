"""Rule `pearce_casey23_match`: one band of one pointing PSF-matched to the target band and background-subtracted."""

import json
from typing import Any

try:  # rule scripts: put the repository on sys.path (Snakemake adds this folder to sys.path)
    import _repo_path  # noqa: F401
except ImportError:
    pass

from workflow_scripts.data.psf import read_psf
from workflow_scripts.io import atomic_path, read_mosaic, write_mosaic
from workflow_scripts.steps._common import run, step_provenance
from workflow_scripts.studies.pearce_casey23.catalog import matched_mosaic


def main(snakemake: Any, log: Any) -> None:
    study = snakemake.params.study
    mosaic = read_mosaic(snakemake.input.image, snakemake.input.rms)
    source, target = read_psf(snakemake.input.psf), read_psf(snakemake.input.target_psf)
    out, summary = matched_mosaic(mosaic, source.psf, target.psf, target_band=study["psf_target"],
                                  target_fwhm=target.fwhm, background_box=study["background"]["box"],
                                  background_filter=study["background"]["filter"],
                                  wing_size=study.get("psf_wings"))
    summary.update({"source_fwhm_arcsec": source.fwhm, "target_fwhm_arcsec": target.fwhm})
    log.info("matched %s: %s", snakemake.wildcards.band, summary)
    hdr = out.header
    extra = {k: hdr[k] for k in ("PSFMATCH", "PSFFWHM", "PSFKSIZE", "PSFKGAIN", "BKGSUB", "BKGBOX") if k in hdr}
    write_mosaic(snakemake.output.image, out.data, out.wcs, telescope=hdr.get("TELESCOP", ""),
                 instrument=hdr.get("INSTRUME", ""), band=out.band, bunit=hdr.get("BUNIT", ""),
                 zeropoint=out.zeropoint, prov=step_provenance(snakemake, "derived"), rms=out.rms,
                 rms_file=snakemake.output.rms, extra=extra)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


if "snakemake" in globals():
    run(main, snakemake)  # noqa: F821
