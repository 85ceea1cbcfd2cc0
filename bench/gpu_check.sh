#!/usr/bin/env bash
# The GPU path, run once on a lent GPU machine (issue 24, part 4): the GPU trainer config (trainer=gpu: bf16-mixed,
# cuDNN) through a real `seqpipe train` on a tiny generated corpus (fetch, prepare, train, evaluate, MLflow on SQLite),
# then the throughput bench with --device cuda. Run from the repo root; everything it records goes to $OUT (at most
# 8 files) and it ends within 8 minutes (a timeout on each step). docs/benchmarks.md says how to run it.
#
#   bash bench/gpu_check.sh                 # on the GPU machine, with the wheels of .whl/ (hydra, omegaconf, MLflow)
#   DEVICE=cpu NO_WHEELS=1 PY=.venv/bin/python OUT=/tmp/gpu_check bash bench/gpu_check.sh
#                                           # a rehearsal here: the same steps on CPU (trainer=cpu), tiny sizes
OUT=${OUT:-/tmp/gpu_check_out}
WORK=${WORK:-/tmp/gpu_check_work}
BUDGET_S=${BUDGET_S:-460}       # the whole script ends within 8 minutes
# shellcheck source=bench/gpu_env.sh
source "$(dirname "$0")/gpu_env.sh"

if [ "$DEVICE" = cuda ]; then
    TRAINER=gpu
    SIZE=(model.embedding_dim=64 model.hidden_size=256 data.batch_size=16 data.bptt=64 data.eval_batch_size=8)
    DOCS=20; LINES=200; EPOCHS=3
    BENCH=(--steps 30 --rounds 3)
else
    TRAINER=cpu
    SIZE=(model.embedding_dim=16 model.hidden_size=32 data.batch_size=4 data.bptt=32 data.eval_batch_size=2)
    DOCS=5; LINES=60; EPOCHS=2
    BENCH=(--steps 3 --rounds 1 --cells rnn --sizes 32)
fi
OVR=(recipe=text_file "trainer=$TRAINER" "${SIZE[@]}" "recipe.fetch.paths=[$WORK/corpus]"
     "paths.downloads=$WORK/downloads" "paths.raw=$WORK/data/raw" "paths.prepared=$WORK/data/prepared"
     "mlflow.tracking_uri=sqlite:///$WORK/mlflow.db" "mlflow.experiment=gpu-check"
     "trainer.max_epochs=$EPOCHS" trainer.enable_progress_bar=false train.log_every_n_steps=10
     optim.warmup_steps=0 prepare.val_fraction=0.2 prepare.test_fraction=0.2 evaluate.sample_tokens=100)
RUN=$WORK/run                            # hydra.run.dir: the train command puts models/ and reports/ here
AFTER=("paths.models=$RUN/models" "paths.reports=$RUN/reports")

# 1. A real training through the stages: fetch + prepare, `seqpipe train` (Hydra's CLI), evaluate (the test loss).
(
    cd "$WORK" || exit 1
    echo "== fetch + prepare ($DOCS documents x $LINES lines)"
    timeout -k 5 "$(t 60)" "$PY" - "$DOCS" "$LINES" "${OVR[@]}" <<'EOF' || exit $?
import random, sys
from pathlib import Path
from seqpipe import fetch, prepare
from seqpipe.config import compose
n_docs, lines, overrides = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
words = ("the king my lord good night what say you sir love heart fair sweet death noble speak "
         "come hence thou art and shall not be so well here now").split()
rng, corpus = random.Random(0), Path("corpus")
corpus.mkdir(exist_ok=True)
for d in range(n_docs):  # as tests/conftest.py's write_corpus: speaker lines and verse from a fixed word list
    out = [f"{rng.choice(['ROMEO', 'JULIET', 'NURSE', 'KING'])}:\n"
           f"{' '.join(rng.choice(words) for _ in range(rng.randint(4, 9))).capitalize()}.\n" for _ in range(lines)]
    (corpus / f"play{d}.txt").write_text("\n".join(out), encoding="utf-8")
cfg = compose(overrides)
print("fetch:", fetch.run(cfg))
print("prepare:", prepare.run(cfg))
EOF
    echo "== seqpipe train ${OVR[*]} hydra.run.dir=$RUN"
    timeout -k 5 "$(t 150)" "$PY" -m seqpipe train "${OVR[@]}" "hydra.run.dir=$RUN" || exit $?
    echo "== evaluate"
    timeout -k 5 "$(t 60)" "$PY" - "${OVR[@]}" "${AFTER[@]}" <<'EOF' || exit $?
import sys
from seqpipe import evaluate
from seqpipe.config import compose
metrics = evaluate.run(compose(sys.argv[1:]))
print("test loss:", metrics.get("test/loss"))
EOF
) >"$OUT/train.log" 2>&1
step train $?
cp "$RUN/reports/history.csv" "$OUT/history.csv" 2>/dev/null
cp "$RUN/reports/metrics.json" "$OUT/metrics.json" 2>/dev/null
grep -E "^(== |train:|evaluate:|test loss)|GPU available|Using bf16|precision|cuda|Error|error" "$OUT/train.log" | head -40

