# Blend photometry of the deblending study (Hemmati et al. 2022, sec. 3.4, Fig 7): model fits of every blend with
# all its detected objects at once, on the low-res images at low-res peaks and at GAN peaks, and on the hi-res
# images at hi-res peaks (reference); the dominant source's delta-mag, a GP regression, and Fig 7.
# Engine (photometry.engine): ngmix where importable (conda-forge, envs/photometry.yaml), else the built-in
# batched Gaussian-mixture engine (torch, CPU or GPU).

PHOT = config["photometry"]
PHOT_RES = PHOT["resources"]
PHOT_DIR = f"{H22_DIR}/photometry"
PHOT_RUNS = ["lo_at_lo", "lo_at_gan", "hi_at_hi"]


rule hemmati22_photometry:
    """One photometry run: lo_at_lo | lo_at_gan (low-res images at low-res / GAN peaks) | hi_at_hi (reference)."""
    input:
        blends_hi=rules.hemmati22_samples.output.blends_hi,
        blends_lo=rules.hemmati22_samples.output.blends_lo,
        peaks=rules.hemmati22_detect.output.peaks,
        psf=f"results/data/{H22_SURVEY.name}/{H22_FIELD}/psf/{H22['band']}.fits",
    output:
        f"{PHOT_DIR}/{{run}}.parquet",
    wildcard_constraints:
        run="|".join(PHOT_RUNS),
    params:
        photometry=PHOT,
        study=h22("survey", "band", "target", "gan_models"),
        device=config["device"],
        seed=config["seed"],
    log:
        f"{LOGS}/hemmati22/photometry_{{run}}.log",
    benchmark:
        f"{BENCH}/hemmati22/photometry_{{run}}.tsv"
    threads: PHOT_RES["threads"]
    resources:
        gpu=PHOT_RES["gpu"],
        mem_mb=PHOT_RES["mem_mb"],
        runtime=PHOT_RES["runtime"],
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/hemmati22_photometry.py"


rule hemmati22_photometry_summary:
    """Dominant source of every blend per run, GP regression of delta-mag, improvement factor (photometry.json)."""
    input:
        runs=expand(f"{PHOT_DIR}/{{run}}.parquet", run=PHOT_RUNS),
        blends_hi=rules.hemmati22_samples.output.blends_hi,
    output:
        summary=f"{H22_DIR}/photometry.json",
        dominant=f"{PHOT_DIR}/dominant.parquet",
        gp=f"{PHOT_DIR}/gp.parquet",
    params:
        photometry=PHOT,
        band=H22["band"],
        seed=config["seed"],
    log:
        f"{LOGS}/hemmati22/photometry_summary.log",
    benchmark:
        f"{BENCH}/hemmati22/photometry_summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/hemmati22_photometry_summary.py"


rule hemmati22_fig7:
    """Fig 7: measured vs input magnitude of the dominant source, low-res vs GAN positions, GP regression."""
    input:
        dominant=rules.hemmati22_photometry_summary.output.dominant,
        gp=rules.hemmati22_photometry_summary.output.gp,
        summary=rules.hemmati22_photometry_summary.output.summary,
    output:
        png=f"{H22_FIG}/fig7_photometry.png",
        pdf=f"{H22_FIG}/fig7_photometry.pdf",
    params:
        band=H22["band"],
    log:
        f"{LOGS}/hemmati22/hemmati22_fig7.log",
    benchmark:
        f"{BENCH}/hemmati22/hemmati22_fig7.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/steps/hemmati22_fig7.py"
