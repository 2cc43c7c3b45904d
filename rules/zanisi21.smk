# Likelihood-ratio out-of-distribution detection (Zanisi et al. 2021): galaxy stamps of one band -> statmorph
# single-Sersic fits -> smooth archetypes in real blank sky -> PixelCNNs on real stamps, on archetypes and on
# perturbed stamps (Ren+19) -> per-pixel log-likelihoods -> LLR maps, AUCs, background share, matched-bin
# comparison with a set lacking fine detail (the clump-free twin of the embedded survey) -> figures 1-4.
# Reads only the data boundary (embedded or downloaded alike); the twin is simulated with the embedded machinery.
# Ours, beyond the paper (zanisi21.anomalies): the same chain on the anomaly study's labelled CEERS objects, trained
# on its normal galaxies, scoring its mergers and EROs -> AUCs beside the cGAN's in the scorecard, Fig 5.

ZA21 = config["zanisi21"]
ZA21_DIR = "results/zanisi21"
ZA21_FIG = "results/figures/zanisi21"
ZA21_SURVEY = SURVEYS[ZA21["survey"]]
ZA21_FIELDS = list(ZA21["fields"])
ZA21_BAND = ZA21["band"]
ZA21_RES = ZA21["resources"]
ZA21_TWIN = ZA21["comparison"]["kind"] == "twin"
ZA21_OTHER = ZA21_SURVEY if ZA21_TWIN else SURVEYS[ZA21["comparison"]["survey"]]
ZA21_OTHER_FIELDS = ZA21_FIELDS if ZA21_TWIN else list(ZA21_OTHER.fields)
# the twin is a survey simulation: it goes under data_dir (cluster scratch), in the boundary layout
ZA21_TWIN_DATA = os.path.join(DATA, "derived", "zanisi21", "twin")
ZA21_LINEAGE = lineage(*sorted({ZA21_SURVEY.name, ZA21_OTHER.name}))
ZA21_REPORT = "Zanisi+21 likelihood ratios"
# + beyond the paper, one PixelCNN conditioned on the set (real / archetype): `shared_model`
ZA21_MODELS = ["real", "archetype", "perturbed"] + (["shared"] if ZA21["shared_model"] else [])
ZA21_SCORED = ["real_test", "other", "archetype_test"]
# the comparison set's boundary files: the twin's (simulated here) or another survey's
if ZA21_TWIN:
    ZA21_OTHER_FILES = {
        k: [os.path.join(ZA21_TWIN_DATA, ZA21_SURVEY.name, f, name) for f in ZA21_FIELDS]
        for k, name in (("image", f"{ZA21_BAND}.fits"), ("rms", f"{ZA21_BAND}.rms.fits"),
                        ("catalog", "catalog.parquet"))
    }
else:
    ZA21_OTHER_FILES = {
        "image": [band_file(ZA21_OTHER.name, f, ZA21_BAND) for f in ZA21_OTHER_FIELDS],
        "rms": [rms_file(ZA21_OTHER.name, f, ZA21_BAND) for f in ZA21_OTHER_FIELDS],
        "catalog": [catalog_file(ZA21_OTHER.name, f) for f in ZA21_OTHER_FIELDS],
    }
ZA21_STUDY_KEYS = ("band", "sample", "stamp_size", "zoom", "validation_fraction", "background", "comparison",
                   "archetypes")
# ours, beyond the paper: the anomaly study's labelled objects (mergers, EROs) scored by LLR beside the cGAN
ZA21_ANOM = ZA21.get("anomalies")
ZA21_ANOM_DIR = f"{ZA21_DIR}/anomalies"
ZA21_ANOM_SETS = ["real_test", "anomalies"]  # the scored sets the metrics compare
ZA21_CHAINS = {
    "": dict(dir=ZA21_DIR, survey=ZA21_SURVEY, fields=ZA21_FIELDS, band=ZA21_BAND, lineage=ZA21_LINEAGE,
             fit_sets=["real_train", "real_test", "other"], models=ZA21_MODELS, scored=ZA21_SCORED),
}
if ZA21_ANOM:
    ZA21_ANOM_SURVEY = SURVEYS[ZA21_ANOM["survey"]]
    ZA21_CHAINS["anomaly_"] = dict(
        dir=ZA21_ANOM_DIR, survey=ZA21_ANOM_SURVEY, fields=list(ZA21_ANOM.get("fields") or ZA21_ANOM_SURVEY.fields),
        band=ZA21_ANOM["band"], lineage=lineage(ZA21_ANOM_SURVEY.name),
        fit_sets=["real_train", "real_test", "anomalies"],   # the anomalies' fits: the chi2 baseline of the metrics
        models=["real", "archetype", "perturbed"], scored=ZA21_ANOM_SETS)
