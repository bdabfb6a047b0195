"""The probe: after every validation, the label-free scores of the current model."""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl

from dann.selection.evaluations import append_evaluation, save_predictions
from dann.selection.validators import VALIDATORS, evaluate_views


class SelectionProbe(pl.Callback):
    """After every validation, the label-free scores of the current model -> ``evaluations.jsonl``
    and the loggers (``select/<score>``), and its target predictions -> ``predictions/`` (for
    EnsV, a rule over a set of checkpoints). Runs on global rank 0 only (no collective calls)."""

    def __init__(self, run_dir: str | Path, samples: int = 2000, seed: int = 0):
        self.run_dir, self.samples, self.seed = Path(run_dir), samples, seed

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.datamodule is None:
            return
        m = trainer.callback_metrics
        acc = {k: float(m[f"val/{k[:3]}_acc"]) for k in ("tgt_acc", "src_acc") if f"val/{k[:3]}_acc" in m}
        scores, views = evaluate_views(pl_module, trainer.datamodule, self.samples, self.seed, acc)
        row = {"step": int(trainer.global_step), **scores}
        save_predictions(self.run_dir, row["step"], views.tgt_probs)
        append_evaluation(self.run_dir, row)
        for lg in trainer.loggers:
            lg.log_metrics({f"select/{k}": row[k] for k in VALIDATORS if math.isfinite(row[k])}, step=row["step"])
