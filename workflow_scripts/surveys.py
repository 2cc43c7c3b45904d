"""Survey descriptions as data.

An instrument is a :class:`Survey` built from the ``surveys`` block of the configuration: bands with their AB
zeropoints, PSF FWHM and depth, the pixel scale and the download URLs. The simulator, the downloads, the PSF
estimation, the degradation, detection and photometry all read the same object; no function hard-codes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workflow_scripts.errors import ConfigError


@dataclass(frozen=True)
class Band:
    name: str
    zeropoint: float          # AB magnitude of one image unit (mag = -2.5 log10(flux) + zeropoint)
    psf_fwhm: float           # arcsec
    depth: float              # 5-sigma point-source AB limit in the survey's depth aperture
    bandpass: str | None = None               # GalSim share/bandpasses file stem
    wavelength: tuple[float, float] | None = None  # nm, top-hat edges when no bandpass file exists
    url: str | None = None

    def flux(self, mag: float) -> float:
        """Flux in image units of an AB magnitude."""
        return 10.0 ** (-0.4 * (mag - self.zeropoint))

    def mag(self, flux: float) -> float:
        """AB magnitude of a flux in image units (NaN for flux <= 0)."""
        return -2.5 * math.log10(flux) + self.zeropoint if flux > 0 else math.nan


@dataclass(frozen=True)
class Survey:
    name: str
    source: str               # embedded | download | none
    fields: tuple[str, ...]
    telescope: str
    instrument: str
    pixel_scale: float        # arcsec / pixel
    bunit: str
    depth_aperture: float     # arcsec, diameter of the aperture that defines `depth`
    catalog: bool
    bands: Mapping[str, Band]
    download: Mapping[str, Any] = field(default_factory=dict)
    embedded: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any]) -> "Survey":
        bands = {
            b: Band(
                name=b,
                zeropoint=float(s["zeropoint"]),
                psf_fwhm=float(s["psf_fwhm"]),
                depth=float(s["depth"]),
                bandpass=s.get("bandpass"),
                wavelength=tuple(s["wavelength"]) if "wavelength" in s else None,
                url=s.get("url"),
            )
            for b, s in spec["bands"].items()
        }
        return cls(
            name=name,
            source=spec["source"],
            fields=tuple(spec["fields"]),
            telescope=spec["telescope"],
            instrument=spec["instrument"],
            pixel_scale=float(spec["pixel_scale"]),
            bunit=spec["bunit"],
            depth_aperture=float(spec["depth_aperture"]),
            catalog=bool(spec["catalog"]),
            bands=bands,
            download=dict(spec.get("download", {})),
            embedded=dict(spec.get("embedded", {})),
        )

    @property
    def band_names(self) -> list[str]:
        return list(self.bands)

    def band(self, name: str) -> Band:
        try:
            return self.bands[name]
        except KeyError:
            raise ConfigError(f"unknown band {name!r} for survey {self.name} (bands: {', '.join(self.bands)})") from None

    def psf_fwhm_pixels(self, band: str) -> float:
        return self.band(band).psf_fwhm / self.pixel_scale

    def aperture_pixels(self) -> float:
        """Area, in pixels, of the circular aperture that defines the depth."""
        radius = 0.5 * self.depth_aperture / self.pixel_scale
        return math.pi * radius**2

    def pixel_noise(self, band: str) -> float:
        """Per-pixel white-noise sigma (image units) that gives the band's 5-sigma depth in the depth aperture.

        The depth is the aperture flux of a 5-sigma detection: sigma_aperture = sigma_pixel * sqrt(N_pixels).
        """
        flux_5sigma = self.band(band).flux(self.band(band).depth)
        return flux_5sigma / (5.0 * math.sqrt(self.aperture_pixels()))

    def depth_from_noise(self, band: str, sigma_pixel: float) -> float:
        """Inverse of :meth:`pixel_noise`: the 5-sigma depth implied by a measured per-pixel sigma."""
        return self.band(band).mag(5.0 * sigma_pixel * math.sqrt(self.aperture_pixels()))

    def url(self, band: str, fld: str) -> str:
        url = self.band(band).url
        if url is None:
            raise ConfigError(f"surveys.{self.name}.bands.{band}.url is not set")
        return url.format(field=fld, band=band, band_lower=band.lower())


def surveys_from_config(config: Mapping[str, Any]) -> dict[str, Survey]:
    return {name: Survey.from_config(name, spec) for name, spec in config["surveys"].items()}


def get_survey(config: Mapping[str, Any], name: str) -> Survey:
    try:
        return Survey.from_config(name, config["surveys"][name])
    except KeyError:
        raise ConfigError(f"unknown survey {name!r} (surveys: {', '.join(config['surveys'])})") from None
