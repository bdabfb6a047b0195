#!/bin/bash
# The GPU measurements issue #5 asks for (and the GPU sweep of #4's MNIST column), prepared for
# a short device lease (this project's: 15 minutes of device time, 10 minutes a command).
# Prepare HERE with gpu_prepare.sh, then run THERE from the repository root, carrying ".whl"
# and ".carry", in calls on the same warm machine (a later call finds the caches in /tmp).
# Measured on one H200 (session 7): setup 30 s, sweep (K=6) 200 s, eager bench ~60 s, the
# CUDA-graph bench over 80 s (cut there), run 362 s (a BLAS-thread stall, fixed in 117b71b; the
# sweep's DANN runs, spared it by the pool, took ~90 s each). What that lease left undone, in one call:
#
#   bash experiments/benchmarks/gpu_check.sh "$OUT" "setup bench run kstudy"
#   K=6 bash experiments/benchmarks/gpu_check.sh "$OUT" "setup sweep"       # done: 197 s
#
# STAGES (default "setup bench run sweep"):
#   setup   install the carried wheels in /tmp/site, regenerate MNIST-M (Ganin's release is
#           too large to carry) into the caches under /tmp/gpu_check/data
#   bench   dann-bench on the MNIST net: framework vs DataLoader loop vs floor, 500 timed steps,
#           eager and speed.compile=reduce-overhead (CUDA graphs)  -> bench_eager.json, bench_graphs.json
#   run     one whole MNIST->MNIST-M (regenerated) DANN run, its configured 15,000 steps,
#           timed from the command to its results.json                -> run_dann_s0.json
#   sweep   the column: 4 methods x 3 seeds, hydra/launcher=gpus pool.per_gpu=$K (default 4),
#           then dann-table                                           -> sweep_table.md, sweep_runs.tar.gz
#   kstudy  total images/s of 8 short DANN runs at K = 1, 2, 4, 8 jobs at once -> kstudy.txt
#
# Timings go to $OUT/summary.txt as each stage ends, every command's output to $OUT/logs.txt,
# so a call cut by its time limit still returns what was done (8 files at most come back).
# GPU_CHECK_STEPS=N shortens every run: the dry run on a CPU that checks this script,
#   GPU_CHECK_STEPS=20 bash experiments/benchmarks/gpu_check.sh /tmp/gc "setup run sweep"
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: gpu_check.sh OUT [STAGES]}
stages=${2:-setup bench run sweep}
K=${K:-4}
work=${GPU_CHECK_WORK:-/tmp/gpu_check}
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
# the caches go to $work (outside the working tree, which each call replaces): a second call on
# the still-warm machine finds them there
export DANN_DATA_DIR=${DANN_DATA_DIR:-$work/data}
# the overrides of a run N steps long, evaluated and checkpointed once, at its end
length() { echo "trainer.max_steps=$1 checkpoint.every_n_steps=$1 trainer.val_check_interval=$1"; }
steps=()
[ -n "${GPU_CHECK_STEPS:-}" ] && read -ra steps <<< "$(length "$GPU_CHECK_STEPS")"
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$out/summary.txt"; }
secs() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }
now() { python3 -c "import time; print(time.time())"; }
train() { python3 -m dann.run.train "$@" logger=csv trainer.enable_progress_bar=false; }

stage_setup() {
    if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
    fi
    python3 -c "import torch, hydra, omegaconf, pytorch_lightning as pl; import dann
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__, 'hydra', hydra.__version__)
print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee -a "$out/summary.txt" || return 1
    nvidia-smi -L >> "$out/summary.txt" 2>&1
    if [ ! -d "$DANN_DATA_DIR/MNIST" ]; then
        mkdir -p "$DANN_DATA_DIR" && cp -r .carry/data/. "$DANN_DATA_DIR/" || return 1
    fi
    local t; t=$(now)
    python3 -c "import sys; from dann.data.cli import cli; sys.exit(cli())" prepare mnist mnist_m_regen \
        2>&1 | grep -v "it/s\|img/s" | tee -a "$out/summary.txt"
    log "setup: data prepared in $(secs "$t") s (MNIST + MNIST-M regenerated from BSDS500)"
}

