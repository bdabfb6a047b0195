"""The base LightningModule every method shares.

It owns the network (feature extractor, label predictor, domain classifier), SGD with
momentum and the paper's annealed learning rate, evaluation on source and target, and
logging. A method subclass implements :meth:`DAMethod.losses` and nothing else: the
training loss is the sum of the terms it returns, and each term is logged by name.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dann.models import Nets
from dann.schedules import adaptation_factor, lr_factor, progress

DOMAINS = ("src", "tgt")


class DAMethod(pl.LightningModule):
    """Base class: ``loss = sum(self.losses(batch).values())``.

    Args:
        nets: the pair's network (see :func:`dann.models.build_nets`).
        num_classes: number of labels.
        max_steps: training length; progress ``p = global_step / max_steps`` drives the schedules.
        lr, momentum, weight_decay: SGD settings (the paper: 0.01, 0.9, 0).
        anneal: use ``mu_p = mu0 / (1 + alpha p)^beta``; off for the paper's MNIST<->SVHN pairs.
        alpha, beta: annealing constants (10, 0.75).
        gamma: constant of the adaptation factor ``lambda_p`` (10).
    """

    #: whether training reads target labels (only the train-on-target upper bound does)
    uses_target_labels: bool = False
    #: whether training uses the domain classifier (DANN)
    uses_discriminator: bool = False

    def __init__(self, nets: Nets, num_classes: int, max_steps: int, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, anneal: bool = True, alpha: float = 10.0, beta: float = 0.75,
                 gamma: float = 10.0, fused_optimizer: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["nets"])
        self.features: nn.Module = nets.features
        self.classifier: nn.Module = nets.classifier
        self.discriminator: nn.Module | None = nets.discriminator if self.uses_discriminator else None
        self.metrics = nn.ModuleDict({
            f"{stage}_{d}": MulticlassAccuracy(num_classes, average="micro")
            for stage in ("val", "test") for d in DOMAINS
        })

    # -- the schedules -------------------------------------------------------------------
    @property
    def p(self) -> float:
        return progress(self.global_step, self.hparams.max_steps)

    @property
    def lambda_p(self) -> float:
        return adaptation_factor(self.p, self.hparams.gamma)

    # -- model ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- Lightning hooks -----------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.losses(batch)
        loss = torch.stack(list(terms.values())).sum()
        self._watch_finite(loss, terms)
        if self._is_log_step():
            # Only on logging steps: self.log costs far more than a toy step, and reading a
            # logged tensor forces a host-device sync on GPU.
            logs = {f"train/{k}": v.detach() for k, v in terms.items()}
            logs["train/loss"] = loss.detach()
            logs["train/lr"] = self.optimizers().param_groups[0]["lr"]
            if self.uses_discriminator:
                logs["train/lambda"] = self.lambda_p
            logs.update(self.extra_train_logs(batch))
            self.log_dict(logs, on_step=True, on_epoch=False)
        return loss

    def _watch_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Remember the first step whose loss is not finite, on the device: no host sync here;
        :class:`dann.callbacks.FiniteLossGuard` reads it every few steps."""
        vals = torch.stack([loss.detach(), *(t.detach() for t in terms.values())]).float()
        if getattr(self, "_bad_step", None) is None or self._bad_step.device != vals.device:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=vals.device)
            self._bad_vals = torch.zeros_like(vals)
            self._bad_names = ["loss", *terms]
        first = (self._bad_step < 0) & ~torch.isfinite(vals).all()
        self._bad_step = torch.where(first, torch.full_like(self._bad_step, self.global_step), self._bad_step)
        self._bad_vals = torch.where(first, vals, self._bad_vals)

    def first_nonfinite(self) -> tuple[int, dict[str, float]] | None:
        """``(step, {term: value})`` of the first non-finite loss, or None (one host sync)."""
        if getattr(self, "_bad_step", None) is None or int(self._bad_step) < 0:
            return None
        return int(self._bad_step), dict(zip(self._bad_names, self._bad_vals.tolist()))

    def _is_log_step(self) -> bool:
        # Lightning writes step metrics when (step + 1) % log_every_n_steps == 0: log exactly
        # then, so the values written belong to the step they are written at.
        t = self._trainer
        if t is None:
            return True
        step = self.global_step + 1
        return step % max(t.log_every_n_steps, 1) == 0 or step >= self.hparams.max_steps

    def extra_train_logs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """More scalars for the learning curves, computed on logging steps only."""
        return {}

    def _eval_step(self, stage: str, batch, dataloader_idx: int) -> None:
        x, y = batch
        m = self.metrics[f"{stage}_{DOMAINS[dataloader_idx]}"]
        m.update(self(x), y)
        self.log(f"{stage}/{DOMAINS[dataloader_idx]}_acc", m, on_step=False, on_epoch=True,
                 add_dataloader_idx=False, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        opt_kw = {"fused": True} if h.fused_optimizer else {"foreach": True}
        opt = torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay, **opt_kw)
        max_steps = h.max_steps
        if h.anneal:
            fn = lambda step: lr_factor(progress(step, max_steps), h.alpha, h.beta)  # noqa: E731
        else:
            fn = lambda step: 1.0  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Align Lightning's batch counter with the optimizer step before the loops are restored.

        A checkpoint written when Ctrl-C interrupts a step's callbacks counts that batch as not
        completed although its optimizer step was taken; the resumed run would then evaluate
        (``val_check_interval`` counts batches) one step off, at 99, 199, ... Here every batch is
        one optimizer step in one endless epoch, so the batch count is the global step.
        """
        step = checkpoint.get("global_step")
        bp = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        if step is None or not bp:
            return
        for part in ("total", "current"):
            for k in ("ready", "started", "processed", "completed"):
                if k in bp.get(part, {}):
                    bp[part][k] = step

    def record_extras(self) -> dict[str, Any]:
        """Fields this method adds to its results record: at least the model-selection rule."""
        return {"selection": "last_step"}

    # -- helpers for subclasses ----------------------------------------------------------
    def source_ce(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self(batch["src_x"]), batch["src_y"])
