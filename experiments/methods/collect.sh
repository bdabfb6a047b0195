#!/bin/bash
# Copies every finished run's record (results.json + evaluations.jsonl) from OUT_DIR (run_cpu.sh's)
# into experiments/methods/runs/, and the paper's four methods' records (experiments/paper_table/runs:
# source-only, SA, DANN, train-on-target on the same pairs and protocol) into
# experiments/methods/baselines/, so that `dann-table experiments/methods` prints all twelve rows
# (dann-table counts a copied record once). Then writes the table, its bar chart, the learning
# curves, and the table under the last_k rule:
#   bash experiments/methods/collect.sh OUT_DIR
set -eu
out=$(cd "${1:?usage: collect.sh OUT_DIR}" && pwd)
cd "$(dirname "$0")/../.."   # the repository: the table names its records by relative paths
here=experiments/methods
for rec in "$out"/*/results.json; do
  grep -q '"status": "finished"' "$rec" || continue
  name=$(basename "$(dirname "$rec")")
  mkdir -p "$here/runs/$name"
  cp "$rec" "$(dirname "$rec")/evaluations.jsonl" "$here/runs/$name/"
done
rm -rf "$here/baselines" && cp -r experiments/paper_table/runs "$here/baselines"
dann-table "$here" --out "$here/table.md" --png "$here/table.png" --curves "$here/curves.png"
dann-table "$here" --select last_k --out "$here/table_last_k.md" > /dev/null
