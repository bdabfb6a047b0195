"""``train(cfg)``: compose a run from its config, fit, test, record.

The CLI (``dann-train``), the tests and the sweeps all call this one function. It composes
(:mod:`dann.run.build`), fits and tests with Lightning, and writes the record; everything
else it calls by name: the callbacks (:func:`dann.run.callbacks.build_callbacks`), the
loggers, the final label-free scores, the figures and the W&B summary.
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
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dann.config import CONF_DIR, evaluation_interval, validate
from dann.data.custom import register_custom_domains
from dann.errors import CheckpointError, ResumeError
from dann.records import git_commit, write_record
from dann.report.features import pad_score
from dann.report.figures import save_run_figures
from dann.run.build import build_datamodule, build_method
from dann.run.callbacks import LAST_CKPT, build_callbacks, signalled
from dann.run.checkpoints import SafeCheckpointIO
from dann.run.guard import USER_ERRORS, chance_flag, check_data_root, exit_cleanly, lock_run_dir, unlock_run_dir
from dann.run.guard import DivergenceWatch, check_network, is_user_error, make_run_dir, save_hydra_files
from dann.run.launch import concurrent_jobs, in_device_slot, pool_size
from dann.run.overrides import refusal, unknown_keys
from dann.run.resume import check_resume, check_weights, settle_run_dir
from dann.run.loggers import build_loggers, finish_wandb, merge_csv, set_aside_csv, wandb_summary
from dann.run.quiet import quiet_libraries, single_device
from dann.run.search import objective_tag, search_record
from dann.run.speed import apply_speed, speed_options
from dann.run.threads import apply_threads
from dann.selection import final_scores, read_evaluations, selected_model, with_ensv

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "two_moons"
INTERRUPTED_EXIT = 128 + 15  # a shell's status of a process ended by SIGTERM


def resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    """``resume=auto``: the run dir's ``checkpoints/last.ckpt`` if it exists; a path: that file."""
    r = cfg.get("resume")
    if r is None:
        return None
    if r == "auto":
        last = ckpt_dir / LAST_CKPT
        return str(last) if last.exists() else None
    if not Path(r).is_file():
        raise ResumeError(f"resume={r}: no such checkpoint file (resume=auto: this run folder's "
                          f"checkpoints/{LAST_CKPT}, if there is one)")
    return str(r)


def make_record(cfg: DictConfig, status: str, steps: int, metrics: dict[str, float], t0: float, commit: str | None,
                **extra: Any) -> dict:
    """The run's ``results.json`` (README "Record format")."""
    return {
        "pair": cfg.pair.name, "method": cfg.method.name, "seed": int(cfg.seed), "status": status,
        "source": cfg.pair.source, "target": cfg.pair.target, "selection": "last",
        "config": OmegaConf.to_container(cfg, resolve=True), "git_commit": commit,
        "steps": int(steps), "metrics": metrics, "wall_time_s": round(time.time() - t0, 3),
        "started_at": datetime.fromtimestamp(t0).isoformat(), "finished_at": datetime.now().isoformat(),
        "host": socket.gethostname(), "pid": os.getpid(), **extra,
    }


