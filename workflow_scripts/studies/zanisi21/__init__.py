"""Likelihood-ratio out-of-distribution detection (Zanisi et al. 2021): galaxy stamps, smooth single-Sersic
archetypes in real blank sky, two PixelCNNs (and Ren et al. 2019's perturbation background model), per-image and
per-pixel log-likelihood ratios, and a matched-bin comparison of data sets.
"""
