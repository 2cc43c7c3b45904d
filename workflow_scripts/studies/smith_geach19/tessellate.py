"""Fields of any size from one noise field, generated tile by tile and streamed to FITS (Smith & Geach 2019 sec. 4).

* :class:`NoiseField`: a virtual N(0, 1) noise field of ``nz`` channels and any size, made of independent
  ``BLOCK`` x ``BLOCK`` blocks each drawn from its own Philox stream keyed by (seed, block index): any window of it
  is reproducible without holding the whole field (a 87040^2 px field has 5.9 GB of noise).
* :func:`tessellate`: the output field of side ``n`` (a multiple of the generator's ``scale``) is cut into tiles
  of ``tile_z`` noise pixels; each tile is generated from its noise window grown by ``margin_z`` noise pixels on
  every side and cropped back, so every kept pixel sees the same noise as it would in one-shot generation of the
  whole field (seamless: the margins must cover :meth:`~workflow_scripts.models.sgan.SGANGenerator.margins`).
  The authors' code does the same with a 96-wide window, step 64 and 256 px cropped from each edge.
* :class:`FitsStreamWriter`: one FITS file per band created at full size on disk and written through a memory
  map, one tile at a time: memory does not grow with the field.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.io import fits
from astropy.wcs import WCS
from tqdm.auto import tqdm

from workflow_scripts.errors import StudyError
from workflow_scripts.io import atomic_path, provenance_header

#: side of the independent noise blocks (noise pixels)
BLOCK = 64
#: the noise of realisation r is seeded with the config's seed + this + r
REALISATION_SEED_OFFSET = 1000


class NoiseField:
    """A reproducible N(0, 1) field ``(nz, ny, nx)`` evaluated by windows (see the module docstring)."""

    def __init__(self, seed: int, nz: int, ny: int, nx: int) -> None:
        self.seed, self.nz, self.ny, self.nx = int(seed), int(nz), int(ny), int(nx)

    def _block(self, by: int, bx: int) -> np.ndarray:
        key = [self.seed & 0xFFFFFFFFFFFFFFFF, (by << 32) | bx]
        rng = np.random.Generator(np.random.Philox(key=key))
        return rng.standard_normal((self.nz, BLOCK, BLOCK), dtype=np.float32)

    def window(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Noise pixels ``[y0, y0 + h) x [x0, x0 + w)`` of the field (must lie inside it)."""
        if y0 < 0 or x0 < 0 or y0 + h > self.ny or x0 + w > self.nx:
            raise StudyError(f"noise window ({y0}, {x0}, {h}, {w}) leaves the {self.ny} x {self.nx} noise field")
        out = np.empty((self.nz, h, w), np.float32)
        for by in range(y0 // BLOCK, (y0 + h - 1) // BLOCK + 1):
            for bx in range(x0 // BLOCK, (x0 + w - 1) // BLOCK + 1):
                blk = self._block(by, bx)
                ya, yb = max(y0, by * BLOCK), min(y0 + h, (by + 1) * BLOCK)
                xa, xb = max(x0, bx * BLOCK), min(x0 + w, (bx + 1) * BLOCK)
                out[:, ya - y0:yb - y0, xa - x0:xb - x0] = blk[:, ya - by * BLOCK:yb - by * BLOCK,
                                                              xa - bx * BLOCK:xb - bx * BLOCK]
        return out


def noise_for_field(seed: int, nz: int, n_out: int, scale: int, margin_z: int) -> NoiseField:
    """The noise field of an ``n_out``-pixel square output, grown by ``margin_z`` noise pixels on every side."""
    if n_out % scale:
        raise StudyError(f"the field side {n_out} must be a multiple of the generator's upsampling {scale}")
    n = n_out // scale + 2 * margin_z
    return NoiseField(seed, nz, n, n)


def _run(generator: torch.nn.Module, z: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.inference_mode():
        return generator(torch.from_numpy(z)[None].to(device)).float().cpu().numpy()[0]


def tessellate(generator: torch.nn.Module, noise: NoiseField, n_out: int, *, tile_z: int, margin_z: int,
               write: Callable[[int, int, np.ndarray], None], device: torch.device | str = "cpu",
               progress: bool = True) -> int:
    """Generate the ``n_out``-pixel field tile by tile, calling ``write(y0, x0, tile)`` with each (C, h, w) tile
    of the output in [0, 1]; returns the number of tiles."""
    scale = int(getattr(generator, "scale", 16))
    dev = torch.device(device)
    generator = generator.to(dev).eval()
    n_z = n_out // scale
    starts = list(range(0, n_z, tile_z))
    tiles = [(ty, tx) for ty in starts for tx in starts]
    for ty, tx in tqdm(tiles, disable=not progress, desc="tiles", unit="tile", mininterval=2.0):
        hz, wz = min(tile_z, n_z - ty), min(tile_z, n_z - tx)
        z = noise.window(ty, tx, hz + 2 * margin_z, wz + 2 * margin_z)
        img = _run(generator, z, dev)
        m = margin_z * scale
        write(ty * scale, tx * scale, img[:, m:m + hz * scale, m:m + wz * scale])
    return len(tiles)


def realisation_noise(seed: int, realisation: int, nz: int, n_out: int, scale: int, margin_z: int) -> NoiseField:
    """The noise field of realisation ``realisation`` of a run with this ``seed`` (the fields rule's, and what
    reproduces them elsewhere)."""
    return noise_for_field(seed + REALISATION_SEED_OFFSET + realisation, nz, n_out, scale, margin_z)


def tessellate_array(generator: torch.nn.Module, noise: NoiseField, n_out: int, *, tile_z: int, margin_z: int,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """The tiled field as one ``(C, n_out, n_out)`` array in [0, 1] (fields that fit in memory)."""
    out: list[np.ndarray] = []

    def put(y0: int, x0: int, tile: np.ndarray) -> None:
        if not out:
            out.append(np.zeros((tile.shape[0], n_out, n_out), np.float32))
        out[0][:, y0:y0 + tile.shape[1], x0:x0 + tile.shape[2]] = tile

    tessellate(generator, noise, n_out, tile_z=tile_z, margin_z=margin_z, write=put, device=device, progress=False)
    return out[0]


def one_shot(generator: torch.nn.Module, noise: NoiseField, n_out: int, *, margin_z: int,
             device: torch.device | str = "cpu") -> np.ndarray:
    """The same field generated from the whole noise field at once (for the seamlessness test; small fields)."""
    scale = int(getattr(generator, "scale", 16))
    img = _run(generator.to(torch.device(device)).eval(), noise.window(0, 0, noise.ny, noise.nx), torch.device(device))
    m = margin_z * scale
    return img[:, m:m + n_out, m:m + n_out]


class FitsStreamWriter:
    """One float32 FITS image per band, created at full size and filled tile by tile through a memory map.

    Each file is written under a temporary name and renamed into place by :meth:`close` (a crash leaves no
    partial field under the final name). ``transform(band_index, tile)`` maps a generated tile to the unit.
    """

    def __init__(self, paths: Sequence[str | Path], n: int, headers: Sequence[fits.Header],
                 transform: Callable[[int, np.ndarray], np.ndarray]) -> None:
        self.n, self.transform = int(n), transform
        self._ctx = [atomic_path(p) for p in paths]
        self._tmp = [ctx.__enter__() for ctx in self._ctx]
        self._maps = []
        for tmp, hdr in zip(self._tmp, headers):
            # astropy's recipe for a FITS file larger than memory: the header of a tiny image of the right type,
            # its axes then set to the full size
            prim = fits.PrimaryHDU(data=np.zeros((1, 1), np.float32), header=hdr.copy())
            prim.header["NAXIS1"], prim.header["NAXIS2"] = self.n, self.n
            head = prim.header.tostring().encode("ascii")
            data_bytes = 4 * self.n * self.n
            with open(tmp, "wb") as fh:
                fh.write(head)
                fh.seek(len(head) + math.ceil(data_bytes / 2880) * 2880 - 1)
                fh.write(b"\0")
            self._maps.append(np.memmap(tmp, dtype=">f4", mode="r+", offset=len(head), shape=(self.n, self.n)))

    def __call__(self, y0: int, x0: int, tile: np.ndarray) -> None:
        for b, mm in enumerate(self._maps):
            mm[y0:y0 + tile.shape[1], x0:x0 + tile.shape[2]] = self.transform(b, tile[b])
        if x0 + tile.shape[2] >= self.n:  # a row of tiles is complete: write it out and let its pages go
            self._release()

    def _release(self) -> None:
        """Flush the maps and drop their pages from this process (written pages of a file mapping otherwise
        stay resident: a 16384^2 x 3 field then held 3.5 GB of RSS)."""
        for mm in self._maps:
            mm.flush()
            raw = getattr(mm, "_mmap", None)
            if raw is not None and hasattr(mmap, "MADV_DONTNEED"):
                raw.madvise(mmap.MADV_DONTNEED)

    def close(self, ok: bool = True) -> None:
        for mm in self._maps:
            mm.flush()
        self._maps.clear()
        for ctx in self._ctx:
            if ok:
                ctx.__exit__(None, None, None)
            else:
                ctx.__exit__(StudyError, StudyError("aborted"), None)


def field_header(wcs: WCS, band: str, meta: Mapping[str, Any], prov: Mapping[str, Any],
                 made_by: str = "Spatial-GAN field (Smith & Geach 2019)") -> fits.Header:
    """Header of a generated band: celestial WCS, the boundary keys (FILTER, BUNIT, PHOTZP ...), what made it
    (GENERATD's comment), provenance."""
    hdr = wcs.to_header()
    for key in ("TELESCOP", "INSTRUME", "BUNIT"):
        hdr[key] = meta.get(key, "")
    hdr["FILTER"] = band
    hdr["PHOTZP"] = (float(meta["PHOTZP"][band]), "AB mag of one image unit")
    hdr["GENERATD"] = (True, made_by)
    hdr.update(provenance_header(prov))
    return hdr


def field_wcs(centre_ra: float, centre_dec: float, n: int, pixel_scale: float) -> WCS:
    """North-up TAN WCS of an ``n``-pixel square field centred at (ra, dec)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [centre_ra, centre_dec]
    wcs.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    wcs.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    return wcs


__all__ = ["BLOCK", "REALISATION_SEED_OFFSET", "FitsStreamWriter", "NoiseField", "field_header", "field_wcs",
           "noise_for_field", "one_shot", "realisation_noise", "tessellate", "tessellate_array"]
