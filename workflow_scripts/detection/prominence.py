"""The prominence test: a secondary peak counts only when it rises far enough above the saddle towards a brighter peak.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import map_coordinates


log = logging.getLogger(__name__)


#: samples per pixel along the segment between two peaks when looking for the saddle
SADDLE_SAMPLES_PER_PX = 2


def prominent(peaks: Sequence[np.ndarray], snr: np.ndarray, min_prominence: float) -> list[np.ndarray]:
    """Drop secondary peaks that do not rise ``min_prominence`` (in S/N) above the saddle towards a brighter peak.

    ``peaks`` per image, brightest first, (x, y); ``snr`` the matched-filtered S/N images (N, H, W). The saddle
    is the lowest S/N on the straight segment to the nearest brighter kept peak (bilinear samples). Noise
    bumps on the bright wings of a large galaxy clear an absolute threshold but not this contrast test; two
    resolved galaxies have a deep saddle between them. (Our own: the library peak finders have no contrast test.)
    """
    out = []
    for img, pk in zip(snr, peaks):
        if len(pk) < 2:
            out.append(pk)
            continue
        keep = [pk[0]]
        heights = map_coordinates(img, [pk[:, 1], pk[:, 0]], order=1)
        for k in range(1, len(pk)):
            brighter = np.array(keep)
            j = int(np.argmin(np.hypot(*(brighter - pk[k]).T)))
            n = max(2, int(np.ceil(np.hypot(*(brighter[j] - pk[k])) * SADDLE_SAMPLES_PER_PX)) + 1)
            t = np.linspace(0.0, 1.0, n)
            xs = pk[k, 0] + t * (brighter[j, 0] - pk[k, 0])
            ys = pk[k, 1] + t * (brighter[j, 1] - pk[k, 1])
            saddle = map_coordinates(img, [ys, xs], order=1).min()
            if heights[k] - saddle >= min_prominence:
                keep.append(pk[k])
        out.append(np.array(keep).reshape(-1, 2))
    return out
