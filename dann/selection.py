"""Model selection without target labels: the scores, the rules, and where they are logged.

In unsupervised domain adaptation there are no target labels to choose a checkpoint or a
hyper-parameter with. At every evaluation during training (``trainer.val_check_interval``)
:class:`SelectionProbe` computes, on the **source validation split** held out from source
training (``data.src_val``) and on a fixed sample of the **unlabelled target training data**,
the signals each rule needs, and appends one line per evaluation to the run's
``evaluations.jsonl``::

    step, tgt_acc, src_acc              accuracies on the test sets (tgt_acc: for the study and oracle only)
    src_val_acc, src_val_loss           source validation split
    entropy, im, snd                    target predictions (lower entropy, higher IM / SND is better)
    dev                                 Deep Embedded Validation risk (lower is better)
    rv                                  reverse-validation accuracy (higher is better)

A rule is a small function over those lines (:data:`RULES`), applied afterwards without
retraining: ``selection=RULE`` names the one a run reports as ``selected`` in its record,
``dann-table --select RULE`` builds the table with it, ``dann-table --selection-study``
compares them all. ``oracle`` (best target *test* accuracy) reads target labels and is
always labelled so.

Scores (``N`` samples each side, default 2000; features = the feature extractor's output):

* ``entropy``: mean entropy of the target predictions.
* ``im``: information maximisation, ``H(mean p) - mean H(p)`` on target predictions.
* ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): entropy of the softmax
  (temperature 0.05) of each target prediction's cosine similarities to the others.
* ``dev``: Deep Embedded Validation (You et al., ICML 2019): a logistic domain classifier on
  source-train vs target features gives density ratios ``w = (Ns/Nt) p(t|x) / p(s|x)`` on the
  source validation split; the risk is the mean of ``w * loss`` corrected by the control
  variate ``eta = -Cov(w loss, w) / Var(w)``: ``mean(w loss) + eta mean(w) - eta``.
* ``rv``: reverse validation (Zhong et al., 2010, used by Ganin et al. for hyper-parameters):
  the model labels the target sample; a *reverse* classifier trained on the pseudo-labelled
  target (multinomial logistic regression on the model's features, a cheap stand-in for
  retraining the whole network in the reverse direction) is scored on the source validation
  split.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from dann.speed import one_blas_thread

log = logging.getLogger(__name__)

EVALS_FILE = "evaluations.jsonl"
SND_TEMPERATURE = 0.05
#: scores stored per evaluation that read no target label, and whether higher is better
SCORES = {"src_val_acc": True, "src_val_loss": False, "entropy": False, "im": True, "snd": True, "dev": False,
          "rv": True}


# -- the scores ------------------------------------------------------------------------------
def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def entropy_score(probs: torch.Tensor) -> float:
    """Mean entropy of the predictions (nats); lower = more confident."""
    return float(_entropy(probs).mean())


def im_score(probs: torch.Tensor) -> float:
    """Information maximisation: entropy of the mean prediction minus mean entropy (higher is better)."""
    return float(_entropy(probs.mean(0)) - _entropy(probs).mean())


def snd_score(probs: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """Soft neighbourhood density (Saito et al. 2021): higher means denser target clusters."""
    z = F.normalize(probs.float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    return float(_entropy(torch.softmax(sim / temperature, dim=1)).mean())


def _standardised(*xs: np.ndarray) -> list[np.ndarray]:
    """z-score with the statistics of all of ``xs`` together (features of different scales)."""
    allx = np.concatenate(xs)
    mu, sd = allx.mean(0), allx.std(0) + 1e-6
    return [(x - mu) / sd for x in xs]


@one_blas_thread
def density_ratio(f_src: np.ndarray, f_tgt: np.ndarray, f_eval: np.ndarray, seed: int = 0) -> np.ndarray:
    """``w(x) = p_t(x) / p_s(x)`` at ``f_eval``, from a logistic domain classifier (You et al. 2019)."""
    from sklearn.linear_model import LogisticRegression

    fs, ft, fe = _standardised(f_src, f_tgt, f_eval)
    clf = LogisticRegression(max_iter=1000, C=1.0, random_state=seed).fit(
        np.concatenate([fs, ft]), np.r_[np.zeros(len(fs)), np.ones(len(ft))])
    p_t = clf.predict_proba(fe)[:, 1].clip(1e-6, 1 - 1e-6)
    return (len(fs) / len(ft)) * p_t / (1 - p_t)


def dev_risk(val_losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep Embedded Validation risk: importance-weighted loss with its control variate."""
    wl = weights * val_losses
    var = weights.var(ddof=1) if len(weights) > 1 else 0.0
    eta = -np.cov(wl, weights, ddof=1)[0, 1] / var if var > 0 else 0.0
    return float(wl.mean() + eta * weights.mean() - eta)


