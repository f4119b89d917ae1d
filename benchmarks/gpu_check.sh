#!/usr/bin/env bash
# One prepared GPU check of the CUDA path (issue 20), for a fresh GPU machine without network.
#
# On the workstation (network), once:   bash benchmarks/gpu_check.sh --fetch-wheels
#   downloads into .whl/ (git-ignored) the wheels the GPU image lacks: ase and vesin (run-time
#   dependencies), cuequivariance + cuequivariance-torch (the peer; its CUDA ops wheel is too
#   large to carry, so cuEquivariance runs its own default method there, which is recorded) and a
#   recent setuptools (about 4 MB in all).
# On the GPU machine:                   bash benchmarks/gpu_check.sh OUT_DIR
#   (device tool: run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=480))
#   1. installs the carried wheels and the project (pip install --no-deps -e .)
#   2. pytest -m gpu: the kernels (fused cuda edge convolution, sparse_contract) against cg in
#      float32/float64: forward, backward, double backward, MACE force-Hessian symmetry
#   3. 20 training steps of MACE with cg, cuda and sparse backends; losses compared
#   4. times the edge convolution and the product basis against e3nn and cuEquivariance
#   and writes at most 8 files into OUT_DIR: summary.md (written even when a step or the whole
#   command is killed) has every step's status, the training table, the timings and the log.
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
WORK=$(mktemp -d) # training runs, kernel cache and the log: only the <= 8 result files go to OUT
LOG="$WORK/gpu_check.log"
export EQUITENSOR_KERNEL_CACHE=${EQUITENSOR_KERNEL_CACHE:-$WORK/kernels}
export PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
status=()

summary() { # also when a step, or the whole command, is killed at its limit
  {
    echo "# GPU check ($(date -u +%F), device $DEVICE)"
    echo
    echo '```'
    cat "$OUT/environment.json" 2>/dev/null
    echo '```'
    echo
    for line in "${status[@]}"; do echo "- $line"; done
    echo
    cat "$OUT/train_check.md" 2>/dev/null
    echo
    echo '```'
    cat "$OUT/bench.txt" 2>/dev/null
    echo '```'
    echo
    echo '## Log (last 60 lines)'
    echo '```'
    tail -60 "$LOG"
    echo '```'
  } >"$OUT/summary.md"
}
trap summary EXIT

# budget (seconds): install ~30, tests 180, training 100, timings 60 + 40: about 7 minutes
step "1. install (device $DEVICE)"
if compgen -G ".whl/*.whl" >/dev/null; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl >>"$LOG" 2>&1; then
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  else
    status+=("carried wheels: install FAILED (see the log)")
  fi
fi
if [[ "$DEVICE" != cpu ]]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 || status+=("pip install -e .: FAILED")
fi
python3 - >"$OUT/environment.json" 2>>"$LOG" <<'PYTHON'
import importlib, json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
for name in ("cupy", "e3nn", "cuequivariance_torch", "ase", "vesin", "equitensor"):
    try:
        info[name] = getattr(importlib.import_module(name), "__version__", "installed")
    except Exception as error:
        info[name] = f"missing: {error}"
print(json.dumps(info, indent=1))
PYTHON
tee -a "$LOG" <"$OUT/environment.json"

step "2. pytest -m gpu"
timeout 180 python3 -m pytest -q -m gpu tests/test_kernels_gpu.py -p no:cacheprovider -rs >"$OUT/pytest_gpu.txt" 2>&1
code=$?
tail -3 "$OUT/pytest_gpu.txt" | tee -a "$LOG"
status+=("pytest -m gpu: exit $code ($(tail -1 "$OUT/pytest_gpu.txt"))")

step "3. 20 training steps per backend"
runs="cg:cg,cuda:cg,sparse:sparse"
[[ "$DEVICE" == cpu ]] && runs="cg:cg,sparse:sparse"
timeout 100 python3 benchmarks/gpu_train_check.py --out "$WORK/train" --device "$DEVICE" --runs "$runs" >>"$LOG" 2>&1
status+=("training check: exit $?")
cp "$WORK"/train/train_check.json "$WORK"/train/train_check.md "$OUT/" 2>>"$LOG"

step "4. timings (edge convolution, product basis) against e3nn and cuEquivariance"
conv_backends="cg,sparse,cuda" nodes=5000
[[ "$DEVICE" == cpu ]] && conv_backends="cg,sparse" nodes=500
timeout 60 python3 -m equitensor.cli bench conv --device "$DEVICE" --dtype float32 --backends "$conv_backends" \
  --peers e3nn,cueq --lmax 1,2 --channels 128 --passes fwd,fwd+bwd --reps 10 --no-probe --quiet \
  --json "$OUT/bench_conv.json" >"$OUT/bench.txt" 2>>"$LOG"
status+=("bench conv: exit $?")
timeout 40 python3 -m equitensor.cli bench product --device "$DEVICE" --dtype float32 --backends cg,sparse \
  --peers cueq --lmax 2 --channels 128 --batch "$nodes" --passes fwd,fwd+bwd --reps 10 --no-probe --quiet \
  --json "$OUT/bench_product.json" >>"$OUT/bench.txt" 2>>"$LOG"
status+=("bench product: exit $?")
step "done: $OUT/summary.md"
