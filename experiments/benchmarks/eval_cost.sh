#!/bin/bash
# The cost of one evaluation (test accuracies + every label-free validator), as a run pays it: the same
# 300-step DANN run on MNIST->MNIST-M with 3 evaluations and with none (validation and probe off), one thread;
# (wall with - wall without) / 3. Run it at two commits to compare (CODE: a checkout of that commit; EXTRA: more
# overrides, e.g. EXTRA=threads=1 where the commit has that key).
#   DANN_DATA_DIR=<root> bash experiments/benchmarks/eval_cost.sh CODE OUT_DIR
set -eu
code=$(cd "${1:?usage: eval_cost.sh CODE_DIR OUT_DIR}" && pwd); out=${2:?usage: eval_cost.sh CODE_DIR OUT_DIR}
export PYTHONPATH=$code WANDB_MODE=offline OMP_NUM_THREADS=1
mkdir -p "$out"; out=$(cd "$out" && pwd)
cd "$code"  # python -m and -c put the working folder before PYTHONPATH: run from another checkout, it would run
            # that checkout's code (checked below)
run() {  # NAME OVERRIDE...
  python -m dann.run.train pair=mnist_mnistm method=dann trainer.max_steps=300 checkpoint.every_n_steps=300 \
      logger=csv trainer.enable_progress_bar=false "hydra.run.dir=$out/$1" "${@:2}" ${EXTRA:-} > "$out/$1.log" 2>&1
  python -c "import dann, json, sys; from pathlib import Path
assert Path(dann.__file__).resolve().is_relative_to(Path(sys.argv[2]).resolve()), dann.__file__
print(json.load(open(sys.argv[1]))['wall_time_s'])" "$out/$1/results.json" "$code"
}
uptime
with=$(run with trainer.val_check_interval=100)
without=$(run without trainer.val_check_interval=300 +trainer.limit_val_batches=0 probe.enabled=false)
python -c "import sys; w, n = map(float, sys.argv[1:]); print(f'wall with 3 evaluations {w:.1f} s, without {n:.1f} s: one evaluation {(w - n) / 3:.2f} s')" "$with" "$without"
uptime