stage_bench() {
    # 500 timed steps after 50 of warm-up (compilation and graph capture happen there); a dry run: 2 + 2.
    # The DataLoader loop gets 8 workers of the machine's 16 cores, a strong published-code baseline.
    local timed=${GPU_CHECK_STEPS:-500} warm=50
    [ -n "${GPU_CHECK_STEPS:-}" ] && warm=2
    local b=(--pairs mnist_mnistm_regen --steps $((timed + warm)) --warmup "$warm" --workers 8 --repeat 1)
    python3 -m dann.bench "${b[@]}" --out "$out/bench_eager.json" 2>&1 | tee -a "$out/logs.txt" | grep -E "^device|^\| |framework / floor|one evaluation" >> "$out/summary.txt"
    python3 -m dann.bench "${b[@]}" --compile reduce-overhead --out "$out/bench_graphs.json" \
        2>&1 | tee -a "$out/logs.txt" | grep -E "^device|^\| |framework / floor|one evaluation" >> "$out/summary.txt"
    log "bench: done (eager: bench_eager.json, CUDA graphs: bench_graphs.json)"
}

stage_run() {
    local t; t=$(now)
    train pair=mnist_mnistm_regen method=dann seed=0 hydra.run.dir="$work/run_dann_s0" "${steps[@]}" \
        >> "$out/logs.txt" 2>&1
    local rc=$?
    cp "$work/run_dann_s0/results.json" "$out/run_dann_s0.json" 2>/dev/null
    log "run: DANN mnist_mnistm_regen seed 0, rc $rc, $(secs "$t") s from the command to its record" \
        "(includes start-up and loading the cached domains)"
    python3 -c "import json; r = json.load(open('$out/run_dann_s0.json')); print('  steps', r['steps'], 'wall_time_s', r['wall_time_s'], r['metrics'])" \
        2>&1 | tee -a "$out/summary.txt"
}

stage_sweep() {
    local t; t=$(now)
    train -m experiment=paper_table pair=mnist_mnistm_regen hydra/launcher=gpus pool.per_gpu="$K" \
        hydra.sweep.dir="$work/sweep" logger.wandb.enabled=false "${steps[@]}" >> "$out/logs.txt" 2>&1
    local rc=$?
    log "sweep: 4 methods x 3 seeds, pool.per_gpu=$K, rc $rc, $(secs "$t") s wall"
    python3 -m dann.report.cli "$work/sweep" --out "$out/sweep_table.md" >> "$out/summary.txt" 2>&1
    tar czf "$out/sweep_runs.tar.gz" -C "$work" --exclude='*.ckpt' --exclude='wandb' sweep
}

stage_kstudy() {
    local s=${GPU_CHECK_STEPS:-2000}
    for k in 1 2 4 8; do
        local t; t=$(now)
        train -m pair=mnist_mnistm_regen method=dann seed=0,1,2,3,4,5,6,7 hydra/launcher=gpus pool.per_gpu="$k" \
            hydra.sweep.dir="$work/k$k" $(length "$s") probe.enabled=false >> "$out/logs.txt" 2>&1
        local rc=$? w; w=$(secs "$t")
        echo "K=$k rc=$rc wall=${w}s images/s=$(python3 -c "print(f'{8 * $s * 128 / $w:.0f}')")" | tee -a "$out/kstudy.txt"
    done
    log "kstudy: 8 DANN runs of $s steps each (batch 128), K jobs at once on one GPU; see kstudy.txt"
}

for st in $stages; do
    declare -F "stage_$st" > /dev/null || { echo "gpu_check: unknown stage '$st' (stages: setup bench run sweep kstudy)" >&2; exit 2; }
done
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd)
for st in $stages; do
    log "stage $st"
    echo "=================== stage $st $(date +%T)" >> "$out/logs.txt"
    "stage_$st" || { log "stage $st failed"; [ "$st" = setup ] && exit 1; }
done
log "all stages done"