# the metrics descend from every survey the study reads
ZA21_ALL_LINEAGE = lineage(*sorted({c["survey"].name for c in ZA21_CHAINS.values()} | {ZA21_OTHER.name}))


if ZA21_TWIN:

    rule zanisi21_twin:
        """The study's survey simulated again with the same seed and no clumps (the comparison set)."""
        output:
            image=os.path.join(ZA21_TWIN_DATA, ZA21_SURVEY.name, "{field}", f"{ZA21_BAND}.fits"),
            rms=os.path.join(ZA21_TWIN_DATA, ZA21_SURVEY.name, "{field}", f"{ZA21_BAND}.rms.fits"),
            catalog=os.path.join(ZA21_TWIN_DATA, ZA21_SURVEY.name, "{field}", "catalog.parquet"),
        wildcard_constraints:
            field="|".join(ZA21_FIELDS),
        params:
            survey=survey_params(ZA21_SURVEY.name),
            band=ZA21_BAND,
            # the boundary layout's root: {data_dir}/{survey}/{field}/{band}.fits
            data_dir=lambda w, output: str(Path(output.image).parents[2]),
            code=code_version("steps/zanisi21/twin.py"),
            lineage=lineage(ZA21_SURVEY.name),
        log:
            f"{LOGS}/zanisi21/twin_{{field}}.log",
        benchmark:
            f"{BENCH}/zanisi21/twin_{{field}}.tsv"
        threads: 1
        resources:
            mem_mb=band_mem_mb(ZA21_SURVEY, copies=6),
            runtime=60,
        conda:
            "../envs/data.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/twin.py"


rule zanisi21_stamps:
    """Background-subtracted stamps: real training (south) and held-out (north) galaxies, the comparison set, and
    blank sky for the archetypes; the model-space scaling fitted on the training stamps."""
    input:
        images=[band_file(ZA21_SURVEY.name, f, ZA21_BAND) for f in ZA21_FIELDS],
        rms=[rms_file(ZA21_SURVEY.name, f, ZA21_BAND) for f in ZA21_FIELDS],
        catalogs=[catalog_file(ZA21_SURVEY.name, f) for f in ZA21_FIELDS],
        other_images=ZA21_OTHER_FILES["image"],
        other_rms=ZA21_OTHER_FILES["rms"],
        other_catalogs=ZA21_OTHER_FILES["catalog"],
    output:
        real_train=f"{ZA21_DIR}/stamps_real_train.fits",
        real_test=f"{ZA21_DIR}/stamps_real_test.fits",
        other=f"{ZA21_DIR}/stamps_other.fits",
        sky=f"{ZA21_DIR}/sky.fits",
        scaling=f"{ZA21_DIR}/scaling.json",
        summary=f"{ZA21_DIR}/stamps.json",
    params:
        study=config_slice("zanisi21", *ZA21_STUDY_KEYS, "model"),
        fields=ZA21_FIELDS,
        other_fields=ZA21_OTHER_FIELDS,
        kind="comparison",
        twin=ZA21_TWIN and ZA21_SURVEY.source == "embedded",  # paired twin: split it like the real stamps
        seed=config["seed"],
        code=code_version("steps/zanisi21/stamps.py"),
        lineage=ZA21_LINEAGE,
    log:
        f"{LOGS}/zanisi21/stamps.log",
    benchmark:
        f"{BENCH}/zanisi21/stamps.tsv"
    priority: PRIORITY["start"]
    threads: 1
    resources:
        mem_mb=band_mem_mb(ZA21_SURVEY, copies=8),
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/zanisi21/stamps.py"


