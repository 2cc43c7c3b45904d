"""Imported first by every rule script: puts the repository on sys.path so ``workflow_scripts`` imports in any
job (a conda env from envs/, a cluster node) even where the package was not pip-installed, then runs the shared
start-up of every step (:mod:`workflow_scripts.steps`).

Snakemake adds the script's own folder to sys.path, which is how this module is found; the study folders hold a
symbolic link to this file (the path below is that of the file the link resolves to).
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import workflow_scripts.steps  # noqa: E402,F401
