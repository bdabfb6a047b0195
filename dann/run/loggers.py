"""Loggers: a CSV logger always, and W&B that never asks a new user to log in."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger


def wandb_mode(requested: str | None = None) -> str:
    """``requested`` if given; else ``$WANDB_MODE``; else online if the user has credentials
    (``$WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc); else offline."""
    if requested:
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"a.b.c": value}`` (what W&B's grouping and plots want)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.method.name}-{cfg.pair.name}-{cfg.seed}"


def run_tags(cfg: DictConfig) -> list[str]:
    """W&B tags: pair and method, then the protocol variants a dashboard filters on (the domains,
    their fit, the training length, and the selection rule when it is not the last step)."""
    p = cfg.pair
    tags = [f"pair:{p.name}", f"method:{cfg.method.name}", f"source:{p.source}", f"target:{p.target}",
            f"steps:{cfg.trainer.max_steps}"]
    if p.get("fit"):
        tags.append(f"fit:{p.fit}")
    if cfg.get("selection", "last") not in ("last", "last_step"):
        tags.append(f"selection:{cfg.selection}")
    return tags


def build_loggers(cfg: DictConfig, output_dir: Path) -> list[Logger]:
    lc = cfg.logger
    loggers: list[Logger] = []
    if lc.get("csv", True):
        loggers.append(CSVLogger(save_dir=str(output_dir), name="", version=""))
    w = lc.get("wandb")
    if w and w.get("enabled", False):
        from pytorch_lightning.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        if os.environ.get("WANDB_MODE") == "":  # wandb refuses an empty mode whatever `mode=` says
            del os.environ["WANDB_MODE"]
        tags = run_tags(cfg) + list(w.get("tags") or [])
        wl = WandbLogger(
            project=w.project, entity=w.get("entity"), name=run_name(cfg), group=w.get("group"),
            job_type=cfg.method.name, tags=tags, mode=wandb_mode(w.get("mode")), save_dir=str(output_dir),
            config=flat_config(cfg),
        )
        # Lightning always passes `anonymous` to wandb.init (None when not asked for), and wandb
        # then warns on every run that the setting has no effect: pass nothing instead.
        init = getattr(wl, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)
        # The run's config is the resolved Hydra config above; Lightning would add the method's
        # __init__ arguments beside it, undotted (gamma, lr, num_classes), which a reader of the run
        # (dann-table --wandb-dir) cannot tell from the config's own keys.
        wl.log_hyperparams = lambda params, *args, **kwargs: None
        loggers.append(wl)
    return loggers


def wandb_summary(record: dict[str, Any], figures: dict[str, Path]) -> None:
    """Summary values W&B's tables and grouping need, and the figures as images."""
    import sys

    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is None:
        return
    wandb.run.summary.update({**record["metrics"], "steps": record["steps"], "wall_time_s": record["wall_time_s"],
                              "status": record["status"], "selection": record["selection"]})
    if figures:
        wandb.log({f"figures/{k}": wandb.Image(str(v)) for k, v in figures.items()})


def finish_wandb() -> None:
    """Close the current W&B run, if any (each job of a multirun is its own run)."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


PREVIOUS_CSV = "metrics.before_resume.csv"


def set_aside_csv(run_dir: Path) -> None:
    """Before a resume: keep the curve logged so far (Lightning's CSV logger would erase it)."""
    cur, prev = Path(run_dir) / "metrics.csv", Path(run_dir) / PREVIOUS_CSV
    if cur.exists():
        if prev.exists():  # a second resume: fold the earlier parts in first
            merge_csv(run_dir)
        os.replace(cur, prev)


def merge_csv(run_dir: Path) -> None:
    """After a resumed run: one ``metrics.csv`` with the rows of every attempt, in step order;
    rows of an earlier attempt past the step it resumed from (work that was redone) are dropped."""
    import csv

    from dann.records import atomic_write_text

    cur, prev = Path(run_dir) / "metrics.csv", Path(run_dir) / PREVIOUS_CSV
    if not prev.exists():
        return
    old = list(csv.DictReader(prev.open(newline="")))
    new = list(csv.DictReader(cur.open(newline=""))) if cur.exists() else []
    first_new = min((int(r["step"]) for r in new if r.get("step")), default=None)
    if first_new is not None:
        old = [r for r in old if r.get("step") and int(r["step"]) < first_new]
    keys = list(dict.fromkeys(k for r in old + new for k in r))
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(old + new)
    atomic_write_text(cur, buf.getvalue())
    prev.unlink()
