"""The base LightningModule every method shares.

It owns the network (feature extractor ``features``, label predictor ``classifier``), SGD with
momentum and the paper's annealed learning rate, evaluation on source and target, logging,
and the finite-loss watch. A method is one subclass in one file plus one yaml in
``conf/method/`` that names it with ``_target_``:

* :meth:`DAMethod.losses` returns ``{name: term}``; the training loss is their sum and every
  term is logged as ``train/<name>`` (and so drawn in the learning curves);
* :meth:`DAMethod.logs` returns more scalars to log (e.g. DANN's ``lambda``);
* the method's hyper-parameters are the keyword-only arguments of its ``__init__`` (their
  defaults are the yaml's); an unknown one is a :class:`~dann.errors.ConfigError` before any
  data loads, and :meth:`DAMethod.check_options` may check their values;
* a method with several updates per batch sets ``automatic_optimization = False``, returns
  one parameter list per optimizer from :meth:`DAMethod.optimized_parameters` and takes its
  steps inside :meth:`losses` with :meth:`DAMethod.update` (Lightning's manual optimization);
  it returns the terms it computed, detached, for the logs;
* a method that starts from another finished run's network (DIRT-T from VADA, SHOT from a
  source-only run) names the methods it accepts in :attr:`DAMethod.start_methods` and takes the
  run folder as its option ``start``: the builder checks that run before any data loads and
  hands its weights to :meth:`DAMethod.load_start`; a second copy of the network (a teacher)
  is built with :mod:`dann.methods.teacher`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Iterable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dann.errors import ConfigError
from dann.methods.schedules import lr_factor, progress
from dann.models import Nets

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
        fused_optimizer: the fused SGD kernel (GPU).
    """

    #: whether training reads target labels (only the train-on-target upper bound does)
    uses_target_labels: bool = False
    #: the methods whose finished runs this one may start from (option ``start``: a run folder)
    start_methods: tuple[str, ...] = ()
    #: whether a start run is required (DIRT-T) or optional (SHOT trains its own source model)
    requires_start: bool = False

    def __init__(self, nets: Nets, num_classes: int, max_steps: int, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, anneal: bool = True, alpha: float = 10.0, beta: float = 0.75,
                 fused_optimizer: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["nets"])
        self._nets = nets  # for methods that build more heads of the same architecture
        # the first non-finite loss (_watch_finite): set here so the per-step read is a plain lookup
        self._nonfinite: tuple[int, dict[str, float]] | None = None
        self._nonfinite_on_device: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None
        self.features: nn.Module = nets.features
        self.classifier: nn.Module = nets.classifier
        #: the domain classifier, for the methods that train one (they set it)
        self.discriminator: nn.Module | None = None
        self.feature_dim = nets.feature_dim
        self.num_classes = num_classes
        #: where the network started from (:meth:`load_start`): None for a fresh network
        self.start_info: dict[str, Any] | None = None
        self.metrics = nn.ModuleDict({
            f"{stage}_{d}": MulticlassAccuracy(num_classes, average="micro")
            for stage in ("val", "test") for d in DOMAINS
        })

    # -- the method's options ------------------------------------------------------------
    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The method's hyper-parameters: keyword-only ``__init__`` arguments of the subclasses."""
        base = set(inspect.signature(DAMethod.__init__).parameters)
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, DAMethod) and "__init__" in vars(klass):
                for name, prm in inspect.signature(klass.__init__).parameters.items():
                    if prm.kind == prm.KEYWORD_ONLY and name not in base:
                        out[name] = prm.default
        return out

    @classmethod
    def validate_options(cls, options: dict[str, Any], where: str = "method") -> None:
        """Refuse unknown options and values of the wrong type; then :meth:`check_options`."""
        defaults = cls.option_defaults()
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{u}' for u in unknown)} for {cls.__name__}; "
                              f"its options: {allowed}")
        for k, v in options.items():
            d = defaults[k]
            if d is None or d is inspect.Parameter.empty or v is None:
                continue
            ok = (isinstance(v, bool) if isinstance(d, bool)
                  else isinstance(v, (int, float)) and not isinstance(v, bool) if isinstance(d, float)
                  else isinstance(v, int) and not isinstance(v, bool) if isinstance(d, int)
                  else isinstance(v, (list, tuple)) if isinstance(d, (list, tuple))
                  else isinstance(v, type(d)))
            if not ok:
                raise ConfigError(f"{where}.{k}={v!r} is invalid: expected a {type(d).__name__} "
                                  f"like the default {d!r}")
        cls.check_options(**{**defaults, **options})

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Check the option values (raise :class:`ConfigError`); all defaults filled in."""

    # -- the schedules -------------------------------------------------------------------
    @property
    def p(self) -> float:
        return progress(self.global_step, self.hparams.max_steps)

    # -- model ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: loss term}`` for one batch ``{src_x, src_y, tgt_x, tgt_y}`` (``tgt_y`` is for
        train-on-target only: every other method must not read it)."""
        raise NotImplementedError

    def logs(self) -> dict[str, float | torch.Tensor]:
        """More scalars for the learning curves (logged as ``train/<name>`` on logging steps)."""
        return {}

    # -- Lightning hooks -----------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        terms = self.losses(batch)
        loss = torch.stack(list(terms.values())).sum()
        self._watch_finite(loss, terms)
        if self._is_log_step():
            # Only on logging steps: self.log costs far more than a toy step, and reading a
            # logged tensor forces a host-device sync on GPU.
            logs = {f"train/{k}": v.detach() for k, v in terms.items()}
            logs["train/loss"] = loss.detach()
            logs["train/lr"] = self._optimizers()[0].param_groups[0]["lr"]
            logs.update({f"train/{k}": v for k, v in self.logs().items()})
            self.log_dict(logs, on_step=True, on_epoch=False)
        if self.automatic_optimization:
            return loss
        # Lightning counts every LightningOptimizer.step as a global step; a batch is one step
        # here (p = step / max_steps), so the updates above used the plain optimizers and this
        # one counted step has no gradient to apply (parameters without .grad are skipped).
        opts = self._optimizers()
        for o in opts:
            o.zero_grad(set_to_none=True)
        opts[0].step()
        for s in self._schedulers():
            s.step()
        return None

    # -- manual optimization (methods with several updates per batch) ----------------------
    def _optimizers(self) -> list[torch.optim.Optimizer]:
        o = self.optimizers()
        return list(o) if isinstance(o, (list, tuple)) else [o]

    def _schedulers(self) -> list[Any]:
        s = self.lr_schedulers()
        return [] if s is None else list(s) if isinstance(s, (list, tuple)) else [s]

    def update(self, loss: torch.Tensor, *which: int) -> None:
        """One manual update: zero every optimizer's grads, backward ``loss``, step optimizers
        ``which`` (default all); the parameters of the others keep their values. (Plain
        optimizer steps: no AMP grad scaling, so manual methods run in fp32 or bf16.)"""
        opts = self._optimizers()
        for o in opts:
            o.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for i in (which or range(len(opts))):
            opts[i].optimizer.step()

    def _watch_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Remember the first step whose loss is not finite; :class:`dann.run.callbacks.FiniteLossGuard`
        reads it every few steps. The loss is the sum of the terms, so it is finite exactly when every
        term is: on CPU one host read of it per step (no device to wait for, and a twentieth of the cost
        of the tensor updates on a small net); elsewhere the sync-free updates of
        :meth:`_watch_finite_on_device`."""
        if loss.device.type != "cpu":
            self._watch_finite_on_device(loss, terms)
        elif self._nonfinite is None and not math.isfinite(loss.item()):
            self._nonfinite = (self.global_step, {"loss": loss.item(), **{k: float(t) for k, t in terms.items()}})

    def _watch_finite_on_device(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """The first non-finite step and its terms, kept on the loss's device without a host sync
        (a step a GPU would otherwise wait for), updated in place."""
        vals = torch.stack([loss.detach(), *(t.detach() for t in terms.values())]).float()
        if self._nonfinite_on_device is None or self._nonfinite_on_device[0].device != vals.device:
            self._nonfinite_on_device = (torch.full((), -1, dtype=torch.long, device=vals.device),
                                         torch.zeros_like(vals), ["loss", *terms])
        step, bad, _ = self._nonfinite_on_device
        first = (step < 0) & ~torch.isfinite(vals).all()
        step.copy_(torch.where(first, self.global_step, step))
        bad.copy_(torch.where(first, vals, bad))

    def first_nonfinite(self) -> tuple[int, dict[str, float]] | None:
        """``(step, {term: value})`` of the first non-finite loss, or None (one host sync)."""
        if self._nonfinite is not None:
            return self._nonfinite
        if self._nonfinite_on_device is None or int(self._nonfinite_on_device[0]) < 0:
            return None
        step, bad, names = self._nonfinite_on_device
        return int(step), dict(zip(names, bad.tolist()))

    def _is_log_step(self) -> bool:
        # Lightning writes step metrics when (step + 1) % log_every_n_steps == 0: log exactly
        # then, so the values written belong to the step they are written at.
        t = self._trainer
        if t is None:
            return True
        step = self.global_step + 1
        return step % max(t.log_every_n_steps, 1) == 0 or step >= self.hparams.max_steps

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

    def optimized_parameters(self) -> list[Iterable[nn.Parameter]]:
        """One parameter list per optimizer: one for automatic optimization (a frozen copy,
        e.g. a teacher, is left out)."""
        return [[p for p in self.parameters() if p.requires_grad]]

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD with momentum (the paper's); a method whose paper used another may override."""
        h = self.hparams
        opt_kw = {"fused": True} if h.fused_optimizer else {"foreach": True}
        return torch.optim.SGD(params, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay, **opt_kw)

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at ``step``: ``1 / (1 + alpha p)^beta`` when annealing."""
        h = self.hparams
        return lr_factor(progress(step, h.max_steps), h.alpha, h.beta) if h.anneal else 1.0

    def configure_optimizers(self) -> Any:
        opts = [self.make_optimizer(ps) for ps in self.optimized_parameters()]
        scheds = [{"scheduler": torch.optim.lr_scheduler.LambdaLR(o, self.lr_factor), "interval": "step"}
                  for o in opts]
        if len(opts) == 1:
            return {"optimizer": opts[0], "lr_scheduler": scheds[0]}
        return opts, scheds

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
        """Fields this method adds to its results record: at least the model-selection rule, and
        where its network started from when it started from another run (``start``)."""
        return {"selection": "last", **({"start": self.start_info} if self.start_info else {})}

    # -- a start from another run's network (method.start) --------------------------------
    def load_start(self, state_dict: dict[str, torch.Tensor], provenance: dict[str, Any]) -> None:
        """Start from another run's network: its ``features`` and ``classifier`` weights (the
        keys of its checkpoint's state_dict), and ``provenance`` (folder, step, method, pair...)
        for the record. The builder (:func:`dann.run.start.load_start`) checks the run first."""
        own = {**{f"features.{k}": v for k, v in self.features.state_dict().items()},
               **{f"classifier.{k}": v for k, v in self.classifier.state_dict().items()}}
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(state_dict[k])
        self.start_info = dict(provenance)

    # -- the data a method may read after training (e.g. SA) ------------------------------
    def domain_split(self, domain: str, split: str):
        """The run's ``split`` ("train" or "test") of ``domain`` ("src" or "tgt"), as the
        datamodule feeds it (``len``, ``.y``, ``.inputs(rows)``)."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            raise RuntimeError(f"{type(self).__name__} reads the pair's data: call trainer.test(model, datamodule=dm)")
        return dm.split(domain, split)

    @torch.no_grad()
    def embed(self, split, idx: np.ndarray | None = None, layer: nn.Module | None = None,
              batch: int = 1024) -> np.ndarray:
        """The input of ``layer`` (default: the feature extractor's output) for ``split``'s
        rows ``idx`` (all when None), in eval mode, as a float64 array."""
        grabbed: list[torch.Tensor] = []
        target = layer if layer is not None else self.classifier
        hook = target.register_forward_pre_hook(lambda mod, inp: grabbed.append(inp[0].detach()))
        was_training = self.training
        self.eval()
        try:
            n = len(split) if idx is None else len(idx)
            for a in range(0, n, batch):
                rows = slice(a, a + batch) if idx is None else torch.as_tensor(idx[a:a + batch], device=split.x.device)
                self(split.inputs(rows).to(self.device))
        finally:
            hook.remove()
            self.train(was_training)
        return torch.cat(grabbed).double().cpu().numpy()

    # -- helpers for subclasses ----------------------------------------------------------
    def joint_pass(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Features and logits of the source then the target inputs in one pass (the paper's nets
        have no batch norm, so the domains do not interact), and the number of source rows."""
        f = self.features(torch.cat([batch["src_x"], batch["tgt_x"]]))
        return f, self.classifier(f), len(batch["src_x"])

    def aligned_pass(self, batch: dict[str, torch.Tensor], layer: str
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(z, logits, n_src)`` of one joint pass, ``z`` the representation ``layer`` names:
        ``features`` (the feature extractor's output), ``hidden`` (the label predictor's last
        hidden layer, the papers' fc7: its input when it has no hidden layer) or ``logits``."""
        f = self.features(torch.cat([batch["src_x"], batch["tgt_x"]]))
        if layer == "hidden" and isinstance(self.classifier, nn.Sequential) and len(self.classifier) > 1:
            h = self.classifier[:-1](f)
            return h, self.classifier[-1](h), len(batch["src_x"])
        logits = self.classifier(f)
        return (logits if layer == "logits" else f), logits, len(batch["src_x"])

    def source_ce(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self(batch["src_x"]), batch["src_y"])
