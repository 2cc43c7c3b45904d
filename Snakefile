# genastro: four studies of generative models on astronomical images, end to end.
#   snakemake --cores 8 all                                  embedded GalSim surveys (demo preset, config.yaml)
#   snakemake --cores 8 all --configfile presets/ci.yaml     tiny, for tests
#   snakemake --cores 8 all --configfile presets/paper.yaml  real archive data, paper sizes, GPU
# Any single output can be asked for by its path; only its upstream rules run.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)  # the library, also when the package is not pip-installed

from workflow_scripts.config import deep_merge, enabled_studies, typed_overrides, validate_config
from workflow_scripts.errors import ConfigError
from workflow_scripts.surveys import surveys_from_config


configfile: os.path.join(workflow.basedir, "config.yaml")


# --config values are typed like YAML (Snakemake leaves a nested value's leaves as strings)
config.update(deep_merge(config, typed_overrides(workflow.config_settings.config)))

try:
    validate_config(config)
except ConfigError as exc:
    sys.exit(f"error: invalid {exc}")

# Two runs in one directory: Snakemake would first report the files the other run is writing as incomplete.
if workflow.is_main_process and "--unlock" not in sys.argv and any(Path(".snakemake/locks").glob("*.lock")):
    print(f"note: another Snakemake run holds {os.getcwd()} (.snakemake/locks): wait for it to finish, or, if none "
          "is running (a killed run leaves its lock behind), run the same command once with --unlock",
          file=sys.stderr)

DATA = config["data_dir"]
SURVEYS = surveys_from_config(config)
DATA_SURVEYS = {name: s for name, s in SURVEYS.items() if s.source != "none"}
LOGS = "results/logs"
BENCH = "results/benchmarks"


include: "rules/common.smk"
include: "rules/data.smk"
STUDIES = enabled_studies(config)  # `studies:` in config.yaml; each has rules/{study}.smk and a {study}_all rule


for _study in STUDIES:

    include: f"rules/{_study}.smk"


include: "rules/scorecard.smk"


rule all:
    default_target: True
    input:
        rules.data_all.input,
        [getattr(rules, f"{s}_all").input for s in STUDIES],
        rules.scorecard.output,
