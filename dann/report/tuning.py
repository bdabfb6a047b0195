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
