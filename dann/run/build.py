"""The builder: a config (or a finished run's record) -> its datamodule and method.

Training, evaluation (``scripts/evaluate.py``), rescoring (``dann-select``) and t-SNE
(``scripts/tsne.py``) all build a run's parts here, so they are built the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dann.config import CONF_DIR, method_class, method_names, method_options
from dann.data.custom import register_custom_domains
from dann.data.datamodule import DeviceSplit, DomainPairDataModule, harmonise
from dann.data.domains import DataError, Split, get_domain, load_split
from dann.errors import CheckpointError, ConfigError
from dann.methods.base import DAMethod
from dann.models import build_nets
from dann.records import RESULTS_FILE, check_record
from dann.run.checkpoints import fit_problems, load_checkpoint
from dann.run.start import load_start


def build_datamodule(cfg: DictConfig) -> DomainPairDataModule:
    p = cfg.pair
    return DomainPairDataModule(
        source=p.source, target=p.target, root=cfg.data.root, batch_size=cfg.data.batch_size // 2,
        eval_batch_size=cfg.data.eval_batch_size, channels=p.get("channels"), image_size=p.get("image_size"),
        seed=cfg.seed, fit=p.get("fit", "resize"), src_val=cfg.data.get("src_val", 0),
        mean_of=cfg.data.get("mean_of", "pooled"), val_src_samples=(cfg.get("probe") or {}).get("src_test"),
    )


def build_method(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int, start: bool = True) -> DAMethod:
    """The method ``cfg.method`` names (``_target_``) with its options, on the pair's network;
    with ``start``, a method that starts from another run (``method.start``) gets that run's
    weights (:mod:`dann.run.start`); without, the caller loads the weights (a finished run's)."""
    m = cfg.model
    nets = build_nets(m.arch, input_shape, num_classes, hidden=m.get("hidden", 15), dropout=m.get("dropout", 0.5))
    o = cfg.optim
    method = OmegaConf.to_container(cfg.method, resolve=True)
    cls = method_class(method)
    options = method_options(method)
    if "_target_" not in method:  # a record written before methods were named by class
        options = {k: v for k, v in options.items() if k in cls.option_defaults()}
    model = cls(nets, num_classes=num_classes, max_steps=cfg.trainer.max_steps, lr=o.lr, momentum=o.momentum,
                weight_decay=o.weight_decay, anneal=o.anneal, alpha=o.alpha, beta=o.beta,
                fused_optimizer=o.get("fused", False), **options)
    if start:
        load_start(model, OmegaConf.to_container(cfg, resolve=True))
    return model


#: what reading a run folder someone sent can raise, each with a message naming the file and what
#: is wrong: the scripts print it as one line
RECEIVED_ERRORS = (KeyError, ValueError, OSError, DataError)


def run_record(run_dir: Path) -> dict[str, Any]:
    """A finished run's results record, checked (:func:`dann.records.check_record`);
    FileNotFoundError if it or the final checkpoint is missing, ValueError if it is not a record."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: no {RESULTS_FILE} (give the folder of a finished run)")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt} not found: this needs the run's final checkpoint (checkpoint.keep=true)")
    try:
        rec = json.loads((run_dir / RESULTS_FILE).read_text())
        check_record(rec)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{run_dir / RESULTS_FILE} is not a usable record: {e}") from None
    return rec


def known_method_targets() -> set[str]:
    """The method classes this dann knows: the ``_target_`` of each ``conf/method/*.yaml``."""
    return {str(OmegaConf.load(p).get("_target_")) for p in Path(CONF_DIR, "method").glob("*.yaml")}


def _interpolation(node: Any, key: str = "") -> str | None:
    """The first key under ``node`` whose string holds ``${`` (an OmegaConf interpolation), or None."""
    if isinstance(node, dict):
        return next((k for k2, v in node.items() if (k := _interpolation(v, f"{key}.{k2}" if key else str(k2)))), None)
    if isinstance(node, list):
        return next((k for i, v in enumerate(node) if (k := _interpolation(v, f"{key}[{i}]"))), None)
    return key if isinstance(node, str) and "${" in node else None


def received_config(rec: dict[str, Any], where: Any) -> DictConfig:
    """A record's config as a DictConfig, checked before anything in it is used: no ``${...}``
    (a record is written resolved: OmegaConf would resolve one when it is read, e.g.
    ``${oc.env:...}``), and a method class this dann knows (``_target_`` is imported: only a
    class of ``conf/method/*.yaml`` is, never one a file names). ConfigError naming the key."""
    config = rec.get("config")
    if not isinstance(config, dict) or not config:
        raise ConfigError(f"{where}: the record holds no config to rebuild the run from")
    key = _interpolation(config)
    if key:
        raise ConfigError(f"{where}: config.{key} holds an interpolation ${{...}}; records are written resolved, so "
                          f"this one was not written by dann-train, and it is not resolved here")
    method = config.get("method") if isinstance(config.get("method"), dict) else {}
    target, name = method.get("_target_"), method.get("name")
    if target is not None and str(target) not in known_method_targets():
        raise ConfigError(f"{where}: method._target_={target!r} is not a method class of this dann (those of "
                          f"conf/method/*.yaml); a record's class is imported only then. For a method of your "
                          f"own, put its yaml in conf/method/")
    if target is None and name not in method_names():
        raise ConfigError(f"{where}: method.name={name!r} is not a method of this dann; known: "
                          f"{', '.join(method_names())}")
    return OmegaConf.create(config)


def load_run(run_dir: Path, root: Path | None = None, rec: dict[str, Any] | None = None
             ) -> tuple[dict[str, Any], Any, Any]:
    """A finished run's (record, datamodule set up for test, model with its final weights):
    the run's own config (:func:`received_config`; its custom domains registered) rebuilds both.
    ``root``: the data root to read the domains from, else ``$DANN_DATA_DIR`` or ~/.cache/dann:
    never the record's ``data.root``, a folder of the machine that wrote it (a cache would be
    created there). ``rec``: the record, if already read with :func:`run_record`."""
    rec = rec if rec is not None else run_record(run_dir)
    ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    full = load_checkpoint(ckpt)  # refuses a file that would run code; read before any data loads
    if rec.get("steps") is not None and full.get("global_step") != rec["steps"]:
        raise ValueError(f"{ckpt} holds the weights of step {full.get('global_step')}, but the record "
                         f"(results.json) reports step {rec['steps']}: its accuracies are not this network's; "
                         f"retrain the run, or use a run whose final checkpoint was kept")
    cfg = received_config(rec, Path(run_dir) / RESULTS_FILE)
    with open_dict(cfg):
        cfg.setdefault("data", {})
        cfg.data.root = str(root) if root is not None else None
    register_custom_domains(cfg.get("domains"))
    dm = build_datamodule(cfg)
    dm.setup("test")
    model = build_method(cfg, dm.input_shape, dm.num_classes, start=False)  # its own final weights, below
    state = full["state_dict"]
    problems = fit_problems(model, state)
    if problems:
        raise CheckpointError(f"{ckpt} does not fit the network its record describes (method {cfg.method.name}, "
                              f"model.arch {cfg.model.arch}): " + "; ".join(problems) + ". It was written by another "
                              f"run or another version of dann")
    model.load_state_dict(state)
    model.eval()
    return rec, dm, model


def domain_split(dm, domain: str, split: str = "test"):
    """Split ``split`` (train | test | all) of ``domain`` as the run ``dm`` belongs to feeds its
    network: the same channels, size and fit, minus the run's mean (not the domain's own)."""
    d = get_domain(domain)  # an unknown name: KeyError listing the registered domains
    if d.num_classes != dm.num_classes:
        raise ValueError(f"domain {domain} has {d.num_classes} classes; the run's network predicts "
                         f"{dm.num_classes} ({dm.source} -> {dm.target})")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split={split!r}: allowed train, test, all")
    parts = [load_split(domain, s, dm.root) for s in (("train", "test") if split == "all" else (split,))]
    s = Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
    x = harmonise(s.x, dm.channels, dm.image_size, fit=dm.fit)
    if tuple(x.shape[1:]) != tuple(dm.input_shape):
        raise ValueError(f"domain {domain}'s inputs are {tuple(x.shape[1:])}, the network takes "
                         f"{tuple(dm.input_shape)}: this run's pair does not set channels/image_size to convert them")
    return DeviceSplit(x, s.y, dm.src_test.mean)
