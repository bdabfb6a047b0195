"""One progress display for every run, whatever extras are installed.

Lightning picks its Rich bar when ``rich`` is importable and its tqdm bar otherwise: the first
prints nothing to a file until the run ends, the second floods it (a nested validation bar at
every evaluation), and both count epochs, which mean nothing here (a run is one endless epoch of
``trainer.max_steps`` steps). :class:`StepProgress` replaces both:

* in a terminal, one line redrawn in place:
  ``step 1200/15000 (8%) 21.3 steps/s ETA 10:48 loss 0.512``, a short ``evaluating`` while an
  evaluation runs, and one kept line with its accuracies after it;
* anywhere else (a log file, a pipe, SLURM's output file): one plain line every ``every_steps``
  steps or ``every_s`` seconds, whichever comes first, a line per evaluation and a final line.

``trainer.enable_progress_bar=false`` still means no progress at all (see
:func:`dann.run.callbacks.build_callbacks`).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class StepProgress(ProgressBar):
    """Training progress in steps: a bar in a terminal, plain lines elsewhere.

    ``stream``: where to write (default: ``sys.stdout`` at the time of writing, where Hydra's log
    lines go too). ``tty``: force the terminal (True) or the line (False) display; None asks the
    stream. ``label`` prefixes every line (a sweep's job name). In line mode, ``every_steps``
    defaults to a tenth of the run.
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, every_steps: int | None = None,
                 every_s: float = 30.0, redraw_s: float = 0.2, label: str = ""):
        super().__init__()
        self._stream, self._tty_arg, self.every_steps, self.every_s = stream, tty, every_steps, every_s
        self.redraw_s, self.label = redraw_s, label
        self._enabled = True
        self._tty = False
        self._bar_shown = False  # a bar line is on screen, not yet ended by a newline
        self.t0 = self.step0 = self.total = 0
        self._last_t = self._last_step = 0

    # -- what Lightning asks of a progress bar ---------------------------------------------
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args, **kwargs) -> None:
        self._write_line(" ".join(str(a) for a in args))

    # -- writing ---------------------------------------------------------------------------
    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def _write_line(self, text: str) -> None:
        """A line that stays (over the bar, in a terminal)."""
        self.stream.write(("\r\x1b[K" if self._bar_shown else "") + self.label + text + "\n")
        self.stream.flush()
        self._bar_shown = False

    def _draw(self, text: str) -> None:
        """Redraw the bar line in place, cut to the terminal's width so that it never wraps
        (a wrapped line cannot be redrawn with a carriage return)."""
        width = shutil.get_terminal_size((100, 24)).columns
        self.stream.write("\r\x1b[K" + (self.label + text)[:max(width - 1, 20)])
        self.stream.flush()
        self._bar_shown = True

    # -- the text --------------------------------------------------------------------------
    def status(self, trainer, now: float, final: bool = False) -> str:
        s = int(trainer.global_step)
        done, elapsed = s - self.step0, now - self.t0
        rate = done / elapsed if done > 0 and elapsed > 0 else None
        pct = f" ({100 * s // self.total}%)" if self.total > 0 else ""
        text = f"step {s}/{self.total}{pct}"
        text += f" {rate:.1f} steps/s" if rate else " -- steps/s"
        if final:
            text += f", {done} steps in {clock(elapsed)}"
        else:
            text += f" ETA {clock((self.total - s) / rate)}" if rate else " ETA --:--"
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None and math.isfinite(float(loss)):
            text += f" loss {float(loss):.3f}"
        return text

    def evaluation(self, trainer) -> str:
        m = trainer.callback_metrics
        accs = [f"{k.split('/')[1]} {float(m[k]):.4f}" for k in ("val/src_acc", "val/tgt_acc") if k in m]
        return f"step {int(trainer.global_step)}/{self.total}: evaluated" + (", " + ", ".join(accs) if accs else "")

    # -- hooks -----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if not self._enabled:
            return
        isatty = getattr(self.stream, "isatty", None)
        self._tty = self._tty_arg if self._tty_arg is not None else bool(isatty and isatty())
        self.total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else 0
        self.t0 = self._last_t = time.monotonic()
        self.step0 = self._last_step = int(trainer.global_step)
        if self.every_steps is None:
            self.every_steps = max(1, (self.total - self.step0) // 10)
        if self._tty:
            self._draw(self.status(trainer, self.t0))
        else:
            resumed = f", resumed at step {self.step0}" if self.step0 else ""
            self._write_line(f"training: {self.total} steps{resumed}; a line every {self.every_steps} steps "
                             f"or {self.every_s:g} s")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._enabled:
            return
        now, s = time.monotonic(), int(trainer.global_step)
        if s >= self.total > 0:
            return  # the final line comes from on_train_end
        if self._tty:
            if now - self._last_t >= self.redraw_s:
                self._last_t = now
                self._draw(self.status(trainer, now))
        elif s - self._last_step >= self.every_steps or now - self._last_t >= self.every_s:
            self._last_t, self._last_step = now, s
            self._write_line(self.status(trainer, now))

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._enabled and self._tty and not trainer.sanity_checking:
            self._draw(f"step {int(trainer.global_step)}/{self.total}: evaluating ...")

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._enabled and not trainer.sanity_checking:
            self._write_line(self.evaluation(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._enabled:
            return
        self._write_line(self.status(trainer, time.monotonic(), final=True))

    def on_exception(self, trainer, pl_module, exception) -> None:
        # end the bar's line, so that the error starts on a line of its own
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False


def sweep_job() -> tuple[bool, bool]:
    """(this run is a job of a multirun, its jobs run at once in this terminal: joblib or fork)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dann.run.launch import parallel_jobs

    if not HydraConfig.initialized():
        return False, False
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    return multirun, multirun and parallel_jobs()


def build_progress(cfg) -> StepProgress | None:
    """The run's progress display; None with ``trainer.enable_progress_bar=false``.

    In a sweep every line names its job; when the launcher runs several jobs at once, plain lines even
    in a terminal (bars of several processes redrawn on one line would garble each other).
    """
    if not cfg.trainer.get("enable_progress_bar", True):
        return None
    multirun, parallel = sweep_job()
    label = f"[{cfg.method.name} {cfg.pair.name} s{cfg.seed}] " if multirun else ""
    return StepProgress(tty=False if parallel else None, label=label)


class RunLog(pl.Callback):
    """The run's progress as plain lines in its folder's ``train.log`` (beside Hydra's own log
    lines), whatever the display: a line every tenth of the run or 60 s, one per evaluation with
    its accuracies, and a final one; with ``trainer.enable_progress_bar=false`` too, so that a
    run in the background still says how far it got."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: TextIO | None = None
        self._lines: StepProgress | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        self._file = open(self.path, "a", buffering=1)  # line-buffered: each line reaches the file at once
        self._lines = StepProgress(stream=self._file, tty=False, every_s=60.0)
        self._lines.on_train_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._lines is not None:
            self._lines.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._lines is not None:
            self._lines.on_validation_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._lines is not None:
            self._lines.on_train_end(trainer, pl_module)
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._lines is not None:
            self._lines._write_line(f"stopped at step {int(trainer.global_step)}: {type(exception).__name__}")
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._lines = None
