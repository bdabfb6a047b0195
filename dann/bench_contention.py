"""``dann-bench --contention``: a run's speed alone and beside other PyTorch work.

Researchers train on laptops, shared workstations and cluster nodes where other jobs hold
cores. The load that hurts is other OpenMP work: two processes each running PyTorch's default
threads (one per core) make every parallel region of a run wait at its barriers for threads
whose cores are taken. This benchmark starts such a load itself (``--load-procs`` processes
multiplying ``--load-size`` square matrices in a loop, at PyTorch's default threads), times
the DANN training loop of each pair idle and beside the load with the threads a process
inherits (one per core: ``threads=<cores>``, libgomp's default wait: spin, then sleep), the same
with OpenMP's passive wait policy, and what a dann run does by itself (``threads=auto``,
:mod:`dann.run.threads`, with the short spin-then-sleep wait that importing dann sets), stops
the load, and prints the ratio loaded / idle next to the fair-share ratio: what the run would
take if every thread on the machine got an equal share of the cores (``(ours + load threads) /
ours * min(ours, cores) / cores``).

    dann-bench --contention --pairs moons mnist_mnistm --out contention.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
#: libgomp's own default when no policy is set (spin ~300,000 times, then sleep): importing dann would
#: otherwise set its own short spin (dann/__init__.py); a spin count set keeps it from doing so
GOMP_DEFAULT = {"GOMP_SPINCOUNT": "300000"}
#: what a process of someone else's inherits from us and must not: our thread settings and wait policy
OURS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
#: a load process: square matrix products forever, at PyTorch's default threads
LOAD_CODE = """
import sys, torch
a = torch.randn({n}, {n})
print("ready", torch.get_num_threads(), flush=True)
while True:
    b = a @ a
"""


def start_load(procs: int, size: int) -> list[subprocess.Popen]:
    """``procs`` load processes, each in its own session (so a stop reaches its threads); returns
    once all have started their loop. Each gets PyTorch's default threads: our own thread
    settings are removed from its environment."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    ps = [subprocess.Popen([sys.executable, "-c", LOAD_CODE.format(n=size)], stdout=subprocess.PIPE, text=True,
                           env=env, start_new_session=True) for _ in range(procs)]
    try:
        for p in ps:
            line = p.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError(f"a load process did not start (exit code {p.poll()})")
    except BaseException:
        stop_load(ps)
        raise
    return ps


def stop_load(ps: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """Stop the load processes (SIGTERM, then SIGKILL) and reap them: none is left behind."""
    for p in ps:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in ps:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        if p.stdout:
            p.stdout.close()


def clean_env() -> dict[str, str]:
    """This environment without the wait policy (importing dann set it here): each row sets its own."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}


def time_loop(pair: str, steps: int, warmup: int, threads: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """ms/step of DANN's training loop on ``pair`` with ``threads`` (and ``env`` added to the
    environment): dann-bench's framework loop, in a fresh process (``{"error": ...}`` when it fails)."""
    print(f"[bench] {pair}: threads={threads} {env or ''}...", file=sys.stderr, flush=True)
    p = subprocess.run([sys.executable, "-m", "dann.bench", "--_worker", "framework", pair, str(steps), str(warmup),
                        "0", "0", f"threads={threads}", "probe.enabled=false"], capture_output=True, text=True,
                       env=dict(clean_env(), WANDB_MODE="disabled", **(env or {})))
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON "):])
            print(f"[bench] {pair}: threads={threads} {r['ms_per_step']:.1f} ms/step", file=sys.stderr, flush=True)
            return r
    return {"error": (p.stderr or p.stdout)[-800:]}


def fair_share(ours: int, load_threads: int, cores: int) -> float:
    """The slow-down if every thread got an equal share of the cores (1 when nothing else runs)."""
    return (ours + load_threads) / ours * min(ours, cores) / cores if load_threads else 1.0


def run(pairs: list[str], steps: dict[str, int], warmup: int, procs: int, size: int) -> dict[str, Any]:
    from dann.run.threads import available_cpus, choose_threads

    cores, _ = available_cpus()
    arch = {"moons": "shallow"}
    res: dict[str, Any] = {"cores": cores, "load": {"procs": procs, "matrix": size, "threads_each": cores},
                           "load_average_at_start": round(os.getloadavg()[0], 2), "pairs": {}}
    for pair in pairs:
        # inherited threads, the same with OpenMP's passive wait (threads sleep at a barrier instead of
        # spinning; libgomp reads it at start-up), and dann's rule
        settings = {"default": (str(cores), GOMP_DEFAULT), "default, OMP_WAIT_POLICY=passive": (str(cores), PASSIVE),
                    "auto": ("auto", {})}
        out = {}
        for name, (threads, env) in settings.items():
            n = choose_threads(threads if threads == "auto" else int(threads), arch.get(pair, "mnist"), cores)
            idle = time_loop(pair, steps[pair], warmup, threads, env)
            ps = start_load(procs, size)
            try:
                loaded = time_loop(pair, steps[pair], warmup, threads, env)
            finally:
                stop_load(ps)
            ok = "ms_per_step" in idle and "ms_per_step" in loaded
            out[name] = {"threads": n, "idle_ms": idle.get("ms_per_step"), "loaded_ms": loaded.get("ms_per_step"),
                         "ratio": loaded["ms_per_step"] / idle["ms_per_step"] if ok else None,
                         "fair_share": fair_share(n, procs * cores, cores),
                         **({} if ok else {"error": idle.get("error") or loaded.get("error")})}
        res["pairs"][pair] = out
    return res


def markdown(res: dict[str, Any]) -> str:
    f = lambda x, d=1: "—" if x is None else f"{x:.{d}f}"  # noqa: E731
    rows = [f"{res['cores']} cores; load: {res['load']['procs']} processes of {res['load']['matrix']}x"
            f"{res['load']['matrix']} matrix products at PyTorch's default threads ({res['load']['threads_each']} each); "
            f"load average at start {res['load_average_at_start']}", "",
            "| pair | threads | idle ms/step | loaded ms/step | loaded / idle | fair share |", "|---|---|---|---|---|---|"]
    for pair, out in res["pairs"].items():
        for name, r in out.items():
            rows.append(f"| {pair} | {name} ({r['threads']}) | {f(r['idle_ms'])} | {f(r['loaded_ms'])} | "
                        f"{f(r['ratio'], 2)} | {f(r['fair_share'], 2)} |")
    return "\n".join(rows) + "\n"


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="dann-bench --contention", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=["moons", "mnist_mnistm"])
    ap.add_argument("--steps", type=int, default=None,
                    help="steps of each timed loop, warm-up included (default: moons 1500, image pairs 300)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--load-procs", type=int, default=2, help="background PyTorch processes (default 2)")
    ap.add_argument("--load-size", type=int, default=128, help="side of their square matrices (default 128)")
    ap.add_argument("--out", default=None, help="also write the results as JSON to this file")
    a = ap.parse_args(argv)
    if a.load_procs < 0 or a.load_size < 1:
        ap.error("--load-procs must be >= 0 and --load-size >= 1")
    steps = {p: a.steps or (1500 if p == "moons" else 300) for p in a.pairs}
    if any(s <= a.warmup for s in steps.values()):
        ap.error(f"--steps must be larger than --warmup ({a.warmup})")
    res = run(a.pairs, steps, a.warmup, a.load_procs, a.load_size)
    md = markdown(res)
    print(md)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"JSON: {a.out}")
    return 0 if all(r["ratio"] is not None for out in res["pairs"].values() for r in out.values()) else 1
