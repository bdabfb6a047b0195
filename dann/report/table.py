"""``dann-table RUN_DIRS...``: finished runs as the paper's table (Ganin et al. 2016, Table 2).

Every ``results.json`` under the given folders is read (:func:`dann.records.read_records`)
and grouped by (pair, method); runs chosen by another rule than the last step (e.g.
SA's ``oracle``) form their own row, ``sa (oracle)``, so rules are never averaged together. A cell is ``mean ± std (n)`` over seeds (sample std, ddof=1),
with the paper's number beside it, and for methods other than the two bounds the paper's
"gap closed", ``100 (acc - source_only) / (target_only - source_only)``, computed from our
own source-only and train-on-target means of that pair. Runs whose status is not
"finished" are listed as failed, unreadable records with their reason: neither is averaged.
Runs of one pair whose protocols differ (their ``config`` minus :data:`PROTOCOL_IGNORE`, e.g.
another ``trainer.max_steps``) are not averaged together: the pair's column is split by the
differing keys, ``mnist_mnistm [trainer.max_steps=8000]``, and a method's row likewise by
differing method options, ``sa [method.sa_dim=20]``; a note under the table says so.
Each record's model-selection rule is its ``selection`` ("last" when absent; older records say "last_step"); cells of
runs selected otherwise (on target labels: ``oracle``) are marked ``{oracle}``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from dann.report.paper import METHODS as PAPER_METHODS
from dann.report.paper import PAIRS as PAPER_PAIRS
from dann.report.paper import PAPER_GAP, STAND_INS, gap_closed, paper_value
from dann.records import atomic_write_text, read_records

DEFAULT_METRIC = "test/tgt_acc"
DEFAULT_SELECTION = "last"
LEGACY_SELECTIONS = {"last_step": "last"}  # the name older records use for `last`
ORACLE_SELECTIONS = ("oracle",)  # selection rules that read target test labels
BOUNDS = ("source_only", "target_only")

#: Flattened config keys (``a.b.c``; an entry also covers everything under it) that do not
#: change a run's protocol, so runs differing only in them are averaged together: the seed
#: (averaged over), where files go and how they are logged or checkpointed, how the work is
#: placed on hardware, when validation runs (learning curves only; nothing is selected on it),
#: the sweeper's objective, and the selection rule (already a row of its own, ``sa (oracle)``).
#: ``method.name`` is the row itself; the other ``method.*`` keys split a method's row.
#: ``domains`` is NOT here: a custom domain's definition is the data; only the domains a
#: pair actually uses (``pair.source``, ``pair.target``) count (see :func:`protocol`).
#: Every other key, including one missing in some runs only, splits.
PROTOCOL_IGNORE: tuple[str, ...] = (
    "seed", "output_dir", "resume", "objective", "selection", "method.name",
    "deterministic", "trainer.deterministic",
    "data.root", "data.eval_batch_size",
    "logger", "wandb", "hydra", "pool", "checkpoint", "probe", "speed",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.accelerator", "trainer.devices",
    "trainer.strategy", "trainer.num_nodes", "trainer.log_every_n_steps",
    "trainer.val_check_interval", "trainer.check_val_every_n_epoch", "trainer.num_sanity_val_steps",
)
#: Config keys added after runs were recorded, with the value that does what runs before them did:
#: a record without the key is read as having that value, so the new key splits nothing old.
ADDED_KEYS: dict[str, Any] = {"data.mean_of": "pooled"}
MISSING = "—"  # how a key absent from one run's config is shown
Settings = tuple[tuple[str, str], ...]  # ((key, shown value), ...), sorted by key


@dataclass
class Cell:
    """The runs of one (pair, method)."""

    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # the averaged runs' records (curves read them)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def selection(self) -> str:
        """The rules used, e.g. "last" or "oracle" or "last+oracle" (mixed)."""
        return "+".join(sorted(set(self.selections)))

    @property
    def oracle(self) -> bool:
        """Whether any run was chosen on target test labels (SA's ``oracle``, ``--select oracle``)."""
        return any(s in ORACLE_SELECTIONS for s in self.selections)


class Column(NamedTuple):
    """A column: a pair and, when its runs' protocols differ, the setting of this column."""

    pair: str
    settings: Settings = ()


class Row(NamedTuple):
    """A row: a method, its model-selection rule and, when its runs' options differ, this row's."""

    method: str
    selection: str = DEFAULT_SELECTION
    settings: Settings = ()


@dataclass
class Table:
    metric: str
    cells: dict[tuple[str, str], Cell]  # (column label, row label)
    failed: list[dict[str, Any]]
    unreadable: list[tuple[Path, str]]
    skipped: list[tuple[str, str]]  # finished records without the metric: (path, why)
    columns: dict[str, Column] = field(default_factory=dict)  # label -> Column (labels without one: pairs)
    rows: dict[str, Row] = field(default_factory=dict)  # label -> Row (labels without one: methods)
    splits: list[str] = field(default_factory=list)  # "mnist_mnistm split by trainer.max_steps (8000, 15000)"
    merged: list[str] = field(default_factory=list)  # keys the user chose to average across (--merge)
    # averaged runs whose classifier collapsed to chance: (record path, step)
    collapsed: list[tuple[str, int]] = field(default_factory=list)

    def column(self, label: str) -> Column:
        return self.columns.get(label) or Column(label)

    def row(self, label: str) -> Row:
        return self.rows.get(label) or Row(label)

    @property
    def pairs(self) -> list[str]:
        """Column labels: the paper's pairs in its order (each stand-in right after its reference),
        then the rest; a split pair's columns side by side, ordered by their settings."""
        order = []
        for p in PAPER_PAIRS:
            order += [p] + sorted(q for q, ref in STAND_INS.items() if ref == p)
        rank = {p: i for i, p in enumerate(order)}

        def key(label: str) -> tuple:
            c = self.column(label)
            return rank.get(c.pair, len(rank)), c.pair, settings_order(c.settings)
        return sorted({p for p, _ in self.cells}, key=key)

    @property
    def methods(self) -> list[str]:
        """Row labels: the paper's methods in its order, each followed by its other-selection rows, then
        the rest; a split method's rows side by side, ordered by their settings."""
        rank = {m: i for i, m in enumerate(PAPER_METHODS)}

        def key(label: str) -> tuple:
            r = self.row(label)
            return (rank.get(r.method, len(rank)), r.method, r.selection != DEFAULT_SELECTION, r.selection,
                    settings_order(r.settings))
        return sorted({m for _, m in self.cells}, key=key)

    def duplicates(self) -> list[str]:
        """Cells holding one seed twice (e.g. a rerun beside the first run): both are averaged."""
        return [f"{m} on {p}: seeds {sorted(c.seeds)}" for (p, m), c in self.cells.items()
                if len(set(c.seeds)) < c.n]

    @property
    def compare_with_paper(self) -> bool:
        return self.metric == DEFAULT_METRIC

    def gap(self, column: str, row: str) -> float | None:
        """Our gap closed (%) for ``row`` in ``column``, when both bounds were run in that same column
        (the same protocol: a split pair's columns never borrow each other's bounds)."""
        so, to, c = self.cells.get((column, "source_only")), self.cells.get((column, "target_only")), \
            self.cells.get((column, row))
        if self.row(row).method in BOUNDS or c is None or so is None or to is None or to.mean == so.mean:
            return None
        return gap_closed(c.mean, so.mean, to.mean)

    def paper(self, column: str, row: str) -> tuple[float | None, bool]:
        """The paper's number for the row's method on the column's pair (whatever the protocol split)."""
        return paper_value(self.row(row).method, self.column(column).pair) if self.compare_with_paper \
            else (None, False)

    def paper_gap(self, column: str, row: str) -> float | None:
        pair = self.column(column).pair
        return PAPER_GAP.get(self.row(row).method, {}).get(STAND_INS.get(pair, pair)) \
            if self.compare_with_paper else None


def row_name(method: str, selection: str) -> str:
    """``sa`` for the last-step rule, ``sa (oracle)`` for another."""
    return method if selection == DEFAULT_SELECTION else f"{method} ({selection})"


# -- protocols -----------------------------------------------------------------------------
def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty dict stays a value)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def ignored(key: str, extra: Sequence[str] = ()) -> bool:
    """Whether ``key`` is, or lies under, an entry of :data:`PROTOCOL_IGNORE` or of ``extra``."""
    return any(key == p or key.startswith(p + ".") for p in (*PROTOCOL_IGNORE, *extra))


