# Deblending with GANs (Hemmati et al. 2022): cutouts -> HSC-like degradation -> blends + isolated controls ->
# DCGAN and SR-GANs -> inference -> peaks on hi/lo/GAN images -> metrics, SOM, figures.
# Reads only the data boundary of the configured survey and field (embedded or downloaded alike).
# Every rule gets its config through params (the survey blocks via survey_params), the hash of the library code its
# step imports (code) and the provenance of what it writes (lineage: the seed and the two surveys' hashes).
from workflow_scripts.studies.hemmati22.paper import PHOTOMETRY_RUNS  # plain data: no heavy imports at parse time

H22 = config["hemmati22"]
H22_DIR = "results/hemmati22"
H22_SURVEY = SURVEYS[H22["survey"]]
H22_FIELD = H22["field"]
H22_SRGANS = [m for m, spec in H22["models"].items() if spec["kind"] == "srgan"]
H22_DCGAN = next(m for m, spec in H22["models"].items() if spec["kind"] == "dcgan")
# one-band SR-GANs: the GAN images of the "as coded" protocol (the authors' detector ran on one band)
H22_SRGANS_ONE = [m for m in H22_SRGANS if H22["models"][m]["bands"] == "one"]
H22_PSFS = [psf_file(H22_SURVEY.name, H22_FIELD, b) for b in H22_SURVEY.bands]
H22_RES = H22["resources"]
H22_SURVEY_PARAMS = survey_params(H22["survey"])
H22_TARGET_PARAMS = survey_params(H22["target"]["survey"])
H22_LINEAGE = lineage(H22["survey"], H22["target"]["survey"])
#: DCGAN images of Fig 2 when the model's config names no n_samples (an 8 x 8 grid)
H22_DCGAN_SAMPLES = 64
H22_REPORT = "Hemmati+22 deblending"


