# The data boundary: real downloads + normalisation, or the embedded GalSim simulation, then PSFs and an
# overview figure per field. Downstream studies read only {data_dir}/{survey}/{field}/{band}.fits (+ .rms.fits)
# and catalog.parquet, whichever of the two paths made them.
localrules:
    download,


# Every archive file the configured surveys need: local path -> (url, band expected in its FILTER keyword).
RAW = {}
for _s in DATA_SURVEYS.values():
    if _s.source != "download":
        continue
    for _f in _s.fields:
        for _b in _s.bands:
            RAW[raw_file(_s.name, _s.url(_b, _f))] = {"url": _s.url(_b, _f), "filter": _b}
    for _key in ("catalog_url", "photoz_url"):
        if _key in _s.download:
            RAW[raw_file(_s.name, _s.download[_key])] = {"url": _s.download[_key], "filter": None}


rule download:
    """Fetch one archive file: resumable, retried, verified against the lock file, renamed atomically."""
    output:
        f"{DATA}/raw/{{survey}}/{{filename}}",
    wildcard_constraints:
        filename=r"[^/]+",
    params:
        url=lambda w, output: RAW[output[0]]["url"],
        expect_filter=lambda w, output: RAW[output[0]]["filter"],
        lock_file=f"{DATA}/raw/downloads.lock.json",
        download=config["download"],
        code=code_version("steps/data/download.py"),
    log:
        f"{LOGS}/download/{{survey}}/{{filename}}.log",
    benchmark:
        f"{BENCH}/download/{{survey}}/{{filename}}.tsv"
    resources:
        mem_mb=500,
        runtime=240,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/data/download.py"


for _s in DATA_SURVEYS.values():
    _outputs = dict(
        images=[f"{DATA}/{{survey}}/{{field}}/{b}.fits" for b in _s.bands],
        rms=[f"{DATA}/{{survey}}/{{field}}/{b}.rms.fits" for b in _s.bands],
    )
    if _s.source == "embedded":

        rule:
            name:
                f"simulate_{_s.name}"
            message:
                f"Simulating the embedded {_s.name} field {{wildcards.field}} with GalSim"
            output:
                **_outputs,
                catalog=f"{DATA}/{{survey}}/{{field}}/catalog.parquet",
                true_psf=[f"{DATA}/{{survey}}/{{field}}/truth/psf_{b}.fits" for b in _s.bands],
                true_psf_x4=[f"{DATA}/{{survey}}/{{field}}/truth/psf_{b}_x4.fits" for b in _s.bands],
            wildcard_constraints:
                survey=_s.name,
                field="|".join(_s.fields),
            params:
                data_dir=lambda w, output: str(Path(output.images[0]).parents[2]),
                survey=survey_params(_s.name),
                lineage=lineage(_s.name),
                code=code_version("steps/data/simulate.py"),
            log:
                f"{LOGS}/simulate/{{survey}}_{{field}}.log",
            benchmark:
                f"{BENCH}/simulate/{{survey}}_{{field}}.tsv"
            threads: 1
            resources:
                mem_mb=mosaic_mem_mb(_s),
                runtime=60,
            conda:
                "../envs/data.yaml"
            script:
                "../workflow_scripts/steps/data/simulate.py"

    elif _s.source == "download":

        rule:
            name:
                f"normalise_{_s.name}"
            message:
                f"Normalising {_s.name} field {{wildcards.field}} archive products to the data boundary"
            input:
                unpack(
                    lambda w, s=_s: {
                        **{b: raw_file(s.name, s.url(b, w.field)) for b in s.bands},
                        **{
                            k.removesuffix("_url"): raw_file(s.name, s.download[k])
                            for k in ("catalog_url", "photoz_url")
                            if k in s.download
                        },
                    }
                ),
            output:
                **_outputs,
                **({"catalog": f"{DATA}/{{survey}}/{{field}}/catalog.parquet"} if _s.catalog else {}),
            wildcard_constraints:
                survey=_s.name,
                field="|".join(_s.fields),
            params:
                data_dir=lambda w, output: str(Path(output.images[0]).parents[2]),
                survey=survey_params(_s.name),
                lineage=lineage(_s.name),
                code=code_version("steps/data/normalise.py"),
            log:
                f"{LOGS}/normalise/{{survey}}_{{field}}.log",
            benchmark:
                f"{BENCH}/normalise/{{survey}}_{{field}}.tsv"
            threads: 1
            resources:
                mem_mb=32000,
                runtime=120,
            conda:
                "../envs/data.yaml"
            script:
                "../workflow_scripts/steps/data/normalise.py"


rule psf:
    """Empirical PSF (photutils EPSF) of one band from the stars found in the mosaic itself."""
    input:
        image=band_file("{survey}", "{field}", "{band}"),
        rms=rms_file("{survey}", "{field}", "{band}"),
    output:
        fits=psf_file("{survey}", "{field}", "{band}"),
        json=psf_file("{survey}", "{field}", "{band}", "json"),
    params:
        psf=lambda w: psf_settings(w.survey),
        survey=lambda w: survey_params(w.survey),
        lineage=lambda w: lineage(w.survey),
        code=code_version("steps/data/psf.py"),
    log:
        f"{LOGS}/psf/{{survey}}_{{field}}_{{band}}.log",
    benchmark:
        f"{BENCH}/psf/{{survey}}_{{field}}_{{band}}.tsv"
    priority: PRIORITY["psf"]
    threads: 1
    resources:
        mem_mb=lambda w: band_mem_mb(SURVEYS[w.survey]),
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/data/psf.py"


rule overview:
    """A look at one field: colour image, PSF per band (measured vs configured FWHM), counts and sizes."""
    input:
        unpack(overview_inputs),
    output:
        png=report(
            "results/figures/data/{survey}_{field}_overview.png",
            caption="captions/data/overview.rst",
            category="Data boundary",
            subcategory="{survey}",
        ),
    params:
        survey=lambda w: survey_params(w.survey),
        lineage=lambda w: lineage(w.survey),
        code=code_version("steps/data/overview.py"),
    log:
        f"{LOGS}/overview/{{survey}}_{{field}}.log",
    benchmark:
        f"{BENCH}/overview/{{survey}}_{{field}}.tsv"
    threads: 1
    resources:
        mem_mb=lambda w: mosaic_mem_mb(SURVEYS[w.survey], copies=3),
        runtime=10,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/steps/data/overview.py"


rule data_all:
    """Every boundary field of every configured survey, with its PSFs and overview figure."""
    input:
        [
            f"results/figures/data/{s.name}_{f}_overview.png"
            for s in DATA_SURVEYS.values()
            for f in s.fields
        ],
        [
            psf_file(s.name, f, b, "json")
            for s in DATA_SURVEYS.values()
            for f in s.fields
            for b in s.bands
        ],
