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

Added and removed keys are differences too (``+trainer.gradient_clip_val=...`` on a resume
would clip half a run). One exception keeps older checkpoints resumable: a key the checkpoint
lacks is accepted at the value ``conf/train.yaml`` gives it, i.e. a key a newer dann added
to the defaults. Such a key must default to what dann did before it existed (the rule
:data:`dann.report.table.ADDED_KEYS` states for the table); any other value is refused.

A checkpoint written before configs were saved in checkpoints is compared with the config
of its run folder's ``results.json`` (an interrupted or failed run writes one); with neither,
the resume goes on with a warning that nothing could be compared.

A run folder holds one run (:func:`settle_run_dir`): a new run in a folder that holds one is
refused before anything in the folder changes, and ``resume=auto`` in a finished run's folder
(a sweep run again) returns its record untouched.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from dann.errors import ResumeError
from dann.records import OWNER_FILE, RESULTS_FILE, RUN_MARKERS, check_record
from dann.run.checkpoints import CONFIG_KEY, fit_problems, load_checkpoint

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


@lru_cache(maxsize=1)
def train_yaml_defaults() -> dict[str, Any]:
    """``conf/train.yaml``'s own values, flattened (``{"data.mean_of": "pooled", ...}``)."""
    from omegaconf import OmegaConf

    from dann.config import CONF_DIR

    raw = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "train.yaml"), resolve=False)
    return {k: v for k, v in flatten(raw).items() if not k.startswith(("defaults", "hydra."))}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def differences(saved: dict[str, Any], now: dict[str, Any], may_change: tuple[str, ...],
                was: str = "checkpoint") -> list[str]:
    """``"key: old (checkpoint) -> new (now)"`` for each key outside ``may_change`` that differs,
    one the saved config lacks or one the new config lacks included (shown ``(absent)``). A key
    the saved config lacks at its ``conf/train.yaml`` value was added to dann's defaults since
    the checkpoint was written: it is not a difference."""
    old, new = flatten(saved), flatten(now)
    defaults = train_yaml_defaults()
    out = []
    for k in sorted(set(old) | set(new)):
        if _covered(k, may_change):
            continue
        if k not in old and k in defaults and _same(new[k], defaults[k]):
            continue
        a, b = old.get(k, ABSENT), new.get(k, ABSENT)
        if a is ABSENT or b is ABSENT or not _same(a, b):
            out.append(f"{k}: {ABSENT if a is ABSENT else shown(a)} ({was}) -> {ABSENT if b is ABSENT else shown(b)} "
                       f"(now)")
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
    problems = fit_problems(model, ckpt["state_dict"])
    if not problems:
        return
    saved = saved_config(ckpt, Path(ckpt_path)) or {}
    theirs = (saved.get("method") or {}).get("name", "?"), (saved.get("model") or {}).get("arch", "?")
    raise ResumeError(
        f"resume={cfg.get('resume')} refused: the checkpoint's network (method {theirs[0]}, model.arch {theirs[1]}) "
        f"does not fit this run's (method {cfg.method.name}, model.arch {cfg.model.arch}): " + "; ".join(problems)
        + ". Resume with the method and model the checkpoint was trained with.")


# -- one run per run folder ----------------------------------------------------------------------
#: what a run leaves in its folder (Hydra's ``.hydra/`` and log are not a run: Hydra writes them first)
RUN_FILES = (RESULTS_FILE, *(m for m in RUN_MARKERS if m != OWNER_FILE), "metrics.before_resume.csv", "wandb")
#: an attempt that left no checkpoint restarts from step 0: its files are kept under this suffix
RESTARTED = ".restarted-{stamp}"


def held_run(out: Path) -> list[str]:
    """The files of a run already in ``out`` (:data:`RUN_FILES`), if any."""
    return [m for m in RUN_FILES if (Path(out) / m).exists()]


def folder_record(out: Path) -> dict[str, Any] | None:
    """The record in ``out``, if it is a readable one (an unreadable record counts as none)."""
    try:
        rec = json.loads((Path(out) / RESULTS_FILE).read_text())
        check_record(rec)
        return rec
    except (OSError, ValueError):
        return None


def settle_run_dir(cfg: DictConfig, out: Path, ckpt_path: str | None) -> dict[str, Any] | None:
    """Decide what this run may do in ``out``, before anything in it changes.

    * a new run (no ``resume``, or another run's checkpoint) in a folder that holds a run:
      :class:`ResumeError` naming ``resume=auto`` and a fresh folder (it would append to the
      other run's ``evaluations.jsonl`` and curves, and its record would pick from both);
    * ``resume=auto`` where a finished run with this config lies: that record, returned as is
      (a sweep run again; nothing is rewritten, no second W&B run starts);
    * ``resume=auto`` where an unfinished run lies: its record's config must be this one
      (a resume is the same run or nothing); without a checkpoint the attempt restarts from
      step 0, so its evaluations and curve are set aside (``<file>.restarted-<time>``).

    Returns the finished record, or None when the run goes on.
    """
    out = Path(out)
    held = held_run(out)
    if not held:
        return None
    rank0 = getattr(rank_zero_only, "rank", 0) == 0  # DDP: rank 0 decides; the others only read
    r = cfg.get("resume")
    own = r == "auto" or (ckpt_path is not None and
                          Path(ckpt_path).resolve() == (out / "checkpoints" / "last.ckpt").resolve())
    rec = folder_record(out)
    if not own and rank0:
        what = f"a {rec['status']} run" if rec else "a run"
        raise ResumeError(
            f"{out} already holds {what} ({', '.join(held)}); a new run there would mix its evaluations, curves "
            f"and record with that run's. Continue that run with resume=auto, or give this one a fresh folder "
            f"(hydra.run.dir=... or output_dir=...)")
    # with a checkpoint to continue from, check_resume compares with the checkpoint's own config
    if rec is not None and (rec["status"] == "finished" or ckpt_path is None):
        now = OmegaConf.to_container(cfg, resolve=True)
        diff = differences(rec.get("config") or {}, now, MAY_CHANGE, was=f"{rec['status']} run")
        if diff:
            raise ResumeError(
                f"resume={r} refused: {out} holds a {rec['status']} run of another config, and a resume would "
                f"mix the two in one run:\n  " + "\n  ".join(diff) + "\nRun it with that run's values, or start "
                f"a new run in a fresh folder (hydra.run.dir=... or output_dir=...).")
        if rec["status"] == "finished":
            # on stderr, not in the log: the run's train.log is left as it was too
            print(f"dann-train: {out} holds this run, finished: its record is left as it was", file=sys.stderr)
            return rec
    if ckpt_path is None and rank0:  # nothing to continue from: this attempt starts at step 0
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for name in ("evaluations.jsonl", "metrics.csv", "metrics.before_resume.csv"):
            if (out / name).exists():
                os.replace(out / name, out / (name + RESTARTED.format(stamp=stamp)))
    return None
