"""Config validation at startup: typed schemas for the groups a typo would silently break.

``validate(cfg)`` runs before any data is loaded. Each problem raises :class:`ConfigError`
whose message names the key, the value and what is allowed. Unknown pair/method *files*
are already refused by Hydra (it lists the available options); this catches the rest:
unknown keys in ``optim``/``data``/``checkpoint``, out-of-range numbers, unknown method
or domain names set directly (``method.name=...``, ``pair.source=...``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the allowed values."""


@dataclass
class OptimSpec:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    anneal: bool = True
    alpha: float = 10.0
    beta: float = 0.75
    fused: bool = False

    def check(self) -> None:
        _require(self.lr > 0, "optim.lr", self.lr, "a learning rate > 0 (the paper: 0.01)")
        _require(0 <= self.momentum < 1, "optim.momentum", self.momentum, "a value in [0, 1)")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a value >= 0")
        _require(self.alpha >= 0 and self.beta >= 0, "optim.alpha/optim.beta", (self.alpha, self.beta),
                 "values >= 0")


@dataclass
class DataSpec:
    root: Any = None
    batch_size: int = 128
    eval_batch_size: int = 1024
    src_val: int = 0
    mean_of: str = "pooled"

    def check(self) -> None:
        from dann.data.datamodule import MEANS

        _require(self.mean_of in MEANS, "data.mean_of", self.mean_of,
                 f"one of {', '.join(MEANS)}: the training images whose mean is subtracted (both domains' or the source's)")
        _require(isinstance(self.src_val, int) and not isinstance(self.src_val, bool) and self.src_val >= 0,
                 "data.src_val", self.src_val, "an integer >= 0: source training samples held out for validation")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 2 and self.batch_size % 2 == 0,
                 "data.batch_size", self.batch_size,
                 "an even integer >= 2: it splits into equal source and target halves (the paper: 128 = 64 + 64)")
        _require(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1, "data.eval_batch_size",
                 self.eval_batch_size, "an integer >= 1")


@dataclass
class CheckpointSpec:
    every_n_steps: int = 1000
    keep: bool = True
    keep_all: bool = False

    def check(self) -> None:
        _require(isinstance(self.every_n_steps, int) and self.every_n_steps >= 1, "checkpoint.every_n_steps",
                 self.every_n_steps, "an integer >= 1")


@dataclass
class ProbeSpec:
    enabled: bool = True
    samples: int = 2000
    last_k: int = 5

    def check(self) -> None:
        _require(isinstance(self.enabled, bool), "probe.enabled", self.enabled, "true or false")
        _require(isinstance(self.samples, int) and self.samples >= 10, "probe.samples", self.samples,
                 "an integer >= 10")
        _require(isinstance(self.last_k, int) and self.last_k >= 1, "probe.last_k", self.last_k, "an integer >= 1")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {allowed}")


def _typed(spec_cls: type, node: Mapping, key: str):
    """Build ``spec_cls`` from ``node``; an unknown key is an error that lists the allowed ones."""
    allowed = {f.name for f in fields(spec_cls)}
    given = dict(node or {})
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{key}.{u}' for u in unknown)}; "
                          f"allowed keys of {key}: {', '.join(sorted(allowed))}")
    spec = spec_cls(**given)
    spec.check()
    return spec


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first invalid setting of ``cfg`` (no data is touched)."""
    from dann.data.domains import REGISTRY
    from dann.methods import METHODS

    c = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(c.get("seed"), int):
        raise ConfigError(f"seed={c.get('seed')!r} is invalid: expected an integer")
    _typed(OptimSpec, c.get("optim"), "optim")
    _typed(DataSpec, c.get("data"), "data")
    _typed(CheckpointSpec, c.get("checkpoint"), "checkpoint")
    _typed(ProbeSpec, c.get("probe"), "probe")
    from dann.selection import LEGACY, RULES

    obj = str(c.get("objective", ""))
    if obj.startswith("select/"):
        r = RULES.get(obj.split("/", 1)[1])
        usable = [f"select/{n}" for n, x in RULES.items() if x.score and not x.oracle]
        if r is None or not r.score or r.oracle:
            raise ConfigError(f"objective={obj!r} is not a label-free score; allowed: {', '.join(usable)} "
                              f"(or test/src_acc; test/tgt_acc reads target labels: hparams_search=dann_optuna_oracle)")
    sel = c.get("selection", "last")
    if LEGACY.get(sel, sel) not in RULES:
        raise ConfigError(f"selection={sel!r} is unknown; allowed: {', '.join(RULES)} (README \"Model selection\")")
    name = c["method"].get("name")
    if name not in METHODS:
        raise ConfigError(f"method.name={name!r} is unknown; allowed: {', '.join(sorted(METHODS))}")
    for side in ("source", "target"):
        d = c["pair"].get(side)
        if d not in REGISTRY:
            raise ConfigError(f"pair.{side}={d!r} is not a known domain; known domains: "
                              f"{', '.join(sorted(REGISTRY))} (or declare your own under `domains:`, see README)")
    steps = c["trainer"].get("max_steps")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"trainer.max_steps={steps!r} is invalid: expected an integer >= 1")
    resume = c.get("resume")
    if resume not in (None, "auto") and not isinstance(resume, str):
        raise ConfigError(f"resume={resume!r} is invalid: expected null, 'auto' or a checkpoint path")
