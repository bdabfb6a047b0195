"""``train(cfg)``: compose data, network and method from a config, fit, test, record.

The CLI (``dann-train``), the tests and the sweeps all call this one function.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from dann.data import DomainPairDataModule
from dann.loggers import build_loggers, finish_wandb
from dann.methods import METHODS, DAMethod
from dann.models import build_nets
from dann.results import git_commit, write_record

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "two_moons"
# conf/ sits beside the package in the repository (install with `pip install -e .`).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def build_datamodule(cfg: DictConfig) -> DomainPairDataModule:
    p = cfg.pair
    return DomainPairDataModule(
        source=p.source, target=p.target, root=cfg.data.root, batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size, channels=p.get("channels"), image_size=p.get("image_size"),
        seed=cfg.seed,
    )


def build_method(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> DAMethod:
    m = cfg.model
    nets = build_nets(m.arch, input_shape, num_classes, hidden=m.get("hidden", 15), dropout=m.get("dropout", 0.5))
    o = cfg.optim
    return METHODS[cfg.method.name](
        nets, num_classes=num_classes, max_steps=cfg.trainer.max_steps, lr=o.lr, momentum=o.momentum,
        weight_decay=o.weight_decay, anneal=o.anneal, alpha=o.alpha, beta=o.beta,
        gamma=cfg.method.get("gamma", 10.0), fused_optimizer=o.get("fused", False),
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one run described by ``cfg``; write ``results.json`` in ``cfg.output_dir``.

    Returns the results record (its ``metrics`` hold ``test/src_acc`` and ``test/tgt_acc``).
    """
    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.method.name not in METHODS:
        raise ValueError(f"method.name={cfg.method.name!r} is unknown; allowed: {', '.join(METHODS)}")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=False)
    dm = build_datamodule(cfg)
    dm.prepare()
    model = build_method(cfg, dm.input_shape, dm.num_classes)
    try:
        trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), logger=build_loggers(cfg, out),
                             default_root_dir=str(out), enable_checkpointing=False)
        trainer.fit(model, datamodule=dm)
        # one dict per evaluation dataloader (source, target): merge them
        metrics = {k: float(v) for d in trainer.test(model, datamodule=dm, verbose=False) for k, v in d.items()}
        record = {
            "pair": cfg.pair.name, "method": cfg.method.name, "seed": int(cfg.seed), "status": "finished",
            "source": cfg.pair.source, "target": cfg.pair.target,
            "config": OmegaConf.to_container(cfg, resolve=True), "git_commit": git_commit(),
            "steps": int(trainer.global_step), "metrics": metrics, "wall_time_s": round(time.time() - t0, 3),
            "host": socket.gethostname(), "device": str(dm.src_train.x.device),
        }
        if trainer.is_global_zero:
            write_record(out, record)
            if dm.src_train.x.dim() == 2 and dm.src_train.x.shape[1] == 2:
                from dann.plots import save_decision_boundary

                save_decision_boundary(model, dm, out / "decision_boundary.png",
                                       title=f"{cfg.method.name} on {cfg.pair.name}")
        log.info("%s on %s seed %d: src %.4f tgt %.4f (%.1f s)", cfg.method.name, cfg.pair.name, cfg.seed,
                 metrics.get("test/src_acc", float("nan")), metrics.get("test/tgt_acc", float("nan")),
                 record["wall_time_s"])
        return record
    finally:
        finish_wandb()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    record = train(cfg)
    return record["metrics"].get(cfg.get("objective", "test/src_acc"), float("nan"))


def cli() -> None:
    """``dann-train``: with no arguments, the default experiment (two moons, source-only vs DANN)."""
    if len(sys.argv) == 1:
        sys.argv.append(f"experiment={DEFAULT_EXPERIMENT}")
    main()


if __name__ == "__main__":
    cli()
