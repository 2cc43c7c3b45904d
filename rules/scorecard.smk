# The scorecard: the headline entries of every enabled study (results/{study}/metrics.json), paper beside ours.


rule scorecard:
    """results/scorecard.{json,md}: every enabled study's headline metrics, paper vs ours vs whether goals hold."""
    input:
        [f"results/{s}/metrics.json" for s in STUDIES],
    output:
        json="results/scorecard.json",
        md=report(
            "results/scorecard.md",
            caption="captions/scorecard.rst",
            category="Scorecard",
        ),
    params:
        studies=STUDIES,
        preset=config["preset"],
        code=code_version("steps/scorecard.py"),
    log:
        f"{LOGS}/scorecard.log",
    benchmark:
        f"{BENCH}/scorecard.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/steps/scorecard.py"
