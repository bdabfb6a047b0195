#!/bin/bash
# The MNIST->MNIST-M runs of record on the 2-core CPU machine (session 3), one process per run,
# one thread each, several at once. Usage: run_cpu.sh OUT_DIR
set -e
out=${1:?usage: run_cpu.sh OUT_DIR}
export DANN_DATA_DIR=${DANN_DATA_DIR:?set DANN_DATA_DIR to the root holding MNIST/raw and mnist_m.tar.gz}
export WANDB_MODE=offline OMP_NUM_THREADS=1
run() {  # METHOD SEED [overrides...]
  m=$1; s=$2; shift 2
  dann-train pair=mnist_mnistm method=$m seed=$s trainer.enable_progress_bar=false logger=csv \
      hydra.run.dir=$out/${m}_s$s "$@" > $out/${m}_s$s.log 2>&1
}
mkdir -p $out
for s in 0 1 2; do
  run source_only $s checkpoint.keep_all=true &
  run dann $s checkpoint.keep_all=true &
  run target_only $s &
done
wait
# SA on each finished source-only network (only the alignment is fitted; same as training SA itself)
for s in 0 1 2; do run sa $s resume=$out/source_only_s$s/checkpoints/last.ckpt; done
# seed 0's source-only and DANN ran before the probe existed: score their kept checkpoints
dann-select rescore $out/source_only_s0 $out/dann_s0
dann-table $out --out table.md --png table.png
dann-table $out --selection-study --out ../model_selection/study.md --png ../model_selection/study.png
