"""The MNIST net's DANN loop (dann-bench's framework loop, 2 threads) idle and beside the contention
benchmark's load, for several libgomp spin counts and the passive policy; then every setting idle
once more. Run idle, from the repository root:

    DANN_DATA_DIR=<root> python experiments/benchmarks/wait_policy/spin_counts.py OUT.json 100 300 1000 3000
"""
import json
import sys

from dann.bench_contention import start_load, stop_load, time_loop

out, counts = sys.argv[1], sys.argv[2:]
pair, steps, warmup = "mnist_mnistm", 200, 40
settings = {"passive": {"OMP_WAIT_POLICY": "PASSIVE"}} | {n: {"GOMP_SPINCOUNT": n} for n in counts}
res = {}
for name, env in settings.items():
    idle = time_loop(pair, steps, warmup, "2", env)
    load = start_load(2, 128)
    try:
        loaded = time_loop(pair, steps, warmup, "2", env)
    finally:
        stop_load(load)
    res[name] = {"idle": idle.get("ms_per_step"), "loaded": loaded.get("ms_per_step")}
for name, env in settings.items():
    res[name]["idle2"] = time_loop(pair, steps, warmup, "2", env).get("ms_per_step")
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res, indent=1))
