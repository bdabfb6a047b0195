"""The config: where it lives, and its validation at startup, one place per group.

``validate(cfg)`` runs before any data is loaded. Every group (pair, model, method, data,
optim, trainer, logger, probe, checkpoint, speed, pool) and the top level are checked: a key
that does not exist is a :class:`ConfigError` naming it and the allowed keys; a value out of
range names the key, the value and what is allowed. A method's options are its class's
keyword-only ``__init__`` arguments (see :class:`dann.methods.base.DAMethod`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from dann.data.datamodule import FITS, MEANS
from dann.data.domains import REGISTRY
from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.models import ARCHS
from dann.selection.rules import LEGACY, check_objective, refresh_rules
from dann.selection.validators import import_validators
from dann.start import read_start

# conf/ sits beside the package in the repository (install with `pip install -e .`).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: weights are float32

__all__ = ["CONF_DIR", "ConfigError", "validate", "method_class", "method_options", "method_names"]


#: the values ``speed.compile`` accepts besides false/true (``true`` means ``default``)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(compile: str | bool | None) -> str | None:
    """Normalise a ``speed.compile`` value to a ``torch.compile`` mode, or None (off)."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "default"
    if isinstance(compile, str) and compile in COMPILE_MODES:
        return compile
    if isinstance(compile, str) and compile.lower() in ("false", "none", "off", "no"):
        return None
    raise ValueError(f"speed.compile={compile!r} is invalid; allowed: false, true (= default), "
                     f"{', '.join(COMPILE_MODES)}")


def method_names() -> list[str]:
    """The methods one can train: ``conf/method/*.yaml``."""
    return sorted(p.stem for p in Path(CONF_DIR, "method").glob("*.yaml"))


def method_class(method: Mapping[str, Any]) -> type[DAMethod]:
    """The class a method config names with ``_target_`` (a record written before ``_target_``
    existed names it by ``name``: then ``conf/method/<name>.yaml`` says which class)."""
    import importlib

    target = method.get("_target_")
    if not target:
        name = method.get("name")
        path = Path(CONF_DIR, "method", f"{name}.yaml")
        if not path.is_file():
            raise ConfigError(f"method.name={name!r} is unknown and method._target_ is not set; "
                              f"known methods: {', '.join(method_names())}")
        target = OmegaConf.load(path).get("_target_")
    mod, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"method._target_={target!r} cannot be imported ({e}); it names the method's class, "
                          f"e.g. dann.methods.dann.DANN") from None
    if not (isinstance(cls, type) and issubclass(cls, DAMethod)):
        raise ConfigError(f"method._target_={target!r} is not a subclass of dann.methods.DAMethod")
    return cls


def check_method_name(method: Mapping[str, Any]) -> None:
    """A built-in class keeps one of its yamls' names (``method.name=dan`` with DANN's class is a
    typo; CDAN's class is both ``cdan`` and ``cdan_e``); a class of your own may carry any name."""
    target, name = method.get("_target_"), method.get("name")
    names = [p.stem for p in Path(CONF_DIR, "method").glob("*.yaml") if OmegaConf.load(p).get("_target_") == target]
    if names and name not in names:
        raise ConfigError(f"method.name={name!r} is not a name of {target}: expected {' or '.join(map(repr, sorted(names)))} "
                          f"(choose a method with method=NAME; known: {', '.join(method_names())})")


