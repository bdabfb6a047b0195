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

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from dann.records import evaluation_problem, evaluations_file_problem
from dann.report.paper import METHODS as PAPER_METHODS
from dann.report.paper import PAIRS as PAPER_PAIRS
from dann.report.paper import PAPER_GAP, STAND_INS, gap_closed, paper_protocol, paper_value

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
    # the run a method started from (DIRT-T: each seed's own VADA run): a folder, like output_dir
    "method.start",
    # how many CPU threads ran it (speed, like the hardware), and which extra validators the probe scored
    # (read-only scores: nothing trains or selects on them unless `selection` names one)
    "threads", "validator_modules",
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
    unfelt: list[str] = field(default_factory=list)  # runs grouped across a key their method does not train on
    # averaged runs whose classifier collapsed to chance: (record path, step)
    collapsed: list[tuple[str, int]] = field(default_factory=list)
    # averaged runs whose source accuracy ended at chance: (record path, test/src_acc, chance)
    at_chance: list[tuple[str, float, float]] = field(default_factory=list)
    # folders that hold a run but no record (running, or killed): see dann.records.runs_without_record
    unrecorded: list[Path] = field(default_factory=list)
    # records read more than once (identical copies of one run): (path read, [its copies])
    copies: list[tuple[str, list[str]]] = field(default_factory=list)
    # finished runs whose training loss diverged (dann.run.guard.DivergenceWatch), not averaged: (path, step)
    diverged: list[tuple[str, int]] = field(default_factory=list)

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
        """Row labels: the paper's methods in its order, each followed by its other-selection rows, the
        other methods by name, and the upper bound (train-on-target) last; a split method's rows side by
        side, ordered by their settings."""
        rank = {m: i for i, m in enumerate(PAPER_METHODS)}
        rank[BOUNDS[1]] = len(rank) + 1  # below every adaptation method

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

    def off_protocol(self, column: str, row: str) -> list[tuple[str, str, list[str]]]:
        """Where the cell's runs leave the protocol of the paper's number (:data:`dann.report.paper.PROTOCOL`:
        length, batch, network): ``[(key, the paper's value, [the runs' values]), ...]``; a key a record does
        not have is not judged (old or hand-written records), a ``model.*`` key the paper's network has not
        is (shown as ``—``)."""
        c = self.cells.get((column, row))
        ref = paper_protocol(self.column(column).pair)
        if c is None or not ref or self.paper(column, row)[0] is None:
            return []
        flats = [flatten(r["config"]) for r in c.records if isinstance(r.get("config"), dict)]
        keys = sorted({*ref, *(k for f in flats for k in f if k.startswith("model."))})
        out = []
        for k in keys:
            here = sorted({shown(f[k]) for f in flats if k in f}, key=value_order)
            want = shown(ref[k]) if k in ref else MISSING
            if here and here != [want]:
                out.append((k, want, here))
        return out

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


#: Keys a method does not train on, by method: train-on-target never reads a source image to
#: train, so how many source images are held out for validation moves only the pooled mean it
#: subtracts (1,000 of 60,000 MNIST images: a change in the 4th digit of the mean). Such runs
#: join the column of the others (the table says so under it).
IGNORED_FOR: dict[str, tuple[str, ...]] = {"target_only": ("data.src_val",)}
HARDWARE = "hardware"  # the pseudo-key of the device kind a run trained on (cpu, cuda, ...)


def hardware(record: dict[str, Any]) -> str | None:
    """The kind of device the run trained on (``cuda:0`` -> ``cuda``), None when not recorded."""
    dev = record.get("device")
    return str(dev).split(":")[0] if dev else None


def protocol(record: dict[str, Any], extra_ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The record's protocol: its flattened config without :data:`PROTOCOL_IGNORE` (and the keys
    the user chose to merge across, ``extra_ignore``), the unused ``domains`` and the keys its
    method cannot feel (:data:`IGNORED_FOR`); plus the hardware it ran on, so that runs of one
    seed on a CPU and a GPU are two columns, not repeated seeds. Empty for a record without a
    config (old or hand-written)."""
    config = record.get("config")
    flat = flatten(config) if isinstance(config, dict) else {}
    if flat:
        flat = {**ADDED_KEYS, **flat}
        if hardware(record):
            flat[HARDWARE] = hardware(record)
    skip = (*extra_ignore, *IGNORED_FOR.get(str(record.get("method")), ()))
    return {k: v for k, v in flat.items() if not ignored(k, skip) and not unused_domain(k, flat)}


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


def group(runs: list[Run], keys: list[str]) -> dict[Settings, list[Run]]:
    """``runs`` grouped by their setting of ``keys``."""
    groups: dict[Settings, list[Run]] = {}
    for r in runs:
        groups.setdefault(settings_of(r.protocol, keys), []).append(r)
    return groups


def split(runs: list[Run], which: Callable[[str], bool], what: str) -> tuple[dict[Settings, list[Run]], list[str]]:
    """``runs`` grouped by their setting of the keys (among those passing ``which``) they disagree on,
    and the note saying so (none when they all agree)."""
    keys = differing([r.protocol for r in runs], which)
    groups = group(runs, keys)
    return groups, [split_note(what, sorted(groups))] if keys else []


def run_evaluations(record: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The evaluations of a record's run, checked like the record (:func:`dann.records.evaluation_problem`):
    ``(rows, "")``, or ``([], why)`` when its ``evaluations.jsonl`` cannot be used."""
    from dann.selection import EVALS_FILE, record_evaluations

    problem = evaluations_file_problem(Path(record["_path"]).parent / EVALS_FILE) if record.get("_path") else None
    if problem is None:
        try:
            evals = record_evaluations(record)
            problem = evaluation_problem(evals)
        except Exception as e:  # noqa: BLE001 - a received file: whatever it holds, it is listed, not crashed on
            problem = f"{type(e).__name__}: {e}"
    return ([], f"its evaluations.jsonl is unusable: {problem}") if problem else (evals, "")