def unused_domain(key: str, flat: dict[str, Any]) -> bool:
    """Whether ``key`` is ``domains`` or defines a custom domain that is neither the pair's source nor target:
    a definition that no data comes from changes nothing (``+domains=mine`` beside a built-in pair)."""
    parts = key.split(".")
    return parts[0] == "domains" and (len(parts) == 1 or parts[1] not in (flat.get("pair.source"),
                                                                          flat.get("pair.target")))


def protocol(record: dict[str, Any], extra_ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The record's protocol: its flattened config without :data:`PROTOCOL_IGNORE` (and the keys
    the user chose to merge across, ``extra_ignore``) and the unused ``domains``. Empty for a
    record without a config (old or hand-written)."""
    config = record.get("config")
    flat = flatten(config) if isinstance(config, dict) else {}
    if flat:
        flat = {**ADDED_KEYS, **flat}
    return {k: v for k, v in flat.items() if not ignored(k, extra_ignore) and not unused_domain(k, flat)}


def canonical(value: Any) -> str:
    """A comparable, hashable form of a config value (lists and dicts included)."""
    return json.dumps(value, sort_keys=True, default=str)


def shown(value: Any) -> str:
    """A config value as written in a label: strings as they are, the rest as JSON (``null``, ``true``)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def differing(protocols: list[dict[str, Any]], keys: Callable[[str], bool]) -> list[str]:
    """The keys (those passing ``keys``) on which the protocols disagree; a missing key counts as a value."""
    union = sorted({k for p in protocols for k in p if keys(k)})
    return [k for k in union if len({canonical(p[k]) if k in p else None for p in protocols}) > 1]


