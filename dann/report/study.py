"""``dann-table --selection-study``: which validator can be trusted to choose, measured as the field does.

The candidates of a task (one pair and method) are every evaluated checkpoint of every run of
it: the trials of a hyper-parameter search, or the seeds of a recipe. For each rule of
:data:`dann.selection.RULES` (and EnsV, a rule over the whole set) the study reports:

* **wSpearman**: the weighted Spearman correlation between the rule's score and the target
  accuracy over all candidates (Musgrave et al., "Benchmarking Validation Methods for
  Unsupervised Domain Adaptation", 2022): the candidates' ranks by score and by accuracy,
  correlated with weight ``(r / max r)^2`` for a candidate of score rank ``r`` (1 = worst), so
  the order among the candidates the rule would pick counts most;
* **top-1**: the target test accuracy of the candidate the rule scores best; **top-5**: the
  mean over its five best; **regret**: the oracle's top-1 minus the rule's;
* **worst**: over the tasks pooled, the lowest top-1 (EnsV's criterion: does the rule ever pick
  a collapsed model?); for one task, the lowest target accuracy among the rule's top five;
* the number of candidates (checkpoints) and runs behind each figure.

Rules without a score (``last``, ``last_k``) choose no run: their top-1 is the mean, over runs,
of what they report for one run (the accuracy one may expect from an unvalidated run).
``oracle`` reads target test labels: the reference of every regret, always labelled so.

:func:`choose_validator` picks the rule to use on another pair, and :func:`check_honest`
refuses to report a validator on the pair it was chosen on except as an oracle.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from dann.selection.evaluations import ENSV, read_predictions, record_evaluations
from dann.selection.rules import RULES, Rule, oriented, refresh_rules, rule_of, select
from dann.selection.scores import ensv_scores

ORACLE_LABEL = "oracle (target labels)"
POOLED = "all methods"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (NaN when either side is constant or has fewer than 3 points)."""
    return weighted_spearman(a, b, power=0)


