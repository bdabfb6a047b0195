#!/bin/bash
# The methods of record on MNIST -> MNIST-M (Ganin's release) and on the regenerated MNIST-M: the
# paper's protocol (its MNIST network, batch 64 + 64, SGD 0.01/0.9 annealed, 15,000 steps), last
# step. One process per run, one thread each, JOBS at once (default 2). Idempotent: a finished run is
# skipped, an unfinished one continues from its checkpoint (resume=auto), so the script can be
# re-run across sessions until every run is done.
#   DANN_DATA_DIR=<root> bash experiments/methods/run_cpu.sh OUT_DIR [METHOD...]
set -u
out=${1:?usage: run_cpu.sh OUT_DIR [METHOD...]}; shift
methods=${*:-dan coral cdan cdan_e mdd mcc mcd adda}
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR to the root holding MNIST/raw, mnist_m.tar.gz and BSDS500}
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
jobs_file=$(mktemp)
# seed 0 of every method first (a broken method shows early), then seeds 1 and 2, then the regenerated MNIST-M
for s in 0 1 2; do for m in $methods; do echo "mnist_mnistm $m $s ${m}_s$s"; done; done >> "$jobs_file"
for m in $methods; do echo "mnist_mnistm_regen $m 0 regen_${m}_s0"; done >> "$jobs_file"
# last, ADDA with its authors' optimizer (a second row, three seeds: its shared-SGD row differs by seed)
case " $methods " in *" adda "*)
  for s in 0 1 2; do echo "mnist_mnistm adda $s adda_adam_s$s method.optimizer=adam"; done >> "$jobs_file";; esac
run() {  # PAIR METHOD SEED NAME [OVERRIDE...]
  local dir="$out/$4"
  if [ -f "$dir/results.json" ] && grep -q '"status": "finished"' "$dir/results.json"; then return 0; fi
  dann-train pair="$1" method="$2" seed="$3" "${@:5}" trainer.enable_progress_bar=false logger=csv \
      checkpoint.every_n_steps=500 resume=auto hydra.run.dir="$dir" >> "$out/$4.log" 2>&1
}
export -f run; export out
xargs -P "${JOBS:-2}" -L 1 bash -c 'run "$@"' _ < "$jobs_file"
rm -f "$jobs_file"
