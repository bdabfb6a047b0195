#!/bin/bash
# Why VADA ends below source-only (issue #32): which of its terms. Seed 0, 2,000-step runs (the schedule annealed
# over 2,000 steps), one after the other, one thread: source-only, VADA, VADA without its target terms
# (method.tgt_weight=0: no conditional entropy, no target VAT), VADA without source VAT (method.src_vat_weight=0),
# VADA with the domain loss at DANN's full strength (method.domain_weight=1). Then, for each run, how its target
# predictions spread over the classes:
#   DANN_DATA_DIR=<root> bash experiments/methods/vada_ablation.sh OUT_DIR
#   PYTHONPATH=. DANN_DATA_DIR=<root> python experiments/methods/target_predictions.py OUT_DIR/*/
set -u
out=${1:?usage: vada_ablation.sh OUT_DIR}
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR to the root holding MNIST/raw and mnist_m.tar.gz}
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
run() {  # NAME OVERRIDE...
  local n=$1; shift
  if [ -f "$out/$n/results.json" ] && grep -q '"status": "finished"' "$out/$n/results.json"; then return 0; fi
  dann-train pair=mnist_mnistm seed=0 trainer.max_steps=2000 threads=1 trainer.enable_progress_bar=false logger=csv \
      checkpoint.every_n_steps=500 resume=auto hydra.run.dir="$out/$n" "$@" > "$out/$n.log" 2>&1
}
run source_only method=source_only
run vada method=vada
run vada_no_tgt method=vada method.tgt_weight=0
run vada_no_srcvat method=vada method.src_vat_weight=0
run vada_dw1 method=vada method.domain_weight=1
