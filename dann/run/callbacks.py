"""Callbacks that keep long sweeps safe: a non-finite-loss guard, a watch for a classifier that
collapses to chance, RNG state in checkpoints, and a checkpoint on SIGTERM/SIGINT so a
pre-empted run resumes where it stopped."""

from __future__ import annotations

import logging
import math
import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dann.run.checkpoints import SaveConfig
from dann.run.progress import RunLog, build_progress
from dann.selection.probe import SelectionProbe

LAST_CKPT = "last.ckpt"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT arrived; a checkpoint of the last finished step was written."""


class FiniteLossGuard(pl.Callback):
    """Stop with :class:`NonFiniteLossError` naming the first bad step and its loss terms.

    The method records the first non-finite step on the device (no host sync per step, see
    ``DAMethod._watch_finite``); this callback reads it every ``check_every`` steps and on every
    checkpoint step *before* the checkpoint callback runs, so no checkpoint ever holds weights
    that a non-finite loss has touched: the last checkpoint on disk is the last good one.
    """

    def __init__(self, check_every: int, ckpt_every: int, ckpt_dir: Path):
        self.check_every, self.ckpt_every, self.ckpt_dir = max(check_every, 1), ckpt_every, Path(ckpt_dir)

    def check(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        bad = module.first_nonfinite()
        if bad is not None:
            step, terms = bad
            last = self.ckpt_dir / LAST_CKPT
            kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint had been written yet"
            raise NonFiniteLossError(
                f"non-finite loss at step {step}: " + ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
                + f"; training stopped, {kept}. Lower optim.lr or check the inputs of this pair.")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        s = trainer.global_step
        if s % self.check_every == 0 or s % self.ckpt_every == 0 or s >= trainer.max_steps or signalled(trainer):
            self.check(trainer, module)


class CollapseWatch(pl.Callback):
    """Flag a run whose label classifier falls back to chance after it had learnt, for good.

    DANN's adversarial game can diverge late in training: a loss spike kills the classifier's
    ReLUs and its source loss sits at ln(K) for good. The run still finishes, so nothing else
    would say so. On logging steps this reads ``train/cls`` (no extra host sync: logging reads it
    anyway); once it has been below ``learnt`` x ln(K), a stretch of ``patience`` logged values in
    a row at or above ``chance`` x ln(K), or such a stretch still going when training ends, is a
    collapse: its first step is kept as :attr:`collapsed_at_step` (it goes into the results
    record) and a warning names it. A single spike that training recovers from is not one.
    """

    def __init__(self, num_classes: int, learnt: float = 0.5, chance: float = 0.9, patience: int = 5):
        self.ln_k, self.learnt, self.chance, self.patience = math.log(max(num_classes, 2)), learnt, chance, patience
        self.best: float | None = None
        self.collapsed_at_step: int | None = None
        self.streak: list[int] = []  # steps of the current run of logged values at chance

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "collapsed_at_step": self.collapsed_at_step, "streak": self.streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.collapsed_at_step = state.get("best"), state.get("collapsed_at_step")
        self.streak = list(state.get("streak", []))

    def observe(self, step: int, cls_loss: float) -> None:
        """One logged value of the label loss, at ``step``."""
        if self.collapsed_at_step is not None:
            return
        self.best = cls_loss if self.best is None else min(self.best, cls_loss)
        if self.best <= self.learnt * self.ln_k and cls_loss >= self.chance * self.ln_k:
            self.streak.append(step)
            if len(self.streak) >= self.patience:
                self._flag(cls_loss)
        else:
            self.streak = []

    def finish(self, last_loss: float | None = None) -> None:
        """Training ended: a stretch at chance still going is a collapse, however short."""
        if self.collapsed_at_step is None and self.streak:
            self._flag(last_loss)

    def _flag(self, v: float | None) -> None:
        self.collapsed_at_step = self.streak[0]
        logging.getLogger(__name__).warning(
            "the label classifier collapsed to chance at step %d: train/cls %s (ln K = %.3f) for %d logged steps "
            "in a row after it had reached %.3f. The final accuracy is not that of a trained model; the record says "
            "collapsed_at_step. Try another seed, a lower optim.lr, or +trainer.gradient_clip_val=...",
            self.collapsed_at_step, "?" if v is None else f"{v:.3f}", self.ln_k, len(self.streak), self.best)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1):
            return  # only where the step just logged (global_step has moved past it)
        v = trainer.callback_metrics.get("train/cls")
        if v is not None:
            self.observe(int(trainer.global_step), float(v))

    def on_train_end(self, trainer, module) -> None:
        v = trainer.callback_metrics.get("train/cls")
        self.finish(None if v is None else float(v))


class EvaluateAtEnd(pl.Callback):
    """Make the last step an evaluation step, whatever ``trainer.val_check_interval`` is.

    Lightning evaluates every ``val_check_interval`` steps only, so a run shorter than that (or
    not a multiple of it) ended with no evaluation: no ``evaluations.jsonl``, nothing for the
    selection rules, an empty learning curve. Asking the loop to stop after the last step makes
    Lightning evaluate there, as it does for early stopping; when the last step is an evaluation
    step anyway it evaluates once, as before, so the evaluation steps of those runs do not change.
    """

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` (and, with ``checkpoint.keep_all``, ``step=NNNNNN.ckpt``) every
    ``every_n_train_steps`` steps **and at the final step**: Lightning's callback saves only at
    multiples of the interval, so a 1,500-step run with checkpoints every 1,000 steps would
    leave the step-1,000 weights beside a record of step 1,500."""

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_global_step_saved:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)


