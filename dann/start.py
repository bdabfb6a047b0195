"""A run that starts from another finished run's network: ``method.start=RUN_FOLDER``.

DIRT-T refines a finished VADA run; SHOT may adapt a finished source-only run instead of
training its own source model. The method names the methods it accepts
(:attr:`~dann.methods.base.DAMethod.start_methods`); :func:`read_start` checks the folder
before any data loads (``dann.config.validate`` calls it; it reads records only, so it sits on
the ground floor) and refuses, with one :class:`~dann.errors.ConfigError` naming the fix, a
folder that is missing, holds no finished record of an accepted method or no final checkpoint,
or was trained on another pair, network or preprocessing. :func:`dann.run.start.load_start`
(the builder's) then reads the checkpoint safely, checks that it is the record's final step and
fits the network, and hands the weights to :meth:`~dann.methods.base.DAMethod.load_start`; the
record of the new run says where it started (``start``: folder, step, method, pair, seed,
commit, accuracies).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dann.errors import ConfigError
from dann.records import RESULTS_FILE

#: the option that names the start run's folder
OPTION = "start"
#: the start run's final checkpoint, inside its folder
CHECKPOINT = Path("checkpoints") / "last.ckpt"
#: config keys that must be equal in both runs: the same inputs, in the same network
SAME: tuple[str, ...] = ("pair.source", "pair.target", "pair.channels", "pair.image_size", "pair.fit",
                         "model.arch", "model.hidden", "model.dropout", "data.mean_of")


@dataclass
class Start:
    folder: Path
    record: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT


def _get(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def read_start(method_cls: type, config: Mapping[str, Any]) -> Start | None:
    """The run ``method.start`` names, checked against ``config`` (a resolved config), or None
    when the method takes none; :class:`ConfigError` with the fix when it cannot be used."""
    accepted = tuple(getattr(method_cls, "start_methods", ()))
    if not accepted:
        return None
    name = _get(config, "method.name")
    folder = str(_get(config, f"method.{OPTION}") or "")
    wanted = " or ".join(accepted)
    if not folder:
        if getattr(method_cls, "requires_start", False):
            raise ConfigError(f"method.{OPTION} is not set: {name} starts from a finished {wanted} run; give its "
                              f"folder, e.g. method.{OPTION}=outputs/<date>/<time>_{accepted[0]}_<pair>_s0")
        return None
    where = Path(folder)
    rec_path = where / RESULTS_FILE
    if not where.is_dir():
        raise ConfigError(f"method.{OPTION}={folder}: no such folder (give the folder of a finished {wanted} run)")
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"method.{OPTION}={folder}: its {RESULTS_FILE} cannot be read ({type(e).__name__}); "
                          f"give the folder of a finished {wanted} run") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("config"), dict):
        raise ConfigError(f"method.{OPTION}={folder}: its {RESULTS_FILE} is not a run record with a config")
    if rec.get("status") != "finished":
        raise ConfigError(f"method.{OPTION}={folder}: that run did not finish (status {rec.get('status')!r}); "
                          f"resume it first (resume=auto) or give a finished {wanted} run")
    if rec.get("method") not in accepted:
        raise ConfigError(f"method.{OPTION}={folder}: that run is method {rec.get('method')!r}; {name} starts from "
                          f"a finished {wanted} run")
    theirs = rec["config"]
    diff = [f"{k}={_get(theirs, k)!r} there, {_get(config, k)!r} here" for k in SAME
            if json.dumps(_get(theirs, k)) != json.dumps(_get(config, k))]
    if diff:
        raise ConfigError(f"method.{OPTION}={folder}: that run was trained on other inputs or another network ("
                          + "; ".join(diff) + f"): give a {wanted} run of pair {_get(config, 'pair.name')} with "
                          f"model.arch={_get(config, 'model.arch')}")
    start = Start(where, rec)
    if not start.checkpoint.is_file():
        raise ConfigError(f"method.{OPTION}={folder}: no {CHECKPOINT} there (was it trained with "
                          f"checkpoint.keep=false?); the start needs that run's final weights")
    return start
