#!/usr/bin/env bash
# Stage, in .device/ (ignored by git), what scripts/device/session.sh needs on a lent GPU machine, whose image has
# Python 3.12 with torch, numpy, scipy, pandas and pyyaml but none of astropy, jsonschema or GalSim, and no network:
#   - wheels of the packages it lacks that the GPU code paths import (astropy, jsonschema and their needs),
#     at the versions of this checkout's environment, for CPython 3.12 on x86-64 Linux;
#   - the deep-field study's prepared training field of a pipeline run (made there first if missing);
#   - the photometry benchmark's noiseless stamps (GalSim's wheel, 55 MB, would not fit the 64 MiB that travel).
# Usage: bash scripts/device/prepare.sh WORKDIR      (then run session.sh with carry [".device"])
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORKDIR=$(cd "${1:?usage: prepare.sh WORKDIR (a pipeline run folder; its deep-field training field is made if missing)}" && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
DEV=$REPO/.device
mkdir -p "$DEV/whl" "$DEV/data"

field=$WORKDIR/results/smith_geach19/training_field.fits
if [ ! -f "$field" ]; then
    echo "making $field"
    (cd "$WORKDIR" && "$(dirname "$PY")/snakemake" -s "$REPO/Snakefile" --cores 2 results/smith_geach19/training_field.fits)
fi
cp "$field" "${field%.fits}.json" "$DEV/data/"

pins=$("$PY" -c 'from importlib.metadata import version as v; print(" ".join(f"{n}=={v(n)}" for n in (
    "astropy", "pyerfa", "astropy-iers-data", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py")))')
rm -f "$DEV"/whl/*.whl
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEV/whl" $pins

"$PY" "$REPO/benchmarks/bench_photometry.py" --models exp bdf --save-renders "$DEV/data/photometry_renders.npz"
du -sh "$DEV"/*
echo "staged in $DEV: run scripts/device/session.sh on the GPU machine with carry [\".device\"]"
