"""Library of the genastro pipeline: plain functions and classes, no Snakemake objects.

Rule scripts in :mod:`workflow_scripts.steps` are the only code that sees ``snakemake``.
"""

__version__ = "0.1.0"
