# Sourced by the scripts run on a lent GPU machine (bench/gpu_check.sh, bench/g2p_gpu.sh), from the repo root, after
# they set OUT (what comes back), WORK (scratch) and BUDGET_S (the whole script's seconds): the step timeouts (`t`), the
# summary lines (`step`), the wheels the GPU image lacks (.whl/: hydra-core, omegaconf, antlr4, MLflow and its needs;
# NO_WHEELS=1 for a rehearsal here) and a record of the machine and the packages in $OUT/env.txt.
# shellcheck shell=bash
set -u -o pipefail
export PYTHONUNBUFFERED=1
REPO=$PWD
DEVICE=${DEVICE:-cuda}          # cuda (the run) | cpu (a rehearsal of the same steps, tiny and quick)
PY=${PY:-python3}
case $PY in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac  # the runs cd to $WORK
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
failed=0
DEADLINE=$((SECONDS + BUDGET_S))  # the whole script ends within BUDGET_S seconds
t() {  # t LIMIT: a step's timeout, LIMIT seconds or what is left of the budget (at least 5)
    local left=$((DEADLINE - SECONDS))
    [ $left -lt 5 ] && left=5
    echo $(($1 < left ? $1 : left))
}
step() {  # step NAME RC: one line per step in summary.txt
    echo "step $1: rc $2" | tee -a "$SUMMARY"
    [ "$2" = 0 ] || failed=1
}

# 0. The packages the GPU image lacks (hydra-core, omegaconf, antlr4, MLflow and its needs), as wheels in .whl/.
if [ -z "${NO_WHEELS:-}" ]; then
    timeout -k 5 "$(t 90)" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${WHEELS:-.whl}"/*.whl 2>&1 | tail -20 >"$OUT/env.txt"
    rc=$?; step install $rc; [ $rc = 0 ] || { cat "$OUT/env.txt"; exit 1; }
    export PYTHONPATH=/tmp/site:$REPO/src
else
    export PYTHONPATH=$REPO/src
    : >"$OUT/env.txt"
fi
export SEQPIPE_CONF_DIR=$REPO/conf      # the runs work in $WORK (Hydra's and MLflow's folders go there)
unset MLFLOW_TRACKING_URI

{
    date -u
    timeout "$(t 20)" nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    timeout -k 5 "$(t 60)" "$PY" - <<'EOF'
import sys, torch, lightning, torchmetrics, hydra, omegaconf, mlflow, sqlalchemy, alembic
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "enabled", torch.backends.cudnn.enabled)
print("lightning", lightning.__version__, "| torchmetrics", torchmetrics.__version__, "| hydra", hydra.__version__,
      "| omegaconf", omegaconf.__version__, "| mlflow", mlflow.__version__, "| sqlalchemy", sqlalchemy.__version__,
      "| alembic", alembic.__version__)
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(), "| capability", torch.cuda.get_device_capability(),
          "| bf16 supported", torch.cuda.is_bf16_supported())
else:
    print("no CUDA device")
EOF
} >>"$OUT/env.txt" 2>&1
step env $?
cat "$OUT/env.txt"
