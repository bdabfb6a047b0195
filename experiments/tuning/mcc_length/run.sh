#!/bin/bash
# MCC's label-free pick: does the collapse come with the run's length or with the seed?
# seeds 1-2 at the trial's 1,500 steps, and seed 0 at 3,000 and 6,000 steps (the same schedule over p)
#   DANN_DATA_DIR=<root> [OUT=/work/runs/mcc_length] bash experiments/tuning/mcc_length/run.sh
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR} WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
P="optim.lr=0.060749960734256966 optim.weight_decay=0.0 method.trade_off=1.3680095279726923 method.temperature=4.702386553170644"
out=${OUT:-/work/runs/mcc_length}
mkdir -p "$out"
go() { # NAME STEPS SEED
  dann-train pair=mnist_mnistm method=mcc seed=$3 $P trainer.max_steps=$2 trainer.val_check_interval=$(( $2 / 10 )) \
    threads=1 logger=csv trainer.enable_progress_bar=false hydra.run.dir="$out/$1" > "$out/$1.log" 2>&1
  echo "$(date +%T) $1 done" >> "$out/done.log"
}
go s1_1500 1500 1; go s2_1500 1500 2; go s0_3000 3000 0; go s0_6000 6000 0
