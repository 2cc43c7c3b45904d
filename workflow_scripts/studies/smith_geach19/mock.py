"""The baseline a referee asks of a generative deep field: a catalogue mock, no learning (ours, beyond the paper).

Smith & Geach validate their generator by the magnitude distributions of the sources extracted from it. The
classical way to make a mock field, which any such test should be weighed against, draws sources from a catalogue
and renders them: here the real field's own catalogue (the same extraction), bootstrapped, so the mock knows the
field's counts, magnitudes, colours, sizes and shapes and nothing else.

* Each source is an exponential disk with the measured per-band Kron fluxes (negative ones set to 0), the half-light
  radius measured on the band-mean image with the PSF's taken out in quadrature (at least :data:`MIN_HLR_ARCSEC`),
  the measured axis ratio b/a and angle; convolved with each band's measured effective PSF.
* Positions uniform over the mock field (no clustering), as many sources as the real field's density gives
  (Poisson), the sky white Gaussian noise of the real field's background rms per band.
* So it lacks what a catalogue of detections cannot hold: sources below the detection limit (the real field's
  confused faint sky), morphology beyond one exponential, clustering and blends, and correlated noise.

The mock fields then go through the same extraction as the real and generated ones (:mod:`.validation`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import galsim
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workflow_scripts.errors import StudyError
from workflow_scripts.imaging.render import add_profile, psf_half_light_radius, psf_profile

#: the mock of realisation r is seeded with the config's seed + this + r
MOCK_SEED_OFFSET = 2000
#: smallest intrinsic half-light radius (arcsec): measured sizes at the PSF's become near point sources
MIN_HLR_ARCSEC = 0.01
#: stamp half-side in half-light radii (an exponential holds 99.8 % of its flux within 5 hlr) plus the PSF's
STAMP_HLR = 5.0
#: stamp side limits (pixels)
MIN_STAMP, MAX_STAMP = 25, 257


def mock_sources(real: pd.DataFrame, bands: Sequence[str], psf_hlr_arcsec: float) -> pd.DataFrame:
    """The real catalogue as rendering parameters: ``flux_{band}`` (>= 0), ``hlr_arcsec`` (intrinsic), ``q``,
    ``beta`` (radians, counter-clockwise from +x)."""
    need = ["a", "b", "theta", "r_half_arcsec", *[f"flux_{b}" for b in bands]]
    missing = [c for c in need if c not in real.columns]
    if missing:
        raise StudyError(f"catalogue mock: the real catalogue lacks columns {', '.join(missing)}")
    ok = np.all(np.isfinite(real[need].to_numpy(float)), axis=1)
    if not ok.any():
        raise StudyError("catalogue mock: no source of the real field has finite fluxes, sizes and shapes")
    cat = real.loc[ok]
    out = pd.DataFrame({f"flux_{b}": np.clip(cat[f"flux_{b}"].to_numpy(float), 0.0, None) for b in bands})
    r = cat["r_half_arcsec"].to_numpy(float)
    out["hlr_arcsec"] = np.sqrt(np.clip(r * r - psf_hlr_arcsec ** 2, MIN_HLR_ARCSEC ** 2, None))
    a, b = cat["a"].to_numpy(float), cat["b"].to_numpy(float)
    out["q"] = np.clip(b / np.where(a > 0, a, 1.0), 0.05, 1.0)
    out["beta"] = cat["theta"].to_numpy(float)
    return out


def render_mock(sources: pd.DataFrame, bands: Sequence[str], psfs: Mapping[str, np.ndarray],
                sky_rms: Mapping[str, float], n: int, pixel_scale: float, density_per_pixel: float,
                rng: np.random.Generator, progress: bool = False) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """One ``n`` x ``n`` mock field per band and the table of what was placed (x, y and the source's row).

    Poisson(``density_per_pixel`` n^2) sources drawn with replacement from ``sources`` (:func:`mock_sources`) at
    uniform positions; ``psfs``: native-grid effective PSFs per band; ``sky_rms``: per-band white noise rms."""
    if sources.empty:
        raise StudyError("catalogue mock: no source to draw from")
    count = int(rng.poisson(density_per_pixel * n * n))
    rows = rng.integers(0, len(sources), count)
    x, y = rng.uniform(-0.5, n - 0.5, count), rng.uniform(-0.5, n - 0.5, count)
    profiles = {b: psf_profile(psfs[b], pixel_scale, f"PSF of {b}") for b in bands}
    psf_hlr = max(psf_half_light_radius(psfs[b], pixel_scale) for b in bands)
    images = {b: galsim.ImageF(n, n, scale=float(pixel_scale)) for b in bands}
    hlr, q, beta = (sources[c].to_numpy(float) for c in ("hlr_arcsec", "q", "beta"))
    flux = {b: sources[f"flux_{b}"].to_numpy(float) for b in bands}
    for k in tqdm(range(count), disable=not progress, desc="mock sources", unit="source", mininterval=2.0):
        i = rows[k]
        half = math.ceil(STAMP_HLR * (hlr[i] + psf_hlr) / pixel_scale)
        stamp = int(np.clip(2 * half + 1, MIN_STAMP, MAX_STAMP))
        disk = galsim.Exponential(half_light_radius=float(hlr[i])).shear(q=float(q[i]), beta=float(beta[i]) *
                                                                          galsim.radians)
        for b in bands:
            if flux[b][i] > 0:
                add_profile(images[b], galsim.Convolve(disk.withFlux(float(flux[b][i])), profiles[b]),
                            x[k], y[k], stamp)
    out = {}
    for b in bands:
        out[b] = (images[b].array + rng.normal(0.0, float(sky_rms[b]), (n, n))).astype(np.float32)
    return out, pd.DataFrame({"x": x, "y": y, "row": rows})


__all__ = ["MIN_HLR_ARCSEC", "MOCK_SEED_OFFSET", "mock_sources", "render_mock"]
