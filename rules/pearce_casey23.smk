# cGAN anomaly detection on JWST CEERS (Pearce-Casey et al. 2023): PSF-match every band to F444W -> sep catalogue
# on F277W -> 90x90 cutout cubes (training / validation by position, anomalies) -> pix2pix SW -> LW -> predicted LW
# -> SED errors of the cGAN and of a photometry-only baseline -> metrics, Fig 1a-1e, ROC.
# Reads only the data boundary of the configured survey and fields (embedded or downloaded alike); labels come from
# the embedded truth catalogue when the survey has one.

PC23 = config["pearce_casey23"]
PC23_DIR = "results/pearce_casey23"
PC23_FIG = "results/figures/pearce_casey23"
PC23_SURVEY = SURVEYS[PC23["survey"]]
PC23_FIELDS = list(PC23["fields"])
PC23_BANDS = [b for b in PC23_SURVEY.band_names if b in PC23["input_bands"] + PC23["output_bands"]]
# matched mosaics are as large as the survey's: they go under data_dir (cluster scratch), not results/
PC23_MATCHED = f"{DATA}/derived/pearce_casey23"
PC23_RES = PC23["resources"]
PC23_SURVEY_PARAMS = survey_params(PC23["survey"])
PC23_LINEAGE = lineage(PC23["survey"])
PC23_REPORT = "Pearce-Casey+23 cGAN anomalies"
PC23_TRUTH = PC23_SURVEY.source == "embedded"  # the embedded catalogue holds truth labels; DR0.5 has none


PC23_MATCHED_IMAGE = os.path.join(PC23_MATCHED, "{field}", "{band}.fits")  # .format(field=..., band=...)
PC23_MATCHED_RMS = os.path.join(PC23_MATCHED, "{field}", "{band}.rms.fits")


rule pearce_casey23_match:
    """One band of one pointing convolved to the target band's measured PSF, sep background subtracted."""
    input:
        image=band_file(PC23_SURVEY.name, "{field}", "{band}"),
        rms=rms_file(PC23_SURVEY.name, "{field}", "{band}"),
        psf=psf_file(PC23_SURVEY.name, "{field}", "{band}"),
        target_psf=psf_file(PC23_SURVEY.name, "{field}", PC23["psf_target"]),
    output:
        image=PC23_MATCHED_IMAGE,
        rms=PC23_MATCHED_RMS,
        summary=f"{PC23_DIR}/{{field}}/matched_{{band}}.json",
    wildcard_constraints:
        field="|".join(PC23_FIELDS),
        band="|".join(PC23_BANDS),
    params:
        study=config_slice("pearce_casey23", "psf_target", "psf_wings", "background"),
        survey=PC23_SURVEY_PARAMS,
        code=code_version("steps/pearce_casey23/match.py"),
        lineage=PC23_LINEAGE,
    log:
        f"{LOGS}/pearce_casey23/match_{{field}}_{{band}}.log",
    benchmark:
        f"{BENCH}/pearce_casey23/match_{{field}}_{{band}}.tsv"
    priority: PRIORITY["start"]
    threads: 1
    resources:
        mem_mb=band_mem_mb(PC23_SURVEY, copies=10),
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/pearce_casey23/match.py"


rule pearce_casey23_catalog:
    """sep detection on the matched detection band, apertures in every band, labels from the truth if any."""
    input:
        unpack(
            lambda w: {
                "images": [PC23_MATCHED_IMAGE.format(field=w.field, band=b) for b in PC23_BANDS],
                "rms": [PC23_MATCHED_RMS.format(field=w.field, band=b) for b in PC23_BANDS],
                **({"truth": catalog_file(PC23_SURVEY.name, w.field)} if PC23_TRUTH else {}),
            }
        ),
    output:
        catalog=f"{PC23_DIR}/{{field}}/catalog.parquet",
        summary=f"{PC23_DIR}/{{field}}/catalog.json",
    wildcard_constraints:
        field="|".join(PC23_FIELDS),
    params:
        study=config_slice("pearce_casey23", "detection", "background", "aperture_radius_px", "truth_match_arcsec"),
        bands=PC23_BANDS,
        field_index=lambda w: PC23_FIELDS.index(w.field),
        survey=PC23_SURVEY_PARAMS,
        code=code_version("steps/pearce_casey23/catalog.py"),
        lineage=PC23_LINEAGE,
    log:
        f"{LOGS}/pearce_casey23/catalog_{{field}}.log",
    benchmark:
        f"{BENCH}/pearce_casey23/catalog_{{field}}.tsv"
    priority: PRIORITY["start"]
    threads: 1
    resources:
        mem_mb=mosaic_mem_mb(PC23_SURVEY, copies=3),
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/pearce_casey23/catalog.py"


