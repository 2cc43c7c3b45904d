# Functions shared by the workflow: boundary paths, archive file names, resource estimates, input lists.
import os
from pathlib import Path

from workflow_scripts import io as boundary
from workflow_scripts.code_version import code_version as _code_version
from workflow_scripts.config import lineage_hash, psf_settings as _psf_settings

# Scheduling only (no output depends on it): among the jobs that are ready, Snakemake starts those of higher priority
# first. "start": the PSFs and the cheap jobs at the head of each study's chain, so that every training can start
# early (left to the default order, the last GOODS-S PSF ran after 7 minutes of other jobs and the pix2pix training
# after 19 of 30; the Sersic fits of the likelihood-ratio study, ahead of its archetype model, waited until minute
# 31 of 34 and left one core idle for the last 4); "tail": the deblending study's jobs after its GANs (inference, detection, photometry: ~7 minutes
# in a row; and the protocol "as coded", whose photometry otherwise started at minute 29 of 31), so that they do not
# wait behind the other studies' trainings; "train": the deblending GANs, whose
# tail is the longest, before the other trainings; "train_next": the pix2pix and Spatial-GAN trainings, whose tails
# (prediction and photometry; a field and its catalogue) come next, before the PixelCNNs, whose scoring is short
# (left to the default order, both started after 22 minutes of 29 and ended the run with one core idle).
PRIORITY = {"psf": 30, "start": 20, "tail": 10, "train": 5, "train_next": 3}


def band_file(survey, field, band):
    return str(boundary.band_path(DATA, survey, field, band))


def rms_file(survey, field, band):
    return str(boundary.rms_path(DATA, survey, field, band))


def psf_file(survey, field, band, ext="fits"):
    """The empirical PSF of one band, as the psf step writes it: .fits image or .json summary."""
    return f"results/data/{survey}/{field}/psf/{band}.{ext}"


def psf_settings(survey):
    """The psf block as it applies to one survey (:func:`workflow_scripts.config.psf_settings`)."""
    return _psf_settings(config, survey)


def catalog_file(survey, field):
    return str(boundary.catalog_path(DATA, survey, field))


def mosaic_mem_mb(survey, copies=4, floor=1000):
    """Memory for a job holding `copies` float32 copies of every band of an embedded mosaic."""
    npix = survey.embedded.get("npix", 4096)
    return floor + int(copies * len(survey.bands) * npix * npix * 4 / 2**20)


def band_mem_mb(survey, copies=8, floor=500):
    """Memory for a job holding `copies` float32 copies of one band of an embedded mosaic."""
    npix = survey.embedded.get("npix", 16384)
    return floor + int(copies * npix * npix * 4 / 2**20)


def raw_file(survey, url):
    """Local path of an archive file: {data_dir}/raw/{survey}/{file name in the URL}."""
    return f"{DATA}/raw/{survey}/{os.path.basename(url)}"


def overview_inputs(w):
    s = SURVEYS[w.survey]
    inputs = {
        "images": [band_file(s.name, w.field, b) for b in s.bands],
        "psfs": [psf_file(s.name, w.field, b) for b in s.bands],
    }
    if s.catalog:
        inputs["catalog"] = catalog_file(s.name, w.field)
    return inputs


def config_slice(block, *keys):
    """The keys of one config block that a rule uses, passed as params so that changing them reruns it."""
    return {k: config[block][k] for k in keys}


def code_version(script):
    """Hash of a step script and the library code it imports (a params entry: editing it reruns the jobs)."""
    return _code_version(os.path.join(workflow.basedir, "workflow_scripts", script))


def survey_params(name):
    """One survey's config block (plus its name), for the steps that read it: Survey.from_config(d["name"], d)."""
    return {"name": name, **config["surveys"][name]}


def lineage(*surveys):
    """Provenance of the files a job writes: the seed, and a hash per survey description they descend from."""
    return {"seed": config["seed"], "config_hash": lineage_hash(config, surveys)}
