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


def _rules() -> dict[str, Rule]:
    fixed = [Rule("last", "the final evaluation (the weights at the end of training)"),
             Rule("last_k", "mean target accuracy of the last k evaluations (averages, does not choose)")]
    scored = [Rule(v.rule, v.doc, v.score, v.higher_is_better) for v in VALIDATORS.values() if v.rule]
    oracle = [Rule("oracle", "best target TEST accuracy: reads target labels, not unsupervised DA", "tgt_acc",
                   oracle=True)]
    return {r.name: r for r in fixed + scored + oracle}


#: every rule by name (validators registered after import are added by :func:`rule_of`)
RULES: dict[str, Rule] = _rules()
LEGACY = {"last_step": "last"}  # the name older records use for `last`


def rule_of(name: str) -> Rule:
    name = LEGACY.get(name, name)
    if name not in RULES:
        RULES.update(_rules())
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
