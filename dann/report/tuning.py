"""``dann-table SWEEPS --tuned RULE|CHOICE.json``: what a validator picks among a search's trials.

For each pair and method searched with ``hparams_search=tune``, the rule's top-1 candidate over
every checkpoint of every trial (:mod:`dann.report.study`) gives a trial and a step; its
hyper-parameters (the keys of the method's search space, read from the trial's record) are
what the full-protocol re-run takes. The oracle's pick is printed beside it, labelled.

A rule given as a choice file (``--choose-validator`` on another pair) keeps its provenance:
applied to the pair it was chosen on, it looked at that pair's target labels, so its picks
there are labelled oracle (:func:`dann.report.study.check_honest`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dann.config import CONF_DIR
from dann.report.study import Study, build_study, check_honest, read_choice
from dann.selection.rules import rule_of


def space_keys(method: str) -> list[str]:
    """The hyper-parameters of ``method``'s search space (``conf/search/tune/<method>.yaml``)."""
    path = Path(CONF_DIR, "search", "tune", f"{method}.yaml")
    if not path.is_file():
        raise ValueError(f"method {method!r} has no search space ({path} is missing)")
    return list(OmegaConf.load(path).get("params") or {})


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def overrides_of(record: dict[str, Any]) -> list[str]:
    """The trial's values of its method's search space, as ``dann-train`` overrides."""
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
            for k in space_keys(str(record["method"])) if (v := _get(record.get("config") or {}, k)) is not None]


def resolve_rule(rule_or_choice: str) -> tuple[str, dict[str, Any] | None]:
    """``(rule, choice)``: a rule's name as given, or the rule of a choice file and the choice."""
    if rule_or_choice.endswith(".json") or Path(rule_or_choice).is_file():
        choice = read_choice(rule_or_choice)
        return choice["validator"], choice
    return rule_of(rule_or_choice).name, None


