"""How many CPU threads a run computes with: chosen from where it runs, not inherited.

PyTorch starts one OpenMP thread per core it sees. That suits one big job alone on a machine
and nothing else: the paper's networks are small (the moons MLP is 2 -> 15 -> 2), sweeps put
several runs on one machine, and researchers share theirs. An OpenMP thread that finds its
core taken spins at every barrier of every operation, so a run beside other PyTorch work can
slow down far beyond its fair share (experiments/benchmarks/contention.md measures it).

``threads: auto`` (the default, conf/train.yaml) takes:

* the CPUs this process may use: its affinity mask, a cgroup CPU quota (a container's or a
  SLURM job's), and ``$SLURM_CPUS_PER_TASK`` inside a SLURM job, whichever is smallest;
* divided by the runs the launcher places on the machine at once (``pool.cpu_jobs`` under
  ``hydra/launcher=gpus`` without a GPU);
* one for a network too small to split across threads (the ``shallow`` moons net).

Importing ``dann`` (its ``__init__``) sets a short spin, then sleep, for OpenMP threads waiting at
a barrier (``GOMP_SPINCOUNT=1000`` for libgomp, the runtime of PyTorch's Linux wheels, and
``OMP_WAIT_POLICY=PASSIVE`` for the others), unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is
already set: a waiting thread gives a core another process needs back within microseconds, and
an idle run keeps most of the speed of spinning. It must be set before torch loads its OpenMP runtime, so
it is not a config key; the record keeps what a run had.

``threads: N`` sets it. The count goes into the record (``threads``); it bounds torch's
intra-op threads and, through threadpoolctl, the BLAS/OpenMP pools of numpy and
scikit-learn (the selection fits, SA's PCA). A run on a GPU keeps the same rule for the
host-side work.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

#: networks whose operations are too small to gain from a second thread
SMALL_ARCHS = ("shallow",)


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none.

    cgroup v2: ``cpu.max`` is ``"<quota> <period>"`` or ``"max <period>"``; v1:
    ``cpu/cpu.cfs_quota_us`` (-1: none) over ``cpu/cpu.cfs_period_us``.
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(environ: dict[str, str] | None = None, affinity: int | None = None,
                   quota: float | None | str = "read") -> tuple[int, str]:
    """``(cpus, why)``: the CPUs this process may compute on, and what limited it.

    ``environ``, ``affinity`` and ``quota`` default to this process's (tests pass their own).
    """
    env = os.environ if environ is None else environ
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = os.cpu_count() or 1
    limits = [(affinity, "affinity")]
    q = cgroup_cpu_limit() if quota == "read" else quota
    if q is not None:
        limits.append((max(1, math.floor(q)), "cgroup quota"))
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) >= 1:
        limits.append((int(slurm), "SLURM_CPUS_PER_TASK"))
    n, why = min(limits, key=lambda t: t[0])
    return max(1, n), why


def choose_threads(requested: Any, arch: str, cpus: int, jobs: int = 1) -> int:
    """The intra-op thread count of a run: ``requested`` when it is a number, else (``auto``)
    ``cpus // jobs`` (at least 1), and 1 for a network in :data:`SMALL_ARCHS`."""
    if requested != "auto":
        return int(requested)
    if arch in SMALL_ARCHS:
        return 1
    return max(1, cpus // max(1, jobs))


def apply_threads(requested: Any, arch: str, jobs: int = 1) -> dict[str, Any]:
    """Choose (:func:`choose_threads`) and set this process's threads; returns what the record keeps."""
    import torch
    from threadpoolctl import threadpool_limits

    cpus, why = available_cpus()
    n = choose_threads(requested, arch, cpus, jobs)
    torch.set_num_threads(n)
    # numpy's BLAS and scikit-learn's OpenMP would otherwise start one thread per core too
    threadpool_limits(limits=n)
    return {"threads": n, "requested": requested, "cpus": cpus, "cpus_from": why, "jobs": jobs,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}