if ZA21_ANOM:
    _anom = ZA21_CHAINS["anomaly_"]

    rule zanisi21_anomaly_stamps:
        """Labelled stamps of the anomaly study's survey: normal galaxies for training (south) and held out (north),
        every merger and ERO beside them; blank sky; the scaling fitted on the normal training stamps."""
        input:
            images=[band_file(_anom["survey"].name, f, _anom["band"]) for f in _anom["fields"]],
            rms=[rms_file(_anom["survey"].name, f, _anom["band"]) for f in _anom["fields"]],
            catalogs=[catalog_file(_anom["survey"].name, f) for f in _anom["fields"]],
        output:
            real_train=f"{ZA21_ANOM_DIR}/stamps_real_train.fits",
            real_test=f"{ZA21_ANOM_DIR}/stamps_real_test.fits",
            anomalies=f"{ZA21_ANOM_DIR}/stamps_anomalies.fits",
            sky=f"{ZA21_ANOM_DIR}/sky.fits",
            scaling=f"{ZA21_ANOM_DIR}/scaling.json",
            summary=f"{ZA21_ANOM_DIR}/stamps.json",
        params:
            # the study's stamp settings, with this survey's band and magnitude range
            study={**config_slice("zanisi21", "stamp_size", "zoom", "validation_fraction", "background",
                                  "archetypes", "model"),
                   "band": _anom["band"], "sample": ZA21_ANOM["sample"]},
            fields=_anom["fields"],
            kind="anomalies",
            seed=config["seed"],
            code=code_version("steps/zanisi21/stamps.py"),
            lineage=_anom["lineage"],
        log:
            f"{LOGS}/zanisi21/anomaly_stamps.log",
        benchmark:
            f"{BENCH}/zanisi21/anomaly_stamps.tsv"
        priority: PRIORITY["start"]
        threads: 1
        resources:
            mem_mb=band_mem_mb(_anom["survey"], copies=8),
            runtime=30,
        conda:
            "../envs/data.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/stamps.py"