def weighted_spearman(score: Sequence[float], acc: Sequence[float], power: float = 2) -> float:
    """Weighted Spearman correlation (Musgrave et al. 2022): Pearson's correlation of the
    average ranks of ``score`` and ``acc``, each point weighted by ``(r / max r)^power`` where
    ``r`` is its dense rank by score (1 = lowest). ``power=0``: Spearman's rho. NaN with fewer
    than 3 finite points or a constant side."""
    from scipy.stats import rankdata

    x, y = np.asarray(score, float), np.asarray(acc, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    dense = rankdata(x, method="dense")
    w = (dense / dense.max()) ** power
    rx, ry = rankdata(x), rankdata(y)
    mx, my = np.average(rx, weights=w), np.average(ry, weights=w)
    cov = np.average((rx - mx) * (ry - my), weights=w)
    vx, vy = np.average((rx - mx) ** 2, weights=w), np.average((ry - my) ** 2, weights=w)
    return float(cov / math.sqrt(vx * vy)) if vx > 0 and vy > 0 else math.nan


@dataclass
class Candidate:
    """One evaluated checkpoint of one run."""

    run: str
    step: int
    tgt_acc: float
    scores: dict[str, float]


@dataclass
class Task:
    pair: str
    method: str
    runs: list[list[dict[str, Any]]] = field(default_factory=list)  # each run's evaluations
    names: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class RuleResult:
    rule: str
    top1: float = math.nan
    top5: float = math.nan
    regret: float = math.nan
    worst: float = math.nan
    wspearman: float = math.nan
    n_ckpt: int = 0
    n_runs: int = 0
    pick: tuple[str, int] | None = None  # (run, step) of the top-1

    @property
    def label(self) -> str:
        return ORACLE_LABEL if self.rule == "oracle" else self.rule


@dataclass
class Study:
    tasks: dict[tuple[str, str], dict[str, RuleResult]]
    pooled: dict[str, dict[str, RuleResult]]          # pair -> rule -> pooled over methods
    runs: dict[tuple[str, str], int]
    without_evals: list[str]
    without_predictions: int = 0
    candidates: dict[tuple[str, str], Task] = field(default_factory=dict)


def rules_studied() -> list[Rule]:
    """Every rule of :data:`RULES` (EnsV and the validators registered since import included)."""
    return list(refresh_rules().values())


def _ensv_into(task: Task, preds: list[dict[int, np.ndarray]]) -> int:
    """Add each candidate's EnsV score (over all the task's candidates with predictions); returns
    how many candidates had none (runs made before the probe saved predictions)."""
    have = [(c, p[c.step]) for c, p in zip(task.candidates, _per_candidate(task, preds)) if p is not None and c.step in p]
    shapes = {v.shape for _, v in have}
    if not have or len(shapes) != 1:
        return len(task.candidates)
    for (c, _), s in zip(have, ensv_scores([v for _, v in have])):
        c.scores[ENSV] = s
    return len(task.candidates) - len(have)


def _per_candidate(task: Task, preds: list[dict[int, np.ndarray]]) -> list[dict[int, np.ndarray] | None]:
    index = {name: p for name, p in zip(task.names, preds)}
    return [index.get(c.run) for c in task.candidates]


def collect(records: Iterable[dict[str, Any]]) -> tuple[dict[tuple[str, str], Task], list[str], int]:
    """Finished records -> tasks with their candidates (EnsV scored within each task)."""
    tasks: dict[tuple[str, str], Task] = {}
    preds: dict[tuple[str, str], list] = {}
    without = []
    for r in records:
        if r.get("status") != "finished":
            continue
        evals = record_evaluations(r)
        name = str(r.get("_path", "?"))
        if not evals:
            without.append(f"{name} ({r['method']} on {r['pair']}, seed {r['seed']})")
            continue
        key = (str(r["pair"]), str(r["method"]))
        t = tasks.setdefault(key, Task(*key))
        t.runs.append(evals)
        t.names.append(name)
        preds.setdefault(key, []).append(read_predictions(Path(name).parent) if r.get("_path") else {})
        for e in evals:
            t.candidates.append(Candidate(name, int(e["step"]), float(e["tgt_acc"]),
                                          {k: float(v) for k, v in e.items() if isinstance(v, (int, float))}))
    missing = sum(_ensv_into(t, preds[k]) for k, t in tasks.items())
    return tasks, without, missing


def _score(rule: Rule, c: Candidate) -> float:
    v = c.scores.get(rule.score) if rule.score else None
    return oriented(rule, v) if v is not None and math.isfinite(v) else math.nan


def judge(task: Task, rule: Rule, k: int = 5) -> RuleResult:
    """The rule on one task's candidates (see the module's docstring)."""
    res = RuleResult(rule.name, n_runs=len(task.runs))
    if not rule.score:  # last / last_k: one pick per run, no choice between runs
        picks = [select(ev, rule.name, k).tgt_acc for ev in task.runs]
        res.top1, res.worst, res.n_ckpt = statistics.fmean(picks), min(picks), len(picks)
        return res
    scored = [(s, c) for c in task.candidates if math.isfinite(s := _score(rule, c))]
    if not scored:
        return res
    res.n_ckpt = len(scored)
    res.n_runs = len({c.run for _, c in scored})
    # ties go to the later evaluation, as select() does within a run
    order = sorted(scored, key=lambda sc: (sc[0], sc[1].step), reverse=True)
    top = [c.tgt_acc for _, c in order[:5]]
    res.top1, res.top5, res.worst = top[0], statistics.fmean(top), min(top)
    res.pick = (order[0][1].run, order[0][1].step)
    res.wspearman = weighted_spearman([s for s, _ in scored], [c.tgt_acc for _, c in scored])
    return res


def build_study(records: Iterable[dict[str, Any]], k: int = 5) -> Study:
    """The study over finished records (runs without ``evaluations.jsonl`` are listed, not used)."""
    tasks, without, missing = collect(records)
    rules = rules_studied()
    out: dict[tuple[str, str], dict[str, RuleResult]] = {}
    for key, t in sorted(tasks.items()):
        res = {r.name: judge(t, r, k) for r in rules}
        best = res["oracle"].top1
        for r in res.values():
            r.regret = best - r.top1
        out[key] = res
    pooled: dict[str, dict[str, RuleResult]] = {}
    for pair in sorted({p for p, _ in out}):
        per = [res for (p, _), res in out.items() if p == pair]
        pooled[pair] = {}
        for r in rules:
            xs = [x[r.name] for x in per if math.isfinite(x[r.name].top1)]
            if not xs:
                pooled[pair][r.name] = RuleResult(r.name)
                continue
            pooled[pair][r.name] = RuleResult(
                r.name, top1=statistics.fmean(x.top1 for x in xs), top5=_mean(x.top5 for x in xs),
                regret=statistics.fmean(x.regret for x in xs), worst=min(x.top1 for x in xs),
                wspearman=_mean(x.wspearman for x in xs), n_ckpt=sum(x.n_ckpt for x in xs),
                n_runs=sum(x.n_runs for x in xs))
    return Study(out, pooled, {k_: len(t.runs) for k_, t in tasks.items()}, without, missing, tasks)


def _mean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.fmean(xs) if xs else math.nan


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    s = f"{x:.{digits}f}"
    return s.replace("0.", ".", 1) if s.startswith("0.") else s.replace("-0.", "-.", 1)


def _table(title: str, rows: dict[str, RuleResult], pooled: bool) -> list[str]:
    worst = "worst top-1 (over methods)" if pooled else "worst of top-5"
    out = [f"### {title}", "", f"| rule | wSpearman | top-1 | top-5 mean | regret | {worst} | checkpoints | runs |",
           "|---|---|---|---|---|---|---|---|"]
    order = sorted(rows.values(), key=lambda r: (r.rule == "oracle", not math.isfinite(r.regret),
                                                 r.regret if math.isfinite(r.regret) else 0))
    unscored = [r.rule for r in order if not r.n_ckpt]
    for r in (r for r in order if r.n_ckpt):
        out.append(f"| {r.label} | {_fmt(r.wspearman, 2)} | {_fmt(r.top1)} | {_fmt(r.top5)} | {_fmt(r.regret)} | "
                   f"{_fmt(r.worst)} | {r.n_ckpt} | {r.n_runs} |")
    if unscored:
        out.append(f"\nNot scored in these runs (their evaluations predate them; `dann-select rescore` computes them "
                   f"from kept checkpoints): {', '.join(unscored)}")
    return out + [""]


def render_markdown(s: Study) -> str:
    out: list[str] = []
    for pair, rows in s.pooled.items():
        methods = sorted(m for p, m in s.tasks if p == pair)
        if len(methods) > 1:
            out += _table(f"{POOLED} on {pair} ({len(methods)} methods, pooled: mean over methods)", rows, True)
    for (pair, method), rows in s.tasks.items():
        n = s.runs[pair, method]
        out += _table(f"{method} on {pair} ({n} run{'s' if n != 1 else ''})", rows, False)
    out += ["Candidates: every evaluated checkpoint of every run of a method on a pair. wSpearman: weighted "
            "Spearman correlation of the rule's score with target accuracy over the candidates (Musgrave et al. "
            "2022; weight (score rank / max)^2). top-1: target test accuracy of the candidate the rule scores best; "
            "top-5: the mean over its five best; regret: the oracle's top-1 minus the rule's. last and last_k "
            "choose no run: their top-1 is the mean over runs. ensv scores each candidate by its agreement with "
            "the mean prediction of all candidates. " + ORACLE_LABEL + " reads target test labels: the reference, "
            "not a usable rule. Rows by regret."]
    if s.without_predictions:
        out.append(f"Candidates without saved predictions (no EnsV score): {s.without_predictions}")
    if s.without_evals:
        out.append(f"Runs without evaluations.jsonl (not in the study): {len(s.without_evals)}")
        out += [f"- {w}" for w in s.without_evals]
    return "\n".join(out) + "\n"


# -- the honest protocol -----------------------------------------------------------------------------
def choose_validator(s: Study, pair: str) -> dict[str, Any]:
    """The label-free rule with the lowest regret pooled over the methods on ``pair`` (ties: the
    higher weighted Spearman), as a record of the choice: the rule, the pair it was chosen on
    (whose target labels the choice read), and every candidate rule's figures."""
    if pair not in s.pooled:
        raise ValueError(f"no run on pair {pair!r} in the study; pairs: {', '.join(s.pooled) or 'none'}")
    usable = {n: r for n, r in s.pooled[pair].items()
              if n != "oracle" and RULES.get(n, Rule(n, "", n)).score and math.isfinite(r.regret)}
    if not usable:
        raise ValueError(f"no label-free rule scored any candidate on {pair}")
    best = min(usable.values(), key=lambda r: (r.regret, -(r.wspearman if math.isfinite(r.wspearman) else -9)))
    return {"validator": best.rule, "chosen_on": pair, "criterion": "lowest regret pooled over methods",
            "methods": sorted(m for p, m in s.tasks if p == pair),
            "figures": {n: {"regret": r.regret, "wspearman": r.wspearman, "top1": r.top1} for n, r in usable.items()}}


def read_choice(path: str | Path) -> dict[str, Any]:
    """A validator choice written by ``--choose-validator`` (checked: a known rule and a pair)."""
    try:
        c = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a validator choice ({e})") from None
    if not isinstance(c, dict) or not isinstance(c.get("validator"), str) or not isinstance(c.get("chosen_on"), str):
        raise ValueError(f"{path}: a validator choice needs 'validator' and 'chosen_on' (write it with "
                         f"dann-table RUNS --selection-study --choose-validator PAIR --out-choice FILE)")
    rule_of(c["validator"])  # an unknown rule is refused, naming the known ones
    return c


def check_honest(choice: dict[str, Any], pair: str) -> bool:
    """Whether reporting ``choice``'s validator on ``pair`` is label-free: False (an oracle in
    disguise) when the validator was chosen by looking at ``pair``'s target labels."""
    return choice["chosen_on"] != pair


def save_png(s: Study, path: str | Path) -> Path:
    """One panel per rule with a score: each candidate's score (x, oriented: higher is better)
    against its target test accuracy (y, from 0), one colour per method (and pair); each
    method's top-1 pick ringed."""
    from dann.report.figures import pyplot

    plt = pyplot()
    rules = [r for r in rules_studied() if r.score and not r.oracle]
    rules = [r for r in rules if any(math.isfinite(_score(r, c)) for t in s.candidates.values() for c in t.candidates)]
    cols = min(4, max(len(rules), 1))
    rows_n = -(-len(rules) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.2 * rows_n), squeeze=False)
    for ax in axes.flat[len(rules):]:
        ax.set_visible(False)
    colours = plt.get_cmap("tab10" if len(s.candidates) <= 10 else "tab20")
    for ax, rule in zip(axes.flat, rules):
        for i, (key, t) in enumerate(sorted(s.candidates.items())):
            pts = [(x, c.tgt_acc) for c in t.candidates if math.isfinite(x := _score(rule, c))]
            if not pts:
                continue
            xs, ys = zip(*pts)
            label = key[1] if len({p for p, _ in s.candidates}) == 1 else f"{key[1]} ({key[0]})"
            ax.scatter(xs, ys, s=8, alpha=0.6, color=colours(i % colours.N), label=label)
            pick = s.tasks[key][rule.name].pick
            if pick:
                c = next(c for c in t.candidates if (c.run, c.step) == pick)
                ax.scatter([_score(rule, c)], [c.tgt_acc], s=60, facecolors="none", edgecolors=colours(i % colours.N),
                           linewidths=1.5)
        xs_all = np.array([x for t in s.candidates.values() for c in t.candidates if math.isfinite(x := _score(rule, c))])
        if len(xs_all) and np.abs(xs_all).max() > 50 * max(np.median(np.abs(xs_all)), 1e-12):
            ax.set_xscale("symlog", linthresh=max(np.median(np.abs(xs_all)), 1e-6))  # a few huge scores (DEV's weights)
        pooled = [r[rule.name].wspearman for r in s.pooled.values() if rule.name in r]
        ax.set_title(f"{rule.name}  (wSpearman {_fmt(_mean(pooled), 2)})", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("score (higher = preferred)", fontsize=8)
        ax.set_ylabel("target test accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle("Each checkpoint's validator score against its target accuracy (ringed: the rule's pick)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.78, 0.96))  # the right margin holds the legend
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.79, 0.5), fontsize=8, frameon=False,
                   markerscale=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