def picks(s: Study, rule: str, choice: dict[str, Any] | None, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (pair, method): the rule's pick and the oracle's, with the picked trials' overrides."""
    by_path = {str(r.get("_path")): r for r in records}
    out = []
    for (pair, method), res in s.tasks.items():
        row: dict[str, Any] = {"pair": pair, "method": method, "rule": rule, "trials": s.runs[pair, method]}
        honest = choice is None or check_honest(choice, pair)
        row["label"] = rule if honest else f"{rule} (oracle: chosen on {pair}'s target labels)"
        row["oracle_pick"] = not honest
        for key, r in (("pick", res.get(rule)), ("oracle", res.get("oracle"))):
            if r is None or r.pick is None or not math.isfinite(r.top1):
                row[key] = None
                continue
            rec = by_path.get(r.pick[0], {})
            row[key] = {"run": str(Path(r.pick[0]).parent), "step": r.pick[1], "tgt_acc": r.top1,
                        "overrides": overrides_of(rec) if rec else []}
        out.append(row)
    return out


def render(rows: list[dict[str, Any]]) -> str:
    f = lambda x: "—" if x is None else f"{x:.4f}".replace("0.", ".", 1)  # noqa: E731
    lines = ["| pair | method | trials | rule | its pick (trial folder, step) | target acc there | re-run with | "
             "oracle's pick (target labels) | target acc there |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, o = r["pick"] or {}, r["oracle"] or {}
        lines.append(f"| {r['pair']} | {r['method']} | {r['trials']} | {r['label']} | "
                     f"{Path(p['run']).name if p else '—'}, {p.get('step', '—')} | {f(p.get('tgt_acc'))} | "
                     f"`{' '.join(p.get('overrides', []))}` | {Path(o['run']).name if o else '—'}, {o.get('step', '—')} | "
                     f"{f(o.get('tgt_acc'))} |")
    return "\n".join(lines) + "\n"


def tuned(records: list[dict[str, Any]], rule_or_choice: str) -> tuple[str, list[dict[str, Any]]]:
    """The markdown table of picks and the rows (for ``--tuned-out`` JSON)."""
    rule, choice = resolve_rule(rule_or_choice)
    rows = picks(build_study(records), rule, choice, records)
    return render(rows), rows


def _cell(records: list[dict[str, Any]], method: str, metric: str = "test/tgt_acc") -> str:
    import statistics

    mine = [r for r in records
            if r.get("method") == method and r.get("status") == "finished" and metric in (r.get("metrics") or {})]
    if not mine:
        return "—"
    xs = [float(r["metrics"][metric]) for r in mine]
    # a collapsed run stays in the last-step mean (the rule chose its configuration); the cell says so
    steps = [r["collapsed_at_step"] for r in mine if r.get("collapsed_at_step") is not None]
    n = f"{len(xs)}; {len(steps)} collapsed to chance, at step {', '.join(map(str, steps))}" if steps else f"{len(xs)}"
    f = lambda x: f"{x:.4f}".replace("0.", ".", 1)  # noqa: E731
    return f"{f(statistics.fmean(xs))} ± {f(statistics.stdev(xs))} ({n})" if len(xs) > 1 else f"{f(xs[0])} ({n})"


def _default_cell(records: list[dict[str, Any]], method: str) -> str:
    """:func:`_cell` of the method's default runs, one cell per protocol when they differ (ADDA's
    Adam and SGD runs are two recipes, as in the methods table), each labelled by its setting."""
    from dann.report.table import differing, label, protocol, settings_of, settings_order

    mine = [(r, protocol(r)) for r in records if r.get("method") == method and r.get("status") == "finished"]
    keys = differing([p for _, p in mine], lambda k: True)
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r, p in mine:
        groups.setdefault(settings_of(p, keys), []).append(r)
    return "; ".join(label(_cell(groups[s], method), s) for s in sorted(groups, key=settings_order)) or "—"


def _sa_row(default: list[dict[str, Any]], free: list[dict[str, Any]]) -> str:
    """SA has no search: its one hyper-parameter, the subspace size ``d``, is chosen at test time
    among ``method.sa_dims``, label-free by IM (``method.select=im``) in the runs that report the
    oracle's ``d`` beside it (``sa/oracle_*``). Its default is the last-step rule's fixed ``d``."""
    def dims(recs: list[dict[str, Any]], key: str, distinct: bool = False) -> str:
        ds = [f"{r['metrics'][key]:g}" for r in recs if key in (r.get("metrics") or {})]
        return ", d = " + ", ".join(dict.fromkeys(ds) if distinct else ds) if ds else ""

    from dann.methods.sa import LEGACY_SELECTIONS  # SA's own map of the older name of `last`

    last = [r for r in default if r.get("method") == "sa"
            and LEGACY_SELECTIONS.get(r.get("selection", "last"), r.get("selection", "last")) == "last"]
    n = len(_get(free[0].get("config") or {}, "method.sa_dims") or [])
    orc = _cell(free, "sa", "sa/oracle_tgt_acc")
    return (f"| sa | {n or '—'} sizes of d | {_cell(last, 'sa')}{dims(last, 'sa/dim', True)} | "
            f"{_cell(free, 'sa')}{dims(free, 'sa/dim')} | {orc}{dims(free, 'sa/oracle_dim')} (the same runs) |")


def record_table(default: list[dict[str, Any]], free: list[dict[str, Any]], oracle: list[dict[str, Any]],
                 picks_rows: list[dict[str, Any]], choice: dict[str, Any]) -> str:
    """The table of record: per method of ``picks_rows`` (``--tuned-out``), the default recipe,
    tuned without target labels (the choice's validator, chosen on another pair, picked the
    configuration re-run in ``free``) and tuned with them (the oracle's pick re-run in
    ``oracle``; its label-free runs when both picked the same configuration), each the mean ±
    std of the runs' last-step target accuracy. Refuses a choice made on the reported pair."""
    pairs = sorted({r["pair"] for r in picks_rows})
    if len(pairs) != 1:
        raise ValueError(f"the picks cover {len(pairs)} pairs ({', '.join(pairs) or 'none'}): give one pair's")
    pair = pairs[0]
    if not check_honest(choice, pair):
        raise ValueError(f"the validator {choice['validator']!r} was chosen on {pair}'s own target labels: on {pair} "
                         f"its picks are an oracle's; choose it on another pair (--choose-validator)")
    on_pair = lambda recs: [r for r in recs if r.get("pair") == pair]  # noqa: E731
    default, free, oracle = on_pair(default), on_pair(free), on_pair(oracle)
    rows = [f"| method | trials | default recipe | tuned without target labels ({choice['validator']}, chosen on "
            f"{choice['chosen_on']}) | **oracle**: tuned with target labels |", "|---|---|---|---|---|"]
    for p in sorted(picks_rows, key=lambda r: r["method"]):
        m = p["method"]
        same = p.get("pick") and p.get("oracle") and p["pick"]["overrides"] == p["oracle"]["overrides"]
        orc = _cell(free, m) + " (the same configuration)" if same else _cell(oracle, m)
        rows.append(f"| {m} | {p['trials']} | {_default_cell(default, m)} | {_cell(free, m)} | {orc} |")
    sa = [r for r in free if r.get("method") == "sa" and r.get("selection") == "im"]
    if sa:
        rows.append(_sa_row(default, sa))
    return "\n".join(rows) + (f"\n\nTarget test accuracy on {pair}, last step, mean ± sample std (runs). Default: the "
                              f"shared recipe. Tuned: the configuration the rule picked among the search's trials "
                              f"(trial and step), re-run at the full protocol. The oracle column read target test "
                              f"labels to choose: a reference, not an unsupervised result.\n")
