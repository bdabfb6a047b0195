"""Guards around a run: one process per run folder, a usable data root, a source classifier
that learnt something, and one clean line for the errors a user can fix.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from dann.data.domains import DataError, default_root, get_domain
from dann.errors import CheckpointError, ConfigError, ResumeError, RunDirBusy
from dann.records import OWNER_FILE, atomic_write_text

log = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"


# -- one process per run folder ----------------------------------------------------------------
def lock_run_dir(out: Path) -> FileLock | None:
    """Hold ``out`` for this run's life (release with :func:`unlock_run_dir`). A second process
    fails here at once with :class:`RunDirBusy`, naming the folder and the holder's pid: two
    runs in one folder interleave their ``metrics.csv`` rows and overwrite each other's record.

    The lock is the operating system's (``flock``): it goes with the process, even a killed one.
    Only rank 0 takes it; the other DDP ranks of the same run share its folder.
    """
    if getattr(rank_zero_only, "rank", 0) != 0:
        return None
    lock = FileLock(str(Path(out) / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunDirBusy(f"{out} is in use by another dann-train process ({holder(out)}); two runs in one folder "
                         f"would mix their metrics.csv and overwrite each other's record. Wait for it to end, stop "
                         f"it, or give this run another folder (hydra.run.dir=... or output_dir=...)") from None
    atomic_write_text(Path(out) / OWNER_FILE, json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat(timespec="seconds")}))
    return lock


def holder(out: Path) -> str:
    """``pid 123 on host, since ...`` of the process holding ``out``, as it wrote it down."""
    try:
        o = json.loads((Path(out) / OWNER_FILE).read_text())
        return f"pid {o['pid']} on {o['host']}, since {o['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown: it has only just started"


HYDRA_DIR = ".hydra"


def save_hydra_files(out: Path, cfg: DictConfig) -> None:
    """Write Hydra's ``.hydra/`` (config.yaml, hydra.yaml, overrides.yaml) into ``out``, once the
    run may start there. conf/train.yaml turns Hydra's own writing off (``hydra.output_subdir:
    null``): Hydra wrote them before any check ran, so a process refused in the folder of another
    run (busy, or holding a run) rewrote that run's. Nothing outside a Hydra job (tests, sweeps'
    jobs write theirs the same way)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized() or getattr(rank_zero_only, "rank", 0) != 0:
        return
    hc = HydraConfig.instance().cfg
    d = Path(out) / HYDRA_DIR
    d.mkdir(parents=True, exist_ok=True)
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hc), ("overrides.yaml", hc.hydra.overrides.task)):
        atomic_write_text(d / name, OmegaConf.to_yaml(node))


def unlock_run_dir(out: Path, lock: FileLock | None) -> None:
    if lock is not None:
        # the owner file outlives only a killed run: dann-table names such folders
        (Path(out) / OWNER_FILE).unlink(missing_ok=True)
        lock.release()


# -- the data root ------------------------------------------------------------------------------
def check_data_root(cfg: DictConfig) -> None:
    """:class:`ConfigError` if ``data.root`` cannot hold the pair's datasets: a file, a folder that
    cannot be created, or one this process cannot write in (the domains' caches and locks go
    there). Pairs generated in memory (the moons) never touch it and are not checked."""
    if not any(get_domain(d).cache for d in (cfg.pair.source, cfg.pair.target)):
        return
    given = cfg.data.get("root")
    root = Path(given).expanduser() if given else default_root()
    key = f"data.root={given}" if given else f"data.root (unset, so {root})"
    fix = ("set data.root to a folder you can write in, or unset it to use $DANN_DATA_DIR, else ~/.cache/dann "
           "(`dann-data` prepares the datasets there)")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{key} is a file, not a folder: {fix}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{key} does not exist and cannot be created ({e.strerror}): {fix}") from None
    try:
        tempfile.TemporaryFile(dir=root).close()
    except OSError as e:
        raise ConfigError(f"{key} is not writable ({e.strerror}); the datasets' caches and locks are written "
                          f"there: {fix}") from None


# -- the network and the pair's inputs, before any data loads ---------------------------------------
def pair_input_shape(cfg: DictConfig) -> tuple[int, ...] | None:
    """The shape the pair's samples reach the network in (``pair.channels``, ``pair.image_size``
    applied to the domains' own shapes), or None when a domain's shape is only known once loaded.
    :class:`ConfigError` when the two domains cannot be brought to one shape."""
    p = cfg.pair
    shapes = {}
    for side in ("source", "target"):
        d = get_domain(p[side])
        if d.shape is None:
            return None
        if len(d.shape) != 3:  # feature vectors: channels and size do not apply
            shapes[side] = tuple(d.shape)
            continue
        c, h, w = d.shape
        ch, size = p.get("channels"), p.get("image_size")
        if ch and c not in (1, ch):
            raise ConfigError(f"pair.channels={ch}: pair.{side}={d.name} has {c}-channel images, which convert to "
                              f"no other count (grey images are replicated to any); set pair.channels={c} or null")
        shapes[side] = (ch or c, size or h, size or w)
    if shapes["source"] != shapes["target"]:
        raise ConfigError(f"pair.source={p.source} gives inputs of shape {shapes['source']} and pair.target={p.target} "
                          f"{shapes['target']}: set pair.channels and pair.image_size so both reach one shape")
    return shapes["source"]