def settings_of(proto: dict[str, Any], keys: list[str]) -> Settings:
    """``((key, shown value), ...)`` of ``proto`` on ``keys``, a missing key as ``—``."""
    return tuple((k, shown(proto[k]) if k in proto else MISSING) for k in keys)


def label(name: str, settings: Settings) -> str:
    """``mnist_mnistm [trainer.max_steps=8000]``, or just the name when nothing was split."""
    return f"{name} [{', '.join(f'{k}={v}' for k, v in settings)}]" if settings else name


def value_order(v: str) -> tuple:
    """Sort key of a shown value: numbers by value (8000 before 15000), then the others by text."""
    try:
        return 0, float(v), ""
    except ValueError:
        return 1, 0.0, v


def settings_order(settings: Settings) -> tuple:
    return tuple((k, value_order(v)) for k, v in settings)


def split_note(what: str, settings: list[Settings]) -> str:
    """``mnist_mnistm split by trainer.max_steps (8000, 15000)``: every key with its values."""
    keys = [k for k, _ in settings[0]]
    values = [sorted({dict(s)[k] for s in settings}, key=value_order) for k in keys]
    return f"{what} split by " + ", ".join(f"{k} ({', '.join(vs)})" for k, vs in zip(keys, values))


def is_method_option(key: str) -> bool:
    return key.startswith("method.")


class Run(NamedTuple):
    """A finished record with the metric: what cells average."""

    record: dict[str, Any]
    value: float
    protocol: dict[str, Any]

    @property
    def pair(self) -> str:
        return str(self.record["pair"])

    @property
    def row(self) -> Row:
        sel = str(self.record.get("selection") or DEFAULT_SELECTION)
        return Row(str(self.record["method"]), LEGACY_SELECTIONS.get(sel, sel))


def split(runs: list[Run], which: Callable[[str], bool], what: str) -> tuple[dict[Settings, list[Run]], list[str]]:
    """``runs`` grouped by their setting of the keys (among those passing ``which``) they disagree on,
    and the note saying so (none when they all agree)."""
    keys = differing([r.protocol for r in runs], which)
    groups: dict[Settings, list[Run]] = {}
    for r in runs:
        groups.setdefault(settings_of(r.protocol, keys), []).append(r)
    return groups, [split_note(what, sorted(groups))] if keys else []


def selected_value(record: dict[str, Any], rule: str) -> tuple[float | None, str]:
    """The target accuracy ``rule`` picks from the run's ``evaluations.jsonl`` (None, why) if it cannot."""
    from dann.selection import record_evaluations, select

    evals = record_evaluations(record)
    if not evals:
        return None, f"--select {rule}: the run has no evaluations.jsonl (probe.enabled=false, or no evaluation)"
    try:
        return select(evals, rule).tgt_acc, ""
    except ValueError as e:
        return None, f"--select {rule}: {e}"


