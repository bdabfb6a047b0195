"""``train(cfg)``: compose data, network and method from a config, fit, test, record.

The CLI (``dann-train``), the tests and the sweeps all call this one function.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dann.callbacks import LAST_CKPT, CollapseWatch, FiniteLossGuard, RNGState, SaveOnSignal, signalled
from dann.config import validate
from dann.data import DomainPairDataModule
from dann.data.custom import register_custom_domains
from dann.loggers import build_loggers, finish_wandb, merge_csv, set_aside_csv
from dann.methods import METHODS, DAMethod
from dann.models import build_nets
from dann.pool import device_slot, pool_size
from dann.results import git_commit, write_record
from dann.speed import apply_speed, speed_options
from dann.selection import SelectionProbe, final_scores, read_evaluations, select

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "two_moons"
# conf/ sits beside the package in the repository (install with `pip install -e .`).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def build_datamodule(cfg: DictConfig) -> DomainPairDataModule:
    p = cfg.pair
    return DomainPairDataModule(
        source=p.source, target=p.target, root=cfg.data.root, batch_size=cfg.data.batch_size // 2,
        eval_batch_size=cfg.data.eval_batch_size, channels=p.get("channels"), image_size=p.get("image_size"),
        seed=cfg.seed, fit=p.get("fit", "resize"), src_val=cfg.data.get("src_val", 0),
        mean_of=cfg.data.get("mean_of", "pooled"),
    )


def build_method(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> DAMethod:
    m = cfg.model
    nets = build_nets(m.arch, input_shape, num_classes, hidden=m.get("hidden", 15), dropout=m.get("dropout", 0.5))
    o = cfg.optim
    # method-specific options (e.g. SA's sa_dim): every key of conf/method/<name>.yaml but these two
    extra = {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items() if k not in ("name", "gamma")}
    return METHODS[cfg.method.name](
        nets, num_classes=num_classes, max_steps=cfg.trainer.max_steps, lr=o.lr, momentum=o.momentum,
        weight_decay=o.weight_decay, anneal=o.anneal, alpha=o.alpha, beta=o.beta,
        gamma=cfg.method.get("gamma", 10.0), fused_optimizer=o.get("fused", False), **extra,
    )


def resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    """``resume=auto``: the run dir's ``checkpoints/last.ckpt`` if it exists; a path: that file."""
    r = cfg.get("resume")
    if r is None:
        return None
    if r == "auto":
        last = ckpt_dir / LAST_CKPT
        return str(last) if last.exists() else None
    if not Path(r).is_file():
        raise FileNotFoundError(f"resume={r!r}: no such checkpoint file")
    return str(r)


def _record(cfg: DictConfig, status: str, steps: int, metrics: dict[str, float], t0: float, commit: str | None,
            **extra: Any) -> dict:
    return {
        "pair": cfg.pair.name, "method": cfg.method.name, "seed": int(cfg.seed), "status": status,
        "source": cfg.pair.source, "target": cfg.pair.target, "selection": "last_step",
        "config": OmegaConf.to_container(cfg, resolve=True), "git_commit": commit,
        "steps": int(steps), "metrics": metrics, "wall_time_s": round(time.time() - t0, 3),
        "started_at": datetime.fromtimestamp(t0).isoformat(), "finished_at": datetime.now().isoformat(),
        "host": socket.gethostname(), "pid": os.getpid(), **extra,
    }


def label_free_scores(model: DAMethod, dm: DomainPairDataModule) -> dict[str, float]:
    """Scores that read no target label: the proxy A-distance of the learnt features."""
    from dann.analysis import extract_features, proxy_a_distance

    fs, _ = extract_features(model.features, dm.src_test)
    ft, _ = extract_features(model.features, dm.tgt_test)
    return {"test/pad": proxy_a_distance(fs, ft)}


def selected_model(cfg: DictConfig, out: Path) -> dict[str, Any] | None:
    """What ``selection=RULE`` picks from this run's evaluations (None when it has none)."""
    evals = read_evaluations(out)
    if not evals:
        return None
    try:
        pick = select(evals, cfg.get("selection", "last"), int((cfg.get("probe") or {}).get("last_k", 5)))
    except ValueError as e:  # e.g. a source-validation rule with data.src_val=0
        log.warning("selection=%s: %s", cfg.get("selection"), e)
        return None
    return {"rule": pick.rule, "tgt_acc": pick.tgt_acc, "step": pick.step, "oracle": pick.oracle}


def save_figures(cfg: DictConfig, model: DAMethod, dm: DomainPairDataModule, out: Path) -> dict[str, Path]:
    """Learning curves for every run; decision boundaries for 2-D pairs."""
    from dann.analysis import save_learning_curves

    figs: dict[str, Path] = {}
    merge_csv(out)
    if (out / "metrics.csv").exists():
        p = save_learning_curves(out / "metrics.csv", out / "learning_curves.png",
                                 title=f"{cfg.method.name} on {cfg.pair.name}, seed {cfg.seed}")
        if p:
            figs["learning_curves"] = p
    if dm.src_train.x.dim() == 2 and dm.src_train.x.shape[1] == 2:
        from dann.plots import save_decision_boundary

        figs["decision_boundary"] = save_decision_boundary(model, dm, out / "decision_boundary.png",
                                                           title=f"{cfg.method.name} on {cfg.pair.name}")
    return figs


