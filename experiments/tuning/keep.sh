#!/bin/bash
# The finished trials' records, kept in git between sessions (a session's machine keeps no run folder):
#   bash experiments/tuning/keep.sh save OUT_DIR     # OUT_DIR/<pair>/<method>/<trial>/ -> experiments/tuning/runs/
#   bash experiments/tuning/keep.sh restore OUT_DIR  # and back, before run_cpu.sh continues the searches
#   bash experiments/tuning/keep.sh save /work/runs/tuning_finals experiments/tuning/finals  # another folder: KEPT_DIR
# Kept: what the study reads (results.json, evaluations.jsonl, predictions/ for EnsV, .hydra/). Left out: the
# checkpoints (the study scores the evaluations already written; the finals re-train from the trial's config) and
# unfinished trials (without their checkpoint they start again from step 0 anyway). A restored finished trial is
# left as it is by `resume=auto`.
set -eu
mode=${1:?usage: keep.sh save|restore OUT_DIR [KEPT_DIR]}; out=${2:?usage: keep.sh save|restore OUT_DIR [KEPT_DIR]}
kept=${3:-"$(cd "$(dirname "$0")" && pwd)/runs"}
case $mode in
  save)
    n=0
    while IFS= read -r rec; do
      trial=$(dirname "$rec"); rel=${trial#"$out"/}
      python3 -c "import json,sys; sys.exit(json.load(open(sys.argv[1])).get('status') != 'finished')" "$rec" || continue
      mkdir -p "$kept/$rel"
      for f in results.json evaluations.jsonl predictions .hydra; do
        [ -e "$trial/$f" ] && cp -r "$trial/$f" "$kept/$rel/"
      done
      n=$((n + 1))
    done < <(find "$out" -name results.json -path '*/*/*/*' | sort)
    echo "keep.sh: $n finished trials in $kept" ;;
  restore)
    mkdir -p "$out"
    cp -rn "$kept"/. "$out"/
    echo "keep.sh: $(find "$kept" -name results.json | wc -l) finished trials restored into $out" ;;
  *) echo "usage: keep.sh save|restore OUT_DIR [KEPT_DIR]" >&2; exit 2 ;;
esac