def in_search(cfg: DictConfig) -> dict[str, Any]:
    """``{"search": ...}`` for a trial of a hyper-parameter search (Optuna sweeper), else ``{}``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and "Optuna" in str(HydraConfig.get().sweeper.get("_target_", "")):
        return {"search": search_record(cfg.get("objective", "test/src_acc"))}
    return {}


def train(cfg: DictConfig, callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Train one run described by ``cfg``; write ``results.json`` in ``cfg.output_dir``.

    Returns the results record (its ``metrics`` hold ``test/src_acc`` and ``test/tgt_acc``).
    A run that fails (non-finite loss, an error while its data or model are set up or while it
    trains) or is interrupted (SIGTERM/SIGINT) still writes its record, with ``status`` "failed"
    or "interrupted", then re-raises. What is refused before anything runs writes none and
    leaves the folder's record as it was: an invalid config or data root (ConfigError), a
    folder another process holds (RunDirBusy), a resume from an unsafe checkpoint or one
    written with another config or network (CheckpointError, ResumeError).
    """
    t0 = time.time()
    commit = git_commit()  # of the code the run starts with (the tree may move on during a long run)
    register_custom_domains(cfg.get("domains"))
    validate(cfg)
    # the interval itself, in the record and in the checkpoints' config, not "auto"
    cfg.trainer.val_check_interval = evaluation_interval(cfg.trainer.val_check_interval, cfg.trainer.max_steps)
    check_network(cfg)  # the model takes the pair's inputs, before any data loads
    quiet_libraries(single_device(cfg.trainer))
    threads = apply_threads(cfg.get("threads", "auto"), cfg.model.arch, concurrent_jobs(cfg))
    check_data_root(cfg)
    out = Path(cfg.output_dir)
    make_run_dir(out)  # one line if it cannot be written in (read-only, full)
    ckpt_dir = out / "checkpoints"
    lock = lock_run_dir(out)  # a second process in this folder fails here, naming the holder
    trainer = model = ckpt_path = None
    steps = lambda: int(trainer.global_step) if trainer else 0  # noqa: E731
    try:
        ckpt_path = resume_path(cfg, ckpt_dir)
        if (done := settle_run_dir(cfg, out, ckpt_path)) is not None:
            return done  # resume=auto where this run finished: nothing to do, nothing rewritten
        resumed = check_resume(cfg, ckpt_path)
        save_hydra_files(out, cfg)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        if cfg.get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=False)
        dm = build_datamodule(cfg)
        dm.prepare()
        model = build_method(cfg, dm.input_shape, dm.num_classes)
        check_weights(model, resumed, ckpt_path, cfg)
        apply_speed(model, **speed_options(cfg))
        tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        cbs, collapse = build_callbacks(cfg, out, ckpt_dir, dm.num_classes)
        if ckpt_path:
            set_aside_csv(out)
        diverged = DivergenceWatch(dm.num_classes)
        trainer = pl.Trainer(**tcfg, logger=build_loggers(cfg, out), default_root_dir=str(out),
                             callbacks=[*cbs, diverged, *(callbacks or [])], plugins=[SafeCheckpointIO()])
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        # one dict per evaluation dataloader (source, target): merge them
        metrics = {k: float(v) for d in trainer.test(model, datamodule=dm, verbose=False) for k, v in d.items()}
        selected = None
        if trainer.is_global_zero:
            metrics.update(pad_score(model, dm))
            evals = with_ensv(out, read_evaluations(out))
            metrics.update(final_scores(evals))
            selected = selected_model(evals, cfg.get("selection", "last"), int((cfg.get("probe") or {}).get("last_k", 5)))
        record = make_record(cfg, "finished", steps(), metrics, t0, commit, device=str(dm.src_train.x.device),
                             resumed_from=ckpt_path, selected=selected, collapsed_at_step=collapse.collapsed_at_step,
                             diverged_at_step=diverged.diverged_at_step, threads=threads, **in_search(cfg),
                             **chance_flag(metrics, dm, cfg.optim.lr), **model.record_extras())
        if trainer.is_global_zero:
            write_record(out, record)
            if not cfg.checkpoint.keep:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
            merge_csv(out)
            figures = save_run_figures(model, dm, out, title=f"{cfg.method.name} on {cfg.pair.name}, seed {cfg.seed}")
            wandb_summary(record, figures)
            log.info("%s on %s seed %d: src %.4f tgt %.4f (%.1f s)", cfg.method.name, cfg.pair.name, cfg.seed,
                     metrics.get("test/src_acc", float("nan")), metrics.get("test/tgt_acc", float("nan")),
                     record["wall_time_s"])
            log.info("Run folder: %s", out.resolve())
        return record
    except BaseException as e:
        if isinstance(e, (ResumeError, CheckpointError)) and trainer is None:
            raise  # a refused resume ran nothing: the folder's record (`interrupted`, say) stays as it was
        # Lightning turns SIGINT into sys.exit(1): ask the signal callback what really happened.
        interrupted = isinstance(e, (SIGTERMException, KeyboardInterrupt)) or (trainer is not None and signalled(trainer))
        status = "interrupted" if interrupted else "failed"
        # a failure while the data or the model were set up (trainer None) writes its record too
        if trainer.is_global_zero if trainer else rank_zero_only.rank == 0:
            last = ckpt_dir / LAST_CKPT
            write_record(out, make_record(cfg, status, steps(), {}, t0, commit, error=f"{type(e).__name__}: {e}",
                                          last_checkpoint=str(last) if last.exists() else None,
                                          resumed_from=ckpt_path, **(model.record_extras() if model else {})))
        log.error("%s on %s seed %d %s at step %d: %s", cfg.method.name, cfg.pair.name, cfg.seed, status,
                  steps(), e)
        raise
    finally:
        merge_csv(out)
        finish_wandb()
        unlock_run_dir(out, lock)


OmegaConf.register_new_resolver("dann_pool_size", pool_size, replace=True)
OmegaConf.register_new_resolver("dann_objective_tag", objective_tag, replace=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        record = in_device_slot(cfg, train)
    except (*USER_ERRORS, OSError) as e:
        if is_user_error(e):  # a full disk or a read-only folder too
            exit_cleanly(e)  # one line on stderr and exit 2, unless HYDRA_FULL_ERROR=1 or in a sweep
        raise
    except SystemExit as e:  # Lightning's SIGTERMException carries no code: a stopped run must not exit 0
        raise SystemExit(e.code or INTERRUPTED_EXIT) from e
    return record["metrics"].get(cfg.get("objective", "test/src_acc"), float("nan"))


def cli() -> None:
    """``dann-train``: with no arguments, the default experiment (two moons, source-only vs DANN)."""
    if len(sys.argv) == 1:
        sys.argv.append(f"experiment={DEFAULT_EXPERIMENT}")
    bad = unknown_keys(sys.argv[1:], CONF_DIR)
    if bad and os.environ.get("HYDRA_FULL_ERROR") != "1":
        print(f"dann-train: error: {refusal(bad)}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
