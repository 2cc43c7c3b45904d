"""Generative deep fields (Smith & Geach 2019): a Spatial-GAN trained on crops of the XDF, a self-ensemble of its
snapshots, fields of any size tessellated from one noise field and streamed to FITS, validated by source extraction
and magnitude distributions against the real field.
"""