def method_options(method: Mapping[str, Any]) -> dict[str, Any]:
    """A method config's hyper-parameters: every key but ``_target_`` and ``name``."""
    return {k: v for k, v in method.items() if k not in ("_target_", "name")}


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
        # a float32 weight update overflows past FLOAT32_MAX: the first step would be a NaN, after the data loads
        _require(0 < self.lr < FLOAT32_MAX, "optim.lr", self.lr,
                 "a learning rate > 0 (the paper: 0.01) and below 3.4e38, past which float32 weights overflow")
        for k in ("weight_decay", "alpha", "beta"):
            _require(math.isfinite(getattr(self, k)), f"optim.{k}", getattr(self, k), "a finite number")
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
    src_test: Any = 2000
    last_k: int = 5

    def check(self) -> None:
        _require(isinstance(self.enabled, bool), "probe.enabled", self.enabled, "true or false")
        _require(isinstance(self.samples, int) and self.samples >= 10, "probe.samples", self.samples,
                 "an integer >= 10")
        _require(isinstance(self.last_k, int) and self.last_k >= 1, "probe.last_k", self.last_k, "an integer >= 1")
        _require(self.src_test is None or (_is_int(self.src_test) and self.src_test >= 1), "probe.src_test",
                 self.src_test, "null (every source test image) or an integer >= 1")


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
    try:
        spec.check()
    except TypeError as e:  # e.g. a string where a number belongs
        raise ConfigError(f"{key}: a value has the wrong type ({e}); given {given}") from None
    return spec


@dataclass
class PairSpec:
    name: str = ""
    source: str = ""
    target: str = ""
    channels: Any = None
    image_size: Any = None
    fit: str = "resize"

    def check(self) -> None:
        for side in ("source", "target"):
            d = getattr(self, side)
            if d not in REGISTRY:
                raise ConfigError(f"pair.{side}={d!r} is not a known domain; known domains: "
                                  f"{', '.join(sorted(REGISTRY))} (or declare your own under `domains:`, see README)")
        _require(self.fit in FITS, "pair.fit", self.fit, f"one of {', '.join(FITS)}")
        for k in ("channels", "image_size"):
            v = getattr(self, k)
            _require(v is None or (_is_int(v) and v >= 1), f"pair.{k}", v, "null or an integer >= 1")


@dataclass
class ModelSpec:
    arch: str = "mnist"
    hidden: int = 15
    dropout: float = 0.5

    def check(self) -> None:
        _require(self.arch in ARCHS, "model.arch", self.arch, f"one of {', '.join(ARCHS)}")
        _require(_is_int(self.hidden) and self.hidden >= 1, "model.hidden", self.hidden, "an integer >= 1")
        _require(0 <= self.dropout < 1, "model.dropout", self.dropout, "a value in [0, 1)")


@dataclass
class WandbSpec:
    enabled: bool = True
    project: str = "dann"
    entity: Any = None
    group: Any = None
    mode: Any = None
    tags: list = field(default_factory=list)

    def check(self) -> None:
        _require(self.mode in (None, "online", "offline", "disabled"), "logger.wandb.mode", self.mode,
                 "null, online, offline or disabled")


@dataclass
class LoggerSpec:
    csv: bool = True
    wandb: Any = None

    def check(self) -> None:
        _typed(WandbSpec, self.wandb, "logger.wandb")


@dataclass
class SpeedSpec:
    compile: Any = False
    channels_last: bool = False
    keep_freed_memory: bool = True

    def check(self) -> None:
        try:
            compile_mode(self.compile)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for k in ("channels_last", "keep_freed_memory"):
            _require(isinstance(getattr(self, k), bool), f"speed.{k}", getattr(self, k), "true or false")


@dataclass
class PoolSpec:
    per_gpu: int = 1
    cpu_jobs: int = 2

    def check(self) -> None:
        for k in ("per_gpu", "cpu_jobs"):
            _require(_is_int(getattr(self, k)) and getattr(self, k) >= 1, f"pool.{k}", getattr(self, k),
                     "an integer >= 1")


TOP_LEVEL = ("seed", "output_dir", "deterministic", "threads", "validator_modules", "objective", "domains", "selection", "probe", "resume", "data",
             "pool", "checkpoint", "optim", "speed", "pair", "method", "model", "trainer", "logger")
GROUPS = {"optim": OptimSpec, "data": DataSpec, "checkpoint": CheckpointSpec, "probe": ProbeSpec, "pair": PairSpec,
          "model": ModelSpec, "logger": LoggerSpec, "speed": SpeedSpec, "pool": PoolSpec}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _trainer_keys() -> set[str]:
    import pytorch_lightning as pl

    return set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "logger", "callbacks",
                                                                         "default_root_dir"}


