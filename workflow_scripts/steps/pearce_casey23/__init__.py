"""Rule scripts of the anomaly study (Pearce-Casey et al. 2023): thin adapters over
:mod:`workflow_scripts.studies.pearce_casey23`."""
