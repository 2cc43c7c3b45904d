"""Zanisi et al. 2021 (and the works it builds on): the one home of the values the study's metrics and figures quote."""

from __future__ import annotations

#: Ren et al. 2019: Fashion-MNIST (in) vs MNIST (out), AUROC of the raw likelihood and of the likelihood ratio
REN19_AUROC_LIKELIHOOD = 0.1
REN19_AUROC_RATIO = 0.99
#: PixelCNN++ (Salimans et al. 2017) on CIFAR-10, bits/dim: the scale of a well-trained discrete model
PIXELCNNPP_CIFAR10_BPD = 2.92
#: Zanisi+21: the background carries ~0 of the pixel-wise LLR (their LLR maps), the centres are enhanced
PAPER_BACKGROUND_LLR = "~0 (LLR maps)"
#: Zanisi+21: per-image log-likelihoods ~3000-4500 nats and LLRs -100..420 nats on 32^2 SDSS stamps
PAPER_LOGP_RANGE_NATS = (3000.0, 4500.0)
PAPER_LLR_RANGE_NATS = (-100.0, 420.0)
GOALS = {"llr_auc_min": 0.8, "background_fraction_max": 0.10}
#: colours of the data sets in the figures
COLOURS = {"real_test": "k", "other": "tab:orange", "archetype_test": "tab:blue"}
LABELS = {"real_test": "real (held out)", "other": "comparison (no clumps)", "archetype_test": "archetypes"}
