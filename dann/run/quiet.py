"""Silence the library chatter that tells a user nothing to act on; keep every other warning.

Each filter names one message, so a new warning of any library still shows. What goes, and why:

* Lightning's start-up notes ``GPU available: ...``, ``TPU available: ...``, ``HPU available: ...``
  (the run's device is in its record), the ``litlogger`` advertisement, and
  ```Trainer.fit` stopped: `max_steps=N` reached`` (the normal end of every run);
* ``Experiment logs directory ... exists and is not empty. Previous log files ... will be deleted``:
  the CSV logger writes into the run folder, which always holds Hydra's ``.hydra/`` first, so it
  fired on every brand-new run; a resume sets the earlier ``metrics.csv`` aside before
  (:func:`dann.run.loggers.set_aside_csv`);
* ```isinstance(treespec, LeafSpec)` is deprecated``: torch's deprecation of a call inside
  Lightning, not in this code;
* ``Using ModelCheckpoint with manual optimization and every_n_train_steps, but no
  pre-optimization state was saved ...`` (with a 14-line code example), at every periodic
  checkpoint of the methods that step their optimizers themselves (MCD, ADDA): the state after the
  step is the one a checkpoint of step N must hold for an exact resume;
* ``The `srun` command is available on your system but is not used``, for a run on one device
  of one node only: there nothing can hang, and sweeps reach SLURM through
  ``hydra/launcher=slurm``. A multi-device (DDP) run keeps it: there it is real advice.

W&B's ``The anonymous setting has no effect`` is avoided at its source
(:func:`dann.run.loggers.build_loggers`).
"""

from __future__ import annotations

import logging
import re
import warnings

from omegaconf import OmegaConf

#: Lightning's info messages dropped (matched at the start of the message).
CHATTER_INFO = re.compile(r"(GPU available: |TPU available: |HPU available: |💡 Tip: .*litlogger"
                          r"|`Trainer\.fit` stopped: `max_steps=)")

#: Warnings dropped on every run (regular expressions matched at the start of the message).
CHATTER_WARNINGS = (
    r"Experiment logs directory .* exists and is not empty",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Using ModelCheckpoint with manual optimization and every_n_train_steps, but no pre-optimization state",
)
SRUN_WARNING = r"The `srun` command is available on your system but is not used"

#: The loggers Lightning's ``rank_zero_info`` writes to (whichever package imported last wins).
RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                     "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not CHATTER_INFO.match(record.getMessage())


_FILTER = _DropChatter()


def quiet_libraries(single_device: bool = True) -> None:
    """Install the filters above in this process (idempotent: filters are not stacked twice).
    ``single_device``: the run uses one device on one node (the srun hint is then dropped too)."""
    for name in RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)  # a no-op when already there
    for msg in CHATTER_WARNINGS + ((SRUN_WARNING,) if single_device else ()):
        warnings.filterwarnings("ignore", message=msg)


def single_device(trainer_cfg) -> bool:
    """Whether ``trainer:`` asks for one device on one node (``devices: 1`` or a list of one, as a
    sweep's device slot sets it; ``auto`` may be several)."""
    d = trainer_cfg.get("devices", 1)
    one = len(d) == 1 if isinstance(d, (list, tuple)) or OmegaConf.is_list(d) else str(d) == "1"
    return one and int(trainer_cfg.get("num_nodes", 1) or 1) == 1