def build_table(records: list[dict[str, Any]], unreadable: list[tuple[Path, str]],
                metric: str = DEFAULT_METRIC, select: str | None = None, merge: Sequence[str] = ()) -> Table:
    """Group finished records by (pair, method), split by protocol; keep the others aside with their reasons.

    A pair's runs that differ in a non-method key of their :func:`protocol` go to one column per
    setting of the differing keys; then, within a column, a method's runs (with one selection rule)
    that differ in a method option (``method.*``) go to one row per setting.
    """
    failed, skipped, runs = [], [], []
    for r in sorted(records, key=lambda r: (str(r["pair"]), str(r["method"]), str(r["seed"]))):
        if r["status"] != "finished":
            failed.append(r)
            continue
        if select and select != "last":  # another checkpoint of the run, chosen by a selection rule
            v, why = selected_value(r, select)
            if v is None:
                skipped.append((r.get("_path", "?"), why))
                continue
            r = {**r, "selection": select}
        else:
            v = (r.get("metrics") or {}).get(metric)
        if not isinstance(v, (int, float)) or v != v:  # absent, not a number, or NaN
            skipped.append((r.get("_path", "?"), f"finished but {metric} is {v!r}"))
            continue
        runs.append(Run(r, float(v), protocol(r, merge)))
    t = Table(metric, {}, failed, list(unreadable), skipped)
    t.merged = list(merge)
    t.collapsed = [(r.record.get("_path", "?"), r.record["collapsed_at_step"]) for r in runs
                   if r.record.get("collapsed_at_step") is not None]
    for pair in sorted({r.pair for r in runs}):
        columns, note = split([r for r in runs if r.pair == pair], lambda k: not is_method_option(k), pair)
        t.splits += note
        for column_settings, column_runs in columns.items():
            column = label(pair, column_settings)
            t.columns[column] = Column(pair, column_settings)
            for row in dict.fromkeys(r.row for r in column_runs):
                name = row_name(row.method, row.selection)
                cells, note = split([r for r in column_runs if r.row == row], is_method_option, f"{name} on {column}")
                t.splits += note
                for row_settings, cell_runs in cells.items():
                    t.rows[label(name, row_settings)] = row._replace(settings=row_settings)
                    t.cells[column, label(name, row_settings)] = Cell([r.value for r in cell_runs],
                                                                      [r.record["seed"] for r in cell_runs],
                                                                      [row.selection] * len(cell_runs),
                                                                      [r.record for r in cell_runs])
    return t


# -- formatting ----------------------------------------------------------------------------
def fmt(x: float) -> str:
    """Accuracies the paper's way: ``.7512`` (``1.000`` and negatives keep their sign)."""
    s = f"{x:.4f}"
    return s[1:] if s.startswith("0.") else ("-" + s[2:] if s.startswith("-0.") else s)


def cell_text(t: Table, pair: str, method: str, pm: str = "±") -> str:
    c = t.cells.get((pair, method))
    paper, stand_in = t.paper(pair, method)
    parts = ["—"] if c is None else [
        f"{fmt(c.mean)} {pm} {fmt(c.std) if c.std is not None else '—'} ({c.n})"]
    if paper is not None:
        parts.append(f"[paper{'*' if stand_in else ''} {fmt(paper)}]")
    g = t.gap(pair, method)
    if g is not None:
        pg = t.paper_gap(pair, method)
        parts.append(f"gap {g:.1f}%" + (f" [paper {pg:.1f}%]" if pg is not None else ""))
    if c is not None and c.oracle:
        parts.append("{" + "+".join("last step" if x == DEFAULT_SELECTION else x
                                    for x in sorted(set(c.selections))) + "}")
    return " ".join(parts)


