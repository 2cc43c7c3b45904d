"""Hemmati et al. 2022: the paper's values, the blend parameters of its figures; the one home of these numbers.
"""

from __future__ import annotations

import logging



log = logging.getLogger(__name__)
#: truth columns of a blend that the SOM and Fig 5 use, in this order
BLEND_PARAMETERS = ("sep_over_fwhm_sum", "flux_ratio", "fwhm_sum", "dz")


# ---------------------------------------------------------------------------------------------- metrics
#: Hemmati+22's headline numbers: blend detection fraction (both galaxies found), false-positive rate on single
#: galaxies, and the gain of the 7-band GAN over the 1-band GAN
PAPER = {"detection_fraction": {"hi": 0.80, "lo": 0.10, "gan": 0.50}, "false_positive_rate": 0.01,
         "gan7_minus_gan": 0.10}
FIG5_PARAMETERS = ("sep_over_fwhm_sum", "dmag", "fwhm_sum", "dz")