rule pearce_casey23_cutouts:
    """90x90 cutouts in every band: training (south), validation (north, one cutout away), anomalies."""
    input:
        images=[PC23_MATCHED_IMAGE.format(field=f, band=b) for f in PC23_FIELDS for b in PC23_BANDS],
        rms=[PC23_MATCHED_RMS.format(field=f, band=b) for f in PC23_FIELDS for b in PC23_BANDS],
        catalogs=[f"{PC23_DIR}/{f}/catalog.parquet" for f in PC23_FIELDS],
    output:
        train=f"{PC23_DIR}/cutouts_train.fits",
        validation=f"{PC23_DIR}/cutouts_validation.fits",
        anomalies=f"{PC23_DIR}/cutouts_anomalies.fits",
        summary=f"{PC23_DIR}/cutouts.json",
    params:
        study=config_slice("pearce_casey23", "sample", "cutout_size", "validation_fraction"),
        bands=PC23_BANDS,
        fields=PC23_FIELDS,
        code=code_version("steps/pearce_casey23/cutouts.py"),
        lineage=PC23_LINEAGE,
    log:
        f"{LOGS}/pearce_casey23/cutouts.log",
    benchmark:
        f"{BENCH}/pearce_casey23/cutouts.tsv"
    priority: PRIORITY["start"]
    threads: 1
    resources:
        mem_mb=mosaic_mem_mb(PC23_SURVEY, copies=2),
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/pearce_casey23/cutouts.py"


rule pearce_casey23_train:
    """pix2pix from the input to the output bands (checkpointed, resumable, GPU when present)."""
    input:
        train=rules.pearce_casey23_cutouts.output.train,
    output:
        generator=f"{PC23_DIR}/model/generator.pt",
        scaling=f"{PC23_DIR}/model/scaling.json",
    params:
        out_dir=lambda w, output: os.path.dirname(output.generator),
        study=config_slice("pearce_casey23", "input_bands", "output_bands", "model", "augment"),
        seed=config["seed"],
        device=config["device"],
        processes=PC23_RES.get("processes"),
        code=code_version("steps/pearce_casey23/train.py"),
        lineage=PC23_LINEAGE,
    log:
        f"{LOGS}/pearce_casey23/train.log",
    benchmark:
        f"{BENCH}/pearce_casey23/train.tsv"
    priority: PRIORITY["train_next"]
    threads: PC23_RES["threads"]
    retries: 2
    resources:
        gpu=PC23_RES["gpu"],
        mem_mb=PC23_RES["mem_mb"],
        runtime=PC23_RES["runtime"],
        cpus_per_task=lambda wildcards, threads: threads,
        **{k: PC23_RES[c] for k, c in (("gpu_model", "gpu_model"), ("slurm_partition", "partition")) if c in PC23_RES},
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/steps/pearce_casey23/train.py"


rule pearce_casey23_predict:
    """The generator's output bands for the validation set, the anomalies or the training set (its bias)."""
    input:
        generator=rules.pearce_casey23_train.output.generator,
        scaling=rules.pearce_casey23_train.output.scaling,
        cutouts=f"{PC23_DIR}/cutouts_{{set}}.fits",
    output:
        predicted=f"{PC23_DIR}/predicted_{{set}}.fits",
    wildcard_constraints:
        set="validation|anomalies|train",
    params:
        device=config["device"],
        dihedral=config["pearce_casey23"]["test_time_dihedral"],
        code=code_version("steps/pearce_casey23/predict.py"),
        lineage=PC23_LINEAGE,
    log:
        f"{LOGS}/pearce_casey23/predict_{{set}}.log",
    benchmark:
        f"{BENCH}/pearce_casey23/predict_{{set}}.tsv"
    threads: 1  # a 2-thread job on 2 cores waits until both are idle, behind every 1-thread job (measured: see README)
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/steps/pearce_casey23/predict.py"