def log_to_wandb(record: dict[str, Any], figures: dict[str, Path]) -> None:
    """Summary values W&B's tables and grouping need, and the figures as images."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is None:
        return
    wandb.run.summary.update({**record["metrics"], "steps": record["steps"], "wall_time_s": record["wall_time_s"],
                              "status": record["status"], "selection": record["selection"]})
    if figures:
        wandb.log({f"figures/{k}": wandb.Image(str(v)) for k, v in figures.items()})


def train(cfg: DictConfig, callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Train one run described by ``cfg``; write ``results.json`` in ``cfg.output_dir``.

    Returns the results record (its ``metrics`` hold ``test/src_acc`` and ``test/tgt_acc``).
    A run that fails (non-finite loss, error) or is interrupted (SIGTERM/SIGINT) still writes
    its record, with ``status`` "failed" or "interrupted", then re-raises.
    """
    t0 = time.time()
    commit = git_commit()  # of the code the run starts with (the tree may move on during a long run)
    register_custom_domains(cfg.get("domains"))
    validate(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    ckpt_path = resume_path(cfg, ckpt_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=False)
    dm = build_datamodule(cfg)
    dm.prepare()
    model = build_method(cfg, dm.input_shape, dm.num_classes)
    apply_speed(model, **speed_options(cfg))
    every = int(cfg.checkpoint.every_n_steps)
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    collapse = CollapseWatch(dm.num_classes)
    cbs = [
        FiniteLossGuard(tcfg.get("log_every_n_steps", 50), every, ckpt_dir),
        collapse,
        SaveOnSignal(ckpt_dir),
        RNGState(),
        # last.ckpt always; with checkpoint.keep_all also step=NNNNNN.ckpt for every checkpointed step
        ModelCheckpoint(dirpath=ckpt_dir, filename="step={step:06d}", auto_insert_metric_name=False,
                        every_n_train_steps=every, save_top_k=-1 if cfg.checkpoint.get("keep_all") else 0,
                        save_last=True, enable_version_counter=False),
        *(callbacks or []),
    ]
    probe = cfg.get("probe") or {}
    if probe.get("enabled", False):
        cbs.append(SelectionProbe(out, samples=int(probe.get("samples", 2000))))
    if ckpt_path:
        set_aside_csv(out)
    trainer = pl.Trainer(**tcfg, logger=build_loggers(cfg, out), default_root_dir=str(out), callbacks=cbs)
    steps = lambda: int(trainer.global_step)  # noqa: E731
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        # one dict per evaluation dataloader (source, target): merge them
        metrics = {k: float(v) for d in trainer.test(model, datamodule=dm, verbose=False) for k, v in d.items()}
        selected = None
        if trainer.is_global_zero:
            metrics.update(label_free_scores(model, dm))
            metrics.update(final_scores(read_evaluations(out)))
            selected = selected_model(cfg, out)
        record = _record(cfg, "finished", steps(), metrics, t0, commit, device=str(dm.src_train.x.device),
                         resumed_from=ckpt_path, selected=selected, collapsed_at_step=collapse.collapsed_at_step,
                         **model.record_extras())
        if trainer.is_global_zero:
            write_record(out, record)
            if not cfg.checkpoint.keep:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
            figures = save_figures(cfg, model, dm, out)
            log_to_wandb(record, figures)
            log.info("%s on %s seed %d: src %.4f tgt %.4f (%.1f s)", cfg.method.name, cfg.pair.name, cfg.seed,
                     metrics.get("test/src_acc", float("nan")), metrics.get("test/tgt_acc", float("nan")),
                     record["wall_time_s"])
        return record
    except BaseException as e:
        # Lightning turns SIGINT into sys.exit(1): ask the signal callback what really happened.
        interrupted = isinstance(e, (SIGTERMException, KeyboardInterrupt)) or signalled(trainer)
        status = "interrupted" if interrupted else "failed"
        if trainer.is_global_zero:
            last = ckpt_dir / LAST_CKPT
            write_record(out, _record(cfg, status, steps(), {}, t0, commit, error=f"{type(e).__name__}: {e}",
                                      last_checkpoint=str(last) if last.exists() else None,
                                      resumed_from=ckpt_path, **model.record_extras()))
        log.error("%s on %s seed %d %s at step %d: %s", cfg.method.name, cfg.pair.name, cfg.seed, status,
                  steps(), e)
        raise
    finally:
        merge_csv(out)
        finish_wandb()


OmegaConf.register_new_resolver("dann_pool_size", pool_size, replace=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and "Joblib" in str(hc.launcher.get("_target_", "")):
        # hydra/launcher=gpus: take a free device slot for this job's whole life
        n = pool_size(cfg.pool.per_gpu, cfg.pool.cpu_jobs)
        with device_slot(Path(hc.sweep.dir) / ".slots", n) as slot:
            if torch.cuda.is_available():
                cfg.trainer.accelerator, cfg.trainer.devices = "gpu", [slot // int(cfg.pool.per_gpu)]
            else:
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
            record = train(cfg)
    else:
        record = train(cfg)
    return record["metrics"].get(cfg.get("objective", "test/src_acc"), float("nan"))


def cli() -> None:
    """``dann-train``: with no arguments, the default experiment (two moons, source-only vs DANN)."""
    if len(sys.argv) == 1:
        sys.argv.append(f"experiment={DEFAULT_EXPERIMENT}")
    main()


if __name__ == "__main__":
    cli()