def selected_value(record: dict[str, Any], rule: str) -> tuple[float | None, str]:
    """The target accuracy ``rule`` picks from the run's ``evaluations.jsonl`` (None, why) if it cannot."""
    from dann.selection import select

    evals, why = run_evaluations(record)
    if why:
        return None, f"--select {rule}: {why}"
    if not evals:
        return None, f"--select {rule}: the run has no evaluations.jsonl (probe.enabled=false, or no evaluation)"
    try:
        return select(evals, rule).tgt_acc, ""
    except ValueError as e:
        return None, f"--select {rule}: {e}"


def fill_unfelt(runs: list[Run], notes: set[str]) -> list[Run]:
    """A run's key that its method cannot feel (:data:`IGNORED_FOR`) takes the value the other
    runs of the pair agree on, so it joins their column instead of making one of its own."""
    out = []
    for r in runs:
        proto = dict(r.protocol)
        for k in IGNORED_FOR.get(str(r.record.get("method")), ()):
            values = {canonical(o.protocol[k]): o.protocol[k] for o in runs if k in o.protocol}
            if len(values) == 1 and proto and canonical(proto.get(k)) not in values:
                proto[k] = next(iter(values.values()))
                notes.add(f"{r.record.get('method')} runs are grouped whatever their {k} "
                                 f"(it trains on no source image)")
        out.append(r._replace(protocol=proto))
    return out


def build_table(records: list[dict[str, Any]], unreadable: list[tuple[Path, str]],
                metric: str = DEFAULT_METRIC, select: str | None = None, merge: Sequence[str] = ()) -> Table:
    """Group finished records by (pair, method), split by protocol; keep the others aside with their reasons.

    A pair's runs that differ in a non-method key of their :func:`protocol` go to one column per
    setting of the differing keys; then, within a column, a method's runs (with one selection rule)
    that differ in a method option (``method.*``) go to one row per setting.
    """
    failed, skipped, runs, diverged = [], [], [], []
    for r in sorted(records, key=lambda r: (str(r["pair"]), str(r["method"]), str(r["seed"]))):
        if r["status"] != "finished":
            failed.append(r)
            continue
        if r.get("diverged_at_step") is not None:  # its numbers are those of blown-up weights
            diverged.append((r.get("_path", "?"), r["diverged_at_step"]))
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
    t.diverged = diverged
    t.merged = list(merge)
    t.copies = [(r.get("_path", "?"), r["_copies"]) for r in records if r.get("_copies")]
    t.collapsed = [(r.record.get("_path", "?"), r.record["collapsed_at_step"]) for r in runs
                   if r.record.get("collapsed_at_step") is not None]
    t.at_chance = [(r.record.get("_path", "?"), r.record["metrics"].get("test/src_acc"), r.record.get("chance_acc"))
                   for r in runs if r.record.get("source_at_chance")]
    unfelt: set[str] = set()
    in_column: dict[tuple[str, Row], list[Run]] = {}  # (column label, row) -> its runs
    for pair in sorted({r.pair for r in runs}):
        columns, note = split(fill_unfelt([r for r in runs if r.pair == pair], unfelt), lambda k: not is_method_option(k), pair)
        t.splits += note
        for column_settings, column_runs in columns.items():
            column = label(pair, column_settings)
            t.columns[column] = Column(pair, column_settings)
            for r in column_runs:
                in_column.setdefault((column, r.row), []).append(r)
    # a method option that splits a row in one column names its setting in every column, so that a
    # cell of another column sits on the row of its setting instead of on an unlabelled one
    row_keys: dict[Row, set[str]] = {}
    for (_, row), row_runs in in_column.items():
        row_keys.setdefault(row, set()).update(differing([r.protocol for r in row_runs], is_method_option))
    for (column, row), row_runs in in_column.items():
        name = row_name(row.method, row.selection)
        t.splits += split(row_runs, is_method_option, f"{name} on {column}")[1]
        for row_settings, cell_runs in group(row_runs, sorted(row_keys[row])).items():
            t.rows[label(name, row_settings)] = row._replace(settings=row_settings)
            t.cells[column, label(name, row_settings)] = Cell([r.value for r in cell_runs],
                                                              [r.record["seed"] for r in cell_runs],
                                                              [row.selection] * len(cell_runs),
                                                              [r.record for r in cell_runs])
    t.unfelt = sorted(unfelt)
    return t


# -- formatting ----------------------------------------------------------------------------
