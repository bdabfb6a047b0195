"""``dann-table --selection-study``: how much of a result survives a rule that reads no target label.

For each (pair, method) and each rule of :data:`dann.selection.RULES`, over the runs that
logged evaluations (``evaluations.jsonl``):

* **picked**: the target test accuracy the rule reports, mean ± std over runs (n);
* **regret**: oracle's pick minus the rule's, mean over runs (0 = as good as peeking);
* **rho (checkpoints)**: Spearman rank correlation, within a run, between the rule's score and
  the target accuracy over its evaluations, averaged over runs (does the score order
  checkpoints the way the target labels would?);
* **rho (runs)**: the same across the runs of the group, each at its last evaluation (with
  several hyper-parameter settings in a sweep, does the score rank them right? with seeds
  only, it measures how well the score tracks seed-to-seed variation).

``oracle`` reads target test labels; it is the reference for regret and is always printed
as "oracle (target labels)".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dann.selection.evaluations import record_evaluations
from dann.selection.rules import RULES, Rule, oriented, select

ORACLE_LABEL = "oracle (target labels)"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (NaN when either side is constant or has fewer than 3 points)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def _score(rule: Rule, e: dict[str, Any]) -> float:
    v = e.get(rule.score) if rule.score else None
    return oriented(rule, float(v)) if v is not None and math.isfinite(v) else math.nan


@dataclass
class RuleRow:
    rule: str
    picks: list[float] = field(default_factory=list)
    regrets: list[float] = field(default_factory=list)
    rho_ckpt: list[float] = field(default_factory=list)
    rho_runs: float = math.nan
    missing: int = 0  # runs where the rule had nothing to score (e.g. no source validation split)

    @property
    def label(self) -> str:
        return ORACLE_LABEL if RULES[self.rule].oracle else self.rule


@dataclass
class Study:
    groups: dict[tuple[str, str], list[RuleRow]]
    runs: dict[tuple[str, str], int]
    without_evals: list[str]


def build_study(records: list[dict[str, Any]], k: int = 5) -> Study:
    """The study over finished records; runs without ``evaluations.jsonl`` are listed, not used."""
    by_group: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
    without = []
    for r in records:
        if r.get("status") != "finished":
            continue
        evals = record_evaluations(r)
        if not evals:
            without.append(f"{r.get('_path', '?')} ({r['method']} on {r['pair']}, seed {r['seed']})")
            continue
        by_group.setdefault((str(r["pair"]), str(r["method"])), []).append(evals)
    groups = {}
    for key, runs in sorted(by_group.items()):
        oracle = [select(ev, "oracle").tgt_acc for ev in runs]
        rows = []
        for name, rule in RULES.items():
            row = RuleRow(name)
            finals = []
            for ev, best in zip(runs, oracle):
                try:
                    pick = select(ev, name, k)
                except ValueError:
                    row.missing += 1
                    continue
                row.picks.append(pick.tgt_acc)
                row.regrets.append(best - pick.tgt_acc)
                if rule.score and not rule.oracle:
                    row.rho_ckpt.append(spearman([_score(rule, e) for e in ev], [e["tgt_acc"] for e in ev]))
                    finals.append((_score(rule, ev[-1]), ev[-1]["tgt_acc"]))
            if finals:
                row.rho_runs = spearman(*zip(*finals))
            rows.append(row)
        groups[key] = rows
    return Study(groups, {k_: len(v) for k_, v in by_group.items()}, without)


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    s = f"{x:.{digits}f}"
    return s.replace("0.", ".", 1) if s.startswith("0.") else s.replace("-0.", "-.", 1)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.fmean(xs) if xs else math.nan


def render_markdown(s: Study) -> str:
    out = []
    for (pair, method), rows in s.groups.items():
        out += [f"### {method} on {pair} ({s.runs[pair, method]} runs)", "",
                "| rule | target acc picked | regret vs oracle | rho (checkpoints) | rho (runs) |",
                "|---|---|---|---|---|"]
        for r in rows:
            if not r.picks:
                out.append(f"| {r.label} | — (no score in {r.missing} runs) | — | — | — |")
                continue
            sd = statistics.stdev(r.picks) if len(r.picks) > 1 else None
            pick = f"{_fmt(statistics.fmean(r.picks))} ± {_fmt(sd)} ({len(r.picks)})"
            out.append(f"| {r.label} | {pick} | {_fmt(statistics.fmean(r.regrets))} | "
                       f"{_fmt(_mean(r.rho_ckpt), 2)} | {_fmt(r.rho_runs, 2)} |")
        out.append("")
    out += ["Picked: target test accuracy at the evaluation the rule chose (last_k: the mean of the last k), "
            "mean ± sample std (runs). Regret: oracle's pick minus the rule's. rho: Spearman rank correlation "
            "of the rule's score with target accuracy, over a run's evaluations (mean over runs) and over runs "
            "(last evaluation). " + ORACLE_LABEL + " reads target test labels: a reference, not a usable rule."]
    if s.without_evals:
        out.append(f"Runs without evaluations.jsonl (not in the study): {len(s.without_evals)}")
        out += [f"- {w}" for w in s.without_evals]
    return "\n".join(out) + "\n"


def save_png(s: Study, path: str | Path) -> Path:
    """Bars: the target accuracy each rule picks, per (pair, method), oracle hatched."""
    from dann.report.figures import pyplot, save_fig

    plt = pyplot()

    keys = list(s.groups)
    cols = min(3, len(keys))
    rows_n = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 4 * rows_n), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        rows = [r for r in s.groups[key] if r.picks]
        x = np.arange(len(rows))
        means = [statistics.fmean(r.picks) for r in rows]
        sds = [statistics.stdev(r.picks) if len(r.picks) > 1 else 0 for r in rows]
        bars = ax.bar(x, means, yerr=sds, capsize=3,
                      color=["#bbbbbb" if RULES[r.rule].oracle else "#4c72b0" for r in rows])
        ax.set_xticks(x, [r.label.replace(" (target labels)", "\n(target labels)") for r in rows],
                      rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{key[1]} on {key[0]} ({s.runs[key]} runs)", fontsize=10)
        lo = min(m - e for m, e in zip(means, sds)) if means else 0
        hi = max((m + e for m, e in zip(means, sds)), default=1)
        bottom = max(0.0, lo - 0.05)
        ax.set_ylim(bottom, min(1.0, hi + 0.03))  # each panel its own range
        for b, r, m in zip(bars, rows, means):  # oracle hatched; the value inside the bar's foot
            if RULES[r.rule].oracle:
                b.set_hatch("//")
            ax.text(b.get_x() + b.get_width() / 2, bottom, f" {m:.3f}".replace("0.", "."), rotation=90,
                    ha="center", va="bottom", fontsize=7, color="black" if RULES[r.rule].oracle else "white",
                    backgroundcolor="#bbbbbb" if RULES[r.rule].oracle else "none")
        ax.set_ylabel("target test accuracy picked")
    return save_fig(fig, path)