@one_blas_thread
def reverse_validation(f_tgt: np.ndarray, pseudo: np.ndarray, f_src_val: np.ndarray, y_src_val: np.ndarray,
                       seed: int = 0) -> float:
    """Accuracy on the source validation split of a classifier trained on pseudo-labelled target."""
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(pseudo)
    if len(classes) < 2:  # the model predicts one class everywhere: so does the reverse classifier
        return float((y_src_val == classes[0]).mean())
    ft, fv = _standardised(f_tgt, f_src_val)
    clf = LogisticRegression(max_iter=500, C=1.0, random_state=seed).fit(ft, pseudo)
    return float((clf.predict(fv) == y_src_val).mean())


# -- scoring a model -------------------------------------------------------------------------
def _sample(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


@torch.no_grad()
def _forward(model, split, idx: torch.Tensor | None = None, batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and logits of ``model`` on ``split`` (rows ``idx``, or all), on the CPU."""
    n = len(split)
    idx = torch.arange(n) if idx is None else idx
    dev = next(model.parameters()).device
    fs, ls = [], []
    for a in range(0, len(idx), batch):
        x = split.inputs(idx[a:a + batch].to(split.y.device)).to(dev)
        f = model.features(x)
        fs.append(f.flatten(1).float().cpu())
        ls.append(model.classifier(f).float().cpu())
    return torch.cat(fs), torch.cat(ls)


def accuracy(model, split) -> float:
    """Top-1 accuracy of ``model`` (a :class:`dann.methods.DAMethod`) on a whole split (NaN if empty)."""
    if len(split) == 0:
        return float("nan")
    _, logits = _forward(model, split)
    return float((logits.argmax(1) == split.y.cpu()).float().mean())


def evaluate(model, dm, samples: int = 2000, seed: int = 0, accuracies: dict[str, float] | None = None
             ) -> dict[str, float]:
    """Every score of :data:`SCORES` for ``model`` (a :class:`dann.methods.DAMethod`) on ``dm``.

    ``accuracies`` may carry ``tgt_acc`` / ``src_acc`` already measured on the test sets (the
    validation loop's); those missing are computed here. Source-validation scores are NaN when
    the run holds no source validation split out (``data.src_val=0``).
    """
    was = model.training
    model.eval()
    try:
        out = {k: float(v) for k, v in (accuracies or {}).items()}
        out.setdefault("tgt_acc", accuracy(model, dm.tgt_test))
        out.setdefault("src_acc", accuracy(model, dm.src_test))
        f_t, l_t = _forward(model, dm.tgt_train, _sample(len(dm.tgt_train), samples, seed))
        p_t = torch.softmax(l_t, 1)
        out.update(entropy=entropy_score(p_t), im=im_score(p_t), snd=snd_score(p_t))
        val = getattr(dm, "src_val", None)
        if val is None or len(val) == 0:
            out.update(src_val_acc=math.nan, src_val_loss=math.nan, dev=math.nan, rv=math.nan)
            return out
        f_v, l_v = _forward(model, val)
        y_v = val.y.cpu()
        losses = F.cross_entropy(l_v, y_v, reduction="none").numpy()
        f_s, _ = _forward(model, dm.src_train, _sample(len(dm.src_train), samples, seed + 1))
        w = density_ratio(f_s.numpy(), f_t.numpy(), f_v.numpy(), seed)
        out.update(
            src_val_acc=float((l_v.argmax(1) == y_v).float().mean()), src_val_loss=float(losses.mean()),
            dev=dev_risk(losses, w),
            rv=reverse_validation(f_t.numpy(), l_t.argmax(1).numpy(), f_v.numpy(), y_v.numpy(), seed),
        )
        return out
    finally:
        model.train(was)


# -- evaluations.jsonl ------------------------------------------------------------------------
def _line(row: dict[str, Any]) -> str:
    """One evaluation as a line of JSON (NaN written as null)."""
    return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})


def append_evaluation(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one evaluation to the run's file."""
    with open(Path(run_dir) / EVALS_FILE, "a") as f:
        f.write(_line(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's evaluations by step; a step written twice (a resumed run) keeps its last line,
    and a truncated last line (a run killed mid-write) is ignored."""
    path = Path(run_dir) / EVALS_FILE
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        row = {k: (math.nan if v is None else v) for k, v in row.items()}
        by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def record_evaluations(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluations of the run a results record was read from (its ``_path``); none without one."""
    path = record.get("_path")
    return read_evaluations(Path(path).parent) if path else []


class SelectionProbe(pl.Callback):
    """After every validation, the label-free scores of the current model -> ``evaluations.jsonl``
    and the loggers (``select/<score>``). Runs on global rank 0 only (no collective calls)."""

    def __init__(self, run_dir: str | Path, samples: int = 2000, seed: int = 0):
        self.run_dir, self.samples, self.seed = Path(run_dir), samples, seed

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.datamodule is None:
            return
        m = trainer.callback_metrics
        acc = {k: float(m[f"val/{k[:3]}_acc"]) for k in ("tgt_acc", "src_acc") if f"val/{k[:3]}_acc" in m}
        row = {"step": int(trainer.global_step),
               **evaluate(pl_module, trainer.datamodule, self.samples, self.seed, acc)}
        append_evaluation(self.run_dir, row)
        for lg in trainer.loggers:
            lg.log_metrics({f"select/{k}": row[k] for k in SCORES if math.isfinite(row[k])}, step=row["step"])


# -- the rules -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pick:
    """What a rule reports for one run: the target accuracy, and the evaluation chosen (None
    when the rule averages instead of choosing)."""

    rule: str
    tgt_acc: float
    step: int | None
    oracle: bool


@dataclass(frozen=True)
class Rule:
    name: str
    doc: str
    score: str | None = None         # the key of the evaluation it maximises / minimises
    higher_is_better: bool = True
    oracle: bool = False             # reads target test labels


RULES: dict[str, Rule] = {r.name: r for r in [
    Rule("last", "the final evaluation (the weights at the end of training)"),
    Rule("last_k", "mean target accuracy of the last k evaluations (averages, does not choose)"),
    Rule("src_val", "best source-validation accuracy", "src_val_acc"),
    Rule("reverse_validation", "best reverse-validation accuracy (Zhong et al. 2010)", "rv"),
    Rule("dev", "lowest Deep Embedded Validation risk (You et al. 2019)", "dev", higher_is_better=False),
    Rule("entropy", "lowest mean entropy of target predictions", "entropy", higher_is_better=False),
    Rule("im", "highest information maximisation of target predictions", "im"),
    Rule("snd", "highest soft neighbourhood density (Saito et al. 2021)", "snd"),
    Rule("oracle", "best target TEST accuracy: reads target labels, not unsupervised DA", "tgt_acc", oracle=True),
]}
LEGACY = {"last_step": "last"}  # the name older records use for `last`


def rule_of(name: str) -> Rule:
    name = LEGACY.get(name, name)
    if name not in RULES:
        raise ValueError(f"unknown selection rule {name!r}; choose one of: {', '.join(RULES)}")
    return RULES[name]


def oriented(rule: Rule, value: float) -> float:
    """The rule's score with higher = better (so every label-free objective is maximised)."""
    return value if rule.higher_is_better else -value


def select(evals: Sequence[dict[str, Any]], rule: str, k: int = 5) -> Pick:
    """Apply ``rule`` to a run's evaluations (in step order). Ties go to the later evaluation."""
    r = rule_of(rule)
    if not evals:
        raise ValueError("no evaluations to select from (the run has no evaluations.jsonl)")
    if r.name == "last":
        e = evals[-1]
        return Pick(r.name, float(e["tgt_acc"]), int(e["step"]), False)
    if r.name == "last_k":
        tail = evals[-max(1, k):]
        return Pick(r.name, float(np.mean([e["tgt_acc"] for e in tail])), None, False)
    best, best_v = None, -math.inf
    for e in evals:
        v = e.get(r.score, math.nan)
        if v is None or not math.isfinite(v):
            continue
        v = oriented(r, float(v))
        if v >= best_v:
            best, best_v = e, v
    if best is None:
        raise ValueError(f"rule {r.name!r} needs the score {r.score!r}, which no evaluation has "
                         f"(source-validation scores need data.src_val > 0)")
    return Pick(r.name, float(best["tgt_acc"]), int(best["step"]), r.oracle)


def final_scores(evals: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``select/<rule>`` of the final evaluation, oriented so higher is better: the objectives a
    hyper-parameter search may maximise without target labels."""
    if not evals:
        return {}
    e = evals[-1]
    out = {}
    for r in RULES.values():
        if r.score and not r.oracle and e.get(r.score) is not None and math.isfinite(e[r.score]):
            out[f"select/{r.name}"] = oriented(r, float(e[r.score]))
    return out


# -- scoring saved checkpoints afterwards ------------------------------------------------------
def checkpoint_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """``checkpoints/step=NNNNNN.ckpt`` files of a run (``checkpoint.keep_all=true``), by step."""
    out = []
    for p in (run_dir / "checkpoints").glob("step=*.ckpt"):
        try:
            out.append((int(p.stem.split("=")[1]), p))
        except ValueError:
            continue
    return sorted(out)


def rescore(run_dir: str | Path, samples: int = 2000, seed: int = 0,
            progress: Callable[[Any], Any] | None = None) -> list[dict[str, Any]]:
    """Score every kept checkpoint of a finished run and (re)write its ``evaluations.jsonl``.

    The run must have been trained with ``checkpoint.keep_all=true``; its config comes from
    its ``results.json``. The file is written whole to a temporary name, then renamed.
    """
    from omegaconf import OmegaConf

    from dann.data.custom import register_custom_domains
    from dann.train import build_datamodule, build_method

    run_dir = Path(run_dir)
    rec_path = run_dir / "results.json"
    if not rec_path.exists():
        raise FileNotFoundError(f"{rec_path} does not exist: rescore needs a run folder with its results.json")
    cfg = OmegaConf.create(json.loads(rec_path.read_text())["config"])
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"no checkpoints/step=*.ckpt in {run_dir}: train with checkpoint.keep_all=true "
                                f"to rescore afterwards")
    register_custom_domains(cfg.get("domains"))
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_method(cfg, dm.input_shape, dm.num_classes)
    rows = []
    for step, path in (progress or (lambda x: x))(steps):
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
        rows.append({"step": step, **evaluate(model, dm, samples, seed)})
    tmp = run_dir / (EVALS_FILE + ".tmp")
    tmp.write_text("".join(_line(row) + "\n" for row in rows))
    os.replace(tmp, run_dir / EVALS_FILE)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``dann-select rescore RUN_DIR...``: score every kept checkpoint of finished runs."""
    import argparse

    from tqdm import tqdm

    ap = argparse.ArgumentParser(prog="dann-select", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rescore", help="(re)write evaluations.jsonl of runs trained with checkpoint.keep_all=true")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--samples", type=int, default=2000, help="target/source training samples the scores use")
    a = ap.parse_args(argv)
    failed = 0
    for d in a.run_dirs:
        try:
            rows = rescore(d, a.samples, progress=lambda xs: tqdm(xs, desc=str(d), unit="ckpt"))
        except (FileNotFoundError, ValueError) as e:
            print(f"dann-select: {d}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{d}: {len(rows)} evaluations -> {Path(d) / EVALS_FILE}")
    return 1 if failed else 0


def cli() -> None:
    sys.exit(main())
