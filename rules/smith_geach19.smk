# Generative deep fields (Smith & Geach 2019): training field (clip, min-max) -> Spatial-GAN on crops with a
# self-ensemble of snapshots -> realisations tessellated from one noise field, streamed to FITS -> the same source
# extraction on real and generated fields -> KS tests, counts, colours -> figures.
# Reads only the data boundary of the configured survey and field (embedded or downloaded alike).

SG19 = config["smith_geach19"]
SG19_DIR = "results/smith_geach19"
SG19_FIG = "results/figures/smith_geach19"
SG19_SURVEY = SURVEYS[SG19["survey"]]
SG19_FIELD = SG19["field"]
SG19_BANDS = list(SG19["bands"])
SG19_RES = SG19["resources"]
SG19_LINEAGE = lineage(SG19["survey"])
SG19_REPORT = "Smith & Geach 2019 deep fields"
SG19_FIELDS = [f"{DATA}/derived/smith_geach19/fields/r{r}_{b}.fits" for r in range(SG19["realisations"])
               for b in SG19_BANDS]
SG19_MOCKS = [f"{DATA}/derived/smith_geach19/mock/r{r}_{b}.fits" for r in range(SG19["realisations"])
              for b in SG19_BANDS]


rule smith_geach19_prepare:
    """The training field: the bands stacked (rotated and cropped as configured), clipped, min-max normalised."""
    input:
        images=[band_file(SG19_SURVEY.name, SG19_FIELD, b) for b in SG19_BANDS],
    output:
        field=f"{SG19_DIR}/training_field.fits",
        meta=f"{SG19_DIR}/training_field.json",
    params:
        study=config_slice("smith_geach19", "bands", "preprocess"),
        code=code_version("steps/smith_geach19/prepare.py"),
        lineage=SG19_LINEAGE,
    log:
        f"{LOGS}/smith_geach19/prepare.log",
    benchmark:
        f"{BENCH}/smith_geach19/prepare.tsv"
    priority: PRIORITY["start"]
    threads: 1
    resources:
        mem_mb=mosaic_mem_mb(SG19_SURVEY, copies=3),
        runtime=15,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/smith_geach19/prepare.py"


rule smith_geach19_train:
    """Spatial-GAN (relativistic-average, packed discriminator) on crops; the self-ensemble's snapshots;
    checkpointed, resumable, several GPUs (or CPU processes) through torchrun."""
    input:
        field=rules.smith_geach19_prepare.output.field,
    output:
        ensemble=f"{SG19_DIR}/model/ensemble.json",
    params:
        study=config_slice("smith_geach19", "model", "ensemble", "crop_size"),
        seed=config["seed"],
        device=config["device"],
        processes=SG19_RES.get("processes"),
        code=code_version("steps/smith_geach19/train.py"),
        lineage=SG19_LINEAGE,
    log:
        f"{LOGS}/smith_geach19/train.log",
    benchmark:
        f"{BENCH}/smith_geach19/train.tsv"
    priority: PRIORITY["train_next"]
    threads: SG19_RES["threads"]
    retries: 2
    resources:
        gpu=SG19_RES["gpu"],
        mem_mb=SG19_RES["mem_mb"],
        runtime=SG19_RES["runtime"],
        cpus_per_task=lambda wildcards, threads: threads,
        **{k: SG19_RES[c] for k, c in (("gpu_model", "gpu_model"), ("slurm_partition", "partition")) if c in SG19_RES},
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/steps/smith_geach19/train.py"


