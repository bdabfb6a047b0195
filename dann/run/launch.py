"""Launching runs: a sweep's jobs K at a time per GPU, and the sweep's summary at its end.

Device slots. 
``hydra/launcher=gpus`` is Hydra's joblib launcher with ``n_jobs = n_gpus x pool.per_gpu``
(``pool.cpu_jobs`` on a machine with no GPU). Each job, once started, takes a free *slot* (a
file lock in the sweep dir) and uses GPU ``slot // per_gpu`` for its whole life, so no two
jobs beyond K share a GPU whatever order joblib runs them in. No scheduler of our own: joblib
queues the jobs, the locks only say which device a running job gets.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from dann.records import atomic_write_text, read_records
from dann.report.render import md


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


def _launcher() -> str:
    """The class of this multirun's launcher ('' outside a multirun)."""
    if not HydraConfig.initialized():
        return ""
    hc = HydraConfig.get()
    return str(hc.launcher.get("_target_", "")) if hc.mode == RunMode.MULTIRUN else ""


def _in_pool() -> bool:
    """Whether this process is a job of a ``hydra/launcher=gpus`` (joblib) sweep."""
    return "Joblib" in _launcher()


def _fork_jobs() -> int:
    """``n_jobs`` of this multirun's ``hydra/launcher=fork``; 0 under any other launcher."""
    return max(1, int(HydraConfig.get().launcher.n_jobs)) if "ForkLauncher" in _launcher() else 0


def parallel_jobs() -> bool:
    """Whether this process is a job of a sweep whose launcher runs several jobs at once on this
    machine (``hydra/launcher=gpus``, joblib, or ``hydra/launcher=fork``)."""
    return _in_pool() or _fork_jobs() > 1


def concurrent_jobs(cfg: DictConfig) -> int:
    """How many runs the launcher places on this machine at once: the pool's size in a
    ``hydra/launcher=gpus`` sweep, ``n_jobs`` in a ``hydra/launcher=fork`` one, else 1 (the CPU
    threads are shared among them)."""
    if _in_pool():
        return pool_size(cfg.pool.per_gpu, cfg.pool.cpu_jobs)
    return max(1, _fork_jobs())


def in_device_slot(cfg: DictConfig, run: Callable[[DictConfig], Any]) -> Any:
    """``run(cfg)``; in a ``hydra/launcher=gpus`` sweep, inside a free device slot for the job's
    whole life (its GPU; on CPU the slot only bounds the jobs, their threads are chosen by
    :func:`dann.run.threads.choose_threads`)."""
    if not _in_pool():
        return run(cfg)
    n = pool_size(cfg.pool.per_gpu, cfg.pool.cpu_jobs)
    with device_slot(Path(HydraConfig.get().sweep.dir) / ".slots", n) as slot:
        if torch.cuda.is_available():
            cfg.trainer.accelerator, cfg.trainer.devices = "gpu", [slot // int(cfg.pool.per_gpu)]
        return run(cfg)


def summary_markdown(records: list[dict[str, Any]], bad: list) -> str:
    rows = ["| pair | method | seed | steps | test/src_acc | test/tgt_acc | status | wall s |",
            "|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["pair"], r["method"], r["seed"])):
        m = r.get("metrics", {})
        f = lambda k: f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "—"  # noqa: E731
        wall = f"{r['wall_time_s']:.1f}" if r["wall_time_s"] is not None else "—"
        rows.append(f"| {md(r['pair'])} | {md(r['method'])} | {r['seed']} | {r['steps']} | {f('test/src_acc')} | "
                    f"{f('test/tgt_acc')} | {md(r['status'])} | {wall} |")
    rows += [f"| unreadable: {md(p)} | {md(why)} |||||||" for p, why in bad]
    return "\n".join(rows) + "\n"


class SweepSummary(Callback):
    """Before the first job, check a search's objective and space; at the end, print the sweep's
    runs as a table, write ``summary.md`` and, when the runs drew 2-D decision boundaries,
    ``decision_boundaries.png`` with the runs side by side."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import sys

        from dann.errors import ConfigError
        from dann.run.search import check_search

        try:
            check_search(config)
        except ConfigError as e:  # nothing has run: stop the whole sweep with one line
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"dann-train: error: {e}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records, bad = read_records(sweep_dir)
        if not records and not bad:
            return
        md = summary_markdown(records, bad)
        atomic_write_text(sweep_dir / "summary.md", md)
        print(f"\nResults of the sweep in {sweep_dir}:\n\n{md}")
        runs = [(f"{r['method']} (target acc {r['metrics'].get('test/tgt_acc', float('nan')):.3f})",
                 Path(r["_path"]).with_name("boundary.npz")) for r in sorted(records, key=lambda r: r["method"],
                                                                           reverse=True)]
        runs = [(t, p) for t, p in runs if p.exists()]
        if runs:
            from dann.report.figures import save_boundaries_side_by_side

            png = save_boundaries_side_by_side(runs, sweep_dir / "decision_boundaries.png")
            print(f"Decision boundaries: {png}")