rule hemmati22_cutouts:
    """Paper cuts, training / blend regions split by declination, 64x64 cutouts in every band."""
    input:
        images=[band_file(H22_SURVEY.name, H22_FIELD, b) for b in H22_SURVEY.bands],
        rms=[rms_file(H22_SURVEY.name, H22_FIELD, b) for b in H22_SURVEY.bands],
        catalog=catalog_file(H22_SURVEY.name, H22_FIELD),
    output:
        train=f"{H22_DIR}/cutouts_train.fits",
        blend=f"{H22_DIR}/cutouts_blend.fits",
        summary=f"{H22_DIR}/selection.json",
    params:
        study=config_slice("hemmati22", "survey", "select", "cutout_size", "train_fraction"),
        survey=H22_SURVEY_PARAMS,
        code=code_version("steps/hemmati22/cutouts.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/cutouts.log",
    benchmark:
        f"{BENCH}/hemmati22/cutouts.tsv"
    priority: PRIORITY["start"]
    threads: 1
    resources:
        mem_mb=mosaic_mem_mb(H22_SURVEY, copies=2),
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/cutouts.py"


rule hemmati22_samples:
    """HSC-like low-res training images; blends and the isolated control sample in hi and low resolution."""
    input:
        train=rules.hemmati22_cutouts.output.train,
        blend=rules.hemmati22_cutouts.output.blend,
        psfs=H22_PSFS,
    output:
        train_lo=f"{H22_DIR}/lowres_train.fits",
        blends_hi=f"{H22_DIR}/blends_hi.fits",
        blends_lo=f"{H22_DIR}/blends_lo.fits",
        isolated_hi=f"{H22_DIR}/isolated_hi.fits",
        isolated_lo=f"{H22_DIR}/isolated_lo.fits",
    params:
        study=config_slice("hemmati22", "target", "band", "n_blends", "n_isolated", "max_offset_px"),
        target=H22_TARGET_PARAMS,
        seed=config["seed"],
        code=code_version("steps/hemmati22/samples.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/samples.log",
    benchmark:
        f"{BENCH}/hemmati22/samples.tsv"
    priority: PRIORITY["start"]
    threads: 1
    resources:
        mem_mb=2000 + (H22["n_blends"] + H22["n_isolated"]) * len(H22_SURVEY.bands) * 64 * 64 * 4 * 3 // 2**20,
        runtime=60,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/samples.py"


rule hemmati22_train:
    """Train one GAN of the study on the training region (checkpointed, resumable, GPU when present)."""
    input:
        train_hi=rules.hemmati22_cutouts.output.train,
        train_lo=rules.hemmati22_samples.output.train_lo,
    output:
        generator=f"{H22_DIR}/models/{{model}}/generator.pt",
        scaling=f"{H22_DIR}/models/{{model}}/scaling.json",
    params:
        out_dir=lambda w, output: os.path.dirname(output.generator),
        model=lambda w: H22["models"][w.model],
        study=config_slice("hemmati22", "survey", "band", "augment"),
        seed=config["seed"],
        survey=H22_SURVEY_PARAMS,
        device=config["device"],
        processes=H22_RES.get("processes"),
        code=code_version("steps/hemmati22/train.py"),
        lineage=H22_LINEAGE,
    wildcard_constraints:
        model="|".join(H22["models"]),
    log:
        f"{LOGS}/hemmati22/train_{{model}}.log",
    benchmark:
        f"{BENCH}/hemmati22/train_{{model}}.tsv"
    priority: PRIORITY["train"]
    threads: H22_RES["threads"]
    retries: 2
    resources:
        # the SLURM executor plugin's names: gpu (+ gpu_model) -> --gpus, cpus_per_task, mem_mb, runtime, and the
        # partition when the config names one; more than one gpu trains data-parallel (torchrun)
        gpu=H22_RES["gpu"],
        mem_mb=H22_RES["mem_mb"],
        runtime=H22_RES["runtime"],
        cpus_per_task=lambda wildcards, threads: threads,
        **{k: H22_RES[c] for k, c in (("gpu_model", "gpu_model"), ("slurm_partition", "partition")) if c in H22_RES},
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/train.py"


rule hemmati22_infer:
    """SR-GAN images of the blends or of the isolated control sample, in batches."""
    input:
        generator=f"{H22_DIR}/models/{{model}}/generator.pt",
        scaling=f"{H22_DIR}/models/{{model}}/scaling.json",
        lowres=f"{H22_DIR}/{{sample}}_lo.fits",
    output:
        f"{H22_DIR}/gan/{{model}}_{{sample}}.fits",
    params:
        survey=H22_SURVEY_PARAMS,
        device=config["device"],
        code=code_version("steps/hemmati22/infer.py"),
        lineage=H22_LINEAGE,
    wildcard_constraints:
        model="|".join(H22_SRGANS),
        sample="blends|isolated",
    log:
        f"{LOGS}/hemmati22/infer_{{model}}_{{sample}}.log",
    benchmark:
        f"{BENCH}/hemmati22/infer_{{model}}_{{sample}}.tsv"
    priority: PRIORITY["tail"]
    threads: H22_RES["threads"]
    resources:
        gpu=H22_RES["gpu"],
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/infer.py"


rule hemmati22_detect:
    """Peaks (PSF-matched filter, local maxima) on hi, low and GAN images, Hungarian-matched to the truth."""
    input:
        blends_hi=rules.hemmati22_samples.output.blends_hi,
        blends_lo=rules.hemmati22_samples.output.blends_lo,
        isolated_hi=rules.hemmati22_samples.output.isolated_hi,
        isolated_lo=rules.hemmati22_samples.output.isolated_lo,
        psfs=H22_PSFS,
        gan_blends=[f"{H22_DIR}/gan/{m}_blends.fits" for m in H22_SRGANS],
        gan_isolated=[f"{H22_DIR}/gan/{m}_isolated.fits" for m in H22_SRGANS],
    output:
        blends=f"{H22_DIR}/detections_blends.parquet",
        isolated=f"{H22_DIR}/detections_isolated.parquet",
        peaks=f"{H22_DIR}/peaks.parquet",
    params:
        study=config_slice("hemmati22", "survey", "target", "band", "detection", "max_offset_px", "models"),
        survey=H22_SURVEY_PARAMS,
        target=H22_TARGET_PARAMS,
        code=code_version("steps/hemmati22/detect.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/detect.log",
    benchmark:
        f"{BENCH}/hemmati22/detect.tsv"
    priority: PRIORITY["tail"]
    threads: 1
    resources:
        mem_mb=2000 + (H22["n_blends"] + H22["n_isolated"]) * len(H22_SURVEY.bands) * 64 * 64 * 4 * 4 // 2**20,
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/detect.py"


rule hemmati22_lowres_as_coded:
    """Low-res blends and isolated galaxies as the authors' code made them (protocol "as coded")."""
    input:
        blends_hi=rules.hemmati22_samples.output.blends_hi,
        isolated_hi=rules.hemmati22_samples.output.isolated_hi,
        psf=psf_file(H22_SURVEY.name, H22_FIELD, H22["band"]),
    output:
        blends_lo=f"{H22_DIR}/as_coded/blends_lo.fits",
        isolated_lo=f"{H22_DIR}/as_coded/isolated_lo.fits",
    params:
        study=config_slice("hemmati22", "band", "target", "as_coded"),
        target=H22_TARGET_PARAMS,
        seed=config["seed"],
        code=code_version("steps/hemmati22/lowres_as_coded.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/lowres_as_coded.log",
    benchmark:
        f"{BENCH}/hemmati22/lowres_as_coded.tsv"
    threads: 1
    priority: PRIORITY["tail"]
    resources:
        mem_mb=2000 + (H22["n_blends"] + H22["n_isolated"]) * len(H22_SURVEY.bands) * 64 * 64 * 4 * 2 // 2**20,
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/lowres_as_coded.py"


rule hemmati22_detect_as_coded:
    """The authors' detector, matching and false-positive definition on hi, as-coded low and one-band GAN images."""
    input:
        blends_hi=rules.hemmati22_samples.output.blends_hi,
        isolated_hi=rules.hemmati22_samples.output.isolated_hi,
        blends_lo=rules.hemmati22_lowres_as_coded.output.blends_lo,
        isolated_lo=rules.hemmati22_lowres_as_coded.output.isolated_lo,
        psf=psf_file(H22_SURVEY.name, H22_FIELD, H22["band"]),
        gan_blends=[f"{H22_DIR}/gan/{m}_blends.fits" for m in H22_SRGANS_ONE],
        gan_isolated=[f"{H22_DIR}/gan/{m}_isolated.fits" for m in H22_SRGANS_ONE],
    output:
        blends=f"{H22_DIR}/as_coded/detections_blends.parquet",
        isolated=f"{H22_DIR}/as_coded/detections_isolated.parquet",
        summary=f"{H22_DIR}/as_coded/detection.json",
        peaks=f"{H22_DIR}/as_coded/peaks.parquet",
    params:
        study=config_slice("hemmati22", "band", "target", "as_coded"),
        target=H22_TARGET_PARAMS,
        models=H22_SRGANS_ONE,
        code=code_version("steps/hemmati22/detect_as_coded.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/detect_as_coded.log",
    benchmark:
        f"{BENCH}/hemmati22/detect_as_coded.tsv"
    threads: 1
    priority: PRIORITY["tail"]
    resources:
        mem_mb=2000 + (H22["n_blends"] + H22["n_isolated"]) * len(H22_SURVEY.bands) * 64 * 64 * 4 * 2 // 2**20,
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/detect_as_coded.py"


rule hemmati22_metrics:
    """metrics.json: detection fractions, false positives, precision/recall, photometry beside the paper's values."""
    input:
        blends=rules.hemmati22_detect.output.blends,
        isolated=rules.hemmati22_detect.output.isolated,
        photometry=f"{H22_DIR}/photometry.json",
        as_coded=rules.hemmati22_detect_as_coded.output.summary,
        as_coded_blends=rules.hemmati22_detect_as_coded.output.blends,
        as_coded_photometry=f"{H22_DIR}/as_coded/photometry.json",
    output:
        metrics=f"{H22_DIR}/metrics.json",
        binned=f"{H22_DIR}/detection_fraction.parquet",
        binned_as_coded=f"{H22_DIR}/as_coded/detection_fraction.parquet",
    params:
        study=config_slice("hemmati22", "gan_models"),
        code=code_version("steps/hemmati22/metrics.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/metrics.log",
    benchmark:
        f"{BENCH}/hemmati22/metrics.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/metrics.py"


rule hemmati22_som:
    """The paper's 32x24 self-organising map of the blend parameters, trained once (weights + scaler) for Fig 6."""
    input:
        detections=rules.hemmati22_detect.output.blends,
    output:
        som=f"{H22_DIR}/som.npz",
        cells=f"{H22_DIR}/som_cells.parquet",
    params:
        som=H22["som"],
        seed=config["seed"],
        code=code_version("steps/hemmati22/som.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/som.log",
    benchmark:
        f"{BENCH}/hemmati22/som.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/som.py"


rule hemmati22_dcgan_samples:
    """Images the trained DCGAN draws from seeded noise, in physical units (Fig 2)."""
    input:
        train=rules.hemmati22_cutouts.output.train,
        generator=f"{H22_DIR}/models/{H22_DCGAN}/generator.pt",
        scaling=f"{H22_DIR}/models/{H22_DCGAN}/scaling.json",
    output:
        f"{H22_DIR}/gan/{H22_DCGAN}_samples.fits",
    params:
        n_samples=H22["models"][H22_DCGAN].get("n_samples", H22_DCGAN_SAMPLES),
        seed=config["seed"],
        device=config["device"],
        code=code_version("steps/hemmati22/dcgan_samples.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/dcgan_samples.log",
    benchmark:
        f"{BENCH}/hemmati22/dcgan_samples.tsv"
    threads: 1
    resources:
        gpu=H22_RES["gpu"],
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/dcgan_samples.py"


H22_FIG = "results/figures/hemmati22"
H22_GAN = H22["gan_models"]["gan"]
H22_GAN7 = H22["gan_models"]["gan7"]
# one rule per figure (rule name -> file name, report subcategory, inputs); captions/hemmati22/{name}.rst
H22_FIGURES = {
    "hemmati22_fig2": dict(
        name="fig2_dcgan_samples",
        title="Fig 2: DCGAN samples",
        inputs=dict(
            train=rules.hemmati22_cutouts.output.train,
            samples=rules.hemmati22_dcgan_samples.output[0],
        ),
    ),
    "hemmati22_fig3": dict(
        name="fig3_superresolution",
        title="Fig 3: super-resolution",
        inputs=dict(
            hi=rules.hemmati22_samples.output.isolated_hi,
            lo=rules.hemmati22_samples.output.isolated_lo,
            gan=f"{H22_DIR}/gan/{H22_GAN}_isolated.fits",
        ),
    ),
    "hemmati22_fig4": dict(
        name="fig4_blends_peaks",
        title="Fig 4: blends and their peaks",
        inputs=dict(
            hi=rules.hemmati22_samples.output.blends_hi,
            lo=rules.hemmati22_samples.output.blends_lo,
            gan=f"{H22_DIR}/gan/{H22_GAN}_blends.fits",
            detections=rules.hemmati22_detect.output.blends,
            peaks=rules.hemmati22_detect.output.peaks,
        ),
    ),
    "hemmati22_fig5": dict(
        name="fig5_detection_fraction",
        title="Fig 5: detection fraction",
        inputs=dict(binned=rules.hemmati22_metrics.output.binned,
                    binned_as_coded=rules.hemmati22_metrics.output.binned_as_coded),
    ),
    "hemmati22_fig6": dict(
        name="fig6_som",
        title="Fig 6: self-organising map",
        inputs=dict(detections=rules.hemmati22_detect.output.blends, som=rules.hemmati22_som.output.som),
    ),
    "hemmati22_fig8": dict(
        name="fig8_multiband_peaks",
        title="Fig 8: 7-band blends and their peaks",
        inputs=dict(
            hi=rules.hemmati22_samples.output.blends_hi,
            lo=rules.hemmati22_samples.output.blends_lo,
            gan=f"{H22_DIR}/gan/{H22_GAN7}_blends.fits",
            detections=rules.hemmati22_detect.output.blends,
            peaks=rules.hemmati22_detect.output.peaks,
        ),
    ),
    "hemmati22_fig9": dict(
        name="fig9_one_vs_seven_bands",
        title="Fig 9: one vs seven bands",
        inputs=dict(binned=rules.hemmati22_metrics.output.binned),
    ),
}


for _rule, _fig in H22_FIGURES.items():

    rule:
        name:
            _rule
        message:
            f"Hemmati+22 {_fig['name']}"
        input:
            **_fig["inputs"],
        output:
            # in the report under the figure's subcategory, with its caption
            png=report(f"{H22_FIG}/{_fig['name']}.png", caption=f"captions/hemmati22/{_fig['name']}.rst",
                       category=H22_REPORT, subcategory=_fig["title"]),
            pdf=report(f"{H22_FIG}/{_fig['name']}.pdf", caption=f"captions/hemmati22/{_fig['name']}.rst",
                       category=H22_REPORT, subcategory=_fig["title"]),
        params:
            study=config_slice("hemmati22", "band", "gan_models"),
            bands=H22_SURVEY.band_names,
            code=code_version("steps/hemmati22/figure.py"),
            lineage=H22_LINEAGE,
        log:
            f"{LOGS}/hemmati22/{_rule}.log",
        benchmark:
            f"{BENCH}/hemmati22/{_rule}.tsv"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        conda:
            "../envs/photometry.yaml"  # galsim (blend files), scikit-learn + minisom (SOM)
        script:
            "../workflow_scripts/steps/hemmati22/figure.py"


# ---------------------------------------------------------------------------------------------------- photometry
# Blend photometry of the deblending study (Hemmati et al. 2022, sec. 3.4, Fig 7): model fits of every blend with
# all its detected objects at once, on the low-res images at low-res peaks and at GAN peaks, and on the hi-res
# images at hi-res peaks (reference); the dominant source's delta-mag, a GP regression, and Fig 7.
# Engine (photometry.engine): ngmix where importable (conda-forge, envs/photometry.yaml), else the built-in
# batched Gaussian-mixture engine (torch, CPU or GPU).

PHOT = config["photometry"]
PHOT_RES = PHOT["resources"]
PHOT_DIR = f"{H22_DIR}/photometry"
H22_FIG7_TITLE = "Fig 7: photometry"
PHOT_RUNS = list(PHOTOMETRY_RUNS)


rule hemmati22_photometry:
    """One photometry run: lo_at_lo | lo_at_gan (low-res images at low-res / GAN peaks) | hi_at_hi (reference)."""
    input:
        blends_hi=rules.hemmati22_samples.output.blends_hi,
        blends_lo=rules.hemmati22_samples.output.blends_lo,
        peaks=rules.hemmati22_detect.output.peaks,
        psf=psf_file(H22_SURVEY.name, H22_FIELD, H22["band"]),
    output:
        f"{PHOT_DIR}/{{run}}.parquet",
    wildcard_constraints:
        run="|".join(PHOT_RUNS),
    params:
        photometry=PHOT,
        study=config_slice("hemmati22", "survey", "band", "target", "gan_models"),
        survey=H22_SURVEY_PARAMS,
        target=H22_TARGET_PARAMS,
        device=config["device"],
        seed=config["seed"],
        code=code_version("steps/hemmati22/photometry.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/photometry_{{run}}.log",
    benchmark:
        f"{BENCH}/hemmati22/photometry_{{run}}.tsv"
    priority: PRIORITY["tail"]
    threads: PHOT_RES["threads"]
    resources:
        gpu=PHOT_RES["gpu"],
        mem_mb=PHOT_RES["mem_mb"],
        runtime=PHOT_RES["runtime"],
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/photometry.py"


rule hemmati22_photometry_as_coded:
    """The authors' photometry statistic (median |dF/F|, low-res vs GAN positions) on their subset of blends."""
    input:
        blends_hi=rules.hemmati22_samples.output.blends_hi,
        blends_lo=rules.hemmati22_lowres_as_coded.output.blends_lo,
        detections=rules.hemmati22_detect_as_coded.output.blends,
        peaks=rules.hemmati22_detect_as_coded.output.peaks,
    output:
        summary=f"{H22_DIR}/as_coded/photometry.json",
        dominant=f"{H22_DIR}/as_coded/photometry_dominant.parquet",
    params:
        photometry=PHOT,
        study=config_slice("hemmati22", "survey", "band", "target", "gan_models", "as_coded"),
        survey=H22_SURVEY_PARAMS,
        target=H22_TARGET_PARAMS,
        device=config["device"],
        seed=config["seed"],
        code=code_version("steps/hemmati22/photometry_as_coded.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/photometry_as_coded.log",
    benchmark:
        f"{BENCH}/hemmati22/photometry_as_coded.tsv"
    threads: PHOT_RES["threads"]
    priority: PRIORITY["tail"]
    resources:
        gpu=PHOT_RES["gpu"],
        mem_mb=PHOT_RES["mem_mb"],
        runtime=PHOT_RES["runtime"],
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/photometry_as_coded.py"


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
        code=code_version("steps/hemmati22/photometry_summary.py"),
        lineage=H22_LINEAGE,
    log:
        f"{LOGS}/hemmati22/photometry_summary.log",
    benchmark:
        f"{BENCH}/hemmati22/photometry_summary.tsv"
    priority: PRIORITY["tail"]
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/hemmati22/photometry_summary.py"


rule hemmati22_fig7:
    """Fig 7: measured vs input magnitude of the dominant source, low-res vs GAN positions, GP regression."""
    input:
        dominant=rules.hemmati22_photometry_summary.output.dominant,
        gp=rules.hemmati22_photometry_summary.output.gp,
        summary=rules.hemmati22_photometry_summary.output.summary,
        as_coded=rules.hemmati22_photometry_as_coded.output.dominant,
        as_coded_summary=rules.hemmati22_photometry_as_coded.output.summary,
    output:
        png=report(f"{H22_FIG}/fig7_photometry.png", caption="captions/hemmati22/fig7_photometry.rst",
                   category=H22_REPORT, subcategory=H22_FIG7_TITLE),
        pdf=report(f"{H22_FIG}/fig7_photometry.pdf", caption="captions/hemmati22/fig7_photometry.rst",
                   category=H22_REPORT, subcategory=H22_FIG7_TITLE),
    params:
        band=H22["band"],
        code=code_version("steps/hemmati22/fig7.py"),
        lineage=H22_LINEAGE,
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
        "../workflow_scripts/steps/hemmati22/fig7.py"


rule hemmati22_all:
    """Everything of the deblending study: metrics and every figure."""
    input:
        rules.hemmati22_metrics.output.metrics,
        rules.hemmati22_som.output.cells,
        [f"{H22_FIG}/{fig['name']}.{ext}" for fig in H22_FIGURES.values() for ext in ("png", "pdf")],
        [f"{H22_FIG}/fig7_photometry.{ext}" for ext in ("png", "pdf")],