rule smith_geach19_fields:
    """Realisations tessellated to field_size, one FITS per band (streamed); seamlessness, timing, memory."""
    input:
        ensemble=rules.smith_geach19_train.output.ensemble,
        meta=rules.smith_geach19_prepare.output.meta,
    output:
        images=SG19_FIELDS,
        summary=f"{SG19_DIR}/generation.json",
    params:
        study=config_slice("smith_geach19", "bands", "field_size", "realisations", "tessellation",
                           "benchmark_side"),
        seed=config["seed"],
        device=config["device"],
        code=code_version("steps/smith_geach19/field.py"),
        lineage=SG19_LINEAGE,
    log:
        f"{LOGS}/smith_geach19/fields.log",
    benchmark:
        f"{BENCH}/smith_geach19/fields.tsv"
    threads: SG19_RES["threads"]
    resources:
        gpu=SG19_RES["gpu"],
        mem_mb=2000,
        runtime=SG19_RES["runtime"],
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/steps/smith_geach19/field.py"


rule smith_geach19_catalog_real:
    """sep on the band-mean image (local background, 5 px >= 5 sigma), Kron magnitudes per band: the real field."""
    input:
        field=rules.smith_geach19_prepare.output.field,
        meta=rules.smith_geach19_prepare.output.meta,
    output:
        catalog=f"{SG19_DIR}/catalog_real.parquet",
    params:
        study=config_slice("smith_geach19", "bands", "validation"),
        code=code_version("steps/smith_geach19/catalog.py"),
        lineage=SG19_LINEAGE,
    log:
        f"{LOGS}/smith_geach19/catalog_real.log",
    benchmark:
        f"{BENCH}/smith_geach19/catalog_real.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/smith_geach19/catalog.py"


rule smith_geach19_catalog:
    """The same extraction on every generated realisation; the areas compared."""
    input:
        meta=rules.smith_geach19_prepare.output.meta,
        images=SG19_FIELDS,
    output:
        generated=f"{SG19_DIR}/catalog_generated.parquet",
        areas=f"{SG19_DIR}/areas.json",
    params:
        study=config_slice("smith_geach19", "bands", "field_size", "realisations", "validation"),
        code=code_version("steps/smith_geach19/catalog.py"),
        lineage=SG19_LINEAGE,
    log:
        f"{LOGS}/smith_geach19/catalog.log",
    benchmark:
        f"{BENCH}/smith_geach19/catalog.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/smith_geach19/catalog.py"


rule smith_geach19_mock:
    """The baseline without learning: the real catalogue's sources as exponential disks through the measured PSFs
    on the field's sky noise, as many realisations as the generator's; the same extraction."""
    input:
        catalog=rules.smith_geach19_catalog_real.output.catalog,
        field=rules.smith_geach19_prepare.output.field,
        meta=rules.smith_geach19_prepare.output.meta,
        psfs=[psf_file(SG19_SURVEY.name, SG19_FIELD, b) for b in SG19_BANDS],
    output:
        images=SG19_MOCKS,
        catalog=f"{SG19_DIR}/catalog_mock.parquet",
        summary=f"{SG19_DIR}/mock.json",
    params:
        study=config_slice("smith_geach19", "bands", "field_size", "realisations", "validation"),
        seed=config["seed"],
        code=code_version("steps/smith_geach19/mock.py"),
        lineage=SG19_LINEAGE,
    log:
        f"{LOGS}/smith_geach19/mock.log",
    benchmark:
        f"{BENCH}/smith_geach19/mock.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/smith_geach19/mock.py"


rule smith_geach19_metrics:
    """results/smith_geach19/metrics.json: KS p and median offsets per band, counts ratio, seamlessness, speed;
    the same statistics for the catalogue mock and for the real field's two halves (the null)."""
    input:
        real=rules.smith_geach19_catalog_real.output.catalog,
        generated=rules.smith_geach19_catalog.output.generated,
        areas=rules.smith_geach19_catalog.output.areas,
        generation=rules.smith_geach19_fields.output.summary,
        mock=rules.smith_geach19_mock.output.catalog,
        mock_summary=rules.smith_geach19_mock.output.summary,
        meta=rules.smith_geach19_prepare.output.meta,
    output:
        metrics=f"{SG19_DIR}/metrics.json",
    params:
        study=config_slice("smith_geach19", "bands", "validation"),
        seed=config["seed"],
        code=code_version("steps/smith_geach19/metrics.py"),
        lineage=SG19_LINEAGE,
    log:
        f"{LOGS}/smith_geach19/metrics.log",
    benchmark:
        f"{BENCH}/smith_geach19/metrics.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/smith_geach19/metrics.py"


