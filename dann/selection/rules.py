"""Model-selection rules: which evaluation of a run to report, read from its evaluations.

``last`` (the weights at the end of training), ``last_k`` (the mean of the last k
evaluations), one rule per registered validator (:mod:`dann.selection.validators`: the
evaluation with the best score), and ``oracle`` (best target *test* accuracy: reads target
labels, never unsupervised, always labelled so).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dann.selection.evaluations import ENSV
from dann.selection.validators import VALIDATORS

log = logging.getLogger(__name__)


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
    over_set: bool = False           # its score depends on the other candidates (EnsV): not a run's own objective


def _rules() -> dict[str, Rule]:
    fixed = [Rule("last", "the final evaluation (the weights at the end of training)"),
             Rule("last_k", "mean target accuracy of the last k evaluations (averages, does not choose)")]
    scored = [Rule(v.rule, v.doc, v.score, v.higher_is_better) for v in VALIDATORS.values() if v.rule]
    ensemble = [Rule(ENSV, "highest agreement with the mean target prediction of the candidates (Hu et al. 2024): "
                           "within a run, its own checkpoints", ENSV, over_set=True)]
    oracle = [Rule("oracle", "best target TEST accuracy: reads target labels, not unsupervised DA", "tgt_acc",
                   oracle=True)]
    return {r.name: r for r in fixed + scored + ensemble + oracle}


def refresh_rules() -> dict[str, Rule]:
    """:data:`RULES` with every validator registered so far (e.g. by a module named in
    ``validator_modules``), in registration order."""
    fresh = _rules()
    RULES.clear()
    RULES.update(fresh)
    return RULES


#: every rule by name (validators registered after import are added by :func:`rule_of`)
RULES: dict[str, Rule] = _rules()
LEGACY = {"last_step": "last"}  # the name older records use for `last`
#: what a run reports that a search may maximise: plain, and reading target labels (an oracle)
PLAIN_OBJECTIVES, ORACLE_OBJECTIVES = ("test/src_acc",), ("test/tgt_acc",)


def rule_of(name: str) -> Rule:
    name = LEGACY.get(name, name)
    if name not in RULES:
        refresh_rules()
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
        if not any(r.score in e for e in evals):  # evaluated before this validator existed
            raise ValueError(f"rule {r.name!r} needs the score {r.score!r}, which these evaluations predate: "
                             f"`dann-select rescore RUN_DIR` computes it from the kept checkpoints "
                             f"(runs trained with checkpoint.keep_all=true)")
        v = VALIDATORS.get(r.score)
        why = ("source-validation scores need data.src_val > 0" if v is not None and v.needs_src_val
               else "it was NaN at every evaluation")
        raise ValueError(f"rule {r.name!r} needs the score {r.score!r}, which no evaluation has ({why})")
    return Pick(r.name, float(best["tgt_acc"]), int(best["step"]), r.oracle)


def final_scores(evals: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``select/<rule>`` of the final evaluation, oriented so higher is better: the objectives a
    hyper-parameter search may maximise without target labels."""
    if not evals:
        return {}
    e = evals[-1]
    out = {}
    for r in RULES.values():
        if r.score and not r.oracle and not r.over_set and e.get(r.score) is not None and math.isfinite(e[r.score]):
            out[f"select/{r.name}"] = oriented(r, float(e[r.score]))
    return out


def selected_model(evals: Sequence[dict[str, Any]], rule: str, k: int = 5) -> dict[str, Any] | None:
    """What ``selection=rule`` picks from a run's evaluations, for its record (None without any)."""
    if not evals:
        return None
    try:
        pick = select(evals, rule, k)
    except ValueError as e:  # e.g. a source-validation rule with data.src_val=0
        log.warning("selection=%s: %s", rule, e)
        return None
    return {"rule": pick.rule, "tgt_acc": pick.tgt_acc, "step": pick.step, "oracle": pick.oracle}


def check_objective(objective: Any, rules: dict[str, Rule] | None = None) -> None:
    """:class:`~dann.errors.ConfigError` unless ``objective`` is a value every run reports:
    ``test/src_acc``, ``test/tgt_acc`` (reads target labels: an oracle) or ``select/RULE`` of a
    label-free rule scored per run."""
    from dann.errors import ConfigError

    obj = str(objective)
    usable = [f"select/{n}" for n, r in (rules or refresh_rules()).items()
              if r.score and not r.oracle and not r.over_set]
    if obj in PLAIN_OBJECTIVES + ORACLE_OBJECTIVES or obj in usable:
        return
    raise ConfigError(f"objective={obj!r} is not a value a run reports; allowed: {', '.join(PLAIN_OBJECTIVES)}, "
                      f"{', '.join(usable)} (label-free), or {', '.join(ORACLE_OBJECTIVES)} (reads target labels: an "
                      f"oracle search, named so: hparams_search=dann_optuna_oracle)")
