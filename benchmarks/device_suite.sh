#!/usr/bin/env bash
# One run on a lent GPU: build the extension for the present GPU only (no internet), run every GPU test, run every
# benchmark in quick mode, print a short table last, and copy logs and CSVs to $OUT when it is set.
# Budget: < 5 minutes on an H200 (build ~1-2 min with 16 cores, tests ~1 min, benchmarks ~1-2 min).
# Later issues add their tests/benchmarks to the TESTS and BENCHES lists below.
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Logs go to a local folder; at the end they are packed into one archive under $OUT (the device tool brings
# back at most 8 files).
LOGS=/tmp/rsn_fast_device_suite
rm -rf "$LOGS"
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
T0=$(date +%s)
stamp() { echo "[suite $(( $(date +%s) - T0 ))s] $*"; }

TESTS=(tests/ops tests/nn)
BENCHES=(benchmarks.bench_depthwise benchmarks.bench_prm benchmarks.bench_decode benchmarks.bench_targets
         benchmarks.bench_rsb)

stamp "GPU: $(nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null | head -1)"
$PY - <<'PYEOF' 2>&1 | tee "$LOGS/env.txt"
import torch, sys
try:
    import triton; tv = triton.__version__
except Exception as e:
    tv = f"none ({e})"
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", tv)
print("gpu", torch.cuda.get_device_name(0), "cc", torch.cuda.get_device_capability(0))
PYEOF

# --- build: CUDA for this GPU only ---
CC=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
export TORCH_CUDA_ARCH_LIST="$CC"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
stamp "building for sm_${CC/./} with MAX_JOBS=$MAX_JOBS"
if timeout 240 $PY -m pip install --no-build-isolation --no-deps -e . >"$LOGS/build.log" 2>&1; then
  stamp "build ok"
else
  stamp "BUILD FAILED (tail of build.log follows); continuing with Triton/reference backends"
  tail -40 "$LOGS/build.log"
fi
$PY -c "import rsn_fast._C as c; print('extension:', c.__file__, 'cuda' if c.with_cuda() else 'no cuda', c.cuda_archs() if hasattr(c,'cuda_archs') else '')" 2>&1 | tee -a "$LOGS/env.txt"
$PY -m rsn_fast.info >"$LOGS/info.txt" 2>&1 && stamp "rsn_fast.info ok" || stamp "rsn_fast.info failed (see info.txt)"

# --- tests on the GPU (the same files CI runs on CPU; GPU-only cases run here) ---
stamp "tests: ${TESTS[*]}"
# The offline Triton compile test is for CPU-only CI; here the kernels compile for real.
timeout 120 $PY -m pytest "${TESTS[@]}" -q -rs --durations=10 -p no:cacheprovider \
  --deselect tests/ops/test_triton_compile.py >"$LOGS/tests.log" 2>&1
TEST_RC=$?
stamp "tests rc=$TEST_RC: $(tail -1 "$LOGS/tests.log")"
[ $TEST_RC -ne 0 ] && grep -E "^(FAILED|ERROR)|Error" "$LOGS/tests.log" | head -20

# --- benchmarks, quick mode ---
for b in "${BENCHES[@]}"; do
  stamp "bench $b"
  timeout 100 $PY -m "$b" --quick >"$LOGS/$b.log" 2>&1 || stamp "$b rc=$? (see $LOGS/$b.log)"
done

if [ -n "${OUT:-}" ]; then
  cp -r benchmarks/results "$LOGS/results" 2>/dev/null || true
  tar -czf "$OUT/device_suite.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  stamp "logs and CSVs packed into \$OUT/device_suite.tar.gz"
fi

# --- short table last (the reply shows the end of the output) ---
echo
stamp "summary (ms median; x eager = speed-up over eager PyTorch)"
for b in "${BENCHES[@]}"; do
  grep -E "^# .*copy bandwidth" "$LOGS/$b.log" | head -1
  grep -E "^\| " "$LOGS/$b.log" | grep -E "op \| provider|---|fwd\+bwd|eval|decode_|_targets" | head -24
done
stamp "tests: $(tail -1 "$LOGS/tests.log")"
stamp "done"