#: evaluations a run makes with ``trainer.val_check_interval=auto``, and the fewest steps between two
EVALUATIONS_PER_RUN, MIN_EVAL_INTERVAL = 15, 50


def evaluation_interval(value: Any, max_steps: int) -> Any:
    """``trainer.val_check_interval`` as Lightning takes it: ``auto`` becomes ``max_steps / 15``
    steps (rounded up, at least 50), so a run of any length draws a curve and gives the selection
    rules checkpoints to choose from; the paper's 15,000-step runs keep one every 1,000."""
    if value != "auto":
        return value
    return max(MIN_EVAL_INTERVAL, -(-int(max_steps) // EVALUATIONS_PER_RUN))


def validate_trainer(t: Mapping[str, Any]) -> None:
    unknown = sorted(set(t) - _trainer_keys())
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'trainer.{u}' for u in unknown)}: not arguments of "
                          f"pytorch_lightning.Trainer (e.g. trainer.max_steps, trainer.val_check_interval)")
    steps = t.get("max_steps")
    _require(_is_int(steps) and steps >= 1, "trainer.max_steps", steps, "an integer >= 1")
    vci = t.get("val_check_interval")
    _require(vci is None or vci == "auto" or (_is_int(vci) and vci >= 1) or (isinstance(vci, float) and 0 < vci <= 1),
             "trainer.val_check_interval", vci,
             "auto (15 evaluations a run), an integer >= 1 (steps) or a fraction in (0, 1]")
    lg = t.get("log_every_n_steps", 50)
    _require(_is_int(lg) and lg >= 1, "trainer.log_every_n_steps", lg, "an integer >= 1")
    dev = t.get("devices", "auto")
    _require(dev not in (0, [], "0", "", None) and not (_is_int(dev) and dev < -1), "trainer.devices", dev,
             "auto, -1 (all), a number of devices >= 1 or a list of device indices")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first invalid setting of ``cfg`` (no data is touched)."""
    try:
        c = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"the config does not resolve: {e}") from None
    unknown = sorted(set(c) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_LEVEL)} "
                          f"(a group's key is written group.key, e.g. optim.lr)")
    seed = c.get("seed")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r} is invalid: expected an integer in [0, 2**32)")
    for key, spec in GROUPS.items():
        node = c.get(key)
        if node is not None and not isinstance(node, Mapping):
            raise ConfigError(f"{key}={node!r} is invalid: expected the group's keys ({key}.KEY=VALUE)")
        _typed(spec, node, key)
    validate_trainer(c.get("trainer") or {})
    method = c.get("method") or {}
    if not isinstance(method.get("name"), str):
        raise ConfigError(f"method.name={method.get('name')!r} is invalid: expected the method's name")
    method_class(method).validate_options(method_options(method))
    check_method_name(method)
    read_start(method_class(method), c)  # method.start: the run it starts from, checked before data loads
    try:  # validators of your own register before `selection` and `objective` are checked
        import_validators(c.get("validator_modules") or [])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    rules = refresh_rules()
    check_objective(c.get("objective", "test/src_acc"), rules)
    threads = c.get("threads", "auto")
    if threads != "auto" and not (_is_int(threads) and threads >= 1):
        raise ConfigError(f"threads={threads!r} is invalid: expected auto (chosen from the CPUs this run may use) "
                          f"or an integer >= 1")
    sel = c.get("selection", "last")
    if LEGACY.get(sel, sel) not in rules:
        raise ConfigError(f"selection={sel!r} is unknown; allowed: {', '.join(rules)} (README \"Model selection\")")
    resume = c.get("resume")
    if resume not in (None, "auto") and not isinstance(resume, str):
        raise ConfigError(f"resume={resume!r} is invalid: expected null, 'auto' or a checkpoint path")
