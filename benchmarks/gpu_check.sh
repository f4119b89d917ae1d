#!/usr/bin/env bash
# One prepared GPU check of the CUDA path (issue 20), for a fresh GPU machine without network.
#
# On the workstation (network), once:   bash benchmarks/gpu_check.sh --fetch-wheels
#   downloads into .whl/ (git-ignored) the wheels the GPU image lacks: ase and vesin (run-time
#   dependencies), cuequivariance + cuequivariance-torch (the peer; its CUDA ops wheel is too
#   large to carry, so cuEquivariance runs its own default method there, which is recorded) and a
#   recent setuptools (about 4 MB in all).
# On the GPU machine:                   bash benchmarks/gpu_check.sh OUT_DIR
#   (device tool: run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=540))
#   1. installs the carried wheels and the project (pip install --no-deps -e .)
#   2. pytest -m gpu: the kernels (fused cuda edge convolution, sparse_contract) against cg in
#      float32/float64: forward, backward, double backward, MACE force-Hessian symmetry
#   3. 20 training steps of MACE with cg, cuda and sparse backends; losses compared
#   4. times the edge convolution and the product basis against e3nn and cuEquivariance
#   and writes everything (at most 8 files) into OUT_DIR, summary.md first.
# Rehearsal on a CPU machine:           DEVICE=cpu bash benchmarks/gpu_check.sh OUT_DIR
#   (the GPU tests skip, training and timings run on the CPU with the backends that exist there).
set -uo pipefail
cd "$(dirname "$0")/.."

# setuptools: the build backend of `pip install --no-build-isolation -e .` must know PEP 639 (>= 77)
WHEELS=(ase==3.29.0 vesin==0.6.2 cuequivariance==0.13.0 cuequivariance-torch==0.13.0 setuptools==80.9.0)
if [[ "${1:-}" == "--fetch-wheels" ]]; then
  grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >>.git/info/exclude
  platforms=()
  for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  for wheel in "${WHEELS[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "$wheel" || exit 1
  done
  ls -l .whl
  exit 0
fi

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR | --fetch-wheels}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
export EQUITENSOR_KERNEL_CACHE=${EQUITENSOR_KERNEL_CACHE:-/tmp/equitensor_kernels}
export PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
status=()

step "1. install (device $DEVICE)"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if [[ "$DEVICE" != cpu ]]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 || {
    step "pip install --no-deps -e . failed (see the log)"
    status+=("install: FAILED")
  }
fi
python3 - >"$OUT/environment.json" 2>>"$LOG" <<'EOF'
import importlib, json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
for name in ("cupy", "e3nn", "cuequivariance_torch", "ase", "vesin", "equitensor"):
    try:
        info[name] = getattr(importlib.import_module(name), "__version__", "installed")
    except Exception as error:
        info[name] = f"missing: {error}"
print(json.dumps(info, indent=1))
EOF
cat "$OUT/environment.json" | tee -a "$LOG"

step "2. pytest -m gpu"
timeout 270 python3 -m pytest -q -m gpu tests/test_kernels_gpu.py -p no:cacheprovider -rs >"$OUT/pytest_gpu.txt" 2>&1
code=$?
tail -3 "$OUT/pytest_gpu.txt" | tee -a "$LOG"
status+=("pytest -m gpu: exit $code ($(tail -1 "$OUT/pytest_gpu.txt"))")

step "3. 20 training steps per backend"
runs="cg:cg,cuda:cg,sparse:sparse"
[[ "$DEVICE" == cpu ]] && runs="cg:cg,sparse:sparse"
timeout 200 python3 benchmarks/gpu_train_check.py --out /tmp/gpu_train_check --device "$DEVICE" --runs "$runs" \
  >>"$LOG" 2>&1
code=$?
cp /tmp/gpu_train_check/train_check.json /tmp/gpu_train_check/train_check.md "$OUT/" 2>>"$LOG"
status+=("training check: exit $code")

step "4. timings (edge convolution, product basis) against e3nn and cuEquivariance"
conv_backends="cg,sparse,cuda" nodes=5000
[[ "$DEVICE" == cpu ]] && conv_backends="cg,sparse" nodes=500
timeout 150 python3 -m equitensor.cli bench conv --device "$DEVICE" --dtype float32 --backends "$conv_backends" \
  --peers e3nn,cueq --lmax 1,2 --channels 128 --passes fwd,fwd+bwd --reps 10 --no-probe --quiet \
  --json "$OUT/bench_conv.json" >"$OUT/bench.txt" 2>>"$LOG"
status+=("bench conv: exit $?")
timeout 90 python3 -m equitensor.cli bench product --device "$DEVICE" --dtype float32 --backends cg,sparse \
  --peers cueq --lmax 2 --channels 128 --batch "$nodes" --passes fwd,fwd+bwd --reps 10 --no-probe --quiet \
  --json "$OUT/bench_product.json" >>"$OUT/bench.txt" 2>>"$LOG"
status+=("bench product: exit $?")

{
  echo "# GPU check ($(date -u +%F), device $DEVICE)"
  echo
  echo '```'
  cat "$OUT/environment.json"
  echo '```'
  echo
  for line in "${status[@]}"; do echo "- $line"; done
  echo
  cat "$OUT/train_check.md" 2>/dev/null
  echo
  echo '```'
  cat "$OUT/bench.txt" 2>/dev/null
  echo '```'
} >"$OUT/summary.md"
step "done: $OUT/summary.md"
cat "$OUT/summary.md"