class RNGState(pl.Callback):
    """Save the global RNG states in each checkpoint and restore them when training resumes,
    so dropout masks after a resume are those of an uninterrupted run."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:])}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state

    def on_train_start(self, trainer, module) -> None:
        s, self._pending = self._pending, None
        if not s:
            return
        torch.set_rng_state(s["torch"])
        random.setstate(s["python"])
        np.random.set_state((s["numpy"][0], np.array(s["numpy"][1], dtype=np.uint32), *s["numpy"][2:]))
        if "cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])


def signalled(trainer: pl.Trainer) -> bool:
    """Whether SIGTERM (seen by Lightning), SIGINT or the job manager's pre-emption signal (seen by
    :class:`SaveOnSignal`) arrived."""
    return bool(getattr(trainer, "received_sigterm", False)) or any(
        isinstance(c, SaveOnSignal) and (c.sigint or c.preempted is not None) for c in trainer.callbacks)


def preempt_signal() -> signal.Signals | None:
    """The signal a job manager sends before the time limit or a pre-emption, when it has set a
    Python handler for it: submitit's USR2 (``SUBMITIT_PREEMPT_SIGNAL``) under hydra/launcher=slurm."""
    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    return sig if sig is not None and callable(signal.getsignal(sig)) else None


class SaveOnSignal(pl.Callback):
    """On SIGTERM (pre-emption, ``scancel``, SLURM time limit) or SIGINT (Ctrl-C), finish the
    current step, write ``last.ckpt`` and stop. Lightning raises ``SIGTERMException`` after the
    step for SIGTERM and this callback saves then; for SIGINT it raises :class:`RunInterrupted`
    itself before the next step, instead of Python's KeyboardInterrupt in the middle of an update.

    Under submitit (hydra/launcher=slurm) SLURM sends USR2 ``signal_delay_s`` before the time limit;
    submitit's handler requeues the job and exits at once, in the middle of a step, so the requeued
    job would lose the steps since the last periodic checkpoint. In a single-process run this
    callback holds that signal until the step ends, writes ``last.ckpt``, then calls submitit's
    handler (requeue and exit): the next attempt (``resume=auto``) starts from that very step."""

    def __init__(self, ckpt_dir: Path):
        self.ckpt_dir = Path(ckpt_dir)
        self.sigint = False
        self.preempted: tuple[int, Any] | None = None  # (signal, frame) held until the step ends
        self._old = None
        self._old_preempt: tuple[signal.Signals, Any] | None = None

    def on_train_start(self, trainer, module) -> None:
        self.sigint, self.preempted = False, None
        try:
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
            sig = preempt_signal()
            # DDP: every rank gets the signal, at a different step; a checkpoint is collective. Not held.
            if sig is not None and trainer.world_size == 1:
                self._old_preempt = (sig, signal.signal(sig, self._on_preempt))
        except ValueError:  # not the main thread: leave the signals alone
            self._old = None

    def _on_sigint(self, signum, frame) -> None:
        self.sigint = True

    def _on_preempt(self, signum, frame) -> None:
        self.preempted = (signum, frame)

    def _restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        if self._old_preempt is not None:
            signal.signal(*self._old_preempt)
            self._old_preempt = None

    def _save(self, trainer, module) -> None:
        if module.first_nonfinite() is None:  # never checkpoint weights a NaN has touched
            trainer.save_checkpoint(self.ckpt_dir / LAST_CKPT, weights_only=False)  # the full state: a resume needs the optimizer

    def _hand_over_preemption(self, trainer, module) -> None:
        """Checkpoint this step, then let the job manager's handler requeue the job and exit."""
        handler = self._old_preempt[1] if self._old_preempt else None
        self._restore()
        self._save(trainer, module)
        if callable(handler):
            # submitit runs `scontrol requeue` in a child process, and the requeue sends SIGTERM to
            # every process of the job step, that child included: when it arrives before the child
            # has exited, the requeue "fails" (CalledProcessError, seen under load) though the job
            # was requeued, and the sweep reports an error. The child inherits an ignored SIGTERM.
            old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                handler(*self.preempted)
            finally:
                signal.signal(signal.SIGTERM, old_term)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        # Ctrl-C: stop before the next step; the state is that of the end of the last one.
        if self.sigint:
            self._restore()
            self._save(trainer, module)
            raise RunInterrupted(f"interrupted at step {trainer.global_step}; checkpoint written")
        if self.preempted is not None and self._old_preempt is not None:
            self._hand_over_preemption(trainer, module)

    def on_exception(self, trainer, module, exception) -> None:
        self._restore()
        # Lightning raises SIGTERMException at a step boundary, after the step the signal hit.
        if isinstance(exception, SIGTERMException) and trainer.global_step < trainer.max_steps:
            self._save(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        # the signal came during the last step: requeue all the same (the next attempt only tests)
        if self.preempted is not None and self._old_preempt is not None:
            self._hand_over_preemption(trainer, module)
        self._restore()


def build_callbacks(cfg, out: Path, ckpt_dir: Path, num_classes: int) -> tuple[list[pl.Callback], CollapseWatch]:
    """The callbacks of every run: guards, signal checkpoints, RNG state, periodic checkpoints,
    an evaluation at the last step, the selection probe and the progress display. Returns them
    and the collapse watch (its finding goes in the record)."""
    every = int(cfg.checkpoint.every_n_steps)
    collapse = CollapseWatch(num_classes)
    cbs: list[pl.Callback] = [
        FiniteLossGuard(cfg.trainer.get("log_every_n_steps", 50), every, ckpt_dir),
        collapse,
        SaveOnSignal(ckpt_dir),
        RNGState(),
        SaveConfig(OmegaConf.to_container(cfg, resolve=True)),  # a resume compares it with its own
        # last.ckpt always; with checkpoint.keep_all also step=NNNNNN.ckpt for every checkpointed step
        StepCheckpoint(dirpath=ckpt_dir, filename="step={step:06d}", auto_insert_metric_name=False,
                        every_n_train_steps=every, save_top_k=-1 if cfg.checkpoint.get("keep_all") else 0,
                        save_last=True, enable_version_counter=False),
    ]
    probe = cfg.get("probe") or {}
    if probe.get("enabled", False):
        cbs.append(SelectionProbe(out, samples=int(probe.get("samples", 2000))))
    cbs.append(EvaluateAtEnd())
    cbs.append(RunLog(out / "train.log"))
    progress = build_progress(cfg)
    if progress is not None:
        cbs.append(progress)
    return cbs, collapse
