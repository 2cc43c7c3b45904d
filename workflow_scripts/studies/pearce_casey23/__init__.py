"""cGAN anomaly detection on JWST CEERS (Pearce-Casey et al. 2023): PSF matching to F444W, sep catalogue, 90x90
six-band cutouts, pix2pix from the short- to the long-wavelength bands, the SED error of the prediction as an
anomaly score for mergers and EROs, and a photometry-only baseline beside it.
"""
