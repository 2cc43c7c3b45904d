"""Rule scripts of the deep-field study (Smith & Geach 2019): thin adapters over
:mod:`workflow_scripts.studies.smith_geach19`."""