SG19_FIGURES = {
    "smith_geach19_fig1": dict(name="fig1_training_evolution", title="Fig 1: training evolution",
                               inputs=dict(ensemble=rules.smith_geach19_train.output.ensemble,
                                           meta=rules.smith_geach19_prepare.output.meta)),
    "smith_geach19_fig2": dict(name="fig2_generated_vs_real", title="Fig 2: generated vs real",
                               inputs=dict(field=rules.smith_geach19_prepare.output.field,
                                           meta=rules.smith_geach19_prepare.output.meta, images=SG19_FIELDS,
                                           mock=SG19_MOCKS[:len(SG19_BANDS)])),
    "smith_geach19_fig3": dict(name="fig3_thumbnails", title="Fig 3: real or generated?",
                               inputs=dict(field=rules.smith_geach19_prepare.output.field,
                                           meta=rules.smith_geach19_prepare.output.meta, images=SG19_FIELDS,
                                           real=rules.smith_geach19_catalog_real.output.catalog,
                                           generated=rules.smith_geach19_catalog.output.generated),
                               outputs=dict(key=f"{SG19_DIR}/fig3_key.txt")),
    "smith_geach19_fig4": dict(name="fig4_magnitudes", title="Fig 4: magnitude distributions",
                               inputs=dict(real=rules.smith_geach19_catalog_real.output.catalog,
                                           generated=rules.smith_geach19_catalog.output.generated,
                                           mock=rules.smith_geach19_mock.output.catalog,
                                           metrics=rules.smith_geach19_metrics.output.metrics,
                                           meta=rules.smith_geach19_prepare.output.meta)),
    "smith_geach19_fig5": dict(name="fig5_counts_colours_sizes", title="Counts, colours and sizes (ours)",
                               inputs=dict(real=rules.smith_geach19_catalog_real.output.catalog,
                                           generated=rules.smith_geach19_catalog.output.generated,
                                           mock=rules.smith_geach19_mock.output.catalog,
                                           areas=rules.smith_geach19_catalog.output.areas,
                                           mock_summary=rules.smith_geach19_mock.output.summary,
                                           meta=rules.smith_geach19_prepare.output.meta)),
}


for _rule, _fig in SG19_FIGURES.items():

    rule:
        name:
            _rule
        message:
            f"Smith & Geach 2019 {_fig['name']}"
        input:
            **_fig["inputs"],
        output:
            png=report(f"{SG19_FIG}/{_fig['name']}.png", caption=f"captions/smith_geach19/{_fig['name']}.rst",
                       category=SG19_REPORT, subcategory=_fig["title"]),
            pdf=report(f"{SG19_FIG}/{_fig['name']}.pdf", caption=f"captions/smith_geach19/{_fig['name']}.rst",
                       category=SG19_REPORT, subcategory=_fig["title"]),
            **_fig.get("outputs", {}),
        params:
            study=config_slice("smith_geach19", "bands", "field_size", "validation"),
            seed=config["seed"],
            code=code_version("steps/smith_geach19/figure.py"),
            lineage=SG19_LINEAGE,
        log:
            f"{LOGS}/smith_geach19/{_rule}.log",
        benchmark:
            f"{BENCH}/smith_geach19/{_rule}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/steps/smith_geach19/figure.py"


rule smith_geach19_all:
    """Everything of the deep-field study: metrics and every figure."""
    input:
        rules.smith_geach19_metrics.output.metrics,
        [f"{SG19_FIG}/{fig['name']}.{ext}" for fig in SG19_FIGURES.values() for ext in ("png", "pdf")],
