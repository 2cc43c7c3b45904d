"""Embedded surveys simulated with GalSim: the stand-in for real data when nothing can be downloaded.

One generic machinery serves every survey (GOODS-S, CEERS, XDF ...): the instrument and the sizes come from the
:class:`~workflow_scripts.surveys.Survey` (its ``embedded`` block), and the output goes through the same data
boundary (:mod:`workflow_scripts.io`) as real downloads.

Modules: :mod:`.seds` (template colours, IGM, bands), :mod:`.population` (counts, redshifts, sizes, shapes),
:mod:`.rare` (CEERS-like EROs and merging pairs with truth labels), :mod:`.dust` (Calzetti attenuation),
:mod:`.psf` (true PSFs),
:mod:`.field` (rendering, noise, catalogue, writing).
"""

from workflow_scripts.data.simulate.field import (SKY_CENTRES, SimulatedField, field_centre, field_seed, field_wcs,
                                                  simulate_field, stable_int, truth_psf_path, write_simulated_field)
from workflow_scripts.data.simulate.psf import (PSF_OVERSAMPLING, draw_psf_native, draw_psf_oversampled,
                                                measured_fwhm, optical_psf)

__all__ = [
    "PSF_OVERSAMPLING",
    "SKY_CENTRES",
    "SimulatedField",
    "draw_psf_native",
    "draw_psf_oversampled",
    "field_centre",
    "field_seed",
    "field_wcs",
    "measured_fwhm",
    "optical_psf",
    "simulate_field",
    "stable_int",
    "truth_psf_path",
    "write_simulated_field",
]