def notes(t: Table) -> list[str]:
    """Lines under the table: what the cells mean, then failed, skipped and unreadable runs."""
    out = [f"Cells: {t.metric}, mean ± sample std (number of seeds) over finished runs."]
    if t.compare_with_paper and any(t.paper(p, m)[0] is not None for p in t.pairs for m in t.methods):
        out.append("[paper x]: Ganin et al. 2016, Table 2; gap: (method - source_only) / "
                   "(target_only - source_only) from our own means in the same column (same pair and protocol).")
        stand_ins = sorted({t.column(c).pair for c in t.pairs} & set(STAND_INS))
        if stand_ins:
            out.append("paper*: the paper's number for the original pair this regenerated domain stands in for ("
                       + ", ".join(f"{p} -> {STAND_INS[p]}" for p in stand_ins) + ").")
    if t.splits:
        out.append("Runs of different protocols are not averaged: " + "; ".join(t.splits) + ".")
    if t.merged:
        out.append("On request (--merge), runs that differ in " + ", ".join(t.merged) + " ARE averaged together.")
    marked = sorted(f"{m} on {p}: {c.selection}" for (p, m), c in t.cells.items() if c.oracle)
    rules = sorted({x for c in t.cells.values() for x in c.selections} - {DEFAULT_SELECTION, *ORACLE_SELECTIONS})
    out.append("Model selection: last step (the weights at the end of training) in every cell"
               + (f", except rows named (rule), chosen by that label-free rule: {', '.join(rules)}" if rules else "")
               + ("; except cells marked {oracle}, whose runs chose on target test labels: " + "; ".join(marked)
                  if marked else "")
               + ".")
    if t.duplicates():
        out.append("Warning: repeated seeds averaged as separate runs: " + "; ".join(t.duplicates()))
    if t.collapsed:
        out.append(f"Runs whose label classifier collapsed to chance during training (averaged: their last step is "
                   f"what they produced): {len(t.collapsed)}")
        out += [f"- {p}: at step {step}" for p, step in t.collapsed]
    if t.failed:
        out.append(f"Failed or unfinished runs (not averaged): {len(t.failed)}")
        out += [f"- {r.get('_path', '?')}: status {r['status']}" + (f", error: {r['error']}" if r.get("error") else "")
                for r in t.failed]
    if t.skipped:
        out.append(f"Finished runs without {t.metric} (not averaged): {len(t.skipped)}")
        out += [f"- {p}: {why}" for p, why in t.skipped]
    if t.unreadable:
        out.append(f"Unreadable records (not averaged): {len(t.unreadable)}")
        out += [f"- {p}: {why}" for p, why in t.unreadable]
    return out


def render_markdown(t: Table) -> str:
    rows = ["| method | " + " | ".join(t.pairs) + " |", "|---" * (len(t.pairs) + 1) + "|"]
    rows += [f"| {m} | " + " | ".join(cell_text(t, p, m) for p in t.pairs) + " |" for m in t.methods]
    return "\n".join(rows) + "\n\n" + "\n".join(notes(t)) + "\n"


def _tex(s: str) -> str:
    """Escape LaTeX's special characters (our names and notes hold no backslash)."""
    return re.sub(r"([&%_#{}$])", r"\\\1", s)