# One chain of fits -> archetypes -> PixelCNNs -> scores per source of stamps, rule names prefixed: "" the study's
# own galaxies (zanisi21_fit, ...), "anomaly_" the anomaly study's labelled objects (zanisi21_anomaly_fit, ...).
for _prefix, _chain in ZA21_CHAINS.items():
    _dir = _chain["dir"]
    _psf = psf_file(_chain["survey"].name, _chain["fields"][0], _chain["band"])

    rule:
        """statmorph: PSF-convolved single-Sersic fit plus Gini, M20, CAS of every stamp of one set."""
        name:
            f"zanisi21_{_prefix}fit"
        input:
            stamps=f"{_dir}/stamps_{{set}}.fits",
            psf=_psf,
        output:
            table=f"{_dir}/morphology_{{set}}.parquet",
        wildcard_constraints:
            set="|".join(_chain["fit_sets"]),
        params:
            code=code_version("steps/zanisi21/fit.py"),
            lineage=_chain["lineage"],
        log:
            f"{LOGS}/zanisi21/{_prefix}fit_{{set}}.log",
        benchmark:
            f"{BENCH}/zanisi21/{_prefix}fit_{{set}}.tsv"
        priority: PRIORITY["start"]
        threads: 1
        resources:
            mem_mb=2000,
            runtime=60,
        conda:
            "../envs/data.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/fit.py"

    rule:
        """Smooth Sersic archetypes of the training and held-out galaxies, PSF-convolved, in real blank sky."""
        name:
            f"zanisi21_{_prefix}archetypes"
        input:
            train=f"{_dir}/morphology_real_train.parquet",
            test=f"{_dir}/morphology_real_test.parquet",
            stamps_train=f"{_dir}/stamps_real_train.fits",
            stamps_test=f"{_dir}/stamps_real_test.fits",
            sky=f"{_dir}/sky.fits",
            psf=_psf,
        output:
            archetype_train=f"{_dir}/stamps_archetype_train.fits",
            archetype_test=f"{_dir}/stamps_archetype_test.fits",
            summary=f"{_dir}/archetypes.json",
        params:
            study=config_slice("zanisi21", "archetypes"),
            code=code_version("steps/zanisi21/archetypes.py"),
            lineage=_chain["lineage"],
        log:
            f"{LOGS}/zanisi21/{_prefix}archetypes.log",
        benchmark:
            f"{BENCH}/zanisi21/{_prefix}archetypes.tsv"
        priority: PRIORITY["start"]
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            "../envs/data.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/archetypes.py"

    rule:
        """One PixelCNN (real stamps, archetypes, Ren+19 perturbed stamps, or real stamps and archetypes for the
        shared class-conditional model), checkpointed, resumable, GPU if any."""
        name:
            f"zanisi21_{_prefix}train"
        input:
            stamps=lambda w, d=_dir: {"archetype": [f"{d}/stamps_archetype_train.fits"],
                                      "shared": [f"{d}/stamps_real_train.fits", f"{d}/stamps_archetype_train.fits"]
                                      }.get(w.model, [f"{d}/stamps_real_train.fits"]),
            scaling=f"{_dir}/scaling.json",
        output:
            model=f"{_dir}/model_{{model}}/model.pt",
        wildcard_constraints:
            model="|".join(_chain["models"]),
        params:
            out_dir=lambda w, output: os.path.dirname(output.model),
            study=config_slice("zanisi21", "model", "augment", "perturbation_mu"),
            seed=config["seed"],
            device=config["device"],
            processes=ZA21_RES.get("processes"),
            code=code_version("steps/zanisi21/train.py"),
            lineage=_chain["lineage"],
        log:
            f"{LOGS}/zanisi21/{_prefix}train_{{model}}.log",
        benchmark:
            f"{BENCH}/zanisi21/{_prefix}train_{{model}}.tsv"
        threads: ZA21_RES["threads"]
        retries: 2
        resources:
            gpu=ZA21_RES["gpu"],
            mem_mb=ZA21_RES["mem_mb"],
            runtime=ZA21_RES["runtime"],
            cpus_per_task=lambda wildcards, threads: threads,
            **{k: ZA21_RES[c] for k, c in (("gpu_model", "gpu_model"), ("slurm_partition", "partition"))
               if c in ZA21_RES},
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/train.py"

    rule:
        """Per-pixel log-likelihoods of one stamp set under the PixelCNNs; LLRs; source / background pixels."""
        name:
            f"zanisi21_{_prefix}score"
        input:
            stamps=f"{_dir}/stamps_{{set}}.fits",
            scaling=f"{_dir}/scaling.json",
            models=[f"{_dir}/model_{m}/model.pt" for m in _chain["models"]],
        output:
            maps=f"{_dir}/scores_{{set}}.fits",
            table=f"{_dir}/scores_{{set}}.parquet",
        wildcard_constraints:
            set="|".join(_chain["scored"]),
        params:
            models=_chain["models"],
            study=config_slice("zanisi21", "masks"),
            device=config["device"],
            code=code_version("steps/zanisi21/score.py"),
            lineage=_chain["lineage"],
        log:
            f"{LOGS}/zanisi21/{_prefix}score_{{set}}.log",
        benchmark:
            f"{BENCH}/zanisi21/{_prefix}score_{{set}}.tsv"
        threads: 1  # as pearce_casey23_predict: a 2-thread job on 2 cores waits for both to be idle
        resources:
            mem_mb=3000,
            runtime=30,
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/score.py"


rule zanisi21_metrics:
    """results/zanisi21/metrics.json: bits/dim, AUCs of the LLR and of the likelihood, background share, and the
    matched-bin comparison table."""
    input:
        scores=[f"{ZA21_DIR}/scores_{s}.parquet" for s in ZA21_SCORED],
        morphology=[f"{ZA21_DIR}/morphology_{s}.parquet" for s in ("real_test", "other")],
        stamps=rules.zanisi21_stamps.output.summary,
        archetypes=rules.zanisi21_archetypes.output.summary,
        **({"anomaly_scores": [f"{ZA21_ANOM_DIR}/scores_{s}.parquet" for s in ZA21_ANOM_SETS],
            "anomaly_morphology": [f"{ZA21_ANOM_DIR}/morphology_{s}.parquet" for s in ZA21_ANOM_SETS],
            "anomaly_stamps": f"{ZA21_ANOM_DIR}/stamps.json"} if ZA21_ANOM else {}),
    output:
        metrics=f"{ZA21_DIR}/metrics.json",
        comparison=f"{ZA21_DIR}/comparison.parquet",
    params:
        sets=ZA21_SCORED,
        study=config_slice("zanisi21", "comparison", "comparison_bins", "bootstrap", "perturbation_mu"),
        anomalies=ZA21_ANOM,
        band=ZA21_BAND,
        seed=config["seed"],
        code=code_version("steps/zanisi21/metrics.py"),
        lineage=ZA21_ALL_LINEAGE,
    log:
        f"{LOGS}/zanisi21/metrics.log",
    benchmark:
        f"{BENCH}/zanisi21/metrics.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/photometry.yaml"
    script:
        "../workflow_scripts/steps/zanisi21/metrics.py"


