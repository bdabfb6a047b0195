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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

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

# what the forked children read: set in the parent just before the pool forks
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


def _run_in_child(i: int) -> JobReturn:
    ret = _run_pending(i)
    if ret.status == JobStatus.FAILED:  # the exception goes back to the parent as text: it need not pickle
        ret._return_value = RuntimeError(f"{type(ret._return_value).__name__}: {ret._return_value}")
    return ret


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
            if n == 1:
                runs = [_run_pending(i) for i in range(len(_PENDING))]
            else:
                # one job per child: nothing a job leaves behind (threads, signal handlers) reaches the next
                with multiprocessing.get_context("fork").Pool(n, maxtasksperchild=1) as pool:
                    runs = pool.map(_run_in_child, range(len(_PENDING)), chunksize=1)
        finally:
            _PENDING.clear()
        return runs