def check_network(cfg: DictConfig) -> None:
    """:class:`ConfigError` unless ``model.arch`` takes the pair's inputs (built without memory, on
    the meta device): an architecture for another pair's input or an image size too small for its
    convolutions otherwise fails only after the data has loaded."""
    import torch

    from dann.models import build_nets

    shape = pair_input_shape(cfg)
    if shape is None:
        return
    with torch.device("meta"):
        build_nets(cfg.model.arch, shape, get_domain(cfg.pair.source).num_classes, hidden=cfg.model.get("hidden", 15),
                   dropout=cfg.model.get("dropout", 0.5))


# -- a source classifier at chance ----------------------------------------------------------------
#: a run is at chance when its source test accuracy is at most this far above chance
CHANCE_MARGIN = 0.05


def chance_flag(metrics: dict[str, float], dm: Any, lr: float) -> dict[str, Any]:
    """``chance_acc`` (what always guessing the most frequent source class scores on the source
    test set) and ``source_at_chance`` for the record; a warning when the run is at chance.

    A run can end without a non-finite loss and yet have learnt nothing, even on the labelled
    source (``optim.lr=1e6`` on the moons: losses ~1e6 but finite). Its target accuracy then
    means nothing; the record and ``dann-table`` say so.
    """
    y = dm.src_test.y
    chance = float(y.bincount().max()) / max(len(y), 1)
    acc = metrics.get("test/src_acc")
    at = acc is not None and acc <= chance + CHANCE_MARGIN
    if at:
        log.warning("test/src_acc %.3f is at chance (%.3f: always guessing the most frequent source class): the "
                    "network learnt nothing, not even on the labelled source, so its target accuracy means nothing. "
                    "The record says source_at_chance. Lower optim.lr (this run: %g) or check the data.",
                    acc, chance, lr)
    return {"chance_acc": round(chance, 4), "source_at_chance": bool(at)}


# -- a training loss that diverged ------------------------------------------------------------------
#: a logged training loss this many times that of a uniform guess (ln K) has diverged: no network
#: that learns gets there, only one whose weights blow up (the moons with optim.lr=1e3: 4x this
#: within 40 steps; healthy runs stay within a few ln K)
DIVERGED_FACTOR = 1000.0


class DivergenceWatch(pl.Callback):
    """Flag a run whose logged training loss reaches :data:`DIVERGED_FACTOR` x ln K, finite or not
    (a non-finite one stops the run: :class:`dann.run.callbacks.FiniteLossGuard`). The run goes
    on; its record's ``diverged_at_step`` names the first such logged step, a warning says so, and
    ``dann-table`` lists it instead of averaging it."""

    def __init__(self, num_classes: int):
        self.limit = DIVERGED_FACTOR * math.log(max(num_classes, 2))
        self.diverged_at_step: int | None = None
        self.loss: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"diverged_at_step": self.diverged_at_step, "loss": self.loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.diverged_at_step, self.loss = state.get("diverged_at_step"), state.get("loss")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.diverged_at_step is not None or trainer.global_step % max(trainer.log_every_n_steps, 1):
            return  # only where the step just logged (no extra host sync)
        v = trainer.callback_metrics.get("train/loss")
        if v is not None and abs(float(v)) >= self.limit:
            self.diverged_at_step, self.loss = int(trainer.global_step), float(v)
            log.warning("the training loss diverged at step %d: train/loss %.3g, over %g x ln K (%.3g); the run goes "
                        "on, but its numbers mean nothing. The record says diverged_at_step and dann-table does not "
                        "average it. Lower optim.lr or clip the gradients (+trainer.gradient_clip_val=...).",
                        self.diverged_at_step, self.loss, DIVERGED_FACTOR, self.limit)


# -- the CLI: one line for the errors a user can fix -------------------------------------------------
#: errors whose message says what is wrong and how to fix it: the CLI prints it alone
USER_ERRORS = (ConfigError, DataError, CheckpointError, ResumeError, RunDirBusy)
#: errors of the machine a user can fix: a full disk or quota, a read-only or forbidden folder
MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is one the CLI says in one line: :data:`USER_ERRORS`, or an OSError of
    :data:`MACHINE_ERRNOS` (its message names the file)."""
    return isinstance(e, USER_ERRORS) or (isinstance(e, OSError) and e.errno in MACHINE_ERRNOS)


def writable_problem(folder: Path) -> str | None:
    """Why a run cannot write in ``folder`` (created if need be), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


def make_run_dir(out: Path, key: str = "output_dir") -> None:
    """Create the run folder; :class:`ConfigError` naming ``key`` if it cannot be written in."""
    why = writable_problem(Path(out))
    if why:
        raise ConfigError(f"{key}={out}: cannot write there ({why}); give the run a folder you can write in "
                          f"(hydra.run.dir=... or output_dir=...)")


class CheckRunDir(Callback):
    """Hydra callback: refuse a run (or sweep) folder that cannot be written in before Hydra
    starts the job, whose log file there would fail first, with a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        folder = Path(str(OmegaConf.select(config, key)))
        why = writable_problem(folder)
        if why:
            e = ConfigError(f"{key}={folder}: cannot write there ({why}); give the run a folder you can write in "
                            f"({key}=...)")
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise e
            print(f"dann-train: error: {e}", file=sys.stderr)
            sys.exit(2)


def exit_cleanly(e: BaseException) -> None:
    """Print ``dann-train: error: <message>`` on stderr and exit with status 2, instead of Hydra's
    traceback. Returns (the caller re-raises) with ``HYDRA_FULL_ERROR=1`` or in a sweep, where
    Hydra records the failed job and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get("HYDRA_FULL_ERROR") == "1" or (HydraConfig.initialized() and
                                                      HydraConfig.get().mode == RunMode.MULTIRUN):
        return
    print(f"dann-train: error: {e}", file=sys.stderr)
    sys.exit(2)
