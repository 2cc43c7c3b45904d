"""Thin adapters run by Snakemake's ``script:`` directive: ``data/`` (the boundary), one folder per study.

Each module reads ``snakemake.input/params/output``, calls the library and writes files. Nothing else.

Importing this package makes idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``, read when
torch loads, so before any step imports it): with more jobs than cores, spinning torch threads slowed training and
fitting by 10-30x on a 2-core laptop. A user's own setting wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
