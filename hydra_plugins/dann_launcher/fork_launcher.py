"""``hydra/launcher=fork``: a sweep's jobs in forked copies of the launching process, ``n_jobs`` at once.

The jobs inherit what the launching process has imported (torch and Lightning take seconds to
import; a forked child pays nothing), so a small sweep on the CPU, such as the quick start's two
moons runs, costs one start-up and the longest job instead of the sum of its jobs. Each job still
goes through Hydra's ``run_job`` (its folder, logging, callbacks), as with the basic launcher.

A forked copy of a CUDA context is unusable: once the launching process has initialised CUDA, and
where ``fork`` does not exist, the jobs run one after the other in this process, as Hydra's basic
launcher runs them. Each job's config says how many run at once (``hydra.launcher.n_jobs``), which
its threads rule counts (``dann.run.launch.concurrent_jobs``).
"""

# No ``from __future__ import annotations``: Hydra's plugin scan imports this module in a way that
# leaves the dataclass below unable to resolve string annotations.
import logging
import multiprocessing
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import open_dict

log = logging.getLogger(__name__)


@dataclass
class ForkLauncherConf:
    _target_: str = "hydra_plugins.dann_launcher.fork_launcher.ForkLauncher"
    n_jobs: int = 2


ConfigStore.instance().store(group="hydra/launcher", name="dann_fork", node=ForkLauncherConf, provider="dann")

# what the forked children read: set in the parent before it forks
_PENDING: List[Any] = []


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def can_fork() -> bool:
    """Whether jobs may run in forked children: ``fork`` exists and no CUDA context would be copied."""
    return "fork" in multiprocessing.get_all_start_methods() and not _cuda_initialized()


def _run_pending(i: int) -> JobReturn:
    launcher, config = _PENDING[i]
    ret = run_job(hydra_context=launcher.hydra_context, task_function=launcher.task_function, config=config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return ret


def _failed(i: int, why: BaseException) -> JobReturn:
    # the exception goes back to the parent as text: it need not pickle
    return JobReturn(overrides=list(_PENDING[i][1].hydra.overrides.task), status=JobStatus.FAILED,
                     _return_value=RuntimeError(f"{type(why).__name__}: {why}"))


def _child(i: int, send: Connection) -> None:
    """One job in a forked child; its JobReturn goes back through ``send``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's forwarding handler is not the job's
    try:
        ret = _run_pending(i)
        if ret.status == JobStatus.FAILED:
            ret = _failed(i, ret._return_value)
    except BaseException as e:  # a stopped run leaves by SystemExit: its result still goes back
        ret = _failed(i, e)
    send.send(ret)
    send.close()


def _fork_jobs(n: int) -> List[JobReturn]:
    """Run the pending jobs in forked children, ``n`` at once, one child per job (nothing a job leaves
    behind, threads or signal handlers, reaches the next). SIGTERM to this process reaches the running
    jobs, each of which stops as a run stops (a checkpoint, its record ``interrupted``), and starts no
    other; a child that dies without an answer is a failed job, not a wait without end."""
    ctx = multiprocessing.get_context("fork")
    todo, runs = list(range(len(_PENDING))), [None] * len(_PENDING)
    running: Dict[int, Tuple[Any, Connection]] = {}
    stopped: List[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopped.append(signum)
        for proc, _ in running.values():
            proc.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while todo or running:
            while todo and len(running) < n and not stopped:
                i = todo.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(i, send), name=f"job{i}")
                proc.start()
                send.close()
                running[i] = (proc, recv)
            if not running:
                break
            # the answer is read as soon as it comes: a large one would fill the pipe before the child ends
            ready = wait([c for _, c in running.values()] + [p.sentinel for p, _ in running.values()])
            for i, (proc, recv) in list(running.items()):
                if recv in ready or proc.sentinel in ready:
                    try:
                        runs[i] = recv.recv()
                    except EOFError:
                        runs[i] = _failed(i, RuntimeError(f"its process ended with no answer (exit {proc.exitcode})"))
                    proc.join()
                    recv.close()
                    del running[i]
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopped:
        raise SystemExit(128 + signal.SIGTERM)  # as a shell reports a process ended by SIGTERM
    return runs  # type: ignore[return-value]


class ForkLauncher(BasicLauncher):
    def __init__(self, n_jobs: int = 2) -> None:
        super().__init__()
        self.n_jobs = int(n_jobs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        n = min(self.n_jobs, len(job_overrides)) if can_fork() else 1
        log.info(f"Launching {len(job_overrides)} jobs, {n} at once" + (" in forked processes" if n > 1 else ""))
        _PENDING.clear()
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = idx
                config.hydra.launcher.n_jobs = n  # what a job's threads rule counts beside it
            _PENDING.append((self, config))
        try:
            return [_run_pending(i) for i in range(len(_PENDING))] if n == 1 else _fork_jobs(n)
        finally:
            _PENDING.clear()