# one rule per figure (rule name -> file name, report subcategory); captions/zanisi21/{name}.rst
ZA21_FIGURES = {
    "zanisi21_fig1": dict(name="fig1_likelihood_examples", title="Fig 1: high and low likelihood"),
    "zanisi21_fig2": dict(name="fig2_pixel_maps", title="Fig 2: pixel-wise log p and LLR"),
    "zanisi21_fig3": dict(name="fig3_distributions", title="Fig 3: LLR and log p per data set"),
    "zanisi21_fig4": dict(name="fig4_matched_bins", title="Fig 4: matched-bin LLR differences"),
}


for _rule, _fig in ZA21_FIGURES.items():

    rule:
        name:
            _rule
        message:
            f"Zanisi+21 {_fig['name']}"
        input:
            maps=[f"{ZA21_DIR}/scores_{s}.fits" for s in ZA21_SCORED],
            tables=[f"{ZA21_DIR}/scores_{s}.parquet" for s in ZA21_SCORED],
            comparison=rules.zanisi21_metrics.output.comparison,
            metrics=rules.zanisi21_metrics.output.metrics,
        output:
            png=report(f"{ZA21_FIG}/{_fig['name']}.png", caption=f"captions/zanisi21/{_fig['name']}.rst",
                       category=ZA21_REPORT, subcategory=_fig["title"]),
            pdf=report(f"{ZA21_FIG}/{_fig['name']}.pdf", caption=f"captions/zanisi21/{_fig['name']}.rst",
                       category=ZA21_REPORT, subcategory=_fig["title"]),
        params:
            sets=ZA21_SCORED,
            code=code_version("steps/zanisi21/figure.py"),
            lineage=ZA21_LINEAGE,
        log:
            f"{LOGS}/zanisi21/{_rule}.log",
        benchmark:
            f"{BENCH}/zanisi21/{_rule}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/photometry.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/figure.py"


if ZA21_ANOM:

    rule zanisi21_fig5:
        """Ours: ROC curves of the likelihood detectors on the anomaly study's mergers and EROs, LLR distributions."""
        message:
            "Zanisi+21 fig5_anomalies"
        input:
            tables=[f"{ZA21_ANOM_DIR}/scores_{s}.parquet" for s in ZA21_ANOM_SETS],
        output:
            png=report(f"{ZA21_FIG}/fig5_anomalies.png", caption="captions/zanisi21/fig5_anomalies.rst",
                       category=ZA21_REPORT, subcategory="Fig 5 (ours): mergers and EROs"),
            pdf=report(f"{ZA21_FIG}/fig5_anomalies.pdf", caption="captions/zanisi21/fig5_anomalies.rst",
                       category=ZA21_REPORT, subcategory="Fig 5 (ours): mergers and EROs"),
        params:
            anomalies=ZA21_ANOM,
            code=code_version("steps/zanisi21/figure.py"),
            lineage=ZA21_CHAINS["anomaly_"]["lineage"],
        log:
            f"{LOGS}/zanisi21/zanisi21_fig5.log",
        benchmark:
            f"{BENCH}/zanisi21/zanisi21_fig5.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/photometry.yaml"
        script:
            "../workflow_scripts/steps/zanisi21/figure.py"


rule zanisi21_all:
    """Everything of the likelihood-ratio study: metrics and every figure."""
    input:
        rules.zanisi21_metrics.output.metrics,
        [f"{ZA21_FIG}/{fig['name']}.{ext}" for fig in ZA21_FIGURES.values() for ext in ("png", "pdf")],
        [f"{ZA21_FIG}/fig5_anomalies.{ext}" for ext in ("png", "pdf")] if ZA21_ANOM else [],
