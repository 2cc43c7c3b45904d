#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (the device tool's run, from the repository root, with
# carry [".device"] staged by scripts/device/prepare.sh; about 7 minutes; PARTS picks some of tests, sgan, bench):
#   1. the CUDA tests (tests/test_cuda.py): every objective trains with mixed precision, resume, the photometry
#      engine, the tessellation and the PixelCNN against the CPU;
#   2. the deep-field Spatial-GAN at the paper preset's size for SGAN_MINUTES (default 2.5), its last three
#      generators written to $OUT/sgan (judge them here: python scripts/device/sgan.py evaluate ...);
#   3. the benchmarks' GPU rows: pix2pix, PixelCNN, tessellation (16384^2 x 3, the paper's network), photometry.
# Everything printed is also in $OUT/session.log. A dry run on a CPU machine, in this checkout's environment:
#   DEVICE=cpu PY=.venv/bin/python SKIP_INSTALL=1 QUICK=1 SGAN_MINUTES=0.2 SGAN_PRESET=presets/ci.yaml \
#       TESS_SIDE=1024 bash scripts/device/session.sh
# (QUICK: the photometry benchmark's quick set on the 21x21 stamps, and no SR-GAN benchmark)
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
SGAN_MINUTES=${SGAN_MINUTES:-2.5}
PARTS=${PARTS:-tests sgan bench}
SGAN_PRESET=${SGAN_PRESET:-presets/paper.yaml}
TESS_SIDE=${TESS_SIDE:-16384}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
step() { echo; echo "=== $(date -u +%T) $*"; }

step "install the carried wheels"
if [ ! -f .device/data/training_field.fits ]; then echo "no .device/data: run scripts/device/prepare.sh here first"; exit 2; fi
if [ -z "${SKIP_INSTALL:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 GENASTRO_TEST_DEVICE=$DEVICE
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
    torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU", flush=True)'

part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if part tests; then
    step "CUDA tests"
    timeout 180 "$PY" -m pytest tests/test_cuda.py -q -s -p no:cacheprovider
fi

if part sgan; then
    step "Spatial-GAN for $SGAN_MINUTES min ($SGAN_PRESET)"
    timeout "$("$PY" -c "print(int(60 * $SGAN_MINUTES + 90))")" "$PY" scripts/device/sgan.py train --device "$DEVICE" \
        --field .device/data/training_field.fits --preset "$SGAN_PRESET" --minutes "$SGAN_MINUTES" --out "$OUT/sgan"
fi

if part bench; then
    step "benchmarks"
    timeout 120 "$PY" benchmarks/bench_pix2pix.py --steps 2 --paper-cpu-steps 1 --bf16 --threads 16
    timeout 90 "$PY" benchmarks/bench_pixelcnn.py --seconds 2 --threads 16
    timeout 120 "$PY" benchmarks/bench_tessellation.py --device "$DEVICE" --side "$TESS_SIDE" --filters 256 128 64 32 \
        --threads 16
    timeout 120 "$PY" benchmarks/bench_tessellation.py --device "$DEVICE" --side "$TESS_SIDE" --filters 256 128 64 32 \
        --threads 16 --bf16 --channels-last
    timeout 120 "$PY" benchmarks/bench_photometry.py --renders .device/data/photometry_renders.npz --devices "$DEVICE" \
        --models exp bdf --no-ngmix ${QUICK:+--quick --sizes 21 --threads 1}
    [ -n "${QUICK:-}" ] || timeout 150 "$PY" benchmarks/bench_deblend.py --quick --only gan
fi
step "done"
