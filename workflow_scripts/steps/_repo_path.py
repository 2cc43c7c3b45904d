"""Imported first by every rule script: puts the repository on sys.path so ``workflow_scripts`` imports in any
job (a conda env from envs/, a cluster node) even where the package was not pip-installed.

Snakemake adds the script's own folder (this one) to sys.path, which is how this module is found.
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
