"""Rule scripts of the likelihood-ratio study (Zanisi et al. 2021): thin adapters over
:mod:`workflow_scripts.studies.zanisi21`."""
