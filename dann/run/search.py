"""Hyper-parameter search for every method (``hparams_search=tune``): its sampler and its checks.

``dann-train -m hparams_search=tune method=M pair=P`` runs a fixed budget of trials (Optuna
through Hydra's sweeper), each an ordinary run folder with its record, ``evaluations.jsonl``
and kept checkpoints. The space is the method's file ``conf/search/tune/M.yaml``. Trial 0 is
the authors' published setting (``sampler.first``), the others are drawn at random with a
fixed seed: random search, so that every validator can choose among the same trials afterwards
(``dann-table --selection-study``) without the search having looked at any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from dann.errors import ConfigError
from dann.selection.rules import ORACLE_OBJECTIVES, check_objective, refresh_rules

def objective_tag(objective: str) -> str:
    """``"_ORACLE"`` for an objective that reads target labels (appended to the study's name,
    whatever the search was launched as), else ``""``."""
    return "_ORACLE" if str(objective) in ORACLE_OBJECTIVES else ""


def DefaultFirst(seed: Optional[int] = None, first: Optional[Dict[str, Any]] = None):
    """An Optuna sampler: trial 0 takes ``first`` (the authors' setting, which must lie in the
    space), every other trial is drawn by Optuna's seeded ``RandomSampler``."""
    import optuna

    class _DefaultFirst(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._random = optuna.samplers.RandomSampler(seed=seed)
            self.first = dict(first or {})

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            if trial.number == 0 and name in self.first:
                value = self.first[name]
                if not _in_space(distribution, value):
                    raise ConfigError(f"the search's first trial sets {name}={value!r}, outside its space "
                                      f"({distribution}): the authors' setting must be a point of the space")
                return value
            return self._random.sample_independent(study, trial, name, distribution)

    return _DefaultFirst()


def _in_space(distribution, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


try:  # the sampler's config, for hydra/sweeper/sampler=default_first (needs hydra-optuna-sweeper)
    from hydra.core.config_store import ConfigStore
    from hydra_plugins.hydra_optuna_sweeper.config import SamplerConfig

    @dataclass
    class DefaultFirstConfig(SamplerConfig):
        _target_: str = "dann.run.search.DefaultFirst"
        seed: Optional[int] = None
        first: Dict[str, Any] = field(default_factory=dict)

    ConfigStore.instance().store(group="hydra/sweeper/sampler", name="default_first", node=DefaultFirstConfig,
                                 provider="dann")
except ImportError:  # pip install -e ".[optuna]" for searches
    pass


def check_search(config: DictConfig) -> None:
    """Before the first trial of a search: its objective, and a space for the method."""
    check_objective(config.get("objective", "test/src_acc"), refresh_rules())
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    if "Optuna" in sweeper and not config.hydra.sweeper.get("params"):
        raise ConfigError(f"hparams_search: method {config.method.name!r} has no search space; write "
                          f"conf/search/tune/{config.method.name}.yaml (params and sampler.first, like dann.yaml)")


def search_record(objective: Any) -> dict[str, Any]:
    """What a trial's record says of the search it belongs to."""
    return {"objective": str(objective), "reads_target_labels": str(objective) in ORACLE_OBJECTIVES}
