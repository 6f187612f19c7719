#!/usr/bin/env bash
# Device checks on a machine with one CUDA GPU, from the repository root (about 12 minutes at most):
#
#   bash benchmarks/gpu.sh
#   PYTHON=/path/to/python OUT=/some/dir bash benchmarks/gpu.sh
#
# 1. nvidia-smi and torch's view of CUDA;
# 2. the test suite on CUDA (`pytest -x -q --device cuda`, 4 minutes at most);
# 3. benchmarks/scale.py on CUDA, then on the CPU: the non-centered hierarchical model and
#    GP classification at D = 1e4 and 1e5, short budgets (CUDA children one at a time, so
#    that their step times do not share the GPU; CPU children 6 at once, 2 threads each);
#    rows in benchmarks/results/scale_cuda.json (copied to $OUT) and $OUT/scale_cpu.json;
# 4. CUDA / CPU seconds per SVI step per (model, D, guide).
#
# PYTHON defaults to .venv/bin/python where it exists, else python; the checkout itself is
# put on PYTHONPATH, so flowguide need not be installed. OUT defaults to /tmp. Each step has
# its own time limit and a failing step does not stop the next.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python
fi
PYTHON=${PYTHON:-python}
OUTDIR=${OUT:-/tmp}
mkdir -p "$OUTDIR" benchmarks/results
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== 1. device"
nvidia-smi || echo "nvidia-smi failed"
"$PYTHON" -c "import torch; ok = torch.cuda.is_available(); \
print('torch', torch.__version__, 'cuda available:', ok, torch.cuda.get_device_name() if ok else '')"

echo "== 2. test suite on CUDA"
timeout --kill-after=10 240 "$PYTHON" -m pytest -x -q --device cuda -p no:cacheprovider 2>&1 \
    | tee "$OUTDIR/pytest_cuda.log" | tail -40
echo "pytest exit status: ${PIPESTATUS[0]} (124: stopped at the time limit)"

SCALE=(benchmarks/scale.py --models hierarchical_noncentered gp_classification --dims 10000 100000
    --steps 100 --seconds 5 --max-train-s 10 --elbo-particles 64 --draws 200 --draws-large 100)

echo "== 3a. scale benchmark on CUDA"
timeout --kill-after=10 300 "$PYTHON" "${SCALE[@]}" --device cuda --jobs 1 --timeout 90 \
    --out benchmarks/results/scale_cuda.json 2>&1 | tee "$OUTDIR/scale_cuda.log" | grep -v '^done '
cp benchmarks/results/scale_cuda.json "$OUTDIR/scale_cuda.json" 2>/dev/null || echo "no CUDA results"

echo "== 3b. scale benchmark on the CPU"
timeout --kill-after=10 150 "$PYTHON" "${SCALE[@]}" --device cpu --jobs 6 --threads 2 --timeout 120 \
    --out "$OUTDIR/scale_cpu.json" 2>&1 | tee "$OUTDIR/scale_cpu.log" | grep -v '^done '

echo "== 4. CUDA / CPU seconds per step"
"$PYTHON" - "$OUTDIR/scale_cuda.json" "$OUTDIR/scale_cpu.json" <<'EOF'
import json
import sys
from pathlib import Path

paths = [Path(p) for p in sys.argv[1:3]]
if not all(p.exists() for p in paths):
    sys.exit(f"missing: {[str(p) for p in paths if not p.exists()]}")
cuda, cpu = ([r for r in json.loads(p.read_text())["rows"] if r["budget"] == "steps"] for p in paths)
cpu_steps = {(r["model"], r["dim"], r["guide"]): r["s_per_step"] for r in cpu}
print(f"{'model':<26}{'D':>8}  {'guide':<31}{'CUDA s/step':>12}{'CPU s/step':>12}{'CUDA/CPU':>10}")
for row in cuda:
    gpu, host = row["s_per_step"], cpu_steps.get((row["model"], row["dim"], row["guide"]))
    ratio = f"{gpu / host:10.3f}" if gpu and host else f"{'-':>10}"
    cells = [f"{v:12.5f}" if v else f"{'-':>12}" for v in (gpu, host)]
    note = f"  {row['error'][:60]}" if row.get("error") else ""
    print(f"{row['model']:<26}{row['dim'] or 0:>8}  {row['guide']:<31}{cells[0]}{cells[1]}{ratio}{note}")
EOF
