"""Figures: one module per paper, plus the data overview (:mod:`workflow_scripts.figures.overview`)."""