rule pearce_casey23_sed:
    """SED errors of the cGAN (raw and bias-calibrated on its training cutouts) and of the photometry-only baseline
    (validation galaxies and anomalies)."""
    input:
        train=rules.pearce_casey23_cutouts.output.train,
        validation=rules.pearce_casey23_cutouts.output.validation,
        anomalies=rules.pearce_casey23_cutouts.output.anomalies,
        pred_validation=f"{PC23_DIR}/predicted_validation.fits",
        pred_anomalies=f"{PC23_DIR}/predicted_anomalies.fits",
        pred_train=f"{PC23_DIR}/predicted_train.fits",
    output:
        table=f"{PC23_DIR}/sed_errors.parquet",
    params:
        study=config_slice("pearce_casey23", "input_bands", "output_bands", "aperture_radius_px", "core_radius_px",
                           "baseline"),
        seed=config["seed"],
        code=code_version("steps/pearce_casey23/sed.py"),
        lineage=PC23_LINEAGE,
    log:
        f"{LOGS}/pearce_casey23/sed.log",
    benchmark:
        f"{BENCH}/pearce_casey23/sed.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/pearce_casey23/sed.py"


rule pearce_casey23_metrics:
    """results/pearce_casey23/metrics.json: SED errors and the merger / ERO AUCs of the cGAN and the baseline."""
    input:
        table=rules.pearce_casey23_sed.output.table,
        cutouts=rules.pearce_casey23_cutouts.output.summary,
    output:
        metrics=f"{PC23_DIR}/metrics.json",
    params:
        study=config_slice("pearce_casey23", "input_bands", "output_bands", "sed"),
        seed=config["seed"],
        code=code_version("steps/pearce_casey23/metrics.py"),
        lineage=PC23_LINEAGE,
    log:
        f"{LOGS}/pearce_casey23/metrics.log",
    benchmark:
        f"{BENCH}/pearce_casey23/metrics.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/pearce_casey23/metrics.py"


# one rule per figure (rule name -> file name, report subcategory); captions/pearce_casey23/{name}.rst
PC23_FIGURES = {
    "pearce_casey23_fig1a": dict(name="fig1a_sed_error", title="Fig 1a: SED errors"),
    "pearce_casey23_fig1b": dict(name="fig1b_eros", title="Fig 1b: EROs"),
    "pearce_casey23_fig1c": dict(name="fig1c_ero_sed", title="Fig 1c: an ERO's SED"),
    "pearce_casey23_fig1d": dict(name="fig1d_mergers", title="Fig 1d: mergers"),
    "pearce_casey23_fig1e": dict(name="fig1e_merger_sed", title="Fig 1e: a merger's SED"),
    "pearce_casey23_roc": dict(name="roc", title="ROC: cGAN vs photometric baseline"),
}


for _rule, _fig in PC23_FIGURES.items():

    rule:
        name:
            _rule
        message:
            f"Pearce-Casey+23 {_fig['name']}"
        input:
            table=rules.pearce_casey23_sed.output.table,
            anomalies=rules.pearce_casey23_cutouts.output.anomalies,
            pred_anomalies=f"{PC23_DIR}/predicted_anomalies.fits",
            metrics=rules.pearce_casey23_metrics.output.metrics,
        output:
            png=report(f"{PC23_FIG}/{_fig['name']}.png", caption=f"captions/pearce_casey23/{_fig['name']}.rst",
                       category=PC23_REPORT, subcategory=_fig["title"]),
            pdf=report(f"{PC23_FIG}/{_fig['name']}.pdf", caption=f"captions/pearce_casey23/{_fig['name']}.rst",
                       category=PC23_REPORT, subcategory=_fig["title"]),
        params:
            study=config_slice("pearce_casey23", "input_bands", "output_bands", "sed"),
            code=code_version("steps/pearce_casey23/figure.py"),
            lineage=PC23_LINEAGE,
        log:
            f"{LOGS}/pearce_casey23/{_rule}.log",
        benchmark:
            f"{BENCH}/pearce_casey23/{_rule}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/photometry.yaml"
        script:
            "../workflow_scripts/steps/pearce_casey23/figure.py"


rule pearce_casey23_all:
    """Everything of the anomaly study: metrics and every figure."""
    input:
        rules.pearce_casey23_metrics.output.metrics,
        [f"{PC23_FIG}/{fig['name']}.{ext}" for fig in PC23_FIGURES.values() for ext in ("png", "pdf")],