# 2. What that run used: MLflow's params (trainer.*), the losses per epoch, the test loss; and cuDNN's RNN kernels
# under bf16 autocast for the trained model's forward (the kernels' names, from torch.profiler).
(
    cd "$WORK" || exit 1
    timeout -k 5 "$(t 60)" "$PY" - "$RUN" "$DEVICE" <<'EOF'
import csv, json, sys
from pathlib import Path
import mlflow, torch
run_dir, device = Path(sys.argv[1]), sys.argv[2]
info = json.loads((run_dir / "reports/train.json").read_text())
mlflow.set_tracking_uri(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
params = mlflow.get_run(info["run_id"]).data.params
print("MLflow run", info["run_id"], {k: params.get(k) for k in ("trainer.accelerator", "trainer.devices",
                                                                 "trainer.precision", "model.cell")})
print("train:", {k: info[k] for k in ("epochs", "steps", "fit_seconds", "best_val_loss")})
for row in csv.DictReader(open(run_dir / "reports/history.csv")):
    print("history:", {k: v for k, v in row.items() if v not in ("", None)})
metrics = json.loads((run_dir / "reports/metrics.json").read_text())
print("test:", {k: v for k, v in metrics.items() if k.startswith("test/")})
want = ("gpu", "bf16-mixed") if device == "cuda" else ("cpu", "32-true")
ok = (params.get("trainer.accelerator"), params.get("trainer.precision")) == want
print(f"run used accelerator/precision {params.get('trainer.accelerator')}/{params.get('trainer.precision')}:",
      "OK" if ok else f"NOT {want}")
from seqpipe.evaluate import load_checkpoint
module = load_checkpoint(info["best_checkpoint"]).to(device).eval()
x = torch.randint(4, 20, (16, 64), device=device)
from torch.profiler import ProfilerActivity, profile
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
with torch.no_grad(), torch.autocast(device, torch.bfloat16, enabled=device == "cuda"), profile(activities=acts) as p:
    module(x)
    if device == "cuda":
        torch.cuda.synchronize()
names = sorted({e.key for e in p.key_averages()})
rnn = [n for n in names if any(s in n.lower() for s in ("cudnn", "rnn", "lstm"))]
print("RNN ops/kernels in the forward:", rnn[:12])
if device == "cuda":
    print("cuDNN RNN used:", "OK" if any("_cudnn_rnn" in n for n in names) else "NOT seen")
sys.exit(0 if ok else 1)
EOF
) >>"$OUT/summary.txt" 2>&1
step verify $?

# 3. The throughput bench: seqpipe's Lightning step vs a plain loop, LSTM GFLOP/s vs torch.mm (trainer=gpu).
timeout -k 10 "$(t 240)" "$PY" bench/throughput.py --device "$DEVICE" "${BENCH[@]}" --json "$OUT/throughput.json" \
    2>&1 | tee "$OUT/throughput.log" | { grep -vE "it/s]|s/it]" || true; }
step throughput $?

echo "== summary ($SECONDS s)"
cat "$SUMMARY"
exit $failed
