"""Imported first by every rule script: puts the repository on sys.path so ``workflow_scripts`` imports in any
job (a conda env from envs/, a cluster node) even where the package was not pip-installed.

Snakemake adds the script's own folder (this one) to sys.path, which is how this module is found.

It also makes idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``, read when torch loads, so
before any step imports it): with more jobs than cores, spinning torch threads slowed training and fitting by
10-30x on a 2-core laptop. A user's own setting wins.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
