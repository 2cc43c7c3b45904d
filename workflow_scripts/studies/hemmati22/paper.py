"""Hemmati et al. 2022: the one home of the paper's values, the blend parameters of its figures, the names of the
photometry runs and the labels and colours every figure of the study shares.

Metrics (:mod:`.metrics`), photometry (:mod:`.photometry`), the figures (:mod:`.figures`,
:mod:`.figures_photometry`, :mod:`.som`) and the rules (``rules/hemmati22.smk``) import them from here, so that a
value quoted from the paper or a colour is changed in one place.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- blend parameters
#: truth columns of a blend that the SOM uses (the paper's four SOM parameters), in this order
BLEND_PARAMETERS = ("sep_over_fwhm_sum", "flux_ratio", "fwhm_sum", "dz")
#: the four blend parameters of Fig 5, in the paper's order
FIG5_PARAMETERS = ("sep_over_fwhm_sum", "dmag", "fwhm_sum", "dz")
#: axis labels of the blend parameters
PARAMETER_LABELS = {
    "sep_over_fwhm_sum": "separation / sum FWHM",
    "dmag": "\u0394mag",
    "fwhm_sum": "sum FWHM [arcsec]",
    "dz": "\u0394z",
}
#: panel labels of the SOM's codebook maps (sec. 4: the SOM sees |dz|)
SOM_FEATURE_LABELS = {"sep_over_fwhm_sum": "separation / sum FWHM", "flux_ratio": "flux ratio",
                      "fwhm_sum": "sum FWHM [arcsec]", "dz": "|dz|"}
#: the paper's SOM: 32 x 24 = 768 cells, ~6.5 blends per cell for 5000 blends
SOM_SHAPE = (32, 24)

# ---------------------------------------------------------------------------------------------- paper values
#: Hemmati+22's headline numbers: blend detection fraction (both galaxies found, sec. 4: ~80 / 10 / 50 % for
#: high-res / low-res / GAN), false-positive rate on single galaxies (~1 %), and the gain of the 7-band GAN over
#: the 1-band GAN
PAPER = {"detection_fraction": {"hi": 0.80, "lo": 0.10, "gan": 0.50}, "false_positive_rate": 0.01,
         "gan7_minus_gan": 0.10}
#: Hemmati+22 sec. 3.4: photometry at GAN positions is more than 10x better (scatter and bias of delta-mag) than at
#: low-res positions; the paper gives no number beyond "> 10x"
PAPER_PHOTOMETRY = {"improvement_factor": ">10", "improvement_factor_min": 10.0}

# ------------------------------------------------------------------------------------------ photometry runs
#: run -> (image grid the fit is done on, peaks used: "lo", "gan" or "hi")
PHOTOMETRY_RUNS: dict[str, tuple[str, str]] = {"lo_at_lo": ("lowres", "lo"), "lo_at_gan": ("lowres", "gan"),
                                               "hi_at_hi": ("hires", "hi")}
RUN_LABELS = {"lo_at_lo": "low-res positions", "lo_at_gan": "GAN positions", "hi_at_hi": "high-res (reference)"}
#: as the detection methods: low-res red, GAN blue, high-res black
RUN_COLOURS = {"lo_at_lo": "tab:red", "lo_at_gan": "tab:blue", "hi_at_hi": "black"}

# ---------------------------------------------------------------------------------------- methods in figures
#: colours as in the paper (high-res black, low-res red, GAN blue); 7-band GAN purple
METHOD_COLOURS = {"hi": "black", "lo": "tab:red", "gan": "tab:blue", "gan1": "tab:blue", "gan7": "tab:purple"}
METHOD_LABELS = {"hi": "high-res", "lo": "low-res", "gan": "GAN", "gan1": "GAN 1-band", "gan7": "GAN 7-band"}
