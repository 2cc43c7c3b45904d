"""Throughput of the photometry engines in objects/s, printed as a table (speed goals live here, not in tests).

    python benchmarks/bench_photometry.py                 # mixture engine on CPU (1 and 2 threads), CUDA when
                                                          # present, and ngmix when it can be imported
    python benchmarks/bench_photometry.py --quick
    PYTHONPATH=/path/to/ngmix python benchmarks/bench_photometry.py   # ngmix from a source checkout
    python benchmarks/bench_photometry.py --save-renders r.npz          # the noiseless renders, for a machine
    python benchmarks/bench_photometry.py --renders r.npz --devices cuda  # without GalSim (a lent GPU)

Stamps as in the study: 21 x 21 low-res (HSC-like Moffat PSF, FWHM 3.33 px), 48 x 48 low-res with galaxies twice
as large, and 64 x 64 hi-res (HST-like Moffat, FWHM 1.5 px, fitted on a 4x oversampled effective PSF); one galaxy
per stamp (isolated) or two (blend: fitted jointly), exponential, de Vaucouleurs or bulge + disk (bdf: 30 % of
the light in a de Vaucouleurs bulge of the disk's T), S/N ~ 50, GalSim renders plus Gaussian noise. Every engine
fits the same stamps at the same positions with the same model and priors. Goal of the issue: >= 5x ngmix per
object on CPU, >= 100x on a GPU.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the photometry rule: no spinning threads on a busy machine

import numpy as np
import torch

from workflow_scripts.photometry import FitSettings, get_engine, ngmix_available
from workflow_scripts.photometry.mixtures import sersic_equivalent

CASES = {21: dict(fwhm=0.6 / 0.18, r_e=1.5, oversampling=1, sep=(4.0, -2.5)),
         48: dict(fwhm=0.6 / 0.18, r_e=3.0, oversampling=1, sep=(8.0, -5.0)),
         64: dict(fwhm=1.5, r_e=4.0, oversampling=4, sep=(9.0, -6.0))}


def psf_image(fwhm: float, oversampling: int) -> np.ndarray:
    import galsim

    psf = galsim.Moffat(beta=3.0, fwhm=fwhm)
    if oversampling == 1:
        return psf.drawImage(nx=25, ny=25, scale=1.0).array
    n = 25 * oversampling + 1
    return galsim.Convolve(psf, galsim.Pixel(1.0)).drawImage(nx=n, ny=n, scale=1.0 / oversampling,
                                                             method="no_pixel").array * oversampling**2


def galaxy(model: str, r_e: float):  # -> galsim.GSObject
    """A unit-flux GalSim galaxy of the model's family with half-light radius r_e (bdf: of the disk; the bulge
    has the disk's T and 30 % of the light)."""
    import galsim

    if model == "exp":
        return galsim.Exponential(half_light_radius=r_e)
    if model == "dev":
        return galsim.DeVaucouleurs(half_light_radius=r_e)
    r_bulge = r_e * np.sqrt(sersic_equivalent("exp")[1] / sersic_equivalent("dev")[1])
    return galsim.Add([galsim.Exponential(half_light_radius=r_e, flux=0.7),
                       galsim.DeVaucouleurs(half_light_radius=r_bulge, flux=0.3)])


FLUX = 1000.0


def render(size: int, n_obj: int, model: str = "exp") -> np.ndarray:
    """The noiseless stamp of a case: one galaxy of flux FLUX at the centre, and for a blend a second of half the
    flux and 0.7 the size at the case's separation."""
    import galsim

    case = CASES[size]
    psf = galsim.Moffat(beta=3.0, fwhm=case["fwhm"])
    img = galsim.Convolve(galaxy(model, case["r_e"]).shear(g1=0.1, g2=-0.05).withFlux(FLUX),
                          psf).drawImage(nx=size, ny=size, scale=1.0).array
    if n_obj == 2:
        img = img + galsim.Convolve(galaxy(model, case["r_e"] * 0.7).withFlux(0.5 * FLUX),
                                    psf).drawImage(nx=size, ny=size, scale=1.0, offset=case["sep"]).array
    return img


def stamps(size: int, n: int, n_obj: int, rng: np.random.Generator,
           clean: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], float]:
    """``n`` noisy copies (S/N ~ 50) of a case's noiseless render, with the true positions jittered by 0.3 px."""
    case = CASES[size]
    c = (size - 1) / 2
    sigma = FLUX / 50 / (2 * np.sqrt(np.pi) * case["r_e"] * 1.5)
    pos = [[c, c]] + ([[c + case["sep"][0], c + case["sep"][1]]] if n_obj == 2 else [])
    images = clean[None] + rng.normal(scale=sigma, size=(n, size, size))
    positions = [np.array(pos) + rng.normal(0, 0.3, (n_obj, 2)) for _ in range(n)]
    return images, positions, sigma


