"""Run a sweep's jobs K at a time per GPU, each pinned to its own device.

``hydra/launcher=gpus`` is Hydra's joblib launcher with ``n_jobs = n_gpus x pool.per_gpu``
(``pool.cpu_jobs`` on a machine with no GPU). Each job, once started, takes a free *slot* (a
file lock in the sweep dir) and uses GPU ``slot // per_gpu`` for its whole life, so no two
jobs beyond K share a GPU whatever order joblib runs them in. No scheduler of our own: joblib
queues the jobs, the locks only say which device a running job gets.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout


def pool_size(per_gpu: int = 1, cpu_jobs: int = 2) -> int:
    """How many jobs run at once: ``n_gpus * per_gpu``, or ``cpu_jobs`` without a GPU."""
    import torch

    n = torch.cuda.device_count()
    return n * int(per_gpu) if n else int(cpu_jobs)


@contextmanager
def device_slot(lock_dir: Path, n_slots: int, poll_s: float = 0.2) -> Iterator[int]:
    """Hold one of ``n_slots`` slot locks for the duration of the block; yield its index."""
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(n_slots):
            lock = FileLock(str(lock_dir / f"slot{i}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield i
            finally:
                lock.release()
            return
        time.sleep(poll_s)
