"""dann-bench --contention: its load processes start, load the CPU, and are all gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from dann.bench_contention import fair_share, start_load, stop_load


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose only once reaped: stop_load reaps, so any entry left is a process
    return True


def test_the_load_starts_busy_and_is_stopped_without_leftovers():
    ps = start_load(2, 32)
    pids = [p.pid for p in ps]
    try:
        assert all(p.poll() is None for p in ps)
        cpu0 = [float(open(f"/proc/{pid}/stat").read().split()[13]) for pid in pids]
        time.sleep(1.0)
        cpu1 = [float(open(f"/proc/{pid}/stat").read().split()[13]) for pid in pids]
        assert all(b > a for a, b in zip(cpu0, cpu1)), "the load processes do not compute"
    finally:
        stop_load(ps)
    assert all(p.returncode is not None for p in ps)
    assert not any(_alive(pid) for pid in pids)


def test_the_load_is_someone_elses_pytorch_work_not_ours(monkeypatch):
    # the load runs at PyTorch's defaults: none of our thread or wait settings reaches it
    for k, v in {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}.items():
        monkeypatch.setenv(k, v)
    ps = start_load(1, 16)
    try:
        environ = open(f"/proc/{ps[0].pid}/environ", "rb").read().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert not names & {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS"}
    finally:
        stop_load(ps)


def test_fair_share():
    assert fair_share(1, 0, 2) == 1.0
    assert fair_share(1, 4, 2) == pytest.approx(2.5)   # 5 threads on 2 cores, ours is one of them
    assert fair_share(2, 4, 2) == pytest.approx(3.0)


@pytest.mark.slow
def test_the_benchmark_end_to_end_leaves_no_load_behind(tmp_path):
    out = tmp_path / "c.json"
    p = subprocess.run([sys.executable, "-m", "dann.bench", "--contention", "--pairs", "moons", "--steps", "60",
                        "--warmup", "10", "--load-size", "16", "--out", str(out)],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["pairs"]["moons"]
    assert rows["auto"]["threads"] == 1 and rows["default"]["threads"] == res["cores"]
    assert all(r["idle_ms"] > 0 and r["loaded_ms"] > 0 for r in rows.values())
    assert "| moons | auto (1) |" in p.stdout
    left = subprocess.run(["pgrep", "-f", "a = torch.randn\\(16, 16\\)"], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"load processes left behind: {left.stdout}"