def renders(sizes, models, path: str | None) -> dict[str, np.ndarray]:
    """PSF images and noiseless stamps of every case: GalSim renders, or those saved in ``path`` (--renders)."""
    if path:
        with np.load(path) as saved:
            out = dict(saved)
        missing = [f"{s} {m}" for s in sizes for m in models if f"stamp_{s}_{m}_2" not in out]
        if missing:
            raise SystemExit(f"{path} holds no render of {', '.join(missing)}: save them with --save-renders")
        return out
    out = {f"psf_{s}": psf_image(CASES[s]["fwhm"], CASES[s]["oversampling"]) for s in sizes}
    out.update({f"stamp_{s}_{m}_{k}": render(s, k, m) for s in sizes for m in models for k in (1, 2)})
    return out


def rate(engine, images, positions, sigma, repeat: int) -> tuple[float, float]:
    engine.fit(images[: max(8, len(images) // 20)], positions[: max(8, len(images) // 20)], sigma)   # warm-up / JIT
    best, conv = 0.0, 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = engine.fit(images, positions, sigma)
        dt = time.perf_counter() - t0
        best = max(best, len(res) / dt)
        conv = float(res["converged"].mean())
    return best, conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[21, 48, 64], choices=sorted(CASES))
    parser.add_argument("--models", nargs="+", default=["exp", "dev", "bdf"], choices=["exp", "dev", "bdf"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads of the mixture engine")
    parser.add_argument("--no-ngmix", action="store_true")
    parser.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"],
                        help="the mixture engine's devices (default: cpu, and cuda when present)")
    parser.add_argument("--renders", default=None, help="noiseless renders saved by --save-renders (no GalSim)")
    parser.add_argument("--save-renders", default=None, help="write the noiseless renders to this .npz and stop")
    args = parser.parse_args()
    clean = renders(args.sizes, args.models, args.renders)
    if args.save_renders:
        np.savez_compressed(args.save_renders, **clean)
        print(f"renders of {len(clean)} stamps and PSFs written to {args.save_renders}")
        return
    rng = np.random.default_rng(0)
    n_mix = {21: 500, 48: 200, 64: 200} if args.quick else {21: 4000, 48: 1000, 64: 1000}
    n_ng = {21: 100, 48: 50, 64: 50} if args.quick else {21: 400, 48: 150, 64: 150}
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for size, model in [(size, model) for size in args.sizes for model in args.models]:
        case = CASES[size]
        pimg = clean[f"psf_{size}"]
        for n_obj in (1, 2):
            label = f"{size}x{size} {model} {'isolated' if n_obj == 1 else 'blend of 2'}"
            images, positions, sigma = stamps(size, n_mix[size], n_obj, rng, clean[f"stamp_{size}_{model}_{n_obj}"])
            ng_rate = None
            first = len(rows)
            if ngmix_available() and not args.no_ngmix:
                torch.set_num_threads(1)
                eng = get_engine("ngmix", pimg, FitSettings(model=model), psf_oversampling=case["oversampling"])
                k = n_ng[size]
                ng_rate, conv = rate(eng, images[:k], positions[:k], sigma, 1)
                rows.append((label, "ngmix", "cpu", 1, ng_rate, conv, 1.0))
            for device in devices:
                for threads in (args.threads if device == "cpu" else (2,)):
                    torch.set_num_threads(threads)
                    eng = get_engine("mixture", pimg, FitSettings(model=model, device=device),
                                     psf_oversampling=case["oversampling"])
                    r, conv = rate(eng, images, positions, sigma, 2)
                    rows.append((label, "mixture", device, threads, r, conv, r / ng_rate if ng_rate else None))
            for row in rows[first:]:
                print_row(row)
    print()
    print(f"{'stamps':26s} {'engine':8s} {'device':6s} {'threads':>7s} {'objects/s':>10s} {'converged':>9s} "
          f"{'x ngmix':>8s}")
    for row in rows:
        print_row(row)


def print_row(row: tuple) -> None:
    label, engine, device, threads, r, conv, ratio = row
    ratio_s = f"{ratio:8.1f}" if ratio is not None else f"{'-':>8s}"
    print(f"{label:26s} {engine:8s} {device:6s} {threads:7d} {r:10.0f} {conv:9.1%} {ratio_s}", flush=True)


if __name__ == "__main__":
    main()