def render_latex(t: Table) -> str:
    lines = [r"\begin{tabular}{l" + "l" * len(t.pairs) + "}", r"\hline",
             "method & " + " & ".join(_tex(p).replace("—", "--") for p in t.pairs) + r" \\", r"\hline"]
    for m in t.methods:
        cells = [_tex(cell_text(t, p, m, pm="±")).replace("±", r"$\pm$").replace("—", "--") for p in t.pairs]
        lines.append(_tex(m).replace("—", "--") + " & " + " & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines + ["% " + n.replace("\n", " ") for n in notes(t)]) + "\n"


CSV_FIELDS = ("pair", "method", "n", "mean", "std", "seeds", "selection", "paper", "gap_closed_pct", "paper_gap_pct")


def render_csv(t: Table) -> str:
    """Long form, one row per (pair, method); failed/unreadable runs go to stderr, not here."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for m in t.methods:
        for p in t.pairs:
            c = t.cells.get((p, m))
            if c is None:
                continue
            paper, _ = t.paper(p, m)
            g, pg = t.gap(p, m), t.paper_gap(p, m)
            w.writerow({"pair": p, "method": m, "n": c.n, "mean": f"{c.mean:.6f}",
                        "std": "" if c.std is None else f"{c.std:.6f}", "seeds": " ".join(map(str, c.seeds)),
                        "selection": c.selection, "paper": "" if paper is None else paper,
                        "gap_closed_pct": "" if g is None else f"{g:.2f}", "paper_gap_pct": "" if pg is None else pg})
    return buf.getvalue()


RENDER = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}


def save_png(t: Table, path: str | Path) -> Path:
    """Grouped bars per pair: ours (mean ± std, solid) beside the paper's (hatched), per method."""
    from dann.report.figures import pyplot, save_fig

    plt = pyplot()

    pairs, methods = t.pairs, t.methods
    width = 0.8 / (2 * len(methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(pairs)) + 2.0, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        col = colours[i % len(colours)]
        xs = [j - 0.4 + (2 * i + 0.5) * width for j in range(len(pairs))]
        cells = [t.cells.get((p, m)) for p in pairs]
        have = [(x, c) for x, c in zip(xs, cells) if c]
        ax.bar([x for x, _ in have], [c.mean for _, c in have], width, color=col, label=f"{m} (ours)",
               yerr=[c.std or 0 for _, c in have], capsize=2)
        for x, c in zip(xs, cells):  # a missing cell is written as such, never drawn as a zero bar
            if not c:
                ax.text(x, 0.01, "no runs", rotation=90, ha="center", va="bottom", fontsize=7, color=col)
        paper = [t.paper(p, m)[0] for p in pairs]
        if any(v is not None for v in paper):
            ax.bar([x + width for x in xs], [v or 0 for v in paper], width, color=col, alpha=0.35, hatch="//",
                   edgecolor=col, label=f"{m} (paper)")
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels([p.replace(" [", "\n[").replace(", ", ",\n") for p in pairs], fontsize=8)
    ax.set_ylabel(t.metric)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible
    return save_fig(fig, path)


class Curve(NamedTuple):
    """One run's target test accuracy at each evaluation (its ``evaluations.jsonl``)."""

    seed: int
    steps: list[int]
    accs: list[float]


def curves(t: Table) -> tuple[dict[tuple[str, str], list[Curve]], list[str]]:
    """Each cell's learning curves, and the averaged runs that have none (listed, not drawn)."""
    from dann.selection import record_evaluations

    out: dict[tuple[str, str], list[Curve]] = {}
    missing = []
    for key, c in t.cells.items():
        for r, seed in zip(c.records, c.seeds):
            evals = [e for e in record_evaluations(r)
                     if isinstance(e.get("tgt_acc"), (int, float)) and e["tgt_acc"] == e["tgt_acc"]]  # not NaN
            if not evals:
                missing.append(f"{r.get('_path', '?')} ({key[1]} on {key[0]}, seed {seed}): no evaluations.jsonl")
                continue
            out.setdefault(key, []).append(Curve(seed, [int(e["step"]) for e in evals],
                                                 [float(e["tgt_acc"]) for e in evals]))
    return out, missing


def mean_curve(runs: list[Curve]) -> tuple[list[int], list[float]]:
    """The mean over runs at the steps every run evaluated (a shorter or resumed run limits it)."""
    steps = sorted(set.intersection(*(set(c.steps) for c in runs))) if runs else []
    at = [dict(zip(c.steps, c.accs)) for c in runs]
    return steps, [statistics.fmean(a[s] for a in at) for s in steps]


def save_curves_png(t: Table, path: str | Path) -> tuple[Path | None, list[str]]:
    """One panel per column: each run's target test accuracy at every evaluation (thin), the mean
    over its cell's seeds (thick), one colour per row; the paper's number as a dashed line. For
    reading training lengths and seed spread, not for choosing checkpoints (README "Model selection")."""
    data, missing = curves(t)
    if not data:
        return None, missing
    from dann.report.figures import pyplot, save_fig

    plt = pyplot()
    pairs = [p for p in t.pairs if any(k[0] == p for k in data)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.0), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, p in zip(axes[0], pairs):
        for i, m in enumerate(t.methods):
            runs = data.get((p, m))
            if not runs:
                continue
            col = colours[i % len(colours)]
            for c in runs:
                ax.plot(c.steps, c.accs, color=col, lw=0.7, alpha=0.45)
            steps, mean = mean_curve(runs)
            ax.plot(steps, mean, color=col, lw=2.0, label=f"{m} ({len(runs)} run{'s' * (len(runs) > 1)})")
            paper = t.paper(p, m)[0]
            if paper is not None:
                ax.axhline(paper, color=col, lw=0.8, ls="--")
        ax.set_title(p.replace(" [", "\n["), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", title="thin: seeds, thick: mean, dashed: paper", title_fontsize=7)
    axes[0][0].set_ylabel("target test accuracy at each evaluation")
    return save_fig(fig, path), missing


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dann-table", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="*", help="folders searched recursively for results.json (or such files)")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from the W&B API instead")
    ap.add_argument("--group", help="with --wandb: only this group (the experiment or sweep)")
    ap.add_argument("--wandb-dir", help="read offline W&B runs (**/offline-run-*) under this folder instead")
    ap.add_argument("--format", choices=sorted(RENDER), default="markdown")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--png", help="write a grouped bar chart (ours vs the paper's) to this file")
    ap.add_argument("--curves", metavar="PNG", help="write every cell's learning curves (target test accuracy at "
                    "each evaluation, per seed and their mean) to this file")
    ap.add_argument("--metric", default=DEFAULT_METRIC, help=f"metric to tabulate (default {DEFAULT_METRIC})")
    ap.add_argument("--select", metavar="RULE", help="report the checkpoint a model-selection rule picks from "
                    "each run's evaluations.jsonl: last, last_k, src_val, reverse_validation, dev, entropy, im, "
                    "snd, oracle (reads target labels; marked so)")
    ap.add_argument("--merge", metavar="KEY", action="append", default=[],
                    help="average runs that differ in this config key (e.g. data.src_val) instead of splitting "
                         "the column; the note under the table says so. Repeatable")
    ap.add_argument("--selection-study", action="store_true", help="compare every selection rule instead: "
                    "target accuracy picked, regret against oracle, rank correlations (markdown; --out, --png)")
    a = ap.parse_args(argv)
    if a.select:
        from dann.selection import rule_of

        try:
            rule_of(a.select)
        except ValueError as e:
            ap.error(str(e))
        if a.metric != DEFAULT_METRIC:
            ap.error("--select picks a checkpoint by its target accuracy; it cannot be combined with --metric")
    for d in a.run_dirs:
        if not Path(d).exists():
            print(f"dann-table: warning: {d} does not exist", file=sys.stderr)
    if a.wandb:
        from dann.report.wandb_offline import api_records

        records, bad = api_records(a.wandb, a.group)
    elif a.wandb_dir:
        from dann.report.wandb_offline import offline_records

        records, bad = offline_records(a.wandb_dir)
    elif a.run_dirs:
        records, bad = read_records(*a.run_dirs)
    else:
        ap.error("give run folders, --wandb ENTITY/PROJECT or --wandb-dir DIR")
    if not records:
        why = f"; {len(bad)} unreadable: " + "; ".join(f"{p}: {w}" for p, w in bad) if bad else ""
        src = a.wandb or a.wandb_dir or " ".join(a.run_dirs)
        print(f"dann-table: error: no readable run records in {src}{why}", file=sys.stderr)
        return 2
    if a.selection_study:
        return selection_study(records, a.out, a.png)
    t = build_table(records, bad, a.metric, a.select, a.merge)
    text = RENDER[a.format](t)
    print(text, end="")
    if a.format == "csv":  # keep stdout machine-readable; the caveats still reach the reader
        print("\n".join(notes(t)), file=sys.stderr)
    if a.out:
        atomic_write_text(Path(a.out), text)
    if a.png:
        if not t.cells:
            print("dann-table: warning: no finished run to draw; no PNG written", file=sys.stderr)
        else:
            print(f"dann-table: bar chart written to {save_png(t, a.png)}", file=sys.stderr)
    if a.curves:
        png, missing = save_curves_png(t, a.curves)
        for m in missing:
            print(f"dann-table: warning: no curve for {m}", file=sys.stderr)
        print(f"dann-table: learning curves written to {png}" if png else
              "dann-table: warning: no averaged run has an evaluations.jsonl; no curves written", file=sys.stderr)
    return 0


def selection_study(records: list[dict[str, Any]], out: str | None, png: str | None) -> int:
    """``--selection-study``: print (and write) the study of every rule over the runs' evaluations."""
    from dann.selection import study

    s = study.build_study(records)
    if not s.groups:
        print("dann-table: error: no finished run has an evaluations.jsonl (train with probe.enabled=true, or "
              "`dann-select rescore RUN` on runs trained with checkpoint.keep_all=true)", file=sys.stderr)
        return 2
    text = study.render_markdown(s)
    print(text, end="")
    if out:
        atomic_write_text(Path(out), text)
    if png:
        print(f"dann-table: selection study chart written to {study.save_png(s, png)}", file=sys.stderr)
    return 0


def cli() -> None:
    """Console entry point ``dann-table``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
