#!/bin/bash
# The full-protocol re-runs of the tuning study: each method's configuration the fixed validator picked on Ganin's
# MNIST-M (and the oracle's pick), 15,000 steps, seeds 0-2, last step; one process per run, one thread each, JOBS at
# once (default 2), resume=auto (idempotent across sessions).
#   dann-table <trials>/mnist_mnistm --tuned experiments/tuning/choice.json --tuned-out experiments/tuning/picks.json
#   DANN_DATA_DIR=<root> bash experiments/tuning/run_finals.sh experiments/tuning/picks.json OUT_DIR
# UNTIL=HH:MM starts no run that would end after it (RUN_MIN minutes a run, default 20): a session's machine
# keeps no run folder, so a run still going when the session ends is lost, checkpoints and all.
set -u
picks=${1:?usage: run_finals.sh PICKS.json OUT_DIR}; out=${2:?usage: run_finals.sh PICKS.json OUT_DIR}
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR}
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
jobs_file=$(mktemp)
# one line per run: KIND METHOD SEED OVERRIDE...
python - "$picks" > "$jobs_file" <<'PY'
import json, sys
for row in json.load(open(sys.argv[1])):
    for kind in ("pick", "oracle"):
        p = row.get(kind)
        if not p or (kind == "oracle" and row.get("pick") and p["overrides"] == row["pick"]["overrides"]):
            continue  # the oracle chose the same configuration: its runs are the label-free ones
        for seed in (0, 1, 2):
            print("label_free" if kind == "pick" else "oracle", row["method"], seed, *p["overrides"])
PY
run() {  # KIND METHOD SEED OVERRIDE...
  local dir="$out/$1/$2_s$3"
  if [ -f "$dir/results.json" ] && grep -q '"status": "finished"' "$dir/results.json"; then return 0; fi
  if [ -n "${UNTIL:-}" ] && [ $(($(date +%s) + ${RUN_MIN:-20} * 60)) -gt "$(date -d "$UNTIL" +%s)" ]; then
    echo "run_finals: $1 $2 seed $3 not started: it would end after $UNTIL" >&2; return 0
  fi
  mkdir -p "$out/$1"
  dann-train pair=mnist_mnistm method="$2" seed="$3" "${@:4}" threads=1 trainer.enable_progress_bar=false \
      logger=csv checkpoint.every_n_steps=500 resume=auto hydra.run.dir="$dir" >> "$out/$1/$2_s$3.log" 2>&1
}
export -f run; export out UNTIL RUN_MIN
xargs -P "${JOBS:-2}" -L 1 bash -c 'run "$@"' _ < "$jobs_file"
rm -f "$jobs_file"
