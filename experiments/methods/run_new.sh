#!/bin/bash
# The methods that lead on digits today (issue #32) on MNIST -> MNIST-M (Ganin's release), the shared recipe: the
# paper's MNIST network, batch 64 + 64, SGD 0.01/0.9 annealed, 15,000 steps, last step; seeds 0-2. One process per
# run, one thread each, JOBS at once (default 2); a method's three seeds one after the other, the cheapest
# methods first, so that a session cut short leaves whole rows. Idempotent across sessions: a finished run is skipped, an
# unfinished one continues from its checkpoint (resume=auto).
#   DANN_DATA_DIR=<root> bash experiments/methods/run_new.sh OUT_DIR [METHOD...]
# Budgets of the two-stage methods: SHOT splits its 15,000 steps 7,500 source + 7,500 target (its yaml); DIRT-T
# refines each seed's VADA run of record for 15,000 more steps (the authors' two stages are equally long), so it
# runs after the VADA seeds.
set -u
out=${1:?usage: run_new.sh OUT_DIR [METHOD...]}; shift
methods=${*:-bnm afn jan dann_bsp cdan_bsp self_ensembling shot vada}
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR to the root holding MNIST/raw and mnist_m.tar.gz}
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
run() {  # METHOD SEED NAME [OVERRIDE...]
  local dir="$out/$3"
  if [ -f "$dir/results.json" ] && grep -q '"status": "finished"' "$dir/results.json"; then return 0; fi
  dann-train pair=mnist_mnistm method="$1" seed="$2" "${@:4}" threads=1 trainer.enable_progress_bar=false \
      logger=csv checkpoint.every_n_steps=500 resume=auto hydra.run.dir="$dir" >> "$out/$3.log" 2>&1
}
export -f run; export out
jobs_file=$(mktemp)
for m in $methods; do for s in 0 1 2; do echo "$m $s ${m}_s$s"; done; done > "$jobs_file"
xargs -P "${JOBS:-2}" -L 1 bash -c 'run "$@"' _ < "$jobs_file"
# DIRT-T: each seed from that seed's finished VADA run
for s in 0 1 2; do echo "dirt_t $s dirt_t_s$s method.start=$out/vada_s$s"; done > "$jobs_file"
case " $methods " in *" vada "*) xargs -P "${JOBS:-2}" -L 1 bash -c 'run "$@"' _ < "$jobs_file";; esac
rm -f "$jobs_file"
