#!/bin/bash
# The tuning study's trials on CPU: for each pair and method, one search (hparams_search=tune: trial 0 the authors'
# setting, then random trials, seeded), every trial an ordinary run folder under OUT/<pair>/<method>/. One process per
# search, one thread each, JOBS searches at once (default 2). Idempotent across sessions: a search re-run draws the
# same trials in the same order; finished trials are kept, an interrupted one continues from its checkpoint
# (resume=auto).
#   DANN_DATA_DIR=<root> bash experiments/tuning/run_cpu.sh OUT_DIR [PAIR:METHOD:TRIALS ...]
set -u
out=${1:?usage: run_cpu.sh OUT_DIR [PAIR:METHOD:TRIALS ...]}; shift
methods="dann cdan cdan_e dan coral mdd mcc adda mcd"
# the validator is chosen on the regenerated MNIST-M (6 trials per method), then applied to Ganin's (12 per method)
default_jobs=$(for m in $methods; do echo "mnist_mnistm_regen:$m:6"; done; for m in $methods; do echo "mnist_mnistm:$m:12"; done)
jobs=${*:-$default_jobs}
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR to the root holding MNIST/raw, mnist_m.tar.gz and BSDS500}
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
search() {  # PAIR:METHOD:TRIALS
  IFS=: read -r pair method trials <<< "$1"
  dann-train -m hparams_search=tune method="$method" pair="$pair" hydra.sweeper.n_trials="$trials" threads=1 \
      logger=csv trainer.enable_progress_bar=false resume=auto hydra.sweep.dir="$out/$pair/$method" \
      >> "$out/${pair}_${method}.log" 2>&1
}
export -f search; export out
printf '%s\n' $jobs | xargs -P "${JOBS:-2}" -I{} bash -c 'search {}'
