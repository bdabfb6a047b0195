#!/bin/bash
# The quick start timed cold and warm, the fork launcher (the default) against Hydra's basic one, alternately;
# one line per run. Run as root (it drops the page cache) in the environment dann is installed in, machine idle:
#   bash experiments/notes/quickstart_bench.sh      (VARIANTS=new: the fork launcher only)
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p /tmp/qsb && cd /tmp/qsb && rm -rf multirun outputs
for i in $(seq ${ROUNDS:-3}); do
  for variant in ${VARIANTS:-new old}; do
    args=(); [ $variant = old ] && args=(experiment=two_moons hydra/launcher=basic)
    for state in cold warm; do
      if [ $state = cold ]; then
        find "$root/dann" "$root/hydra_plugins" -name __pycache__ -type d -exec rm -rf {} +
        sync; echo 3 > /proc/sys/vm/drop_caches
      fi
      up=$(uptime | sed 's/.*average: //')
      /usr/bin/time -f "%e %U %S" -o /tmp/qsb/t dann-train "${args[@]}" > /tmp/qsb/out 2>&1
      acc=$(grep -E '^\| moons' /tmp/qsb/out | awk -F'|' '{printf "%s:%s ", $3, $7}')
      echo "$i $variant $state wall,user,sys=$(cat /tmp/qsb/t | tr ' ' ,) load=$up $acc"
    done
  done
done
