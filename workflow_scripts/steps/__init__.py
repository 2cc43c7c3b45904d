"""Thin adapters run by Snakemake's ``script:`` directive.

Each module reads ``snakemake.input/params/output``, calls the library and writes files. Nothing else.
"""
