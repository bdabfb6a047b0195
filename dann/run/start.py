"""Loading a start run's weights into a new run's method: the builder's half of ``method.start``
(the checks of the folder are :func:`dann.start.read_start`'s, made before any data loads)."""

from __future__ import annotations

from typing import Any, Mapping

from dann.errors import ConfigError
from dann.run.checkpoints import load_checkpoint
from dann.start import CHECKPOINT, OPTION, SAME, Start, _get, read_start  # noqa: F401


def load_start(model: Any, config: Mapping[str, Any]) -> None:
    """Give ``model`` the network of the run ``method.start`` names (nothing when it names none:
    whether one is required is :func:`read_start`'s check in ``validate``, before data loads)."""
    if not _get(config, f"method.{OPTION}"):
        return
    start = read_start(type(model), config)
    if start is None:
        return
    ckpt = load_checkpoint(start.checkpoint)  # weights_only: a file that would run code is refused
    steps = start.record.get("steps")
    if ckpt.get("global_step") != steps:
        raise ConfigError(f"method.{OPTION}={start.folder}: its {CHECKPOINT} is from step {ckpt.get('global_step')}, "
                          f"its record from step {steps}: the final weights are not there (train the start run with "
                          f"checkpoint.every_n_steps dividing trainer.max_steps)")
    state = ckpt["state_dict"]
    want = {**{f"features.{k}": tuple(v.shape) for k, v in model.features.state_dict().items()},
            **{f"classifier.{k}": tuple(v.shape) for k, v in model.classifier.state_dict().items()}}
    got = {k: tuple(getattr(state.get(k), "shape", ())) if k in state else None for k in want}
    bad = [f"{k} {got[k]} vs {w}" for k, w in want.items() if got[k] != w]
    if bad:
        raise ConfigError(f"method.{OPTION}={start.folder}: its network does not fit this one (checkpoint vs now: "
                          + ", ".join(bad) + ")")
    rec = start.record
    metrics = rec.get("metrics") or {}
    model.load_start(state, {
        "folder": str(start.folder.resolve()), "step": int(ckpt["global_step"]), "method": rec.get("method"),
        "pair": rec.get("pair"), "seed": rec.get("seed"), "git_commit": rec.get("git_commit"),
        "test/src_acc": metrics.get("test/src_acc"), "test/tgt_acc": metrics.get("test/tgt_acc"),
    })
