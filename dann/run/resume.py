"""Resume only what the checkpoint was: the config it was written with, compared key by key.

A checkpoint restores the optimizer, the schedules, the step and the RNG states. Resumed with
another config, the run silently mixes two: a new ``optim.lr`` is recorded but the restored
scheduler keeps the old one; a new ``seed``, ``trainer.max_steps`` or ``pair.target`` makes
one run of two protocols. So a resume compares the resolved config saved in the checkpoint
(:data:`~dann.run.checkpoints.CONFIG_KEY`) with the new one and refuses any difference outside
:data:`MAY_CHANGE`, naming each key with both values.

``trainer.max_steps`` may not change: the schedules (learning rate, lambda) run on
``step / max_steps``, so an extended run is a run of neither length. Train a new run instead.

``resume=PATH`` (another run's checkpoint) may also change the method: SA reuses a
source-only run's network that way. The weights must then fit the new method's network
(:func:`check_weights`).

A checkpoint written before configs were saved in checkpoints is compared with the config
of its run folder's ``results.json`` (an interrupted or failed run writes one); with neither,
the resume goes on with a warning that nothing could be compared.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from dann.errors import ResumeError
from dann.records import RESULTS_FILE
from dann.run.checkpoints import CONFIG_KEY, load_checkpoint

log = logging.getLogger(__name__)

#: Keys (an entry covers everything under it) that may change on a resume: where files go, how
#: the run is logged and checkpointed, where it runs, which rule the record reports. None of
#: them changes the weights the run computes.
MAY_CHANGE: tuple[str, ...] = (
    "output_dir", "resume", "objective", "selection", "logger", "checkpoint", "pool", "speed", "threads", "validator_modules",
    "data.root", "data.eval_batch_size", "deterministic", "trainer.deterministic", "trainer.accelerator",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.val_check_interval",
)
#: What ``resume=PATH`` (another run's checkpoint) may change besides: the method.
MAY_CHANGE_FROM_ANOTHER_RUN: tuple[str, ...] = ("method",)
ABSENT = "(absent)"


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty dict stays a value)."""
    if not (isinstance(config, dict) and config):
        return {prefix.rstrip("."): config} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in config.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def shown(value: Any) -> str:
    """A value as written on the command line: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _covered(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def differences(saved: dict[str, Any], now: dict[str, Any], may_change: tuple[str, ...]) -> list[str]:
    """``"key: old (checkpoint) -> new (now)"`` for each key outside ``may_change`` that differs.
    A key the saved config lacks was added to the config since: it is not compared."""
    old, new = flatten(saved), flatten(now)
    out = []
    for k in sorted(set(old) | set(new)):
        if _covered(k, may_change) or k not in old:
            continue
        a, b = old[k], new.get(k, ABSENT)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{k}: {shown(a)} (checkpoint) -> {ABSENT if b is ABSENT else shown(b)} (now)")
    return out


def saved_config(ckpt: dict[str, Any], ckpt_path: Path) -> dict[str, Any] | None:
    """The config ``ckpt`` was written with: its own, else its run folder's record's, else None."""
    if isinstance(ckpt.get(CONFIG_KEY), dict):
        return ckpt[CONFIG_KEY]
    try:  # checkpoints/last.ckpt -> results.json beside checkpoints/
        rec = json.loads((Path(ckpt_path).parent.parent / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec["config"] if isinstance(rec, dict) and isinstance(rec.get("config"), dict) else None


def check_resume(cfg: DictConfig, ckpt_path: str | None) -> dict[str, Any] | None:
    """The checkpoint to resume from, read safely, once its config agrees with ``cfg``; else
    :class:`ResumeError` naming every differing key (``None``: nothing to resume)."""
    if ckpt_path is None:
        return None
    ckpt = load_checkpoint(ckpt_path)
    saved = saved_config(ckpt, Path(ckpt_path))
    if saved is None:
        log.warning("%s holds no config and its folder no record: the resume cannot check that this run's config "
                    "is the one the checkpoint was written with", ckpt_path)
        return ckpt
    own = cfg.get("resume") == "auto"
    diff = differences(saved, OmegaConf.to_container(cfg, resolve=True),
                       MAY_CHANGE if own else MAY_CHANGE + MAY_CHANGE_FROM_ANOTHER_RUN)
    if diff:
        raise ResumeError(
            f"resume={cfg.get('resume')} refused: {ckpt_path} was written with another config, and a resume "
            f"would mix the two in one run:\n  " + "\n  ".join(diff) + "\nResume with the checkpoint's values, "
            f"or start a new run in another output_dir. On a resume only these may change: {', '.join(MAY_CHANGE)}"
            + ("" if own else f" (and, from another run's checkpoint, {', '.join(MAY_CHANGE_FROM_ANOTHER_RUN)})")
            + ".")
    return ckpt


def check_weights(model: pl.LightningModule, ckpt: dict[str, Any] | None, ckpt_path: str | None,
                  cfg: DictConfig) -> None:
    """:class:`ResumeError` unless the checkpoint's weights fit ``model`` (same names and shapes),
    instead of torch's ``load_state_dict`` error halfway through Lightning's restore."""
    if ckpt is None:
        return
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in ckpt["state_dict"].items()}
    if have == got:
        return
    saved = saved_config(ckpt, Path(ckpt_path)) or {}
    theirs = (saved.get("method") or {}).get("name", "?"), (saved.get("model") or {}).get("arch", "?")
    problems = []
    lacks, extra = sorted(set(have) - set(got)), sorted(set(got) - set(have))
    if lacks:
        problems.append("this run's network has weights the checkpoint lacks: " + ", ".join(lacks))
    if extra:
        problems.append("the checkpoint has weights this run's network lacks: " + ", ".join(extra))
    shapes = [f"{k} {got[k]} vs {have[k]}" for k in sorted(set(have) & set(got)) if have[k] != got[k]]
    if shapes:
        problems.append("shapes differ (checkpoint vs now): " + ", ".join(shapes))
    raise ResumeError(
        f"resume={cfg.get('resume')} refused: the checkpoint's network (method {theirs[0]}, model.arch {theirs[1]}) "
        f"does not fit this run's (method {cfg.method.name}, model.arch {cfg.model.arch}): " + "; ".join(problems)
        + ". Resume with the method and model the checkpoint was trained with.")
