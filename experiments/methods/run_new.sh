#!/bin/bash
# The methods that lead on digits today (issue #32) on MNIST -> MNIST-M (Ganin's release), the shared recipe: the
# paper's MNIST network, batch 64 + 64, SGD 0.01/0.9 annealed, 15,000 steps, last step; seeds 0-2. One process per
# run, one thread each, JOBS at once (default 2); a method's three seeds one after the other, so that a session
# cut short leaves whole rows. Idempotent across sessions: a finished run is skipped, an
# unfinished one continues from its checkpoint (resume=auto).
#   DANN_DATA_DIR=<root> bash experiments/methods/run_new.sh OUT_DIR [METHOD...]
# Budgets of the two-stage methods: SHOT splits its 15,000 steps 7,500 source + 7,500 target (its yaml); DIRT-T
# refines each seed's VADA run of record for 15,000 more steps (the authors' two stages are equally long). The
# DIRT-T seeds come right after the VADA seeds (each starts once its VADA run has finished), so they are run
# while their start's checkpoint is on the machine.
set -u
out=${1:?usage: run_new.sh OUT_DIR [METHOD...]}; shift
methods=${*:-vada dirt_t self_ensembling shot bnm afn jan dann_bsp cdan_bsp}
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR to the root holding MNIST/raw and mnist_m.tar.gz}
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
finished() { [ -f "$1/results.json" ] && grep -q '"status": "finished"' "$1/results.json"; }
held() { pgrep -f "hydra.run.dir=$1( |\$)" > /dev/null; }  # a dann-train process writes this run folder
run() {  # METHOD SEED NAME [OVERRIDE...]
  local dir="$out/$3"
  while held "$dir"; do sleep 30; done  # another copy of this script runs it: wait, then skip it or continue it
  finished "$dir" && return 0
  if [ "$1" = dirt_t ]; then
    while held "$out/vada_s$2"; do sleep 30; done
    finished "$out/vada_s$2" || { echo "run_new.sh: $3 skipped: $out/vada_s$2 has not finished" >&2; return 0; }
  fi
  dann-train pair=mnist_mnistm method="$1" seed="$2" "${@:4}" threads=1 trainer.enable_progress_bar=false \
      logger=csv checkpoint.every_n_steps=500 resume=auto hydra.run.dir="$dir" >> "$out/$3.log" 2>&1
}
export -f run finished held; export out
jobs_file=$(mktemp)
for m in $methods; do
  for s in 0 1 2; do
    case $m in
      dirt_t) echo "dirt_t $s dirt_t_s$s method.start=$out/vada_s$s";;
      *) echo "$m $s ${m}_s$s";;
    esac
  done
done > "$jobs_file"
xargs -P "${JOBS:-2}" -L 1 bash -c 'run "$@"' _ < "$jobs_file"
rm -f "$jobs_file"
