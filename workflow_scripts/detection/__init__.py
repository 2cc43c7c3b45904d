"""Detection: matched-filter peaks in each image's own noise, the prominence test, optimal matching to the truth,
and detection metrics. Shared by every study (the submodules say what each does)."""

from .peaks import (DEFAULT_THRESHOLD_SIGMA, DEFAULT_MIN_DISTANCE, DEFAULT_EXCLUDE_BORDER,
                                              DEFAULT_BATCH, MIN_PSF_SUM, MAX_REFINE_SHIFT, DetectionError,
                                              filtered_noise_sigma, matched_filter, estimate_noise_sigma, find_peaks,
                                              detection_stack, filtered_snr, within)
from .prominence import SADDLE_SAMPLES_PER_PX, prominent
from .matching import (MATCH_RADIUS_PX, MATCH_RADIUS_LOWRES_MATCHED_PX, BLEND_OUTCOMES,
                                                 ISOLATED_OUTCOMES, Matching, match_peaks, truth_positions,
                                                 classify_blends, classify_isolated)
from .metrics import (DEFAULT_CONFIDENCE, wilson_interval, detection_fraction,
                                                outcome_fractions, precision_recall)

__all__ = [
    "DEFAULT_THRESHOLD_SIGMA",
    "DEFAULT_MIN_DISTANCE",
    "DEFAULT_EXCLUDE_BORDER",
    "DEFAULT_BATCH",
    "MIN_PSF_SUM",
    "MAX_REFINE_SHIFT",
    "DetectionError",
    "filtered_noise_sigma",
    "matched_filter",
    "estimate_noise_sigma",
    "find_peaks",
    "detection_stack",
    "filtered_snr",
    "within",
    "SADDLE_SAMPLES_PER_PX",
    "prominent",
    "MATCH_RADIUS_PX",
    "MATCH_RADIUS_LOWRES_MATCHED_PX",
    "BLEND_OUTCOMES",
    "ISOLATED_OUTCOMES",
    "Matching",
    "match_peaks",
    "truth_positions",
    "classify_blends",
    "classify_isolated",
    "DEFAULT_CONFIDENCE",
    "wilson_interval",
    "detection_fraction",
    "outcome_fractions",
    "precision_recall",
]
